package b2bua

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Registrations in flight and the REGISTER/INVITE race.
//
// A binding is stored when the gateway has processed the PBX's 2xx to the
// relayed REGISTER. sipgo handles every datagram in its own goroutine, so a
// PBX that INVITEs the new gateway contact right after sending that 2xx can
// have its INVITE routed before the 2xx is processed. The gateway therefore
// marks the tokens and the AOR of each REGISTER in flight toward the PBX;
// a lookup that misses a marked key waits until that REGISTER has ended
// (binding stored, or the PBX refused, or the transaction failed), bounded
// by sip.pbx_timeout, and looks again.
//
// The marks live in this process: with a shared store (Redis), an INVITE
// racing the 2xx through another gateway instance is not covered.

// regFlights tracks the REGISTERs in flight toward the PBX per key (a
// binding token or an AOR). The zero value is ready; it is safe for
// concurrent use. A nil *regFlights has nothing in flight.
type regFlights struct {
	mu sync.Mutex
	m  map[string]*regFlight
}

// regFlight is one key's REGISTERs in flight: done is closed when the last
// of them ends.
type regFlight struct {
	n    int
	done chan struct{}
}

// begin marks keys in flight and returns the function that ends the mark;
// it must be called exactly once, after the bindings are written.
func (f *regFlights) begin(keys []string) (end func()) {
	f.mu.Lock()
	if f.m == nil {
		f.m = map[string]*regFlight{}
	}
	flights := make([]*regFlight, len(keys))
	for i, k := range keys {
		fl := f.m[k]
		if fl == nil {
			fl = &regFlight{done: make(chan struct{})}
			f.m[k] = fl
		}
		fl.n++
		flights[i] = fl
	}
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, fl := range flights {
			fl.n--
			if fl.n == 0 {
				close(fl.done)
				if f.m[keys[i]] == fl {
					delete(f.m, keys[i])
				}
			}
		}
	}
}

// wait blocks while a REGISTER naming key is in flight, at most max or
// until ctx ends. It reports whether it waited.
func (f *regFlights) wait(ctx context.Context, key string, max time.Duration) bool {
	if f == nil {
		return false
	}
	f.mu.Lock()
	fl := f.m[key]
	f.mu.Unlock()
	if fl == nil {
		return false
	}
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-fl.done:
	case <-t.C:
	case <-ctx.Done():
	}
	return true
}

// bindingByToken is Bindings.ByToken for routing: a miss while a REGISTER
// for token is in flight waits for that REGISTER and looks again.
func (b *B2BUA) bindingByToken(ctx context.Context, token string) (Binding, error) {
	bd, err := b.bindings.ByToken(ctx, token)
	if !errors.Is(err, ErrNotFound) {
		return bd, err
	}
	// Look again even when nothing is in flight now: the REGISTER may
	// have ended between the miss and the check.
	b.pbx.registering.wait(ctx, token, b.cfg.PBXTimeout)
	return b.bindings.ByToken(ctx, token)
}

// bindingsByAOR is Bindings.ByAOR for routing: no binding while a REGISTER
// for aor is in flight waits for that REGISTER and looks again.
func (b *B2BUA) bindingsByAOR(ctx context.Context, aor string) ([]Binding, error) {
	bs, err := b.bindings.ByAOR(ctx, aor)
	if err != nil || len(bs) > 0 {
		return bs, err
	}
	b.pbx.registering.wait(ctx, aor, b.cfg.PBXTimeout)
	return b.bindings.ByAOR(ctx, aor)
}
