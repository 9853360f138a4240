package identity

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// BoltOptions tunes a BoltStore. Zero values take the defaults in brackets.
type BoltOptions struct {
	// LockTimeout is how long OpenBolt waits for the file lock another
	// process holds [1s].
	LockTimeout time.Duration
	// LogSize is how many recent changes the store keeps to replay a Watch
	// from an older revision; a watcher further behind gets OpResync
	// [10000].
	LogSize int
	// WatchBuffer is each watcher's event buffer [1024]. A watcher that
	// falls further behind catches up from the log.
	WatchBuffer int
	// TombstoneMaxAge is how long an unacknowledged tombstone is kept
	// [DefaultTombstoneMaxAge].
	TombstoneMaxAge time.Duration
	// Now is the clock of tombstones [time.Now]; for tests.
	Now func() time.Time
	// NoSync skips fsync after each write. Only for tests and benchmarks: a
	// crash of the machine (not of the process) can lose or corrupt data.
	NoSync bool
}

// BoltStore is the embedded backend: a Store in one bbolt file (a B+tree
// with copy-on-write pages and fsync at commit), so a restart or a kill -9
// loses no acknowledged write, and a write, an Import of any size
// included, is either entirely on disk or not at all. One process at a
// time holds the file; its change feed is in-process.
//
// The file has seven buckets: "identities" (JID -> JSON), "index" (key
// such as "tel:+15551230001" -> JID), "meta" (revision, count, schema),
// "log" (revision, 8 bytes big-endian -> JSON event; the last LogSize),
// "credentials" (AOR -> JSON Credential, hashes only), "tombstones" (JID
// -> JSON {"rev","time"}, time in Unix nanoseconds) and "tombtimes"
// (deletion time, 8 bytes big-endian Unix nanoseconds, then the JID ->
// empty; the expiry order). Files written before tombstones existed get
// the two buckets when opened; older versions of cusax-gw ignore them.
//
// Open it with OpenBolt. It is safe for concurrent use.
type BoltStore struct {
	db      *bolt.DB
	path    string
	logSize int
	maxAge  time.Duration // of tombstones
	now     func() time.Time
	feed    *feed
	wmu     sync.Mutex // orders commits with their publication
	closed  atomic.Bool
	once    sync.Once

	// hook, when set by tests, is called at named points of a write.
	hook func(stage string)
}

var _ Store = (*BoltStore)(nil)

var (
	bktIdentities = []byte("identities")
	bktIndex      = []byte("index")
	bktMeta       = []byte("meta")
	bktLog        = []byte("log")
	bktCreds      = []byte("credentials")
	bktTombs      = []byte("tombstones")
	bktTombTimes  = []byte("tombtimes")

	metaRev    = []byte("rev")
	metaCount  = []byte("count")
	metaSchema = []byte("schema")
)

const boltSchema = 1

// OpenBolt opens or creates the store file at path. It creates missing
// parent directories (mode 0700) and the file (mode 0600). If another
// process holds the file, it fails after opts.LockTimeout with an error
// saying so.
func OpenBolt(path string, opts BoltOptions) (*BoltStore, error) {
	if path == "" {
		return nil, errors.New("identity: embedded store: empty path")
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	if opts.LogSize <= 0 {
		opts.LogSize = defaultLogSize
	}
	if opts.TombstoneMaxAge <= 0 {
		opts.TombstoneMaxAge = DefaultTombstoneMaxAge
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("identity: embedded store: %w", err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      opts.LockTimeout,
		NoSync:       opts.NoSync,
		FreelistType: bolt.FreelistMapType,
		// Address space, not memory: growing the map during a commit
		// re-copies every dirty node, which dominated a large Import.
		InitialMmapSize: 256 << 20,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("identity: store file %s is locked by another process", path)
	}
	if err != nil {
		return nil, fmt.Errorf("identity: open store file %s: %w", path, err)
	}
	var rev uint64
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bktIdentities, bktIndex, bktMeta, bktLog, bktCreds, bktTombs, bktTombTimes} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bktMeta)
		switch v := getUint(meta, metaSchema); {
		case v == 0:
			putUint(meta, metaSchema, boltSchema)
		case v > boltSchema:
			return fmt.Errorf("written by a newer cusax-gw (schema %d, this one knows %d)", v, boltSchema)
		}
		rev = getUint(meta, metaRev)
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("identity: store file %s: %w", path, err)
	}
	s := &BoltStore{db: db, path: path, logSize: opts.LogSize, maxAge: opts.TombstoneMaxAge, now: opts.Now}
	s.feed = newFeed(rev, opts.WatchBuffer, s.replay)
	return s, nil
}

// Path returns the store file's path.
func (s *BoltStore) Path() string { return s.path }

func getUint(b *bolt.Bucket, k []byte) uint64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putUint(b *bolt.Bucket, k []byte, v uint64) error {
	return b.Put(k, binary.BigEndian.AppendUint64(nil, v))
}

func revKey(rev uint64) []byte { return binary.BigEndian.AppendUint64(nil, rev) }

func indexKey(k Key) []byte { return []byte(k.String()) }

// logEntry is an event as the log bucket stores it (the key holds Rev).
type logEntry struct {
	Op       Op        `json:"op"`
	JID      string    `json:"jid"`
	Identity *Identity `json:"identity,omitempty"`
}

// begin checks ctx and whether the store is closed.
func (s *BoltStore) begin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}

// wrap translates bbolt's errors.
func (s *BoltStore) wrap(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, bolterrors.ErrDatabaseNotOpen), errors.Is(err, bolterrors.ErrTxClosed) && s.closed.Load():
		return ErrClosed
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrConflict), errors.Is(err, ErrInvalid),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return fmt.Errorf("identity: store file %s: %w", s.path, err)
}

func (s *BoltStore) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	return s.wrap(s.db.View(fn))
}

func readIdentity(tx *bolt.Tx, jid string) (Identity, bool, error) {
	v := tx.Bucket(bktIdentities).Get([]byte(jid))
	if v == nil {
		return Identity{}, false, nil
	}
	var id Identity
	if err := json.Unmarshal(v, &id); err != nil {
		return Identity{}, false, fmt.Errorf("corrupt identity %q: %w", jid, err)
	}
	return id, true, nil
}

// Get implements Store.
func (s *BoltStore) Get(ctx context.Context, jid string) (Identity, error) {
	var id Identity
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var ok bool
		var err error
		if id, ok, err = readIdentity(tx, jid); err == nil && !ok {
			err = fmt.Errorf("%w: jid %s", ErrNotFound, jid)
		}
		return err
	})
	return id, err
}

// Lookup implements Store.
func (s *BoltStore) Lookup(ctx context.Context, key Key) (Identity, error) {
	if key.Kind == KindJID {
		return s.Get(ctx, key.Value)
	}
	var id Identity
	err := s.view(ctx, func(tx *bolt.Tx) error {
		jid := tx.Bucket(bktIndex).Get(indexKey(key))
		if jid == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, key)
		}
		var ok bool
		var err error
		if id, ok, err = readIdentity(tx, string(jid)); err == nil && !ok {
			err = fmt.Errorf("index entry %s points to missing identity %q", key, jid)
		}
		return err
	})
	return id, err
}

// owner returns an ownerFunc reading tx.
func owner(tx *bolt.Tx) ownerFunc {
	ids, idx := tx.Bucket(bktIdentities), tx.Bucket(bktIndex)
	return func(k Key) (string, error) {
		if k.Kind == KindJID {
			if ids.Get([]byte(k.Value)) != nil {
				return k.Value, nil
			}
			return "", nil
		}
		return string(idx.Get(indexKey(k))), nil
	}
}

// Create implements Store.
func (s *BoltStore) Create(ctx context.Context, id Identity) (Identity, error) {
	return s.write(ctx, id, true)
}

// Put implements Store.
func (s *BoltStore) Put(ctx context.Context, id Identity) (Identity, error) {
	return s.write(ctx, id, false)
}

func (s *BoltStore) write(ctx context.Context, id Identity, create bool) (Identity, error) {
	if err := checkStorable(id); err != nil {
		return Identity{}, err
	}
	id = id.Clone()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.begin(ctx); err != nil {
		return Identity{}, err
	}
	var ev Event
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if ev, err = applyPut(boltTx{s, tx}, id, create); err != nil {
			return err
		}
		return s.commitRev(tx, ev.Rev, []Event{ev})
	})
	if err != nil {
		return Identity{}, s.wrap(err)
	}
	s.feed.publish([]Event{ev})
	return ev.Identity.Clone(), nil
}

// boltTx is a write transaction of s as applyPut and applyDelete drive it.
type boltTx struct {
	s  *BoltStore
	tx *bolt.Tx
}

func (b boltTx) owner(k Key) (string, error) { return owner(b.tx)(k) }

func (b boltTx) get(jid string) (Identity, bool, error) { return readIdentity(b.tx, jid) }

func (b boltTx) rev() uint64 { return getUint(b.tx.Bucket(bktMeta), metaRev) }

func (b boltTx) unindex(_ string, keys []Key, aors []string) error {
	idx, creds := b.tx.Bucket(bktIndex), b.tx.Bucket(bktCreds)
	for _, k := range keys {
		if err := idx.Delete(indexKey(k)); err != nil {
			return err
		}
	}
	for _, a := range aors {
		if err := creds.Delete([]byte(a)); err != nil {
			return err
		}
	}
	return nil
}

func (b boltTx) put(id Identity, added bool) error {
	if meta := b.tx.Bucket(bktMeta); added {
		if err := putUint(meta, metaCount, getUint(meta, metaCount)+1); err != nil {
			return err
		}
	}
	return putIdentity(b.tx.Bucket(bktIdentities), b.tx.Bucket(bktIndex), id)
}

func (b boltTx) remove(jid string) error {
	if err := b.tx.Bucket(bktIdentities).Delete([]byte(jid)); err != nil {
		return err
	}
	meta := b.tx.Bucket(bktMeta)
	return putUint(meta, metaCount, getUint(meta, metaCount)-1)
}

func (b boltTx) dropTombstone(jid string) error { return dropTombstone(b.tx, jid) }

func (b boltTx) putTombstone(t Tombstone) error { return b.s.putTombstone(b.tx, t) }

func putIdentity(ids, idx *bolt.Bucket, id Identity) error {
	v, err := json.Marshal(id)
	if err != nil {
		return err
	}
	if err := ids.Put([]byte(id.JID), v); err != nil {
		return err
	}
	for _, k := range id.Keys()[1:] {
		if err := idx.Put(indexKey(k), []byte(id.JID)); err != nil {
			return err
		}
	}
	return nil
}

// commitRev records rev as the current revision, appends evs (the last
// events up to rev) to the log and trims the log to logSize entries.
func (s *BoltStore) commitRev(tx *bolt.Tx, rev uint64, evs []Event) error {
	if err := putUint(tx.Bucket(bktMeta), metaRev, rev); err != nil {
		return err
	}
	log := tx.Bucket(bktLog)
	for _, ev := range evs {
		e := logEntry{Op: ev.Op, JID: ev.JID}
		if ev.Identity.JID != "" {
			e.Identity = &ev.Identity
		}
		v, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if err := log.Put(revKey(ev.Rev), v); err != nil {
			return err
		}
	}
	if rev <= uint64(s.logSize) {
		return nil
	}
	cutoff := revKey(rev - uint64(s.logSize)) // delete keys <= cutoff
	c := log.Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k, cutoff) <= 0; k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements Store.
func (s *BoltStore) Delete(ctx context.Context, jid string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.begin(ctx); err != nil {
		return err
	}
	var ev Event
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if ev, err = applyDelete(boltTx{s, tx}, jid, s.now()); err != nil {
			return err
		}
		return s.commitRev(tx, ev.Rev, []Event{ev})
	})
	if err != nil {
		return s.wrap(err)
	}
	s.feed.publish([]Event{ev})
	return nil
}

// List implements Store. A limit <= 0 means no limit.
func (s *BoltStore) List(ctx context.Context, after string, limit int) ([]Identity, string, error) {
	var out []Identity
	next := ""
	err := s.view(ctx, func(tx *bolt.Tx) error {
		c := tx.Bucket(bktIdentities).Cursor()
		k, v := c.Seek([]byte(after))
		if k != nil && string(k) == after {
			k, v = c.Next()
		}
		for ; k != nil; k, v = c.Next() {
			if limit > 0 && len(out) == limit {
				next = out[len(out)-1].JID
				break
			}
			var id Identity
			if err := json.Unmarshal(v, &id); err != nil {
				return fmt.Errorf("corrupt identity %q: %w", k, err)
			}
			out = append(out, id)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// Import implements Store: one bbolt transaction, so all or nothing even
// if the process dies mid-way. Each identity gets its own revision; the
// log keeps the last LogSize of them.
func (s *BoltStore) Import(ctx context.Context, ids []Identity) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.begin(ctx); err != nil {
		return err
	}
	if len(ids) == 0 {
		return nil
	}
	var evs []Event
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := checkBatch(ids, owner(tx)); err != nil {
			return err
		}
		s.runHook("import:checked")
		b, idx, meta := tx.Bucket(bktIdentities), tx.Bucket(bktIndex), tx.Bucket(bktMeta)
		rev := getUint(meta, metaRev)
		first := rev + 1
		// bbolt splits nodes only at commit, so within one transaction a
		// put in the middle of a node moves everything after it: inserting
		// in key order (an append each time) keeps a 100,000-identity
		// Import linear instead of quadratic.
		b.FillPercent, idx.FillPercent = 0.9, 0.9
		order := make([]int, len(ids))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, c int) int { return cmpString(ids[a].JID, ids[c].JID) })
		stored := make([]Identity, len(ids))
		var index []kv
		for n, i := range order {
			if n%4096 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			id := ids[i].Clone()
			id.Version = first + uint64(i)
			v, err := json.Marshal(id)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(id.JID), v); err != nil {
				return err
			}
			if err := dropTombstone(tx, id.JID); err != nil {
				return err
			}
			for _, k := range id.Keys()[1:] {
				index = append(index, kv{indexKey(k), []byte(id.JID)})
			}
			stored[i] = id
		}
		slices.SortFunc(index, func(a, c kv) int { return bytes.Compare(a.k, c.k) })
		for n, e := range index {
			if n%4096 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if err := idx.Put(e.k, e.v); err != nil {
				return err
			}
		}
		s.runHook("import:written")
		rev += uint64(len(ids))
		if err := putUint(meta, metaCount, getUint(meta, metaCount)+uint64(len(ids))); err != nil {
			return err
		}
		keep := stored[max(0, len(stored)-s.logSize):]
		evs = make([]Event, len(keep))
		for i, id := range keep {
			evs[i] = Event{Op: OpPut, Rev: id.Version, JID: id.JID, Identity: id}
		}
		return s.commitRev(tx, rev, evs)
	})
	if err != nil {
		return s.wrap(err)
	}
	s.feed.publish(evs)
	return nil
}

type kv struct{ k, v []byte }

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (s *BoltStore) runHook(stage string) {
	if s.hook != nil {
		s.hook(stage)
	}
}

// Count implements Store.
func (s *BoltStore) Count(ctx context.Context) (int, error) {
	var n uint64
	err := s.view(ctx, func(tx *bolt.Tx) error {
		n = getUint(tx.Bucket(bktMeta), metaCount)
		return nil
	})
	return int(n), err
}

// Rev implements Store.
func (s *BoltStore) Rev(ctx context.Context) (uint64, error) {
	var rev uint64
	err := s.view(ctx, func(tx *bolt.Tx) error {
		rev = getUint(tx.Bucket(bktMeta), metaRev)
		return nil
	})
	return rev, err
}

// Watch implements Store. Changes after from are replayed from the log
// when it still holds them (the last LogSize), else the channel starts
// with OpResync.
func (s *BoltStore) Watch(ctx context.Context, from uint64) (<-chan Event, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	return s.feed.watch(ctx, from)
}

// replay reads the events with from < Rev <= to from the log.
func (s *BoltStore) replay(from, to uint64) ([]Event, bool, error) {
	var out []Event
	ok := false
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bktLog).Cursor()
		k, _ := c.First()
		if k == nil || binary.BigEndian.Uint64(k) > from+1 {
			return nil
		}
		ok = true
		for k, v := c.Seek(revKey(from + 1)); k != nil; k, v = c.Next() {
			rev := binary.BigEndian.Uint64(k)
			if rev > to {
				break
			}
			var e logEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("corrupt log entry %d: %w", rev, err)
			}
			ev := Event{Op: e.Op, Rev: rev, JID: e.JID}
			if e.Identity != nil {
				ev.Identity = *e.Identity
			}
			out = append(out, ev)
		}
		return nil
	})
	return out, ok, err
}

// SetCredential implements Store.
func (s *BoltStore) SetCredential(ctx context.Context, jid, aor string, c Credential) error {
	if err := c.valid(); err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.begin(ctx); err != nil {
		return err
	}
	return s.wrap(s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bktIdentities).Get([]byte(jid)) == nil {
			return fmt.Errorf("%w: jid %s", ErrNotFound, jid)
		}
		if string(tx.Bucket(bktIndex).Get(indexKey(Key{KindAOR, aor}))) != jid {
			return notOwnAOR(jid, aor)
		}
		c.JID = jid
		v, err := json.Marshal(c)
		if err != nil {
			return err
		}
		return tx.Bucket(bktCreds).Put([]byte(aor), v)
	}))
}

// readCredential returns the credential of aor while its identity still
// owns aor.
func readCredential(tx *bolt.Tx, aor string) (Credential, bool, error) {
	v := tx.Bucket(bktCreds).Get([]byte(aor))
	if v == nil {
		return Credential{}, false, nil
	}
	var c Credential
	if err := json.Unmarshal(v, &c); err != nil {
		return Credential{}, false, fmt.Errorf("corrupt credential of %q: %w", aor, err)
	}
	if string(tx.Bucket(bktIndex).Get(indexKey(Key{KindAOR, aor}))) != c.JID {
		return Credential{}, false, nil
	}
	return c, true, nil
}

// Credential implements Store.
func (s *BoltStore) Credential(ctx context.Context, aor string) (Credential, error) {
	var c Credential
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var ok bool
		var err error
		if c, ok, err = readCredential(tx, aor); err == nil && !ok {
			err = fmt.Errorf("%w: credential of %s", ErrNotFound, aor)
		}
		return err
	})
	return c, err
}

// DeleteCredential implements Store.
func (s *BoltStore) DeleteCredential(ctx context.Context, jid, aor string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.begin(ctx); err != nil {
		return err
	}
	return s.wrap(s.db.Update(func(tx *bolt.Tx) error {
		c, ok, err := readCredential(tx, aor)
		if err != nil {
			return err
		}
		if !ok || c.JID != jid {
			return fmt.Errorf("%w: credential of %s", ErrNotFound, aor)
		}
		return tx.Bucket(bktCreds).Delete([]byte(aor))
	}))
}

// boltTomb is a tombstone as the tombstones bucket stores it.
type boltTomb struct {
	Rev  uint64 `json:"rev"`
	Time int64  `json:"time"` // Unix nanoseconds
}

func tombTimeKey(nanos int64, jid string) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(nanos)), jid...)
}

func readTomb(tx *bolt.Tx, jid string) (boltTomb, bool, error) {
	v := tx.Bucket(bktTombs).Get([]byte(jid))
	if v == nil {
		return boltTomb{}, false, nil
	}
	var t boltTomb
	if err := json.Unmarshal(v, &t); err != nil {
		return boltTomb{}, false, fmt.Errorf("corrupt tombstone %q: %w", jid, err)
	}
	return t, true, nil
}

// dropTombstone removes jid's tombstone, if any.
func dropTombstone(tx *bolt.Tx, jid string) error {
	t, ok, err := readTomb(tx, jid)
	if err != nil || !ok {
		return err
	}
	if err := tx.Bucket(bktTombTimes).Delete(tombTimeKey(t.Time, jid)); err != nil {
		return err
	}
	return tx.Bucket(bktTombs).Delete([]byte(jid))
}

// putTombstone replaces t.JID's tombstone with t, after removing up to
// tombstonePurgeBatch expired ones.
func (s *BoltStore) putTombstone(tx *bolt.Tx, t Tombstone) error {
	cutoff := tombTimeKey(t.Time.Add(-s.maxAge).UnixNano(), "")
	times := tx.Bucket(bktTombTimes)
	c := times.Cursor()
	for n, k := 0, []byte(nil); n < tombstonePurgeBatch; n++ {
		if k, _ = c.First(); k == nil || bytes.Compare(k, cutoff) >= 0 {
			break
		}
		k = bytes.Clone(k)
		jid := string(k[8:])
		if old, ok, err := readTomb(tx, jid); err != nil {
			return err
		} else if ok && old.Time == int64(binary.BigEndian.Uint64(k)) {
			if err := tx.Bucket(bktTombs).Delete([]byte(jid)); err != nil {
				return err
			}
		}
		if err := times.Delete(k); err != nil {
			return err
		}
	}
	if err := dropTombstone(tx, t.JID); err != nil {
		return err
	}
	v, err := json.Marshal(boltTomb{Rev: t.Rev, Time: t.Time.UnixNano()})
	if err != nil {
		return err
	}
	if err := tx.Bucket(bktTombs).Put([]byte(t.JID), v); err != nil {
		return err
	}
	return times.Put(tombTimeKey(t.Time.UnixNano(), t.JID), nil)
}

// Tombstones implements Store.
func (s *BoltStore) Tombstones(ctx context.Context, after string, limit int) ([]Tombstone, string, error) {
	var out []Tombstone
	next := ""
	now := s.now()
	err := s.view(ctx, func(tx *bolt.Tx) error {
		c := tx.Bucket(bktTombs).Cursor()
		k, v := c.Seek([]byte(after))
		if k != nil && string(k) == after {
			k, v = c.Next()
		}
		for ; k != nil; k, v = c.Next() {
			var bt boltTomb
			if err := json.Unmarshal(v, &bt); err != nil {
				return fmt.Errorf("corrupt tombstone %q: %w", k, err)
			}
			t := Tombstone{JID: string(k), Rev: bt.Rev, Time: time.Unix(0, bt.Time)}
			if tombstoneExpired(t, now, s.maxAge) {
				continue
			}
			if limit > 0 && len(out) == limit {
				next = out[len(out)-1].JID
				break
			}
			out = append(out, t)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// AckTombstone implements Store.
func (s *BoltStore) AckTombstone(ctx context.Context, jid string, rev uint64) (bool, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.begin(ctx); err != nil {
		return false, err
	}
	done := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		t, ok, err := readTomb(tx, jid)
		if err != nil || !ok || t.Rev > rev {
			return err
		}
		done = true
		return dropTombstone(tx, jid)
	})
	if err != nil {
		return false, s.wrap(err)
	}
	return done, nil
}

// Ping implements Store: it reads the revision.
func (s *BoltStore) Ping(ctx context.Context) error {
	_, err := s.Rev(ctx)
	return err
}

// Close ends every Watch and closes the file. Later calls return
// ErrClosed; closing twice is harmless.
func (s *BoltStore) Close() error {
	var err error
	s.once.Do(func() {
		s.closed.Store(true)
		s.feed.close()
		if e := s.db.Close(); e != nil {
			err = fmt.Errorf("identity: close store file %s: %w", s.path, e)
		}
	})
	return err
}
