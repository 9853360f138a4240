package rtprelay

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Errors of the relay; test with errors.Is. ErrBadSDP is in sdp.go.
var (
	// ErrNoPorts means the port range has no free RTP/RTCP pair left
	// (the b2bua answers 503 with Retry-After).
	ErrNoPorts = errors.New("rtprelay: no free ports")
	// ErrNotFound means the relay has no such call.
	ErrNotFound = errors.New("rtprelay: no such call")
	// ErrClosed means Run has returned.
	ErrClosed = errors.New("rtprelay: closed")
)

// Config configures a Relay.
type Config struct {
	Listen    netip.Addr    // address the relay binds
	Advertise netip.Addr    // address written into SDP; Listen when invalid
	PortMin   int           // first port of the range; even
	PortMax   int           // last port of the range
	Timeout   time.Duration // no media for this long ends the call

	// HoldTimeout replaces Timeout while the call is on hold (no stream
	// flows both ways: sendonly, recvonly, inactive or c=0.0.0.0). Zero:
	// a call on hold never times out. (rtpengine's silent-timeout, 1 h there.)
	HoldTimeout time.Duration
	// OnTimeout is called, once per silence and from the relay's own
	// goroutine, with the Call-ID of an answered call whose media stopped;
	// the caller hangs up both legs and calls Delete (also from inside
	// OnTimeout: no relay lock is held). It must not block.
	OnTimeout func(callID string)
	// LearnWindow is how long after each offer or answer a socket may
	// latch to a better source (the SDP address first, then its host);
	// default 3s, like rtpengine's delayed learning.
	LearnWindow time.Duration
	// RelatchAfter is the silence of a latched source after which another
	// source may latch without signalling (NAT rebinding); default 5s.
	RelatchAfter time.Duration
	// Quarantine is how long a freed port pair stays unused; default 5s.
	Quarantine time.Duration
	// QuarantineSilent is the shorter quarantine of a freed pair whose
	// sockets stayed bound (the epoll engine, within its descriptor
	// budget) and on which nothing arrived in its second half: what the
	// old peer still sent in the first half is discarded, and a pair that
	// receives later is closed and quarantined in full. Default 1s; at
	// most Quarantine (equal: no shorter quarantine).
	QuarantineSilent time.Duration
	// FloodLimit packets per FloodWindow are accepted on one socket, the
	// rest dropped and counted; defaults 100 per 10ms. Above 65,535: no
	// limit.
	FloodLimit  int
	FloodWindow time.Duration
	// Engine moves the packets: "goroutine" (default; a goroutine per
	// socket) or "epoll" (Linux; Workers goroutines, default GOMAXPROCS,
	// each serving its sockets from one epoll set; far less memory per call).
	Engine  string
	Workers int
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
	case c.Engine != "" && c.Engine != "goroutine" && c.Engine != "epoll":
		return fmt.Errorf("rtprelay: engine %q: want goroutine or epoll", c.Engine)
	case c.Engine == "epoll" && !epollSupported:
		return errors.New("rtprelay: the epoll engine needs Linux")
	case c.HoldTimeout < 0 || c.Workers < 0 || c.LearnWindow < 0 || c.RelatchAfter < 0 || c.Quarantine < 0 || c.QuarantineSilent < 0 || c.FloodLimit < 0 || c.FloodWindow < 0:
		return errors.New("rtprelay: durations and limits must not be negative")
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
	PortPairs     *prometheus.CounterVec // outcome: reused|bound|refused
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
			Name: "cusax_rtp_ports_in_use", Help: "Ports of the RTP range held by calls (not counting ports in quarantine).",
		}),
		PortsCapacity: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cusax_rtp_ports_capacity", Help: "Ports in the configured RTP range (rtp.port_min..rtp.port_max).",
		}),
		PortPairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cusax_rtp_port_pairs_total",
			Help: "RTP/RTCP port pairs taken for calls, by outcome: reused (still bound, silent), bound (new sockets), refused (still bound but receiving: closed, quarantined again).",
		}, []string{"outcome"}),
	}
	for _, d := range []string{"in", "out"} {
		m.Packets.WithLabelValues(d)
		m.Bytes.WithLabelValues(d)
	}
	for _, o := range []string{"reused", "bound", "refused"} {
		m.PortPairs.WithLabelValues(o)
	}
	reg.MustRegister(m.Sessions, m.Packets, m.Bytes, m.PacketsLost, m.PortsInUse, m.PortsCapacity, m.PortPairs)
	return m
}

// Relay anchors the media of calls. Its methods are safe for concurrent
// use; the sockets it binds belong to Run, which closes them when it ends.
type Relay struct {
	cfg   Config
	log   *slog.Logger
	m     *Metrics
	env   sockEnv
	seed  maphash.Seed
	pool  *pool
	eng   engine
	epoch time.Time
	sdps  sync.Pool // of zeroed *parsedSDP, for Offer and Answer

	mu     sync.Mutex
	calls  map[string]*call
	closed bool
}

// New validates cfg and returns a Relay; it binds nothing.
func New(cfg Config, log *slog.Logger, m *Metrics) (*Relay, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if !cfg.Advertise.IsValid() {
		cfg.Advertise = cfg.Listen
	}
	cfg.Listen, cfg.Advertise = cfg.Listen.Unmap(), cfg.Advertise.Unmap()
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.LearnWindow, 3*time.Second)
	def(&cfg.RelatchAfter, 5*time.Second)
	def(&cfg.Quarantine, 5*time.Second)
	def(&cfg.QuarantineSilent, time.Second)
	cfg.QuarantineSilent = min(cfg.QuarantineSilent, cfg.Quarantine)
	def(&cfg.FloodWindow, 10*time.Millisecond)
	if cfg.FloodLimit == 0 {
		cfg.FloodLimit = 100
	}
	m.PortsCapacity.Set(float64(cfg.Pairs() * 2))
	r := &Relay{
		cfg: cfg, log: log, m: m, seed: maphash.MakeSeed(),
		epoch: time.Now(),
		calls: make(map[string]*call),
	}
	r.env = sockEnv{
		cnt: newCounters(m),
		lim: limits{
			relatchAfter: int64(cfg.RelatchAfter), floodWindow: int64(cfg.FloodWindow), floodLimit: cfg.FloodLimit,
		},
		detached: r.detached,
		v6:       cfg.Listen.Is6(),
	}
	switch cfg.Engine {
	case "epoll":
		if cfg.Workers == 0 {
			cfg.Workers = runtime.GOMAXPROCS(0)
		}
		r.cfg.Workers = cfg.Workers
		r.eng = newEpollEngine(r.epoch, log, cfg.Workers)
	default:
		r.eng = newGoEngine(r.epoch, log)
	}
	// An engine that hands stopped sockets back (detachingEngine) serves
	// raw sockets the pool keeps bound through their quarantine; the others
	// get net.UDPConns, closed when a call lets go of them.
	_, raw := r.eng.(detachingEngine)
	r.pool = newPool(cfg.Listen, cfg.PortMin, cfg.PortMax, cfg.Quarantine, cfg.QuarantineSilent, m.PortsInUse, raw)
	r.pool.reused, r.pool.bound, r.pool.refused = m.PortPairs.WithLabelValues("reused"), m.PortPairs.WithLabelValues("bound"), m.PortPairs.WithLabelValues("refused")
	return r, nil
}

// now is the packet path's clock: nanoseconds since New.
func (r *Relay) now() int64 { return int64(time.Since(r.epoch)) }

// Run checks media timeouts until ctx ends; then it deletes every call,
// closes every socket, waits for the packet loops and returns nil. Calls
// can be offered before Run starts; none after it returned.
func (r *Relay) Run(ctx context.Context) error {
	tick := r.cfg.Timeout / 4
	if r.cfg.HoldTimeout > 0 && r.cfg.HoldTimeout/4 < tick {
		tick = r.cfg.HoldTimeout / 4
	}
	tick = min(max(tick, 10*time.Millisecond), time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	var sweep <-chan time.Time // warm pairs' drains and closes: raw pools only
	if r.pool.raw {
		st := time.NewTicker(r.pool.sweepEvery())
		defer st.Stop()
		sweep = st.C
	}
	for {
		select {
		case <-ctx.Done():
			r.shutdown()
			return nil
		case <-t.C:
			r.checkTimeouts()
		case <-sweep:
			r.pool.sweep()
		}
	}
}

func (r *Relay) shutdown() {
	r.mu.Lock()
	r.closed = true
	calls := r.calls
	r.calls = make(map[string]*call)
	r.mu.Unlock()
	for _, c := range calls {
		r.drop(c)
	}
	r.eng.wait()
	r.pool.close()
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
