package testenv

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Ports are drawn at random from a range below the kernel's ephemeral
// range, so that a client socket the kernel numbers on its own (including
// those of other test processes) cannot take a port between our check
// and the server's bind.
const (
	portLow  = 20000
	portHigh = 32000 // exclusive; lowered if the ephemeral range starts below it
)

// handedOut remembers every port given out in this process, so that two
// starters in one test binary never get the same port even after the
// first server released it.
var handedOut = struct {
	sync.Mutex
	m map[int]bool
}{m: map[int]bool{}}

// FreePort returns a port that is free for both TCP and UDP on 127.0.0.1
// and has not been returned before in this process. It is safe for
// concurrent use.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freePortRange(1)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// FreePortRange returns the first port of n consecutive ports that are all
// free for TCP and UDP on 127.0.0.1 (for an RTP port range). The first port
// is even. It is safe for concurrent use.
func FreePortRange(t testing.TB, n int) int {
	t.Helper()
	p, err := freePortRange(n)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func freePortRange(n int) (int, error) {
	if n < 1 {
		return 0, fmt.Errorf("testenv: port range of %d ports", n)
	}
	high := portHigh
	if lo, err := ephemeralLow(); err == nil && lo < high {
		high = lo
	}
	if high-portLow < n*4 {
		return 0, fmt.Errorf("testenv: no room for %d ports in %d..%d", n, portLow, high)
	}
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 200 {
		first := portLow + rand.IntN((high-portLow-n)/2)*2
		if rangeFree(first, n) {
			for p := first; p < first+n; p++ {
				handedOut.m[p] = true
			}
			return first, nil
		}
	}
	return 0, fmt.Errorf("testenv: no %d free consecutive ports in %d..%d", n, portLow, high)
}

// rangeFree reports whether every port in first..first+n-1 is unused here
// and bindable for TCP and UDP. Called with handedOut locked.
func rangeFree(first, n int) bool {
	for p := first; p < first+n; p++ {
		if handedOut.m[p] || !bindable(p) {
			return false
		}
	}
	return true
}

// bindable reports whether 127.0.0.1:port can be bound for TCP and UDP.
func bindable(port int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		return false
	}
	defer l.Close()
	c, err := net.ListenPacket("udp4", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	return true
}

// ephemeralLow reads the first port of the kernel's ephemeral range.
func ephemeralLow() (int, error) {
	f, err := os.Open("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil {
		return 0, err
	}
	fields := strings.Fields(line)
	if len(fields) != 2 {
		return 0, fmt.Errorf("testenv: ip_local_port_range %q", line)
	}
	return strconv.Atoi(fields[0])
}

// hostPort formats 127.0.0.1:port.
func hostPort(port int) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// udpBound reports whether some socket is bound to the UDP port on
// 127.0.0.1 or the wildcard address, from /proc/net/udp. It lets the rig
// wait for UDP servers that answer nothing we could probe with.
func udpBound(port int) (bool, error) {
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return false, fmt.Errorf("testenv: %w", err)
	}
	want1 := fmt.Sprintf("0100007F:%04X", port)
	want2 := fmt.Sprintf("00000000:%04X", port)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && (f[1] == want1 || f[1] == want2) {
			return true, nil
		}
	}
	return false, nil
}
