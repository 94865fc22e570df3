package challengezone

import (
	"net"
	"sync"
	"time"
)

// limiter is a token bucket per source, with a bounded number of sources:
// when the table is full, sources whose bucket has refilled are forgotten
// (they are no different from new ones), and if none has, the whole table
// is (which favours an attacker with many sources over dropping everyone,
// but never grows memory).
type limiter struct {
	rate  float64
	burst float64
	max   int

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst, maxSources int) *limiter {
	return &limiter{rate: rate, burst: float64(burst), max: maxSources, buckets: make(map[string]*bucket)}
}

func (l *limiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.max {
			l.pruneLocked(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(l.burst, b.tokens+el*l.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (l *limiter) pruneLocked(now time.Time) {
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for k, b := range l.buckets {
		if now.Sub(b.last) >= full {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= l.max {
		clear(l.buckets)
	}
}

func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// sourceKey is the rate-limited unit of a client address: the IPv4
// address, or the IPv6 /64.
func sourceKey(a net.Addr) string {
	var ip net.IP
	switch x := a.(type) {
	case *net.UDPAddr:
		ip = x.IP
	case *net.TCPAddr:
		ip = x.IP
	default:
		return a.String()
	}
	if ip4 := ip.To4(); ip4 != nil {
		return string(ip4)
	}
	return string(ip.Mask(net.CIDRMask(64, 128)))
}
