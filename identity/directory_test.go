package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// flakyStore is a MemoryStore whose backend can be switched off, as Redis
// going away would.
type flakyStore struct {
	*MemoryStore
	down atomic.Bool
}

func (f *flakyStore) err() error {
	if f.down.Load() {
		return fmt.Errorf("identity: redis: connection refused: %w", ErrUnavailable)
	}
	return nil
}

func (f *flakyStore) Lookup(ctx context.Context, k Key) (Identity, error) {
	if err := f.err(); err != nil {
		return Identity{}, err
	}
	return f.MemoryStore.Lookup(ctx, k)
}

func (f *flakyStore) Put(ctx context.Context, id Identity) (Identity, error) {
	if err := f.err(); err != nil {
		return Identity{}, err
	}
	return f.MemoryStore.Put(ctx, id)
}

func (f *flakyStore) Ping(ctx context.Context) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.MemoryStore.Ping(ctx)
}

func newTestDirectory(t *testing.T) (*Directory, *flakyStore, *Metrics) {
	t.Helper()
	norm, err := NewNormalizer("US")
	if err != nil {
		t.Fatal(err)
	}
	store := &flakyStore{MemoryStore: NewMemoryStore()}
	t.Cleanup(func() { store.Close() })
	m := NewMetrics(prometheus.NewRegistry())
	d := NewDirectory(store, norm, "memory", slog.New(slog.DiscardHandler), m, DirectoryOptions{PingInterval: time.Hour})
	return d, store, m
}

// runDirectory runs d until the test ends and waits until the cache holds
// n identities (following the feed, not sleeping).
func runDirectory(t *testing.T, d *Directory) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	})
}

// waitFor re-checks cond at every change of the directory, failing after a
// generous guard.
func waitFor(t *testing.T, d *Directory, what string, cond func() bool) {
	t.Helper()
	guard := time.After(10 * time.Second)
	for {
		changed := d.Changed()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-guard:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestDirectoryCacheFollowsStore(t *testing.T) {
	d, store, m := newTestDirectory(t)
	ctx := context.Background()
	if _, err := store.Create(ctx, Identity{JID: "alice@example.com", Tel: []string{"+15551230001"}}); err != nil {
		t.Fatal(err)
	}
	runDirectory(t, d)
	key := Key{KindTel, "+15551230001"}
	waitFor(t, d, "initial load", func() bool { _, ok, _ := d.LookupKey(key); return ok })

	// A write made directly in the store (another instance) reaches the
	// cache through the feed.
	if _, err := store.Put(ctx, Identity{JID: "alice@example.com", Tel: []string{"+15551230002"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, d, "put event", func() bool { _, ok, _ := d.LookupKey(Key{KindTel, "+15551230002"}); return ok })
	if _, ok, _ := d.LookupKey(key); ok {
		t.Error("old number still cached after the identity dropped it")
	}
	if err := store.Delete(ctx, "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, d, "delete event", func() bool { _, ok, _ := d.LookupKey(Key{KindJID, "alice@example.com"}); return !ok })
	if got := testutil.ToFloat64(m.Entries); got != 0 {
		t.Errorf("cusax_identity_entries = %v, want 0", got)
	}

	// Writes through the directory are visible at once (read your writes).
	if _, err := d.Create(ctx, Identity{JID: "Bob@Example.com", SIP: []string{"sip:bob@EXAMPLE.com"}}); err != nil {
		t.Fatal(err)
	}
	id, err := d.Lookup(ctx, "sip:bob@example.com;transport=tcp")
	if err != nil || id.JID != "bob@example.com" {
		t.Errorf("Lookup after Create = %+v, %v; want bob@example.com", id, err)
	}
	if _, err := d.Lookup(ctx, "tel:+15559999999"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := d.Lookup(ctx, "sip:"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Lookup(invalid) = %v, want ErrInvalid", err)
	}
	if got := testutil.ToFloat64(m.Lookups.WithLabelValues("cache", "hit")); got < 1 {
		t.Errorf(`cusax_identity_lookups_total{backend="cache",result="hit"} = %v, want >= 1`, got)
	}
}

func TestDirectoryServesCacheWhileStoreDown(t *testing.T) {
	d, store, _ := newTestDirectory(t)
	ctx := context.Background()
	if _, err := store.Create(ctx, Identity{JID: "alice@example.com", Tel: []string{"+15551230001"}}); err != nil {
		t.Fatal(err)
	}
	runDirectory(t, d)
	waitFor(t, d, "initial load", func() bool { s, _ := d.Status(); _, _, warm := d.LookupKey(Key{}); return s == "up" && warm })

	store.down.Store(true)
	if _, err := d.Put(ctx, Identity{JID: "alice@example.com"}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Put while the store is down = %v, want ErrUnavailable", err)
	}
	if state, detail := d.Status(); state != "degraded" {
		t.Errorf("Status() while down = %s (%s), want degraded", state, detail)
	}
	id, err := d.Lookup(ctx, "+15551230001")
	if err != nil || id.JID != "alice@example.com" {
		t.Errorf("cached Lookup while the store is down = %+v, %v; want alice", id, err)
	}
	store.down.Store(false)
	if _, err := d.Put(ctx, Identity{JID: "alice@example.com", Tel: []string{"+15551230001"}}); err != nil {
		t.Fatalf("Put after recovery = %v", err)
	}
	if state, _ := d.Status(); state != "up" {
		t.Errorf("Status() after recovery = %s, want up", state)
	}
}

func TestDirectoryColdCacheGoesToStore(t *testing.T) {
	d, store, m := newTestDirectory(t) // not running: the cache stays cold
	ctx := context.Background()
	if _, err := store.Create(ctx, Identity{JID: "alice@example.com", Tel: []string{"+15551230001"}}); err != nil {
		t.Fatal(err)
	}
	if id, err := d.Lookup(ctx, "tel:+1 555 123 0001"); err != nil || id.JID != "alice@example.com" {
		t.Errorf("Lookup with a cold cache = %+v, %v", id, err)
	}
	if got := testutil.ToFloat64(m.Lookups.WithLabelValues("memory", "hit")); got != 1 {
		t.Errorf(`cusax_identity_lookups_total{backend="memory",result="hit"} = %v, want 1`, got)
	}
	store.down.Store(true)
	if _, err := d.Lookup(ctx, "+15551230001"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("cold Lookup while down = %v, want ErrUnavailable", err)
	}
	if state, _ := d.Status(); state != "down" {
		t.Errorf("Status() cold and down = %s, want down", state)
	}
}

func TestDirectoryImportReportsRows(t *testing.T) {
	d, store, _ := newTestDirectory(t)
	err := d.Import(context.Background(), []Identity{{JID: "a@example.com"}, {JID: "not a jid"}, {JID: "c@example.com", Tel: []string{"x"}}})
	var ie *ImportError
	if !errors.As(err, &ie) || len(ie.Rows) != 2 || ie.Rows[0].Row != 1 || ie.Rows[1].Row != 2 {
		t.Fatalf("Import with two bad rows = %v, want an ImportError for rows 1 and 2", err)
	}
	if n, _ := store.Count(context.Background()); n != 0 {
		t.Errorf("Count after a failed import = %d, want 0", n)
	}
}

func TestCachedLookupDoesNotAllocate(t *testing.T) {
	d, store, _ := newTestDirectory(t)
	if _, err := store.Create(context.Background(), Identity{JID: "alice@example.com", Tel: []string{"+15551230001"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	key := Key{KindTel, "+15551230001"}
	allocs := testing.AllocsPerRun(1000, func() {
		if _, ok, _ := d.LookupKey(key); !ok {
			panic("miss")
		}
	})
	if allocs != 0 {
		t.Errorf("LookupKey allocates %v times per call, want 0", allocs)
	}
}

func BenchmarkCachedLookup(b *testing.B) {
	norm, _ := NewNormalizer("")
	store := NewMemoryStore()
	defer store.Close()
	ids := make([]Identity, 100000)
	for i := range ids {
		ids[i] = Identity{JID: fmt.Sprintf("user%06d@example.com", i), Tel: []string{fmt.Sprintf("+1555%07d", i)}}
	}
	if err := store.Import(context.Background(), ids); err != nil {
		b.Fatal(err)
	}
	d := NewDirectory(store, norm, "memory", slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()), DirectoryOptions{})
	if _, err := d.reload(context.Background()); err != nil {
		b.Fatal(err)
	}
	key := Key{KindTel, "+15550054321"}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, _ := d.LookupKey(key); !ok {
			b.Fatal("miss")
		}
	}
}
