package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Directory is what the rest of the gateway uses: a Store behind
// normalisation, metrics and a read cache that holds the whole map in
// memory, kept current by the store's change feed. Lookups on the SIP call
// path are answered from the cache without touching the backend, so they
// keep working (from the last known map) while Redis is unreachable; writes
// then fail with ErrUnavailable.
//
// Create it with NewDirectory and run it with Run; until the first load
// completes, lookups go to the store. Its methods are safe for concurrent
// use.
type Directory struct {
	store   Store
	norm    *Normalizer
	backend string
	log     *slog.Logger
	m       *Metrics
	opts    DirectoryOptions

	// Resolved once: counters on the lookup path must not allocate.
	hitCache, missCache           prometheus.Counter
	hitStore, missStore, errStore prometheus.Counter
	latCache, latStore            prometheus.Observer

	mu    sync.RWMutex
	byKey map[Key]*Identity
	byJID map[string]*Identity
	rev   uint64 // the feed's position: every event <= rev is applied
	warm  bool   // the cache holds the whole map
	// changed is closed and replaced on every change of the cache or of
	// the backend's health (see Changed).
	changed chan struct{}

	storeUp atomic.Bool
	lastErr atomic.Pointer[string]
}

// DirectoryOptions tunes a Directory. Zero values take defaults.
type DirectoryOptions struct {
	// OpTimeout bounds every backend call made without a deadline [2s].
	OpTimeout time.Duration
	// PingInterval is the period of backend health checks [5s].
	PingInterval time.Duration
	// PageSize is the List page size of a full load [1000].
	PageSize int
}

func (o *DirectoryOptions) setDefaults() {
	if o.OpTimeout <= 0 {
		o.OpTimeout = 2 * time.Second
	}
	if o.PingInterval <= 0 {
		o.PingInterval = 5 * time.Second
	}
	if o.PageSize <= 0 {
		o.PageSize = 1000
	}
}

// Metrics are the identity metrics of CONTRACT.md and a few more.
type Metrics struct {
	Entries   prometheus.Gauge
	Lookups   *prometheus.CounterVec   // backend=cache|embedded|redis|memory, result=hit|miss|error
	Latency   *prometheus.HistogramVec // backend
	BackendUp prometheus.Gauge
	Resyncs   prometheus.Counter
}

// NewMetrics creates the identity metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Entries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cusax_identity_entries", Help: "Identities in the map (as cached by this instance).",
		}),
		Lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cusax_identity_lookups_total",
			Help: "Identity lookups by where they were answered (cache or the store backend) and result.",
		}, []string{"backend", "result"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cusax_identity_lookup_duration_seconds",
			Help:    "Latency of identity lookups, by where they were answered.",
			Buckets: []float64{1e-6, 1e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1, 1},
		}, []string{"backend"}),
		BackendUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cusax_identity_backend_up", Help: "1 when the identity store backend answered its last health check.",
		}),
		Resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cusax_identity_resyncs_total", Help: "Full reloads of the identity cache after the change feed lost continuity.",
		}),
	}
	reg.MustRegister(m.Entries, m.Lookups, m.Latency, m.BackendUp, m.Resyncs)
	return m
}

// NewDirectory returns a Directory over store. backend names the store in
// metrics ("embedded", "redis", "memory").
func NewDirectory(store Store, norm *Normalizer, backend string, log *slog.Logger, m *Metrics, opts DirectoryOptions) *Directory {
	opts.setDefaults()
	d := &Directory{
		store: store, norm: norm, backend: backend, log: log, m: m, opts: opts,
		byKey: map[Key]*Identity{}, byJID: map[string]*Identity{}, changed: make(chan struct{}),
		hitCache:  m.Lookups.WithLabelValues("cache", "hit"),
		missCache: m.Lookups.WithLabelValues("cache", "miss"),
		hitStore:  m.Lookups.WithLabelValues(backend, "hit"),
		missStore: m.Lookups.WithLabelValues(backend, "miss"),
		errStore:  m.Lookups.WithLabelValues(backend, "error"),
		latCache:  m.Latency.WithLabelValues("cache"),
		latStore:  m.Latency.WithLabelValues(backend),
	}
	m.Lookups.WithLabelValues("cache", "error")
	d.storeUp.Store(true)
	return d
}

// Normalizer returns the directory's normaliser.
func (d *Directory) Normalizer() *Normalizer { return d.norm }

func (d *Directory) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d.opts.OpTimeout)
}

// Changed returns a channel that is closed at the next change of the cache
// or of the backend's health. Call it again for the change after that.
func (d *Directory) Changed() <-chan struct{} {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.changed
}

func (d *Directory) signalLocked() {
	close(d.changed)
	d.changed = make(chan struct{})
}

func (d *Directory) signal() {
	d.mu.Lock()
	d.signalLocked()
	d.mu.Unlock()
}

// note records the outcome of a backend call for health reporting.
func (d *Directory) note(err error) {
	switch {
	case err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) || errors.Is(err, ErrInvalid):
		if !d.storeUp.Swap(true) {
			d.log.Info("identity store reachable again", "backend", d.backend)
			d.signal()
		}
		d.m.BackendUp.Set(1)
	case errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded):
		msg := err.Error()
		d.lastErr.Store(&msg)
		if d.storeUp.Swap(false) {
			d.log.Warn("identity store unreachable; serving cached lookups", "backend", d.backend, "err", err)
			d.signal()
		}
		d.m.BackendUp.Set(0)
	}
}

// Status reports the directory's health for /readyz: "up", "degraded"
// (backend unreachable, cached lookups answer) or "down" (backend
// unreachable and nothing cached), with a detail.
func (d *Directory) Status() (state, detail string) {
	d.mu.RLock()
	warm, n := d.warm, len(d.byJID)
	d.mu.RUnlock()
	if d.storeUp.Load() {
		return "up", fmt.Sprintf("%s store, %d identities", d.backend, n)
	}
	last := ""
	if p := d.lastErr.Load(); p != nil {
		last = *p
	}
	if warm {
		return "degraded", fmt.Sprintf("%s store unreachable (%s); serving %d cached identities", d.backend, last, n)
	}
	return "down", fmt.Sprintf("%s store unreachable (%s)", d.backend, last)
}

// LookupKey returns the identity owning a normalised key from the cache.
// It does not allocate. ok is false when the key is unknown or the cache is
// not loaded yet (then use Lookup).
func (d *Directory) LookupKey(key Key) (id Identity, ok, warm bool) {
	start := time.Now()
	d.mu.RLock()
	p, ok := d.byKey[key]
	warm = d.warm
	if ok {
		id = *p
	}
	d.mu.RUnlock()
	if warm {
		if ok {
			d.hitCache.Inc()
		} else {
			d.missCache.Inc()
		}
		d.latCache.Observe(time.Since(start).Seconds())
	}
	return id, ok, warm
}

// Lookup resolves any URI or number (xmpp:, sip:, sips:, tel:, a bare JID
// or number) to its identity: from the cache when it is loaded, else from
// the store. Invalid input gives a *FieldError, an unknown key ErrNotFound.
// The returned identity shares its slices with the cache: do not modify.
func (d *Directory) Lookup(ctx context.Context, uri string) (Identity, error) {
	key, err := d.norm.Key(uri)
	if err != nil {
		return Identity{}, err
	}
	return d.lookup(ctx, key)
}

func (d *Directory) lookup(ctx context.Context, key Key) (Identity, error) {
	if id, ok, warm := d.LookupKey(key); warm {
		if !ok {
			return Identity{}, fmt.Errorf("%w: %s", ErrNotFound, key)
		}
		return id, nil
	}
	start := time.Now()
	ctx, cancel := d.ctx(ctx)
	defer cancel()
	id, err := d.store.Lookup(ctx, key)
	d.latStore.Observe(time.Since(start).Seconds())
	d.note(err)
	switch {
	case err == nil:
		d.hitStore.Inc()
	case errors.Is(err, ErrNotFound):
		d.missStore.Inc()
	default:
		d.errStore.Inc()
	}
	return id, err
}

// Get returns the identity of a JID (normalised first).
func (d *Directory) Get(ctx context.Context, jid string) (Identity, error) {
	j, err := d.norm.JID(jid)
	if err != nil {
		return Identity{}, err
	}
	return d.lookup(ctx, Key{KindJID, j})
}

// List returns a page of identities from the store (not the cache: the
// admin API shows the authoritative map).
func (d *Directory) List(ctx context.Context, after string, limit int) ([]Identity, string, error) {
	ctx, cancel := d.ctx(ctx)
	defer cancel()
	ids, next, err := d.store.List(ctx, after, limit)
	d.note(err)
	return ids, next, err
}

// Create normalises and stores a new identity.
func (d *Directory) Create(ctx context.Context, id Identity) (Identity, error) {
	n, err := d.norm.Identity(id)
	if err != nil {
		return Identity{}, err
	}
	ctx, cancel := d.ctx(ctx)
	defer cancel()
	out, err := d.store.Create(ctx, n)
	d.note(err)
	if err == nil {
		d.applyPut(out)
	}
	return out, err
}

// Put normalises and creates or replaces an identity.
func (d *Directory) Put(ctx context.Context, id Identity) (Identity, error) {
	n, err := d.norm.Identity(id)
	if err != nil {
		return Identity{}, err
	}
	ctx, cancel := d.ctx(ctx)
	defer cancel()
	out, err := d.store.Put(ctx, n)
	d.note(err)
	if err == nil {
		d.applyPut(out)
	}
	return out, err
}

// Delete removes the identity of a JID.
func (d *Directory) Delete(ctx context.Context, jid string) error {
	j, err := d.norm.JID(jid)
	if err != nil {
		return err
	}
	ctx, cancel := d.ctx(ctx)
	defer cancel()
	err = d.store.Delete(ctx, j)
	d.note(err)
	if err == nil {
		// Read-your-writes. The feed is ordered, so a put older than this
		// delete that is still in flight may re-add the entry briefly; the
		// delete's own event follows it and removes it again.
		d.applyDelete(j, 0)
	}
	return err
}

// Import normalises every identity, then stores all or none. A *ImportError
// lists every invalid row.
func (d *Directory) Import(ctx context.Context, ids []Identity) error {
	norm := make([]Identity, len(ids))
	var rows []RowError
	for i, id := range ids {
		n, err := d.norm.Identity(id)
		if err != nil {
			rows = append(rows, RowError{Row: i, Err: err})
			continue
		}
		norm[i] = n
	}
	if len(rows) > 0 {
		return &ImportError{Rows: rows}
	}
	err := d.store.Import(ctx, norm)
	d.note(err)
	return err
}

// SetPassword stores the digest credential of aor, an AOR of the identity
// jid, computed from password for realm (see NewCredential). The password
// is not kept. Errors: ErrNotFound (no such JID), *FieldError naming "jid",
// "sip" (invalid, or not an AOR of jid) or "password".
func (d *Directory) SetPassword(ctx context.Context, jid, aor, realm, password string) error {
	j, a, err := d.jidAOR(jid, aor)
	if err != nil {
		return err
	}
	c, err := NewCredential(a, realm, password)
	if err != nil {
		return err
	}
	ctx, cancel := d.ctx(ctx)
	defer cancel()
	err = d.store.SetCredential(ctx, j, a, c)
	d.note(err)
	return err
}

// DeleteCredential removes the digest credential of aor, an AOR of jid;
// ErrNotFound if it has none.
func (d *Directory) DeleteCredential(ctx context.Context, jid, aor string) error {
	j, a, err := d.jidAOR(jid, aor)
	if err != nil {
		return err
	}
	ctx, cancel := d.ctx(ctx)
	defer cancel()
	err = d.store.DeleteCredential(ctx, j, a)
	d.note(err)
	return err
}

// Credential returns the digest credential of an AOR (normalised first),
// or an error matching ErrNotFound. It always asks the store: credentials
// are not cached.
func (d *Directory) Credential(ctx context.Context, aor string) (Credential, error) {
	a, err := d.norm.AOR(aor)
	if err != nil {
		return Credential{}, err
	}
	ctx, cancel := d.ctx(ctx)
	defer cancel()
	c, err := d.store.Credential(ctx, a)
	d.note(err)
	return c, err
}

func (d *Directory) jidAOR(jid, aor string) (string, string, error) {
	j, err := d.norm.JID(jid)
	if err != nil {
		return "", "", err
	}
	a, err := d.norm.AOR(aor)
	if err != nil {
		return "", "", err
	}
	return j, a, nil
}

// RowError is one bad row of an import.
type RowError struct {
	Row int // 0-based index in the imported list
	Err error
}

// ImportError reports every row that failed validation; nothing was stored.
type ImportError struct{ Rows []RowError }

func (e *ImportError) Error() string {
	if len(e.Rows) == 1 {
		return fmt.Sprintf("identity: import row %d: %v", e.Rows[0].Row+1, e.Rows[0].Err)
	}
	return fmt.Sprintf("identity: import: %d invalid rows, first row %d: %v", len(e.Rows), e.Rows[0].Row+1, e.Rows[0].Err)
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ImportError) Is(target error) bool { return target == ErrInvalid }

// Count returns the number of identities in the store.
func (d *Directory) Count(ctx context.Context) (int, error) {
	ctx, cancel := d.ctx(ctx)
	defer cancel()
	n, err := d.store.Count(ctx)
	d.note(err)
	return n, err
}

// Run loads the whole map into the cache, then follows the change feed
// until ctx ends, reloading after every OpResync and reconnecting with
// backoff when the backend fails. It also pings the backend for health.
// It returns nil when ctx ends.
func (d *Directory) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { d.pingLoop(ctx) })
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := d.follow(ctx)
		if ctx.Err() != nil {
			break
		}
		d.note(err)
		d.log.Debug("identity change feed interrupted", "backend", d.backend, "err", err)
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(backoff*2, 5*time.Second)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	return nil
}

func (d *Directory) pingLoop(ctx context.Context) {
	t := time.NewTicker(d.opts.PingInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, d.opts.OpTimeout)
		err := d.store.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, ErrUnavailable) {
			err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		d.note(err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// follow does one full load and follows the feed until it breaks.
func (d *Directory) follow(ctx context.Context) error {
	rev, err := d.reload(ctx)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := d.store.Watch(wctx, rev)
	if err != nil {
		return err
	}
	for ev := range events {
		switch ev.Op {
		case OpResync:
			d.m.Resyncs.Inc()
			if _, err := d.reload(ctx); err != nil {
				return err
			}
		case OpPut:
			d.applyPut(ev.Identity)
			d.advance(ev.Rev)
		case OpDelete:
			d.applyDelete(ev.JID, ev.Rev)
			d.advance(ev.Rev)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("%w: change feed closed", ErrUnavailable)
}

// reload replaces the cache with the store's whole map and returns the
// revision it reflects. The revision is read before listing, so changes
// made during the listing are replayed by the feed afterwards.
func (d *Directory) reload(ctx context.Context) (uint64, error) {
	rctx, cancel := d.ctx(ctx)
	rev, err := d.store.Rev(rctx)
	cancel()
	if err != nil {
		return 0, err
	}
	byKey := map[Key]*Identity{}
	byJID := map[string]*Identity{}
	after := ""
	for {
		lctx, cancel := d.ctx(ctx)
		page, next, err := d.store.List(lctx, after, d.opts.PageSize)
		cancel()
		if err != nil {
			return 0, err
		}
		for i := range page {
			p := &page[i]
			byJID[p.JID] = p
			for _, k := range p.Keys() {
				byKey[k] = p
			}
		}
		if next == "" {
			break
		}
		after = next
	}
	d.mu.Lock()
	d.byKey, d.byJID, d.rev, d.warm = byKey, byJID, rev, true
	d.m.Entries.Set(float64(len(byJID)))
	d.signalLocked()
	d.mu.Unlock()
	d.note(nil)
	return rev, nil
}

func (d *Directory) advance(rev uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if rev > d.rev {
		d.rev = rev
	}
}

// applyPut installs id in the cache unless the cache already holds a newer
// version of it.
func (d *Directory) applyPut(id Identity) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if old, ok := d.byJID[id.JID]; ok {
		if old.Version >= id.Version && id.Version != 0 {
			return
		}
		d.removeLocked(old)
	}
	p := &id
	d.byJID[id.JID] = p
	for _, k := range id.Keys() {
		d.byKey[k] = p
	}
	d.m.Entries.Set(float64(len(d.byJID)))
	d.signalLocked()
}

func (d *Directory) applyDelete(jid string, rev uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if old, ok := d.byJID[jid]; ok {
		if rev != 0 && old.Version > rev {
			return
		}
		d.removeLocked(old)
	}
	d.m.Entries.Set(float64(len(d.byJID)))
	d.signalLocked()
}

func (d *Directory) removeLocked(old *Identity) {
	delete(d.byJID, old.JID)
	for _, k := range old.Keys() {
		if d.byKey[k] == old {
			delete(d.byKey, k)
		}
	}
}
