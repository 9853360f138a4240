//go:build linux

package rtprelay

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// epollSet returns the descriptors in the epoll set epfd, as the kernel
// lists them in /proc/self/fdinfo.
func epollSet(t *testing.T, epfd int) map[int32]bool {
	t.Helper()
	f, err := os.Open("/proc/self/fdinfo/" + strconv.Itoa(epfd))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	set := make(map[int32]bool)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "tfd:" {
			continue
		}
		fd, err := strconv.Atoi(fields[1])
		if err != nil {
			t.Fatalf("fdinfo of epoll %d: %q", epfd, sc.Text())
		}
		set[int32(fd)] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return set
}

// inSets returns the indexes of the epoll engine's workers whose sets hold fd.
func inSets(t *testing.T, e *epollEngine, fd int32) []int {
	t.Helper()
	var in []int
	for i, w := range e.workers {
		if epollSet(t, w.epfd)[fd] {
			in = append(in, i)
		}
	}
	return in
}

// slot returns what worker wi's descriptor-indexed table holds for fd.
func slot(e *epollEngine, wi int, fd int32) *sock {
	w := e.workers[wi]
	w.mu.Lock()
	defer w.mu.Unlock()
	if int(fd) >= len(w.socks) {
		return nil
	}
	return w.socks[fd]
}

// callSocks returns the four socks of a call with one stream (leg A's
// endpoint first).
func callSocks(t *testing.T, r *Relay, id string) []*sock {
	t.Helper()
	r.mu.Lock()
	c := r.calls[id]
	r.mu.Unlock()
	if c == nil {
		t.Fatalf("no call %q", id)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var s []*sock
	for _, e := range c.streams[0].ends {
		s = append(s, &e.rtp, &e.rtcp)
	}
	return s
}

func epollTestRelay(t *testing.T, pairs int, q time.Duration) (*Relay, *epollEngine) {
	t.Helper()
	min, max := freeRange(t, 2*pairs)
	r, _, _ := testRelay(t, Config{PortMin: min, PortMax: max, Engine: "epoll", Workers: 2, Quarantine: q, FloodLimit: 1 << 20})
	if !r.pool.raw {
		t.Skip("no raw pool: nothing is kept bound")
	}
	runRelay(t, r)
	return r, r.eng.(*epollEngine)
}

func warmPairs(r *Relay) int {
	r.pool.mu.Lock()
	defer r.pool.mu.Unlock()
	return r.pool.warm.count
}

// TestEpollIdleStaysInSet: the sockets of a warm pair stay in their
// worker's epoll set, marked idle (never served), and a call that reuses
// the pair is served by that worker from the same registration.
func TestEpollIdleStaysInSet(t *testing.T) {
	const q = time.Hour
	r, e := epollTestRelay(t, 2, q)
	a, b := listenPhone(t), listenPhone(t)
	toA, toB := relayCall(t, r, "old", a, b)
	exchange(t, a, toA, b, rtpPacket(1, 0, 1))
	exchange(t, b, toB, a, rtpPacket(1, 0, 2))
	old := callSocks(t, r, "old")
	fds := make([]int32, len(old))
	wis := make([]int, len(old))
	for i, s := range old {
		fds[i] = s.fd
		in := inSets(t, e, s.fd)
		if len(in) != 1 || int(s.ep.wi) != in[0]+1 {
			t.Fatalf("fd %d of a live call in the sets of workers %v, want exactly worker %d", s.fd, in, s.ep.wi-1)
		}
		wis[i] = in[0]
	}
	if err := r.Delete("old"); err != nil {
		t.Fatal(err)
	}
	settle(t, func() bool { return warmPairs(r) == 2 })
	if n := warmPairs(r); n != 2 {
		t.Fatalf("%d warm pairs after the call ended, want 2", n)
	}
	for i, fd := range fds {
		if in := inSets(t, e, fd); !slices.Equal(in, []int{wis[i]}) {
			t.Errorf("idle fd %d in the sets of workers %v, want still in worker %d's", fd, in, wis[i])
		}
		if s := slot(e, wis[i], fd); s != &e.idle {
			t.Errorf("worker %d's table holds %p for idle fd %d, want the idle mark", wis[i], s, fd)
		}
	}

	agePool(r.pool, q/2+time.Second)
	r.pool.sweep()
	agePool(r.pool, q/2)
	a2, b2 := listenPhone(t), listenPhone(t)
	toA2, toB2 := relayCall(t, r, "new", a2, b2)
	cur := callSocks(t, r, "new")
	for _, s := range cur {
		i := slices.Index(fds, s.fd)
		if i < 0 {
			t.Fatalf("the new call's fd %d is not one of the warm pairs' %v", s.fd, fds)
		}
		if in := inSets(t, e, s.fd); !slices.Equal(in, []int{wis[i]}) || int(s.ep.wi) != wis[i]+1 {
			t.Errorf("reused fd %d served by worker %d, in the sets of %v; want worker %d's only", s.fd, s.ep.wi-1, in, wis[i])
		}
		if got := slot(e, wis[i], s.fd); got != s {
			t.Errorf("worker %d's table holds %p for reused fd %d, want the new call's sock %p", wis[i], got, s.fd, s)
		}
	}
	exchange(t, a2, toA2, b2, rtpPacket(7, 0, 9))
	exchange(t, b2, toB2, a2, rtpPacket(8, 0, 10))
	for _, s := range old {
		if n := s.st.packets.Load(); n > 1 {
			t.Errorf("the old call's sock on fd %d counted %d packets, want at most the 1 of its own call", s.fd, n)
		}
	}
}

// TestEpollIdleReceived: an idle socket that receives is taken out of its
// worker's set (a level-triggered set would report it on every wakeup)
// with its datagram left queued for the pool: a pair that received after
// its mid-quarantine drain is closed, not reused; one that received before
// it is drained, reused, added to a set again and served.
func TestEpollIdleReceived(t *testing.T) {
	const q = time.Hour
	r, e := epollTestRelay(t, 3, q)
	a, b, stray := listenPhone(t), listenPhone(t), listenPhone(t)
	toA, toB := relayCall(t, r, "old", a, b)
	exchange(t, a, toA, b, rtpPacket(1, 0, 1))
	exchange(t, b, toB, a, rtpPacket(1, 0, 2))
	old := callSocks(t, r, "old")
	if err := r.Delete("old"); err != nil {
		t.Fatal(err)
	}
	settle(t, func() bool { return warmPairs(r) == 2 })
	late := func(s *sock) {
		t.Helper()
		to := netip.AddrPortFrom(loopback, uint16(s.endpoint().pair.port+int(s.li)))
		if _, err := stray.WriteToUDPAddrPort([]byte("late"), to); err != nil {
			t.Fatal(err)
		}
		wi := int(s.ep.wi) - 1
		settle(t, func() bool { return slot(e, wi, s.fd) == nil })
		if in := inSets(t, e, s.fd); len(in) != 0 || slot(e, wi, s.fd) != nil {
			t.Fatalf("idle fd %d that received: in the sets of workers %v, table %p; want out of every set, no entry", s.fd, in, slot(e, wi, s.fd))
		}
		buf := make([]byte, 10)
		if n, _, err := unix.Recvfrom(int(s.fd), buf, unix.MSG_PEEK|unix.MSG_DONTWAIT); err != nil || string(buf[:n]) != "late" {
			t.Fatalf("fd %d: the late datagram is not queued any more (%q, %v)", s.fd, buf[:n], err)
		}
	}
	early, after := old[0], old[2] // RTP of leg A's pair, of leg B's pair
	earlyPort, afterPort := early.endpoint().pair.port, after.endpoint().pair.port
	late(early)
	agePool(r.pool, q/2+time.Second)
	r.pool.sweep() // drains early's queue
	late(after)
	agePool(r.pool, q/2)

	a2, b2 := listenPhone(t), listenPhone(t)
	toA2, toB2 := relayCall(t, r, "new", a2, b2)
	got := []int{int(toA2.Port()), int(toB2.Port())}
	if slices.Contains(got, afterPort) {
		t.Errorf("the new call got pair %d, which received after its mid-quarantine drain", afterPort)
	}
	if !slices.Contains(got, earlyPort) {
		t.Errorf("the new call is on ports %v, want the warm pair %d (drained at mid-quarantine) among them", got, earlyPort)
	}
	if bound(t, afterPort) {
		t.Errorf("the refused pair %d is still bound", afterPort)
	}
	for _, s := range callSocks(t, r, "new") {
		if in := inSets(t, e, s.fd); len(in) != 1 || int(s.ep.wi) != in[0]+1 || slot(e, in[0], s.fd) != s {
			t.Errorf("fd %d of the new call in the sets of workers %v, served by %d", s.fd, in, s.ep.wi-1)
		}
	}
	exchange(t, a2, toA2, b2, rtpPacket(7, 0, 9))
	exchange(t, b2, toB2, a2, rtpPacket(8, 0, 10))
	s, err := r.Query("new")
	if err != nil {
		t.Fatal(err)
	}
	for side, l := range s.Legs {
		if st := l.Streams[0]; st.Packets != 1 || st.Dropped != 0 {
			t.Errorf("leg %d: %d packets received, %d dropped; want 1, 0 (the late datagrams must be gone)", side, st.Packets, st.Dropped)
		}
	}
}

// TestEpollReusedDescriptor: sockets a pool at its descriptor budget
// closes are not taken out of their sets first (closing does that); the
// descriptor numbers the next call gets are the same, and events for them
// reach only the new call's socks, never the old ones.
func TestEpollReusedDescriptor(t *testing.T) {
	r, e := epollTestRelay(t, 4, time.Hour)
	r.pool.mu.Lock()
	r.pool.fdBudget = 0 // every freed pair is closed
	r.pool.mu.Unlock()
	a, b := listenPhone(t), listenPhone(t)
	toA, toB := relayCall(t, r, "old", a, b)
	exchange(t, a, toA, b, rtpPacket(1, 0, 1))
	exchange(t, b, toB, a, rtpPacket(1, 0, 2))
	old := callSocks(t, r, "old")
	var oldFDs []int32
	for _, s := range old {
		oldFDs = append(oldFDs, s.fd)
	}
	a2, b2 := listenPhone(t), listenPhone(t) // before the old call's descriptors are free
	if err := r.Delete("old"); err != nil {
		t.Fatal(err)
	}
	settle(t, func() bool { return !bound(t, int(toA.Port())) && !bound(t, int(toB.Port())) })
	if bound(t, int(toA.Port())) || bound(t, int(toB.Port())) {
		t.Fatal("the old call's ports are still bound; want closed (no room in the budget)")
	}
	toA2, toB2 := relayCall(t, r, "new", a2, b2)
	cur := callSocks(t, r, "new")
	for _, s := range cur {
		if !slices.Contains(oldFDs, s.fd) {
			t.Skipf("the kernel gave the new call fd %d, not one of the old call's %v: nothing to test", s.fd, oldFDs)
		}
	}
	for _, s := range cur {
		in := inSets(t, e, s.fd)
		if len(in) != 1 || int(s.ep.wi) != in[0]+1 {
			t.Errorf("reused fd %d in the sets of workers %v, served by %d; want exactly its worker's", s.fd, in, s.ep.wi-1)
		}
		for wi := range e.workers {
			if got := slot(e, wi, s.fd); slices.Contains(old, got) {
				t.Errorf("worker %d's table still maps fd %d to the old call's sock", wi, s.fd)
			}
		}
	}
	var before [4]uint64
	for i, s := range old {
		before[i] = s.st.packets.Load()
	}
	for i := range 5 {
		exchange(t, a2, toA2, b2, rtpPacket(uint16(10+i), 0, 9))
		exchange(t, b2, toB2, a2, rtpPacket(uint16(10+i), 0, 10))
	}
	for i, s := range old {
		if n := s.st.packets.Load(); n != before[i] {
			t.Errorf("the old call's sock (fd %d) counted %d packets after its descriptor was reused, had %d", s.fd, n, before[i])
		}
	}
	for _, s := range cur[:1] {
		if n := s.st.packets.Load(); n != 5 {
			t.Errorf("the new call's RTP sock (fd %d) counted %d packets, want 5", s.fd, n)
		}
	}
}

// TestDrainQueued: queued tells, without consuming anything, whether a
// pair has a datagram waiting; drainQueued empties exactly the queues that
// hold something, across its 1,024-descriptor ppoll chunks.
func TestDrainQueued(t *testing.T) {
	const n = 1030
	fds := make([]int32, n)
	for i := range fds {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: loopback.As4()}); err != nil {
			t.Fatal(err)
		}
		fds[i] = int32(fd)
	}
	sender := listenPhone(t)
	send := func(i int) {
		t.Helper()
		sa, err := unix.Getsockname(int(fds[i]))
		if err != nil {
			t.Fatal(err)
		}
		to := netip.AddrPortFrom(loopback, uint16(sa.(*unix.SockaddrInet4).Port))
		if _, err := sender.WriteToUDPAddrPort([]byte("x"), to); err != nil {
			t.Fatal(err)
		}
	}
	peek := func(i int) bool {
		_, _, err := unix.Recvfrom(int(fds[i]), make([]byte, 1), unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return err == nil
	}
	if queued(fds[0], fds[1]) {
		t.Fatal("queued(empty, empty) = true")
	}
	send(1)
	if !peek(1) { // loopback delivers within sendto
		t.Fatal("the datagram sent to socket 1 is not queued there")
	}
	if !queued(fds[0], fds[1]) || !queued(fds[1], -1) {
		t.Fatal("queued = false with a datagram waiting")
	}
	if !peek(1) {
		t.Fatal("queued consumed the datagram")
	}
	full := []int{1, 3, 1023, 1024, 1029}
	for _, i := range full {
		send(i)
		send(i)
	}
	drainQueued(fds, &drainScratch{})
	for i := range fds {
		if peek(i) {
			t.Errorf("socket %d of %d still has a datagram queued after drainQueued", i, n)
		}
	}
}

// TestEpollNoEventsAfterDetach: calls come and go in parallel while a
// stray sender keeps sending to the ports of ended calls (in quarantine),
// with a pool that has room for two warm pairs only: descriptors are
// closed without EPOLL_CTL_DEL, some while in a worker's set and some
// after the worker took them out because they received, and their numbers
// go to the next calls' sockets at once. Once the engine has let go of a
// call's socks nothing reaches them again, and every new call relays its
// own media.
func TestEpollNoEventsAfterDetach(t *testing.T) {
	r, _ := epollTestRelay(t, 2*2*60+10, time.Hour)
	r.pool.mu.Lock()
	r.pool.fdBudget = 2 * (2*2 + 2) // two calls' pairs and two warm pairs
	r.pool.mu.Unlock()

	type ended struct {
		socks []*sock
		count [4]uint64
	}
	var (
		mu     sync.Mutex
		done   []ended
		ports  []uint16 // of ended calls, for the stray sender
		finish = make(chan struct{})
		strays sync.WaitGroup
	)
	stray := listenPhone(t)
	strays.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-finish:
				return
			default:
			}
			mu.Lock()
			var to uint16
			if len(ports) > 0 {
				to = ports[i%len(ports)]
			}
			mu.Unlock()
			if to != 0 {
				stray.WriteToUDPAddrPort([]byte("stray"), netip.AddrPortFrom(loopback, to))
			}
			if i%64 == 0 {
				runtime.Gosched()
			}
		}
	})
	// relay sends p from src to dst and reads it at rcv.
	relay := func(src *net.UDPConn, dst netip.AddrPort, rcv *net.UDPConn, p []byte) error {
		buf := make([]byte, 1500)
		if _, err := src.WriteToUDPAddrPort(p, dst); err != nil {
			return err
		}
		rcv.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := rcv.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:n]) != string(p) {
			return fmt.Errorf("%q from %v via %v: %v got %q, %v", p, src.LocalAddr(), dst, rcv.LocalAddr(), buf[:n], err)
		}
		return nil
	}
	var wg sync.WaitGroup
	for g := range 2 {
		a, b := listenPhone(t), listenPhone(t)
		wg.Go(func() {
			for round := range 60 {
				id := fmt.Sprintf("call-%d-%d", g, round)
				ctx := context.Background()
				offer, err := r.Offer(ctx, id, "tag-a", phoneSDP(port(a)))
				if err != nil {
					t.Error(err)
					return
				}
				answer, err := r.Answer(ctx, id, "tag-b", phoneSDP(port(b)))
				if err != nil {
					t.Error(err)
					return
				}
				pa, errA := parseSDP(answer)
				pb, errB := parseSDP(offer)
				if errA != nil || errB != nil {
					t.Error(errA, errB)
					return
				}
				toA := netip.AddrPortFrom(loopback, uint16(pa.media[0].port))
				toB := netip.AddrPortFrom(loopback, uint16(pb.media[0].port))
				p := []byte(id)
				if err := relay(a, toA, b, p); err != nil {
					t.Error(err)
				}
				if err := relay(b, toB, a, p); err != nil {
					t.Error(err)
				}
				r.mu.Lock()
				c := r.calls[id]
				r.mu.Unlock()
				c.mu.Lock()
				e0, e1 := c.streams[0].ends[0], c.streams[0].ends[1]
				c.mu.Unlock()
				socks := []*sock{&e0.rtp, &e0.rtcp, &e1.rtp, &e1.rtcp}
				if err := r.Delete(id); err != nil {
					t.Error(err)
				}
				for deadline := time.Now().Add(5 * time.Second); (e0.pending.Load() != 0 || e1.pending.Load() != 0) && time.Now().Before(deadline); {
					runtime.Gosched()
				}
				if e0.pending.Load() != 0 || e1.pending.Load() != 0 {
					t.Errorf("%s: the engine did not let go of the call's socks", id)
					return
				}
				en := ended{socks: socks}
				for i, s := range socks {
					en.count[i] = s.st.packets.Load()
				}
				mu.Lock()
				done = append(done, en)
				ports = append(ports, toA.Port(), toA.Port()+1, toB.Port(), toB.Port()+1)
				if len(ports) > 64 {
					ports = ports[len(ports)-64:]
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(finish)
	strays.Wait()
	for _, en := range done {
		for i, s := range en.socks {
			if n := s.st.packets.Load(); n != en.count[i] {
				t.Errorf("sock %d of %s counted %d packets after the engine let go of it (had %d)", i, s.logCallID(), n, en.count[i])
			}
		}
	}
}
