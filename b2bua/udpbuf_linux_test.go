//go:build linux

package b2bua

import (
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// readBufferOf returns the usable receive buffer of the gateway's UDP
// listener: half of what the kernel reports for SO_RCVBUF.
func readBufferOf(t *testing.T, b *B2BUA) int {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	rc, err := b.udp[0].(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	rc.Control(func(fd uintptr) { v, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) })
	if err != nil {
		t.Fatal(err)
	}
	return v / 2
}

func sysctlInt(t *testing.T, name string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/core/" + name)
	if err != nil {
		t.Skipf("no %s: %v", name, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestUDPReadBuffer(t *testing.T) {
	rmemDefault, rmemMax := sysctlInt(t, "rmem_default"), sysctlInt(t, "rmem_max")
	forced := unix.Geteuid() == 0 // root has CAP_NET_ADMIN: SO_RCVBUFFORCE
	for _, tc := range []struct {
		name string
		want int // UDPReadBuffer
		min  int // at least this usable size
		max  int // at most
	}{
		{"default", 0, min(DefaultUDPReadBuffer, rmemMax), DefaultUDPReadBuffer},
		{"configured", 3 << 20, min(3<<20, rmemMax), 3 << 20},
		{"kernel default", -1, rmemDefault / 2, rmemDefault},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if forced && tc.want >= 0 {
				tc.min = tc.max
			}
			b, err := New(Config{Listen: []Listener{{"udp", "127.0.0.1:0"}}, UDPReadBuffer: tc.want},
				slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Listen(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				b.mu.Lock()
				b.closeLocked()
				b.mu.Unlock()
				b.ua.Close()
			}()
			got := readBufferOf(t, b)
			if got < tc.min || got > tc.max {
				t.Errorf("UDPReadBuffer %d: usable receive buffer %d, want %d..%d (rmem_default %d, rmem_max %d)",
					tc.want, got, tc.min, tc.max, rmemDefault, rmemMax)
			}
		})
	}
}

// TestUDPReceiveDrops fills the receive buffer of a listener nobody reads
// (Listen without Run) and expects the kernel's drops in
// cusax_sip_udp_receive_drops_total, also after the listener closed.
func TestUDPReceiveDrops(t *testing.T) {
	reg := prometheus.NewRegistry()
	b, err := New(Config{Listen: []Listener{{"udp", "127.0.0.1:0"}}, UDPReadBuffer: 4096},
		slog.New(slog.DiscardHandler), NewMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Listen(); err != nil {
		t.Fatal(err)
	}
	defer b.ua.Close()
	drops := func() float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "cusax_sip_udp_receive_drops_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		t.Fatal("cusax_sip_udp_receive_drops_total not gathered")
		return 0
	}
	if n := drops(); n != 0 {
		t.Fatalf("drops before any datagram = %v, want 0", n)
	}
	c, err := net.Dial("udp", strings.TrimPrefix(b.Addrs()[0], "udp://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 1000)
	const sent = 200 // 200 KB into a buffer of a few KB
	for range sent {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
	n := drops()
	if n < sent/2 || n > sent {
		t.Fatalf("drops after %d datagrams into a 4 KiB buffer nobody reads = %v, want %d..%d", sent, n, sent/2, sent)
	}
	b.mu.Lock()
	b.closeLocked()
	b.mu.Unlock()
	if after := drops(); after != n {
		t.Errorf("drops after the listener closed = %v, want %v (kept)", after, n)
	}
}
