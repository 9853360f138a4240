package component

import (
	"context"
	"time"
)

// Run connects to Config.Server, performs the XEP-0114 handshake and serves
// the stream; whenever the connection, the handshake or the stream fails, it
// waits and tries again, forever (see backoff and Config.MinBackoff). It
// never needs the server to be reachable to start: while down,
// cusax_xmpp_component_up is 0.
//
// cusax_xmpp_reconnects_total counts every attempt (dial plus handshake)
// after the first one of this Run, whether the previous attempt failed or
// its stream was up and later dropped. The backoff starts over once a stream
// has stayed up for at least MaxBackoff, so a server that accepts and then
// drops the component at once is not hammered.
//
// Run logs one line per state change: "component connected" (Info),
// "component disconnected" (Warn, with err and retry_in), and
// "component connect failed" (Warn for the first failure of a run of
// failures or when the error changes, Debug for repetitions).
//
// When ctx is cancelled, Run closes the stream (</stream:stream>) and the
// connection and returns nil. Run returns ErrAlreadyRunning if called again
// before the previous call returned.
func (c *Component) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer c.running.Store(false)

	b := backoff{min: c.cfg.MinBackoff, max: c.cfg.MaxBackoff, rand: c.jitter}
	var lastErr string // error of the previous failed attempt; "" after a stream
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			c.m.reconnects.Inc()
		}
		upFor, err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if upFor >= c.cfg.MaxBackoff {
			b.Reset()
		}
		wait := b.Next()

		switch msg := err.Error(); {
		case upFor > 0:
			c.log.Warn("component disconnected", "peer", c.cfg.Server, "err", err,
				"duration", upFor.Round(time.Millisecond), "retry_in", wait.Round(time.Millisecond))
			lastErr = ""
		case msg != lastErr:
			c.log.Warn("component connect failed", "peer", c.cfg.Server, "err", err,
				"retry_in", wait.Round(time.Millisecond))
			lastErr = msg
		default:
			c.log.Debug("component connect failed", "peer", c.cfg.Server, "err", err,
				"retry_in", wait.Round(time.Millisecond))
		}

		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// session makes one attempt: dial, handshake, serve until the stream ends or
// ctx is done. It returns how long the stream was up (0 if the handshake did
// not complete) and the error that ended it (never nil).
func (c *Component) session(ctx context.Context) (time.Duration, error) {
	conn, sess, err := c.connect(ctx)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	c.setUp(true)
	c.log.Info("component connected", "peer", c.cfg.Server, "jid", c.addr.String())
	err = c.serve(ctx, sess, conn)
	c.setUp(false)
	// A stream that ends within the same instant still counts as up.
	return max(time.Since(start), time.Nanosecond), err
}
