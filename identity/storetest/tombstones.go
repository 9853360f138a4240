package storetest

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cusax-gw/cusax-gw/identity"
)

// Tombstones (see identity.Tombstone). What the suite requires:
//
//   - Delete leaves a tombstone with the JID, the revision of the delete
//     and the time of the delete; deleting the JID again after re-creating
//     it replaces it with the newer one.
//   - Create, Put and Import of the JID remove it.
//   - Tombstones pages like List (JID order, at most limit, cursor "" at
//     the end, limit <= 0 meaning all) and never shows a live identity;
//     List, Count, Get and Lookup never show a tombstone.
//   - AckTombstone(jid, rev) removes the tombstone only if its Rev <= rev
//     and reports whether it did; it changes neither the revision nor the
//     change feed.
//   - With a maximum age: a tombstone older than that is not listed, and a
//     later Delete removes it (RunTombstoneExpiry).

func tombstoneTests() []struct {
	name string
	fn   func(t *testing.T, open func(t *testing.T) identity.Store)
} {
	return []struct {
		name string
		fn   func(t *testing.T, open func(t *testing.T) identity.Store)
	}{
		{"TombstoneOnDelete", testTombstoneOnDelete},
		{"TombstoneSupersededByCreate", testTombstoneSuperseded},
		{"TombstoneAck", testTombstoneAck},
		{"TombstoneAckKeepsNewer", testTombstoneAckNewer},
		{"TombstonePaging", testTombstonePaging},
		{"TombstoneRaceRecreate", testTombstoneRace},
		{"TombstoneClosed", testTombstoneClosed},
	}
}

func allTombstones(t *testing.T, s identity.Store) []identity.Tombstone {
	t.Helper()
	ts, next, err := s.Tombstones(ctxFor(t), "", 0)
	if err != nil || next != "" {
		t.Fatalf("Tombstones(\"\", 0) = %v, %q, %v", ts, next, err)
	}
	return ts
}

func tombJIDs(ts []identity.Tombstone) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.JID
	}
	return out
}

func mustDelete(t *testing.T, s identity.Store, jid string) uint64 {
	t.Helper()
	ctx := ctxFor(t)
	if err := s.Delete(ctx, jid); err != nil {
		t.Fatalf("Delete(%s) = %v", jid, err)
	}
	return mustRev(t, ctx, s)
}

func testTombstoneOnDelete(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	if ts := allTombstones(t, s); len(ts) != 0 {
		t.Fatalf("fresh store: Tombstones = %v, want none", ts)
	}
	mustCreate(t, ctx, s, alice)
	mustCreate(t, ctx, s, bob)
	before := time.Now().Add(-time.Second) // Redis keeps milliseconds
	rev := mustDelete(t, s, alice.JID)
	after := time.Now().Add(time.Second)
	ts := allTombstones(t, s)
	if len(ts) != 1 || ts[0].JID != alice.JID || ts[0].Rev != rev {
		t.Fatalf("Tombstones after Delete(alice) at rev %d = %+v, want alice's at %d", rev, ts, rev)
	}
	if ts[0].Time.Before(before) || ts[0].Time.After(after) {
		t.Errorf("tombstone time = %v, want within [%v, %v]", ts[0].Time, before, after)
	}
	// A tombstone is not an identity: export (List), Count and the API's
	// Get and Lookup never show it.
	wantAbsent(t, ctx, s, alice.Keys()...)
	wantCount(t, ctx, s, 1)
	if got := listAll(t, ctx, s, 10); len(got) != 1 || got[0].JID != bob.JID {
		t.Errorf("List after Delete(alice) = %+v, want bob only", got)
	}
}

func testTombstoneSuperseded(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	carol := identity.Identity{JID: "carol@example.com", Tel: []string{"+15551230009"}}
	for _, id := range []identity.Identity{alice, bob, carol} {
		mustCreate(t, ctx, s, id)
		mustDelete(t, s, id.JID)
	}
	if got := tombJIDs(allTombstones(t, s)); !slices.Equal(got, []string{alice.JID, bob.JID, carol.JID}) {
		t.Fatalf("Tombstones = %v", got)
	}
	mustCreate(t, ctx, s, alice)
	mustPut(t, ctx, s, bob)
	if got := tombJIDs(allTombstones(t, s)); !slices.Equal(got, []string{carol.JID}) {
		t.Errorf("Tombstones after Create(alice), Put(bob) = %v, want carol's only", got)
	}

	// Import: a batch large enough for every commit path (Redis: > 256
	// takes the transaction), two of its JIDs with tombstones.
	mustCreate(t, ctx, s, person(5))
	mustCreate(t, ctx, s, person(250))
	mustDelete(t, s, jid(5))
	mustDelete(t, s, jid(250))
	batch := []identity.Identity{carol}
	for i := range 300 {
		batch = append(batch, person(i))
	}
	if err := s.Import(ctx, batch); err != nil {
		t.Fatalf("Import = %v", err)
	}
	if ts := allTombstones(t, s); len(ts) != 0 {
		t.Errorf("Tombstones after importing their JIDs = %+v, want none", ts)
	}
	// A conflicting import changes nothing, tombstones included.
	mustDelete(t, s, carol.JID)
	if err := s.Import(ctx, []identity.Identity{carol, person(7)}); !errors.Is(err, identity.ErrConflict) {
		t.Fatalf("Import(carol, existing) = %v, want a conflict", err)
	}
	if got := tombJIDs(allTombstones(t, s)); !slices.Equal(got, []string{carol.JID}) {
		t.Errorf("Tombstones after a failed import = %v, want carol's", got)
	}
}

func testTombstoneAck(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	mustCreate(t, ctx, s, alice)
	rev := mustDelete(t, s, alice.JID)
	ack := func(jid string, r uint64, want bool) {
		t.Helper()
		got, err := s.AckTombstone(ctx, jid, r)
		if err != nil || got != want {
			t.Fatalf("AckTombstone(%s, %d) = %v, %v, want %v", jid, r, got, err, want)
		}
	}
	ack(alice.JID, rev-1, false) // an older delete than the one recorded
	if len(allTombstones(t, s)) != 1 {
		t.Fatal("AckTombstone of an older revision removed the tombstone")
	}
	ack(bob.JID, rev, false) // none
	ack(alice.JID, rev, true)
	if ts := allTombstones(t, s); len(ts) != 0 {
		t.Fatalf("Tombstones after the ack = %+v", ts)
	}
	ack(alice.JID, rev, false) // twice: harmless
	if got := mustRev(t, ctx, s); got != rev {
		t.Errorf("Rev after acks = %d, want %d (acks are not writes)", got, rev)
	}
	// Acks emit no event: the next event a watcher sees is the next write.
	ch, err := s.Watch(ctx, rev)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, ctx, s, bob)
	mustDelete(t, s, bob.JID)
	ack(bob.JID, rev+2, true)
	mustCreate(t, ctx, s, alice)
	for _, want := range []identity.Op{identity.OpPut, identity.OpDelete, identity.OpPut} {
		if ev := next(t, ch); ev.Op != want {
			t.Fatalf("event %+v, want %s", ev, want)
		}
	}
}

func testTombstoneAckNewer(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	mustCreate(t, ctx, s, alice)
	r1 := mustDelete(t, s, alice.JID)
	mustCreate(t, ctx, s, alice)
	r2 := mustDelete(t, s, alice.JID)
	ts := allTombstones(t, s)
	if len(ts) != 1 || ts[0].Rev != r2 {
		t.Fatalf("Tombstones after two deletes = %+v, want one at %d", ts, r2)
	}
	// A gateway that cleared the first delete acknowledges late: the
	// second tombstone stays.
	if ok, err := s.AckTombstone(ctx, alice.JID, r1); err != nil || ok {
		t.Errorf("AckTombstone(alice, %d) = %v, %v, want false (newer tombstone at %d)", r1, ok, err, r2)
	}
	if ts := allTombstones(t, s); len(ts) != 1 || ts[0].Rev != r2 {
		t.Errorf("Tombstones = %+v, want alice's at %d", ts, r2)
	}
	if ok, err := s.AckTombstone(ctx, alice.JID, r2); err != nil || !ok {
		t.Errorf("AckTombstone(alice, %d) = %v, %v, want true", r2, ok, err)
	}
}

func testTombstonePaging(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	var want []string
	for _, i := range []int{4, 1, 6, 0, 3, 5, 2} {
		mustCreate(t, ctx, s, person(i))
	}
	mustCreate(t, ctx, s, person(9)) // stays alive
	for _, i := range []int{4, 1, 6, 0, 3, 5, 2} {
		mustDelete(t, s, jid(i))
	}
	for i := range 7 {
		want = append(want, jid(i))
	}
	for _, page := range []int{1, 3, 7, 8} {
		var got []string
		after := ""
		for range 20 {
			ts, next, err := s.Tombstones(ctx, after, page)
			if err != nil {
				t.Fatalf("Tombstones(%q, %d) = %v", after, page, err)
			}
			if len(ts) > page || len(ts) == 0 && next != "" {
				t.Fatalf("Tombstones(%q, %d) = %d tombstones, cursor %q", after, page, len(ts), next)
			}
			got = append(got, tombJIDs(ts)...)
			if next == "" {
				break
			}
			after = next
		}
		if !slices.Equal(got, want) {
			t.Errorf("pages of %d: %v, want %v", page, got, want)
		}
	}
}

// testTombstoneRace deletes and re-creates one JID while acks of every
// revision seen race with it: whenever the JID is live it has no
// tombstone, and when it ends deleted its last tombstone survives the
// acks of older deletes.
func testTombstoneRace(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	const rounds = 50
	revs := make(chan uint64, rounds)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(revs)
		for range rounds {
			if _, err := s.Create(ctx, alice); err != nil {
				t.Errorf("Create = %v", err)
				return
			}
			if ts, _, err := s.Tombstones(ctx, "", 0); err != nil || len(ts) != 0 {
				t.Errorf("Tombstones of a live JID = %+v, %v, want none", ts, err)
				return
			}
			if err := s.Delete(ctx, alice.JID); err != nil {
				t.Errorf("Delete = %v", err)
				return
			}
			ts, _, err := s.Tombstones(ctx, "", 0)
			if err != nil || len(ts) != 1 {
				t.Errorf("Tombstones = %+v, %v", ts, err)
				return
			}
			revs <- ts[0].Rev
		}
	})
	var last uint64
	for r := range revs {
		// Acknowledge the previous delete while the next ones happen.
		if last != 0 {
			if _, err := s.AckTombstone(ctx, alice.JID, last); err != nil {
				t.Fatalf("AckTombstone = %v", err)
			}
		}
		last = r
	}
	wg.Wait()
	ts := allTombstones(t, s)
	if len(ts) != 1 || ts[0].Rev != last {
		t.Fatalf("Tombstones = %+v, want alice's of the last delete (%d)", ts, last)
	}
	mustCreate(t, ctx, s, alice)
	if ok, err := s.AckTombstone(ctx, alice.JID, last); err != nil || ok {
		t.Errorf("AckTombstone of a re-created JID = %v, %v, want false", ok, err)
	}
	wantStored(t, ctx, s, alice, 0)
}

func testTombstoneClosed(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	mustCreate(t, ctx, s, alice)
	mustDelete(t, s, alice.JID)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Tombstones(ctx, "", 10); !errors.Is(err, identity.ErrClosed) {
		t.Errorf("Tombstones after Close = %v, want ErrClosed", err)
	}
	if _, err := s.AckTombstone(ctx, alice.JID, 1<<40); !errors.Is(err, identity.ErrClosed) {
		t.Errorf("AckTombstone after Close = %v, want ErrClosed", err)
	}
}

// Clock is a settable clock for RunTombstoneExpiry. Safe for concurrent
// use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Set sets the clock.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// RunTombstoneExpiry checks the maximum age of tombstones. open returns a
// fresh, empty store whose tombstones expire after maxAge on the clock
// now.
func RunTombstoneExpiry(t *testing.T, open func(t *testing.T, maxAge time.Duration, now func() time.Time) identity.Store) {
	t.Helper()
	ctx := ctxFor(t)
	const maxAge = time.Hour
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	clock := &Clock{now: t0}
	s := open(t, maxAge, clock.Now)
	mustCreate(t, ctx, s, alice)
	mustCreate(t, ctx, s, bob)
	mustDelete(t, s, alice.JID)
	ts := allTombstones(t, s)
	if len(ts) != 1 || !ts[0].Time.Equal(t0) {
		t.Fatalf("Tombstones = %+v, want alice's at %v", ts, t0)
	}
	clock.Set(t0.Add(maxAge - time.Second))
	if got := tombJIDs(allTombstones(t, s)); !slices.Equal(got, []string{alice.JID}) {
		t.Errorf("before the maximum age: Tombstones = %v, want alice's", got)
	}
	clock.Set(t0.Add(maxAge + time.Second))
	if ts := allTombstones(t, s); len(ts) != 0 {
		t.Errorf("after the maximum age: Tombstones = %+v, want none", ts)
	}
	// The next Delete removes the expired one: even with the clock turned
	// back, only bob's is left.
	mustDelete(t, s, bob.JID)
	clock.Set(t0)
	if got := tombJIDs(allTombstones(t, s)); !slices.Equal(got, []string{bob.JID}) {
		t.Errorf("after a later Delete: Tombstones = %v, want bob's only (alice's purged)", got)
	}
}
