package identity

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Identity is one user of the service: a bare JID with the SIP addresses of
// record and E.164 numbers that belong to it. An AOR or a number belongs to
// at most one identity.
//
// Values held by a Store are normalised (see Normalizer): JID bare and
// PRECIS-prepared, AORs "sip:user@host" with a lowercase host, numbers
// "+15551230001". SIP and Tel keep the order given (it is the order of
// preference published in XEP-0152 reachability).
type Identity struct {
	JID  string   `json:"jid" yaml:"jid"`
	SIP  []string `json:"sip" yaml:"sip"`
	Tel  []string `json:"tel" yaml:"tel"`
	Name string   `json:"name" yaml:"name,omitempty"`
	// Version is the store revision at which this identity was last
	// written; 0 for an identity that was never stored.
	Version uint64 `json:"version,omitempty" yaml:"-"`
}

// Clone returns a deep copy of id.
func (id Identity) Clone() Identity {
	id.SIP = append([]string(nil), id.SIP...)
	id.Tel = append([]string(nil), id.Tel...)
	return id
}

// Equal reports whether a and b hold the same JID, addresses, numbers and
// name (Version is ignored).
func (id Identity) Equal(b Identity) bool {
	return id.JID == b.JID && id.Name == b.Name && equalStrings(id.SIP, b.SIP) && equalStrings(id.Tel, b.Tel)
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Kind says which part of an identity a Key names.
type Kind uint8

// The kinds of lookup keys.
const (
	KindJID Kind = iota + 1 // a bare JID
	KindAOR                 // a SIP address of record
	KindTel                 // an E.164 number
)

func (k Kind) String() string {
	switch k {
	case KindJID:
		return "jid"
	case KindAOR:
		return "sip"
	case KindTel:
		return "tel"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Key is a normalised lookup key: any of an identity's JID, AORs or numbers.
type Key struct {
	Kind  Kind
	Value string
}

func (k Key) String() string { return k.Kind.String() + ":" + k.Value }

// Keys returns every key of id: its JID, then its AORs, then its numbers.
func (id Identity) Keys() []Key {
	keys := make([]Key, 0, 1+len(id.SIP)+len(id.Tel))
	keys = append(keys, Key{KindJID, id.JID})
	for _, s := range id.SIP {
		keys = append(keys, Key{KindAOR, s})
	}
	for _, t := range id.Tel {
		keys = append(keys, Key{KindTel, t})
	}
	return keys
}

// Sentinel errors. Test with errors.Is.
var (
	// ErrNotFound means no identity has the JID, AOR or number asked for.
	ErrNotFound = errors.New("identity: not found")
	// ErrConflict means a write would give a JID, AOR or number a second
	// owner. The returned error is a *ConflictError.
	ErrConflict = errors.New("identity: conflict")
	// ErrInvalid means an input failed normalisation. The returned error is
	// a *FieldError.
	ErrInvalid = errors.New("identity: invalid")
	// ErrUnavailable means the backend cannot be reached (Redis down); the
	// read cache may still answer lookups.
	ErrUnavailable = errors.New("identity: store unavailable")
	// ErrClosed means the store was closed.
	ErrClosed = errors.New("identity: store closed")
)

// ConflictError reports a key that already belongs to another identity.
type ConflictError struct {
	Key   Key    // the contested key
	Owner string // the JID that owns it
}

func (e *ConflictError) Error() string {
	if e.Key.Kind == KindJID {
		return fmt.Sprintf("identity: %s already exists", e.Key.Value)
	}
	return fmt.Sprintf("identity: %s %s already belongs to %s", e.Key.Kind, e.Key.Value, e.Owner)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// FieldError reports an input that failed normalisation, naming the field
// ("jid", "sip[1]", "tel[0]", "name", "uri") and the bad value.
type FieldError struct {
	Field string
	Value string
	Msg   string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("identity: %s: %s, got %q", e.Field, e.Msg, e.Value)
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// Op is the kind of change an Event reports.
type Op uint8

// Change operations.
const (
	OpPut    Op = iota + 1 // an identity was created or replaced
	OpDelete               // an identity was deleted
	// OpResync means the watcher may have missed changes (a dropped
	// subscription, a slow consumer): it must reload everything it keeps
	// (List) and carry on from Event.Rev.
	OpResync
)

func (o Op) String() string {
	switch o {
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	case OpResync:
		return "resync"
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// Event is one change of the map.
type Event struct {
	Op  Op
	Rev uint64 // store revision after the change
	JID string // the identity changed (empty for OpResync)
	// Identity is the new value for OpPut; for OpDelete the value before
	// deletion when the backend knows it (its keys let caches drop them).
	Identity Identity
}

// Tombstone records a deleted identity whose published traces (XEP-0152
// reach node, vCard numbers) the XMPP component may not have cleared yet:
// an identity deleted while no component was connected, or whose delete
// the change feed did not replay. Delete writes one in the same atomic
// step as the delete (replacing an older one of the JID); Create, Put and
// Import of the JID remove it in the same step as their write, so a live
// identity never has one. The component removes it with AckTombstone once
// it has cleared the user's data. A tombstone nobody acknowledges expires
// after the store's maximum age (DefaultTombstoneMaxAge): Tombstones
// leaves it out, and later Deletes remove it.
type Tombstone struct {
	JID  string    `json:"jid"`
	Rev  uint64    `json:"rev"`  // the store revision of the delete
	Time time.Time `json:"time"` // when it was deleted (the deleting process's clock)
}

// DefaultTombstoneMaxAge is how long a tombstone that nobody acknowledges
// is kept: long enough for a gateway whose component is down for weeks to
// clear the user's data when it comes back.
const DefaultTombstoneMaxAge = 30 * 24 * time.Hour

// tombstonePurgeBatch bounds how many expired tombstones one Delete
// removes (each Delete adds one, so the expired ones drain).
const tombstonePurgeBatch = 64

// Store is the identity map's backend. Implementations are safe for
// concurrent use; every method honours ctx's deadline. They store what they
// are given: callers normalise first (Normalizer, or Directory which does
// it for them).
//
// Every successful write increments the store's revision (a counter shared
// by all instances using the same backend) and emits one Event.
type Store interface {
	// Get returns the identity with the bare JID, or ErrNotFound.
	Get(ctx context.Context, jid string) (Identity, error)
	// Lookup returns the identity owning key, or ErrNotFound.
	Lookup(ctx context.Context, key Key) (Identity, error)
	// Create stores a new identity. It fails with a *ConflictError if the JID
	// exists or an AOR or number belongs to another identity, and then
	// changes nothing.
	Create(ctx context.Context, id Identity) (Identity, error)
	// Put creates or replaces the identity with id.JID. It fails with a
	// *ConflictError if an AOR or number belongs to another identity, and
	// then changes nothing. Keys the old value had and id lacks are freed,
	// and the credentials of the AORs it lacks are deleted.
	Put(ctx context.Context, id Identity) (Identity, error)
	// Delete removes the identity, frees its keys and deletes the
	// credentials of its AORs, or returns ErrNotFound.
	Delete(ctx context.Context, jid string) error
	// List returns up to limit identities with JIDs greater than after, in
	// JID order, and the cursor for the next page ("" at the end).
	List(ctx context.Context, after string, limit int) ([]Identity, string, error)
	// Import creates all ids in one transaction: either every one is stored,
	// or (on any conflict, with each other or with stored identities)
	// none is, and the error says which.
	Import(ctx context.Context, ids []Identity) error
	// Count returns the number of identities.
	Count(ctx context.Context) (int, error)
	// Rev returns the current revision.
	Rev(ctx context.Context) (uint64, error)
	// Watch delivers every change after revision from until ctx ends, then
	// closes the channel. When the store cannot prove that no change was
	// missed (from is too old, the subscription dropped, the consumer was
	// too slow), it sends an OpResync event instead.
	Watch(ctx context.Context, from uint64) (<-chan Event, error)
	// SetCredential stores c as the digest credential of aor, an AOR of the
	// identity jid, replacing any previous one, and records jid in it. It
	// fails with ErrNotFound if jid does not exist and with a *FieldError
	// (field "sip") if jid does not own aor, and then changes nothing.
	// Credentials change neither the revision nor the change feed.
	SetCredential(ctx context.Context, jid, aor string, c Credential) error
	// Credential returns the credential of aor, or ErrNotFound if none is
	// set or the identity that set it no longer owns aor.
	Credential(ctx context.Context, aor string) (Credential, error)
	// DeleteCredential removes the credential of aor, an AOR of jid, or
	// returns ErrNotFound.
	DeleteCredential(ctx context.Context, jid, aor string) error
	// Tombstones returns up to limit tombstones (limit <= 0: all) with JIDs
	// greater than after, in JID order, and the cursor for the next page
	// ("" at the end). Tombstones older than the store's maximum age are
	// left out. See Tombstone.
	Tombstones(ctx context.Context, after string, limit int) ([]Tombstone, string, error)
	// AckTombstone removes the tombstone of jid if its Rev is at most rev
	// (the revision of the delete whose traces the caller cleared), and
	// reports whether it did. A newer tombstone (the JID was deleted again
	// after rev) stays; acknowledging one that is gone is not an error.
	// Tombstones change neither the revision nor the change feed.
	AckTombstone(ctx context.Context, jid string, rev uint64) (bool, error)
	// Ping checks that the backend answers.
	Ping(ctx context.Context) error
	// Close releases the backend. Watch channels close.
	Close() error
}
