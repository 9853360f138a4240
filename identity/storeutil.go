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

// storeTx is one atomic write step of the bolt store (a bbolt write
// transaction) or the memory store (under its write lock), as applyPut and
// applyDelete drive it. Its writes are undone with the step when one fails
// (bolt) or cannot fail (memory).
type storeTx interface {
	// owner reports which JID owns a key ("" if none).
	owner(Key) (string, error)
	// get returns jid's stored identity.
	get(jid string) (Identity, bool, error)
	// rev is the store's revision before this write.
	rev() uint64
	// unindex removes jid's index entries for keys (never its JID) and
	// the credentials of aors.
	unindex(jid string, keys []Key, aors []string) error
	// put stores id (Version set) and indexes every key of it; added
	// reports a JID the store did not hold.
	put(id Identity, added bool) error
	// remove deletes jid's identity, whose index entries other than the
	// JID are gone already.
	remove(jid string) error
	// dropTombstone removes jid's tombstone, if any.
	dropTombstone(jid string) error
	// putTombstone replaces t.JID's tombstone with t after removing up
	// to tombstonePurgeBatch expired tombstones.
	putTombstone(t Tombstone) error
}

// applyPut writes id (checked with checkStorable, owned by the caller) in
// tx, as Create (create set) or Put: it fails on a conflict before writing
// anything, replaces the stored identity's index entries and the
// credentials of AORs id no longer lists, clears a tombstone and gives id
// the next revision. The caller records the event's revision and
// publishes it.
func applyPut(tx storeTx, id Identity, create bool) (Event, error) {
	if err := checkClaims(id, create, tx.owner); err != nil {
		return Event{}, err
	}
	old, existed, err := tx.get(id.JID)
	if err != nil {
		return Event{}, err
	}
	if existed {
		keep := map[Key]bool{}
		for _, k := range id.Keys()[1:] {
			keep[k] = true
		}
		var stale []Key
		for _, k := range old.Keys()[1:] {
			if !keep[k] {
				stale = append(stale, k)
			}
		}
		if err := tx.unindex(id.JID, stale, staleAORs(&old, &id)); err != nil {
			return Event{}, err
		}
	}
	if err := tx.dropTombstone(id.JID); err != nil {
		return Event{}, err
	}
	id.Version = tx.rev() + 1
	if err := tx.put(id, !existed); err != nil {
		return Event{}, err
	}
	return Event{Op: OpPut, Rev: id.Version, JID: id.JID, Identity: id}, nil
}

// applyDelete deletes jid's identity, its index entries and credentials
// in tx and leaves a tombstone of the next revision, deleted at now. The
// caller records the event's revision and publishes it.
func applyDelete(tx storeTx, jid string, now time.Time) (Event, error) {
	old, ok, err := tx.get(jid)
	if err != nil {
		return Event{}, err
	}
	if !ok {
		return Event{}, fmt.Errorf("%w: jid %s", ErrNotFound, jid)
	}
	if err := tx.unindex(jid, old.Keys()[1:], old.SIP); err != nil {
		return Event{}, err
	}
	if err := tx.remove(jid); err != nil {
		return Event{}, err
	}
	rev := tx.rev() + 1
	if err := tx.putTombstone(Tombstone{JID: jid, Rev: rev, Time: now}); err != nil {
		return Event{}, err
	}
	return Event{Op: OpDelete, Rev: rev, JID: jid, Identity: old}, nil
}
