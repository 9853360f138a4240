package b2bua

import (
	"net"
	"net/netip"
	"testing"
)

// TestPeerConn: the addresses peerConn returns print as net.UDPConn's
// would, one per source, and the cache stays bounded.
func TestPeerConn(t *testing.T) {
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	served := servedConn(l)
	pc, ok := served.(*peerConn)
	if !ok {
		t.Fatalf("servedConn(*net.UDPConn) = %T, want *peerConn", served)
	}
	senders := make([]net.PacketConn, 2)
	for i := range senders {
		if senders[i], err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		defer senders[i].Close()
	}
	buf := make([]byte, 64)
	read := func(c net.PacketConn) (string, net.Addr) {
		t.Helper()
		n, a, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n]), a
	}
	var first net.Addr
	for i, s := range []net.PacketConn{senders[0], senders[0], senders[1]} {
		// One datagram read the plain way, one through peerConn: the
		// same source must print the same.
		for _, msg := range []string{"plain", "cached"} {
			if _, err := s.WriteTo([]byte(msg), l.LocalAddr()); err != nil {
				t.Fatal(err)
			}
		}
		got, plain := read(l)
		if got != "plain" {
			t.Fatalf("read %q, want plain", got)
		}
		got, cached := read(pc)
		if got != "cached" {
			t.Fatalf("read %q, want cached", got)
		}
		if cached.String() != plain.String() || cached.String() != s.LocalAddr().String() {
			t.Errorf("datagram %d: peerConn's source %q, net.UDPConn's %q, sender %q", i, cached, plain, s.LocalAddr())
		}
		if cached.Network() != "udp" {
			t.Errorf("Network() = %q", cached.Network())
		}
		switch i {
		case 0:
			first = cached
		case 1:
			if cached != first {
				t.Error("a second datagram from the same source got a new address")
			}
		case 2:
			if cached == first {
				t.Error("another source got the first source's address")
			}
		}
	}
	if len(pc.peers) != 2 {
		t.Errorf("%d cached sources, want 2", len(pc.peers))
	}

	// Full: the cache starts again rather than grow.
	for i := range maxPeerAddrs {
		pc.peers[netip.AddrPortFrom(netip.MustParseAddr("127.0.0.9"), uint16(i+1))] = &peerAddr{}
	}
	third, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if _, err := third.WriteTo([]byte("x"), l.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if _, a := read(pc); a.String() != third.LocalAddr().String() {
		t.Errorf("source %q, want %q", a, third.LocalAddr())
	}
	if len(pc.peers) != 1 {
		t.Errorf("%d cached sources after a full cache took a new one, want 1", len(pc.peers))
	}
}

// TestPeerAddrMapped: a dual-stack listener sees IPv4 peers as
// IPv4-mapped IPv6 addresses; they print as net.UDPConn prints them.
func TestPeerAddrMapped(t *testing.T) {
	for ap, want := range map[string]string{
		"[::ffff:127.0.0.1]:5060": "127.0.0.1:5060",
		"127.0.0.1:5061":          "127.0.0.1:5061",
		"[::1]:5062":              "[::1]:5062",
	} {
		a := netip.MustParseAddrPort(ap)
		p := &peerAddr{UDPAddr: *net.UDPAddrFromAddrPort(a)}
		p.s = p.UDPAddr.String()
		// What net.UDPConn.ReadFrom builds from the socket address.
		plain := &net.UDPAddr{IP: a.Addr().AsSlice(), Port: int(a.Port())}
		if p.String() != want || plain.String() != want {
			t.Errorf("%s: peerAddr %q, net.UDPAddr %q, want %q", ap, p, plain, want)
		}
	}
}

func BenchmarkPeerConnRead(b *testing.B) {
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	s, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for _, bc := range []struct {
		name string
		c    net.PacketConn
	}{{"plain", l}, {"peerConn", servedConn(l)}} {
		b.Run(bc.name, func(b *testing.B) {
			buf := make([]byte, 64)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.WriteTo([]byte("x"), l.LocalAddr()); err != nil {
					b.Fatal(err)
				}
				_, a, err := bc.c.ReadFrom(buf)
				if err != nil {
					b.Fatal(err)
				}
				_ = a.String()
			}
		})
	}
}
