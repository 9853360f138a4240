//go:build linux

package b2bua

import (
	"bufio"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

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

// socketInode returns the inode of c's socket (its key in /proc/net/udp),
// or 0.
func socketInode(c net.PacketConn) uint64 {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	var st unix.Stat_t
	var serr error
	if rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }) != nil || serr != nil {
		return 0
	}
	return st.Ino
}

// readUDPDrops returns the drops column of /proc/net/udp and udp6 for the
// sockets with the given inodes that are listed there.
func readUDPDrops(inodes []uint64) map[uint64]float64 {
	out := make(map[uint64]float64, len(inodes))
	for _, name := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
			fields := strings.Fields(sc.Text())
			if len(fields) < 13 {
				continue
			}
			ino, err := strconv.ParseUint(fields[9], 10, 64)
			if err != nil || !slices.Contains(inodes, ino) {
				continue
			}
			if n, err := strconv.ParseUint(fields[12], 10, 64); err == nil {
				out[ino] = float64(n)
			}
		}
		f.Close()
	}
	return out
}
