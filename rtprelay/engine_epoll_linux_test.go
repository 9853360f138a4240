//go:build linux

package rtprelay

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

func testEpollEngine() *epollEngine {
	return &epollEngine{epoch: time.Now(), log: slog.New(slog.DiscardHandler)}
}

func TestEpollRecvAllocs(t *testing.T) {
	r, _, _ := testRelay(t, Config{FloodLimit: 1 << 20})
	sa, sb, phone := forwardRig(t, r)
	e := testEpollEngine()
	for _, s := range []*sock{sa, sb} {
		if _, err := e.prepare(s); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.stop(s) })
	}
	w := &epollWorker{e: e}
	buf := make([]byte, bufSize)
	pkt := rtpPacket(1, 0, 1)
	to := netip.AddrPortFrom(loopback, uint16(sa.endpoint().pair.port))
	got := make([]byte, 1500)
	phone.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n := testing.AllocsPerRun(100, func() {
		if _, err := phone.WriteToUDPAddrPort(pkt, to); err != nil {
			t.Fatal(err)
		}
		w.recv(sa, buf, int64(time.Since(e.epoch)))
		if _, _, err := phone.ReadFromUDPAddrPort(got); err != nil { // sb sends to the phone
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("epoll recv+forward allocates %v times per packet, want 0", n)
	}
	if got := sa.st.packets.Load(); got != 101 {
		t.Errorf("recv read %d packets, want 101", got)
	}
	if got := sb.st.sentPackets.Load(); got != 101 {
		t.Errorf("sent %d packets through the other socket, want 101", got)
	}
}

// TestEpollPrepare: the engine serves a socket from its own descriptor; the
// net.UDPConn is closed (off the runtime's netpoller) but the port stays
// bound until stop.
func TestEpollPrepare(t *testing.T) {
	r, _, _ := testRelay(t, Config{})
	sa, _, _ := forwardRig(t, r)
	e := testEpollEngine()
	es, err := e.prepare(sa)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := e.prepare(sa); again != es {
		t.Error("prepare twice made a second descriptor")
	}
	if _, _, err := sa.conn.ReadFromUDPAddrPort(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read on the net.UDPConn after prepare = %v, want net.ErrClosed", err)
	}
	addr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, uint16(sa.endpoint().pair.port)))
	if c, err := net.ListenUDP("udp", addr); err == nil {
		c.Close()
		t.Fatal("the port was free after prepare; want it held by the engine's descriptor")
	}
	e.stop(sa)
	c, err := net.ListenUDP("udp", addr)
	if err != nil {
		t.Fatalf("port still bound after stop: %v", err)
	}
	c.Close()
}

// TestEpollRetire: the descriptor of a stopped socket stays open while a
// worker that was inside a batch may still send through it, and is closed
// once that batch has ended.
func TestEpollRetire(t *testing.T) {
	e := testEpollEngine()
	busy, idle := &epollWorker{e: e}, &epollWorker{e: e}
	e.workers = []*epollWorker{busy, idle}
	busy.seq.Store(7) // inside a batch
	idle.seq.Store(4)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	isOpen := func() bool { _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); return err == nil }
	e.retire(int32(fd))
	if !isOpen() {
		t.Fatal("closed while a worker was inside a batch")
	}
	idle.seq.Add(2) // the idle worker's later batches see the socket dead: no matter
	e.reap()
	if !isOpen() || e.nRetired.Load() != 1 {
		t.Fatal("closed before the busy worker left its batch")
	}
	busy.seq.Add(1)
	e.reap()
	if isOpen() {
		unix.Close(fd)
		t.Fatal("still open after every batch that could use it ended")
	}
	if e.nRetired.Load() != 0 || len(e.retired) != 0 {
		t.Errorf("retired list %v after reaping", e.retired)
	}

	// Two retired at different times: the first is closed when its batch
	// ends, while the second (its workers' seqs moved to the front of the
	// list) waits for the batch it was stopped in.
	open2 := func(fd int) bool { _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); return err == nil }
	var fds [2]int
	for i := range fds {
		if fds[i], err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
			t.Fatal(err)
		}
	}
	busy.seq.Add(1) // 9: a new batch
	e.retire(int32(fds[0]))
	idle.seq.Add(1) // 7: the idle worker starts one too
	busy.seq.Add(2) // 11: the busy one left the first and is in another
	e.retire(int32(fds[1]))
	if open2(fds[0]) || !open2(fds[1]) || e.nRetired.Load() != 1 {
		t.Fatalf("after the first batch ended: open %v %v, %d retired; want closed, open, 1",
			open2(fds[0]), open2(fds[1]), e.nRetired.Load())
	}
	busy.seq.Add(1)
	e.reap()
	if !open2(fds[1]) {
		t.Fatal("closed while the idle worker's batch could still use it")
	}
	idle.seq.Add(1)
	e.reap()
	if open2(fds[1]) || len(e.retired) != 0 || len(e.seen) != 0 {
		unix.Close(fds[1])
		t.Fatalf("still open or listed after every batch ended (%d retired, %d seqs)", len(e.retired), len(e.seen))
	}
}

// TestEpollSendTo sends from an IPv4 and an IPv6 socket (to a v6 and a
// v4-mapped destination) and refuses an IPv6 destination on an IPv4 socket.
func TestEpollSendTo(t *testing.T) {
	recv := func(c *net.UDPConn, want []byte) {
		t.Helper()
		buf := make([]byte, 100)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:n]) != string(want) {
			t.Errorf("got %q, %v; want %q", buf[:n], err, want)
		}
	}
	e := testEpollEngine()
	v4 := &sock{conn: listenPhone(t)}
	o4, err := e.prepare(v4)
	if err != nil {
		t.Fatal(err)
	}
	defer e.stop(v4)
	dst4 := listenPhone(t)
	if errno := sendTo(v4.fd, o4.v6, []byte("four"), dst4.LocalAddr().(*net.UDPAddr).AddrPort()); errno != 0 {
		t.Fatal(errno)
	}
	recv(dst4, []byte("four"))
	if errno := sendTo(v4.fd, o4.v6, []byte("x"), netip.MustParseAddrPort("[::1]:9")); errno != unix.EAFNOSUPPORT {
		t.Errorf("IPv6 destination on an IPv4 socket: %v, want EAFNOSUPPORT", errno)
	}

	c6, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6unspecified})
	if err != nil {
		t.Skipf("no IPv6: %v", err)
	}
	v6 := &sock{conn: c6}
	o6, err := e.prepare(v6)
	if err != nil {
		t.Fatal(err)
	}
	defer e.stop(v6)
	if !o6.v6 {
		t.Fatal("an IPv6 socket was not recognised")
	}
	if errno := sendTo(v6.fd, o6.v6, []byte("mapped"), dst4.LocalAddr().(*net.UDPAddr).AddrPort()); errno != 0 {
		t.Fatal(errno)
	}
	recv(dst4, []byte("mapped"))
	dst6, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no ::1: %v", err)
	}
	defer dst6.Close()
	if errno := sendTo(v6.fd, o6.v6, []byte("six"), dst6.LocalAddr().(*net.UDPAddr).AddrPort()); errno != 0 {
		t.Fatal(errno)
	}
	recv(dst6, []byte("six"))
}

func TestEngineConfig(t *testing.T) {
	if _, err := New(Config{Listen: loopback, PortMin: 30000, PortMax: 30099, Timeout: time.Minute, Engine: "kernel"},
		slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry())); err == nil {
		t.Error("New accepted engine \"kernel\"")
	}
}

func TestEpollNextWake(t *testing.T) {
	const p = epollPace
	for _, tc := range []struct {
		name            string
		paced           bool
		n               int
		full            bool
		start, prev, at int64 // at: when the batch ended
		wantPaced       bool
		wantWait        int64
	}{
		{"idle, a lone packet", false, 1, false, 10 * p, 0, 10*p + 5, false, 0},
		{"idle, packets soon after the last", false, 2, false, 10 * p, 9 * p, 10*p + 5, true, p - 5},
		{"idle, one packet soon after the last (lock-step)", false, 1, false, 10 * p, 9 * p, 10*p + 5, false, 0},
		{"paced, a period with one packet", true, 1, false, 10 * p, 9 * p, 10*p + 5, false, 0},
		{"paced, packets keep coming", true, 7, false, 10 * p, 9 * p, 10*p + 50, true, p - 50},
		{"paced, a period without packets", true, 0, false, 10 * p, 9 * p, 10*p + 1, false, 0},
		{"paced, the batch took longer than a period", true, 7, false, 10 * p, 9 * p, 12 * p, true, epollMinPace},
		{"paced, a full batch: more are waiting", true, 128, true, 10 * p, 9 * p, 10*p + 50, true, epollMinPace},
		{"paced after a scheduling delay", true, 3, false, 10 * p, 5 * p, 10*p + 50, true, p - 50},
	} {
		paced, d := nextWake(tc.paced, tc.n, tc.full, tc.start, tc.prev, tc.at)
		if paced != tc.wantPaced || d != tc.wantWait {
			t.Errorf("%s: nextWake = %v, %v; want %v, %v", tc.name, paced, d, tc.wantPaced, tc.wantWait)
		}
	}
}

// TestEpollPacedStop: a socket stopped while its worker is paced (the set
// out of the gate) is let go of (back to the pool, which keeps it bound
// through the quarantine), and the relay shuts down.
func TestEpollPacedStop(t *testing.T) {
	r, _, _ := testRelay(t, Config{FloodLimit: 1 << 20, Engine: "epoll", Workers: 1})
	runRelay(t, r)
	a, b := listenPhone(t), listenPhone(t)
	toA, toB := relayCall(t, r, "paced", a, b)
	buf := make([]byte, 1500)
	for i := range 50 { // both ways at once, less than a period apart: two sockets ready per wakeup pace the worker
		if _, err := a.WriteToUDPAddrPort(rtpPacket(uint16(i), uint32(160*i), 1), toA); err != nil {
			t.Fatal(err)
		}
		if _, err := b.WriteToUDPAddrPort(rtpPacket(uint16(i), uint32(160*i), 2), toB); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*net.UDPConn{a, b} {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, _, err := c.ReadFromUDPAddrPort(buf); err != nil {
				t.Fatalf("packet %d not relayed: %v", i, err)
			}
		}
	}
	if err := r.Delete("paced"); err != nil {
		t.Fatal(err)
	}
	warm := func() int { r.pool.mu.Lock(); defer r.pool.mu.Unlock(); return r.pool.warm.count }
	settle(t, func() bool { return warm() == 2 })
	if n := warm(); n != 2 {
		t.Fatalf("%d of the call's 2 port pairs back in the pool after Delete (relay port %v)", n, toA)
	}
}
