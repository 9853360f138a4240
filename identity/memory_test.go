package identity_test

import (
	"testing"
	"time"

	"github.com/cusax-gw/cusax-gw/identity"
	"github.com/cusax-gw/cusax-gw/identity/storetest"
)

func TestMemoryStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) identity.Store {
		s := identity.NewMemoryStore()
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestMemoryTombstoneExpiry(t *testing.T) {
	storetest.RunTombstoneExpiry(t, func(t *testing.T, maxAge time.Duration, now func() time.Time) identity.Store {
		s := identity.NewMemoryStoreWith(identity.MemoryOptions{TombstoneMaxAge: maxAge, Now: now})
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// An Import larger than the replay log sends watchers from before it an
// OpResync; the store's content is then what List shows.
func TestMemoryImportLargerThanLog(t *testing.T) {
	ctx := testCtx(t)
	s := identity.NewMemoryStore()
	defer s.Close()
	ch, err := s.Watch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Import(ctx, people(12000)); err != nil {
		t.Fatal(err)
	}
	ev := recv(t, ch)
	for ev.Op == identity.OpPut && ev.Rev < 12000 { // what the watcher already held
		ev = recv(t, ch)
	}
	if ev.Op != identity.OpResync || ev.Rev != 12000 {
		t.Fatalf("event = %v %d, want OpResync 12000", ev.Op, ev.Rev)
	}
	late, err := s.Watch(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if ev := recv(t, late); ev.Op != identity.OpResync || ev.Rev != 12000 {
		t.Errorf("late watcher = %v %d, want OpResync 12000", ev.Op, ev.Rev)
	}
	within, err := s.Watch(ctx, 11990)
	if err != nil {
		t.Fatal(err)
	}
	if ev := recv(t, within); ev.Op != identity.OpPut || ev.Rev != 11991 {
		t.Errorf("watcher within the log = %v %d, want put 11991", ev.Op, ev.Rev)
	}
}
