package b2bua

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cusax-gw/cusax-gw/internal/testenv"
	"github.com/cusax-gw/cusax-gw/rtprelay"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// startRelay runs an in-process relay on 127.0.0.1 for integration tests.
func startRelay(t *testing.T, reg prometheus.Registerer) (*rtprelay.Relay, *rtprelay.Metrics) {
	t.Helper()
	m := rtprelay.NewMetrics(reg)
	base := testenv.FreePortRange(t, 64)
	if base%2 == 1 {
		base++
	}
	r, err := rtprelay.New(rtprelay.Config{
		Listen:    netip.MustParseAddr("127.0.0.1"),
		Advertise: netip.MustParseAddr("127.0.0.1"),
		PortMin:   base, PortMax: base + 61,
		Timeout: time.Minute,
	}, slog.New(slog.DiscardHandler), m)
	if err != nil {
		t.Fatal(err)
	}
	runUntilEnd(t, "relay", r.Run)
	return r, m
}

// TestIntegrationBaresipCallThroughKamailio: two baresip phones register
// through the gateway to Kamailio (the PBX, on 127.0.0.2 so that only it
// is trusted) and alice calls bob. The call crosses the gateway twice
// (alice → PBX as a phone call, PBX → bob as a call to a registered
// phone); audio flows both ways through the relay; bob hangs up.
func TestIntegrationBaresipCallThroughKamailio(t *testing.T) {
	testenv.Require(t)
	k := testenv.StartKamailioOptions(t, testenv.KamailioOptions{Host: "127.0.0.2", Domains: []string{"example.com"}})
	reg := prometheus.NewRegistry()
	relay, rm := startRelay(t, reg)
	b := runGateway(t, Config{
		Listen: []Listener{{"udp", "127.0.0.1:0"}},
		Domain: "example.com",
		PBX:    "sip:" + k.Addr,
		CallOptions: CallOptions{
			Media:    relay,
			Resolver: mapResolver{"sip:alice@example.com": {"alice@example.com", "Alice"}},
			Trusted:  []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
		},
	}, reg, nil)
	gw := listenerAddr(t, b, "udp")

	alice := testenv.StartBaresip(t, testenv.BaresipOptions{Registrar: gw, User: "alice", Domain: "example.com"})
	bob := testenv.StartBaresip(t, testenv.BaresipOptions{Registrar: gw, User: "bob", Domain: "example.com"})
	for _, p := range []*testenv.Baresip{alice, bob} {
		if err := p.WaitRegistered(15 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	as, bs := alice.Session(t), bob.Session(t)
	aliceEv, bobEv := as.Events, bs.Events
	if err := as.Send("dial", "sip:bob@example.com"); err != nil {
		t.Fatal(err)
	}
	// baresip answers at once (auto answer): no CALL_INCOMING event.
	in := testenv.WaitEvent(t, bobEv, "CALL_ESTABLISHED", 15*time.Second)
	if !strings.Contains(in.PeerURI, "alice") {
		t.Errorf("bob's call is from %q, want alice", in.PeerURI)
	}
	testenv.WaitEvent(t, aliceEv, "CALL_ESTABLISHED", 15*time.Second)
	if n := b.ActiveCalls(); n != 2 {
		t.Errorf("gateway calls during the call = %d, want 2 (alice→PBX, PBX→bob)", n)
	}

	// Audio both ways: each relayed stream has carried packets. baresip
	// sends 50 packets/s; wait (bounded) for a second's worth per leg.
	err := waitFor(20*time.Second, func() bool {
		return testutil.ToFloat64(rm.Packets.WithLabelValues("in")) >= 4*50
	})
	if err != nil {
		t.Fatalf("relay packets in = %v: %v", testutil.ToFloat64(rm.Packets.WithLabelValues("in")), err)
	}
	for _, c := range b.callsSnapshot() {
		st, err := relay.Query(c.mediaID)
		if err != nil {
			t.Fatalf("relay Query(%s): %v", c.mediaID, err)
		}
		for _, l := range st.Legs {
			var pk uint64
			for _, s := range l.Streams {
				pk += s.Packets
			}
			if pk == 0 {
				t.Errorf("call %s leg %s relayed no packets: %+v", c.id, l.Tag, l)
			}
		}
	}

	if err := bs.Send("hangup", ""); err != nil {
		t.Fatal(err)
	}
	testenv.WaitEvent(t, aliceEv, "CALL_CLOSED", 15*time.Second)
	waitCallsEnded(t, b)
	for _, origin := range []string{"phone", "pbx"} {
		if got := testutil.ToFloat64(b.m.Calls.WithLabelValues(origin, "answered")); got != 1 {
			t.Errorf("calls_total{%s,answered} = %v, want 1", origin, got)
		}
	}
	if got := testutil.ToFloat64(b.m.CallInfo.WithLabelValues("stamped")); got != 2 {
		t.Errorf("callinfo stamped = %v, want 2 (alice resolved on both calls)", got)
	}
	if got := testutil.ToFloat64(rm.Sessions); got != 0 {
		t.Errorf("relay sessions after hangup = %v, want 0", got)
	}
	if got := testutil.ToFloat64(rm.PortsInUse); got != 0 {
		t.Errorf("relay ports in use after hangup = %v, want 0", got)
	}
}

// waitFor polls cond until it holds or timeout passes (a bound on a hang).
func waitFor(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return context.DeadlineExceeded
		}
		<-tick.C
	}
	return nil
}
