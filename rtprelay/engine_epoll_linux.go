//go:build linux

package rtprelay

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// epollEngine serves every socket from a few workers, each blocking in
// epoll_wait on its own epoll set. A socket is pinned to one worker, so its
// packets are handled in order; a worker owns one receive buffer. Memory
// per socket is a map entry instead of a goroutine stack.
type epollEngine struct {
	epoch time.Time
	log   *slog.Logger
	n     int

	once    sync.Once // the workers start with the first socket
	initErr error
	workers []*epollWorker
	next    atomic.Uint32
	wg      sync.WaitGroup
}

const epollSupported = true

type epollWorker struct {
	epfd, evfd int
	e          *epollEngine

	mu      sync.Mutex
	socks   map[int32]*sock // by fd
	closing []*sock         // stopped; closed by the worker between batches
	quit    bool
}

// epollBurst bounds the packets read from one socket per wakeup, so one
// busy socket cannot starve the others of its worker.
const epollBurst = 8

func newEpollEngine(epoch time.Time, log *slog.Logger, workers int) engine {
	return &epollEngine{epoch: epoch, log: log, n: workers}
}

func (e *epollEngine) init() {
	for range e.n {
		w, err := e.newWorker()
		if err != nil {
			for _, w := range e.workers {
				unix.Close(w.epfd)
				unix.Close(w.evfd)
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

func (e *epollEngine) newWorker() (*epollWorker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("rtprelay: epoll_create1: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("rtprelay: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, fmt.Errorf("rtprelay: epoll_ctl eventfd: %w", err)
	}
	return &epollWorker{epfd: epfd, evfd: evfd, e: e, socks: make(map[int32]*sock)}, nil
}

func (e *epollEngine) start(s *sock) {
	e.once.Do(e.init)
	if e.initErr != nil {
		e.log.Error("epoll engine", "call_id", s.callID, "err", e.initErr)
		return
	}
	raw, err := s.conn.SyscallConn()
	if err == nil {
		err = raw.Control(func(fd uintptr) { s.fd = int32(fd) })
	}
	w := e.workers[int(e.next.Add(1))%len(e.workers)]
	s.worker = w
	if err == nil {
		w.mu.Lock()
		w.socks[s.fd] = s
		w.mu.Unlock()
		err = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, int(s.fd), &unix.EpollEvent{Events: unix.EPOLLIN, Fd: s.fd})
	}
	if err != nil { // the socket stays bound but unserved; its packets count nowhere
		e.log.Error("epoll add", "call_id", s.callID, "err", err)
	}
}

func (e *epollEngine) stop(s *sock) {
	w, ok := s.worker.(*epollWorker)
	if !ok {
		s.conn.Close()
		return
	}
	unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, int(s.fd), nil)
	w.mu.Lock()
	delete(w.socks, s.fd)
	w.closing = append(w.closing, s)
	w.mu.Unlock()
	w.wake()
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
}

func (w *epollWorker) wake() {
	one := [8]byte{1}
	unix.Write(w.evfd, one[:])
}

func (w *epollWorker) run() {
	defer func() {
		unix.Close(w.epfd)
		unix.Close(w.evfd)
	}()
	events := make([]unix.EpollEvent, 128)
	ready := make([]*sock, 0, 128)
	buf := make([]byte, bufSize)
	for {
		n, err := unix.EpollWait(w.epfd, events, -1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			w.e.log.Error("epoll_wait", "err", err)
			return
		}
		evs := events[:max(n, 0)]
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
			if s := w.socks[ev.Fd]; s != nil && ev.Fd != int32(w.evfd) {
				ready = append(ready, s)
			}
		}
		closing, quit := w.closing, w.quit
		w.closing = nil
		w.mu.Unlock()
		for _, s := range closing { // after this batch was resolved: no read follows a close
			s.conn.Close()
		}
		if quit {
			return
		}
		for _, s := range ready {
			w.drain(s, buf)
		}
	}
}

// drain reads up to epollBurst packets from s; level-triggered epoll
// reports it again if more are queued.
func (w *epollWorker) drain(s *sock, buf []byte) {
	defer func() {
		if v := recover(); v != nil {
			s.st.dropped.Add(1)
			w.e.log.Error("packet path panic", "call_id", s.callID, "err", fmt.Sprint(v))
		}
	}()
	var rsa unix.RawSockaddrAny
	for range epollBurst {
		alen := uint32(unix.SizeofSockaddrAny)
		r, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(s.fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
			unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&alen)))
		if errno != 0 {
			return // EAGAIN: empty; anything else: try again on the next wakeup
		}
		src, ok := sockaddrToAddrPort(&rsa)
		if !ok {
			continue
		}
		forward(s, buf[:r], src, int64(time.Since(w.e.epoch)))
	}
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
