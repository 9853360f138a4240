package identity

import (
	"fmt"
	"time"
)

// defaultLogSize is how many recent events the memory and bolt stores keep
// to replay a Watch that starts from an older revision.
const defaultLogSize = 10000

// checkStorable rejects what no store can hold. Stores do not normalise;
// this only catches a missing JID.
func checkStorable(id Identity) error {
	if id.JID == "" {
		return &FieldError{Field: "jid", Value: "", Msg: "empty"}
	}
	return nil
}

// ownerFunc reports which JID owns key in a store ("" if none).
type ownerFunc func(Key) (string, error)

// checkClaims returns a *ConflictError for the first AOR or number of id
// owned by an identity other than id.JID. With create set, an existing JID
// is a conflict too.
func checkClaims(id Identity, create bool, owner ownerFunc) error {
	for i, k := range id.Keys() {
		o, err := owner(k)
		if err != nil {
			return err
		}
		if o == "" {
			continue
		}
		if i == 0 { // the JID itself
			if create {
				return &ConflictError{Key: k, Owner: o}
			}
			continue
		}
		if o != id.JID {
			return &ConflictError{Key: k, Owner: o}
		}
	}
	return nil
}

// checkBatch checks an Import batch against itself and the store: every
// JID new, every AOR and number unowned and listed by one identity of the
// batch only.
func checkBatch(ids []Identity, owner ownerFunc) error {
	claimed := make(map[Key]string, len(ids)*3)
	for i, id := range ids {
		if err := checkStorable(id); err != nil {
			return fmt.Errorf("identity: import row %d: %w", i+1, err)
		}
		for _, k := range id.Keys() {
			if o, dup := claimed[k]; dup && o != id.JID {
				return &ConflictError{Key: k, Owner: o}
			} else if dup && k.Kind == KindJID {
				return &ConflictError{Key: k, Owner: o}
			}
			claimed[k] = id.JID
		}
	}
	for _, id := range ids {
		if err := checkClaims(id, true, owner); err != nil {
			return err
		}
	}
	return nil
}

// tombstoneExpired reports whether t is older than maxAge at now.
func tombstoneExpired(t Tombstone, now time.Time, maxAge time.Duration) bool {
	return now.Sub(t.Time) > maxAge
}
