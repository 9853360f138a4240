package component

import (
	"path/filepath"
	"testing"
	"time"

	"mellium.im/xmpp/stanza"

	"github.com/cusax-gw/cusax-gw/identity"
	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

// tombstoneServer is what the tombstone scenario needs of a real server.
type tombstoneServer struct {
	domain, c2s string
	users       map[string]string
	cfg         Config // without Identities
	privVersion int
}

// testTombstoneScenario: alice is published; the gateway stops; alice is
// deleted from the (embedded, on-disk) store; the gateway starts again
// with a new component. Bob, a contact, then sees alice's reach empty and
// her vCard without numbers, her name and photo kept.
func testTombstoneScenario(t *testing.T, x tombstoneServer) {
	alice, bob := "alice@"+x.domain, "bob@"+x.domain
	ac := dialClient(t, x.c2s, alice, x.users["alice"])
	own := elem(NSVCard, "vCard",
		elem(NSVCard, "FN", "Alice Liddell"),
		elem(NSVCard, "PHOTO", elem(NSVCard, "TYPE", "image/png"), elem(NSVCard, "BINVAL", tinyPNG)),
	)
	if _, err := ac.iq(t, stanza.SetIQ, "", own); err != nil {
		t.Fatalf("alice sets her vCard: %v", err)
	}
	bc := dialClient(t, x.c2s, bob, x.users["bob"])
	bc.presence(t, stanza.SubscribePresence, alice)
	ac.presence(t, stanza.SubscribedPresence, bob)

	path := filepath.Join(t.TempDir(), "identity.db")
	open := func() *identity.BoltStore {
		s, err := identity.OpenBolt(path, identity.BoltOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	checkVCard := aliceVCard(t, bc, alice)
	run := func(store *identity.BoltStore) (*Component, *running) {
		cfg := x.cfg
		cfg.Identities = store
		c, _, logs := newTest(t, cfg)
		t.Cleanup(func() {
			if t.Failed() || testing.Verbose() {
				t.Logf("component log:\n%s", logs)
			}
		})
		r := start(t, c)
		waitFor(t, c, "up with privileges", func() bool { return c.Up() && c.Privileges().Version == x.privVersion })
		return c, r
	}

	// The first run publishes alice.
	store := open()
	if _, err := store.Put(t.Context(), identity.Identity{JID: alice, SIP: []string{"sip:alice@" + x.domain}, Tel: []string{"+15551230001"}, Name: "Alice"}); err != nil {
		t.Fatal(err)
	}
	_, r := run(store)
	eventually(t, "bob sees alice's reach", wantReach(t, bc, alice, "sip:alice@"+x.domain, "tel:+15551230001"))
	eventually(t, "alice's vCard holds her number", checkVCard("+15551230001"))
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	// While the gateway is down, alice is deleted (cusax-gw identity rm
	// against another process holding the file, here the file itself).
	store = open()
	t.Cleanup(func() { _ = store.Close() })
	if err := store.Delete(t.Context(), alice); err != nil {
		t.Fatal(err)
	}
	if ts, _, err := store.Tombstones(t.Context(), "", 0); err != nil || len(ts) != 1 {
		t.Fatalf("tombstones = %+v, %v", ts, err)
	}

	// The gateway starts again: its reconcile walks the tombstone.
	c, r := run(store)
	d := eventually(t, "bob sees alice's reach cleared", wantReach(t, bc, alice))
	t.Logf("cleared %s after the component came up", d)
	eventually(t, "alice's vCard numbers removed, her name and photo kept", checkVCard())
	waitCount(t, c, KindTombstone, ResultOK, 1)
	if ts, _, err := store.Tombstones(t.Context(), "", 0); err != nil || len(ts) != 0 {
		t.Errorf("tombstones after the clearing = %+v, %v, want none", ts, err)
	}
	if err := r.stop(t); err != nil {
		t.Errorf("Run() = %v", err)
	}
	for _, k := range []string{KindReach, KindVCard, KindTombstone} {
		if n := syncCount(c, k, ResultError); n != 0 {
			t.Errorf("%g %s errors", n, k)
		}
	}
}

func TestIntegrationTombstoneProsody(t *testing.T) {
	users := map[string]string{"alice": "alice-pw", "bob": "bob-pw"}
	x := testenv.StartProsody(t, testenv.ProsodyOptions{Privileged: true, Users: users})
	testTombstoneScenario(t, tombstoneServer{
		domain: x.Domain, c2s: x.C2SAddr, users: users, privVersion: 2,
		cfg: Config{
			JID: x.Component, Server: x.ComponentAddr, Secret: Secret(x.Secret), Domain: x.Domain,
			MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
			Sync: SyncConfig{Reach: true, VCard: VCardEnforce, Interval: time.Hour},
		},
	})
}

// On ejabberd 23.01 the writes go through the HTTP admin API and the
// component reads vcard-temp itself.
func TestIntegrationTombstoneEjabberd(t *testing.T) {
	users := map[string]string{"alice": "alice-pw", "bob": "bob-pw"}
	x := testenv.StartEjabberd(t, testenv.EjabberdOptions{Users: users})
	testTombstoneScenario(t, tombstoneServer{
		domain: x.Domain, c2s: x.C2SAddr, users: users, privVersion: 1,
		cfg: Config{
			JID: x.Component, Server: x.ComponentAddr, Secret: Secret(x.Secret), Domain: x.Domain,
			MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
			Sync: SyncConfig{Reach: true, VCard: VCardEnforce, Interval: time.Hour, EjabberdAPI: x.APIURL},
		},
	})
}
