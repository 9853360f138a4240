package b2bua

import (
	"testing"
	"time"
)

func TestLimiterRateAndBurst(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLimiter(10)
	n := 0
	for l.allow(now) {
		n++
	}
	if n != 10 {
		t.Errorf("burst at once = %d, want 10 (one second's worth)", n)
	}
	if !l.allow(now.Add(100*time.Millisecond)) || l.allow(now.Add(100*time.Millisecond)) {
		t.Error("after 100 ms at 10/s exactly one more call must pass")
	}
	if newLimiter(0) != nil || !(*limiter)(nil).allow(now) {
		t.Error("a zero limit must mean unlimited")
	}
}

func TestSourceLimiterPerAddress(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := newSourceLimiter(5)
	a, b := "192.0.2.1:5060", "192.0.2.2:5060"
	n := 0
	for s.allow(a, now) {
		n++
	}
	if n != 10 {
		t.Errorf("burst for one source = %d, want 10 (two seconds' worth)", n)
	}
	if !s.allow(b, now) {
		t.Error("another source must not share the first one's bucket")
	}
	if !s.allow("192.0.2.1:9999", now.Add(time.Second)) {
		t.Error("the same address on another port is the same source, refilled after a second")
	}
	s.sweep(now.Add(time.Minute))
	if len(s.m) != 0 {
		t.Errorf("sweep left %d idle sources", len(s.m))
	}
	if !s.allow("not an address", now) {
		t.Error("an unparsable source must pass (the transport already answered it)")
	}
}

func TestRateLimitAnswers503(t *testing.T) {
	frozen := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b, _, gw := startCallGatewayClock(t, "127.0.0.2:9", CallOptions{RateLimit: 1}, func() time.Time { return frozen })
	codes := []int{}
	for range 3 {
		codes = append(codes, send(t, "OPTIONS", gw).StatusCode)
	}
	if codes[0] != 200 || codes[1] != 200 || codes[2] != 503 {
		t.Errorf("OPTIONS at rate_limit 1 (burst 2) = %v, want [200 200 503]", codes)
	}
	if got := metric(t, b.m.Rejected.WithLabelValues("rate_limit")); got != 1 {
		t.Errorf("overload rejected{rate_limit} = %v, want 1", got)
	}
}
