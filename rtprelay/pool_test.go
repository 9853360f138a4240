package rtprelay

import (
	"net"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// bound reports whether port is bound on the loopback (a bind fails).
func bound(t *testing.T, port int) bool {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, uint16(port))))
	if err != nil {
		return true
	}
	c.Close()
	return false
}

// sendOldCall sends a datagram to port on the loopback, as the old peer of
// a freed pair still sending would.
func sendOldCall(t *testing.T, port int) {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, uint16(port))))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("late packet of the old call")); err != nil {
		t.Fatal(err)
	}
}

// TestPoolWarm: a raw pool keeps a freed pair's sockets bound through its
// quarantine, hands the same sockets out again after it, discards what was
// queued at them, refuses a pair whose old peer is still sending, and
// closes warm pairs nobody asked for.
func TestPoolWarm(t *testing.T) {
	if !rawSupported {
		t.Skip("raw sockets need Linux")
	}
	min, max := freeRange(t, 12)
	const q = 10 * time.Second
	synctest.Test(t, func(t *testing.T) {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
		p := newPool(loopback, min, max, q, q, g, true)
		defer p.close()
		a, err := p.get()
		if err != nil {
			t.Fatal(err)
		}
		fd := a.rtpFD
		p.put(a)
		if v := testutil.ToFloat64(g); v != 0 {
			t.Errorf("ports in use with the pair in quarantine = %v, want 0", v)
		}
		if !bound(t, a.port) || !bound(t, a.port+1) {
			t.Fatalf("ports %d/%d of a quarantined pair not bound", a.port, a.port+1)
		}
		b, err := p.get()
		if err != nil {
			t.Fatal(err)
		}
		if b == a {
			t.Fatalf("get during the quarantine returned the quarantined pair %d", a.port)
		}
		p.put(b)

		// After the quarantine: the same sockets again, queue emptied at
		// mid-quarantine.
		sendOldCall(t, a.port)
		time.Sleep(q/2 + time.Second)
		p.sweep()
		time.Sleep(q / 2)
		c, err := p.get()
		if err != nil {
			t.Fatal(err)
		}
		if c != a || c.rtpFD != fd {
			t.Fatalf("get after the quarantine = port %d fd %d, want the warm pair %d fd %d", c.port, c.rtpFD, a.port, fd)
		}
		if n := drainFD(c.rtpFD); n != 0 {
			t.Errorf("a reused socket held %d datagrams of its previous call", n)
		}
		if v := testutil.ToFloat64(g); v != 2 {
			t.Errorf("ports in use = %v, want 2", v)
		}

		// A peer still sending after the mid-quarantine drain: the pair is
		// not handed out but closed and quarantined anew.
		p.put(c)
		time.Sleep(q/2 + time.Second)
		p.sweep()
		sendOldCall(t, c.port+1)
		time.Sleep(q / 2)
		// b's quarantine ended before c's: it comes first, from the warm queue.
		if d, err := p.get(); err != nil || d != b {
			t.Fatalf("get = %v, %v; want the warm pair %d", d, err, b.port)
		}
		d, err := p.get()
		if err != nil {
			t.Fatal(err)
		}
		if d == c {
			t.Fatalf("a pair that received during its quarantine was handed out")
		}
		if bound(t, c.port) || bound(t, c.port+1) {
			t.Errorf("the refused pair %d is still bound", c.port)
		}
		p.put(d)

		// Warm pairs nobody asks for are closed one quarantine after theirs ended.
		time.Sleep(2 * q)
		p.sweep()
		if bound(t, d.port) {
			t.Errorf("warm pair %d still bound %v after its quarantine", d.port, 2*q)
		}
	})
}

// TestPoolWarmSilent: a warm pair is handed out again after the warm
// quarantine (rtp.quarantine_silent), long before the quarantine, when
// nothing arrived in its second half; what the old call sent in the first
// half is discarded. A pair that receives in the second half is closed and
// not handed out again before a whole quarantine.
func TestPoolWarmSilent(t *testing.T) {
	if !rawSupported {
		t.Skip("raw sockets need Linux")
	}
	min, max := freeRange(t, 8) // four pairs
	const q, s = time.Minute, time.Second
	synctest.Test(t, func(t *testing.T) {
		p := newPool(loopback, min, max, q, s, prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"}), true)
		defer p.close()
		if got := p.sweepEvery(); got != s/4 {
			t.Errorf("sweep every %v, want a quarter of the warm quarantine, %v", got, s/4)
		}
		a, err := p.get()
		if err != nil {
			t.Fatal(err)
		}
		b, err := p.get()
		if err != nil {
			t.Fatal(err)
		}
		fd := a.rtpFD
		p.put(a)
		p.put(b)
		sendOldCall(t, a.port) // in flight when the call ended
		time.Sleep(s/2 + time.Millisecond)
		p.sweep()                // the mid-quarantine drain
		sendOldCall(t, b.port+1) // b's old peer is still sending
		time.Sleep(s / 2)

		c, err := p.get()
		if err != nil {
			t.Fatal(err)
		}
		if c != a || c.rtpFD != fd {
			t.Fatalf("get after the warm quarantine = port %d fd %d, want the silent warm pair %d fd %d", c.port, c.rtpFD, a.port, fd)
		}
		if n := drainFD(c.rtpFD); n != 0 {
			t.Errorf("a reused socket held %d datagrams of its previous call", n)
		}
		// b is refused and closed; the two unused pairs come next, then
		// nothing until b's whole quarantine has passed.
		for range 2 {
			d, err := p.get()
			if err != nil {
				t.Fatal(err)
			}
			if d == b {
				t.Fatalf("the pair %d that received in its second half was handed out", b.port)
			}
		}
		if bound(t, b.port) || bound(t, b.port+1) {
			t.Errorf("the refused pair %d is still bound", b.port)
		}
		if d, err := p.get(); err == nil {
			t.Fatalf("get = pair %d within the refused pair's quarantine, want ErrNoPorts", d.port)
		}
		time.Sleep(q - time.Millisecond)
		if d, err := p.get(); err == nil {
			t.Fatalf("get = pair %d before the refused pair's quarantine ended, want ErrNoPorts", d.port)
		}
		time.Sleep(time.Millisecond)
		if d, err := p.get(); err != nil || d != b {
			t.Fatalf("get after the refused pair's quarantine = %v, %v; want pair %d", d, err, b.port)
		}
		for _, c := range []struct {
			name string
			c    prometheus.Counter
			want float64
		}{{"reused", p.reused, 1}, {"bound", p.bound, 5}, {"refused", p.refused, 1}} {
			if got := testutil.ToFloat64(c.c); got != c.want {
				t.Errorf("pairs %s = %v, want %v", c.name, got, c.want)
			}
		}
	})
}

// agePool moves every freed pair's release d into the past.
func agePool(p *pool, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.pairs {
		if !p.pairs[i].freed.IsZero() {
			p.pairs[i].freed = p.pairs[i].freed.Add(-d)
		}
	}
}

// TestReuseDropsLateDatagrams: a call that gets the still-bound sockets of
// an ended call never sees what was sent to them in between: the stray
// source is not latched, its packets are not relayed, nothing is counted.
func TestReuseDropsLateDatagrams(t *testing.T) {
	if !epollSupported {
		t.Skip("the epoll engine needs Linux")
	}
	const q = time.Hour
	min, max := freeRange(t, 4) // two pairs: one call
	r, _, _ := testRelay(t, Config{PortMin: min, PortMax: max, Engine: "epoll", Workers: 2, Quarantine: q})
	if _, ok := r.eng.(detachingEngine); !ok {
		t.Skip("the engine closes its sockets; nothing is reused")
	}
	runRelay(t, r)
	a, b, stray := listenPhone(t), listenPhone(t), listenPhone(t)
	toA1, toB1 := relayCall(t, r, "old", a, b)
	exchange(t, a, toA1, b, rtpPacket(1, 0, 1))
	if err := r.Delete("old"); err != nil {
		t.Fatal(err)
	}
	warm := func() int { r.pool.mu.Lock(); defer r.pool.mu.Unlock(); return r.pool.warm.count }
	settle(t, func() bool { return warm() == 2 })
	if n := warm(); n != 2 {
		t.Fatalf("%d warm pairs after the call ended, want 2", n)
	}
	// Late packets of the old call, to all four sockets.
	for _, to := range []netip.AddrPort{toA1, toB1} {
		for _, p := range []uint16{to.Port(), to.Port() + 1} {
			if _, err := stray.WriteToUDPAddrPort([]byte("stray"), netip.AddrPortFrom(loopback, p)); err != nil {
				t.Fatal(err)
			}
		}
	}
	agePool(r.pool, q/2+time.Second)
	r.pool.sweep() // the mid-quarantine drain
	agePool(r.pool, q/2)

	a2, b2 := listenPhone(t), listenPhone(t)
	toA2, toB2 := relayCall(t, r, "new", a2, b2)
	if got, want := []uint16{toA2.Port(), toB2.Port()}, []uint16{toA1.Port(), toB1.Port()}; !(got[0] == want[0] && got[1] == want[1] || got[0] == want[1] && got[1] == want[0]) {
		t.Fatalf("new call on ports %v, want the warm pairs %v", got, want)
	}
	pkt := rtpPacket(7, 0, 9)
	if from := exchange(t, a2, toA2, b2, pkt); from != toB2 {
		t.Errorf("relayed from %v, want %v", from, toB2)
	}
	exchange(t, b2, toB2, a2, rtpPacket(8, 0, 10))
	// The relay counts a packet as sent after sendto returned: the phone
	// may read it before that.
	var s Stats
	settle(t, func() bool {
		var err error
		if s, err = r.Query("new"); err != nil {
			t.Fatal(err)
		}
		return s.Legs[0].Streams[0].SentPackets == 1 && s.Legs[1].Streams[0].SentPackets == 1
	})
	for side, l := range s.Legs {
		st := l.Streams[0]
		if st.Packets != 1 || st.Dropped != 0 || st.SentPackets != 1 {
			t.Errorf("leg %d: %d packets received, %d dropped, %d sent; want 1, 0, 1 (stray datagrams of the old call must be gone)", side, st.Packets, st.Dropped, st.SentPackets)
		}
	}
	if p := s.Legs[0].Streams[0].Peer; p != a2.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Errorf("leg A latched to %v, want the new phone %v", p, a2.LocalAddr())
	}
}

// A raw pool keeps at most fdBudget descriptors bound, the pairs calls
// hold included: a freed pair past it is closed, and a call that needs a
// cold pair at the budget closes the newest warm pair first (descriptors
// are limited: at high call rates the quarantine holds more pairs than the
// process may keep open).
func TestPoolWarmBudget(t *testing.T) {
	if !rawSupported {
		t.Skip("raw sockets need Linux")
	}
	if fdBudget() < 8 {
		t.Fatalf("fdBudget() = %d with the test's open-file limit, want at least 8", fdBudget())
	}
	min, max := freeRange(t, 12)
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	p := newPool(loopback, min, max, time.Minute, time.Minute, g, true)
	defer p.close()
	p.fdBudget = 6 // three pairs
	var held [4]*pair
	for i := range held {
		pr, err := p.get()
		if err != nil {
			t.Fatal(err)
		}
		held[i] = pr
	}
	a, b := held[0], held[1]
	p.put(a) // 3 pairs still held: no room
	p.put(b) // 2 held: room for one warm pair
	if bound(t, a.port) || bound(t, a.port+1) || a.rtpFD != -1 {
		t.Errorf("pair %d freed while 3 pairs of a budget of 3 were held: kept bound", a.port)
	}
	if !bound(t, b.port) || !bound(t, b.port+1) {
		t.Errorf("pair %d freed while 2 pairs of a budget of 3 were held: not kept warm", b.port)
	}
	if p.warm.count != 1 {
		t.Fatalf("%d warm pairs, want 1", p.warm.count)
	}
	e, err := p.get() // b is in quarantine: a cold pair, and no room for b any more
	if err != nil {
		t.Fatal(err)
	}
	if !bound(t, e.port) || e == b {
		t.Errorf("get() = pair %d (bound %v), want a newly bound cold pair", e.port, bound(t, e.port))
	}
	if bound(t, b.port) || b.rtpFD != -1 || p.warm.count != 0 {
		t.Errorf("warm pair %d still bound (%d warm) after a call needed its descriptors", b.port, p.warm.count)
	}
	if p.busy != 3 {
		t.Errorf("busy = %d, want 3", p.busy)
	}
}

// BenchmarkPoolSweep is the mid-quarantine drain of the warm pool per pair
// (two sockets, nothing queued: the common case), with 2,000 warm pairs
// due at once, as a sweep at 2,000 calls/s with every freed pair warm.
func BenchmarkPoolSweep(b *testing.B) {
	if !rawSupported {
		b.Skip("raw sockets need Linux")
	}
	const pairs = 2000
	min, max := freeRange(b, 2*pairs)
	p := newPool(loopback, min, max, time.Hour, time.Hour, prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"}), true)
	defer p.close()
	held := make([]*pair, pairs)
	for i := range held {
		pr, err := p.get()
		if err != nil {
			b.Fatal(err)
		}
		held[i] = pr
	}
	for _, pr := range held {
		p.put(pr)
	}
	if p.warm.count != pairs {
		b.Fatalf("%d warm pairs, want %d", p.warm.count, pairs)
	}
	agePool(p, time.Hour/2)
	for b.Loop() {
		p.mu.Lock()
		p.checked = 0
		p.mu.Unlock()
		p.sweep()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*pairs), "ns/pair")
}
