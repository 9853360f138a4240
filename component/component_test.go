package component

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// testConfig returns a valid Config for a fake server at addr with fast
// retries and no keepalive during the test.
func testConfig(addr string) Config {
	return Config{
		JID:               "cusax.example.com",
		Server:            addr,
		Secret:            testSecret,
		Domain:            "example.com",
		Version:           "1.2.3-test",
		DialTimeout:       waitLimit,
		HandshakeTimeout:  waitLimit,
		MinBackoff:        time.Millisecond,
		MaxBackoff:        4 * time.Millisecond,
		KeepaliveInterval: time.Hour,
	}
}

// newTest returns a Component with registered metrics and a debug log that
// is checked for the secret when the test ends.
func newTest(t *testing.T, cfg Config) (*Component, *prometheus.Registry, *syncBuffer) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := New(cfg, log, NewMetrics(reg))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if strings.Contains(logs.String(), string(cfg.Secret)) {
			t.Errorf("the secret appears in the logs:\n%s", logs)
		}
	})
	return c, reg, logs
}

// barrier makes a ping round trip: when it returns, the component has
// handled every stanza the server sent before.
func barrier(t *testing.T, fc *fakeConn) {
	t.Helper()
	r := fc.roundTrip(t, `<iq type='get' id='barrier' from='example.com' to='cusax.example.com'><ping xmlns='urn:xmpp:ping'/></iq>`)
	if r.attr("id") != "barrier" || r.attr("type") != "result" {
		t.Fatalf("barrier ping answered with %s %v", r.XMLName.Local, r.Attr)
	}
}

// wantMetrics compares the component's gauges with want.
func wantMetrics(t *testing.T, reg *prometheus.Registry, up bool, granted map[string]bool) {
	t.Helper()
	var b strings.Builder
	b.WriteString("# HELP cusax_xmpp_component_up 1 while the XEP-0114 component stream is established, 0 otherwise.\n# TYPE cusax_xmpp_component_up gauge\n")
	fmt.Fprintf(&b, "cusax_xmpp_component_up %g\n", b2f(up))
	b.WriteString("# HELP cusax_xmpp_privilege 1 if the server granted the XEP-0356 privilege named by access on the current stream.\n# TYPE cusax_xmpp_privilege gauge\n")
	for _, a := range slices.Sorted(slices.Values(accessLabels[:])) {
		fmt.Fprintf(&b, "cusax_xmpp_privilege{access=%q} %g\n", a, b2f(granted[a]))
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(b.String()),
		"cusax_xmpp_component_up", "cusax_xmpp_privilege"); err != nil {
		t.Error(err)
	}
}

var allGranted = map[string]bool{AccessRoster: true, AccessPresence: true, AccessMessage: true, AccessPubSub: true, AccessVCard: true}

func TestRunConnectsAndReadsAdvert(t *testing.T) {
	for _, tc := range []struct {
		name    string
		advert  string
		want    string // Privileges.String()
		granted map[string]bool
	}{
		{"prosody v2 nested", prosodyAdvert,
			"v2 roster=get presence=managed_entity message=outgoing iq=[http://jabber.org/protocol/pubsub=both urn:ietf:params:xml:ns:vcard-4.0=both vcard-temp=both]",
			allGranted},
		{"ejabberd v1", ejabberdAdvert,
			"v1 roster=get presence=managed_entity message=outgoing iq=[]",
			map[string]bool{AccessRoster: true, AccessPresence: true, AccessMessage: true}},
		{"no advert", "", "none", nil},
		{"advert from another domain", strings.ReplaceAll(prosodyAdvert, "from='example.com'", "from='other.example'"), "none", nil},
		{"garbled advert", `<message from='example.com'><privilege xmlns='urn:xmpp:privilege:2'><perm access='roster' type='get'/><foo/></privilege></message>`,
			"v2 roster=get presence=none message=none iq=[]", map[string]bool{AccessRoster: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(testSecret, tc.advert)
			c, reg, _ := newTest(t, testConfig(srv.listen(t)))
			if c.Up() {
				t.Fatal("Up() = true before Run")
			}
			wantMetrics(t, reg, false, nil)

			start(t, c)
			fc := recv(t, srv.conns, "successful handshake")
			barrier(t, fc)

			if !c.Up() {
				t.Error("Up() = false after the handshake")
			}
			if got := c.Privileges().String(); got != tc.want {
				t.Errorf("Privileges() = %s, want %s", got, tc.want)
			}
			wantMetrics(t, reg, true, tc.granted)
			if got := testutil.ToFloat64(c.m.reconnects); got != 0 {
				t.Errorf("cusax_xmpp_reconnects_total = %g, want 0", got)
			}
		})
	}
}

func TestRunWrongSecret(t *testing.T) {
	srv := newFakeServer("another-secret", prosodyAdvert)
	c, reg, logs := newTest(t, testConfig(srv.listen(t)))
	r := start(t, c)
	for range 3 {
		recv(t, srv.refused, "refused handshake")
	}
	if c.Up() {
		t.Error("Up() = true after refused handshakes")
	}
	wantMetrics(t, reg, false, nil)
	if err := r.stop(t); err != nil {
		t.Errorf("Run() = %v after cancel, want nil", err)
	}
	if got := testutil.ToFloat64(c.m.reconnects); got < 2 {
		t.Errorf("cusax_xmpp_reconnects_total = %g after 3 attempts, want >= 2", got)
	}

	// One warning for the run of identical failures, the rest at debug.
	out := logs.String()
	if n := strings.Count(out, `level=WARN msg="component connect failed"`); n != 1 {
		t.Errorf("%d warnings for repeated identical failures, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, `level=DEBUG msg="component connect failed"`); n < 1 {
		t.Errorf("no debug line for repeated failures:\n%s", out)
	}
	if want := "refused: not-authorized (Given token does not match calculated token)"; !strings.Contains(out, want) {
		t.Errorf("logs lack %q:\n%s", want, out)
	}
}

func TestRunReconnects(t *testing.T) {
	for _, tc := range []struct {
		name    string
		drop    func(fc *fakeConn)
		wantLog string
	}{
		{"connection closed", func(fc *fakeConn) { fc.conn.Close() }, "lost"},
		{"stream closed", func(fc *fakeConn) { fc.send("</stream:stream>"); fc.conn.Close() }, "stream closed by server"},
		{"stream error", func(fc *fakeConn) {
			fc.send(`<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>`)
			fc.conn.Close()
		}, "stream error from 127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(testSecret, prosodyAdvert)
			holding, release := make(chan struct{}), make(chan struct{})
			ctx := t.Context()
			srv.beforeAccept = func(n int) {
				if n != 2 {
					return
				}
				select { // hold the second handshake until the test has looked
				case holding <- struct{}{}:
				case <-ctx.Done():
				}
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			c, reg, logs := newTest(t, testConfig(srv.listen(t)))
			r := start(t, c)

			fc := recv(t, srv.conns, "first handshake")
			barrier(t, fc)
			wantMetrics(t, reg, true, allGranted)

			tc.drop(fc)
			recv(t, holding, "second handshake")
			if c.Up() {
				t.Error("Up() = true while reconnecting")
			}
			if p := c.Privileges(); p.Version != 0 {
				t.Errorf("Privileges() = %v while reconnecting, want none", p)
			}
			wantMetrics(t, reg, false, nil)
			if got := testutil.ToFloat64(c.m.reconnects); got != 1 {
				t.Errorf("cusax_xmpp_reconnects_total = %g during the second attempt, want 1", got)
			}

			close(release)
			fc2 := recv(t, srv.conns, "second handshake")
			barrier(t, fc2)
			if !c.Up() || c.Privileges().Version != 2 {
				t.Errorf("after reconnecting Up(), Privileges() = %v, %v, want true, v2", c.Up(), c.Privileges())
			}
			wantMetrics(t, reg, true, allGranted)
			if err := r.stop(t); err != nil {
				t.Errorf("Run() = %v, want nil", err)
			}
			out := logs.String()
			if !strings.Contains(out, `level=WARN msg="component disconnected"`) || !strings.Contains(out, tc.wantLog) {
				t.Errorf("logs lack a disconnect warning with %q:\n%s", tc.wantLog, out)
			}
			if n := strings.Count(out, `level=INFO msg="component connected"`); n != 2 {
				t.Errorf("%d connected lines, want 2:\n%s", n, out)
			}
		})
	}
}

func TestRunStops(t *testing.T) {
	t.Run("while connected", func(t *testing.T) {
		srv := newFakeServer(testSecret, prosodyAdvert)
		c, reg, _ := newTest(t, testConfig(srv.listen(t)))
		r := start(t, c)
		fc := recv(t, srv.conns, "handshake")
		barrier(t, fc)
		if err := r.stop(t); err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
		recv(t, fc.done, "end of the connection")
		if !fc.closed.Load() {
			t.Error("the component did not send </stream:stream>")
		}
		if c.Up() {
			t.Error("Up() = true after Run returned")
		}
		wantMetrics(t, reg, false, nil)
	})
	t.Run("while waiting to retry", func(t *testing.T) {
		srv := newFakeServer("another-secret", "")
		cfg := testConfig(srv.listen(t))
		cfg.MinBackoff, cfg.MaxBackoff = time.Hour, time.Hour
		c, _, _ := newTest(t, cfg)
		r := start(t, c)
		recv(t, srv.refused, "refused handshake")
		if err := r.stop(t); err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
	t.Run("during the handshake", func(t *testing.T) {
		srv := newFakeServer(testSecret, "")
		srv.silent.Store(true)
		cfg := testConfig(srv.listen(t))
		cfg.HandshakeTimeout = time.Hour
		c, _, _ := newTest(t, cfg)
		r := start(t, c)
		recv(t, srv.accepted, "TCP connection")
		if err := r.stop(t); err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
	t.Run("during the dial", func(t *testing.T) {
		c, _, _ := newTest(t, testConfig("127.0.0.1:5347"))
		dialing := make(chan struct{})
		c.dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
			close(dialing)
			<-ctx.Done()
			return nil, ctx.Err()
		}
		r := start(t, c)
		recv(t, dialing, "dial")
		if err := r.stop(t); err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
	t.Run("second Run", func(t *testing.T) {
		srv := newFakeServer(testSecret, "")
		c, _, _ := newTest(t, testConfig(srv.listen(t)))
		start(t, c)
		recv(t, srv.conns, "handshake")
		if err := c.Run(context.Background()); !errors.Is(err, ErrAlreadyRunning) {
			t.Errorf("second Run() = %v, want ErrAlreadyRunning", err)
		}
	})
}

func TestHandlers(t *testing.T) {
	srv := newFakeServer(testSecret, "")
	c, _, _ := newTest(t, testConfig(srv.listen(t)))
	start(t, c)
	fc := recv(t, srv.conns, "handshake")

	// answer holds the children of an IQ answer.
	type answer struct {
		Query struct {
			XMLName  xml.Name
			Identity []struct {
				Category string `xml:"category,attr"`
				Type     string `xml:"type,attr"`
			} `xml:"identity"`
			Feature []struct {
				Var string `xml:"var,attr"`
			} `xml:"feature"`
			Name    string `xml:"name"`
			Version string `xml:"version"`
		} `xml:"query"`
		Error struct {
			Type       string     `xml:"type,attr"`
			Conditions innerNames `xml:",any"`
		} `xml:"error"`
	}

	for _, tc := range []struct {
		name  string
		iq    string
		typ   string
		check func(t *testing.T, q answer)
	}{
		{"ping", `<iq type='get' id='1' from='alice@example.com/phone' to='cusax.example.com'><ping xmlns='urn:xmpp:ping'/></iq>`, "result", nil},
		{"disco#info", `<iq type='get' id='2' from='alice@example.com/phone' to='cusax.example.com'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`, "result",
			func(t *testing.T, a answer) {
				q := a.Query
				if q.XMLName.Space != "http://jabber.org/protocol/disco#info" || len(q.Identity) != 1 ||
					q.Identity[0].Category != "gateway" || q.Identity[0].Type != "sip" {
					t.Errorf("disco#info = %+v, want one identity gateway/sip", q)
				}
				var got []string
				for _, f := range q.Feature {
					got = append(got, f.Var)
				}
				want := []string{"http://jabber.org/protocol/disco#info", "urn:xmpp:ping", "jabber:iq:version", "urn:xmpp:reach:0"}
				if !slices.Equal(got, want) {
					t.Errorf("features = %q, want %q", got, want)
				}
			}},
		{"disco#info of a node", `<iq type='get' id='3' from='alice@example.com/phone' to='cusax.example.com'><query xmlns='http://jabber.org/protocol/disco#info' node='x'/></iq>`, "error",
			func(t *testing.T, a answer) {
				if a.Error.Type != "cancel" || !slices.Contains(a.Error.Conditions, "item-not-found") {
					t.Errorf("error = %+v, want cancel item-not-found", a.Error)
				}
			}},
		{"disco#items", `<iq type='get' id='4' from='alice@example.com/phone' to='cusax.example.com'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`, "result",
			func(t *testing.T, a answer) {
				if a.Query.XMLName.Space != "http://jabber.org/protocol/disco#items" || len(a.Query.Feature) != 0 {
					t.Errorf("disco#items answer = %+v, want an empty disco#items query", a.Query)
				}
			}},
		{"version", `<iq type='get' id='5' from='alice@example.com/phone' to='cusax.example.com'><query xmlns='jabber:iq:version'/></iq>`, "result",
			func(t *testing.T, a answer) {
				if a.Query.Name != "cusax-gw" || a.Query.Version != "1.2.3-test" {
					t.Errorf("version = %q %q, want cusax-gw 1.2.3-test", a.Query.Name, a.Query.Version)
				}
			}},
		{"unknown get", `<iq type='get' id='6' from='alice@example.com/phone' to='cusax.example.com'><query xmlns='jabber:iq:last'/></iq>`, "error",
			func(t *testing.T, a answer) {
				if a.Error.Type != "cancel" || !slices.Contains(a.Error.Conditions, "service-unavailable") {
					t.Errorf("error = %+v, want cancel service-unavailable", a.Error)
				}
			}},
		{"unknown set", `<iq type='set' id='7' from='alice@example.com/phone' to='cusax.example.com'><query xmlns='jabber:iq:register'/></iq>`, "error", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := fc.roundTrip(t, tc.iq)
			var in element
			_ = xml.Unmarshal([]byte(tc.iq), &in)
			if r.XMLName.Local != "iq" || r.attr("type") != tc.typ || r.attr("id") != in.attr("id") ||
				r.attr("from") != "cusax.example.com" || r.attr("to") != "alice@example.com/phone" {
				t.Fatalf("answer = <%s %v>, want <iq type=%q id=%q from='cusax.example.com' to='alice@example.com/phone'>",
					r.XMLName.Local, r.Attr, tc.typ, in.attr("id"))
			}
			if tc.check == nil {
				return
			}
			var a answer
			if err := xml.Unmarshal([]byte("<r>"+string(r.Inner)+"</r>"), &a); err != nil {
				t.Fatal(err)
			}
			tc.check(t, a)
		})
	}
}

// innerNames collects the local names of child elements.
type innerNames []string

func (n *innerNames) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	*n = append(*n, start.Name.Local)
	return d.Skip()
}

func TestKeepalive(t *testing.T) {
	t.Run("pings the server", func(t *testing.T) {
		srv := newFakeServer(testSecret, "")
		cfg := testConfig(srv.listen(t))
		cfg.KeepaliveInterval = 20 * time.Millisecond
		c, _, _ := newTest(t, cfg)
		start(t, c)
		fc := recv(t, srv.conns, "handshake")
		for range 2 {
			p := recv(t, fc.pings, "keepalive ping")
			if p.attr("type") != "get" || p.attr("from") != "cusax.example.com" || p.attr("to") != "example.com" || p.attr("id") == "" {
				t.Errorf("ping = %v, want type=get from=cusax.example.com to=example.com with an id", p.Attr)
			}
		}
	})
	t.Run("drops a dead stream", func(t *testing.T) {
		srv := newFakeServer(testSecret, "")
		srv.ignorePings.Store(true)
		cfg := testConfig(srv.listen(t))
		cfg.KeepaliveInterval = 20 * time.Millisecond
		c, _, logs := newTest(t, cfg)
		start(t, c)
		fc := recv(t, srv.conns, "handshake")
		recv(t, fc.pings, "keepalive ping")
		recv(t, fc.done, "the component to drop the stream")
		if !fc.closed.Load() {
			t.Error("the component did not send </stream:stream> before dropping the stream")
		}
		recv(t, srv.conns, "reconnect")
		if got := testutil.ToFloat64(c.m.reconnects); got < 1 {
			t.Errorf("cusax_xmpp_reconnects_total = %g, want >= 1", got)
		}
		if want := "keepalive: no reply from example.com within 20ms"; !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	})
	t.Run("drops a stream stuck in a write", func(t *testing.T) {
		// The server stops reading: the component's answer to its query
		// blocks with the session's write lock held, and so does the
		// ping behind it. The keepalive must still end the stream.
		srv := newFakeServer(testSecret, "")
		srv.stallFirst.Store(true)
		cfg := testConfig("127.0.0.1:5347")
		cfg.KeepaliveInterval = 20 * time.Millisecond
		c, _, logs := newTest(t, cfg)
		c.dial = newScriptedDialer(srv, step{}, step{}).dial // net.Pipe: no buffer
		c.closeTimeout = 10 * time.Millisecond
		t.Cleanup(srv.close)
		start(t, c)
		recv(t, srv.conns, "handshake")
		recv(t, srv.conns, "reconnect after the stuck stream")
		if want := "keepalive: no reply from example.com within 20ms"; !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	})
}

func TestProbe(t *testing.T) {
	probe := func(t *testing.T, srv *fakeServer, edit func(*Config)) (Privileges, string, error) {
		t.Helper()
		cfg := testConfig(srv.listen(t))
		if edit != nil {
			edit(&cfg)
		}
		p, err := Probe(t.Context(), cfg)
		return p, cfg.Server, err
	}

	t.Run("prosody", func(t *testing.T) {
		srv := newFakeServer(testSecret, prosodyAdvert)
		p, _, err := probe(t, srv, nil)
		if err != nil || p.Version != 2 || !p.CanIQ(NSPubSub, "set") {
			t.Errorf("Probe() = %v, %v, want v2 with pubsub", p, err)
		}
		fc := recv(t, srv.conns, "handshake")
		recv(t, fc.done, "end of the connection")
		if !fc.closed.Load() {
			t.Error("Probe did not send </stream:stream>")
		}
	})
	t.Run("ejabberd", func(t *testing.T) {
		p, _, err := probe(t, newFakeServer(testSecret, ejabberdAdvert), nil)
		if err != nil || p.Version != 1 || !p.CanRoster("get") {
			t.Errorf("Probe() = %v, %v, want v1 with roster get", p, err)
		}
	})
	t.Run("no advert", func(t *testing.T) {
		p, _, err := probe(t, newFakeServer(testSecret, ""), func(c *Config) { c.AdvertTimeout = 10 * time.Millisecond })
		if err != nil || p.Version != 0 {
			t.Errorf("Probe() = %v, %v, want none, nil", p, err)
		}
	})
	t.Run("advert for another domain", func(t *testing.T) {
		srv := newFakeServer(testSecret, strings.ReplaceAll(prosodyAdvert, "from='example.com'", "from='other.example'"))
		_, _, err := probe(t, srv, func(c *Config) { c.AdvertTimeout = 10 * time.Millisecond })
		if !errors.Is(err, ErrForeignAdvert) || !strings.Contains(err.Error(), "from other.example, want example.com") {
			t.Errorf("Probe() error = %v, want ErrForeignAdvert naming both domains", err)
		}
	})
	t.Run("wrong secret", func(t *testing.T) {
		_, addr, err := probe(t, newFakeServer("another-secret", ""), nil)
		want := "component: handshake with " + addr + " refused: not-authorized (Given token does not match calculated token)"
		if err == nil || err.Error() != want {
			t.Fatalf("Probe() error = %v, want %s", err, want)
		}
		var he *HandshakeError
		if !errors.Is(err, ErrHandshakeRefused) || !errors.As(err, &he) || he.Condition != "not-authorized" {
			t.Errorf("Probe() error = %#v, want a *HandshakeError matching ErrHandshakeRefused", err)
		}
		if strings.Contains(fmt.Sprintf("%v %+v %#v", err, err, err), testSecret) {
			t.Error("the error reveals the secret")
		}
	})
	t.Run("stream ends before the advert", func(t *testing.T) {
		_, _, err := probe(t, newFakeServer(testSecret, "</stream:stream>"), nil)
		if !errors.Is(err, ErrStreamClosed) {
			t.Errorf("Probe() error = %v, want ErrStreamClosed", err)
		}
	})
	t.Run("handshake timeout", func(t *testing.T) {
		srv := newFakeServer(testSecret, "")
		srv.silent.Store(true)
		_, addr, err := probe(t, srv, func(c *Config) { c.HandshakeTimeout = 10 * time.Millisecond })
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "handshake with "+addr+": no answer within 10ms") {
			t.Errorf("Probe() error = %v, want a handshake timeout naming %s", err, addr)
		}
	})
	t.Run("nothing listening", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		cfg := testConfig(addr)
		_, err = Probe(t.Context(), cfg)
		if err == nil || !strings.HasPrefix(err.Error(), "component: connect to "+addr+": ") {
			t.Errorf("Probe() error = %v, want one naming %s", err, addr)
		}
	})
	t.Run("invalid config", func(t *testing.T) {
		_, err := Probe(t.Context(), Config{})
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("Probe(Config{}) error = %v, want ErrInvalidConfig", err)
		}
	})
}
