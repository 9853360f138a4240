package rtprelay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// freeRange finds n free UDP ports on 127.0.0.1, starting even.
func freeRange(t testing.TB, n int) (int, int) {
	t.Helper()
	for p := 40000 + 2*int(time.Now().UnixNano()%500)*10; p < 64000; p += n + 10 {
		p &^= 1
		if _, _, err := ProbePorts(loopback, p, p+n-1); err == nil {
			return p, p + n - 1
		}
	}
	t.Skip("no free block of UDP ports on 127.0.0.1")
	return 0, 0
}

func testRelay(t testing.TB, cfg Config) (*Relay, *Metrics, *prometheus.Registry) {
	t.Helper()
	if cfg.PortMin == 0 {
		cfg.PortMin, cfg.PortMax = freeRange(t, 40)
	}
	cfg.Listen = loopback
	if cfg.Timeout == 0 {
		cfg.Timeout = time.Minute
	}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	r, err := New(cfg, slog.New(slog.DiscardHandler), m)
	if err != nil {
		t.Fatal(err)
	}
	return r, m, reg
}

// runRelay runs r until the test ends.
func runRelay(t testing.TB, r *Relay) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}

func phoneSDP(port int, extra ...string) []byte {
	s := "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"m=audio " + strconv.Itoa(port) + " RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
	for _, e := range extra {
		s += e + "\r\n"
	}
	return []byte(s)
}

// mediaPort returns the port of the first m= line of an SDP.
func mediaPort(t testing.TB, sdp []byte) int {
	t.Helper()
	p, err := parseSDP(sdp)
	if err != nil || len(p.media) == 0 {
		t.Fatalf("relay SDP %q: %v", sdp, err)
	}
	if p.media[0].addr != loopback {
		t.Fatalf("relay SDP c= %v, want %v", p.media[0].addr, loopback)
	}
	return int(p.media[0].port)
}

func rtpPacket(seq uint16, ts, ssrc uint32) []byte {
	p := make([]byte, 12+160)
	p[0], p[1] = 0x80, 0
	binary.BigEndian.PutUint16(p[2:], seq)
	binary.BigEndian.PutUint32(p[4:], ts)
	binary.BigEndian.PutUint32(p[8:], ssrc)
	return p
}

func listenPhone(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func port(c *net.UDPConn) int { return c.LocalAddr().(*net.UDPAddr).Port }

// relayCall sets up a call between two phones and returns the relay ports
// each phone must send to.
func relayCall(t testing.TB, r *Relay, id string, a, b *net.UDPConn) (toA, toB netip.AddrPort) {
	t.Helper()
	ctx := context.Background()
	offer, err := r.Offer(ctx, id, "tag-a", phoneSDP(port(a)))
	if err != nil {
		t.Fatalf("Offer: %v", err)
	}
	answer, err := r.Answer(ctx, id, "tag-b", phoneSDP(port(b)))
	if err != nil {
		t.Fatalf("Answer: %v", err)
	}
	return netip.AddrPortFrom(loopback, uint16(mediaPort(t, answer))), netip.AddrPortFrom(loopback, uint16(mediaPort(t, offer)))
}

// exchange sends p from src to dst and reads it at rcv; it returns the
// source the receiver saw.
func exchange(t testing.TB, src *net.UDPConn, dst netip.AddrPort, rcv *net.UDPConn, p []byte) netip.AddrPort {
	t.Helper()
	if _, err := src.WriteToUDPAddrPort(p, dst); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	rcv.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := rcv.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no packet relayed from %v to %v via %v: %v", src.LocalAddr(), rcv.LocalAddr(), dst, err)
	}
	if string(buf[:n]) != string(p) {
		t.Fatalf("relayed packet differs")
	}
	return from
}

var engines = []string{"goroutine", "epoll"}

func TestEndToEnd(t *testing.T) {
	for _, e := range engines {
		t.Run(e, func(t *testing.T) { testEndToEnd(t, e) })
	}
}

func testEndToEnd(t *testing.T, engine string) {
	// Lock-step exchange runs far faster than 50 packets/s: lift the flood guard.
	r, m, reg := testRelay(t, Config{FloodLimit: 1 << 20, Engine: engine, Workers: 2})
	runRelay(t, r)
	a, b := listenPhone(t), listenPhone(t)
	aRTCP, bRTCP := listenPhoneAt(t, port(a)+1), listenPhoneAt(t, port(b)+1)
	toA, toB := relayCall(t, r, "call-1", a, b)

	const n = 236
	for i := range n {
		if from := exchange(t, a, toA, b, rtpPacket(uint16(1000+i), uint32(160*i), 0xa)); from != toB {
			t.Fatalf("B got a packet from %v, want the relay's %v (symmetric RTP)", from, toB)
		}
		if from := exchange(t, b, toB, a, rtpPacket(uint16(7000+i), uint32(160*i), 0xb)); from != toA {
			t.Fatalf("A got a packet from %v, want the relay's %v", from, toA)
		}
	}
	rtcp := []byte{0x80, 200, 0, 6, 0, 0, 0, 0xa, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}
	exchange(t, aRTCP, netip.AddrPortFrom(loopback, toA.Port()+1), bRTCP, rtcp)
	// The relay counts a packet as sent after sendto returns, which may be
	// after the phone read it.
	settle(t, func() bool { return testutil.ToFloat64(m.Packets.WithLabelValues("out")) == 2*n+1 })

	st, err := r.Query("call-1")
	if err != nil {
		t.Fatal(err)
	}
	sa, sb := st.Legs[0].Streams[0], st.Legs[1].Streams[0]
	if st.Legs[0].Tag != "tag-a" || st.Legs[1].Tag != "tag-b" || !st.Answered || st.OnHold {
		t.Errorf("Query = %+v", st)
	}
	if sa.Packets != n+1 || sa.SentPackets != n || sb.Packets != n || sb.SentPackets != n+1 || sa.Lost != 0 || sb.Lost != 0 {
		t.Errorf("stats A %+v, B %+v; want %d packets each way (+1 RTCP from A), none lost", sa, sb, n)
	}
	if !sa.Latched || sa.Peer != netip.AddrPortFrom(loopback, uint16(port(a))) || sa.LocalPort != int(toA.Port()) {
		t.Errorf("leg A stream = %+v, want latched to %v on %v", sa, a.LocalAddr(), toA)
	}
	if got := testutil.ToFloat64(m.Packets.WithLabelValues("in")); got != 2*n+1 {
		t.Errorf("cusax_rtp_packets_total{direction=in} = %v, want %d", got, 2*n+1)
	}
	if got := testutil.ToFloat64(m.Packets.WithLabelValues("out")); got != 2*n+1 {
		t.Errorf("cusax_rtp_packets_total{direction=out} = %v, want %d", got, 2*n+1)
	}
	if got := testutil.ToFloat64(m.Bytes.WithLabelValues("out")); got != 2*n*172+float64(len(rtcp)) {
		t.Errorf("cusax_rtp_bytes_total{direction=out} = %v, want %d", got, 2*n*172+len(rtcp))
	}
	if got := testutil.ToFloat64(m.PacketsLost); got != 0 {
		t.Errorf("cusax_rtp_packets_lost_total = %v, want 0", got)
	}
	if got := testutil.ToFloat64(m.Sessions); got != 1 {
		t.Errorf("cusax_rtp_sessions_active = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.PortsInUse); got != 4 {
		t.Errorf("cusax_rtp_ports_in_use = %v, want 4", got)
	}
	if err := r.Delete("call-1"); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete("call-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
	if _, err := r.Query("call-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Query after Delete = %v, want ErrNotFound", err)
	}
	if s, p := testutil.ToFloat64(m.Sessions), testutil.ToFloat64(m.PortsInUse); s != 0 || p != 0 {
		t.Errorf("after Delete sessions = %v, ports in use = %v; want 0, 0", s, p)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("metric lint: %v %v", problems, err)
	}
}

// settle waits up to 5 s for cond, which becomes true once the relay's
// goroutines have finished counting what the phones already received.
func settle(t testing.TB, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
}

func listenPhoneAt(t testing.TB, p int) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, uint16(p))))
	if err != nil {
		t.Skipf("port %d next to a phone's is busy: %v", p, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestReofferHoldResume(t *testing.T) {
	r, _, _ := testRelay(t, Config{})
	runRelay(t, r)
	ctx := context.Background()
	a, b := listenPhone(t), listenPhone(t)
	offer1, err := r.Offer(ctx, "c", "ta", phoneSDP(port(a)))
	if err != nil {
		t.Fatal(err)
	}
	ans1, err := r.Answer(ctx, "c", "tb", phoneSDP(port(b)))
	if err != nil {
		t.Fatal(err)
	}
	// A refreshes without change: same SDP, same o= version.
	offer2, err := r.Offer(ctx, "c", "ta", phoneSDP(port(a)))
	if err != nil {
		t.Fatal(err)
	}
	if string(offer2) != string(offer1) {
		t.Errorf("unchanged re-offer changed our SDP:\n%s\nthen\n%s", offer1, offer2)
	}
	// B puts A on hold (re-INVITE from the callee): our SDP to A changes, version +1, ports stay.
	hold, err := r.Offer(ctx, "c", "tb", phoneSDP(port(b), "a=sendonly"))
	if err != nil {
		t.Fatal(err)
	}
	if mediaPort(t, hold) != mediaPort(t, ans1) || !strings.Contains(string(hold), "a=sendonly") {
		t.Errorf("hold offer to A = %s, want port %d and sendonly", hold, mediaPort(t, ans1))
	}
	if v1, v2 := originVersion(t, ans1), originVersion(t, hold); v2 != v1+1 {
		t.Errorf("o= version %d then %d, want +1", v1, v2)
	}
	ansHold, err := r.Answer(ctx, "c", "ta", phoneSDP(port(a), "a=recvonly"))
	if err != nil {
		t.Fatal(err)
	}
	if mediaPort(t, ansHold) != mediaPort(t, offer1) {
		t.Errorf("hold answer to B has port %d, want %d", mediaPort(t, ansHold), mediaPort(t, offer1))
	}
	if st, _ := r.Query("c"); !st.OnHold || st.Legs[0].Tag != "ta" || st.Legs[1].Tag != "tb" {
		t.Errorf("after hold Query = %+v, want OnHold, tags ta/tb", st)
	}
	if _, err := r.Offer(ctx, "c", "tb", phoneSDP(port(b))); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Answer(ctx, "c", "ta", phoneSDP(port(a))); err != nil {
		t.Fatal(err)
	}
	if st, _ := r.Query("c"); st.OnHold {
		t.Errorf("after resume Query = %+v, want not OnHold", st)
	}
	if _, err := r.Answer(ctx, "nope", "x", phoneSDP(1000)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Answer(unknown call) = %v, want ErrNotFound", err)
	}
	if _, err := r.Offer(ctx, "bad", "x", []byte("hello")); !errors.Is(err, ErrBadSDP) {
		t.Errorf("Offer(bad SDP) = %v, want ErrBadSDP", err)
	}
}

func originVersion(t testing.TB, sdp []byte) uint64 {
	t.Helper()
	for _, l := range strings.Split(string(sdp), "\r\n") {
		if f := strings.Fields(strings.TrimPrefix(l, "o=")); strings.HasPrefix(l, "o=") && len(f) > 2 {
			v, _ := strconv.ParseUint(f[2], 10, 64)
			return v
		}
	}
	t.Fatalf("no o= in %q", sdp)
	return 0
}

func TestNoPortsAndQuarantine(t *testing.T) {
	min, max := freeRange(t, 4) // two pairs: one call
	r, m, _ := testRelay(t, Config{PortMin: min, PortMax: max, Quarantine: time.Hour})
	runRelay(t, r)
	ctx := context.Background()
	if _, err := r.Offer(ctx, "one", "t", phoneSDP(5000)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Offer(ctx, "two", "t", phoneSDP(5000)); !errors.Is(err, ErrNoPorts) {
		t.Errorf("Offer with the range used up = %v, want ErrNoPorts", err)
	}
	if got := testutil.ToFloat64(m.Sessions); got != 1 {
		t.Errorf("a failed Offer left sessions at %v, want 1", got)
	}
	if err := r.Delete("one"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Offer(ctx, "three", "t", phoneSDP(5000)); !errors.Is(err, ErrNoPorts) {
		t.Errorf("Offer with every pair in quarantine = %v, want ErrNoPorts", err)
	}
	if got := testutil.ToFloat64(m.PortsInUse); got != 0 {
		t.Errorf("ports in use = %v, want 0", got)
	}
}

func TestPool(t *testing.T) {
	min, max := freeRange(t, 20)
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	p := newPool(loopback, min, max, 0, 0, g, false)
	// Occupy one RTCP port: its pair must be skipped.
	busy := listenPhoneAt(t, min+5)
	_ = busy
	seen := map[int]bool{}
	var got []*pair
	for {
		pr, err := p.get()
		if errors.Is(err, ErrNoPorts) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if pr.port%2 != 0 || pr.port < min || pr.port+1 > max || seen[pr.port] {
			t.Fatalf("get = port %d, want a new even port in %d..%d", pr.port, min, max)
		}
		seen[pr.port] = true
		got = append(got, pr)
	}
	if len(got) != 9 || seen[min+4] {
		t.Errorf("got %d pairs (%v), want 9 without %d", len(got), seen, min+4)
	}
	if v := testutil.ToFloat64(g); v != 18 {
		t.Errorf("ports in use = %v, want 18", v)
	}
	// FIFO: the first pair freed comes back only after the others.
	for _, pr := range got {
		pr.rtp.Close()
		pr.rtcp.Close()
		p.put(pr)
	}
	busy.Close()
	next, err := p.get()
	if err != nil {
		t.Fatal(err)
	}
	if next.port != min+4 {
		t.Errorf("after freeing all, get = %d, want the pair that failed to bind earliest (%d)", next.port, min+4)
	}
	next.rtp.Close()
	next.rtcp.Close()
	p.put(next)
	if v := testutil.ToFloat64(g); v != 0 {
		t.Errorf("ports in use = %v, want 0", v)
	}
}

// pair of sockets without network, for the packet path.
func testSocks() (a, b *sock, cnt *counters) {
	m := NewMetrics(prometheus.NewRegistry())
	cnt = newCounters(m)
	env := &sockEnv{cnt: cnt, lim: limits{relatchAfter: int64(5 * time.Second), floodWindow: int64(10 * time.Millisecond), floodLimit: 100}}
	a = initSock(&endpoint{call: &call{id: "c"}}, 0, env, nil, -1)
	b = initSock(&endpoint{call: &call{id: "c"}}, 0, env, nil, -1)
	a.out, b.out = b, a
	return a, b, cnt
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestLatching(t *testing.T) {
	sdpA, sdpB := ap("192.0.2.1:4000"), ap("192.0.2.2:5000")
	natA, evil := ap("198.51.100.1:61000"), ap("203.0.113.66:1234")
	sec := int64(time.Second)
	pkt := rtpPacket(1, 0, 1)
	type step struct {
		at      int64
		from    netip.AddrPort
		wantOK  bool
		wantDst netip.AddrPort // where B's packets go after this one
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"sdp address", []step{{0, sdpA, true, sdpA}, {sec, evil, false, sdpA}}},
		{"nat then sdp wins in window", []step{{0, natA, true, natA}, {sec, sdpA, true, sdpA}, {2 * sec, natA, false, sdpA}}},
		{"nat stays after window", []step{{0, natA, true, natA}, {4 * sec, sdpA, false, natA}, {5 * sec, natA, true, natA}}},
		{"relatch after silence", []step{{0, natA, true, natA}, {4 * sec, evil, false, natA}, {10 * sec, evil, true, evil}}},
		{"same host preferred", []step{{0, evil, true, evil}, {sec, ap("192.0.2.1:4002"), true, ap("192.0.2.1:4002")}, {2 * sec, evil, false, ap("192.0.2.1:4002")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, _ := testSocks()
			a.expect(sdpA, false, 3*sec, 0)
			b.expect(sdpB, false, 3*sec, 0)
			for i, s := range tc.steps {
				out, dst, ok := a.receive(pkt, s.from, s.at)
				if ok != s.wantOK || (ok && (out != b || dst != sdpB)) {
					t.Fatalf("step %d: receive from %v at %v = %v %v %v, want ok=%v to %v", i, s.from, time.Duration(s.at), out != nil, dst, ok, s.wantOK, sdpB)
				}
				if got := *a.peer.Load(); got != s.wantDst {
					t.Fatalf("step %d: A's peer = %v, want %v", i, got, s.wantDst)
				}
			}
		})
	}
	t.Run("signalling reopens learning", func(t *testing.T) {
		a, b, _ := testSocks()
		a.expect(sdpA, false, 3*sec, 0)
		b.expect(sdpB, false, 3*sec, 0)
		a.receive(pkt, natA, 0)
		if _, _, ok := a.receive(pkt, evil, 4*sec); ok {
			t.Fatal("a new source was accepted outside a learning window")
		}
		a.expect(sdpA, false, 8*sec, 0) // re-INVITE, same address: keeps natA until something better
		if got := *a.peer.Load(); got != natA {
			t.Errorf("after an unchanged re-offer peer = %v, want %v", got, natA)
		}
		if _, _, ok := a.receive(pkt, evil, 5*sec); !ok {
			t.Fatal("first packet after signalling was dropped")
		}
		a.expect(ap("192.0.2.9:4000"), false, 12*sec, 0) // new address: used at once
		if got := *a.peer.Load(); got != ap("192.0.2.9:4000") {
			t.Errorf("after a changed re-offer peer = %v, want the new SDP address", got)
		}
	})
	t.Run("hold sends nothing", func(t *testing.T) {
		a, b, _ := testSocks()
		a.expect(sdpA, false, 3*sec, 0)
		b.expect(netip.AddrPort{}, true, 3*sec, 0)
		if _, _, ok := a.receive(pkt, sdpA, 0); ok {
			t.Error("a packet was sent to a side on hold (c=0.0.0.0)")
		}
		if _, _, ok := b.receive(pkt, sdpB, 0); !ok {
			t.Error("a side on hold may still send")
		}
		if b.peer.Load() != nil {
			t.Error("a held side got a destination from latching")
		}
	})
}

func TestLossJitterSSRC(t *testing.T) {
	a, b, cnt := testSocks()
	a.expect(ap("192.0.2.1:4000"), false, 0, int64(time.Second)/8000)
	b.expect(ap("192.0.2.2:5000"), false, 0, 0)
	src := ap("192.0.2.1:4000")
	ms := int64(time.Millisecond)
	for _, s := range []struct {
		seq  uint16
		ts   uint32
		ssrc uint32
		at   int64
	}{
		{1, 0, 7, 0}, {2, 160, 7, 20 * ms}, {4, 480, 7, 60 * ms}, {5, 640, 7, 80 * ms}, {3, 320, 7, 85 * ms},
		{6, 800, 7, 100 * ms}, {9, 1280, 7, 160 * ms},
		{500, 99, 8, 180 * ms}, {501, 259, 8, 200 * ms}, // new SSRC: no loss from the jump
	} {
		a.receive(rtpPacket(s.seq, s.ts, s.ssrc), src, s.at)
	}
	if got := a.endpoint().lost.Load(); got != 2 {
		t.Errorf("lost = %d, want 2 (7 and 8)", got)
	}
	if got := testutil.ToFloat64(cnt.lost); got != 3 {
		t.Errorf("cusax_rtp_packets_lost_total = %v, want 3 (gaps; the late 3 is not taken back)", got)
	}
	if got := a.endpoint().rtpIn.jitter16.Load() >> 4; got == 0 || got > 40 {
		t.Errorf("jitter = %d timestamp units, want a few (one packet 25 ms late)", got)
	}
	// Flood guard: 100 packets per window pass, the rest are dropped.
	passed := 0
	for i := range 150 {
		if _, _, ok := a.receive(rtpPacket(uint16(600+i), 0, 8), src, int64(time.Second)); ok {
			passed++
		}
	}
	if passed != 100 || a.st.flooded.Load() != 50 {
		t.Errorf("flood: %d passed, %d flooded; want 100, 50", passed, a.st.flooded.Load())
	}
}

func TestReceiveAllocs(t *testing.T) {
	a, b, _ := testSocks()
	a.expect(ap("192.0.2.1:4000"), false, int64(time.Hour), int64(time.Second)/8000)
	b.expect(ap("192.0.2.2:5000"), false, int64(time.Hour), 0)
	pkt := rtpPacket(1, 0, 1)
	src := ap("192.0.2.1:4000")
	var now int64
	seq := uint16(0)
	a.receive(pkt, src, now)
	if n := testing.AllocsPerRun(1000, func() {
		seq++
		now += int64(20 * time.Millisecond)
		binary.BigEndian.PutUint16(pkt[2:], seq)
		a.receive(pkt, src, now)
	}); n != 0 {
		t.Errorf("receive allocates %v times per packet, want 0", n)
	}
}

func TestForwardAllocs(t *testing.T) {
	r, _, _ := testRelay(t, Config{})
	sa, sb, dst := forwardRig(t, r)
	e := r.eng.(*goEngine)
	pkt := rtpPacket(1, 0, 1)
	src := dst.LocalAddr().(*net.UDPAddr).AddrPort()
	_ = sb
	e.forward(sa, pkt, src)
	if n := testing.AllocsPerRun(1000, func() { e.forward(sa, pkt, src) }); n != 0 {
		t.Errorf("forward (read-side logic and WriteToUDPAddrPort) allocates %v times per packet, want 0", n)
	}
}

// forwardRig binds two relay sockets wired to each other, the first
// expecting and latched to a phone socket, the second sending to it.
func forwardRig(t testing.TB, r *Relay) (sa, sb *sock, phone *net.UDPConn) {
	ea, err := r.newEndpoint(&call{id: "bench"})
	if err != nil {
		t.Fatal(err)
	}
	eb, err := r.newEndpoint(&call{id: "bench"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.release(ea, false); r.release(eb, false) })
	phone = listenPhone(t)
	sa, sb = &ea.rtp, &eb.rtp
	sa.out, sb.out = sb, sa
	pa := phone.LocalAddr().(*net.UDPAddr).AddrPort()
	sa.expect(pa, false, int64(time.Hour), int64(time.Second)/8000)
	sb.expect(pa, false, int64(time.Hour), 0) // B's packets go to the same phone socket; nobody reads it
	return sa, sb, phone
}

// nopEngine serves no socket: tests drive sock.receive themselves.
type nopEngine struct{}

func (nopEngine) start(*sock)  {}
func (nopEngine) stop(s *sock) { s.conn.Close() }
func (nopEngine) wait()        {}

func TestMediaTimeout(t *testing.T) {
	min, max := freeRange(t, 8)
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var fired []string
		r, _, _ := testRelay(t, Config{PortMin: min, PortMax: max, Timeout: 10 * time.Second, OnTimeout: func(id string) {
			mu.Lock()
			fired = append(fired, id)
			mu.Unlock()
		}})
		r.eng = nopEngine{}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- r.Run(ctx) }()
		count := func() int {
			synctest.Wait()
			mu.Lock()
			defer mu.Unlock()
			return len(fired)
		}
		bg := context.Background()
		if _, err := r.Offer(bg, "c", "ta", phoneSDP(4000)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Second)
		if n := count(); n != 0 {
			t.Fatalf("a call timed out before its answer (%d)", n)
		}
		if _, err := r.Answer(bg, "c", "tb", phoneSDP(5000)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(8 * time.Second)
		sockA := &r.calls["c"].streams[0].ends[0].rtp
		sockA.receive(rtpPacket(1, 0, 1), ap("127.0.0.1:4000"), r.now())
		time.Sleep(9 * time.Second)
		if n := count(); n != 0 {
			t.Fatalf("timed out 9 s after the last packet (Timeout 10 s)")
		}
		time.Sleep(3 * time.Second)
		if n := count(); n != 1 {
			t.Fatalf("OnTimeout called %d times 12 s after the last packet, want 1", n)
		}
		time.Sleep(time.Minute)
		if n := count(); n != 1 {
			t.Fatalf("OnTimeout called %d times, want once per silence", n)
		}
		// Hold (re-INVITE with inactive): no timeout at all.
		if _, err := r.Offer(bg, "c", "ta", phoneSDP(4000, "a=inactive")); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Answer(bg, "c", "tb", phoneSDP(5000, "a=inactive")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Hour)
		if n := count(); n != 1 {
			t.Fatalf("a call on hold timed out (%d calls)", n)
		}
		// Resume: the timeout runs again from the signalling event.
		if _, err := r.Offer(bg, "c", "ta", phoneSDP(4000)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Hour)
		if n := count(); n != 1 {
			t.Fatalf("a call on hold timed out after a resume offer without answer (%d calls)", n)
		}
		if _, err := r.Answer(bg, "c", "tb", phoneSDP(5000)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(11 * time.Second)
		if n := count(); n != 2 {
			t.Fatalf("after resume without media OnTimeout called %d times in all, want 2", n)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
		if _, err := r.Offer(bg, "d", "t", phoneSDP(4000)); !errors.Is(err, ErrClosed) {
			t.Errorf("Offer after Run = %v, want ErrClosed", err)
		}
	})
}

func BenchmarkReceive(b *testing.B) {
	sa, sb, _ := testSocks()
	sa.expect(ap("192.0.2.1:4000"), false, int64(time.Hour), int64(time.Second)/8000)
	sb.expect(ap("192.0.2.2:5000"), false, int64(time.Hour), 0)
	pkt := rtpPacket(1, 0, 1)
	src := ap("192.0.2.1:4000")
	var now int64
	b.ReportAllocs()
	for b.Loop() {
		now += int64(20 * time.Millisecond)
		pkt[3]++
		sa.receive(pkt, src, now)
	}
}

// BenchmarkForward is the per-packet work of the goroutine engine after the
// read: the packet path and one sendto.
func BenchmarkForward(b *testing.B) {
	r, _, _ := testRelay(b, Config{FloodLimit: 1 << 30})
	sa, _, phone := forwardRig(b, r)
	e := r.eng.(*goEngine)
	pkt := rtpPacket(1, 0, 1)
	src := phone.LocalAddr().(*net.UDPAddr).AddrPort()
	b.ReportAllocs()
	for b.Loop() {
		pkt[3]++
		e.forward(sa, pkt, src)
	}
}

// BenchmarkRoundTrip sends a packet from one phone through the relay to the
// other and waits for it: the full path, two syscalls on each side.
func BenchmarkRoundTrip(b *testing.B) {
	for _, e := range engines {
		b.Run(e, func(b *testing.B) { benchmarkRoundTrip(b, e) })
	}
}

func benchmarkRoundTrip(b *testing.B, engine string) {
	r, _, _ := testRelay(b, Config{FloodLimit: 1 << 30, Engine: engine, Workers: 1})
	runRelay(b, r)
	a, c := listenPhone(b), listenPhone(b)
	toA, _ := relayCall(b, r, "bench", a, c)
	pkt := rtpPacket(1, 0, 1)
	buf := make([]byte, 1500)
	b.ReportAllocs()
	for b.Loop() {
		pkt[3]++
		if _, err := a.WriteToUDPAddrPort(pkt, toA); err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.ReadFromUDPAddrPort(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := r.Delete("bench"); err != nil {
		b.Fatal(err)
	}
}

var _ = fmt.Sprint
var _ = os.Getenv
