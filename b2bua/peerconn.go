package b2bua

import (
	"net"
	"net/netip"
)

// maxPeerAddrs bounds peerConn's cache: past it the cache starts again
// empty (a flood from random ports costs a map, not memory).
const maxPeerAddrs = 4096

// peerConn is a UDP listener as sipgo reads it. sipgo's one reader per
// listener calls ReadFrom and then String on the source address of every
// datagram; net.UDPConn makes a new *net.UDPAddr for each, and its String
// three more allocations. peerConn returns, for a source seen before, the
// same address with its string made once. Only sipgo's reader calls
// ReadFrom (one goroutine per listener): the cache needs no lock. The
// addresses it returns are never changed; sipgo only reads them.
type peerConn struct {
	*net.UDPConn
	peers map[netip.AddrPort]*peerAddr
}

// peerAddr is a source address with the string net.UDPAddr.String gives
// for it.
type peerAddr struct {
	net.UDPAddr
	s string
}

func (a *peerAddr) String() string { return a.s }

// servedConn returns what sipgo should serve for the listener c: c itself
// unless it is a *net.UDPConn.
func servedConn(c net.PacketConn) net.PacketConn {
	u, ok := c.(*net.UDPConn)
	if !ok {
		return c
	}
	return &peerConn{UDPConn: u, peers: make(map[netip.AddrPort]*peerAddr)}
}

// ReadFrom reads a datagram as net.UDPConn.ReadFrom does; the address's
// String is the one net.UDPConn's would give.
func (c *peerConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, ap, err := c.UDPConn.ReadFromUDPAddrPort(b)
	if err != nil {
		return n, nil, err
	}
	p := c.peers[ap]
	if p == nil {
		if len(c.peers) >= maxPeerAddrs {
			clear(c.peers)
		}
		p = &peerAddr{UDPAddr: *net.UDPAddrFromAddrPort(ap)}
		p.s = p.UDPAddr.String()
		c.peers[ap] = p
	}
	return n, p, nil
}
