package b2bua

import (
	"context"
	"errors"
	"testing"
	"time"
)

// flakyBindings is a store that can be switched off.
type flakyBindings struct {
	*MemoryBindings
	down bool
}

var errStoreDown = errors.New("store down")

func (f *flakyBindings) ByToken(ctx context.Context, token string) (Binding, error) {
	if f.down {
		return Binding{}, errStoreDown
	}
	return f.MemoryBindings.ByToken(ctx, token)
}

func (f *flakyBindings) ByAOR(ctx context.Context, aor string) ([]Binding, error) {
	if f.down {
		return nil, errStoreDown
	}
	return f.MemoryBindings.ByAOR(ctx, aor)
}

func TestFallbackBindingsServeThroughOutage(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	store := &flakyBindings{MemoryBindings: NewMemoryBindings(clock)}
	// Another instance registered bob into the shared store.
	bob := Binding{Token: "cx-bob", AOR: "sip:bob@example.com", Contact: "sip:bob@192.0.2.2", Source: "192.0.2.2:5060", Transport: "UDP", Expires: now.Add(time.Hour)}
	store.MemoryBindings.Put(ctx, bob)
	f := newFallbackBindings(store, clock)
	alice := Binding{Token: "cx-alice", AOR: "sip:alice@example.com", Contact: "sip:alice@192.0.2.1", Source: "192.0.2.1:5060", Transport: "UDP", Expires: now.Add(time.Hour)}
	if err := f.Put(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ByToken(ctx, "cx-bob"); err != nil { // read once while up
		t.Fatal(err)
	}

	store.down = true
	if b, err := f.ByToken(ctx, "cx-alice"); err != nil || b.Source != alice.Source {
		t.Errorf("ByToken(alice) in the outage = %+v, %v; want the mirrored binding", b, err)
	}
	if bs, err := f.ByAOR(ctx, "sip:bob@example.com"); err != nil || len(bs) != 1 {
		t.Errorf("ByAOR(bob) in the outage = %v, %v; want the binding read before", bs, err)
	}
	if _, err := f.ByToken(ctx, "cx-carol"); !errors.Is(err, errStoreDown) {
		t.Errorf("ByToken(unknown) in the outage = %v, want the store's error", err)
	}

	// Back up: a binding deleted meanwhile (by another instance) is
	// forgotten on the next read.
	store.down = false
	store.MemoryBindings.Delete(ctx, "cx-bob")
	if _, err := f.ByToken(ctx, "cx-bob"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ByToken(bob) after deletion = %v, want ErrNotFound", err)
	}
	store.down = true
	if _, err := f.ByToken(ctx, "cx-bob"); err == nil {
		t.Error("a binding the store said was gone is still served from the mirror")
	}
}
