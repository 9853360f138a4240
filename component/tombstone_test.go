package component

import (
	"context"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/cusax-gw/cusax-gw/identity"
)

func tombstones(t *testing.T, s identity.Store) []identity.Tombstone {
	t.Helper()
	ts, _, err := s.Tombstones(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// restart returns a new Component on the same server and store, as a
// restarted daemon would be (nothing remembered of what it published).
func restart(t *testing.T, srv *fakeServer, ids Identities, sc SyncConfig) *Component {
	t.Helper()
	srv.mu.Lock()
	addr := ""
	if srv.ln != nil {
		addr = srv.ln.Addr().String()
	}
	srv.mu.Unlock()
	if addr == "" {
		addr = srv.listen(t)
	}
	cfg := testConfig(addr)
	cfg.AdvertTimeout = 50 * time.Millisecond
	cfg.Identities = ids
	cfg.Sync = sc
	c, _, _ := newTest(t, cfg)
	return c
}

// An identity deleted while the component was down: the reconcile on
// connect finds its tombstone, clears her reach node and (enforce) her
// numbers and AOR, keeps her name, and acknowledges the tombstone.
func TestSyncTombstoneWhileDown(t *testing.T) {
	sc := SyncConfig{Reach: true, VCard: VCardEnforce, Interval: time.Hour}
	srv, pep, c, store := newSyncTest(t, prosodyAdvert, sc, aliceID, bobID)
	r := start(t, c)
	waitCount(t, c, KindReach, ResultOK, 2)
	waitCount(t, c, KindVCard, ResultOK, 2)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}

	if err := store.Delete(t.Context(), aliceID.JID); err != nil {
		t.Fatal(err)
	}
	if ts := tombstones(t, store); len(ts) != 1 {
		t.Fatalf("tombstones after the delete = %+v", ts)
	}
	c2 := restart(t, srv, store, sc)
	start(t, c2)
	waitCount(t, c2, KindTombstone, ResultOK, 1)
	if got, want := pep.item(aliceID.JID, NodeReach), `<reach xmlns='urn:xmpp:reach:0'/>`; got != want {
		t.Errorf("alice's reach = %s, want %s", got, want)
	}
	if got, want := pep.item(aliceID.JID, NodeVCard4), `<vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'><fn><text>Alice</text></fn></vcard>`; got != want {
		t.Errorf("alice's vcard4 = %s, want %s", got, want)
	}
	if got := pep.item(bobID.JID, NodeReach); got != `<reach xmlns='urn:xmpp:reach:0'><addr uri='tel:+15551230002'/></reach>` {
		t.Errorf("bob's reach = %s", got)
	}
	if ts := tombstones(t, store); len(ts) != 0 {
		t.Errorf("tombstones after the clearing = %+v, want none (acknowledged)", ts)
	}

	// The next reconcile has nothing left to clear.
	_, writes := pep.stats()
	if err := store.Delete(t.Context(), bobID.JID); err != nil { // through the feed this time
		t.Fatal(err)
	}
	waitCount(t, c2, KindTombstone, ResultOK, 2)
	if ts := tombstones(t, store); len(ts) != 0 {
		t.Errorf("tombstones after a delete seen on the feed = %+v, want none", ts)
	}
	if _, w := pep.stats(); w <= writes {
		t.Errorf("bob's delete wrote nothing")
	}
}

var bobID = identity.Identity{JID: "bob@example.com", Tel: []string{"+15551230002"}, Name: "Bob"}

// In fill mode vCards are left alone; the reach node is still cleared.
// With reach publishing off too, there is nothing to clear: the tombstone
// is acknowledged without a write.
func TestSyncTombstoneModes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sc     SyncConfig
		result string
		reach  string
	}{
		{"fill", SyncConfig{Reach: true, VCard: VCardFill, Interval: time.Hour}, ResultOK, `<reach xmlns='urn:xmpp:reach:0'/>`},
		{"off", SyncConfig{Reach: false, VCard: VCardOff, Interval: time.Hour}, ResultUnchanged, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, pep, _, store := newSyncTest(t, prosodyAdvert, tc.sc, aliceID)
			vcard := `<vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'><fn><text>Alice</text></fn><tel><uri>tel:+15551230001</uri></tel></vcard>`
			pep.items[aliceID.JID+"|"+NodeVCard4] = vcard
			if err := store.Delete(t.Context(), aliceID.JID); err != nil {
				t.Fatal(err)
			}
			c := restart(t, srv, store, tc.sc)
			start(t, c)
			waitCount(t, c, KindTombstone, tc.result, 1)
			if got := pep.item(aliceID.JID, NodeVCard4); got != vcard {
				t.Errorf("vcard4 = %s, want it untouched", got)
			}
			if got := pep.item(aliceID.JID, NodeReach); got != tc.reach {
				t.Errorf("reach = %q, want %q", got, tc.reach)
			}
			if ts := tombstones(t, store); len(ts) != 0 {
				t.Errorf("tombstones = %+v, want none", ts)
			}
		})
	}
}

// Without a write path nothing can be cleared: the tombstone stays.
func TestSyncTombstoneNoWritePath(t *testing.T) {
	sc := SyncConfig{Reach: true, Interval: time.Hour}
	srv, _, _, store := newSyncTest(t, ejabberdAdvert, sc, aliceID)
	if err := store.Delete(t.Context(), aliceID.JID); err != nil {
		t.Fatal(err)
	}
	c := restart(t, srv, store, sc)
	start(t, c)
	waitCount(t, c, KindTombstone, ResultSkipped, 1)
	if ts := tombstones(t, store); len(ts) != 1 {
		t.Errorf("tombstones = %+v, want alice's kept", ts)
	}
}

// staleTombstones lists no identities and the tombstones it was given,
// whatever the store holds: a reconcile that listed both just before the
// JID was re-created (and whose change feed starts after the re-creation).
type staleTombstones struct {
	*identity.MemoryStore
	list []identity.Tombstone

	mu    sync.Mutex
	acked []string
}

func (s *staleTombstones) List(context.Context, string, int) ([]identity.Identity, string, error) {
	return nil, "", nil
}

func (s *staleTombstones) Tombstones(context.Context, string, int) ([]identity.Tombstone, string, error) {
	return s.list, "", nil
}

func (s *staleTombstones) AckTombstone(ctx context.Context, jid string, rev uint64) (bool, error) {
	s.mu.Lock()
	s.acked = append(s.acked, jid)
	s.mu.Unlock()
	return s.MemoryStore.AckTombstone(ctx, jid, rev)
}

// A tombstone listed before its JID was re-created never clears the live
// identity: the job looks the JID up and publishes what the map says.
func TestSyncTombstoneRecreated(t *testing.T) {
	sc := SyncConfig{Reach: true, VCard: VCardEnforce, Interval: time.Hour}
	srv, pep, _, store := newSyncTest(t, prosodyAdvert, sc)
	if _, err := store.Create(t.Context(), aliceID); err != nil {
		t.Fatal(err)
	}
	if err := store.Delete(t.Context(), aliceID.JID); err != nil {
		t.Fatal(err)
	}
	stale := tombstones(t, store)
	if _, err := store.Create(t.Context(), aliceID); err != nil {
		t.Fatal(err)
	}
	ids := &staleTombstones{MemoryStore: store, list: stale}
	c := restart(t, srv, ids, sc)
	r := start(t, c)
	// The job of the stale tombstone looks alice up and publishes her.
	waitCount(t, c, KindReach, ResultOK, 1)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if got, want := pep.item(aliceID.JID, NodeReach), `<reach xmlns='urn:xmpp:reach:0'><addr uri='sip:alice@example.com'/><addr uri='tel:+15551230001'/></reach>`; got != want {
		t.Errorf("alice's reach = %s, want %s", got, want)
	}
	if n := syncCount(c, KindTombstone, ResultOK) + syncCount(c, KindTombstone, ResultUnchanged); n != 0 {
		t.Errorf("%g tombstones cleared for a live identity", n)
	}
	if len(ids.acked) != 0 {
		t.Errorf("acknowledged %v for a live identity", ids.acked)
	}
}

// The ejabberd 23.01 path (HTTP API writes, vcard-temp read by the
// component itself) clears a deleted identity too.
func TestSyncTombstoneEjabberdAPIFake(t *testing.T) {
	f := &fakeEjabberd{vcards: map[string]string{
		aliceID.JID: `<vCard xmlns='vcard-temp'><FN>Alice Liddell</FN><TEL><WORK/><VOICE/><NUMBER>+15551230001</NUMBER></TEL></vCard>`,
	}, reach: map[string]string{
		aliceID.JID: `<reach xmlns='urn:xmpp:reach:0'><addr uri='tel:+15551230001'/></reach>`,
	}}
	api := httptest.NewServer(f)
	defer api.Close()
	srv := newFakeServer(testSecret, ejabberdAdvert)
	srv.respond = f.respond
	store := identity.NewMemoryStore()
	defer store.Close()
	if _, err := store.Put(t.Context(), aliceID); err != nil {
		t.Fatal(err)
	}
	if err := store.Delete(t.Context(), aliceID.JID); err != nil {
		t.Fatal(err)
	}
	c := restart(t, srv, store, SyncConfig{Reach: true, Interval: time.Hour, EjabberdAPI: api.URL + "/api"})
	start(t, c)
	waitCount(t, c, KindTombstone, ResultOK, 1)
	f.mu.Lock()
	gotV, gotR := f.vcards[aliceID.JID], f.reach[aliceID.JID]
	f.mu.Unlock()
	if want := `<vCard xmlns='vcard-temp'><FN>Alice Liddell</FN></vCard>`; gotV != want {
		t.Errorf("vcard-temp = %s, want %s", gotV, want)
	}
	if want := `<reach xmlns='urn:xmpp:reach:0'/>`; gotR != want {
		t.Errorf("reach = %s, want %s", gotR, want)
	}
	if ts := tombstones(t, store); len(ts) != 0 {
		t.Errorf("tombstones = %+v, want none", ts)
	}
}

// The queue never hands out a job older than one already handed out for
// the same JID, nor lets one replace a newer pending job: a reconcile page
// listed before a delete does not republish the deleted identity.
func TestSyncQueueDropsStale(t *testing.T) {
	q := newSyncQueue(8)
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	q.push(syncJob{jid: "a", deleted: true, rev: 5})
	q.push(syncJob{jid: "a", rev: 3}) // a stale listing: the delete stays
	j, _ := q.take(ctx)
	if !j.deleted || j.rev != 5 {
		t.Fatalf("take() = %+v, want the delete at 5", j)
	}
	q.done("a")
	q.push(syncJob{jid: "a", rev: 3}) // the same stale listing, after the delete ran
	q.push(syncJob{jid: "b", rev: 1})
	if j, _ := q.take(ctx); j.jid != "b" {
		t.Fatalf("take() = %+v, want b (a's job is older than its delete)", j)
	}
	q.done("b")
	q.push(syncJob{jid: "a", rev: 6}) // re-created
	if j, _ := q.take(ctx); j.jid != "a" || j.rev != 6 {
		t.Fatalf("take() = %+v, want a at 6", j)
	}
	q.done("a")
	q.push(syncJob{jid: "a"}) // presence: always looked up fresh
	if j, _ := q.take(ctx); j.jid != "a" || j.rev != 0 {
		t.Fatalf("take() = %+v, want a's presence re-check", j)
	}
	q.done("a")
	q.forget() // a resync: revisions may have started over
	q.push(syncJob{jid: "a", rev: 2})
	if j, _ := q.take(ctx); j.jid != "a" || j.rev != 2 {
		t.Fatalf("take() after forget = %+v, want a at 2", j)
	}
	q.done("a")
	if !q.idle() {
		t.Error("queue not idle")
	}
}
