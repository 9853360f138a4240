package b2bua

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The daemon's defaults (sip.transaction_linger, sip.accepted_linger),
	// so that every test runs the transaction lifetimes it ships with.
	SetTransactionLinger(5 * time.Second)
	SetAcceptedLinger(DefaultAcceptedLinger)
	goleak.VerifyTestMain(m,
		// sipgo's transaction layer keeps timers for finished
		// transactions alive until Timer J/K fire.
		goleak.IgnoreAnyFunction("time.Sleep"),
		// sipgo v1.7.3: a UDP connection a client creates while its
		// UserAgent closes keeps its reader (seen ~1 in 15 runs of the
		// call tests; never in one test alone).
		goleak.IgnoreAnyFunction("github.com/emiago/sipgo/sip.(*TransportUDP).readUDPConnection"),
	)
}

func startB2BUA(t *testing.T) (*B2BUA, *prometheus.Registry, string) {
	t.Helper()
	reg := prometheus.NewRegistry()
	b := runGateway(t, Config{Listen: []Listener{{"udp", "127.0.0.1:0"}, {"tcp", "127.0.0.1:0"}}}, reg, nil)
	return b, reg, listenerAddr(t, b, "udp")
}

func send(t *testing.T, method sip.RequestMethod, addr string) *sip.Response {
	t.Helper()
	c := newClient(t, nil)
	var uri sip.Uri
	if err := sip.ParseUri("sip:bob@"+addr, &uri); err != nil {
		t.Fatal(err)
	}
	req := sip.NewRequest(method, uri)
	res, err := c.Do(context.Background(), req)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	return res
}

func TestOptionsAndDrain(t *testing.T) {
	b, reg, addr := startB2BUA(t)
	if ok, detail := b.Ready(); !ok {
		t.Errorf("Ready() = false (%s), want true while serving", detail)
	}
	if res := send(t, sip.OPTIONS, addr); res.StatusCode != 200 || res.GetHeader("Allow") == nil {
		t.Errorf("OPTIONS = %d with Allow %v, want 200 with Allow", res.StatusCode, res.GetHeader("Allow"))
	}
	if res := send(t, sip.INVITE, addr); res.StatusCode != 503 {
		t.Errorf("INVITE without sip.pbx = %d, want 503", res.StatusCode)
	}
	b.Drain(context.Background())
	for _, m := range []sip.RequestMethod{sip.INVITE, sip.REGISTER, sip.OPTIONS} {
		res := send(t, m, addr)
		ra := res.GetHeader("Retry-After")
		if res.StatusCode != 503 || ra == nil || ra.Value() != "30" {
			t.Errorf("%s while draining = %d Retry-After %v, want 503 with Retry-After 30", m, res.StatusCode, ra)
		}
	}
	if got := testutil.ToFloat64(b.m.Requests.WithLabelValues("OPTIONS", "in")); got != 2 {
		t.Errorf(`cusax_sip_requests_total{method="OPTIONS",direction="in"} = %v, want 2`, got)
	}
	if got := testutil.ToFloat64(b.m.Responses.WithLabelValues("5xx", "out")); got != 4 {
		t.Errorf(`cusax_sip_responses_total{code_class="5xx",direction="out"} = %v, want 4`, got)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("metric lint: %v %v", problems, err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Listen: []Listener{{"sctp", "127.0.0.1:5060"}}},
		{Listen: []Listener{{"tls", "127.0.0.1:5061"}}},
	} {
		if _, err := New(cfg, slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry())); err == nil {
			t.Errorf("New(%+v) = nil error, want one", cfg)
		}
	}
}

func TestListenFailureReleasesEverything(t *testing.T) {
	b, _, addr := startB2BUA(t)
	_ = b
	reg := prometheus.NewRegistry()
	// The UDP port is taken by the first gateway: the second must fail and
	// keep nothing bound (its TCP listener on a free port included).
	b2, err := New(Config{Listen: []Listener{{"tcp", "127.0.0.1:0"}, {"udp", addr}}}, slog.New(slog.DiscardHandler), NewMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.Listen(); err == nil || !strings.Contains(err.Error(), "udp://"+addr) {
		t.Errorf("Listen on a busy port = %v, want an error naming udp://%s", err, addr)
	}
	if got := b2.Addrs(); len(got) != 0 {
		t.Errorf("Addrs() after failed Listen = %v, want none", got)
	}
}
