//go:build linux

package b2bua

import (
	"net"

	"golang.org/x/sys/unix"
)

func setSockReadBuffer(c *net.UDPConn, want int) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	got := 0
	rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, want) != nil {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, want)
		}
		if v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF); err == nil {
			got = v / 2
		}
	})
	return got
}
