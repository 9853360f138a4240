package identity_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/cusax-gw/cusax-gw/identity"
	"github.com/cusax-gw/cusax-gw/identity/storetest"
	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

// leakCheck verifies at the end of the test (after every other cleanup)
// that the test left no goroutine behind. Call it first.
func leakCheck(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// guard bounds every wait for an event: a failure guard, not a
// synchronisation.
const guard = 10 * time.Second

// longCtx returns a context with a generous deadline, which overrides the
// store's OpTimeout: the machine running the tests may be slow (miniredis
// runs Lua slowly under the race detector).
func longCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newMini starts a miniredis and returns it with a client for it, both
// closed when the test ends.
func newMini(t *testing.T) (*miniredis.Miniredis, redis.UniversalClient) {
	t.Helper()
	m := miniredis.RunT(t)
	// miniredis runs Lua slowly under the race detector: a long read
	// timeout, the store's OpTimeout bounds ordinary calls.
	c := redis.NewClient(&redis.Options{Addr: m.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1, ReadTimeout: time.Minute})
	t.Cleanup(func() { _ = c.Close() })
	return m, c
}

// newRedisStore returns a store on client, closed when the test ends.
func newRedisStore(t *testing.T, c redis.UniversalClient, opts identity.RedisOptions) *identity.RedisStore {
	t.Helper()
	s, err := identity.NewRedisStore(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestRedisStoreMiniredis runs the conformance suite against miniredis:
// fast, always.
func TestRedisStoreMiniredis(t *testing.T) {
	leakCheck(t)
	storetest.Run(t, func(t *testing.T) identity.Store {
		_, c := newMini(t)
		return newRedisStore(t, c, identity.RedisOptions{})
	})
}

func TestRedisTombstoneExpiryMiniredis(t *testing.T) {
	leakCheck(t)
	storetest.RunTombstoneExpiry(t, func(t *testing.T, maxAge time.Duration, now func() time.Time) identity.Store {
		_, c := newMini(t)
		return newRedisStore(t, c, identity.RedisOptions{TombstoneMaxAge: maxAge, Now: now})
	})
}

func alice() identity.Identity {
	return identity.Identity{
		JID:  "alice@example.com",
		SIP:  []string{"sip:alice@example.com"},
		Tel:  []string{"+15551230001"},
		Name: "Alice",
	}
}

func bob() identity.Identity {
	return identity.Identity{
		JID: "bob@example.com",
		SIP: []string{"sip:bob@example.com"},
		Tel: []string{"+15551230002", "+15551230003"},
	}
}

func user(i int) identity.Identity {
	return identity.Identity{
		JID:  fmt.Sprintf("u%06d@example.com", i),
		SIP:  []string{fmt.Sprintf("sip:u%06d@example.com", i)},
		Tel:  []string{fmt.Sprintf("+1555%07d", i)},
		Name: fmt.Sprintf("User %d", i),
	}
}

// next returns the next event from ch, failing after timeout.
func next(t *testing.T, ch <-chan identity.Event, timeout time.Duration) identity.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return ev
	case <-time.After(timeout):
		t.Fatalf("no event within %v", timeout)
	}
	return identity.Event{}
}

// wantConflict checks that err is a *ConflictError for key owned by owner.
func wantConflict(t *testing.T, err error, key identity.Key, owner string) {
	t.Helper()
	var ce *identity.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want a *ConflictError", err)
	}
	if !errors.Is(err, identity.ErrConflict) {
		t.Errorf("errors.Is(%v, ErrConflict) = false", err)
	}
	if ce.Key != key || ce.Owner != owner {
		t.Errorf("conflict = %v owned by %q, want %v owned by %q", ce.Key, ce.Owner, key, owner)
	}
}

func rev(t *testing.T, s identity.Store) uint64 {
	t.Helper()
	r, err := s.Rev(longCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRedisCRUD(t *testing.T) {
	leakCheck(t)
	_, c := newMini(t)
	s := newRedisStore(t, c, identity.RedisOptions{})
	ctx := longCtx(t)

	a, err := s.Create(ctx, alice())
	if err != nil {
		t.Fatal(err)
	}
	if a.Version != 1 || !a.Equal(alice()) {
		t.Errorf("Create = %+v, want alice at version 1", a)
	}
	for _, k := range alice().Keys() {
		got, err := s.Lookup(ctx, k)
		if err != nil {
			t.Fatalf("Lookup(%v): %v", k, err)
		}
		if !got.Equal(alice()) || got.Version != 1 {
			t.Errorf("Lookup(%v) = %+v, want alice at version 1", k, got)
		}
	}
	if _, err := s.Lookup(ctx, identity.Key{Kind: identity.KindTel, Value: "+15550000000"}); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("Lookup(unknown) err = %v, want ErrNotFound", err)
	}

	// Conflicts change nothing.
	_, err = s.Create(ctx, identity.Identity{JID: "alice@example.com"})
	wantConflict(t, err, identity.Key{Kind: identity.KindJID, Value: "alice@example.com"}, "alice@example.com")
	mallory := identity.Identity{JID: "mallory@example.com", Tel: []string{"+15559999999", "+15551230001"}}
	_, err = s.Create(ctx, mallory)
	wantConflict(t, err, identity.Key{Kind: identity.KindTel, Value: "+15551230001"}, "alice@example.com")
	_, err = s.Put(ctx, mallory)
	wantConflict(t, err, identity.Key{Kind: identity.KindTel, Value: "+15551230001"}, "alice@example.com")
	if r := rev(t, s); r != 1 {
		t.Errorf("Rev after conflicts = %d, want 1", r)
	}
	if _, err := s.Lookup(ctx, identity.Key{Kind: identity.KindTel, Value: "+15559999999"}); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("a conflicting write left a key behind: %v", err)
	}

	// Put replaces and frees keys the new value lacks.
	a2 := alice()
	a2.Tel = []string{"+15551230009"}
	a2.Name = "Alice B."
	got, err := s.Put(ctx, a2)
	if err != nil || got.Version != 2 {
		t.Fatalf("Put = %+v, %v; want version 2", got, err)
	}
	if _, err := s.Lookup(ctx, identity.Key{Kind: identity.KindTel, Value: "+15551230001"}); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("old number still owned: %v", err)
	}
	if got, err := s.Get(ctx, "alice@example.com"); err != nil || !got.Equal(a2) || got.Version != 2 {
		t.Errorf("Get = %+v, %v; want %+v at version 2", got, err, a2)
	}
	// Now the freed number can go to someone else.
	if _, err := s.Create(ctx, mallory); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, bob()); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Count(ctx); err != nil || n != 3 {
		t.Errorf("Count = %d, %v; want 3", n, err)
	}

	// Empty slices come back as they went in (nil or empty: Equal).
	if _, err := s.Put(ctx, identity.Identity{JID: "carol@example.com"}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, "carol@example.com"); err != nil || len(got.SIP)+len(got.Tel) != 0 {
		t.Errorf("Get(carol) = %+v, %v", got, err)
	}

	if err := s.Delete(ctx, "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "alice@example.com"); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("second Delete err = %v, want ErrNotFound", err)
	}
	if _, err := s.Lookup(ctx, identity.Key{Kind: identity.KindAOR, Value: "sip:alice@example.com"}); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("deleted AOR still owned: %v", err)
	}
	if _, err := s.Get(ctx, "alice@example.com"); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("Get(deleted) err = %v, want ErrNotFound", err)
	}
	if _, err := s.Create(ctx, identity.Identity{}); !errors.Is(err, identity.ErrInvalid) {
		t.Errorf("Create(no JID) err = %v, want ErrInvalid", err)
	}
}

func TestRedisList(t *testing.T) {
	leakCheck(t)
	_, c := newMini(t)
	s := newRedisStore(t, c, identity.RedisOptions{})
	ctx := longCtx(t)
	var want []string
	for i := range 25 {
		id := user(i)
		if _, err := s.Create(ctx, id); err != nil {
			t.Fatal(err)
		}
		want = append(want, id.JID)
	}
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("List does not end")
		}
		ids, next, err := s.List(ctx, after, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) > 10 {
			t.Fatalf("List returned %d > 10", len(ids))
		}
		for _, id := range ids {
			got = append(got, id.JID)
		}
		if next == "" {
			break
		}
		after = next
	}
	if !slices.Equal(got, want) {
		t.Errorf("List pages = %v, want %v", got, want)
	}
	all, next, err := s.List(ctx, "", 0)
	if err != nil || len(all) != 25 || next != "" {
		t.Errorf("List(limit 0) = %d identities, next %q, %v; want 25, \"\"", len(all), next, err)
	}
	ids, next, err := s.List(ctx, want[24], 10)
	if err != nil || len(ids) != 0 || next != "" {
		t.Errorf("List after the last = %v, %q, %v; want nothing", ids, next, err)
	}
}

// TestRedisImport covers both commits: one script for small batches, a
// WATCH/MULTI/EXEC transaction for large ones.
func TestRedisImport(t *testing.T) {
	for _, tc := range []struct {
		name      string
		scriptMax int
		n         int
	}{
		{"script", 1 << 20, 300},
		{"transaction", 0, 1500}, // more than one chunk
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			_, c := newMini(t)
			s := newRedisStore(t, c, identity.RedisOptions{})
			identity.SetRedisImportScriptMax(s, tc.scriptMax)
			testImport(t, s, tc.n)
		})
	}
}

func testImport(t *testing.T, s identity.Store, n int) {
	ctx := longCtx(t)
	if _, err := s.Create(ctx, alice()); err != nil {
		t.Fatal(err)
	}
	var batch []identity.Identity
	for i := range n {
		batch = append(batch, user(i))
	}

	// A conflict with a stored identity, at the end: nothing is written.
	bad := append(slices.Clone(batch), identity.Identity{JID: "x@example.com", SIP: []string{"sip:alice@example.com"}})
	err := s.Import(ctx, bad)
	wantConflict(t, err, identity.Key{Kind: identity.KindAOR, Value: "sip:alice@example.com"}, "alice@example.com")
	bad = append(slices.Clone(batch), alice())
	err = s.Import(ctx, bad)
	wantConflict(t, err, identity.Key{Kind: identity.KindJID, Value: "alice@example.com"}, "alice@example.com")
	// A conflict within the batch.
	bad = append(slices.Clone(batch), identity.Identity{JID: "y@example.com", Tel: []string{batch[7].Tel[0]}})
	err = s.Import(ctx, bad)
	wantConflict(t, err, identity.Key{Kind: identity.KindTel, Value: batch[7].Tel[0]}, batch[7].JID)
	bad = append(slices.Clone(batch), batch[9])
	err = s.Import(ctx, bad)
	wantConflict(t, err, identity.Key{Kind: identity.KindJID, Value: batch[9].JID}, batch[9].JID)
	if n, _ := s.Count(ctx); n != 1 {
		t.Errorf("Count after failed imports = %d, want 1", n)
	}
	if r := rev(t, s); r != 1 {
		t.Errorf("Rev after failed imports = %d, want 1", r)
	}

	ch, err := s.Watch(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Import(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Count(ctx); got != n+1 {
		t.Errorf("Count = %d, want %d", got, n+1)
	}
	if r := rev(t, s); r != uint64(n+1) {
		t.Errorf("Rev = %d, want %d", r, n+1)
	}
	for _, i := range []int{0, 123, n - 1} {
		got, err := s.Lookup(ctx, identity.Key{Kind: identity.KindTel, Value: batch[i].Tel[0]})
		if err != nil || !got.Equal(batch[i]) || got.Version != uint64(i+2) {
			t.Errorf("Lookup = %+v, %v; want %+v at version %d", got, err, batch[i], i+2)
		}
	}
	for i := range n {
		ev := next(t, ch, guard)
		if ev.Op != identity.OpPut || ev.Rev != uint64(i+2) || !ev.Identity.Equal(batch[i]) || ev.Identity.Version != ev.Rev {
			t.Fatalf("import event %d = %+v", i, ev)
		}
	}
	// Importing again conflicts on the first JID.
	err = s.Import(ctx, batch)
	wantConflict(t, err, identity.Key{Kind: identity.KindJID, Value: batch[0].JID}, batch[0].JID)
	if err := s.Import(ctx, nil); err != nil {
		t.Errorf("Import(nil) = %v", err)
	}
	if r := rev(t, s); r != uint64(n+1) {
		t.Errorf("Rev = %d, want %d", r, n+1)
	}
}

// TestRedisImportWriteInBetween lets another gateway claim a number
// between a large import's check and its EXEC: the EXEC writes nothing,
// the import starts over and reports the conflict.
func TestRedisImportWriteInBetween(t *testing.T) {
	leakCheck(t)
	_, c := newMini(t)
	s := newRedisStore(t, c, identity.RedisOptions{})
	other := newRedisStore(t, c, identity.RedisOptions{})
	identity.SetRedisImportScriptMax(s, 0)
	ctx := longCtx(t)
	batch := []identity.Identity{user(1), user(2), user(3)}
	attempts := 0
	identity.SetRedisImportHook(s, func() {
		attempts++
		if attempts == 1 {
			if _, err := other.Create(ctx, identity.Identity{JID: "other@example.com", Tel: []string{batch[2].Tel[0]}}); err != nil {
				t.Error(err)
			}
		}
	})
	err := s.Import(ctx, batch)
	wantConflict(t, err, identity.Key{Kind: identity.KindTel, Value: batch[2].Tel[0]}, "other@example.com")
	if attempts != 1 { // the second attempt stops at the check, before the hook
		t.Errorf("hook ran %d times, want 1", attempts)
	}
	if n, _ := s.Count(ctx); n != 1 {
		t.Errorf("Count = %d, want 1: the import wrote part of the batch", n)
	}
	if r := rev(t, s); r != 1 {
		t.Errorf("Rev = %d, want 1", r)
	}

	// A write in between that does not conflict: the retry succeeds.
	attempts = 0
	identity.SetRedisImportHook(s, func() {
		attempts++
		if attempts == 1 {
			if _, err := other.Create(ctx, bob()); err != nil {
				t.Error(err)
			}
		}
	})
	if err := s.Import(ctx, batch[:2]); err != nil {
		t.Fatal(err)
	}
	if attempts != 2 {
		t.Errorf("%d attempts, want 2", attempts)
	}
	if got, err := s.Get(ctx, batch[1].JID); err != nil || got.Version != 4 {
		t.Errorf("Get = %+v, %v; want version 4", got, err)
	}

	// Writes in between every time: the import gives up, unavailable.
	identity.SetRedisImportHook(s, func() {
		if _, err := other.Put(ctx, bob()); err != nil {
			t.Error(err)
		}
	})
	if err := s.Import(ctx, []identity.Identity{user(9)}); !errors.Is(err, identity.ErrUnavailable) {
		t.Errorf("Import under constant writes = %v, want ErrUnavailable", err)
	}
	if _, err := s.Get(ctx, user(9).JID); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("the abandoned import left %s: %v", user(9).JID, err)
	}
}

func TestRedisWatch(t *testing.T) {
	leakCheck(t)
	_, c := newMini(t)
	s := newRedisStore(t, c, identity.RedisOptions{})
	ctx, cancel := context.WithCancel(longCtx(t))
	defer cancel()
	if _, err := s.Create(ctx, alice()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, bob()); err != nil {
		t.Fatal(err)
	}

	// Replay from 0: both creations, then live events.
	ch, err := s.Watch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch, guard); ev.Op != identity.OpPut || ev.Rev != 1 || ev.JID != "alice@example.com" || !ev.Identity.Equal(alice()) || ev.Identity.Version != 1 {
		t.Errorf("event 1 = %+v", ev)
	}
	if ev := next(t, ch, guard); ev.Op != identity.OpPut || ev.Rev != 2 || ev.JID != "bob@example.com" {
		t.Errorf("event 2 = %+v", ev)
	}
	if err := s.Delete(ctx, "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch, guard); ev.Op != identity.OpDelete || ev.Rev != 3 || ev.JID != "alice@example.com" || !ev.Identity.Equal(alice()) {
		t.Errorf("event 3 = %+v", ev)
	}
	// An import arrives as one event per identity, in order.
	if err := s.Import(ctx, []identity.Identity{user(1), user(2)}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		if ev := next(t, ch, guard); ev.Op != identity.OpPut || ev.Rev != uint64(3+i) || ev.JID != user(i).JID || ev.Identity.Version != uint64(3+i) {
			t.Errorf("import event %d = %+v", i, ev)
		}
	}

	// From the current revision: only new events.
	ch2, err := s.Watch(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, user(3)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []<-chan identity.Event{ch, ch2} {
		if ev := next(t, c, guard); ev.Op != identity.OpPut || ev.Rev != 6 || ev.JID != user(3).JID {
			t.Errorf("event 6 = %+v", ev)
		}
	}

	// From the future (the store was reset): OpResync at the current rev.
	ch3, err := s.Watch(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch3, guard); ev.Op != identity.OpResync || ev.Rev != 6 {
		t.Errorf("Watch(100) first event = %+v, want resync at 6", ev)
	}

	cancel()
	for _, c := range []<-chan identity.Event{ch, ch2, ch3} {
		for range c {
		}
	}
}

func TestRedisWatchOldRevisionResyncs(t *testing.T) {
	leakCheck(t)
	_, c := newMini(t)
	s := newRedisStore(t, c, identity.RedisOptions{LogSize: 5})
	ctx := longCtx(t)
	for i := range 50 {
		if _, err := s.Create(ctx, user(i)); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := s.Watch(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch, guard); ev.Op != identity.OpResync || ev.Rev != 50 {
		t.Errorf("first event = %+v, want resync at 50", ev)
	}
	if _, err := s.Create(ctx, user(50)); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch, guard); ev.Op != identity.OpPut || ev.Rev != 51 {
		t.Errorf("event = %+v, want put at 51", ev)
	}
	// An import larger than the log: a watcher gets OpResync.
	var batch []identity.Identity
	for i := 100; i < 120; i++ {
		batch = append(batch, user(i))
	}
	if err := s.Import(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch, guard); ev.Op != identity.OpResync || ev.Rev != 71 {
		t.Errorf("after a large import: %+v, want resync at 71", ev)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-ch; ok {
		t.Error("watch channel open after Close")
	}
}

func TestRedisWatchSlowConsumer(t *testing.T) {
	leakCheck(t)
	_, c := newMini(t)
	s := newRedisStore(t, c, identity.RedisOptions{WatchBuffer: 8})
	ctx := longCtx(t)
	ch, err := s.Watch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	// One event read: the watcher follows the live feed (a watcher still
	// replaying the log reads it page by page as the consumer drains it).
	if _, err := s.Create(ctx, user(0)); err != nil {
		t.Fatal(err)
	}
	last := next(t, ch, guard)
	for i := 1; i < 40; i++ {
		if _, err := s.Create(ctx, user(i)); err != nil {
			t.Fatal(err)
		}
	}
	// Writers were never blocked; the consumer now finds a resync and
	// can follow on from its revision.
	resynced := false
	deadline := time.After(guard)
	for last.Rev < 40 {
		select {
		case ev := <-ch:
			if ev.Op == identity.OpResync {
				resynced = true
			} else if ev.Rev != last.Rev+1 {
				t.Fatalf("event %+v after %+v without resync", ev, last)
			}
			last = ev
		case <-deadline:
			t.Fatalf("stuck at %+v", last)
		}
	}
	if !resynced {
		t.Error("a consumer 40 events behind with a buffer of 8 got no OpResync")
	}

	// A replay from the log goes at the consumer's pace: no resync.
	ch2, err := s.Watch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		if ev := next(t, ch2, guard); ev.Op != identity.OpPut || ev.Rev != uint64(i+1) {
			t.Fatalf("replayed event %d = %+v", i, ev)
		}
	}
}

func TestRedisPrefixIsolation(t *testing.T) {
	leakCheck(t)
	_, c := newMini(t)
	a := newRedisStore(t, c, identity.RedisOptions{KeyPrefix: "a:"})
	b := newRedisStore(t, c, identity.RedisOptions{KeyPrefix: "b:"})
	testPrefixIsolation(t, a, b)
}

func testPrefixIsolation(t *testing.T, a, b identity.Store) {
	ctx := longCtx(t)
	chB, err := b.Watch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Create(ctx, alice()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, alice().JID); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("b sees a's identity: %v", err)
	}
	if _, err := b.Create(ctx, alice()); err != nil {
		t.Errorf("the same identity under another prefix: %v", err)
	}
	for _, s := range []identity.Store{a, b} {
		if n, _ := s.Count(ctx); n != 1 {
			t.Errorf("Count = %d, want 1", n)
		}
		if r := rev(t, s); r != 1 {
			t.Errorf("Rev = %d, want 1", r)
		}
	}
	if ev := next(t, chB, guard); ev.Rev != 1 || ev.Op != identity.OpPut {
		t.Errorf("b's watcher: %+v", ev)
	}
	select {
	case ev := <-chB:
		t.Errorf("b's watcher saw a second event %+v", ev)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestRedisClosed(t *testing.T) {
	leakCheck(t)
	_, c := newMini(t)
	s, err := identity.NewRedisStore(c, identity.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := longCtx(t)
	ch, err := s.Watch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-ch; ok {
		t.Error("watch channel open after Close")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	for name, err := range callEach(ctx, s, alice()) {
		if !errors.Is(err, identity.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	// The client is the caller's and still works.
	if err := c.Ping(ctx).Err(); err != nil {
		t.Errorf("client after store Close: %v", err)
	}
}

// callEach calls every Store method of s once (writes with id) and
// returns their errors by method name.
func callEach(ctx context.Context, s identity.Store, id identity.Identity) map[string]error {
	errs := map[string]error{}
	_, errs["Get"] = s.Get(ctx, id.JID)
	_, errs["Lookup"] = s.Lookup(ctx, identity.Key{Kind: identity.KindTel, Value: id.Tel[0]})
	_, errs["Create"] = s.Create(ctx, id)
	_, errs["Put"] = s.Put(ctx, id)
	errs["Delete"] = s.Delete(ctx, id.JID)
	_, _, errs["List"] = s.List(ctx, "", 10)
	errs["Import"] = s.Import(ctx, []identity.Identity{id})
	_, errs["Count"] = s.Count(ctx)
	_, errs["Rev"] = s.Rev(ctx)
	_, errs["Watch"] = s.Watch(ctx, 0)
	errs["Ping"] = s.Ping(ctx)
	return errs
}

func TestRedisUnavailable(t *testing.T) {
	leakCheck(t)
	m, c := newMini(t)
	s := newRedisStore(t, c, identity.RedisOptions{OpTimeout: 200 * time.Millisecond})
	ctx := context.Background() // OpTimeout applies: calls that fail do so fast
	long := longCtx(t)          // for calls that must succeed
	if _, err := s.Create(long, alice()); err != nil {
		t.Fatal(err)
	}
	ch, err := s.Watch(long, 1)
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	_, err = s.Get(ctx, "alice@example.com")
	if !errors.Is(err, identity.ErrUnavailable) {
		t.Fatalf("Get with Redis down = %v, want ErrUnavailable", err)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, `identity: redis get "alice@example.com": `) || !strings.HasSuffix(msg, ": identity: store unavailable") {
		t.Errorf("error text %q", msg)
	}
	for name, err := range callEach(ctx, s, bob()) {
		if !errors.Is(err, identity.ErrUnavailable) {
			t.Errorf("%s with Redis down = %v, want ErrUnavailable", name, err)
		}
	}
	// A caller's own cancellation is not "unavailable".
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Get(cctx, "alice@example.com"); !errors.Is(err, context.Canceled) || errors.Is(err, identity.ErrUnavailable) {
		t.Errorf("Get with cancelled ctx = %v, want context.Canceled only", err)
	}

	// Back (miniredis keeps its data): the watcher cannot know what it
	// missed and resyncs.
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	ev := next(t, ch, guard)
	if ev.Op != identity.OpResync || ev.Rev != 1 {
		t.Errorf("after restart: %+v, want resync at 1", ev)
	}
	if _, err := s.Create(long, bob()); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch, guard); ev.Op != identity.OpPut || ev.Rev != 2 || ev.JID != "bob@example.com" {
		t.Errorf("after resync: %+v, want put of bob at 2", ev)
	}
}

func TestOpenRedis(t *testing.T) {
	leakCheck(t)
	m := miniredis.RunT(t)
	m.RequireAuth("s3cret-pw")
	s, err := identity.OpenRedis("redis://:s3cret-pw@"+m.Addr()+"/0", identity.RedisOptions{KeyPrefix: "t:"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(longCtx(t)); err != nil {
		t.Errorf("Ping: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for _, u := range []string{
		"redis://:s3cret-pw@" + m.Addr() + "/0?bogus_option=1",
		"redis://:s3cret-pw@" + m.Addr() + "/x",
		"redis://:s3cret-pw@sentinel:26379/0?master_name=mymaster&bogus=1",
		"redis://:s3cret-pw@sentinel:26379/0?master_name=",
		"unix://:s3cret-pw@/x?password=s3cret-pw&bogus=s3cret-pw",
		"http://user:s3cret-pw@host/%zz",
		"ftp://user:s3cret-pw@host/",
	} {
		_, err := identity.OpenRedis(u, identity.RedisOptions{})
		if err == nil {
			t.Errorf("OpenRedis(%q) succeeded", u)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("OpenRedis error leaks the password: %v", err)
		}
	}

	// Sentinel URLs make a failover client; nothing is contacted yet.
	s, err = identity.OpenRedis("redis://:s3cret-pw@127.0.0.1:1/0?master_name=mymaster&addr=127.0.0.1:2", identity.RedisOptions{OpTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Ping(context.Background())
	if !errors.Is(err, identity.ErrUnavailable) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Ping via unreachable sentinels = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestRedisOptions(t *testing.T) {
	_, c := newMini(t)
	if _, err := identity.NewRedisStore(nil, identity.RedisOptions{}); err == nil {
		t.Error("NewRedisStore(nil) succeeded")
	}
	if _, err := identity.NewRedisStore(c, identity.RedisOptions{OpTimeout: -1}); err == nil {
		t.Error("negative OpTimeout accepted")
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	defer cc.Close()
	if _, err := identity.NewRedisStore(cc, identity.RedisOptions{}); err == nil {
		t.Error("cluster client with a prefix without hash tag accepted")
	}
	s, err := identity.NewRedisStore(cc, identity.RedisOptions{KeyPrefix: "{cusax}:"})
	if err != nil {
		t.Errorf("cluster client with hash tag: %v", err)
	} else {
		_ = s.Close()
	}
}

// TestRedisRacingWriters has writers on two stores race for the same
// numbers: every number ends with exactly one owner, and each writer that
// was told it won owns it.
func TestRedisRacingWriters(t *testing.T) {
	leakCheck(t)
	_, c1 := newMini(t)
	s1 := newRedisStore(t, c1, identity.RedisOptions{})
	s2 := newRedisStore(t, c1, identity.RedisOptions{})
	identity.SetRedisImportScriptMax(s2, 0) // s2's imports take the transaction path
	testRacingWriters(t, s1, s2, 20)
}

func testRacingWriters(t *testing.T, s1, s2 identity.Store, numbers int) {
	ctx := longCtx(t)
	const writers = 8
	winners := make([][]string, numbers)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range writers {
		s := s1
		if w%2 == 1 {
			s = s2
		}
		wg.Go(func() {
			for n := range numbers {
				id := identity.Identity{JID: fmt.Sprintf("w%d-%d@example.com", w, n), Tel: []string{fmt.Sprintf("+1555888%04d", n)}}
				var err error
				switch w % 3 {
				case 0:
					_, err = s.Create(ctx, id)
				case 1:
					_, err = s.Put(ctx, id)
				default:
					err = s.Import(ctx, []identity.Identity{id})
				}
				switch {
				case err == nil:
					mu.Lock()
					winners[n] = append(winners[n], id.JID)
					mu.Unlock()
				case errors.Is(err, identity.ErrConflict):
				default:
					t.Errorf("writer %d: %v", w, err)
				}
			}
		})
	}
	wg.Wait()
	for n := range numbers {
		if len(winners[n]) != 1 {
			t.Errorf("number %d: %d winners %v, want 1", n, len(winners[n]), winners[n])
			continue
		}
		for _, s := range []identity.Store{s1, s2} {
			got, err := s.Lookup(ctx, identity.Key{Kind: identity.KindTel, Value: fmt.Sprintf("+1555888%04d", n)})
			if err != nil || got.JID != winners[n][0] {
				t.Errorf("number %d owned by %q (%v), winner %q", n, got.JID, err, winners[n][0])
			}
		}
	}
	if n, err := s1.Count(ctx); err != nil || n != numbers {
		t.Errorf("Count = %d, %v; want %d (losers must leave nothing)", n, err, numbers)
	}
}

// Integration tests against a real redis-server (CUSAX_INTEGRATION=1).

// realClient returns a new client for r, closed when the test ends. Each
// store of a test gets its own client, as separate gateways would.
func realClient(t testing.TB, r *testenv.Redis) redis.UniversalClient {
	t.Helper()
	o, err := redis.ParseURL(r.URL)
	if err != nil {
		t.Fatal(err)
	}
	o.ContextTimeoutEnabled = true
	c := redis.NewClient(o)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestRedisStoreReal runs the conformance suite against a real
// redis-server, one fresh key prefix per store.
func TestRedisStoreReal(t *testing.T) {
	testenv.Require(t)
	leakCheck(t)
	r := testenv.StartRedis(t)
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) identity.Store {
		prefix := fmt.Sprintf("st%d:", n.Add(1))
		return newRedisStore(t, realClient(t, r), identity.RedisOptions{KeyPrefix: prefix})
	})
}

func TestRedisTombstoneExpiryReal(t *testing.T) {
	testenv.Require(t)
	leakCheck(t)
	r := testenv.StartRedis(t)
	storetest.RunTombstoneExpiry(t, func(t *testing.T, maxAge time.Duration, now func() time.Time) identity.Store {
		return newRedisStore(t, realClient(t, r), identity.RedisOptions{KeyPrefix: "expiry:", TombstoneMaxAge: maxAge, Now: now})
	})
}

// TestRedisTwoGateways has two stores with their own clients on one real
// Redis: the second sees the first's writes at once via Get and via its
// watcher.
func TestRedisTwoGateways(t *testing.T) {
	testenv.Require(t)
	leakCheck(t)
	r := testenv.StartRedis(t)
	s1 := newRedisStore(t, realClient(t, r), identity.RedisOptions{})
	s2 := newRedisStore(t, realClient(t, r), identity.RedisOptions{})
	ctx := longCtx(t)
	ch, err := s2.Watch(ctx, rev(t, s2))
	if err != nil {
		t.Fatal(err)
	}
	a, err := s1.Create(ctx, alice())
	if err != nil {
		t.Fatal(err)
	}
	got, err := s2.Get(ctx, alice().JID)
	if err != nil || !got.Equal(alice()) || got.Version != a.Version {
		t.Errorf("second gateway Get = %+v, %v; want %+v", got, err, a)
	}
	if ev := next(t, ch, guard); ev.Op != identity.OpPut || ev.Rev != a.Version || !ev.Identity.Equal(alice()) {
		t.Errorf("second gateway's watcher: %+v", ev)
	}
	if err := s1.Delete(ctx, alice().JID); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch, guard); ev.Op != identity.OpDelete || ev.JID != alice().JID {
		t.Errorf("second gateway's watcher: %+v", ev)
	}
	if err := s1.Import(ctx, []identity.Identity{user(1), user(2)}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		if ev := next(t, ch, guard); ev.Op != identity.OpPut || ev.JID != user(i).JID {
			t.Errorf("second gateway's watcher after import: %+v", ev)
		}
	}
}

// TestRedisTombstonesTwoGateways: a delete through one gateway leaves a
// tombstone every gateway sees; both may clear it (acks are idempotent),
// and a gateway acknowledging an older delete late leaves the tombstone
// of a newer one in place.
func TestRedisTombstonesTwoGateways(t *testing.T) {
	testenv.Require(t)
	leakCheck(t)
	r := testenv.StartRedis(t)
	s1 := newRedisStore(t, realClient(t, r), identity.RedisOptions{KeyPrefix: "two:"})
	s2 := newRedisStore(t, realClient(t, r), identity.RedisOptions{KeyPrefix: "two:"})
	ctx := longCtx(t)
	if _, err := s1.Create(ctx, alice()); err != nil {
		t.Fatal(err)
	}
	if err := s1.Delete(ctx, alice().JID); err != nil {
		t.Fatal(err)
	}
	ts, _, err := s2.Tombstones(ctx, "", 0)
	if err != nil || len(ts) != 1 || ts[0].JID != alice().JID {
		t.Fatalf("second gateway's Tombstones = %+v, %v", ts, err)
	}
	first := ts[0].Rev
	// Re-created and deleted again through the second gateway while the
	// first is still clearing the first delete.
	if _, err := s2.Create(ctx, alice()); err != nil {
		t.Fatal(err)
	}
	if err := s2.Delete(ctx, alice().JID); err != nil {
		t.Fatal(err)
	}
	if ok, err := s1.AckTombstone(ctx, alice().JID, first); err != nil || ok {
		t.Errorf("late ack of the first delete = %v, %v, want false", ok, err)
	}
	ts, _, err = s1.Tombstones(ctx, "", 0)
	if err != nil || len(ts) != 1 || ts[0].Rev <= first {
		t.Fatalf("Tombstones after the late ack = %+v, %v, want the second delete's", ts, err)
	}
	second := ts[0].Rev
	// Both gateways clear it: the first ack removes it, the second finds nothing.
	ok1, err1 := s1.AckTombstone(ctx, alice().JID, second)
	ok2, err2 := s2.AckTombstone(ctx, alice().JID, second)
	if err1 != nil || err2 != nil || !ok1 || ok2 {
		t.Errorf("acks of %d = %v, %v and %v, %v; want true then false", second, ok1, err1, ok2, err2)
	}
	if ts, _, err := s2.Tombstones(ctx, "", 0); err != nil || len(ts) != 0 {
		t.Errorf("Tombstones = %+v, %v, want none", ts, err)
	}
}

// TestRedisRacingWritersReal races writers of two gateways (own clients)
// for the same numbers on a real Redis.
func TestRedisRacingWritersReal(t *testing.T) {
	testenv.Require(t)
	leakCheck(t)
	r := testenv.StartRedis(t)
	s1 := newRedisStore(t, realClient(t, r), identity.RedisOptions{})
	s2 := newRedisStore(t, realClient(t, r), identity.RedisOptions{})
	identity.SetRedisImportScriptMax(s2, 0) // s2's imports take the transaction path
	testRacingWriters(t, s1, s2, 200)
}

func TestRedisPrefixIsolationReal(t *testing.T) {
	testenv.Require(t)
	leakCheck(t)
	r := testenv.StartRedis(t)
	c := realClient(t, r)
	a := newRedisStore(t, c, identity.RedisOptions{KeyPrefix: "gw-a:"})
	b := newRedisStore(t, c, identity.RedisOptions{KeyPrefix: "gw-b:"})
	testPrefixIsolation(t, a, b)
}

// TestRedisKillRestart kills the real server: writes fail with
// ErrUnavailable while it is down; after it comes back (empty: the rig runs
// it without persistence) the watcher sends OpResync, then new events.
func TestRedisKillRestart(t *testing.T) {
	testenv.Require(t)
	leakCheck(t)
	r := testenv.StartRedis(t)
	s := newRedisStore(t, realClient(t, r), identity.RedisOptions{OpTimeout: 300 * time.Millisecond})
	ctx := context.Background() // OpTimeout applies: calls that fail do so fast
	long := longCtx(t)          // for calls that must succeed
	for i := range 3 {
		if _, err := s.Create(long, user(i)); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := s.Watch(long, 3)
	if err != nil {
		t.Fatal(err)
	}
	// Make sure the watcher is live before the crash (otherwise its
	// catch-up may see the empty server first: a second, earlier resync).
	if _, err := s.Create(long, user(3)); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch, guard); ev.Op != identity.OpPut || ev.Rev != 4 {
		t.Fatalf("event = %+v, want put at 4", ev)
	}
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	_, err = s.Create(ctx, alice())
	if !errors.Is(err, identity.ErrUnavailable) {
		t.Fatalf("Create with Redis down = %v, want ErrUnavailable", err)
	}
	t.Logf("Create with Redis down: %v", err)
	if _, err := s.Lookup(ctx, identity.Key{Kind: identity.KindTel, Value: user(1).Tel[0]}); !errors.Is(err, identity.ErrUnavailable) {
		t.Errorf("Lookup with Redis down = %v, want ErrUnavailable", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, identity.ErrUnavailable) {
		t.Errorf("Ping with Redis down = %v, want ErrUnavailable", err)
	}
	select {
	case ev := <-ch:
		t.Fatalf("event while Redis is down: %+v", ev)
	default:
	}
	if err := r.Restart(); err != nil {
		t.Fatal(err)
	}
	ev := next(t, ch, guard)
	if ev.Op != identity.OpResync || ev.Rev != 0 {
		t.Fatalf("after restart: %+v, want OpResync at 0 (the server came back empty)", ev)
	}
	a, err := s.Create(long, alice())
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch, guard); ev.Op != identity.OpPut || ev.Rev != a.Version || ev.JID != alice().JID {
		t.Errorf("after resync: %+v, want put of alice at %d", ev, a.Version)
	}
}

// BenchmarkRedisLookup measures Lookup by number against a real Redis on
// loopback and reports the 99th percentile.
func BenchmarkRedisLookup(b *testing.B) {
	testenv.Require(b)
	r := testenv.StartRedis(b)
	s, err := identity.NewRedisStore(realClient(b, r), identity.RedisOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	const n = 10000
	var ids []identity.Identity
	for i := range n {
		ids = append(ids, user(i))
	}
	if err := s.Import(ctx, ids); err != nil {
		b.Fatal(err)
	}
	durs := make([]time.Duration, 0, 1<<16)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k := identity.Key{Kind: identity.KindTel, Value: ids[i%n].Tel[0]}
		start := time.Now()
		_, err := s.Lookup(ctx, k)
		durs = append(durs, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		i++
	}
	sort.Slice(durs, func(i, j int) bool { return durs[i] < durs[j] })
	b.ReportMetric(float64(durs[len(durs)*99/100].Nanoseconds()), "p99-ns")
	b.ReportMetric(float64(durs[len(durs)/2].Nanoseconds()), "p50-ns")
}

// BenchmarkRedisImport100k imports 100,000 identities into a real Redis
// (a fresh prefix per iteration) and reports the longest stall another
// client saw meanwhile: the commit script blocks Redis.
func BenchmarkRedisImport100k(b *testing.B) {
	testenv.Require(b)
	r := testenv.StartRedis(b)
	c := realClient(b, r)
	probe := realClient(b, r)
	const n = 100000
	ids := make([]identity.Identity, n)
	for i := range ids {
		ids[i] = user(i)
	}
	ctx := context.Background()
	var worst time.Duration
	iter := 0
	for b.Loop() {
		iter++
		s, err := identity.NewRedisStore(c, identity.RedisOptions{KeyPrefix: fmt.Sprintf("imp%d:", iter)})
		if err != nil {
			b.Fatal(err)
		}
		stop := make(chan struct{})
		stall := make(chan time.Duration)
		go func() {
			var w time.Duration
			for {
				select {
				case <-stop:
					stall <- w
					return
				default:
				}
				t0 := time.Now()
				_ = probe.Ping(ctx).Err()
				w = max(w, time.Since(t0))
				time.Sleep(time.Millisecond)
			}
		}()
		err = s.Import(ctx, ids)
		close(stop)
		worst = max(worst, <-stall)
		if err != nil {
			b.Fatal(err)
		}
		if got, err := s.Count(ctx); err != nil || got != n {
			b.Fatalf("Count = %d, %v", got, err)
		}
		_ = s.Close()
		b.StopTimer()
		_ = c.FlushDB(ctx).Err()
		b.StartTimer()
	}
	b.ReportMetric(float64(worst.Milliseconds()), "max-stall-ms")
}
