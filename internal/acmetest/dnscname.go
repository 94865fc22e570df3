package acmetest

import (
	"time"

	"github.com/miekg/dns"
)

// cname is a CNAME record of a DNSServer and where its target is resolved.
type cname struct {
	target string // canonical FQDN
	via    string // host:port of the target's authoritative server, or ""
}

// SetCNAME makes name (inside one of the server's zones) a CNAME to target.
// If via is set, the server then acts for that name as a recursive resolver
// would: a query for any other type at name is answered with the CNAME
// followed by the answer that via (the target zone's authoritative server,
// queried over UDP and TCP if truncated) gives for the target, so a client
// that asks this server, such as Pebble's validator, reaches via through
// the CNAME. An empty target removes the CNAME.
func (s *DNSServer) SetCNAME(name, target, via string) {
	n := canonicalName(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if target == "" {
		delete(s.cnames, n)
	} else {
		s.cnames[n] = cname{target: canonicalName(target), via: via}
	}
	s.serial++
	s.changedLocked(true)
}

// answerCNAME answers q if its name is a CNAME, and reports whether it did.
func (s *DNSServer) answerCNAME(m *dns.Msg, q dns.Question) bool {
	s.mu.Lock()
	c, ok := s.cnames[canonicalName(q.Name)]
	s.mu.Unlock()
	if !ok {
		return false
	}
	m.Authoritative = true
	m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET,
		Ttl: dnsStaticTTL}, Target: c.target})
	if q.Qtype == dns.TypeCNAME || c.via == "" {
		return true
	}
	m.Authoritative, m.RecursionAvailable = false, true // resolved, as a resolver does
	req := new(dns.Msg)
	req.SetQuestion(c.target, q.Qtype)
	req.SetEdns0(1232, false)
	cl := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	in, _, err := cl.Exchange(req, c.via)
	if err == nil && in.Truncated {
		cl.Net = "tcp"
		in, _, err = cl.Exchange(req, c.via)
	}
	if err != nil {
		m.Rcode = dns.RcodeServerFailure
		return true
	}
	m.Rcode = in.Rcode
	m.Answer = append(m.Answer, in.Answer...)
	m.Ns = in.Ns
	return true
}
