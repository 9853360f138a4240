//go:build linux

package rtprelay

import (
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestEpollDrainAllocs(t *testing.T) {
	r, _, _ := testRelay(t, Config{})
	sa, _, phone := forwardRig(t, r)
	raw, err := sa.conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(fd uintptr) { sa.fd = int32(fd) })
	w := &epollWorker{e: &epollEngine{epoch: time.Now(), log: slog.New(slog.DiscardHandler)}}
	buf := make([]byte, bufSize)
	pkt := rtpPacket(1, 0, 1)
	to := sa.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	if n := testing.AllocsPerRun(100, func() {
		if _, err := phone.WriteToUDPAddrPort(pkt, to); err != nil {
			t.Fatal(err)
		}
		w.drain(sa, buf)
	}); n != 0 {
		t.Errorf("epoll drain allocates %v times per packet, want 0", n)
	}
	if got := sa.st.packets.Load(); got < 100 {
		t.Errorf("drain read %d packets, want at least 100", got)
	}
}

func TestEngineConfig(t *testing.T) {
	if _, err := New(Config{Listen: loopback, PortMin: 30000, PortMax: 30099, Timeout: time.Minute, Engine: "kernel"},
		slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry())); err == nil {
		t.Error("New accepted engine \"kernel\"")
	}
}
