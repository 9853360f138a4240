// Package storetest is the conformance suite for identity.Store
// implementations: every backend (memory, embedded bbolt, Redis) runs Run
// and passes it unchanged.
//
// What the suite requires beyond the Store interface's comments:
//
//   - A fresh store is empty; its revision may start anywhere.
//   - Every successful Create, Put and Delete increments the revision by
//     exactly one and emits one event with that revision; a failed write
//     changes nothing, not even the revision. Import increments it by at
//     least one when it stores anything.
//   - Create, Put and Import return or store Identity.Version set to the
//     revision of the write; Get and Lookup return it.
//   - A conflicting Create names the JID (Key{KindJID, jid}, Owner jid);
//     a conflicting AOR or number names that key and its owner's JID.
//     Within an Import batch the owner is the earlier row's JID.
//   - List pages hold at most limit identities in ascending byte order of
//     the JID; the cursor is "" after the last page. An empty page comes
//     only as the last one.
//   - Watch(from) with from equal to the current revision starts with the
//     next change (never OpResync). With an older from, the store either
//     replays every change after from, in order, or sends one OpResync
//     (then continues with the changes after that event's Rev). A consumer
//     that applies OpPut/OpDelete and reloads with List on OpResync ends
//     with exactly the store's content. Import may show up as one OpPut
//     per identity or as an OpResync.
//   - OpDelete events carry the JID; their Identity is either empty or the
//     deleted value.
//   - Returned identities do not alias the store's memory.
//   - After Close every method returns an error matching
//     identity.ErrClosed, open Watch channels close, and Close may be
//     called again (the suite's open func usually registers a Close too).
//   - A context that is already cancelled makes Get and Create fail with
//     an error matching context.Canceled.
//
// Digest credentials and tombstones have their own requirements: see
// credentials.go and tombstones.go.
//
// The suite uses no sleeps for synchronisation; waits are guarded by a
// generous timeout (Guard) that only turns a hang into a failure.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cusax-gw/cusax-gw/identity"
)

// Guard bounds every wait of the suite (an event, a channel close). It is a
// failure guard, not a synchronisation.
const Guard = 10 * time.Second

// opTimeout bounds each subtest's context.
const opTimeout = 2 * time.Minute

// Run runs the conformance suite. open returns a fresh, empty store and
// registers its own cleanup (t.Cleanup); Run calls it once per subtest,
// sometimes twice.
func Run(t *testing.T, open func(t *testing.T) identity.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, open func(t *testing.T) identity.Store)
	}{
		{"Empty", testEmpty},
		{"CreateGetLookup", testCreateGetLookup},
		{"NoAliasing", testNoAliasing},
		{"CreateConflictJID", testCreateConflictJID},
		{"CreateConflictAOR", testCreateConflictAOR},
		{"CreateConflictTel", testCreateConflictTel},
		{"PutCreates", testPutCreates},
		{"PutReplacesAndFreesKeys", testPutReplaces},
		{"PutConflictChangesNothing", testPutConflict},
		{"Delete", testDelete},
		{"List", testList},
		{"ImportSuccess", testImportSuccess},
		{"ImportConflictWithinBatch", testImportConflictBatch},
		{"ImportConflictWithStored", testImportConflictStored},
		{"Rev", testRev},
		{"WatchEvents", testWatchEvents},
		{"WatchFromOlderRevision", testWatchFrom},
		{"WatchFromZero", testWatchFromZero},
		{"WatchImport", testWatchImport},
		{"WatchTwoWatchers", testWatchTwo},
		{"WatchClosesOnCancel", testWatchCancel},
		{"WatchClosesOnClose", testWatchClose},
		{"RaceSameNumberCreate", testRaceCreate},
		{"RaceSameNumberPut", testRacePut},
		{"RaceSameJID", testRaceJID},
		{"ConcurrentStress", testStress},
		{"Ping", testPing},
		{"CancelledContext", testCancelled},
		{"Closed", testClosed},
		{"CredentialSetGet", testCredentialSetGet},
		{"CredentialNotOwned", testCredentialNotOwned},
		{"CredentialDeletedWithIdentity", testCredentialDeletedWithIdentity},
		{"CredentialFreedByPut", testCredentialFreedByPut},
		{"CredentialDelete", testCredentialDelete},
		{"CredentialClosed", testCredentialClosed},
	}
	tests = append(tests, tombstoneTests()...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

// Fixture values, in normalised form.
func jid(n int) string { return fmt.Sprintf("user%03d@example.com", n) }
func aor(n int) string { return fmt.Sprintf("sip:user%03d@example.com", n) }
func tel(n int) string { return fmt.Sprintf("+1555200%04d", n) }

func person(n int) identity.Identity {
	return identity.Identity{JID: jid(n), SIP: []string{aor(n)}, Tel: []string{tel(n)}, Name: fmt.Sprintf("User %d", n)}
}

var alice = identity.Identity{
	JID:  "alice@example.com",
	SIP:  []string{"sip:alice@example.com", "sip:alice@pbx.example.com"},
	Tel:  []string{"+15551230001", "+15551230002"},
	Name: "Alice",
}

var bob = identity.Identity{
	JID:  "bob@example.com",
	SIP:  []string{"sip:bob@example.com"},
	Tel:  []string{"+15551230003"},
	Name: "Bob",
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

func mustCreate(t *testing.T, ctx context.Context, s identity.Store, id identity.Identity) identity.Identity {
	t.Helper()
	got, err := s.Create(ctx, id)
	if err != nil {
		t.Fatalf("Create(%s) = %v", id.JID, err)
	}
	if !got.Equal(id) {
		t.Fatalf("Create(%s) = %+v, want %+v", id.JID, got, id)
	}
	return got
}

func mustRev(t *testing.T, ctx context.Context, s identity.Store) uint64 {
	t.Helper()
	r, err := s.Rev(ctx)
	if err != nil {
		t.Fatalf("Rev = %v", err)
	}
	return r
}

// wantStored checks that every key of want resolves to want (Get and
// Lookup), with the version given (0: any).
func wantStored(t *testing.T, ctx context.Context, s identity.Store, want identity.Identity, version uint64) {
	t.Helper()
	got, err := s.Get(ctx, want.JID)
	if err != nil {
		t.Fatalf("Get(%s) = %v, want %+v", want.JID, err, want)
	}
	if !got.Equal(want) {
		t.Fatalf("Get(%s) = %+v, want %+v", want.JID, got, want)
	}
	if version != 0 && got.Version != version {
		t.Errorf("Get(%s).Version = %d, want %d", want.JID, got.Version, version)
	}
	if got.Version == 0 {
		t.Errorf("Get(%s).Version = 0, want the revision of its last write", want.JID)
	}
	for _, k := range want.Keys() {
		got, err := s.Lookup(ctx, k)
		if err != nil {
			t.Fatalf("Lookup(%s) = %v, want %s", k, err, want.JID)
		}
		if !got.Equal(want) {
			t.Fatalf("Lookup(%s) = %+v, want %+v", k, got, want)
		}
		if version != 0 && got.Version != version {
			t.Errorf("Lookup(%s).Version = %d, want %d", k, got.Version, version)
		}
	}
}

// wantAbsent checks that none of keys resolves.
func wantAbsent(t *testing.T, ctx context.Context, s identity.Store, keys ...identity.Key) {
	t.Helper()
	for _, k := range keys {
		if got, err := s.Lookup(ctx, k); !errors.Is(err, identity.ErrNotFound) {
			t.Errorf("Lookup(%s) = %+v, %v, want ErrNotFound", k, got, err)
		}
		if k.Kind == identity.KindJID {
			if got, err := s.Get(ctx, k.Value); !errors.Is(err, identity.ErrNotFound) {
				t.Errorf("Get(%s) = %+v, %v, want ErrNotFound", k.Value, got, err)
			}
		}
	}
}

func wantConflict(t *testing.T, what string, err error, key identity.Key, owner string) {
	t.Helper()
	if !errors.Is(err, identity.ErrConflict) {
		t.Fatalf("%s = %v, want ErrConflict on %s owned by %s", what, err, key, owner)
	}
	var ce *identity.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("%s = %v (%T), want a *identity.ConflictError", what, err, err)
	}
	if ce.Key != key || ce.Owner != owner {
		t.Errorf("%s: conflict on %s owned by %q, want %s owned by %q", what, ce.Key, ce.Owner, key, owner)
	}
}

func wantCount(t *testing.T, ctx context.Context, s identity.Store, want int) {
	t.Helper()
	n, err := s.Count(ctx)
	if err != nil || n != want {
		t.Errorf("Count = %d, %v, want %d", n, err, want)
	}
}

func listAll(t testing.TB, ctx context.Context, s identity.Store, page int) []identity.Identity {
	t.Helper()
	var all []identity.Identity
	after := ""
	for range 1 << 20 {
		ids, next, err := s.List(ctx, after, page)
		if err != nil {
			t.Fatalf("List(%q, %d) = %v", after, page, err)
		}
		if len(ids) > page {
			t.Fatalf("List(%q, %d) returned %d identities", after, page, len(ids))
		}
		if len(ids) == 0 && next != "" {
			t.Fatalf("List(%q, %d) = empty page with cursor %q", after, page, next)
		}
		all = append(all, ids...)
		if next == "" {
			return all
		}
		after = next
	}
	t.Fatal("List: cursor never ended")
	return nil
}

func testEmpty(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	wantAbsent(t, ctx, s, alice.Keys()...)
	wantCount(t, ctx, s, 0)
	ids, next, err := s.List(ctx, "", 10)
	if err != nil || len(ids) != 0 || next != "" {
		t.Errorf("List on empty store = %v, %q, %v, want nothing", ids, next, err)
	}
	if err := s.Delete(ctx, alice.JID); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("Delete(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := s.Lookup(ctx, identity.Key{Kind: identity.KindTel, Value: ""}); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("Lookup(empty tel) = %v, want ErrNotFound", err)
	}
}

func testCreateGetLookup(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	got := mustCreate(t, ctx, s, alice)
	if rev := mustRev(t, ctx, s); got.Version != rev {
		t.Errorf("Create().Version = %d, want the new revision %d", got.Version, rev)
	}
	wantStored(t, ctx, s, alice, got.Version)
	// An identity with only a JID.
	bare := identity.Identity{JID: "carol@example.com"}
	mustCreate(t, ctx, s, bare)
	wantStored(t, ctx, s, bare, 0)
	wantCount(t, ctx, s, 2)
	wantAbsent(t, ctx, s, bob.Keys()...)
}

func testNoAliasing(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	in := alice.Clone()
	got := mustCreate(t, ctx, s, in)
	in.SIP[0], in.Tel[0] = "sip:mallory@example.com", "+15559999999"
	got.SIP[1] = "sip:changed@example.com"
	g2, err := s.Get(ctx, alice.JID)
	if err != nil {
		t.Fatal(err)
	}
	g2.Tel[1] = "+15558888888"
	wantStored(t, ctx, s, alice, 0)
}

func testCreateConflictJID(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	a := mustCreate(t, ctx, s, alice)
	rev := mustRev(t, ctx, s)
	again := identity.Identity{JID: alice.JID, SIP: []string{"sip:other@example.com"}, Tel: []string{"+15551239999"}, Name: "Other"}
	_, err := s.Create(ctx, again)
	wantConflict(t, "Create(existing JID)", err, identity.Key{Kind: identity.KindJID, Value: alice.JID}, alice.JID)
	wantStored(t, ctx, s, alice, a.Version)
	wantAbsent(t, ctx, s, again.Keys()[1:]...)
	if r := mustRev(t, ctx, s); r != rev {
		t.Errorf("Rev after a failed Create = %d, want %d", r, rev)
	}
	wantCount(t, ctx, s, 1)
}

func testCreateConflictAOR(t *testing.T, open func(*testing.T) identity.Store) {
	testCreateConflictKey(t, open, identity.Key{Kind: identity.KindAOR, Value: alice.SIP[1]})
}

func testCreateConflictTel(t *testing.T, open func(*testing.T) identity.Store) {
	testCreateConflictKey(t, open, identity.Key{Kind: identity.KindTel, Value: alice.Tel[1]})
}

func testCreateConflictKey(t *testing.T, open func(*testing.T) identity.Store, contested identity.Key) {
	ctx := ctxFor(t)
	s := open(t)
	a := mustCreate(t, ctx, s, alice)
	rev := mustRev(t, ctx, s)
	b := bob.Clone()
	// The contested key comes last, so a store that writes as it checks
	// would already have claimed the others.
	if contested.Kind == identity.KindAOR {
		b.SIP = append(b.SIP, contested.Value)
	} else {
		b.Tel = append(b.Tel, contested.Value)
	}
	_, err := s.Create(ctx, b)
	wantConflict(t, "Create(bob with alice's "+contested.Kind.String()+")", err, contested, alice.JID)
	wantStored(t, ctx, s, alice, a.Version)
	wantAbsent(t, ctx, s, bob.Keys()...)
	if r := mustRev(t, ctx, s); r != rev {
		t.Errorf("Rev after a failed Create = %d, want %d", r, rev)
	}
	wantCount(t, ctx, s, 1)
}

func testPutCreates(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	got, err := s.Put(ctx, alice)
	if err != nil || !got.Equal(alice) {
		t.Fatalf("Put(new) = %+v, %v, want %+v", got, err, alice)
	}
	wantStored(t, ctx, s, alice, got.Version)
	wantCount(t, ctx, s, 1)
}

func testPutReplaces(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	a := mustCreate(t, ctx, s, alice)
	b := mustCreate(t, ctx, s, bob)
	repl := identity.Identity{
		JID:  alice.JID,
		SIP:  []string{"sip:alice.new@example.com", alice.SIP[1]},
		Tel:  []string{"+15551230009"},
		Name: "Alice Replaced",
	}
	got, err := s.Put(ctx, repl)
	if err != nil || !got.Equal(repl) {
		t.Fatalf("Put(replace) = %+v, %v, want %+v", got, err, repl)
	}
	if got.Version <= a.Version {
		t.Errorf("Put().Version = %d, want > %d", got.Version, a.Version)
	}
	wantStored(t, ctx, s, repl, got.Version)
	wantStored(t, ctx, s, bob, b.Version)
	freed := []identity.Key{
		{Kind: identity.KindAOR, Value: alice.SIP[0]},
		{Kind: identity.KindTel, Value: alice.Tel[0]},
		{Kind: identity.KindTel, Value: alice.Tel[1]},
	}
	wantAbsent(t, ctx, s, freed...)
	// The freed keys can be claimed by someone else.
	carol := identity.Identity{JID: "carol@example.com", SIP: []string{alice.SIP[0]}, Tel: []string{alice.Tel[1], alice.Tel[0]}}
	mustCreate(t, ctx, s, carol)
	wantStored(t, ctx, s, carol, 0)
	// And by Put of an existing identity.
	b2 := bob.Clone()
	b2.SIP = nil
	mustPut(t, ctx, s, b2)
	b3 := identity.Identity{JID: bob.JID, SIP: []string{"sip:bob2@example.com"}, Tel: bob.Tel}
	mustPut(t, ctx, s, b3)
	wantAbsent(t, ctx, s, identity.Key{Kind: identity.KindAOR, Value: bob.SIP[0]})
	wantStored(t, ctx, s, b3, 0)
	wantStored(t, ctx, s, repl, got.Version)
	wantCount(t, ctx, s, 3)
}

func mustPut(t *testing.T, ctx context.Context, s identity.Store, id identity.Identity) identity.Identity {
	t.Helper()
	got, err := s.Put(ctx, id)
	if err != nil || !got.Equal(id) {
		t.Fatalf("Put(%+v) = %+v, %v", id, got, err)
	}
	return got
}

func testPutConflict(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	a := mustCreate(t, ctx, s, alice)
	b := mustCreate(t, ctx, s, bob)
	rev := mustRev(t, ctx, s)

	// Bob drops his own keys and takes one of Alice's: nothing may change,
	// in particular his old keys stay his.
	steal := identity.Identity{JID: bob.JID, SIP: []string{"sip:bob.new@example.com"}, Tel: []string{"+15551230010", alice.Tel[0]}, Name: "Bob New"}
	_, err := s.Put(ctx, steal)
	wantConflict(t, "Put(bob with alice's number)", err, identity.Key{Kind: identity.KindTel, Value: alice.Tel[0]}, alice.JID)
	steal2 := identity.Identity{JID: bob.JID, SIP: []string{alice.SIP[0]}}
	_, err = s.Put(ctx, steal2)
	wantConflict(t, "Put(bob with alice's AOR)", err, identity.Key{Kind: identity.KindAOR, Value: alice.SIP[0]}, alice.JID)
	// A new identity via Put that steals a key.
	steal3 := identity.Identity{JID: "carol@example.com", Tel: []string{bob.Tel[0]}}
	_, err = s.Put(ctx, steal3)
	wantConflict(t, "Put(new carol with bob's number)", err, identity.Key{Kind: identity.KindTel, Value: bob.Tel[0]}, bob.JID)

	wantStored(t, ctx, s, alice, a.Version)
	wantStored(t, ctx, s, bob, b.Version)
	wantAbsent(t, ctx, s,
		identity.Key{Kind: identity.KindAOR, Value: "sip:bob.new@example.com"},
		identity.Key{Kind: identity.KindTel, Value: "+15551230010"},
		identity.Key{Kind: identity.KindJID, Value: "carol@example.com"})
	if r := mustRev(t, ctx, s); r != rev {
		t.Errorf("Rev after failed Puts = %d, want %d", r, rev)
	}
	wantCount(t, ctx, s, 2)
}

func testDelete(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	mustCreate(t, ctx, s, alice)
	b := mustCreate(t, ctx, s, bob)
	rev := mustRev(t, ctx, s)
	if err := s.Delete(ctx, alice.JID); err != nil {
		t.Fatalf("Delete = %v", err)
	}
	if r := mustRev(t, ctx, s); r != rev+1 {
		t.Errorf("Rev after Delete = %d, want %d", r, rev+1)
	}
	wantAbsent(t, ctx, s, alice.Keys()...)
	wantStored(t, ctx, s, bob, b.Version)
	wantCount(t, ctx, s, 1)
	if err := s.Delete(ctx, alice.JID); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
	if r := mustRev(t, ctx, s); r != rev+1 {
		t.Errorf("Rev after a failed Delete = %d, want %d", r, rev+1)
	}
	// Everything alice had is free again.
	carol := identity.Identity{JID: "carol@example.com", SIP: alice.SIP, Tel: alice.Tel, Name: "Carol"}
	mustCreate(t, ctx, s, carol)
	wantStored(t, ctx, s, carol, 0)
	// And alice can come back with new keys.
	mustCreate(t, ctx, s, identity.Identity{JID: alice.JID})
	wantCount(t, ctx, s, 3)
}

func testList(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	const n = 25
	want := make([]identity.Identity, n)
	for i := range n {
		want[i] = person(i)
	}
	// Insert in a scrambled order.
	for _, i := range rand.New(rand.NewPCG(1, 2)).Perm(n) {
		mustCreate(t, ctx, s, want[i])
	}
	var got []identity.Identity
	var sizes []int
	after := ""
	for range n + 1 {
		page, next, err := s.List(ctx, after, 10)
		if err != nil {
			t.Fatalf("List(%q, 10) = %v", after, err)
		}
		sizes = append(sizes, len(page))
		got = append(got, page...)
		if next == "" {
			break
		}
		if next != page[len(page)-1].JID {
			t.Logf("List(%q, 10) cursor %q is not the page's last JID %q (allowed, but unusual)", after, next, page[len(page)-1].JID)
		}
		after = next
	}
	if !slices.Equal(sizes, []int{10, 10, 5}) {
		t.Errorf("List page sizes = %v, want [10 10 5]", sizes)
	}
	checkList(t, got, want)

	// Larger limit than content.
	all, next, err := s.List(ctx, "", 1000)
	if err != nil || next != "" {
		t.Fatalf("List(\"\", 1000) = %d, %q, %v, want all and no cursor", len(all), next, err)
	}
	checkList(t, all, want)
	// Cursors need not name a stored JID: "user010~" sorts between user010@… and user011@….
	page, _, err := s.List(ctx, "user010~", 3)
	if err != nil {
		t.Fatal(err)
	}
	checkList(t, page, want[11:14])
	page, next, err = s.List(ctx, jid(n-1), 10)
	if err != nil || len(page) != 0 || next != "" {
		t.Errorf("List(after last) = %d, %q, %v, want nothing", len(page), next, err)
	}
	// Exactly a full last page.
	if err := s.Delete(ctx, jid(n-1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, jid(n-2)); err != nil {
		t.Fatal(err)
	}
	if n := len(listAll(t, ctx, s, 1)); n != 23 {
		t.Errorf("List in pages of 1 = %d identities, want 23", n)
	}
	checkList(t, listAll(t, ctx, s, 23), want[:23])
}

func checkList(t *testing.T, got, want []identity.Identity) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("List returned %d identities, want %d", len(got), len(want))
	}
	for i := range got {
		if !got[i].Equal(want[i]) {
			t.Errorf("List[%d] = %+v, want %+v", i, got[i], want[i])
		}
		if got[i].Version == 0 {
			t.Errorf("List[%d].Version = 0", i)
		}
	}
}

func testImportSuccess(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	mustCreate(t, ctx, s, alice)
	rev := mustRev(t, ctx, s)
	const n = 200
	batch := make([]identity.Identity, n)
	for i := range n {
		batch[i] = person(i)
	}
	batch[7].SIP = append(batch[7].SIP, "sip:seven@pbx.example.com")
	batch[9].Tel = nil
	if err := s.Import(ctx, batch); err != nil {
		t.Fatalf("Import(%d) = %v", n, err)
	}
	after := mustRev(t, ctx, s)
	if after <= rev {
		t.Errorf("Rev after Import = %d, want > %d", after, rev)
	}
	wantCount(t, ctx, s, n+1)
	for _, id := range batch {
		wantStored(t, ctx, s, id, 0)
		got, _ := s.Get(ctx, id.JID)
		if got.Version <= rev || got.Version > after {
			t.Errorf("imported %s has Version %d, want in (%d, %d]", id.JID, got.Version, rev, after)
		}
	}
	if err := s.Import(ctx, nil); err != nil {
		t.Errorf("Import(nil) = %v", err)
	}
	wantCount(t, ctx, s, n+1)
}

func testImportConflictBatch(t *testing.T, open func(*testing.T) identity.Store) {
	testImportConflicts(t, open, []importConflict{
		{"Import(same number twice)", func(b []identity.Identity) { b[40].Tel = append(b[40].Tel, tel(10)) },
			identity.Key{Kind: identity.KindTel, Value: tel(10)}, jid(10)},
		{"Import(same AOR twice)", func(b []identity.Identity) { b[41].SIP = []string{aor(3)} },
			identity.Key{Kind: identity.KindAOR, Value: aor(3)}, jid(3)},
		{"Import(same JID twice)", func(b []identity.Identity) {
			b[42] = identity.Identity{JID: jid(5), SIP: []string{"sip:x@example.com"}}
		}, identity.Key{Kind: identity.KindJID, Value: jid(5)}, jid(5)},
	}, identity.Key{Kind: identity.KindAOR, Value: "sip:x@example.com"})
}

func testImportConflictStored(t *testing.T, open func(*testing.T) identity.Store) {
	testImportConflicts(t, open, []importConflict{
		{"Import(alice's number)", func(b []identity.Identity) { b[45].Tel = append(b[45].Tel, alice.Tel[1]) },
			identity.Key{Kind: identity.KindTel, Value: alice.Tel[1]}, alice.JID},
		{"Import(alice's AOR)", func(b []identity.Identity) { b[46].SIP = append(b[46].SIP, alice.SIP[0]) },
			identity.Key{Kind: identity.KindAOR, Value: alice.SIP[0]}, alice.JID},
		{"Import(alice again)", func(b []identity.Identity) { b[47] = identity.Identity{JID: alice.JID} },
			identity.Key{Kind: identity.KindJID, Value: alice.JID}, alice.JID},
	})
}

// importConflict is an Import that must fail: the 50 people of person
// after change, and the conflict it must report.
type importConflict struct {
	what   string
	change func([]identity.Identity)
	key    identity.Key
	owner  string
}

// testImportConflicts imports each conflicting batch into a store holding
// alice, then checks that none left a trace: alice as she was, none of the
// batch's keys nor absent, the revision unchanged.
func testImportConflicts(t *testing.T, open func(*testing.T) identity.Store, cases []importConflict, absent ...identity.Key) {
	ctx := ctxFor(t)
	s := open(t)
	pre := mustCreate(t, ctx, s, alice)
	rev := mustRev(t, ctx, s)
	mk := func() []identity.Identity {
		b := make([]identity.Identity, 50)
		for i := range b {
			b[i] = person(i)
		}
		return b
	}
	for _, c := range cases {
		b := mk()
		c.change(b)
		wantConflict(t, c.what, s.Import(ctx, b), c.key, c.owner)
	}

	wantCount(t, ctx, s, 1)
	wantStored(t, ctx, s, alice, pre.Version)
	for _, id := range mk() {
		wantAbsent(t, ctx, s, id.Keys()...)
	}
	wantAbsent(t, ctx, s, absent...)
	if r := mustRev(t, ctx, s); r != rev {
		t.Errorf("Rev after failed Imports = %d, want %d", r, rev)
	}
}

func testRev(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	r0 := mustRev(t, ctx, s)
	step := func(what string, want uint64) {
		t.Helper()
		if r := mustRev(t, ctx, s); r != want {
			t.Errorf("Rev after %s = %d, want %d", what, r, want)
		}
	}
	a := mustCreate(t, ctx, s, alice)
	step("Create", r0+1)
	if a.Version != r0+1 {
		t.Errorf("Create().Version = %d, want %d", a.Version, r0+1)
	}
	a2 := alice.Clone()
	a2.Name = "Alice 2"
	p := mustPut(t, ctx, s, a2)
	step("Put", r0+2)
	if p.Version != r0+2 {
		t.Errorf("Put().Version = %d, want %d", p.Version, r0+2)
	}
	if _, err := s.Create(ctx, alice); err == nil {
		t.Fatal("second Create succeeded")
	}
	step("a failed Create", r0+2)
	mustPut(t, ctx, s, a2) // an unchanged Put is still a write
	step("an unchanged Put", r0+3)
	if err := s.Delete(ctx, alice.JID); err != nil {
		t.Fatal(err)
	}
	step("Delete", r0+4)
	if err := s.Delete(ctx, alice.JID); err == nil {
		t.Fatal("second Delete succeeded")
	}
	step("a failed Delete", r0+4)
}

// next receives one event or fails after Guard.
func next(t *testing.T, ch <-chan identity.Event) identity.Event {
	t.Helper()
	timer := time.NewTimer(Guard)
	defer timer.Stop()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed, want an event")
		}
		return ev
	case <-timer.C:
		t.Fatalf("no event within %v", Guard)
	}
	return identity.Event{}
}

// waitClosed drains ch until it closes or fails after Guard.
func waitClosed(t *testing.T, ch <-chan identity.Event) {
	t.Helper()
	timer := time.NewTimer(Guard)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timer.C:
			t.Fatalf("watch channel still open %v later", Guard)
		}
	}
}

func wantEvent(t *testing.T, ev identity.Event, op identity.Op, rev uint64, id identity.Identity) {
	t.Helper()
	if ev.Op != op || ev.Rev != rev || ev.JID != id.JID {
		t.Fatalf("event = %v rev %d %q, want %v rev %d %q", ev.Op, ev.Rev, ev.JID, op, rev, id.JID)
	}
	switch op {
	case identity.OpPut:
		if !ev.Identity.Equal(id) || ev.Identity.Version != rev {
			t.Errorf("put event identity = %+v, want %+v at version %d", ev.Identity, id, rev)
		}
	case identity.OpDelete:
		if ev.Identity.JID != "" && !ev.Identity.Equal(id) {
			t.Errorf("delete event identity = %+v, want empty or %+v", ev.Identity, id)
		}
	}
}

func testWatchEvents(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	mustCreate(t, ctx, s, bob)
	r0 := mustRev(t, ctx, s)
	ch, err := s.Watch(ctx, r0)
	if err != nil {
		t.Fatalf("Watch = %v", err)
	}
	mustCreate(t, ctx, s, alice)
	a2 := alice.Clone()
	a2.SIP = a2.SIP[:1]
	a2.Name = "Alice 2"
	// Failed writes emit nothing.
	if _, err := s.Create(ctx, alice); err == nil {
		t.Fatal("Create(duplicate) succeeded")
	}
	if _, err := s.Put(ctx, identity.Identity{JID: bob.JID, Tel: alice.Tel}); err == nil {
		t.Fatal("Put(conflict) succeeded")
	}
	if err := s.Delete(ctx, "nobody@example.com"); err == nil {
		t.Fatal("Delete(unknown) succeeded")
	}
	mustPut(t, ctx, s, a2)
	if err := s.Delete(ctx, alice.JID); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, ctx, s, alice)

	wantEvent(t, next(t, ch), identity.OpPut, r0+1, alice)
	wantEvent(t, next(t, ch), identity.OpPut, r0+2, a2)
	wantEvent(t, next(t, ch), identity.OpDelete, r0+3, a2)
	wantEvent(t, next(t, ch), identity.OpPut, r0+4, alice)
}

func testWatchFrom(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	r0 := mustRev(t, ctx, s)
	ids := make([]identity.Identity, 5)
	for i := range ids {
		ids[i] = person(i)
		mustCreate(t, ctx, s, ids[i])
	}
	ch, err := s.Watch(ctx, r0+2)
	if err != nil {
		t.Fatalf("Watch = %v", err)
	}
	mustCreate(t, ctx, s, alice)
	ev := next(t, ch)
	if ev.Op == identity.OpResync {
		t.Logf("Watch from an older revision: OpResync at rev %d (no replay)", ev.Rev)
		if ev.Rev < r0+5 || ev.Rev > r0+6 {
			t.Errorf("OpResync.Rev = %d, want %d or %d", ev.Rev, r0+5, r0+6)
		}
		if ev.Rev == r0+5 {
			wantEvent(t, next(t, ch), identity.OpPut, r0+6, alice)
		}
		return
	}
	t.Logf("Watch from an older revision: replayed")
	wantEvent(t, ev, identity.OpPut, r0+3, ids[2])
	wantEvent(t, next(t, ch), identity.OpPut, r0+4, ids[3])
	wantEvent(t, next(t, ch), identity.OpPut, r0+5, ids[4])
	wantEvent(t, next(t, ch), identity.OpPut, r0+6, alice)
}

func testWatchFromZero(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	mustCreate(t, ctx, s, alice)
	mustCreate(t, ctx, s, bob)
	if err := s.Delete(ctx, alice.JID); err != nil {
		t.Fatal(err)
	}
	ch, err := s.Watch(ctx, 0)
	if err != nil {
		t.Fatalf("Watch(0) = %v", err)
	}
	f := newFollower(s)
	carol := identity.Identity{JID: "carol@example.com", Tel: alice.Tel}
	mustCreate(t, ctx, s, carol)
	f.until(t, ctx, ch, mustRev(t, ctx, s))
	f.check(t, ctx)
	t.Logf("Watch(0): %d events applied, %d resyncs", f.events, f.resyncs)
}

func testWatchImport(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	mustCreate(t, ctx, s, alice)
	ch, err := s.Watch(ctx, mustRev(t, ctx, s))
	if err != nil {
		t.Fatal(err)
	}
	f := newFollower(s)
	f.m[alice.JID] = alice
	batch := make([]identity.Identity, 100)
	for i := range batch {
		batch[i] = person(i)
	}
	if err := s.Import(ctx, batch); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, ctx, s, bob)
	f.until(t, ctx, ch, mustRev(t, ctx, s))
	f.check(t, ctx)
	t.Logf("Watch over Import: %d events applied, %d resyncs", f.events, f.resyncs)
}

func testWatchTwo(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	r0 := mustRev(t, ctx, s)
	c1, err := s.Watch(ctx, r0)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := s.Watch(ctx, r0)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, ctx, s, alice)
	mustCreate(t, ctx, s, bob)
	for _, ch := range []<-chan identity.Event{c1, c2} {
		wantEvent(t, next(t, ch), identity.OpPut, r0+1, alice)
		wantEvent(t, next(t, ch), identity.OpPut, r0+2, bob)
	}
}

func testWatchCancel(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	wctx, cancel := context.WithCancel(ctx)
	r0 := mustRev(t, ctx, s)
	ch, err := s.Watch(wctx, r0)
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.Watch(ctx, r0)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, ctx, s, alice)
	wantEvent(t, next(t, ch), identity.OpPut, r0+1, alice)
	cancel()
	waitClosed(t, ch)
	// The other watcher and the store carry on.
	mustCreate(t, ctx, s, bob)
	if ev := next(t, other); ev.JID != alice.JID {
		t.Fatalf("other watcher: %v %s, want put of alice", ev.Op, ev.JID)
	}
	if ev := next(t, other); ev.JID != bob.JID {
		t.Fatalf("other watcher: %v %s, want put of bob", ev.Op, ev.JID)
	}
	// A cancelled watcher that never read anything closes too.
	wctx2, cancel2 := context.WithCancel(ctx)
	ch2, err := s.Watch(wctx2, mustRev(t, ctx, s))
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, ctx, s, identity.Identity{JID: "carol@example.com"})
	cancel2()
	waitClosed(t, ch2)
}

func testWatchClose(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	ch, err := s.Watch(ctx, mustRev(t, ctx, s))
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, ctx, s, alice) // an event nobody reads
	if err := s.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	waitClosed(t, ch)
}

// race runs fn(0..n-1) in n goroutines released at the same moment and
// returns their errors.
func race(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var ready, done sync.WaitGroup
	for i := range n {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			errs[i] = fn(i)
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
	return errs
}

// racers goroutines race for one number, raceRounds times.
const (
	racers     = 16
	raceRounds = 50
)

func testRaceCreate(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	for round := range raceRounds {
		number := tel(5000 + round)
		name := func(i int) string { return fmt.Sprintf("r%02d-%s", round, jid(i)) }
		r0 := mustRev(t, ctx, s)
		errs := race(racers, func(i int) error {
			_, err := s.Create(ctx, identity.Identity{JID: name(i), SIP: []string{fmt.Sprintf("sip:r%02d-%d@example.com", round, i)}, Tel: []string{tel(6000 + round*racers + i), number}})
			return err
		})
		if !checkRace(t, ctx, s, errs, number, r0, name) {
			return
		}
	}
	checkInvariant(t, ctx, s, nil)
	wantCount(t, ctx, s, raceRounds)
}

func testRacePut(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	for i := range racers {
		mustCreate(t, ctx, s, person(i))
	}
	for round := range raceRounds {
		number := tel(5000 + round)
		r0 := mustRev(t, ctx, s)
		errs := race(racers, func(i int) error {
			got, err := s.Get(ctx, jid(i))
			if err != nil {
				return err
			}
			got.Tel = append(got.Tel, number)
			_, err = s.Put(ctx, got)
			return err
		})
		if !checkRace(t, ctx, s, errs, number, r0, jid) {
			return
		}
	}
	checkInvariant(t, ctx, s, nil)
	wantCount(t, ctx, s, racers)
	// Every number went to exactly one racer, and the others kept theirs.
	all := listAll(t, ctx, s, 100)
	total := 0
	for i, id := range all {
		if id.JID != jid(i) || !slices.Equal(id.SIP, person(i).SIP) || id.Tel[0] != tel(i) {
			t.Errorf("%s = %+v, want %s's AOR and number kept", id.JID, id, jid(i))
		}
		total += len(id.Tel) - 1
	}
	if total != raceRounds {
		t.Errorf("racers hold %d contested numbers, want %d", total, raceRounds)
	}
}

// checkRace checks that exactly one racer won number and the others got a
// conflict naming the winner. It reports whether to go on.
func checkRace(t *testing.T, ctx context.Context, s identity.Store, errs []error, number string, r0 uint64, name func(int) string) bool {
	t.Helper()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Errorf("both %s and %s got %s", name(winner), name(i), number)
			}
			winner = i
		case errors.Is(err, identity.ErrConflict):
		default:
			t.Errorf("racer %d: %v, want nil or ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Errorf("no racer got %s", number)
		return false
	}
	for i, err := range errs {
		if i != winner && err != nil {
			wantConflict(t, fmt.Sprintf("racer %d", i), err, identity.Key{Kind: identity.KindTel, Value: number}, name(winner))
		}
	}
	got, err := s.Lookup(ctx, identity.Key{Kind: identity.KindTel, Value: number})
	if err != nil || got.JID != name(winner) {
		t.Errorf("Lookup(%s) = %s, %v, want %s", number, got.JID, err, name(winner))
	}
	if r := mustRev(t, ctx, s); r != r0+1 {
		t.Errorf("Rev after the race = %d, want %d (one successful write)", r, r0+1)
	}
	return !t.Failed()
}

func testRaceJID(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	errs := race(racers, func(i int) error {
		_, err := s.Create(ctx, identity.Identity{JID: alice.JID, Tel: []string{tel(i)}})
		return err
	})
	won := 0
	for _, err := range errs {
		if err == nil {
			won++
		} else {
			wantConflict(t, "Create(same JID)", err, identity.Key{Kind: identity.KindJID, Value: alice.JID}, alice.JID)
		}
	}
	if won != 1 {
		t.Errorf("%d racers created %s, want 1", won, alice.JID)
	}
	checkInvariant(t, ctx, s, nil)
	wantCount(t, ctx, s, 1)
}

// checkInvariant verifies that every key maps to exactly the identity that
// lists it, and that keys of pool nobody lists resolve to nothing.
func checkInvariant(t *testing.T, ctx context.Context, s identity.Store, pool []identity.Key) map[string]identity.Identity {
	t.Helper()
	all := listAll(t, ctx, s, 7)
	owned := map[identity.Key]string{}
	byJID := map[string]identity.Identity{}
	for i, id := range all {
		if i > 0 && all[i-1].JID >= id.JID {
			t.Errorf("List out of order: %s then %s", all[i-1].JID, id.JID)
		}
		byJID[id.JID] = id
		for _, k := range id.Keys() {
			if o, dup := owned[k]; dup && o != id.JID {
				t.Errorf("%s listed by both %s and %s", k, o, id.JID)
			}
			owned[k] = id.JID
			got, err := s.Lookup(ctx, k)
			if err != nil || !got.Equal(id) {
				t.Errorf("Lookup(%s) = %+v, %v, want %+v", k, got, err, id)
			}
		}
	}
	for _, k := range pool {
		if _, ok := owned[k]; !ok {
			wantAbsent(t, ctx, s, k)
		}
	}
	wantCount(t, ctx, s, len(all))
	return byJID
}

func testStress(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	const (
		workers = 8
		nJIDs   = 8
		nAORs   = 6
		nTels   = 6
	)
	ops := 150
	if testing.Short() {
		ops = 40
	}
	var pool []identity.Key
	for i := range nJIDs {
		pool = append(pool, identity.Key{Kind: identity.KindJID, Value: jid(i)})
	}
	for i := range nAORs {
		pool = append(pool, identity.Key{Kind: identity.KindAOR, Value: aor(i)})
	}
	for i := range nTels {
		pool = append(pool, identity.Key{Kind: identity.KindTel, Value: tel(i)})
	}

	r0 := mustRev(t, ctx, s)
	ch, err := s.Watch(ctx, r0)
	if err != nil {
		t.Fatal(err)
	}
	f := newFollower(s)
	var target atomic.Uint64
	finished := make(chan struct{})
	followed := make(chan error, 1)
	go func() { followed <- f.follow(ctx, ch, &target, finished) }()

	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	var writes atomic.Uint64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for range ops {
				j := jid(rng.IntN(nJIDs))
				if rng.IntN(4) == 0 {
					err := s.Delete(ctx, j)
					if err == nil {
						writes.Add(1)
					} else if !errors.Is(err, identity.ErrNotFound) {
						t.Errorf("Delete(%s) = %v", j, err)
					}
					continue
				}
				id := identity.Identity{JID: j, Name: "n"}
				for i := range nAORs {
					if rng.IntN(4) == 0 {
						id.SIP = append(id.SIP, aor(i))
					}
				}
				for i := range nTels {
					if rng.IntN(4) == 0 {
						id.Tel = append(id.Tel, tel(i))
					}
				}
				var err error
				if rng.IntN(3) == 0 {
					_, err = s.Create(ctx, id)
				} else {
					_, err = s.Put(ctx, id)
				}
				if err == nil {
					writes.Add(1)
				} else if !errors.Is(err, identity.ErrConflict) {
					t.Errorf("write %+v = %v", id, err)
				}
			}
		})
	}
	wg.Wait()
	final := mustRev(t, ctx, s)
	if final-r0 != writes.Load() {
		t.Errorf("Rev advanced by %d for %d successful writes", final-r0, writes.Load())
	}
	target.Store(final)
	close(finished)
	want := checkInvariant(t, ctx, s, pool)

	guard := time.NewTimer(Guard)
	defer guard.Stop()
	select {
	case err := <-followed:
		if err != nil {
			t.Fatal(err)
		}
	case <-guard.C:
		t.Fatalf("the watcher did not reach revision %d within %v (at %d)", final, Guard, f.rev.Load())
	}
	f.compare(t, want)
	t.Logf("%d writes; watcher applied %d events, %d resyncs", writes.Load(), f.events, f.resyncs)
}

func testPing(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping = %v", err)
	}
}

func testCancelled(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Get(cctx, alice.JID); !errors.Is(err, context.Canceled) {
		t.Errorf("Get(cancelled ctx) = %v, want context.Canceled", err)
	}
	if _, err := s.Create(cctx, alice); !errors.Is(err, context.Canceled) {
		t.Errorf("Create(cancelled ctx) = %v, want context.Canceled", err)
	}
	wantAbsent(t, ctx, s, alice.Keys()...)
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping after a cancelled call = %v", err)
	}
}

func testClosed(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	mustCreate(t, ctx, s, alice)
	if err := s.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, identity.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", what, err)
		}
	}
	_, err := s.Get(ctx, alice.JID)
	check("Get", err)
	_, err = s.Lookup(ctx, alice.Keys()[1])
	check("Lookup", err)
	_, err = s.Create(ctx, bob)
	check("Create", err)
	_, err = s.Put(ctx, bob)
	check("Put", err)
	check("Delete", s.Delete(ctx, alice.JID))
	_, _, err = s.List(ctx, "", 10)
	check("List", err)
	check("Import", s.Import(ctx, []identity.Identity{bob}))
	_, err = s.Count(ctx)
	check("Count", err)
	_, err = s.Rev(ctx)
	check("Rev", err)
	ch, err := s.Watch(ctx, 0)
	if err == nil {
		// Allowed only if the channel is closed right away.
		waitClosed(t, ch)
	} else {
		check("Watch", err)
	}
	check("Ping", s.Ping(ctx))
	_ = s.Close() // a second Close must not panic or hang
}

// follower keeps a copy of the map from a Watch channel, as the
// gateway's cache does.
type follower struct {
	s       identity.Store
	m       map[string]identity.Identity
	rev     atomic.Uint64
	events  int
	resyncs int
}

func newFollower(s identity.Store) *follower {
	return &follower{s: s, m: map[string]identity.Identity{}}
}

func (f *follower) apply(ctx context.Context, ev identity.Event) error {
	if last := f.rev.Load(); ev.Rev < last || ev.Rev == last && ev.Op != identity.OpResync {
		return fmt.Errorf("event %v %s rev %d after rev %d: revisions must increase", ev.Op, ev.JID, ev.Rev, last)
	}
	switch ev.Op {
	case identity.OpPut:
		if ev.Identity.JID != ev.JID {
			return fmt.Errorf("put event rev %d: JID %q but identity %q", ev.Rev, ev.JID, ev.Identity.JID)
		}
		f.m[ev.JID] = ev.Identity
		f.events++
	case identity.OpDelete:
		delete(f.m, ev.JID)
		f.events++
	case identity.OpResync:
		f.resyncs++
		m := map[string]identity.Identity{}
		after := ""
		for {
			page, next, err := f.s.List(ctx, after, 100)
			if err != nil {
				return fmt.Errorf("resync List: %w", err)
			}
			for _, id := range page {
				m[id.JID] = id
			}
			if next == "" {
				break
			}
			after = next
		}
		f.m = m
	default:
		return fmt.Errorf("event with unknown op %v", ev.Op)
	}
	f.rev.Store(ev.Rev)
	return nil
}

// follow applies events until it has seen revision target (known once
// finished is closed).
func (f *follower) follow(ctx context.Context, ch <-chan identity.Event, target *atomic.Uint64, finished <-chan struct{}) error {
	done := false
	for {
		if done && f.rev.Load() >= target.Load() {
			return nil
		}
		select {
		case ev, ok := <-ch:
			if !ok {
				return errors.New("watch channel closed early")
			}
			if err := f.apply(ctx, ev); err != nil {
				return err
			}
		case <-finished:
			done, finished = true, nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// until follows ch in the calling goroutine up to revision target.
func (f *follower) until(t *testing.T, ctx context.Context, ch <-chan identity.Event, target uint64) {
	t.Helper()
	for f.rev.Load() < target {
		if err := f.apply(ctx, next(t, ch)); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *follower) check(t *testing.T, ctx context.Context) {
	t.Helper()
	want := map[string]identity.Identity{}
	for _, id := range listAll(t, ctx, f.s, 50) {
		want[id.JID] = id
	}
	f.compare(t, want)
}

func (f *follower) compare(t *testing.T, want map[string]identity.Identity) {
	t.Helper()
	for j, id := range want {
		got, ok := f.m[j]
		if !ok {
			t.Errorf("watcher misses %s", j)
		} else if !got.Equal(id) {
			t.Errorf("watcher has %+v, store %+v", got, id)
		}
	}
	for j := range f.m {
		if _, ok := want[j]; !ok {
			t.Errorf("watcher still has %s, the store does not", j)
		}
	}
}
