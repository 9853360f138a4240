package component

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/ping"
	"mellium.im/xmpp/stanza"

	"github.com/cusax-gw/cusax-gw/identity"
	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

// A 1x1 PNG, alice's avatar.
const tinyPNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="

// client is a real c2s session of a test user with its Serve loop.
type client struct {
	s    *xmpp.Session
	done chan error
}

func dialClient(t *testing.T, addr, user, password string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := testenv.DialClient(ctx, addr, jid.MustParse(user), password)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{s: s, done: make(chan error, 1)}
	go func() { c.done <- s.Serve(nil) }()
	t.Cleanup(c.close)
	return c
}

func (c *client) close() {
	_ = c.s.Close()
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
	}
	_ = c.s.Conn().Close()
}

// iq sends payload to `to` and returns the reply.
func (c *client) iq(t *testing.T, typ stanza.IQType, to string, payload *node) (*node, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var tj jid.JID
	if to != "" {
		tj = jid.MustParse(to)
	}
	resp, err := sessionSender{c.s}.sendIQ(ctx, stanza.IQ{Type: typ, To: tj}, payload)
	if err != nil {
		t.Fatalf("%s IQ to %s: %v", typ, to, err)
	}
	if resp.attr("type") == "error" {
		return nil, stanzaError(resp)
	}
	return resp, nil
}

// barrier makes a ping round trip to the server: everything the client
// sent before has been processed.
func (c *client) barrier(t *testing.T) {
	t.Helper()
	if _, err := c.iq(t, stanza.GetIQ, "", elem(ping.NS, "ping")); err != nil {
		t.Fatal(err)
	}
}

func (c *client) presence(t *testing.T, typ stanza.PresenceType, to string) {
	t.Helper()
	p := stanza.Presence{Type: typ}
	if to != "" {
		p.To = jid.MustParse(to)
	}
	if err := c.s.Send(t.Context(), p.Wrap(nil)); err != nil {
		t.Fatal(err)
	}
	c.barrier(t)
}

// reachOf reads user's XEP-0152 addresses as this client sees them.
func (c *client) reachOf(t *testing.T, user string) []string {
	resp, err := c.iq(t, stanza.GetIQ, user, itemsPayload(NodeReach))
	if err != nil {
		return []string{"error: " + err.Error()}
	}
	return parseReach(parseItems(resp.child(NSPubSub, "pubsub")))
}

// vcardTempOf reads user's vcard-temp.
func (c *client) vcardTempOf(t *testing.T, user string) *node {
	resp, err := c.iq(t, stanza.GetIQ, user, elem(NSVCard, "vCard"))
	if err != nil {
		t.Fatalf("vcard-temp of %s: %v", user, err)
	}
	return resp.child(NSVCard, "vCard")
}

// eventually polls cond until it holds and returns how long that took.
func eventually(t *testing.T, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < waitLimit {
		ok, state := cond()
		if ok {
			return time.Since(start)
		}
		last = state
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s; last state: %s", what, waitLimit, last)
	return 0
}

func wantReach(t *testing.T, c *client, user string, want ...string) func() (bool, string) {
	return func() (bool, string) {
		got := c.reachOf(t, user)
		return slices.Equal(got, want), xmlString(got)
	}
}

func xmlString(v []string) string { return "[" + strings.Join(v, ", ") + "]" }

func syncCount(c *Component, kind, result string) float64 {
	return testutil.ToFloat64(c.m.sync.WithLabelValues(kind, result))
}

// syncServer is a running Prosody or ejabberd as the sync tests use it.
type syncServer struct {
	domain, component, secret, c2s, componentAddr string
	stop, restart                                 func() error
}

// aliceAndBob dials alice and bob (passwords in users); alice sets her
// own vCard the way clients do (vcard-temp), with a private number of
// hers, and bob subscribes to her presence (the default access model of
// reach is presence).
func (sv syncServer) aliceAndBob(t *testing.T, users map[string]string) (ac, bc *client) {
	t.Helper()
	alice, bob := "alice@"+sv.domain, "bob@"+sv.domain
	ac = dialClient(t, sv.c2s, alice, users["alice"])
	own := elem(NSVCard, "vCard",
		elem(NSVCard, "FN", "Alice Liddell"),
		elem(NSVCard, "PHOTO", elem(NSVCard, "TYPE", "image/png"), elem(NSVCard, "BINVAL", tinyPNG)),
		elem(NSVCard, "TEL", elem(NSVCard, "HOME"), elem(NSVCard, "VOICE"), elem(NSVCard, "NUMBER", "+493012345678")),
	)
	if _, err := ac.iq(t, stanza.SetIQ, "", own); err != nil {
		t.Fatalf("alice sets her vCard: %v", err)
	}
	bc = dialClient(t, sv.c2s, bob, users["bob"])
	bc.presence(t, stanza.SubscribePresence, alice)
	ac.presence(t, stanza.SubscribedPresence, bob)
	return ac, bc
}

// aliceStore is a memory store holding alice with number +15551230001;
// put replaces her numbers.
func (sv syncServer) aliceStore(t *testing.T) (store *identity.MemoryStore, put func(tels ...string)) {
	t.Helper()
	store = identity.NewMemoryStore()
	t.Cleanup(func() { _ = store.Close() })
	put = func(tels ...string) {
		t.Helper()
		if _, err := store.Put(t.Context(), identity.Identity{JID: "alice@" + sv.domain, SIP: []string{"sip:alice@" + sv.domain}, Tel: tels, Name: "Alice"}); err != nil {
			t.Fatal(err)
		}
	}
	put("+15551230001")
	return store, put
}

// config is a component of the server syncing reach and vCards (enforce)
// from store, through ejabberdAPI when not "".
func (sv syncServer) config(store identity.Store, ejabberdAPI string) Config {
	return Config{
		JID: sv.component, Server: sv.componentAddr, Secret: Secret(sv.secret), Domain: sv.domain,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Identities: store,
		Sync:       SyncConfig{Reach: true, VCard: VCardEnforce, Interval: time.Hour, EjabberdAPI: ejabberdAPI},
	}
}

// restartResync stops the server, gives alice a new number, restarts the
// server and waits until c is up again (privileges version) and a new
// session of bob (password bobPW) sees alice's new reach and vCard.
func (sv syncServer) restartResync(t *testing.T, c *Component, version int, put func(tels ...string), bobPW string) {
	t.Helper()
	alice := "alice@" + sv.domain
	if err := sv.stop(); err != nil {
		t.Fatal(err)
	}
	put("+15551230009")
	if err := sv.restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, "up again after the restart", func() bool { return c.Up() && c.Privileges().Version == version })
	bc2 := dialClient(t, sv.c2s, "bob@"+sv.domain, bobPW)
	d := eventually(t, "bob sees alice's reach after the restart", wantReach(t, bc2, alice, "sip:alice@"+sv.domain, "tel:+15551230009"))
	t.Logf("in sync %s after the server came back", d)
	eventually(t, "vCard after the restart", func() (bool, string) {
		v := bc2.vcardTempOf(t, alice)
		return slices.Equal(vcardTempNumbers(v), []string{"+15551230009"}) && v.child(NSVCard, "PHOTO") != nil, v.String()
	})
}

// aliceVCard returns a condition on alice's vCard as bc reads it: her
// name, her photo and exactly wantTels.
func aliceVCard(t *testing.T, bc *client, alice string) func(wantTels ...string) func() (bool, string) {
	return func(wantTels ...string) func() (bool, string) {
		return func() (bool, string) {
			v := bc.vcardTempOf(t, alice)
			ok := v.child(NSVCard, "FN").text() == "Alice Liddell" &&
				v.child(NSVCard, "PHOTO").child(NSVCard, "BINVAL").text() == tinyPNG &&
				slices.Equal(vcardTempNumbers(v), wantTels)
			return ok, v.String()
		}
	}
}

func TestIntegrationSyncProsody(t *testing.T) {
	users := map[string]string{"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
	x := testenv.StartProsody(t, testenv.ProsodyOptions{Privileged: true, Users: users})
	alice, bob := "alice@"+x.Domain, "bob@"+x.Domain

	// Alice has a vCard of her own, bob subscribes to her presence.
	sv := syncServer{x.Domain, x.Component, x.Secret, x.C2SAddr, x.ComponentAddr, x.Stop, x.Restart}
	ac, bc := sv.aliceAndBob(t, users)
	carol := "carol@" + x.Domain // has no vCard at all
	cc := dialClient(t, x.C2SAddr, carol, users["carol"])
	bc.presence(t, stanza.SubscribePresence, carol)
	cc.presence(t, stanza.SubscribedPresence, bob)

	store, put := sv.aliceStore(t)
	if _, err := store.Put(t.Context(), identity.Identity{JID: carol, Tel: []string{"+15551230100"}, Name: "Carol"}); err != nil {
		t.Fatal(err)
	}

	c, _, logs := newTest(t, sv.config(store, ""))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("component log:\n%s", logs)
		}
	})
	r := start(t, c)
	waitFor(t, c, "up with v2 privileges", func() bool { return c.Up() && c.Privileges().Version == 2 })
	if got, want := c.Plan().String(), "reach=privileged-iq vcard=privileged-iq(vcard4)"; got != want {
		t.Errorf("Plan() = %s, want %s", got, want)
	}

	d := eventually(t, "bob sees alice's reach", wantReach(t, bc, alice, "sip:alice@"+x.Domain, "tel:+15551230001"))
	t.Logf("initial reconcile visible to bob after %s", d)

	checkVCard := aliceVCard(t, bc, alice)
	eventually(t, "alice's vCard holds the map's number, her name and photo", checkVCard("+15551230001"))
	eventually(t, "carol gets a vCard", func() (bool, string) {
		v := bc.vcardTempOf(t, carol)
		return slices.Equal(vcardTempNumbers(v), []string{"+15551230100"}) && v.child(NSVCard, "FN").text() == "Carol", v.String()
	})

	// Idempotence: alice comes online again; the re-check writes nothing.
	before := syncCount(c, KindReach, ResultUnchanged) + syncCount(c, KindVCard, ResultUnchanged)
	ac.presence(t, stanza.AvailablePresence, "")
	eventually(t, "presence re-check finds everything unchanged", func() (bool, string) {
		n := syncCount(c, KindReach, ResultUnchanged) + syncCount(c, KindVCard, ResultUnchanged)
		return n >= before+2, fmt.Sprint(n)
	})

	// A change of the map shows up.
	var lat []time.Duration
	for _, tel := range []string{"+15551230002", "+15551230003", "+15551230004", "+15551230005", "+15551230006"} {
		put("+15551230001", tel)
		d := eventually(t, "bob sees the change", wantReach(t, bc, alice, "sip:alice@"+x.Domain, "tel:+15551230001", "tel:"+tel))
		lat = append(lat, d)
	}
	slices.Sort(lat)
	t.Logf("change-to-visible latency (poll every 20ms): min %s median %s max %s", lat[0], lat[len(lat)/2], lat[len(lat)-1])
	eventually(t, "vCard follows", checkVCard("+15551230001", "+15551230006"))

	// Deleting alice clears her reach and, in enforce mode, her numbers.
	if err := store.Delete(t.Context(), alice); err != nil {
		t.Fatal(err)
	}
	d = eventually(t, "bob sees alice's reach cleared", wantReach(t, bc, alice))
	t.Logf("delete visible after %s", d)
	eventually(t, "vCard numbers removed, name and photo kept", checkVCard())

	// The server restarts while the map changes: the component comes back
	// and reconciles.
	sv.restartResync(t, c, 2, put, users["bob"])

	if err := r.stop(t); err != nil {
		t.Errorf("Run() = %v", err)
	}
	if testing.Verbose() {
		t.Logf("component log:\n%s", logs)
	}
	if n := syncCount(c, KindReach, ResultError) + syncCount(c, KindVCard, ResultError); n != 0 {
		t.Errorf("%g sync errors:\n%s", n, logs)
	}
}

func TestIntegrationSyncEjabberd(t *testing.T) {
	users := map[string]string{"alice": "alice-pw", "bob": "bob-pw"}
	x := testenv.StartEjabberd(t, testenv.EjabberdOptions{Users: users})
	alice := "alice@" + x.Domain

	sv := syncServer{x.Domain, x.Component, x.Secret, x.C2SAddr, x.ComponentAddr, x.Stop, x.Restart}
	_, bc := sv.aliceAndBob(t, users)
	store, put := sv.aliceStore(t)
	c, _, logs := newTest(t, sv.config(store, x.APIURL))
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("component log:\n%s", logs)
		}
	})
	r := start(t, c)
	waitFor(t, c, "up with v1 privileges", func() bool { return c.Up() && c.Privileges().Version == 1 })
	if got, want := c.Plan().String(), "reach=ejabberd-api vcard=ejabberd-api(vcard-temp)"; got != want {
		t.Errorf("Plan() = %s, want %s", got, want)
	}

	d := eventually(t, "bob sees alice's reach", wantReach(t, bc, alice, "sip:alice@"+x.Domain, "tel:+15551230001"))
	t.Logf("initial reconcile visible to bob after %s", d)
	checkVCard := aliceVCard(t, bc, alice)
	eventually(t, "alice's vcard-temp holds the map's number, her name and photo", checkVCard("+15551230001"))

	var lat []time.Duration
	for _, tel := range []string{"+15551230002", "+15551230003", "+15551230004"} {
		put("+15551230001", tel)
		lat = append(lat, eventually(t, "bob sees the change", wantReach(t, bc, alice, "sip:alice@"+x.Domain, "tel:+15551230001", "tel:"+tel)))
	}
	slices.Sort(lat)
	t.Logf("change-to-visible latency (poll every 20ms): min %s max %s", lat[0], lat[len(lat)-1])
	eventually(t, "vCard follows", checkVCard("+15551230001", "+15551230004"))

	if err := store.Delete(t.Context(), alice); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bob sees alice's reach cleared", wantReach(t, bc, alice))
	eventually(t, "vCard numbers removed, name and photo kept", checkVCard())

	// ejabberd restarts while the map changes: the component comes back
	// and reconciles (its memory of the published reach does not match).
	sv.restartResync(t, c, 1, put, users["bob"])

	if err := r.stop(t); err != nil {
		t.Errorf("Run() = %v", err)
	}
	if n := syncCount(c, KindReach, ResultError) + syncCount(c, KindVCard, ResultError); n != 0 {
		t.Errorf("%g sync errors", n)
	}
}

func TestIntegrationProbeEjabberdAPI(t *testing.T) {
	x := testenv.StartEjabberd(t, testenv.EjabberdOptions{})
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	if err := ProbeEjabberdAPI(t.Context(), x.APIURL, hc); err != nil {
		t.Errorf("ProbeEjabberdAPI(%s) = %v", x.APIURL, err)
	}
	bad := strings.TrimSuffix(x.APIURL, "/api") + "/nothing"
	if err := ProbeEjabberdAPI(t.Context(), bad, hc); err == nil {
		t.Errorf("ProbeEjabberdAPI(%s) = nil, want an error", bad)
	} else {
		t.Logf("ProbeEjabberdAPI(%s) = %v", bad, err)
	}
}
