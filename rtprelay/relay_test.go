package rtprelay

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var loopback = netip.MustParseAddr("127.0.0.1")

func TestNewSetsCapacity(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	if _, err := New(Config{Listen: loopback, PortMin: 30000, PortMax: 30099, Timeout: time.Minute}, slog.New(slog.DiscardHandler), m); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.PortsCapacity); got != 100 {
		t.Errorf("cusax_rtp_ports_capacity = %v, want 100", got)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("metric lint: %v %v", problems, err)
	}
}

func TestNewRejects(t *testing.T) {
	for _, cfg := range []Config{
		{PortMin: 30000, PortMax: 30099, Timeout: time.Minute},
		{Listen: loopback, PortMin: 30001, PortMax: 30099, Timeout: time.Minute},
		{Listen: loopback, PortMin: 30000, PortMax: 30000, Timeout: time.Minute},
		{Listen: loopback, PortMin: 30000, PortMax: 30099},
	} {
		if _, err := New(cfg, slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry())); err == nil {
			t.Errorf("New(%+v) = nil error, want one", cfg)
		}
	}
}

func TestProbePorts(t *testing.T) {
	// Find a free block of 10 ports, then occupy one of them.
	base := 0
	for p := 42000; p < 60000 && base == 0; p += 10 {
		if _, _, err := ProbePorts(loopback, p, p+9); err == nil {
			base = p
		}
	}
	if base == 0 {
		t.Skip("no free block of 10 UDP ports on 127.0.0.1")
	}
	c, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(base+3)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	busy, first, err := ProbePorts(loopback, base, base+9)
	if busy != 1 || first != base+3 || err == nil {
		t.Errorf("ProbePorts with port %d taken = %d busy, first %d, err %v; want 1, %d, an error", base+3, busy, first, err, base+3)
	}
	if errors.Is(err, ErrNoPorts) {
		t.Errorf("ProbePorts error %v must not be ErrNoPorts", err)
	}
}

// TestPoolBindFailureNotQuarantined: a pair that could not be bound (its
// port busy elsewhere) is not quarantined: it is usable as soon as the port
// is free again.
func TestPoolBindFailureNotQuarantined(t *testing.T) {
	base := 0
	var held []net.PacketConn
	for try := 0; try < 50 && base == 0; try++ {
		// Two adjacent even pairs we can hold.
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := c.LocalAddr().(*net.UDPAddr).Port &^ 1
		c.Close()
		held = held[:0]
		ok := true
		for port := p; port < p+4; port++ {
			h, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				ok = false
				break
			}
			held = append(held, h)
		}
		if ok {
			base = p
		} else {
			for _, h := range held {
				h.Close()
			}
		}
	}
	if base == 0 {
		t.Skip("no four adjacent free ports")
	}
	inUse := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
	pl := newPool(netip.MustParseAddr("127.0.0.1"), base, base+3, time.Hour, 0, inUse, false)
	if _, err := pl.get(); !errors.Is(err, ErrNoPorts) {
		t.Fatalf("get with every port busy = %v, want ErrNoPorts", err)
	}
	for _, h := range held {
		h.Close()
	}
	pr, err := pl.get()
	if err != nil {
		t.Fatalf("get once the ports are free = %v; a failed bind must not quarantine the pair", err)
	}
	pr.rtp.Close()
	pr.rtcp.Close()
}
