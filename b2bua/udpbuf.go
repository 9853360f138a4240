package b2bua

import (
	"net"
)

// DefaultUDPReadBuffer is the receive buffer asked for on every SIP UDP
// listener when Config.UDPReadBuffer is 0: 4 MiB holds about 2,000 SIP
// datagrams (loopback accounting), a quarter of a second of traffic at
// 2,000 calls/s. With the kernel's default (net.core.rmem_default, 208 KiB
// on most systems) a pause of the single UDP reader of a few tens of
// milliseconds (GC, scheduling on a busy core) overflows the buffer and
// the kernel drops requests and responses; the peers' retransmissions
// then fail calls (docs/benchmarks.md, "Calls per second").
const DefaultUDPReadBuffer = 4 << 20

// setReadBuffer sizes the receive buffer of a SIP UDP listener. It asks
// for want bytes, first past net.core.rmem_max (SO_RCVBUFFORCE, which
// needs CAP_NET_ADMIN), then within it (SO_RCVBUF, which the kernel clamps
// to net.core.rmem_max), and returns the size the kernel granted, in the
// same unit (the kernel reports twice the size for its bookkeeping; this is
// halved) or 0 when it cannot tell.
func setReadBuffer(c net.PacketConn, want int) int {
	uc, ok := c.(*net.UDPConn)
	if !ok {
		return 0
	}
	return setSockReadBuffer(uc, want)
}
