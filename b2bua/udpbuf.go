package b2bua

import (
	"net"
	"sync"
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

// udpDrops sums, for cusax_sip_udp_receive_drops_total, the datagrams the
// kernel dropped on the SIP UDP listeners because their receive buffer was
// full (Linux: the drops column of /proc/net/udp and udp6; elsewhere 0).
// Listen adds each UDP listener; the count of a closed socket is kept.
type udpDrops struct {
	mu     sync.Mutex
	socks  []uint64 // inodes of the open listeners
	closed float64  // drops of listeners closed since
	last   map[uint64]float64
}

func (d *udpDrops) add(c net.PacketConn) {
	ino := socketInode(c)
	if ino == 0 {
		return
	}
	d.mu.Lock()
	d.socks = append(d.socks, ino)
	d.mu.Unlock()
}

// total reads the current counts; sockets no longer listed in /proc keep
// the count last read.
func (d *udpDrops) total() float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.socks) == 0 {
		return d.closed
	}
	now := readUDPDrops(d.socks)
	if d.last == nil {
		d.last = map[uint64]float64{}
	}
	sum := d.closed
	kept := d.socks[:0]
	for _, ino := range d.socks {
		if n, ok := now[ino]; ok {
			d.last[ino] = n
			sum += n
			kept = append(kept, ino)
			continue
		}
		d.closed += d.last[ino] // closed: keep its last count
		sum += d.last[ino]
		delete(d.last, ino)
	}
	d.socks = kept
	return sum
}
