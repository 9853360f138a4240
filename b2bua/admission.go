package b2bua

import (
	"net/netip"
	"sync"
	"time"
)

// bucket is a token bucket: rate tokens per second, at most burst.
type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) take(now time.Time, rate, burst float64) bool {
	if b.last.IsZero() {
		b.tokens = burst
	} else if d := now.Sub(b.last).Seconds(); d > 0 {
		b.tokens = min(burst, b.tokens+d*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// limiter is one token bucket shared by all callers (calls per second).
type limiter struct {
	mu          sync.Mutex
	rate, burst float64
	b           bucket
}

func newLimiter(perSecond int) *limiter {
	if perSecond <= 0 {
		return nil
	}
	return &limiter{rate: float64(perSecond), burst: max(1, float64(perSecond))}
}

// allow reports whether one more event fits; a nil limiter allows all.
func (l *limiter) allow(now time.Time) bool {
	if l == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.take(now, l.rate, l.burst)
}

// sourceLimiter keeps one bucket per source address.
type sourceLimiter struct {
	mu          sync.Mutex
	rate, burst float64
	m           map[netip.Addr]*bucket
}

func newSourceLimiter(perSecond int) *sourceLimiter {
	if perSecond <= 0 {
		return nil
	}
	return &sourceLimiter{rate: float64(perSecond), burst: 2 * float64(perSecond), m: map[netip.Addr]*bucket{}}
}

// allow reports whether source (host:port) may send one more request; a
// nil limiter or an unparsable source allows.
func (s *sourceLimiter) allow(source string, now time.Time) bool {
	if s == nil {
		return true
	}
	ap, err := netip.ParseAddrPort(source)
	if err != nil {
		return true
	}
	ip := ap.Addr().Unmap()
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[ip]
	if !ok {
		b = &bucket{}
		s.m[ip] = b
	}
	return b.take(now, s.rate, s.burst)
}

// sweep forgets sources whose buckets have refilled, so the map only
// holds recently active sources.
func (s *sourceLimiter) sweep(now time.Time) {
	if s == nil {
		return
	}
	full := time.Duration(s.burst / s.rate * float64(time.Second))
	s.mu.Lock()
	defer s.mu.Unlock()
	for ip, b := range s.m {
		if now.Sub(b.last) > full {
			delete(s.m, ip)
		}
	}
}
