//go:build linux

package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
// The generator has one core and must cost less per packet than the relay
// it measures (a socket and a goroutine per phone topped out near 60,000
// packets/s with no relay at all; 16 shared sockets, each read by its own
// goroutine woken by the runtime's netpoller, at ~85,000 with a relay:
// the relay's packets arrive a few at a time, and every arrival woke a
// receiver). So:
//
//   - The phones share a few sockets ("lanes", each phone's SDP names its
//     lane's address), assigned in blocks of the send schedule, so the
//     phones due together leave in one sendmmsg. The relay still sees what
//     it would see from real phones: every relay socket receives 50
//     packets/s from one source and sends to one destination; only the
//     destinations' ports repeat.
//   - One goroutine does everything on a tick (-tick, 100 µs: a periodic
//     timerfd it blocks on in a raw read, holding its P, then yields once:
//     one syscall and one wakeup per tick; through the runtime's netpoller
//     a tick cost three syscalls and a second thread switch): it sends what is due, then reads
//     every lane with packets (an epoll set of its own, polled without
//     waiting) in recvmmsg batches. The lanes are raw non-blocking sockets
//     outside the runtime's netpoller, so an arrival wakes nobody. Reading
//     late does not change the latency: the kernel stamps a packet when it
//     arrives.
//   - Packets are stamped just before their sendmmsg, which sends at most
//     sendChunk: a packet's stamp is early by the kernel time of the
//     messages before it in that call (5–8 µs each on the development VM;
//     `direct` shows the harness's own floor).

const (
	ptime   = 20 * time.Millisecond
	pktSize = 12 + 160 // RTP header + 20 ms of PCMA

	// Payload layout after the RTP header.
	offStamp = 12 // int64 send time, ns since the Unix epoch
	offPhase = 20 // phase the packet was sent in

	batch     = 32 // messages per recvmmsg, and queued per lane for sending
	sendChunk = 4  // messages per sendmmsg: a packet's stamp is early by the kernel time of the ones before it in its call

	lateAfter = 5 * time.Millisecond // a send this far behind schedule counts as late
)

// Measurement phases: only packets sent in phaseMeasure are counted.
const (
	phaseWarmup uint32 = iota
	phaseMeasure
	phaseDone
)

// lane is one generator socket shared by many phones: a raw non-blocking
// descriptor, not in the runtime's netpoller.
type lane struct {
	fd   int
	addr netip.AddrPort
}

func newLane() (*lane, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("relaybench: socket: %w", err)
	}
	if err = unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("relaybench: bind: %w", err)
	}
	if err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("relaybench: SO_TIMESTAMPNS: %w", err)
	}
	// Room for bursts while the generator's core is busy elsewhere.
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("relaybench: getsockname: %w", err)
	}
	in4, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		unix.Close(fd)
		return nil, fmt.Errorf("relaybench: lane bound to %v", sa)
	}
	return &lane{fd: fd, addr: netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port))}, nil
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
func (p *phone) sdp(user string) []byte { return phoneSDP(user, p.lane.addr.Port()) }

// phoneSDP is a phone's offer or answer: PCMA on 127.0.0.1:port.
func phoneSDP(user string, port uint16) []byte {
	return []byte("v=0\r\n" +
		"o=" + user + " 1 1 IN IP4 127.0.0.1\r\n" +
		"s=-\r\n" +
		"c=IN IP4 127.0.0.1\r\n" +
		"t=0 0\r\n" +
		"m=audio " + strconv.Itoa(int(port)) + " RTP/AVP 8\r\n" +
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
	late     atomic.Uint64 // sends in phaseMeasure more than lateAfter behind schedule, and slots skipped more than a period behind
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
	tick   time.Duration
	epfd   int         // the lanes, level-triggered; the event's Fd is the lane's index
	tfd    int         // a periodic timerfd, blocking; closed by the loop, or by close when none ran
	stop   atomic.Bool // set by close: the loop ends at its next tick
	wg     sync.WaitGroup

	// Owned by the loop.
	queue []pending // per lane: messages waiting for sendmmsg
	rx    receiver
}

// pending is a lane's messages for its next sendmmsg.
type pending struct {
	hdrs [batch]unix.Mmsghdr
	ps   [batch]*phone
	n    int
}

// receiver holds the recvmmsg buffers.
type receiver struct {
	evs  []unix.EpollEvent
	hdrs [batch]unix.Mmsghdr
	iovs [batch]unix.Iovec
	bufs [batch][256]byte
	oobs [batch][64]byte
}

// newGenerator opens nlanes sockets and makes 2*calls phones on them; the
// loop wakes every tick.
func newGenerator(calls, nlanes int, tick time.Duration) (g *generator, err error) {
	g = &generator{st: newStats(), tick: tick, epfd: -1, tfd: -1}
	defer func() {
		if err != nil {
			g.close()
		}
	}()
	if g.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("relaybench: epoll_create1: %w", err)
	}
	if g.tfd, err = unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC); err != nil {
		return nil, fmt.Errorf("relaybench: timerfd: %w", err)
	}
	for i := range max(1, min(nlanes, calls)) {
		l, err := newLane()
		if err != nil {
			return nil, err
		}
		g.lanes = append(g.lanes, l)
		if err := unix.EpollCtl(g.epfd, unix.EPOLL_CTL_ADD, l.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(i)}); err != nil {
			return nil, fmt.Errorf("relaybench: epoll_ctl: %w", err)
		}
	}
	// Lanes in blocks of the send schedule (phone order), a call's two
	// phones next to each other: the phones due in one tick mostly share a
	// lane and leave in one sendmmsg, and their peers' packets come back to
	// it together.
	nl := len(g.lanes)
	for i := range 2 * calls {
		li := (i / 2) * nl / calls
		g.phones = append(g.phones, newPhone(g.lanes[li], li, uint32(i+1)))
	}
	g.queue = make([]pending, nl)
	g.rx.evs = make([]unix.EpollEvent, nl)
	for i := range g.rx.hdrs {
		g.rx.iovs[i].Base = &g.rx.bufs[i][0]
		g.rx.iovs[i].SetLen(len(g.rx.bufs[i]))
		g.rx.hdrs[i].Hdr.Iov = &g.rx.iovs[i]
		g.rx.hdrs[i].Hdr.SetIovlen(1)
		g.rx.hdrs[i].Hdr.Control = &g.rx.oobs[i][0]
	}
	return g, nil
}

// start sends and receives every tick until ctx ends.
func (g *generator) start(ctx context.Context) {
	tfd := g.tfd
	g.tfd = -1 // the loop's now
	g.wg.Go(func() {
		defer unix.Close(tfd)
		g.loop(ctx, tfd)
	})
}

// close stops the loop (it also stops when the ctx given to start ends),
// waits for it and closes the sockets.
func (g *generator) close() {
	g.stop.Store(true)
	g.wg.Wait()
	if g.tfd >= 0 {
		unix.Close(g.tfd)
	}
	for _, l := range g.lanes {
		unix.Close(l.fd)
	}
	if g.epfd >= 0 {
		unix.Close(g.epfd)
	}
}

// loop paces every phone at one packet per ptime, the phones spread evenly
// over the period: each tick it sends what is due, per lane in sendmmsg
// batches, then reads what arrived.
func (g *generator) loop(ctx context.Context, tfd int) {
	ps := g.phones
	tick := unix.NsecToTimespec(int64(g.tick))
	if err := unix.TimerfdSettime(tfd, 0, &unix.ItimerSpec{Interval: tick, Value: tick}, nil); err != nil {
		return
	}
	step := ptime / time.Duration(max(1, len(ps)))
	// A generator that fell behind (its core taken) catches up at most at
	// twice the rate, not in one burst, and skips what is more than a
	// period late (counted as late): a burst of the missed packets made the
	// relay work through a backlog, which showed up as the relay's latency
	// and which independent phones would not have caused.
	perTick := max(8, 2*int(int64(len(ps))*int64(g.tick)/int64(ptime)))
	t0 := time.Now()
	var cycle int64
	i := 0
	var exp [8]byte
	for ctx.Err() == nil && !g.stop.Load() {
		now := time.Now()
		measuring := g.phase.Load() == phaseMeasure
		if behind := now.Sub(t0.Add(time.Duration(cycle)*ptime + time.Duration(i)*step)); len(ps) > 0 && behind > ptime {
			skip := int64((behind - ptime) / step)
			if measuring {
				g.st.late.Add(uint64(skip))
			}
			pos := int64(i) + skip
			cycle += pos / int64(len(ps))
			i = int(pos % int64(len(ps)))
		}
		for range min(len(ps), perTick) {
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
			q := &g.queue[p.li]
			h := &q.hdrs[q.n]
			h.Hdr.Name = (*byte)(unsafe.Pointer(&p.sa))
			h.Hdr.Namelen = unix.SizeofSockaddrInet4
			h.Hdr.Iov = &p.iov
			h.Hdr.SetIovlen(1)
			q.ps[q.n] = p
			if q.n++; q.n == batch {
				g.flush(p.li)
			}
			if i++; i == len(ps) {
				i, cycle = 0, cycle+1
			}
		}
		for li := range g.queue {
			if g.queue[li].n > 0 {
				g.flush(li)
			}
		}
		g.receive()
		// Wait for the next tick, keeping the P (nothing else of this
		// process has work between ticks); expirations missed while busy
		// make it return at once (the sends above catch up). A signal
		// (async preemption) ends it early: EINTR, then the yield.
		unix.RawSyscall(unix.SYS_READ, uintptr(tfd), uintptr(unsafe.Pointer(&exp[0])), uintptr(len(exp)))
		runtime.Gosched() // the harness's timers and goroutines
	}
}

// flush sends lane li's pending messages, sendChunk at a time, each chunk
// stamped just before its sendmmsg.
func (g *generator) flush(li int) {
	q := &g.queue[li]
	ph := g.phase.Load()
	fd := uintptr(g.lanes[li].fd)
	for off := 0; off < q.n; {
		end := min(off+sendChunk, q.n)
		stamp := uint64(time.Now().UnixNano())
		for _, p := range q.ps[off:end] {
			p.pkt[offPhase] = byte(ph)
			binary.BigEndian.PutUint64(p.pkt[offStamp:], stamp)
		}
		r, _, errno := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&q.hdrs[off])), uintptr(end-off), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
		case unix.EAGAIN, unix.EINTR, unix.ENOBUFS:
			runtime.Gosched() // a full send buffer (not seen on loopback): late, not lost
			continue
		default:
			off++ // skip the message that failed (ECONNREFUSED from an earlier ICMP, ...); not counted as sent
			continue
		}
		if ph == phaseMeasure {
			g.st.sent.Add(uint64(r))
		}
		off += int(r)
	}
	clear(q.ps[:q.n])
	q.n = 0
}

// receive reads every lane with packets queued, in recvmmsg batches, until
// it is empty.
func (g *generator) receive() {
	rx := &g.rx
	n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(g.epfd), uintptr(unsafe.Pointer(&rx.evs[0])), uintptr(len(rx.evs)), 0, 0, 0)
	if errno != 0 {
		return
	}
	for _, ev := range rx.evs[:n] {
		fd := uintptr(g.lanes[ev.Fd].fd)
		for {
			for i := range rx.hdrs {
				rx.hdrs[i].Hdr.SetControllen(len(rx.oobs[i]))
				rx.hdrs[i].Hdr.Flags = 0
			}
			r, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&rx.hdrs[0])), batch, unix.MSG_DONTWAIT, 0, 0)
			if errno != 0 {
				break // EAGAIN; ECONNREFUSED (reported once) from an ICMP: the next tick reads on
			}
			now := time.Now().UnixNano()
			for i := range int(r) {
				b := rx.bufs[i][:rx.hdrs[i].Len]
				if len(b) != pktSize || b[offPhase] != byte(phaseMeasure) {
					continue
				}
				ts, ok := rxTimestamp(rx.oobs[i][:rx.hdrs[i].Hdr.Controllen])
				if !ok {
					ts = now
				}
				g.st.received.Add(1)
				g.st.add(time.Duration(ts - int64(binary.BigEndian.Uint64(b[offStamp:]))))
			}
			if int(r) < batch {
				break
			}
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

// freeUDPPort returns a UDP port on 127.0.0.1 that was free a moment ago.
func freeUDPPort() (int, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}
