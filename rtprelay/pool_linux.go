//go:build linux

package rtprelay

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// rawSupported: pools can bind raw non-blocking sockets for the epoll engine.
const rawSupported = true

// fdBudget is how many descriptors a raw pool keeps bound, the pairs
// calls hold included: three quarters of the open-file limit, the rest
// left to SIP connections and everything else. Warm pairs use what calls
// do not (see pool).
func fdBudget() int {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) != nil {
		return 0
	}
	return int(min(rl.Cur/4*3, 1<<22))
}

// bindRaw binds a non-blocking UDP socket to ap, outside the Go runtime's
// netpoller (the epoll engine polls it itself). An unspecified IPv6
// address takes IPv4 too, as net.ListenUDP's does.
func bindRaw(ap netip.AddrPort) (int32, error) {
	family := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	if ap.Addr().Is6() {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if family == unix.AF_INET6 && ap.Addr().IsUnspecified() {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("setsockopt IPV6_V6ONLY: %w", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind %v: %w", ap, err)
	}
	return int32(fd), nil
}

func closeFD(fd int32) { unix.Close(int(fd)) }

// drainFD discards the datagrams queued at fd and returns how many there
// were; -1 or a closed descriptor drain nothing.
func drainFD(fd int32) int {
	if fd < 0 {
		return 0
	}
	n := 0
	for {
		// A zero-length read takes one whole datagram off the queue.
		_, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), 0, 0, unix.MSG_DONTWAIT|unix.MSG_TRUNC, 0, 0)
		if errno != 0 {
			return n
		}
		n++
	}
}

// queued reports whether a datagram is queued at a or b: one ppoll that
// does not wait (cheaper than draining both, the common case being two
// empty queues). -1 counts as empty.
func queued(a, b int32) bool {
	fds := [2]unix.PollFd{{Fd: a, Events: unix.POLLIN}, {Fd: b, Events: unix.POLLIN}}
	var ts unix.Timespec
	for {
		n, err := unix.Ppoll(fds[:], &ts, nil)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return drainFD(a)+drainFD(b) > 0 // cannot tell: look the slow way
		}
		return n > 0 && (fds[0].Revents&unix.POLLIN != 0 || fds[1].Revents&unix.POLLIN != 0)
	}
}

// drainScratch is drainQueued's reused poll set.
type drainScratch struct{ pfds []unix.PollFd }

// drainQueued empties the queues of fds (no -1): one ppoll, which does not
// wait, for up to 1,024 descriptors, then a drain of those that have
// datagrams queued.
func drainQueued(fds []int32, sc *drainScratch) {
	var ts unix.Timespec
	for len(fds) > 0 {
		chunk := fds[:min(len(fds), 1024)]
		fds = fds[len(chunk):]
		sc.pfds = sc.pfds[:0]
		for _, fd := range chunk {
			sc.pfds = append(sc.pfds, unix.PollFd{Fd: fd, Events: unix.POLLIN})
		}
		n, err := unix.Ppoll(sc.pfds, &ts, nil)
		for err == unix.EINTR {
			n, err = unix.Ppoll(sc.pfds, &ts, nil)
		}
		for _, p := range sc.pfds {
			if err != nil || n > 0 && p.Revents != 0 {
				drainFD(p.Fd)
			}
		}
	}
}
