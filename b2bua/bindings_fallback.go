package b2bua

import (
	"context"
	"errors"
	"time"
)

// fallbackBindings keeps working through an outage of a shared binding
// store (Redis): every binding this gateway wrote or read is mirrored in
// memory, and when the store fails a read is answered from the mirror, so
// calls to the phones this instance knows keep being routed while Redis
// is down. Writes still go to the store first (its error is returned, so
// a REGISTER is answered as before); the mirror follows them either way.
// The mirror is as fresh as what this instance saw: a phone that moved to
// another instance during the outage is reached at its old address until
// the store answers again.
type fallbackBindings struct {
	store  Bindings
	mirror *MemoryBindings
}

func newFallbackBindings(store Bindings, now func() time.Time) *fallbackBindings {
	return &fallbackBindings{store: store, mirror: NewMemoryBindings(now)}
}

// Unwrap returns the shared store.
func (f *fallbackBindings) Unwrap() Bindings { return f.store }

func (f *fallbackBindings) Put(ctx context.Context, b Binding) error {
	f.mirror.Put(ctx, b)
	return f.store.Put(ctx, b)
}

func (f *fallbackBindings) ByToken(ctx context.Context, token string) (Binding, error) {
	b, err := f.store.ByToken(ctx, token)
	switch {
	case err == nil:
		f.mirror.Put(ctx, b)
		return b, nil
	case errors.Is(err, ErrNotFound):
		f.mirror.Delete(ctx, token)
		return b, err
	}
	if mb, merr := f.mirror.ByToken(ctx, token); merr == nil {
		return mb, nil
	}
	return b, err
}

func (f *fallbackBindings) ByAOR(ctx context.Context, aor string) ([]Binding, error) {
	bs, err := f.store.ByAOR(ctx, aor)
	if err == nil {
		for _, b := range bs {
			f.mirror.Put(ctx, b)
		}
		return bs, nil
	}
	if mbs, merr := f.mirror.ByAOR(ctx, aor); merr == nil && len(mbs) > 0 {
		return mbs, nil
	}
	return bs, err
}

func (f *fallbackBindings) Delete(ctx context.Context, token string) error {
	f.mirror.Delete(ctx, token)
	return f.store.Delete(ctx, token)
}

func (f *fallbackBindings) Expire(ctx context.Context, now time.Time) (int, error) {
	f.mirror.Expire(ctx, now)
	return f.store.Expire(ctx, now)
}

func (f *fallbackBindings) Len(ctx context.Context) (int, error) {
	return f.store.Len(ctx)
}
