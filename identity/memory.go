package identity

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// MemoryStore is a Store that keeps everything in memory: for tests of the
// packages that use identities, and for trying the gateway out. It loses
// everything when the process ends. It keeps the last 10,000 events to
// replay a Watch from an older revision; older ones get OpResync.
//
// Create it with NewMemoryStore. It is safe for concurrent use.
type MemoryStore struct {
	feed *feed

	mu     sync.RWMutex
	closed bool
	rev    uint64
	byJID  map[string]*Identity
	jids   []string              // sorted, for List
	owner  map[Key]string        // every key -> its identity's JID
	creds  map[string]Credential // AOR -> its digest credential
	log    []Event               // the most recent events, in order
	logMax int
	tombs  map[string]Tombstone // JID -> its tombstone
	maxAge time.Duration        // of tombstones
	now    func() time.Time
}

// MemoryOptions tunes a MemoryStore. Zero values take the defaults in
// brackets.
type MemoryOptions struct {
	// TombstoneMaxAge is how long an unacknowledged tombstone is kept
	// [DefaultTombstoneMaxAge].
	TombstoneMaxAge time.Duration
	// Now is the clock of tombstones [time.Now]; for tests.
	Now func() time.Time
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty MemoryStore with the default options.
func NewMemoryStore() *MemoryStore { return NewMemoryStoreWith(MemoryOptions{}) }

// NewMemoryStoreWith returns an empty MemoryStore with opts.
func NewMemoryStoreWith(opts MemoryOptions) *MemoryStore {
	if opts.TombstoneMaxAge <= 0 {
		opts.TombstoneMaxAge = DefaultTombstoneMaxAge
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &MemoryStore{
		byJID:  map[string]*Identity{},
		owner:  map[Key]string{},
		creds:  map[string]Credential{},
		logMax: defaultLogSize,
		tombs:  map[string]Tombstone{},
		maxAge: opts.TombstoneMaxAge,
		now:    opts.Now,
	}
	s.feed = newFeed(0, 0, s.replay)
	return s
}

func (s *MemoryStore) replay(from, to uint64) ([]Event, bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if len(s.log) == 0 || s.log[0].Rev > from+1 {
		return nil, false, nil
	}
	i, _ := slices.BinarySearchFunc(s.log, from+1, func(e Event, r uint64) int { return cmpRev(e.Rev, r) })
	var out []Event
	for _, e := range s.log[i:] {
		if e.Rev > to {
			break
		}
		out = append(out, e)
	}
	return out, true, nil
}

func cmpRev(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// begin checks ctx and the closed flag; the caller holds mu.
func (s *MemoryStore) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed {
		return ErrClosed
	}
	return nil
}

func (s *MemoryStore) ownerOf(k Key) (string, error) { return s.owner[k], nil }

// Get implements Store.
func (s *MemoryStore) Get(ctx context.Context, jid string) (Identity, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(ctx); err != nil {
		return Identity{}, err
	}
	p, ok := s.byJID[jid]
	if !ok {
		return Identity{}, fmt.Errorf("%w: jid %s", ErrNotFound, jid)
	}
	return p.Clone(), nil
}

// Lookup implements Store.
func (s *MemoryStore) Lookup(ctx context.Context, key Key) (Identity, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(ctx); err != nil {
		return Identity{}, err
	}
	jid, ok := s.owner[key]
	if !ok {
		return Identity{}, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return s.byJID[jid].Clone(), nil
}

// Create implements Store.
func (s *MemoryStore) Create(ctx context.Context, id Identity) (Identity, error) {
	return s.write(ctx, id, true)
}

// Put implements Store.
func (s *MemoryStore) Put(ctx context.Context, id Identity) (Identity, error) {
	return s.write(ctx, id, false)
}

func (s *MemoryStore) write(ctx context.Context, id Identity, create bool) (Identity, error) {
	if err := checkStorable(id); err != nil {
		return Identity{}, err
	}
	id = id.Clone()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return Identity{}, err
	}
	ev, err := applyPut(memoryTx{s}, id, create)
	if err != nil {
		return Identity{}, err
	}
	s.rev = ev.Rev
	s.emit([]Event{ev})
	return ev.Identity.Clone(), nil
}

// Delete implements Store.
func (s *MemoryStore) Delete(ctx context.Context, jid string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return err
	}
	ev, err := applyDelete(memoryTx{s}, jid, s.now())
	if err != nil {
		return err
	}
	s.rev = ev.Rev
	s.emit([]Event{ev})
	return nil
}

// memoryTx is s, under its write lock, as applyPut and applyDelete drive
// it. Its steps cannot fail.
type memoryTx struct{ s *MemoryStore }

func (m memoryTx) owner(k Key) (string, error) { return m.s.owner[k], nil }

func (m memoryTx) get(jid string) (Identity, bool, error) {
	p, ok := m.s.byJID[jid]
	if !ok {
		return Identity{}, false, nil
	}
	return p.Clone(), true, nil
}

func (m memoryTx) rev() uint64 { return m.s.rev }

func (m memoryTx) unindex(jid string, keys []Key, aors []string) error {
	for _, k := range keys {
		if m.s.owner[k] == jid {
			delete(m.s.owner, k)
		}
	}
	for _, a := range aors {
		delete(m.s.creds, a)
	}
	return nil
}

// put stores a copy of id: the event holds id itself.
func (m memoryTx) put(id Identity, added bool) error {
	if added {
		m.s.insertJID(id.JID)
	}
	c := id.Clone()
	m.s.index(&c)
	return nil
}

func (m memoryTx) remove(jid string) error {
	delete(m.s.owner, Key{KindJID, jid})
	delete(m.s.byJID, jid)
	if i, found := slices.BinarySearch(m.s.jids, jid); found {
		m.s.jids = slices.Delete(m.s.jids, i, i+1)
	}
	return nil
}

func (m memoryTx) dropTombstone(jid string) error {
	delete(m.s.tombs, jid) // a live identity has none
	return nil
}

func (m memoryTx) putTombstone(t Tombstone) error {
	m.s.purgeTombstones(t.Time)
	m.s.tombs[t.JID] = t
	return nil
}

// purgeTombstones removes up to tombstonePurgeBatch expired tombstones;
// the caller holds mu.
func (s *MemoryStore) purgeTombstones(now time.Time) {
	n := 0
	for j, t := range s.tombs {
		if n == tombstonePurgeBatch {
			return
		}
		if tombstoneExpired(t, now, s.maxAge) {
			delete(s.tombs, j)
			n++
		}
	}
}

// Tombstones implements Store.
func (s *MemoryStore) Tombstones(ctx context.Context, after string, limit int) ([]Tombstone, string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(ctx); err != nil {
		return nil, "", err
	}
	now := s.now()
	var all []Tombstone
	for _, t := range s.tombs {
		if t.JID > after && !tombstoneExpired(t, now, s.maxAge) {
			all = append(all, t)
		}
	}
	slices.SortFunc(all, func(a, b Tombstone) int { return cmpString(a.JID, b.JID) })
	if limit > 0 && len(all) > limit {
		return all[:limit], all[limit-1].JID, nil
	}
	return all, "", nil
}

// AckTombstone implements Store.
func (s *MemoryStore) AckTombstone(ctx context.Context, jid string, rev uint64) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return false, err
	}
	t, ok := s.tombs[jid]
	if !ok || t.Rev > rev {
		return false, nil
	}
	delete(s.tombs, jid)
	return true, nil
}

// List implements Store.
func (s *MemoryStore) List(ctx context.Context, after string, limit int) ([]Identity, string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(ctx); err != nil {
		return nil, "", err
	}
	if limit <= 0 {
		limit = len(s.jids)
	}
	i, found := slices.BinarySearch(s.jids, after)
	if found {
		i++
	}
	out := make([]Identity, 0, min(limit, len(s.jids)-i))
	for ; i < len(s.jids) && len(out) < limit; i++ {
		out = append(out, s.byJID[s.jids[i]].Clone())
	}
	next := ""
	if i < len(s.jids) {
		next = out[len(out)-1].JID
	}
	return out, next, nil
}

// Import implements Store.
func (s *MemoryStore) Import(ctx context.Context, ids []Identity) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := checkBatch(ids, s.ownerOf); err != nil {
		return err
	}
	evs := make([]Event, 0, min(len(ids), s.logMax))
	for i, id := range ids {
		id = id.Clone()
		s.rev++
		id.Version = s.rev
		p := &id
		delete(s.tombs, id.JID)
		s.byJID[id.JID] = p
		s.index(p)
		if len(ids)-i <= s.logMax {
			evs = append(evs, Event{Op: OpPut, Rev: s.rev, JID: id.JID, Identity: id.Clone()})
		}
	}
	s.jids = append(s.jids, make([]string, 0, len(ids))...)
	for _, id := range ids {
		s.jids = append(s.jids, id.JID)
	}
	slices.Sort(s.jids)
	if len(evs) < len(ids) {
		s.log = s.log[:0] // the events before evs are gone: replays must resync
	}
	s.emit(evs)
	return nil
}

// Count implements Store.
func (s *MemoryStore) Count(ctx context.Context) (int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	return len(s.byJID), nil
}

// Rev implements Store.
func (s *MemoryStore) Rev(ctx context.Context) (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	return s.rev, nil
}

// Watch implements Store. It replays from the last 10,000 events and sends
// OpResync when from is older than that.
func (s *MemoryStore) Watch(ctx context.Context, from uint64) (<-chan Event, error) {
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	return s.feed.watch(ctx, from)
}

// SetCredential implements Store.
func (s *MemoryStore) SetCredential(ctx context.Context, jid, aor string, c Credential) error {
	if err := c.valid(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return err
	}
	if _, ok := s.byJID[jid]; !ok {
		return fmt.Errorf("%w: jid %s", ErrNotFound, jid)
	}
	if s.owner[Key{KindAOR, aor}] != jid {
		return notOwnAOR(jid, aor)
	}
	c.JID = jid
	s.creds[aor] = c
	return nil
}

// Credential implements Store.
func (s *MemoryStore) Credential(ctx context.Context, aor string) (Credential, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(ctx); err != nil {
		return Credential{}, err
	}
	c, ok := s.creds[aor]
	if !ok || s.owner[Key{KindAOR, aor}] != c.JID {
		return Credential{}, fmt.Errorf("%w: credential of %s", ErrNotFound, aor)
	}
	return c, nil
}

// DeleteCredential implements Store.
func (s *MemoryStore) DeleteCredential(ctx context.Context, jid, aor string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return err
	}
	c, ok := s.creds[aor]
	if !ok || c.JID != jid || s.owner[Key{KindAOR, aor}] != jid {
		return fmt.Errorf("%w: credential of %s", ErrNotFound, aor)
	}
	delete(s.creds, aor)
	return nil
}

// Ping implements Store.
func (s *MemoryStore) Ping(ctx context.Context) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.check(ctx)
}

// Close implements Store. Watch channels close; later calls return
// ErrClosed. Closing twice is harmless.
func (s *MemoryStore) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.feed.close()
	return nil
}

// emit appends evs to the log and publishes them; the caller holds mu.
func (s *MemoryStore) emit(evs []Event) {
	s.log = append(s.log, evs...)
	if len(s.log) > 2*s.logMax {
		s.log = slices.Clone(s.log[len(s.log)-s.logMax:])
	}
	s.feed.publish(evs)
}

func (s *MemoryStore) index(p *Identity) {
	s.byJID[p.JID] = p
	for _, k := range p.Keys() {
		s.owner[k] = p.JID
	}
}

func (s *MemoryStore) insertJID(jid string) {
	i, found := slices.BinarySearch(s.jids, jid)
	if !found {
		s.jids = slices.Insert(s.jids, i, jid)
	}
}
