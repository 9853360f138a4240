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
	send := func(t *testing.T, port int) {
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
	synctest.Test(t, func(t *testing.T) {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
		p := newPool(loopback, min, max, q, g, true)
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
		send(t, a.port)
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
		send(t, c.port+1)
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
