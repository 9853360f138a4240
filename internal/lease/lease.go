// Package lease elects one holder among cusax-gw instances that share a
// Redis: a named key holds the owner's ID with a TTL; the holder renews
// it, the others poll and take over once it expired. It keeps one
// XEP-0114 component connection per component name across instances
// (Prosody accepts one; see docs/scaling.md).
//
// The lease is advisory: while Redis cannot be reached, the holder keeps
// what it holds (nobody else can acquire it then), and the XMPP server's
// own rule (one connection per component) fences a second holder after a
// partition; a holder that finds another owner's ID in the key steps
// down.
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Defaults of Config.
const (
	DefaultTTL   = 5 * time.Second
	DefaultRenew = 1500 * time.Millisecond
	DefaultRetry = time.Second
)

// Config configures a Lease.
type Config struct {
	// Client is the Redis connection (shared with the identity store).
	Client redis.UniversalClient
	// Key is the Redis key of the lease, e.g. "cusax:lease:xmpp:cusax.example.com".
	Key string
	// Owner identifies this process in the key; default hostname, PID
	// and a random suffix.
	Owner string
	// TTL is how long the lease outlives its last renewal (DefaultTTL):
	// the bound on a takeover after the holder died, plus Retry.
	TTL time.Duration
	// Renew is the holder's renewal period (DefaultRenew, < TTL).
	Renew time.Duration
	// Retry is the standby's polling period (DefaultRetry).
	Retry time.Duration
	// OpTimeout bounds each Redis call (default Renew/2).
	OpTimeout time.Duration
}

// Metrics are the lease's Prometheus metrics.
type Metrics struct {
	Held     prometheus.Gauge
	Acquired prometheus.Counter
	Errors   prometheus.Counter
}

// NewMetrics registers the lease metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cusax_xmpp_lease_held",
			Help: "1 while this instance holds the component lease in Redis (and runs the XEP-0114 component), 0 on a standby.",
		}),
		Acquired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cusax_xmpp_lease_acquired_total",
			Help: "Times this instance acquired the component lease (start and takeovers).",
		}),
		Errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cusax_xmpp_lease_errors_total",
			Help: "Redis errors while acquiring, renewing or releasing the component lease.",
		}),
	}
	reg.MustRegister(m.Held, m.Acquired, m.Errors)
	return m
}

// Lease is one process's side of a named lease. Run it once; Held is safe
// for concurrent use.
type Lease struct {
	cfg  Config
	log  *slog.Logger
	m    *Metrics
	held atomic.Bool
}

// New validates cfg and returns a Lease; it starts nothing.
func New(cfg Config, log *slog.Logger, m *Metrics) (*Lease, error) {
	if cfg.Client == nil || cfg.Key == "" {
		return nil, errors.New("lease: a Redis client and a key are required")
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Renew == 0 {
		cfg.Renew = DefaultRenew
	}
	if cfg.Retry == 0 {
		cfg.Retry = DefaultRetry
	}
	if cfg.Renew >= cfg.TTL || cfg.Renew <= 0 || cfg.Retry <= 0 {
		return nil, fmt.Errorf("lease: renew %v must be positive and below the TTL %v, retry %v positive", cfg.Renew, cfg.TTL, cfg.Retry)
	}
	if cfg.OpTimeout == 0 {
		cfg.OpTimeout = cfg.Renew / 2
	}
	if cfg.Owner == "" {
		cfg.Owner = ownerID()
	}
	return &Lease{cfg: cfg, log: log, m: m}, nil
}

// ownerID is hostname/pid/random: unique per process, readable in Redis.
func ownerID() string {
	host, _ := os.Hostname()
	var r [4]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(r[:]))
}

// Owner returns this process's ID in the lease key.
func (l *Lease) Owner() string { return l.cfg.Owner }

// Held reports whether this process holds the lease now.
func (l *Lease) Held() bool { return l.held.Load() }

// The scripts compare the owner so that a process never extends or
// deletes another's lease. renew re-creates a key that vanished (Redis
// restarted empty) for its holder.
var (
	renewScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
	redis.call('PEXPIRE', KEYS[1], ARGV[2])
	return 1
end
if not v then
	redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
	return 1
end
return 0`)
	releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('DEL', KEYS[1])
end
return 0`)
)

// Run holds the lease whenever it can and runs f while it does, with a
// context that ends when the lease is lost or ctx ends; f should return
// then. Between holds it polls every Retry. When ctx ends Run stops f,
// releases the lease (so that a standby takes over at its next poll) and
// returns nil; an error of f ends Run with that error.
func (l *Lease) Run(ctx context.Context, f func(context.Context) error) error {
	defer l.setHeld(false)
	var lastErr string
	for {
		ok, err := l.acquire(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			l.m.Errors.Inc()
			if err.Error() != lastErr {
				l.log.Warn("component lease: redis error; retrying", "err", err, "retry_in", l.cfg.Retry)
				lastErr = err.Error()
			}
		case ok:
			lastErr = ""
			if err := l.hold(ctx, f); err != nil {
				return err
			}
		}
		t := time.NewTimer(l.cfg.Retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func (l *Lease) acquire(ctx context.Context) (bool, error) {
	octx, cancel := context.WithTimeout(ctx, l.cfg.OpTimeout)
	defer cancel()
	ok, err := l.cfg.Client.SetNX(octx, l.cfg.Key, l.cfg.Owner, l.cfg.TTL).Result()
	if err != nil || ok {
		return ok, err
	}
	// Ours already (e.g. a renewal raced a restart of Run)?
	v, err := l.cfg.Client.Get(octx, l.cfg.Key).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	return v == l.cfg.Owner, err
}

// hold runs f while renewing the lease; it returns f's error when f
// failed on its own, nil when the lease was lost or ctx ended.
func (l *Lease) hold(ctx context.Context, f func(context.Context) error) error {
	l.setHeld(true)
	l.m.Acquired.Inc()
	l.log.Info("component lease acquired", "key", l.cfg.Key, "owner", l.cfg.Owner)
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- f(fctx) }()

	tick := time.NewTicker(l.cfg.Renew)
	defer tick.Stop()
	var failing bool
	for {
		select {
		case err := <-done:
			l.release()
			return err
		case <-ctx.Done():
			stop()
			err := <-done
			l.release()
			return err
		case <-tick.C:
		}
		octx, cancel := context.WithTimeout(ctx, l.cfg.OpTimeout)
		n, err := renewScript.Run(octx, l.cfg.Client, []string{l.cfg.Key}, l.cfg.Owner, l.cfg.TTL.Milliseconds()).Int()
		cancel()
		switch {
		case err != nil:
			// Redis unreachable: nobody can take the lease over; keep it.
			l.m.Errors.Inc()
			if !failing && ctx.Err() == nil {
				l.log.Warn("component lease: renewal failed; keeping the component while Redis is unreachable", "err", err)
			}
			failing = true
		case n == 1:
			if failing {
				l.log.Info("component lease renewed again")
			}
			failing = false
		default:
			l.log.Warn("component lease lost to another instance; stepping down", "key", l.cfg.Key)
			stop()
			err := <-done
			l.setHeld(false)
			return err
		}
	}
}

// release deletes the key if it is still ours (best effort: otherwise it
// expires after the TTL).
func (l *Lease) release() {
	l.setHeld(false)
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.OpTimeout)
	defer cancel()
	if err := releaseScript.Run(ctx, l.cfg.Client, []string{l.cfg.Key}, l.cfg.Owner).Err(); err != nil {
		l.m.Errors.Inc()
		l.log.Warn("component lease: release failed; it expires by itself", "err", err, "ttl", l.cfg.TTL)
		return
	}
	l.log.Info("component lease released", "key", l.cfg.Key)
}

func (l *Lease) setHeld(h bool) {
	l.held.Store(h)
	if h {
		l.m.Held.Set(1)
	} else {
		l.m.Held.Set(0)
	}
}
