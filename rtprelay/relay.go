package rtprelay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrNoPorts means the port range has no free RTP/RTCP pair left.
var ErrNoPorts = errors.New("rtprelay: no free ports")

// Config configures a Relay.
type Config struct {
	Listen    netip.Addr    // address the relay binds
	Advertise netip.Addr    // address written into SDP; Listen when invalid
	PortMin   int           // first port of the range; even
	PortMax   int           // last port of the range
	Timeout   time.Duration // no media for this long ends the call
}

// Pairs returns how many even/odd RTP/RTCP port pairs the range holds.
func (c Config) Pairs() int {
	if c.PortMax < c.PortMin+1 {
		return 0
	}
	return (c.PortMax - c.PortMin + 1) / 2
}

func (c Config) validate() error {
	switch {
	case !c.Listen.IsValid():
		return errors.New("rtprelay: no listen address")
	case c.PortMin < 1024 || c.PortMax > 65535 || c.PortMin%2 != 0 || c.Pairs() == 0:
		return fmt.Errorf("rtprelay: port range %d..%d must be even-based, hold a pair and lie in 1024..65535", c.PortMin, c.PortMax)
	case c.Timeout <= 0:
		return errors.New("rtprelay: timeout must be positive")
	}
	return nil
}

// Metrics are the relay's Prometheus metrics (names fixed by CONTRACT.md).
type Metrics struct {
	Sessions      prometheus.Gauge
	Packets       *prometheus.CounterVec // direction
	Bytes         *prometheus.CounterVec // direction
	PacketsLost   prometheus.Counter
	PortsInUse    prometheus.Gauge
	PortsCapacity prometheus.Gauge
}

// NewMetrics creates the relay metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cusax_rtp_sessions_active", Help: "Media sessions (calls) currently anchored by the relay.",
		}),
		Packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cusax_rtp_packets_total", Help: "RTP and RTCP packets relayed, by direction (in|out).",
		}, []string{"direction"}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cusax_rtp_bytes_total", Help: "RTP and RTCP payload bytes relayed, by direction (in|out).",
		}, []string{"direction"}),
		PacketsLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cusax_rtp_packets_lost_total", Help: "RTP packets missing, from gaps in sequence numbers.",
		}),
		PortsInUse: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cusax_rtp_ports_in_use", Help: "Ports of the RTP range currently bound.",
		}),
		PortsCapacity: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cusax_rtp_ports_capacity", Help: "Ports in the configured RTP range (rtp.port_min..rtp.port_max).",
		}),
	}
	for _, d := range []string{"in", "out"} {
		m.Packets.WithLabelValues(d)
		m.Bytes.WithLabelValues(d)
	}
	reg.MustRegister(m.Sessions, m.Packets, m.Bytes, m.PacketsLost, m.PortsInUse, m.PortsCapacity)
	return m
}

// Relay anchors media. Its methods are safe for concurrent use.
type Relay struct {
	cfg Config
	log *slog.Logger
	m   *Metrics
}

// New validates cfg and returns a Relay; it binds nothing.
func New(cfg Config, log *slog.Logger, m *Metrics) (*Relay, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if !cfg.Advertise.IsValid() {
		cfg.Advertise = cfg.Listen
	}
	m.PortsCapacity.Set(float64(cfg.Pairs() * 2))
	return &Relay{cfg: cfg, log: log, m: m}, nil
}

// Run owns the relay's sockets until ctx ends; then it closes them all and
// returns nil.
func (r *Relay) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// ProbePorts binds every port of the range on listen (UDP), then releases
// them. It returns how many were busy, the first busy port, and an error
// when any was.
func ProbePorts(listen netip.Addr, portMin, portMax int) (busy, firstBusy int, err error) {
	var conns []net.PacketConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for p := portMin; p <= portMax; p++ {
		c, err := net.ListenPacket("udp", net.JoinHostPort(listen.String(), strconv.Itoa(p)))
		if err != nil {
			if busy == 0 {
				firstBusy = p
			}
			busy++
			continue
		}
		conns = append(conns, c)
	}
	if busy > 0 {
		return busy, firstBusy, fmt.Errorf("rtprelay: %d of %d ports in %d..%d cannot be bound on %s (first: %d)",
			busy, portMax-portMin+1, portMin, portMax, listen, firstBusy)
	}
	return 0, 0, nil
}
