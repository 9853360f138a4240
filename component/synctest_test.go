package component

import (
	"context"
	"net"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// step is what the scripted dialer does on one attempt.
type step struct {
	fail  bool          // refuse the connection
	upFor time.Duration // > 0: serve a stream for this long, then drop it
	// neither: serve a stream until the test ends
}

// scriptedDialer dials a fakeServer over net.Pipe inside a synctest bubble
// and records the fake time of every attempt. After the script it blocks
// until Run is cancelled.
type scriptedDialer struct {
	srv      *fakeServer
	script   []step
	attempts []time.Time
	done     chan struct{} // closed when the script is exhausted
}

func newScriptedDialer(srv *fakeServer, script ...step) *scriptedDialer {
	return &scriptedDialer{srv: srv, script: script, done: make(chan struct{})}
}

func (d *scriptedDialer) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	d.attempts = append(d.attempts, time.Now())
	i := len(d.attempts) - 1
	if i >= len(d.script) {
		if i == len(d.script) {
			close(d.done)
		}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if d.script[i].fail {
		return nil, errDialRefused
	}
	client, server := net.Pipe()
	d.srv.serveConn(server)
	if up := d.script[i].upFor; up > 0 {
		time.AfterFunc(up, func() { _ = server.Close() })
	}
	return client, nil
}

// gaps returns the time between consecutive attempts.
func (d *scriptedDialer) gaps() []time.Duration {
	var g []time.Duration
	for i := 1; i < len(d.attempts); i++ {
		g = append(g, d.attempts[i].Sub(d.attempts[i-1]))
	}
	return g
}

// runScript runs a Component against the script on the bubble's fake clock
// until the script is exhausted, then stops it.
func runScript(t *testing.T, cfg Config, srv *fakeServer, script ...step) (*Component, *scriptedDialer) {
	t.Helper()
	c, _, _ := newTest(t, cfg)
	d := newScriptedDialer(srv, script...)
	c.dial = d.dial
	c.jitter = func() float64 { return 0 }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	<-d.done
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run() = %v after cancel, want nil", err)
	}
	srv.close()
	return c, d
}

func TestRunBackoffTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig("127.0.0.1:5347")
		cfg.MinBackoff, cfg.MaxBackoff = time.Second, 8*time.Second
		fail := step{fail: true}
		c, d := runScript(t, cfg, newFakeServer(testSecret, ""), fail, fail, fail, fail, fail, fail)

		s := time.Second
		if got, want := d.gaps(), []time.Duration{s, 2 * s, 4 * s, 8 * s, 8 * s, 8 * s}; !slices.Equal(got, want) {
			t.Errorf("waits between attempts = %v, want %v", got, want)
		}
		if got := testutil.ToFloat64(c.m.reconnects); got != 6 {
			t.Errorf("cusax_xmpp_reconnects_total = %g after 7 attempts, want 6", got)
		}
	})
}

func TestRunBackoffResetsAfterStableStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig("127.0.0.1:5347")
		cfg.MinBackoff, cfg.MaxBackoff = time.Second, 8*time.Second
		fail := step{fail: true}
		_, d := runScript(t, cfg, newFakeServer(testSecret, prosodyAdvert),
			fail, fail, // waits 1s, 2s
			step{upFor: 10 * time.Second}, // stable (>= MaxBackoff): next wait starts over at 1s
			fail,                          // 2s
			step{upFor: time.Second},      // short-lived: next wait keeps growing, 4s
			fail,                          // 8s
		)
		s := time.Second
		want := []time.Duration{s, 2 * s, 10*s + s, 2 * s, s + 4*s, 8 * s}
		if got := d.gaps(); !slices.Equal(got, want) {
			t.Errorf("waits between attempts = %v, want %v", got, want)
		}
	})
}

func TestKeepaliveTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig("127.0.0.1:5347")
		cfg.MinBackoff, cfg.MaxBackoff, cfg.KeepaliveInterval = time.Second, 8*time.Second, 30*time.Second
		srv := newFakeServer(testSecret, "")
		srv.ignorePings.Store(true)
		_, d := runScript(t, cfg, srv, step{})
		// Connected at 0, first ping at 30s, no reply by 60s: the stream is
		// dropped and the next attempt follows after MinBackoff.
		if got, want := d.gaps(), []time.Duration{61 * time.Second}; !slices.Equal(got, want) {
			t.Errorf("waits between attempts = %v, want %v", got, want)
		}
	})
}

func TestKeepaliveKeepsHealthyStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig("127.0.0.1:5347")
		cfg.KeepaliveInterval = 30 * time.Second
		srv := newFakeServer(testSecret, "")
		c, _, _ := newTest(t, cfg)
		d := newScriptedDialer(srv, step{})
		c.dial = d.dial
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- c.Run(ctx) }()

		fc := <-srv.conns
		time.Sleep(5*time.Minute + time.Second) // advances the bubble's fake clock
		synctest.Wait()
		if n := len(fc.pings); n != 10 {
			t.Errorf("%d pings in 5 minutes, want 10", n)
		}
		if !c.Up() || len(d.attempts) != 1 {
			t.Errorf("Up() = %v after %d attempts, want true after 1", c.Up(), len(d.attempts))
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
		srv.close()
	})
}
