package component

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/mux"
)

// Component is the XEP-0114 external component. Create it with New, run it
// with Run; Up and Privileges report its state and are safe for concurrent
// use.
type Component struct {
	cfg    Config
	addr   jid.JID // the component's JID
	domain jid.JID // the users' domain
	log    *slog.Logger
	m      *Metrics
	mux    *mux.ServeMux

	// dial, jitter, closeTimeout and watchRetry are replaced by tests.
	dial         func(ctx context.Context, network, address string) (net.Conn, error)
	jitter       func() float64
	closeTimeout time.Duration
	// watchRetry is the wait before watching the identity feed again after
	// Watch failed or the feed closed.
	watchRetry time.Duration

	running atomic.Bool

	mu      sync.Mutex
	up      bool
	priv    Privileges
	foreign []string      // senders of ignored adverts on the current stream
	changed chan struct{} // closed and replaced whenever up or priv changes

	presence *presenceSet // users whose available presence arrived

	reachMu sync.Mutex
	reach   map[string][]string // last reach published or read, per bare JID
}

// New validates cfg, applies defaults and returns a Component that has not
// started anything. A nil log discards logs; a nil m uses unregistered
// metrics. Errors wrap ErrInvalidConfig and name every bad field at once.
func New(cfg Config, log *slog.Logger, m *Metrics) (*Component, error) {
	cfg = cfg.withDefaults()
	addr, domain, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	d := &net.Dialer{Timeout: cfg.DialTimeout}
	c := &Component{
		cfg:     cfg,
		addr:    addr,
		domain:  domain,
		log:     log,
		m:       m,
		dial:    d.DialContext,
		jitter:  rand.Float64,
		changed: make(chan struct{}),

		presence: newPresenceSet(),
		reach:    map[string][]string{},

		closeTimeout: closeTimeout,
		watchRetry:   5 * time.Second,
	}
	c.mux = c.newMux()
	return c, nil
}

// Up reports whether the handshake is done and the stream is being served,
// the state of cusax_xmpp_component_up.
func (c *Component) Up() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.up
}

// Privileges returns a copy of the XEP-0356 grants of the current stream;
// the zero value while down or before the server's advert arrived.
func (c *Component) Privileges() Privileges {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.priv.Clone()
}

// setUp records a stream going up or down. Either way the privileges of the
// previous stream are forgotten: the server re-advertises after every
// handshake.
func (c *Component) setUp(up bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.up = up
	c.priv = Privileges{}
	c.foreign = nil
	c.m.setUp(up)
	c.m.setPrivileges(Privileges{})
	c.notifyLocked()
}

func (c *Component) setPrivileges(p Privileges) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.priv = p.Clone()
	c.m.setPrivileges(p)
	c.notifyLocked()
}

// maxForeign bounds the senders of ignored adverts remembered per stream.
const maxForeign = 8

func (c *Component) addForeignAdvert(from string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.foreign) < maxForeign && !slices.Contains(c.foreign, from) {
		c.foreign = append(c.foreign, from)
	}
}

// notifyLocked wakes everybody waiting on the channel returned by changes.
func (c *Component) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// changes returns a channel that is closed at the next change of Up or
// Privileges. Check the state after taking the channel, then wait on it.
func (c *Component) changes() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}
