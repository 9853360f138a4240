package b2bua

import (
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestHotCounters: the cached children count into the same series as
// WithLabelValues, and a series appears only once it is used.
func TestHotCounters(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	if n := testutil.CollectAndCount(m.Requests); n != 0 {
		t.Fatalf("requests series before use = %d, want 0", n)
	}
	if n := testutil.CollectAndCount(m.Responses); n != 0 {
		t.Fatalf("responses series before use = %d, want 0", n)
	}
	for range 3 {
		m.request(sip.INVITE, "out").Inc()
		m.request("FOO", "in").Inc()
		m.response(180, "out").Inc()
		m.response(603, "in").Inc()
		m.response(0, "in").Inc()
		m.call("pbx", resultCancelled).Inc()
		m.call("elsewhere", resultFailed).Inc()
		m.callInfo("kept").Inc()
		m.callInfo("other").Inc()
	}
	for _, c := range []struct {
		name string
		c    prometheus.Counter
	}{
		{"INVITE out", m.Requests.WithLabelValues("INVITE", "out")},
		{"FOO in", m.Requests.WithLabelValues("FOO", "in")},
		{"1xx out", m.Responses.WithLabelValues("1xx", "out")},
		{"6xx in", m.Responses.WithLabelValues("6xx", "in")},
		{"0xx in", m.Responses.WithLabelValues("0xx", "in")},
		{"pbx cancelled", m.Calls.WithLabelValues("pbx", "cancelled")},
		{"elsewhere failed", m.Calls.WithLabelValues("elsewhere", "failed")},
		{"kept", m.CallInfo.WithLabelValues("kept")},
		{"other", m.CallInfo.WithLabelValues("other")},
	} {
		if got := testutil.ToFloat64(c.c); got != 3 {
			t.Errorf("%s = %v, want 3", c.name, got)
		}
	}
	if n := testutil.CollectAndCount(m.Requests); n != 2 {
		t.Errorf("requests series = %d, want 2", n)
	}
}

func BenchmarkHotCounter(b *testing.B) {
	m := NewMetrics(prometheus.NewRegistry())
	b.ReportAllocs()
	for b.Loop() {
		m.request(sip.BYE, "out").Inc()
		m.response(200, "in").Inc()
	}
}
