package rtprelay

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestStreamLifecycle(t *testing.T) {
	r, m, _ := testRelay(t, Config{})
	runRelay(t, r)
	ctx := context.Background()
	inUse := func(want float64) {
		t.Helper()
		if got := testutil.ToFloat64(m.PortsInUse); got != want {
			t.Errorf("cusax_rtp_ports_in_use = %v, want %v", got, want)
		}
	}
	if _, err := r.Offer(ctx, "c", "ta", phoneSDP(4000)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Answer(ctx, "c", "tb", phoneSDP(5000)); err != nil {
		t.Fatal(err)
	}
	inUse(4)
	video := "m=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000"
	offer, err := r.Offer(ctx, "c", "ta", phoneSDP(4000, video))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := parseSDP(offer)
	if len(p.media) != 2 || p.media[1].port == 0 || p.media[1].kind != "video" {
		t.Fatalf("re-offer adding video = %s", offer)
	}
	inUse(8)
	answer, err := r.Answer(ctx, "c", "tb", phoneSDP(5000, "m=video 0 RTP/AVP 96"))
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := parseSDP(answer); len(p.media) != 2 || p.media[1].port != 0 {
		t.Fatalf("answer declining video = %s", answer)
	}
	inUse(4)
	st, err := r.Query("c")
	if err != nil {
		t.Fatal(err)
	}
	if s := st.Legs[0].Streams; len(s) != 2 || s[1].LocalPort != 0 || s[1].Media != "video" || s[0].LocalPort == 0 {
		t.Errorf("Query streams = %+v", s)
	}
	if err := r.Delete("c"); err != nil {
		t.Fatal(err)
	}
	inUse(0)
}

func TestRTCPMux(t *testing.T) {
	for _, e := range engines {
		t.Run(e, func(t *testing.T) { testRTCPMux(t, e) })
	}
}

func testRTCPMux(t *testing.T, engine string) {
	r, _, _ := testRelay(t, Config{Engine: engine})
	runRelay(t, r)
	ctx := context.Background()
	a, b := listenPhone(t), listenPhone(t)
	mux := func(p int) []byte { return phoneSDP(p, fmt.Sprintf("a=rtcp:%d", p), "a=rtcp-mux") }
	offer, err := r.Offer(ctx, "m", "ta", mux(port(a)))
	if err != nil {
		t.Fatal(err)
	}
	answer, err := r.Answer(ctx, "m", "tb", mux(port(b)))
	if err != nil {
		t.Fatal(err)
	}
	toA, toB := mediaPort(t, answer), mediaPort(t, offer)
	if !strings.Contains(string(offer), fmt.Sprintf("a=rtcp:%d\r\n", toB)) || !strings.Contains(string(offer), "a=rtcp-mux\r\n") {
		t.Errorf("muxed offer keeps RTCP on the RTP port: %s", offer)
	}
	rtp := rtpPacket(1, 0, 0xa)
	rtcp := []byte{0x80, 200, 0, 6, 0, 0, 0, 0xa, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}
	exchange(t, a, netip.AddrPortFrom(loopback, uint16(toA)), b, rtp)
	exchange(t, a, netip.AddrPortFrom(loopback, uint16(toA)), b, rtcp)
	exchange(t, b, netip.AddrPortFrom(loopback, uint16(toB)), a, rtcp)
	settle(t, func() bool { st, _ := r.Query("m"); return st.Legs[0].Streams[0].SentPackets == 1 })
	st, _ := r.Query("m")
	if s := st.Legs[0].Streams[0]; s.Packets != 2 || s.Lost != 0 {
		t.Errorf("leg A = %+v, want 2 packets (RTP and muxed RTCP), none lost", s)
	}
}

// TestConcurrentCalls runs calls in parallel with media, queries and
// deletes, for the race detector, and checks the gauges return to zero.
// epoll-budget leaves the pool room for a few warm pairs only, so that
// descriptors of closed sockets are reused by other calls' sockets while
// warm pairs are reused from their workers' sets.
func TestConcurrentCalls(t *testing.T) {
	for _, e := range append(slices.Clip(engines), "epoll-budget") {
		t.Run(e, func(t *testing.T) { testConcurrentCalls(t, e) })
	}
}

func testConcurrentCalls(t *testing.T, engine string) {
	min, max := freeRange(t, 200)
	engine, budget := strings.CutSuffix(engine, "-budget")
	r, m, _ := testRelay(t, Config{PortMin: min, PortMax: max, Quarantine: time.Nanosecond, FloodLimit: 1 << 20, Engine: engine, Workers: 3})
	if budget {
		r.pool.fdBudget = 2 * (2*10 + 3) // the 10 calls' pairs and 3 warm pairs
	}
	runRelay(t, r)
	var wg sync.WaitGroup
	for g := range 10 {
		wg.Go(func() {
			a, b := listenPhone(t), listenPhone(t)
			for round := range 3 {
				id := fmt.Sprintf("call-%d-%d", g, round)
				toA, toB := relayCall(t, r, id, a, b)
				for i := range 20 {
					exchange(t, a, toA, b, rtpPacket(uint16(i), uint32(160*i), 1))
					exchange(t, b, toB, a, rtpPacket(uint16(i), uint32(160*i), 2))
					if _, err := r.Query(id); err != nil {
						t.Error(err)
					}
				}
				if _, err := r.Offer(context.Background(), id, "tag-b", phoneSDP(port(b), "a=sendonly")); err != nil {
					t.Error(err)
				}
				if err := r.Delete(id); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	settle(t, func() bool { return testutil.ToFloat64(m.Packets.WithLabelValues("out")) == 10*3*40 })
	if s, p := testutil.ToFloat64(m.Sessions), testutil.ToFloat64(m.PortsInUse); s != 0 || p != 0 {
		t.Errorf("sessions = %v, ports in use = %v; want 0, 0", s, p)
	}
	if got := testutil.ToFloat64(m.Packets.WithLabelValues("out")); got != 10*3*40 {
		t.Errorf("packets out = %v, want %d", got, 10*3*40)
	}
}
