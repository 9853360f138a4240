package rtprelay

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// engine moves packets between the relay's sockets. The relay decides
// what happens to a packet (sock.receive: latching, counters, flood guard,
// destination); an engine only reads, calls receive, writes to the
// returned socket's peer and calls sent.
//
// goEngine runs a goroutine per socket. epollEngine (Linux) serves every
// socket from a few workers, each socket pinned to one worker so a stream is
// never reordered; it takes the sockets off the runtime's netpoller and
// moves packets with raw recvfrom/sendto (engine_epoll_linux.go says why).
// start adds a socket to a worker's set; stop retires its descriptor, which
// is closed (or, for a socket of the relay's pool, handed back to the pool,
// still in the worker's set) once no worker can still be reading from or
// sending through it; wait stops the workers.
type engine interface {
	// start begins serving s; s.out is set and stays.
	start(s *sock)
	// stop closes s; packets stop flowing. It does not wait.
	stop(s *sock)
	// wait is called once, at shutdown, after every socket was stopped; it
	// returns when nothing is served any more.
	wait()
}

// bufSize is the loop's receive buffer: above any Ethernet MTU, so a full
// buffer means an oversized datagram, which is dropped.
const bufSize = 2048

// goEngine serves each socket with its own goroutine, blocking in
// ReadFromUDPAddrPort and forwarding synchronously with WriteToUDPAddrPort.
type goEngine struct {
	epoch time.Time
	log   *slog.Logger
	wg    sync.WaitGroup
}

func newGoEngine(epoch time.Time, log *slog.Logger) *goEngine {
	return &goEngine{epoch: epoch, log: log}
}

func (e *goEngine) start(s *sock) { e.wg.Go(func() { e.loop(s) }) }

func (e *goEngine) stop(s *sock) { s.conn.Close() }

func (e *goEngine) wait() { e.wg.Wait() }

func (e *goEngine) loop(s *sock) {
	buf := make([]byte, bufSize)
	for !e.serve(s, buf) {
	}
}

// serve reads and forwards until the socket is closed (true) or a packet
// made the packet path panic (false, logged, the packet dropped): one bad
// packet must not take down the relay.
func (e *goEngine) serve(s *sock, buf []byte) (closed bool) {
	defer func() {
		if v := recover(); v != nil {
			s.st.dropped.Add(1)
			e.log.Error("packet path panic", "call_id", s.logCallID(), "err", fmt.Sprint(v))
		}
	}()
	for {
		n, src, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return true
			}
			continue
		}
		e.forward(s, buf[:n], src)
	}
}

func (e *goEngine) forward(s *sock, p []byte, src netip.AddrPort) {
	forward(s, p, src, int64(time.Since(e.epoch)))
}

// forward hands a packet read from s to the packet path and sends it on.
// Engines share it; it does not allocate.
func forward(s *sock, p []byte, src netip.AddrPort, now int64) {
	if len(p) >= bufSize {
		s.st.dropped.Add(1)
		return
	}
	out, dst, ok := s.receive(p, src, now)
	if !ok {
		return
	}
	if _, err := out.conn.WriteToUDPAddrPort(p, dst); err != nil {
		s.st.dropped.Add(1)
		return
	}
	out.sent(len(p))
}
