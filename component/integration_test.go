package component

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

// Integration tests against real servers; they skip unless
// CUSAX_INTEGRATION=1 (see internal/testenv).

func TestIntegrationProsody(t *testing.T) {
	x := testenv.StartProsody(t, testenv.ProsodyOptions{Privileged: true})
	cfg := Config{
		JID: x.Component, Server: x.ComponentAddr, Secret: Secret(x.Secret), Domain: x.Domain,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		KeepaliveInterval: 200 * time.Millisecond,
	}

	t.Run("probe", func(t *testing.T) {
		p, err := Probe(t.Context(), cfg)
		if err != nil {
			t.Fatalf("Probe: %v", err)
		}
		want := "v2 roster=get presence=managed_entity message=outgoing iq=[http://jabber.org/protocol/pubsub=both urn:ietf:params:xml:ns:vcard-4.0=both vcard-temp=both]"
		if p.String() != want {
			t.Errorf("Probe() = %s, want %s", p, want)
		}
	})

	t.Run("probe with a wrong secret", func(t *testing.T) {
		bad := cfg
		bad.Secret = "wrong-" + Secret(x.Secret)
		_, err := Probe(t.Context(), bad)
		want := "component: handshake with " + x.ComponentAddr + " refused: not-authorized (Given token does not match calculated token)"
		if err == nil || err.Error() != want || !errors.Is(err, ErrHandshakeRefused) {
			t.Errorf("Probe() error = %v, want %s", err, want)
		}
	})

	t.Run("run and survive a restart", func(t *testing.T) {
		c, reg, logs := newTest(t, cfg)
		replies := countReplies(c)
		r := start(t, c)
		waitFor(t, c, "up with v2 privileges", func() bool { return c.Up() && c.Privileges().Version == 2 })
		wantMetrics(t, reg, true, allGranted)
		keepaliveAnswered(t, c, replies)

		// A second instance with the same JID is refused while we are connected.
		_, err := Probe(t.Context(), cfg)
		var he *HandshakeError
		if !errors.As(err, &he) || he.Condition != "conflict" {
			t.Errorf("second connection: Probe() error = %v, want a conflict HandshakeError", err)
		}

		if err := x.Restart(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, c, "up again after the restart", func() bool {
			return c.Up() && c.Privileges().Version == 2 && testutil.ToFloat64(c.m.reconnects) >= 1
		})
		if err := r.stop(t); err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
		wantMetrics(t, reg, false, nil)
		out := logs.String()
		if n := strings.Count(out, `msg="component connected"`); n != 2 {
			t.Errorf("%d connections, want 2:\n%s", n, out)
		}
	})
}

func TestIntegrationEjabberd(t *testing.T) {
	x := testenv.StartEjabberd(t, testenv.EjabberdOptions{})
	cfg := Config{JID: x.Component, Server: x.ComponentAddr, Secret: Secret(x.Secret), Domain: x.Domain,
		KeepaliveInterval: 200 * time.Millisecond}

	p, err := Probe(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	if want := "v1 roster=get presence=managed_entity message=outgoing iq=[]"; p.String() != want {
		t.Errorf("Probe() = %s, want %s", p, want)
	}

	c, _, _ := newTest(t, cfg)
	replies := countReplies(c)
	r := start(t, c)
	waitFor(t, c, "up with v1 privileges", func() bool { return c.Up() && c.Privileges().Version == 1 })
	keepaliveAnswered(t, c, replies)
	if err := r.stop(t); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
}

// countReplies makes c's connections report every IQ result they read on
// the returned channel. Nobody but the keepalive sends IQs in these tests.
func countReplies(c *Component) <-chan struct{} {
	ch := make(chan struct{}, 64)
	dial := c.dial
	c.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return replyCounter{Conn: conn, replies: ch}, nil
	}
	return ch
}

type replyCounter struct {
	net.Conn
	replies chan<- struct{}
}

func (r replyCounter) Read(b []byte) (int, error) {
	n, err := r.Conn.Read(b)
	s := string(b[:n])
	for range strings.Count(s, "type='result'") + strings.Count(s, `type="result"`) {
		notify(r.replies, struct{}{})
	}
	return n, err
}

// keepaliveAnswered waits for three answered keepalive pings and checks that
// the stream survived them: the server answers pings from the component.
func keepaliveAnswered(t *testing.T, c *Component, replies <-chan struct{}) {
	t.Helper()
	for range 3 {
		recv(t, replies, "answer to a keepalive ping")
	}
	if !c.Up() || testutil.ToFloat64(c.m.reconnects) != 0 {
		t.Errorf("after 3 keepalive pings Up() = %v, reconnects = %g, want true, 0", c.Up(), testutil.ToFloat64(c.m.reconnects))
	}
}
