package challengezone

import (
	"fmt"
	"net"
)

// CacheSize returns how many lookups s caches.
func CacheSize(s *Server) int { return s.cache.size() }

// LimiterSize makes n distinct sources query s's limiter and returns how
// many it tracks.
func LimiterSize(s *Server, n int) int {
	now := s.cfg.Now()
	for i := range n {
		s.limiter.allow(sourceKey(&net.UDPAddr{IP: net.IPv4(10, byte(i>>16), byte(i>>8), byte(i))}), now)
	}
	return s.limiter.size()
}

// Lookup runs one storage lookup of name through the cache.
func Lookup(s *Server, name string) {
	if _, err := s.lookup(s.zoneOf(name), name); err != nil {
		panic(fmt.Sprint(err))
	}
}
