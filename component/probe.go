package component

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Probe checks cfg against the real server for `cusax-gw check`: it
// connects once (defaults and validation as in New), performs the handshake,
// waits up to cfg.AdvertTimeout for the XEP-0356 privilege advert, closes the
// stream and returns the grants. It does not retry and records no metrics.
//
// A server that sends no advert (no mod_privilege, or the component is not
// a privileged entity) yields the zero Privileges and a nil error. Errors
// name the server and never the secret: a refused handshake is a
// *HandshakeError (errors.Is(err, ErrHandshakeRefused)); adverts that came
// only from other domains than cfg.Domain give ErrForeignAdvert.
func Probe(ctx context.Context, cfg Config) (Privileges, error) {
	c, err := New(cfg, nil, nil)
	if err != nil {
		return Privileges{}, err
	}
	return c.probe(ctx)
}

func (c *Component) probe(ctx context.Context) (Privileges, error) {
	conn, sess, err := c.connect(ctx)
	if err != nil {
		return Privileges{}, err
	}
	c.setUp(true)
	sctx, stop := context.WithCancel(ctx)
	var serveErr error
	served := make(chan struct{})
	go func() {
		defer close(served)
		serveErr = c.serve(sctx, sess, conn)
	}()
	defer func() {
		stop()
		<-served
		c.setUp(false)
	}()

	timer := time.NewTimer(c.cfg.AdvertTimeout)
	defer timer.Stop()
	for {
		changed := c.changes()
		if p := c.Privileges(); p.Version != 0 {
			return p, nil
		}
		select {
		case <-changed:
		case <-served:
			return Privileges{}, serveErr
		case <-ctx.Done():
			return Privileges{}, fmt.Errorf("component: probe %s: %w", c.cfg.Server, ctx.Err())
		case <-timer.C:
			c.mu.Lock()
			foreign := slices.Clone(c.foreign)
			c.mu.Unlock()
			if len(foreign) > 0 {
				return Privileges{}, fmt.Errorf("%w: from %s, want %s",
					ErrForeignAdvert, strings.Join(foreign, ", "), c.domain)
			}
			return Privileges{}, nil
		}
	}
}
