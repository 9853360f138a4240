//go:build linux

package rtprelay

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// epollEngine serves every socket from a few workers, each with its own
// epoll set. A socket is pinned to one worker, so its packets are handled
// in order; a worker owns one receive buffer. Memory per socket is a map
// entry instead of a goroutine stack.
//
// What makes it cheap per packet (perf on the relaybench load, 50k
// packets/s on one core):
//
//   - The sockets are not in the Go runtime's netpoller. A net.UDPConn
//     registers its descriptor with the runtime's epoll set (edge-triggered,
//     in and out): every packet received and every packet sent (the
//     write-space wakeup when the loopback frees the skb) then also ran the
//     runtime's epoll callback, and the runtime's netpoll thread woke for
//     events no goroutine waited for. start therefore takes a duplicate of
//     the descriptor and closes the net.UDPConn; the engine owns the
//     duplicate and closes it.
//   - A worker does not block in a syscall. It parks its goroutine in the
//     runtime's netpoller on a gate: a second epoll set holding a timerfd
//     and, while the worker waits for packets, the worker's own set (an
//     epoll set is pollable). One runtime wakeup per idle period, not a
//     thread handing its P over: a blocking epoll_wait made sysmon retake
//     the P each time and poll at its fastest period. recvfrom, sendto and
//     epoll_wait run non-blocking through RawSyscall6, without
//     entersyscall/exitsyscall.
//   - Pacing (nextWake): while packets keep coming, the worker takes its
//     set out of the gate and comes back on the timer, one epollPace after
//     the last batch began, so one wakeup serves a period's packets instead
//     of one or two. Each wakeup costs a context switch (on a VM also the
//     idle halt and the IPI that ends it); a packet adds at most epollPace
//     of latency.
//   - One recvfrom per ready socket and wakeup: the set is level-triggered,
//     so a socket with more queued is reported again by the next
//     epoll_wait. Reading until EAGAIN cost a second, empty recvfrom per
//     packet at 50 packets/s per socket.
//   - Sends go straight to the destination socket's descriptor with sendto.
//     A socket stopped while another worker may be sending from it is
//     retired, not closed: its descriptor is closed once every worker has
//     finished the batch it was in (retire, reap), so a descriptor number is
//     never used after it was closed and handed to another socket.
//   - The clock is read once per batch: every packet of a batch was already
//     queued when epoll_wait returned.
type epollEngine struct {
	epoch time.Time
	log   *slog.Logger
	n     int

	once    sync.Once // the workers start with the first socket
	initErr error
	workers []*epollWorker
	next    atomic.Uint32
	wg      sync.WaitGroup

	retireMu sync.Mutex
	retired  []retiredFD
	seen     []uint64 // len(workers) per retired entry, in its order: no allocation per retired socket
	nRetired atomic.Int32

	// idle marks, in a worker's socks, the descriptor of a stopped pooled
	// socket that is still in the worker's set (see stop). Never served.
	idle sock
}

const epollSupported = true

type epollWorker struct {
	epfd, evfd int // the worker's sockets and its eventfd, level-triggered
	tfd        int // the pacing timer (timerfd)
	gatefd     int
	gate       *os.File        // gatefd in the runtime's netpoller; holds tfd, and epfd while not paced
	gateRC     syscall.RawConn // of gate
	e          *epollEngine

	// seq is odd while the worker handles a batch: between taking its
	// events and the end of the sends they caused.
	seq atomic.Uint64

	mu sync.Mutex
	// socks is indexed by descriptor: descriptors are small and dense, so
	// ~10 bytes per socket at full size instead of a map's ~37, and no hash
	// look-up per packet (a map's was 1.6 % of the worker's CPU at 100k
	// packets/s).
	socks []*sock
	quit  bool

	// Owned by the worker goroutine.
	events []unix.EpollEvent
	gev    [2]unix.EpollEvent
	errno  syscall.Errno
	poll   func(uintptr) bool // is the gate ready? made once (no closure per wait)
}

// retiredFD is the descriptor of a stopped socket; it is closed when every
// worker that was inside a batch when it was stopped has left that batch
// (the workers' seqs then are its row of epollEngine.seen).
type retiredFD struct {
	fd int32
	s  *sock // a pooled sock: handed back, not closed
}

// release closes a retired descriptor, or hands a pooled sock back to the
// relay.
func (r retiredFD) release() {
	if r.s != nil {
		r.s.env.detached(r.s)
		return
	}
	unix.Close(int(r.fd))
}

// epollEvents is the most events one epoll_wait returns: a batch.
const epollEvents = 128

// epollPace is the period of a worker under load: it adds at most this to
// a packet's latency and bounds the wakeups to 1/epollPace per second.
// epollMinPace is the shortest wait, when a batch took longer than a period.
const (
	epollPace    = int64(150 * time.Microsecond)
	epollMinPace = int64(time.Microsecond)
)

func newEpollEngine(epoch time.Time, log *slog.Logger, workers int) engine {
	return &epollEngine{epoch: epoch, log: log, n: min(workers, 255)} // epollState.wi
}

func (e *epollEngine) init() {
	for range e.n {
		w, err := e.newWorker()
		if err != nil {
			for _, w := range e.workers {
				w.close()
			}
			e.workers, e.initErr = nil, err
			return
		}
		e.workers = append(e.workers, w)
	}
	for _, w := range e.workers {
		e.wg.Go(w.run)
	}
}

func (e *epollEngine) newWorker() (w *epollWorker, err error) {
	w = &epollWorker{epfd: -1, evfd: -1, tfd: -1, gatefd: -1, e: e,
		events: make([]unix.EpollEvent, epollEvents)}
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	if w.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("rtprelay: epoll_create1: %w", err)
	}
	if w.evfd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("rtprelay: eventfd: %w", err)
	}
	if w.tfd, err = unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC|unix.TFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("rtprelay: timerfd: %w", err)
	}
	if w.gatefd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("rtprelay: epoll_create1: %w", err)
	}
	for _, c := range []struct{ set, fd int }{{w.epfd, w.evfd}, {w.gatefd, w.tfd}, {w.gatefd, w.epfd}} {
		if err = unix.EpollCtl(c.set, unix.EPOLL_CTL_ADD, c.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(c.fd)}); err != nil {
			return nil, fmt.Errorf("rtprelay: epoll_ctl: %w", err)
		}
	}
	// Non-blocking, os.NewFile registers it with the runtime's netpoller.
	if err = unix.SetNonblock(w.gatefd, true); err != nil {
		return nil, fmt.Errorf("rtprelay: epoll fd: %w", err)
	}
	w.gate = os.NewFile(uintptr(w.gatefd), "rtprelay-epoll")
	if w.gateRC, err = w.gate.SyscallConn(); err != nil {
		return nil, fmt.Errorf("rtprelay: epoll fd: %w", err)
	}
	w.poll = func(uintptr) bool {
		r, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(w.gatefd), uintptr(unsafe.Pointer(&w.gev[0])),
			uintptr(len(w.gev)), 0, 0, 0)
		if w.errno = errno; errno != 0 {
			return errno != unix.EINTR
		}
		return r > 0
	}
	return w, nil
}

func (w *epollWorker) close() {
	if w.gate != nil {
		w.gate.Close()
	} else if w.gatefd >= 0 {
		unix.Close(w.gatefd)
	}
	for _, fd := range []int{w.epfd, w.evfd, w.tfd} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// prepare takes s off the runtime's netpoller: the engine keeps a
// duplicate of its descriptor (in s.fd) and closes the net.UDPConn. It is
// idempotent.
func (e *epollEngine) prepare(s *sock) (*epollState, error) {
	es := &s.ep
	if es.prepared {
		return es, nil
	}
	if s.conn == nil { // a raw socket of the relay's pool: served as it is, handed back when retired
		es.v6, es.pooled, es.prepared = s.env.v6, true, true
		return es, nil
	}
	raw, err := s.conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd, derr := -1, error(nil)
	if err := raw.Control(func(sfd uintptr) { fd, derr = unix.FcntlInt(sfd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("rtprelay: dup: %w", derr)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("rtprelay: getsockname: %w", err)
	}
	_, v6 := sa.(*unix.SockaddrInet6)
	s.conn.Close() // the duplicate keeps the socket and its port
	s.fd = int32(fd)
	es.v6, es.prepared = v6, true
	return es, nil
}

func (e *epollEngine) start(s *sock) {
	e.once.Do(e.init)
	if e.initErr != nil {
		e.log.Error("epoll engine", "call_id", s.logCallID(), "err", e.initErr)
		return
	}
	es, err := e.prepare(s)
	if err == nil && s.out != nil {
		// Packets read from s are sent through s.out's descriptor, which
		// may start after s.
		_, err = e.prepare(s.out)
	}
	if err != nil { // the socket stays bound but unserved; its packets count nowhere
		e.log.Error("epoll add", "call_id", s.logCallID(), "err", err)
		return
	}
	// A pooled descriptor served before (a warm pair reused) is still in
	// its worker's set unless the worker took it out when it became
	// readable while idle (run): socks then holds e.idle, not nil.
	var owner *uint8
	if es.pooled {
		owner = &s.endpoint().pair.wi[s.li]
	}
	wi := 0
	if owner != nil && *owner != 0 {
		wi = int(*owner) - 1
	} else {
		wi = int(e.next.Add(1)) % len(e.workers)
	}
	w := e.workers[wi]
	es.wi = uint8(wi + 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if int(s.fd) >= len(w.socks) {
		w.socks = append(w.socks, make([]*sock, int(s.fd)+1-len(w.socks))...)
		w.socks = w.socks[:cap(w.socks)]
	}
	if owner != nil && *owner != 0 && w.socks[s.fd] == &e.idle {
		w.socks[s.fd] = s // in the set: no epoll_ctl
		return
	}
	// Added with w.mu held: the worker takes an idle descriptor out of its
	// set with w.mu held too, so it never removes this registration.
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, int(s.fd), &unix.EpollEvent{Events: unix.EPOLLIN, Fd: s.fd}); err != nil {
		w.socks[s.fd] = nil
		es.wi = 0
		e.log.Error("epoll add", "call_id", s.logCallID(), "err", err)
		return
	}
	w.socks[s.fd] = s
	if owner != nil {
		*owner = uint8(wi + 1)
	}
}

func (e *epollEngine) stop(s *sock) {
	es := &s.ep
	if !es.prepared { // never served
		if s.conn != nil {
			s.conn.Close()
		} else {
			s.env.detached(s)
		}
		return
	}
	if es.dead.Swap(true) {
		return
	}
	if es.pooled {
		// The descriptor stays in the worker's set: the pool keeps it
		// bound (warm) and a call reusing it needs no epoll_ctl, or closes
		// it, which takes it out of every set. The sock itself leaves the
		// worker's socks now, before the descriptor can be closed or
		// handed to another call: an event for this descriptor number
		// never again reaches s. (A close takes the socket out of the sets
		// only when it drops the last reference: should a child process
		// be forked while it is open, its registration may outlive the
		// number for a moment, and its events then go to whatever the
		// worker's table holds for the number: a sock whose recvfrom finds
		// its own queue, or an idle mark, or nothing.)
		if es.wi != 0 {
			w := e.workers[es.wi-1]
			w.mu.Lock()
			if w.socks[s.fd] == s {
				w.socks[s.fd] = &e.idle
			}
			w.mu.Unlock()
		}
		e.retireSock(s.fd, s)
		return
	}
	if es.wi != 0 {
		w := e.workers[es.wi-1]
		unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, int(s.fd), nil)
		w.mu.Lock()
		w.socks[s.fd] = nil
		w.mu.Unlock()
	}
	e.retire(s.fd)
}

// detaches: stopped pooled socks go back through sockEnv.detached
// (detachingEngine).
func (e *epollEngine) detaches() {}

// retire queues fd for closing and closes what no worker can still use.
// Every worker reads seq after dead was set, so a batch that starts later
// sees dead and sends nothing through fd.
func (e *epollEngine) retire(fd int32) { e.retireSock(fd, nil) }

// retireSock is retire for the descriptor of s; a pooled one is handed back
// to the relay instead of closed.
func (e *epollEngine) retireSock(fd int32, s *sock) {
	e.retireMu.Lock()
	for _, w := range e.workers {
		e.seen = append(e.seen, w.seq.Load())
	}
	e.retired = append(e.retired, retiredFD{fd: fd, s: s})
	e.nRetired.Add(1)
	e.retireMu.Unlock()
	e.reap()
}

// reap closes the retired descriptors no worker can still be using.
func (e *epollEngine) reap() {
	e.retireMu.Lock()
	defer e.retireMu.Unlock()
	n := len(e.workers)
	keep := e.retired[:0]
	for i, r := range e.retired {
		if seen := e.seen[i*n : (i+1)*n]; e.inUse(seen) {
			copy(e.seen[len(keep)*n:], seen)
			keep = append(keep, r)
			continue
		}
		r.release()
	}
	clear(e.retired[len(keep):])
	e.retired = keep
	e.seen = e.seen[:len(keep)*n]
	e.nRetired.Store(int32(len(keep)))
}

func (e *epollEngine) inUse(seen []uint64) bool {
	for i, w := range e.workers {
		if seen[i]&1 == 1 && w.seq.Load() == seen[i] {
			return true
		}
	}
	return false
}

func (e *epollEngine) wait() {
	e.once.Do(func() {}) // no worker starts after this
	for _, w := range e.workers {
		w.mu.Lock()
		w.quit = true
		w.mu.Unlock()
		w.wake()
	}
	e.wg.Wait()
	e.retireMu.Lock()
	for _, r := range e.retired { // no worker left
		r.release()
	}
	e.retired, e.seen = nil, nil
	e.nRetired.Store(0)
	e.retireMu.Unlock()
}

func (w *epollWorker) wake() {
	one := [8]byte{1}
	unix.Write(w.evfd, one[:])
}

// park waits, in the runtime's netpoller, until the gate is ready: a
// socket or the eventfd while not paced, the timer while paced.
func (w *epollWorker) park() error {
	if err := w.gateRC.Read(w.poll); err != nil {
		return err
	}
	if w.errno != 0 && w.errno != unix.EINTR {
		return w.errno
	}
	return nil
}

// collect takes the ready events of the worker's set without waiting.
func (w *epollWorker) collect() (int, error) {
	r, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(w.epfd), uintptr(unsafe.Pointer(&w.events[0])),
		uintptr(len(w.events)), 0, 0, 0)
	switch errno {
	case 0:
		return int(r), nil
	case unix.EINTR:
		return 0, nil
	}
	return 0, errno
}

// pace arms the timer to fire after d; d 0 disarms it. Either resets its
// expirations, so the gate is not ready for a past period.
func (w *epollWorker) pace(d int64) error {
	its := unix.ItimerSpec{Value: unix.NsecToTimespec(d)}
	return unix.TimerfdSettime(w.tfd, 0, &its, nil)
}

// gateEpfd puts the worker's set into the gate (in) or takes it out.
func (w *epollWorker) gateEpfd(in bool) error {
	if in {
		return unix.EpollCtl(w.gatefd, unix.EPOLL_CTL_ADD, w.epfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(w.epfd)})
	}
	return unix.EpollCtl(w.gatefd, unix.EPOLL_CTL_DEL, w.epfd, nil)
}

func (w *epollWorker) run() {
	defer w.close()
	ready := make([]*sock, 0, len(w.events))
	buf := make([]byte, bufSize)
	paced := false          // the set is out of the gate; the timer brings the worker back
	prev := int64(-1 << 62) // start of the last batch that had events
	for {
		err := w.park()
		var n int
		if err == nil {
			n, err = w.collect()
		}
		if err != nil {
			w.e.log.Error("epoll_wait", "err", err)
			return
		}
		start := int64(time.Since(w.e.epoch))
		w.seq.Add(1) // odd: descriptors of this batch are in use
		evs := w.events[:n]
		for _, ev := range evs {
			if ev.Fd == int32(w.evfd) {
				// Reset the eventfd before looking at what the wakers left, so
				// a wake that comes after this read is never lost.
				var b [8]byte
				unix.Read(w.evfd, b[:])
				break
			}
		}
		ready = ready[:0]
		w.mu.Lock()
		for _, ev := range evs {
			if int(ev.Fd) >= len(w.socks) {
				continue // never served here (the eventfd)
			}
			switch s := w.socks[ev.Fd]; s {
			case nil:
			case &w.e.idle:
				// An idle pooled socket received (a late packet of its
				// last call): out of the set, or the level-triggered set
				// would report it on every wakeup. The datagram stays
				// queued for the pool's drain check, which then refuses
				// the pair; a pair reused all the same is added again.
				unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, int(ev.Fd), nil)
				w.socks[ev.Fd] = nil
			default:
				ready = append(ready, s)
			}
		}
		quit := w.quit
		w.mu.Unlock()
		if quit {
			w.seq.Add(1)
			return
		}
		for _, s := range ready {
			w.recv(s, buf, start)
		}
		clear(ready)
		w.seq.Add(1) // even: done with this batch's descriptors
		if w.e.nRetired.Load() != 0 {
			w.e.reap()
		}

		var d int64
		was := paced
		paced, d = nextWake(paced, n, n == len(w.events), start, prev, int64(time.Since(w.e.epoch)))
		switch {
		case paced && !was:
			err = w.gateEpfd(false)
		case !paced && was:
			if err = w.pace(0); err == nil {
				err = w.gateEpfd(true)
			}
		}
		if paced && err == nil {
			err = w.pace(d)
		}
		if err != nil {
			w.e.log.Error("epoll pacing", "err", err)
			return
		}
		if n > 0 {
			prev = start
		}
	}
}

// nextWake is the pacing of a worker. Packets that pile up (a batch with
// two or more events less than two periods after the previous batch) pace
// it: it looks again one period after this batch began instead of at the
// next packet, so one wakeup serves the packets of a whole period. A
// period that brought fewer than two ends it: pacing would save nothing
// and only delay (a lone stream, or packets in lock-step, never wait). After a batch that began at start, found n
// events (full: as many as fit) and ended at now, with prev the start of
// the last batch before it that had events, it returns whether the worker
// is paced and, if so, how long it waits.
func nextWake(paced bool, n int, full bool, start, prev, now int64) (bool, int64) {
	if n < 2 || !paced && start-prev >= 2*epollPace {
		return false, 0
	}
	d := start + epollPace - now
	if full || d < epollMinPace {
		d = epollMinPace // behind: yield the P, then go on
	}
	return true, d
}

// recv reads one packet from s and forwards it; the set is level-triggered,
// so a socket with more queued is reported again by the next epoll_wait.
func (w *epollWorker) recv(s *sock, buf []byte, now int64) {
	defer func() {
		if v := recover(); v != nil {
			s.st.dropped.Add(1)
			w.e.log.Error("packet path panic", "call_id", s.logCallID(), "err", fmt.Sprint(v))
		}
	}()
	var rsa unix.RawSockaddrAny
	alen := uint32(unix.SizeofSockaddrAny)
	r, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(s.fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
		unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&alen)))
	if errno != 0 {
		return // EAGAIN: nothing after all; anything else: try again on the next wakeup
	}
	src, ok := sockaddrToAddrPort(&rsa)
	if !ok {
		return
	}
	epollForward(s, buf[:r], src, now)
}

// epollForward is forward with a raw sendto on the destination socket's
// descriptor.
func epollForward(s *sock, p []byte, src netip.AddrPort, now int64) {
	if len(p) >= bufSize {
		s.st.dropped.Add(1)
		return
	}
	out, dst, ok := s.receive(p, src, now)
	if !ok {
		return
	}
	if o := &out.ep; !o.prepared || o.dead.Load() || sendTo(out.fd, o.v6, p, dst) != 0 {
		s.st.dropped.Add(1)
		return
	}
	out.sent(len(p))
}

// sendTo sends p from fd (an AF_INET6 socket if v6) to dst without
// blocking (a full send buffer drops the packet).
func sendTo(fd int32, v6 bool, p []byte, dst netip.AddrPort) syscall.Errno {
	var ptr unsafe.Pointer
	var n uintptr
	var sa4 unix.RawSockaddrInet4
	var sa6 unix.RawSockaddrInet6
	a := dst.Addr()
	switch {
	case !v6 && a.Is4():
		sa4.Family = unix.AF_INET
		sa4.Addr = a.As4()
		pp := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		pp[0], pp[1] = byte(dst.Port()>>8), byte(dst.Port())
		ptr, n = unsafe.Pointer(&sa4), unix.SizeofSockaddrInet4
	case v6:
		sa6.Family = unix.AF_INET6
		sa6.Addr = a.As16() // an IPv4 address becomes v4-mapped
		pp := (*[2]byte)(unsafe.Pointer(&sa6.Port))
		pp[0], pp[1] = byte(dst.Port()>>8), byte(dst.Port())
		ptr, n = unsafe.Pointer(&sa6), unix.SizeofSockaddrInet6
	default:
		return unix.EAFNOSUPPORT
	}
	var b unsafe.Pointer
	if len(p) > 0 {
		b = unsafe.Pointer(&p[0])
	}
	_, _, errno := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(b), uintptr(len(p)),
		unix.MSG_DONTWAIT, uintptr(ptr), n)
	return errno
}

func sockaddrToAddrPort(rsa *unix.RawSockaddrAny) (netip.AddrPort, bool) {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1])), true
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(p[0])<<8|uint16(p[1])), true
	}
	return netip.AddrPort{}, false
}
