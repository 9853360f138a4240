package b2bua

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// ErrNotFound is returned by a Bindings store for an unknown or expired
// binding.
var ErrNotFound = errors.New("b2bua: binding not found")

// Binding is one phone contact registered through the gateway: the PBX
// knows the gateway contact sip:{Token}@gateway, the gateway knows where
// that phone really is.
type Binding struct {
	// Token is the user part of the gateway contact registered at the PBX;
	// it identifies the binding (derived from AOR and Contact).
	Token string
	// AOR is the registered address of record, sip:user@host (normalised:
	// lowercase host, no port or parameters), as the PBX accepted it.
	AOR string
	// Contact is the phone's Contact URI exactly as it sent it.
	Contact string
	// Source is where the phone's REGISTER came from (host:port, the
	// packet's source, what rport reports), for phones behind NAT.
	Source string
	// Transport is the transport the REGISTER arrived on (UDP, TCP, TLS,
	// WS, WSS).
	Transport string
	// CallID is the phone's REGISTER Call-ID (RFC 3261 section 10.2.4).
	CallID string
	// Expires is when the binding lapses unless refreshed.
	Expires time.Time
}

// Bindings stores registrations made through the gateway. Implementations
// must be safe for concurrent use and must never return an expired
// binding. The gateway is the only writer of its bindings; a shared
// store (Redis) lets any gateway instance reach any phone.
type Bindings interface {
	// Put inserts or replaces the binding with b.Token.
	Put(ctx context.Context, b Binding) error
	// ByToken returns the binding with token, or ErrNotFound.
	ByToken(ctx context.Context, token string) (Binding, error)
	// ByAOR returns the live bindings of aor (none is not an error), in no
	// particular order.
	ByAOR(ctx context.Context, aor string) ([]Binding, error)
	// Delete removes the binding with token; removing an unknown one is
	// not an error.
	Delete(ctx context.Context, token string) error
	// Expire removes every binding whose Expires is not after now and
	// returns how many it removed.
	Expire(ctx context.Context, now time.Time) (int, error)
	// Len returns the number of live bindings.
	Len(ctx context.Context) (int, error)
}

// MemoryBindings is the in-process Bindings store of a single gateway.
// It is safe for concurrent use. Reads hide expired bindings; Expire
// reclaims them.
type MemoryBindings struct {
	now func() time.Time

	mu      sync.Mutex
	byToken map[string]Binding
	byAOR   map[string][]string // aor -> tokens
}

// NewMemoryBindings returns an empty store whose notion of the current
// time is now (time.Now when nil).
func NewMemoryBindings(now func() time.Time) *MemoryBindings {
	if now == nil {
		now = time.Now
	}
	return &MemoryBindings{now: now, byToken: map[string]Binding{}, byAOR: map[string][]string{}}
}

// Put implements Bindings.
func (s *MemoryBindings) Put(_ context.Context, b Binding) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.byToken[b.Token]; ok && old.AOR != b.AOR {
		s.unlinkLocked(old)
	}
	if _, ok := s.byToken[b.Token]; !ok || !slices.Contains(s.byAOR[b.AOR], b.Token) {
		s.byAOR[b.AOR] = append(s.byAOR[b.AOR], b.Token)
	}
	s.byToken[b.Token] = b
	return nil
}

// ByToken implements Bindings.
func (s *MemoryBindings) ByToken(_ context.Context, token string) (Binding, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.byToken[token]
	if !ok || !b.Expires.After(s.now()) {
		return Binding{}, ErrNotFound
	}
	return b, nil
}

// ByAOR implements Bindings.
func (s *MemoryBindings) ByAOR(_ context.Context, aor string) ([]Binding, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var out []Binding
	for _, t := range s.byAOR[aor] {
		if b := s.byToken[t]; b.Expires.After(now) {
			out = append(out, b)
		}
	}
	return out, nil
}

// Delete implements Bindings.
func (s *MemoryBindings) Delete(_ context.Context, token string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.byToken[token]; ok {
		s.unlinkLocked(b)
		delete(s.byToken, token)
	}
	return nil
}

// Expire implements Bindings.
func (s *MemoryBindings) Expire(_ context.Context, now time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for t, b := range s.byToken {
		if !b.Expires.After(now) {
			s.unlinkLocked(b)
			delete(s.byToken, t)
			n++
		}
	}
	return n, nil
}

// Len implements Bindings.
func (s *MemoryBindings) Len(_ context.Context) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	n := 0
	for _, b := range s.byToken {
		if b.Expires.After(now) {
			n++
		}
	}
	return n, nil
}

func (s *MemoryBindings) unlinkLocked(b Binding) {
	ts := slices.DeleteFunc(s.byAOR[b.AOR], func(t string) bool { return t == b.Token })
	if len(ts) == 0 {
		delete(s.byAOR, b.AOR)
	} else {
		s.byAOR[b.AOR] = ts
	}
}
