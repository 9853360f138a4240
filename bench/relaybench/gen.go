//go:build linux

package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The generator plays both phones of every call: each phone sends paced
// 20 ms PCMA packets (50 packets/s) to the relay port facing it and
// receives the other phone's packets. A packet carries the wall-clock time
// it was handed to the kernel; the receiving socket has SO_TIMESTAMPNS, so
// the latency is kernel receive time minus send time: the relay's wakeup,
// read, packet path and write plus two loopback hops, without the
// generator's own receive scheduling.
//
// The generator has one core, and a socket and a goroutine per phone cost
// it more than the relay spends per packet (it topped out near 60,000
// packets/s with no relay at all). So the phones share a few sockets
// ("lanes", each phone's SDP names its lane's address): packets leave in
// sendmmsg batches and arrive in recvmmsg batches. The relay sees what it
// would see from real phones: every relay socket receives 50 packets/s from
// one source and sends to one destination; only the destinations' ports
// repeat.

const (
	ptime   = 20 * time.Millisecond
	pktSize = 12 + 160 // RTP header + 20 ms of PCMA

	// Payload layout after the RTP header.
	offStamp = 12 // int64 send time, ns since the Unix epoch
	offPhase = 20 // phase the packet was sent in

	batch = 32 // messages per sendmmsg/recvmmsg

	lateAfter = 5 * time.Millisecond // a send this far behind schedule counts as late
)

// Measurement phases: only packets sent in phaseMeasure are counted.
const (
	phaseWarmup uint32 = iota
	phaseMeasure
	phaseDone
)

// lane is one generator socket shared by many phones.
type lane struct {
	conn *net.UDPConn
	raw  syscall.RawConn
	addr netip.AddrPort
}

func newLane() (*lane, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	raw, err := c.SyscallConn()
	if err == nil {
		var serr error
		err = raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
			if serr == nil {
				// Room for bursts while the generator's core is busy sending.
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
			}
		})
		if err == nil {
			err = serr
		}
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("relaybench: SO_TIMESTAMPNS: %w", err)
	}
	return &lane{conn: c, raw: raw, addr: c.LocalAddr().(*net.UDPAddr).AddrPort()}, nil
}

// phone is one end of a call; it sends through its lane.
type phone struct {
	lane *lane
	li   int // index of lane
	pkt  []byte
	seq  uint16
	dst  netip.AddrPort // the relay port facing it
	sa   unix.RawSockaddrInet4
	iov  unix.Iovec
}

func newPhone(l *lane, li int, ssrc uint32) *phone {
	p := &phone{lane: l, li: li, pkt: make([]byte, pktSize)}
	p.pkt[0], p.pkt[1] = 0x80, 8
	binary.BigEndian.PutUint32(p.pkt[8:], ssrc)
	p.iov.Base = &p.pkt[0]
	p.iov.SetLen(pktSize)
	return p
}

// setDst points the phone at dst.
func (p *phone) setDst(dst netip.AddrPort) {
	p.dst = dst
	p.sa = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: dst.Addr().As4()}
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&p.sa.Port))[:], dst.Port())
}

// sdp is the phone's offer or answer: PCMA, 20 ms, RTCP on port+1.
func (p *phone) sdp(user string) []byte {
	port := strconv.Itoa(int(p.lane.addr.Port()))
	return []byte("v=0\r\n" +
		"o=" + user + " 1 1 IN IP4 127.0.0.1\r\n" +
		"s=-\r\n" +
		"c=IN IP4 127.0.0.1\r\n" +
		"t=0 0\r\n" +
		"m=audio " + port + " RTP/AVP 8\r\n" +
		"a=rtpmap:8 PCMA/8000\r\n" +
		"a=ptime:20\r\n" +
		"a=sendrecv\r\n")
}

// sdpAddr returns the connection address and port of the first m= line.
func sdpAddr(sdp []byte) (netip.AddrPort, error) {
	var addr netip.Addr
	port := -1
	for l := range strings.Lines(string(sdp)) {
		l = strings.TrimRight(l, "\r\n")
		if strings.HasPrefix(l, "m=") {
			if port >= 0 {
				break // the first stream's c= lines are behind us
			}
			if f := strings.Fields(l); len(f) > 1 {
				port, _ = strconv.Atoi(f[1])
			}
		}
		if a, ok := strings.CutPrefix(l, "c=IN IP4 "); ok {
			if ip, err := netip.ParseAddr(a); err == nil {
				addr = ip // a media c= (after m=) wins over the session one
			}
		}
	}
	if !addr.IsValid() || port <= 0 || port > 65535 {
		return netip.AddrPort{}, fmt.Errorf("relaybench: no audio address in SDP %q", sdp)
	}
	return netip.AddrPortFrom(addr, uint16(port)), nil
}

// latency histogram: 1 µs buckets up to histMax.
const histMax = 200_000

type stats struct {
	sent     atomic.Uint64 // in phaseMeasure
	received atomic.Uint64 // sent in phaseMeasure and received
	late     atomic.Uint64 // sends in phaseMeasure more than lateAfter behind schedule
	hist     []atomic.Uint32
	over     atomic.Uint64 // latency >= histMax µs
}

func newStats() *stats { return &stats{hist: make([]atomic.Uint32, histMax)} }

func (s *stats) add(lat time.Duration) {
	us := lat.Microseconds()
	switch {
	case us < 0:
		us = 0
	case us >= histMax:
		s.over.Add(1)
		return
	}
	s.hist[us].Add(1)
}

// quantile returns the q-quantile latency in µs; histMax when it lies
// beyond the histogram, NaN without samples.
func (s *stats) quantile(q float64) float64 {
	n := s.over.Load()
	for i := range s.hist {
		n += uint64(s.hist[i].Load())
	}
	if n == 0 {
		return nan
	}
	want := uint64(q*float64(n-1)) + 1
	var c uint64
	for i := range s.hist {
		c += uint64(s.hist[i].Load())
		if c >= want {
			return float64(i)
		}
	}
	return histMax
}

// generator sends and receives the media of calls.
type generator struct {
	lanes  []*lane
	phones []*phone // a call is phones 2i (caller) and 2i+1 (callee)
	phase  atomic.Uint32
	st     *stats
	wg     sync.WaitGroup
}

// newGenerator opens nlanes sockets and makes 2*calls phones on them.
func newGenerator(calls, nlanes int) (*generator, error) {
	g := &generator{st: newStats()}
	for range max(1, min(nlanes, calls)) {
		l, err := newLane()
		if err != nil {
			g.close()
			return nil, err
		}
		g.lanes = append(g.lanes, l)
	}
	for i := range 2 * calls {
		li := (i / 2) % len(g.lanes)
		g.phones = append(g.phones, newPhone(g.lanes[li], li, uint32(i+1)))
	}
	return g, nil
}

// start begins receiving on every lane and sending until ctx ends.
func (g *generator) start(ctx context.Context) {
	for _, l := range g.lanes {
		g.wg.Go(func() { g.receive(l) })
	}
	g.wg.Go(func() { g.send(ctx) })
}

// close closes the lanes (ending the receivers) and waits for the sender,
// which stops when the ctx given to start ends.
func (g *generator) close() {
	for _, l := range g.lanes {
		l.conn.Close()
	}
	g.wg.Wait()
}

// receive reads the lane in recvmmsg batches until it is closed.
func (g *generator) receive(l *lane) {
	var (
		hdrs [batch]unix.Mmsghdr
		iovs [batch]unix.Iovec
		bufs [batch][2048]byte
		oobs [batch][64]byte
	)
	for i := range hdrs {
		iovs[i].Base = &bufs[i][0]
		iovs[i].SetLen(len(bufs[i]))
		hdrs[i].Hdr.Iov = &iovs[i]
		hdrs[i].Hdr.SetIovlen(1)
		hdrs[i].Hdr.Control = &oobs[i][0]
	}
	for {
		var n int
		err := l.raw.Read(func(fd uintptr) bool {
			for i := range hdrs {
				hdrs[i].Hdr.SetControllen(len(oobs[i]))
				hdrs[i].Hdr.Flags = 0
			}
			r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&hdrs[0])), batch, unix.MSG_DONTWAIT, 0, 0)
			if errno == unix.EAGAIN || errno == unix.EINTR {
				return false // wait for the poller
			}
			if errno == 0 {
				n = int(r)
			}
			return true
		})
		if err != nil {
			return // closed
		}
		now := time.Now().UnixNano()
		for i := range n {
			b := bufs[i][:hdrs[i].Len]
			if len(b) != pktSize || b[offPhase] != byte(phaseMeasure) {
				continue
			}
			rx, ok := rxTimestamp(oobs[i][:hdrs[i].Hdr.Controllen])
			if !ok {
				rx = now
			}
			g.st.received.Add(1)
			g.st.add(time.Duration(rx - int64(binary.BigEndian.Uint64(b[offStamp:]))))
		}
	}
}

// rxTimestamp finds SCM_TIMESTAMPNS in a control message buffer.
func rxTimestamp(oob []byte) (int64, bool) {
	const hdr = int(unsafe.Sizeof(unix.Cmsghdr{}))
	for len(oob) >= hdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < hdr || l > len(oob) {
			return 0, false
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && l >= hdr+16 {
			ts := (*unix.Timespec)(unsafe.Pointer(&oob[hdr]))
			return ts.Nano(), true
		}
		l = (l + 7) &^ 7 // CMSG_ALIGN
		if l > len(oob) {
			return 0, false
		}
		oob = oob[l:]
	}
	return 0, false
}

// send paces every phone at one packet per ptime, the phones spread evenly
// over the period, until ctx ends. Each wakeup sends what is due, per lane
// in sendmmsg batches; packets are stamped just before their batch leaves.
func (g *generator) send(ctx context.Context) {
	ps := g.phones
	if len(ps) == 0 {
		return
	}
	type pending struct {
		hdrs [batch]unix.Mmsghdr
		ps   [batch]*phone
		n    int
	}
	queue := make([]pending, len(g.lanes))
	flush := func(li int) {
		q := &queue[li]
		ph := g.phase.Load()
		stamp := uint64(time.Now().UnixNano())
		for i := range q.n {
			b := q.ps[i].pkt
			b[offPhase] = byte(ph)
			binary.BigEndian.PutUint64(b[offStamp:], stamp)
		}
		off := 0
		for off < q.n {
			var sent int
			err := g.lanes[li].raw.Write(func(fd uintptr) bool {
				r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&q.hdrs[off])), uintptr(q.n-off), unix.MSG_DONTWAIT, 0, 0)
				if errno == unix.EAGAIN || errno == unix.EINTR {
					return false
				}
				if errno == 0 {
					sent = int(r)
				} else {
					sent = 1 // skip the message that failed (ECONNREFUSED from an earlier ICMP, ...)
				}
				return true
			})
			if err != nil {
				q.n = 0
				return
			}
			if ph == phaseMeasure {
				g.st.sent.Add(uint64(sent))
			}
			off += sent
		}
		q.n = 0
	}

	step := ptime / time.Duration(len(ps))
	t0 := time.Now()
	var cycle int64
	i := 0
	for {
		now := time.Now()
		measuring := g.phase.Load() == phaseMeasure
		for {
			due := t0.Add(time.Duration(cycle)*ptime + time.Duration(i)*step)
			if due.After(now) {
				break
			}
			if measuring && now.Sub(due) > lateAfter {
				g.st.late.Add(1)
			}
			p := ps[i]
			p.seq++
			binary.BigEndian.PutUint16(p.pkt[2:], p.seq)
			binary.BigEndian.PutUint32(p.pkt[4:], uint32(p.seq)*160)
			li := p.li
			q := &queue[li]
			h := &q.hdrs[q.n]
			h.Hdr.Name = (*byte)(unsafe.Pointer(&p.sa))
			h.Hdr.Namelen = unix.SizeofSockaddrInet4
			h.Hdr.Iov = &p.iov
			h.Hdr.SetIovlen(1)
			q.ps[q.n] = p
			if q.n++; q.n == batch {
				flush(li)
			}
			if i++; i == len(ps) {
				i, cycle = 0, cycle+1
			}
		}
		for li := range queue {
			if queue[li].n > 0 {
				flush(li)
			}
		}
		if ctx.Err() != nil {
			return
		}
		next := t0.Add(time.Duration(cycle)*ptime + time.Duration(i)*step)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
	}
}

// freeUDPPort returns a UDP port on 127.0.0.1 that was free a moment ago.
func freeUDPPort() (int, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}
