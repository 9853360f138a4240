package component

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/cusax-gw/cusax-gw/identity"
)

// Identities is what the sync engine needs from the identity map. It is
// satisfied by every identity.Store.
type Identities interface {
	// Get returns the identity with the bare JID, or identity.ErrNotFound.
	Get(ctx context.Context, jid string) (identity.Identity, error)
	// List returns up to limit identities after the JID after, in JID
	// order, and the next cursor ("" at the end).
	List(ctx context.Context, after string, limit int) ([]identity.Identity, string, error)
	// Rev returns the current revision of the map.
	Rev(ctx context.Context) (uint64, error)
	// Watch delivers every change after revision from until ctx ends.
	Watch(ctx context.Context, from uint64) (<-chan identity.Event, error)
	// Tombstones returns up to limit tombstones of deleted identities
	// after the JID after, in JID order, and the next cursor.
	Tombstones(ctx context.Context, after string, limit int) ([]identity.Tombstone, string, error)
	// AckTombstone removes jid's tombstone unless it is newer than rev.
	AckTombstone(ctx context.Context, jid string, rev uint64) (bool, error)
}

// Defaults of SyncConfig.
const (
	DefaultSyncInterval    = 10 * time.Minute
	DefaultAccessModel     = "presence"
	DefaultSyncConcurrency = 8
	// DefaultSyncTimeout bounds one read or write of one user's data.
	DefaultSyncTimeout = 10 * time.Second
)

// SyncConfig configures what the component writes on the users' behalf
// (the xmpp.sync and xmpp.ejabberd_api keys).
type SyncConfig struct {
	// Reach publishes XEP-0152 reachability (xmpp.sync.reach).
	Reach bool
	// VCard is the vCard mode (xmpp.sync.vcard) ["" means VCardEnforce].
	VCard VCardMode
	// Interval is the period of full reconciles (xmpp.sync.interval)
	// [DefaultSyncInterval]. A periodic reconcile spreads its identities
	// over half the interval.
	Interval time.Duration
	// AccessModel is the pubsub#access_model requested with
	// publish-options for the reach node and for vCard4 nodes the component
	// creates: open, presence, roster or whitelist [DefaultAccessModel].
	AccessModel string
	// EjabberdAPI is the base URL of ejabberd's loopback HTTP admin API,
	// e.g. "http://127.0.0.1:5280/api" (xmpp.ejabberd_api); "" for none.
	EjabberdAPI string
	// Concurrency bounds the users synchronised at the same time
	// [DefaultSyncConcurrency].
	Concurrency int
	// Timeout bounds every request to the server [DefaultSyncTimeout].
	Timeout time.Duration
	// HTTPClient calls the ejabberd API [a client with Timeout].
	HTTPClient *http.Client `json:"-" yaml:"-"`
}

func (s SyncConfig) withDefaults() SyncConfig {
	if s.VCard == "" {
		s.VCard = VCardEnforce
	}
	if s.Interval == 0 {
		s.Interval = DefaultSyncInterval
	}
	if s.AccessModel == "" {
		s.AccessModel = DefaultAccessModel
	}
	if s.Concurrency == 0 {
		s.Concurrency = DefaultSyncConcurrency
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultSyncTimeout
	}
	if s.HTTPClient == nil {
		// An own transport: its idle connections are closed when a stream
		// ends, and nothing is shared with other users of DefaultTransport.
		s.HTTPClient = &http.Client{Timeout: s.Timeout, Transport: &http.Transport{
			Proxy: nil, MaxIdleConnsPerHost: DefaultSyncConcurrency, IdleConnTimeout: time.Minute,
		}}
	}
	return s
}

// validate reports the problems of a defaulted SyncConfig.
func (s SyncConfig) validate() []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: Sync.%s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...)))
	}
	if _, err := parseVCardMode(string(s.VCard)); err != nil {
		bad("VCard", "%v", err)
	}
	if s.Interval < 0 {
		bad("Interval", "must be positive, got %s", s.Interval)
	}
	switch s.AccessModel {
	case "open", "presence", "roster", "whitelist", "authorize":
	default:
		bad("AccessModel", "want open, presence, roster or whitelist, got %q", s.AccessModel)
	}
	if s.Concurrency < 0 {
		bad("Concurrency", "must be positive, got %d", s.Concurrency)
	}
	if s.Timeout < 0 {
		bad("Timeout", "must be positive, got %s", s.Timeout)
	}
	if s.EjabberdAPI != "" {
		u, err := url.Parse(s.EjabberdAPI)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("EjabberdAPI", "want an http:// or https:// URL, got %q", s.EjabberdAPI)
		}
	}
	return errs
}

// Results of cusax_sync_total.
const (
	ResultOK        = "ok"
	ResultUnchanged = "unchanged"
	ResultError     = "error"
	ResultSkipped   = "skipped"

	KindReach = "reach"
	KindVCard = "vcard"
	// KindTombstone counts deleted identities whose published data was
	// cleared: ok (something written) or unchanged (nothing left to clear)
	// and the tombstone acknowledged, error (retried at the next full
	// reconcile), skipped (no write path: the tombstone is kept).
	KindTombstone = "tombstone"
)

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// syncJob is the work queued for one user.
type syncJob struct {
	jid string
	// id is the identity to publish; nil means look it up first (presence).
	id *identity.Identity
	// deleted: the identity is gone; clear what was published, then
	// acknowledge its tombstone at rev.
	deleted bool
	// tomb: from a tombstone (at rev) found by a reconcile: look the JID
	// up first; clear only if it is still gone.
	tomb bool
	// rev is the store revision the job reflects: the identity's Version,
	// the delete's revision, 0 for a presence re-check (looked up fresh).
	rev uint64
}

// syncQueue holds at most one pending job per JID (a newer one replaces it)
// and never hands out two jobs for the same JID at once, so that the
// read-modify-writes of one user never overlap. It also drops a job older
// (by syncJob.rev) than one already pending or handed out for its JID: a
// reconcile's page listed before a delete must not republish the deleted
// identity after the delete was cleared. Safe for concurrent use.
type syncQueue struct {
	mu      sync.Mutex
	pending map[string]syncJob
	order   []string // FIFO of pending JIDs
	busy    map[string]bool
	last    map[string]uint64 // per JID, the newest rev handed out
	wake    chan struct{}     // a job may be takeable
	space   chan struct{}     // a slot may be free
	max     int               // pushWait blocks above this many pending jobs
}

func newSyncQueue(max int) *syncQueue {
	return &syncQueue{pending: map[string]syncJob{}, busy: map[string]bool{}, last: map[string]uint64{},
		wake: make(chan struct{}, 1), space: make(chan struct{}, 1), max: max}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// push queues j, replacing a pending job of the same JID unless that one
// is newer. It never blocks.
func (q *syncQueue) push(j syncJob) {
	q.mu.Lock()
	if p, ok := q.pending[j.jid]; !ok {
		q.order = append(q.order, j.jid)
	} else if j.rev < p.rev {
		q.mu.Unlock()
		return
	}
	q.pending[j.jid] = j
	q.mu.Unlock()
	signal(q.wake)
}

// pushWait is push for bulk producers: it waits while the queue is full.
func (q *syncQueue) pushWait(ctx context.Context, j syncJob) error {
	for {
		q.mu.Lock()
		full := len(q.pending) >= q.max
		q.mu.Unlock()
		if !full {
			q.push(j)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-q.space:
		}
	}
}

// take returns the oldest pending job whose JID is not busy, waiting for
// one until ctx ends.
func (q *syncQueue) take(ctx context.Context) (syncJob, bool) {
	for {
		if j, ok := q.takeNow(); ok {
			return j, true
		}
		select {
		case <-ctx.Done():
			return syncJob{}, false
		case <-q.wake:
		}
	}
}

// takeNow returns the oldest pending job whose JID is not busy, dropping
// the stale ones it meets, or false if there is none.
func (q *syncQueue) takeNow() (syncJob, bool) {
	q.mu.Lock()
	removed := false
	for i := 0; i < len(q.order); {
		jid := q.order[i]
		if q.busy[jid] {
			i++
			continue
		}
		j := q.pending[jid]
		q.order = append(q.order[:i:i], q.order[i+1:]...)
		delete(q.pending, jid)
		removed = true
		if j.rev != 0 && j.rev < q.last[jid] {
			continue // older than what already ran for this JID
		}
		q.busy[jid] = true
		if j.rev > q.last[jid] {
			q.last[jid] = j.rev // presence re-checks (0) leave no entry
		}
		more := len(q.order) > 0
		q.mu.Unlock()
		if more {
			signal(q.wake) // another worker may take the next one
		}
		signal(q.space)
		return j, true
	}
	q.mu.Unlock()
	if removed {
		signal(q.space)
	}
	return syncJob{}, false
}

// forget drops the revisions remembered per JID: after a resync they may
// belong to a store that started over.
func (q *syncQueue) forget() {
	q.mu.Lock()
	clear(q.last)
	q.mu.Unlock()
}

// done releases the JID of a finished job.
func (q *syncQueue) done(jid string) {
	q.mu.Lock()
	delete(q.busy, jid)
	q.mu.Unlock()
	signal(q.wake)
}

// idle reports whether nothing is pending or running.
func (q *syncQueue) idle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending) == 0 && len(q.busy) == 0
}

// presenceSet collects the bare JIDs of users whose available presence
// arrived, deduplicated: mux handlers fire once per child element of a
// presence, and clients send several presences when they connect, so a JID
// noted less than presenceCooldown ago is ignored. The handler adds; the
// sync loop drains. Safe for concurrent use.
type presenceSet struct {
	mu   sync.Mutex
	jids map[string]bool
	last map[string]time.Time // when each JID was last noted
	ch   chan struct{}
}

const (
	maxPresencePending = 10000
	presenceCooldown   = 5 * time.Second
)

func newPresenceSet() *presenceSet {
	return &presenceSet{jids: map[string]bool{}, last: map[string]time.Time{}, ch: make(chan struct{}, 1)}
}

func (p *presenceSet) add(jid string) {
	now := time.Now()
	p.mu.Lock()
	if t, ok := p.last[jid]; ok && now.Sub(t) < presenceCooldown {
		p.mu.Unlock()
		return
	}
	if len(p.last) >= maxPresencePending {
		for j, t := range p.last {
			if now.Sub(t) >= presenceCooldown {
				delete(p.last, j)
			}
		}
	}
	if len(p.jids) < maxPresencePending && len(p.last) < maxPresencePending {
		p.jids[jid] = true
		p.last[jid] = now
	}
	p.mu.Unlock()
	signal(p.ch)
}

func (p *presenceSet) drain() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.jids))
	for j := range p.jids {
		out = append(out, j)
	}
	clear(p.jids)
	return out
}

// handlePresence notes users' available presence (XEP-0356 presence
// managed_entity) so that the sync loop re-checks them. It must not send.
func (c *Component) handlePresence(p stanza.Presence, _ xmlstream.TokenReadEncoder) error {
	from := p.From.Bare()
	if from.Localpart() == "" || !from.Domain().Equal(c.domain) {
		return nil
	}
	c.presence.add(from.String())
	return nil
}

// syncRun is the sync engine of one stream.
type syncRun struct {
	c     *Component
	send  iqSender
	queue *syncQueue
	api   *apiClient
	cfg   SyncConfig

	lastCount atomic.Int64 // identities seen by the last complete reconcile

	mu   sync.Mutex
	priv Privileges
	plan Plan
}

// syncLoop runs the sync engine while one stream is up: it waits for the
// privilege advert (at most AdvertTimeout), reconciles every identity,
// then follows the identity change feed, users' presence and the interval
// timer, until ctx ends. Jobs run on cfg.Concurrency workers. It never
// ends the stream: failures are logged and counted.
func (c *Component) syncLoop(ctx context.Context, send iqSender) {
	cfg := c.cfg.Sync
	s := &syncRun{c: c, send: send, cfg: cfg, queue: newSyncQueue(4 * cfg.Concurrency)}
	if cfg.EjabberdAPI != "" {
		s.api = newAPIClient(cfg.EjabberdAPI, cfg.HTTPClient)
		defer cfg.HTTPClient.CloseIdleConnections()
	}
	c.presence.drain() // presence from a previous stream is stale

	// Wait for the advert; a server that sends none gets the no-privilege plan.
	timer := time.NewTimer(c.cfg.AdvertTimeout)
	for waiting := true; waiting; {
		changed := c.changes()
		if c.Privileges().Version != 0 {
			break
		}
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-changed:
		case <-timer.C:
			waiting = false
		}
	}
	timer.Stop()
	s.setPrivileges(c.Privileges())

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range cfg.Concurrency {
		wg.Go(func() { s.worker(ctx) })
	}

	var (
		events     <-chan identity.Event
		reconcile  = make(chan struct{}, 1) // a full reconcile is wanted
		reconciled = make(chan error, 1)    // the running one ended
		running    bool
		again      bool // asked for while one was running
		paced      bool // the wanted reconcile is a periodic one
	)
	var rewatch <-chan time.Time // retries a failed Watch
	watch := func() {
		rev, err := c.cfg.Identities.Rev(ctx)
		if err == nil {
			events, err = c.cfg.Identities.Watch(ctx, rev)
		}
		if err != nil && ctx.Err() == nil {
			c.log.Warn("component sync watch failed", "err", err, "retry_in", c.watchRetry.String())
			rewatch = time.After(c.watchRetry)
		}
	}
	watch()
	signal(reconcile)
	ticker := time.NewTicker(cfg.Interval)
	defer ticker.Stop()
	for {
		changed := c.changes()
		select {
		case <-ctx.Done():
			return
		case <-reconcile:
			if running {
				again = true // started when the running one ends
				break
			}
			running = true
			p := paced
			paced = false
			wg.Go(func() { reconciled <- s.reconcile(ctx, p) })
		case err := <-reconciled:
			running = false
			if err != nil && ctx.Err() == nil {
				c.log.Warn("component sync reconcile failed", "err", err)
			}
			if again {
				again = false
				signal(reconcile)
			}
		case <-rewatch:
			rewatch = nil
			watch()
			if events != nil {
				signal(reconcile) // changes may have been missed meanwhile
			}
		case <-ticker.C:
			if !running {
				paced = true
			}
			signal(reconcile)
		case <-changed:
			if p := c.Privileges(); !p.equal(s.privileges()) {
				s.setPrivileges(p) // a late or new advert: everything again
				signal(reconcile)
			}
		case ev, ok := <-events:
			if !ok {
				events = nil // the store closed the feed: watch again soon
				rewatch = time.After(c.watchRetry)
				break
			}
			switch ev.Op {
			case identity.OpPut:
				id := ev.Identity
				s.queue.push(syncJob{jid: ev.JID, id: &id, rev: ev.Rev})
			case identity.OpDelete:
				id := ev.Identity
				id.JID = ev.JID
				s.queue.push(syncJob{jid: ev.JID, id: &id, deleted: true, rev: ev.Rev})
			case identity.OpResync:
				s.queue.forget()
				signal(reconcile)
			}
		case <-c.presence.ch:
			for _, j := range c.presence.drain() {
				s.queue.push(syncJob{jid: j})
			}
		}
	}
}

func (s *syncRun) setPrivileges(p Privileges) {
	plan := PlanWrites(p, s.cfg)
	s.mu.Lock()
	s.priv, s.plan = p.Clone(), plan
	s.mu.Unlock()
	lvl := s.c.log.Info
	if plan.Reach == PathNone || plan.VCard == PathNone {
		lvl = s.c.log.Warn
	}
	lvl("component sync paths", "reach", string(plan.Reach), "vcard", string(plan.VCard), "format", plan.VCardFormat)
}

func (s *syncRun) privileges() Privileges {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.priv
}

func (s *syncRun) current() (Privileges, Plan) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.priv, s.plan
}

// equal reports whether p and q grant the same.
func (p Privileges) equal(q Privileges) bool { return p.String() == q.String() }

// reconcile queues every identity of the map, a page at a time, waiting
// while the queue is full so that a large map never floods the server.
// A paced (periodic) reconcile also spreads the identities over half an
// Interval, judging the map's size by the previous reconcile, so that the
// routine check loads the XMPP server evenly; reconciles after a
// (re)connect, a new advert or a lost change feed run at full speed.
func (s *syncRun) reconcile(ctx context.Context, paced bool) error {
	start := time.Now()
	after, n := "", 0
	var gap time.Duration // between two identities, when paced
	if last := s.lastCount.Load(); paced && last > 0 {
		gap = s.cfg.Interval / 2 / time.Duration(last)
	}
	due := start
	for {
		lctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		page, next, err := s.c.cfg.Identities.List(lctx, after, 500)
		cancel()
		if err != nil {
			return fmt.Errorf("component: sync: list identities after %q: %w", after, err)
		}
		for i := range page {
			id := page[i]
			if gap > 0 {
				due = due.Add(gap)
				if d := time.Until(due); d > time.Millisecond {
					t := time.NewTimer(d)
					select {
					case <-ctx.Done():
						t.Stop()
						return ctx.Err()
					case <-t.C:
					}
				}
			}
			if err := s.queue.pushWait(ctx, syncJob{jid: id.JID, id: &id, rev: id.Version}); err != nil {
				return err
			}
		}
		n += len(page)
		if next == "" {
			break
		}
		after = next
	}
	s.lastCount.Store(int64(n))
	tombs, err := s.reconcileTombstones(ctx)
	s.c.log.Debug("component sync reconcile queued", "identities", n, "tombstones", tombs, "paced", paced, "duration", time.Since(start).Round(time.Millisecond))
	return err
}

// reconcileTombstones queues every tombstone of the map: identities
// deleted while no stream followed the change feed, whose reach node and
// vCard numbers may still be published. It returns how many it queued.
func (s *syncRun) reconcileTombstones(ctx context.Context) (int, error) {
	after, n := "", 0
	for {
		lctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		page, next, err := s.c.cfg.Identities.Tombstones(lctx, after, 500)
		cancel()
		if err != nil {
			return n, fmt.Errorf("component: sync: list tombstones after %q: %w", after, err)
		}
		for _, t := range page {
			if err := s.queue.pushWait(ctx, syncJob{jid: t.JID, tomb: true, rev: t.Rev}); err != nil {
				return n, err
			}
		}
		n += len(page)
		if next == "" {
			return n, nil
		}
		after = next
	}
}

func (s *syncRun) worker(ctx context.Context) {
	for {
		j, ok := s.queue.take(ctx)
		if !ok {
			return
		}
		s.run(ctx, j)
		s.queue.done(j.jid)
	}
}

// run synchronises one user and counts the results.
func (s *syncRun) run(ctx context.Context, j syncJob) {
	defer func() {
		if r := recover(); r != nil {
			s.c.log.Error("component sync panic", "jid", j.jid, "err", fmt.Sprint(r))
			s.c.m.syncResult(KindReach, ResultError)
		}
	}()
	if j.id == nil {
		gctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		id, err := s.c.cfg.Identities.Get(gctx, j.jid)
		cancel()
		switch {
		case errors.Is(err, identity.ErrNotFound) && j.tomb:
			// Still deleted: clear what may have been published. A
			// re-creation from now on emits a put whose job runs after
			// this one (one job per JID at a time) and publishes again.
			j.id, j.deleted = &identity.Identity{JID: j.jid}, true
		case errors.Is(err, identity.ErrNotFound):
			return // not a CUSAX user: leave their data alone
		case err != nil:
			s.c.log.Warn("component sync lookup failed", "jid", j.jid, "err", err)
			if j.tomb {
				s.record(ctx, KindTombstone, j.jid, "", ResultError, err)
			}
			return
		default:
			if j.tomb {
				// Re-created since the tombstone was listed: the live
				// identity is published instead, never cleared.
				j.tomb = false
			}
			j.id = &id
		}
	}
	user, err := jid.Parse(j.jid)
	if err != nil || user.Localpart() == "" || !user.Domain().Equal(s.c.domain) {
		s.c.log.Debug("component sync: not a user of our domain", "jid", j.jid)
		if j.deleted {
			s.ackTombstone(ctx, j, ResultUnchanged) // nothing of ours to clear, ever
		}
		return
	}
	user = user.Bare()
	want := *j.id
	if j.deleted {
		want = identity.Identity{JID: j.jid}
	}
	priv, plan := s.current()
	// The vCard goes first: when it had to be written, the reach node is
	// almost certainly stale too (a new user, or a changed identity), so it
	// is published without reading it first (one privileged IQ saved per
	// changed user; publishing the value it already held would be harmless).
	vcardWritten := false
	results := make([]string, 0, 2)
	if plan.VCard != PathOff {
		res, err := s.syncVCard(ctx, priv, plan, user, want)
		s.record(ctx, KindVCard, j.jid, plan.VCard, res, err)
		vcardWritten = res == ResultOK
		results = append(results, res)
	}
	if plan.Reach != PathOff {
		res, err := s.syncReach(ctx, priv, plan, user, reachURIs(want), vcardWritten)
		s.record(ctx, KindReach, j.jid, plan.Reach, res, err)
		results = append(results, res)
	}
	if j.deleted {
		s.finishDelete(ctx, j, results)
	}
}

// finishDelete acknowledges the tombstone of a deleted identity once every
// enabled kind is cleared (ok or unchanged), and counts the outcome as
// kind tombstone. After an error the tombstone stays for the next
// reconcile; without a write path it stays until one appears or it
// expires.
func (s *syncRun) finishDelete(ctx context.Context, j syncJob, results []string) {
	outcome := ResultUnchanged
	for _, r := range results {
		switch {
		case r == ResultError:
			s.record(ctx, KindTombstone, j.jid, "", ResultError, errors.New("clearing failed"))
			return
		case r == ResultSkipped:
			outcome = ResultSkipped
		case r == ResultOK && outcome == ResultUnchanged:
			outcome = ResultOK
		}
	}
	if outcome == ResultSkipped {
		s.record(ctx, KindTombstone, j.jid, "", ResultSkipped, nil)
		return
	}
	s.ackTombstone(ctx, j, outcome)
}

// ackTombstone acknowledges j's tombstone and counts result (or an error).
func (s *syncRun) ackTombstone(ctx context.Context, j syncJob, result string) {
	if j.rev == 0 {
		return
	}
	actx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	removed, err := s.c.cfg.Identities.AckTombstone(actx, j.jid, j.rev)
	cancel()
	if err != nil {
		s.record(ctx, KindTombstone, j.jid, "", ResultError, fmt.Errorf("component: acknowledge tombstone: %w", err))
		return
	}
	s.record(ctx, KindTombstone, j.jid, "", result, nil)
	if j.tomb {
		// Found by a reconcile, not by the change feed: worth a line.
		s.c.log.Info("component cleared a deleted identity", "jid", j.jid, "rev", j.rev, "removed", removed)
	}
}

// record counts one result and logs failures, except while stopping.
func (s *syncRun) record(ctx context.Context, kind, jid string, path WritePath, result string, err error) {
	if result == ResultError && ctx.Err() != nil {
		return // the stream is going down; the next one starts over
	}
	s.c.m.syncResult(kind, result)
	switch result {
	case ResultError:
		s.c.log.Warn("component sync failed", "kind", kind, "jid", jid, "path", string(path), "err", err)
	case ResultSkipped:
		s.c.log.Debug("component sync skipped: no write path", "kind", kind, "jid", jid)
	case ResultOK:
		s.c.log.Debug("component synced", "kind", kind, "jid", jid, "path", string(path))
	}
}

// result turns an error into (ResultError, err) and nil into ok.
func result(err error) (string, error) {
	if err != nil {
		return ResultError, err
	}
	return ResultOK, nil
}

// syncReach makes user's reach node hold want. With stale set (the caller
// has just had to rewrite the user's vCard) the node is published without
// being read first.
func (s *syncRun) syncReach(ctx context.Context, priv Privileges, plan Plan, user jid.JID, want []string, stale bool) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*s.cfg.Timeout)
	defer cancel()
	key := user.String()
	switch plan.Reach {
	case PathPrivilegedIQ:
		have, known := s.c.lastReach(key)
		model := s.cfg.AccessModel
		// A stale node is not read, unless this process itself published
		// exactly want there: then the read may well save the write.
		read := priv.CanIQ(NSPubSub, "get") && (!stale || known && reachEqual(have, want))
		if read {
			// An error means no node yet, or anything else: Prosody hides
			// the condition. Publishing then is harmless.
			if resp, err := privilegedIQ(ctx, s.send, priv, s.c.addr, user, stanza.GetIQ, itemsPayload(NodeReach)); err == nil {
				have, known = parseReach(parseItems(resp.child(NSPubSub, "pubsub"))), true
				// The node exists: keep its owner's configuration. Prosody
				// parses publish-options on every publish; skip them.
				model = ""
			} else if errors.Is(err, ErrNotGranted) {
				return ResultError, err
			}
		}
		if known && reachEqual(have, want) {
			s.c.setLastReach(key, want)
			return ResultUnchanged, nil
		}
		_, err := privilegedIQ(ctx, s.send, priv, s.c.addr, user, stanza.SetIQ, publishPayload(NodeReach, reachElement(want), model))
		if err != nil && model != "" && !errors.Is(err, ErrNotGranted) {
			// The node exists with another access model (precondition-not-met):
			// keep the owner's configuration and publish without options.
			s.c.log.Debug("component reach publish with options failed; retrying without", "jid", key, "err", err)
			_, err = privilegedIQ(ctx, s.send, priv, s.c.addr, user, stanza.SetIQ, publishPayload(NodeReach, reachElement(want), ""))
		}
		if err == nil {
			s.c.setLastReach(key, want)
		}
		return result(err)
	case PathEjabberdAPI:
		// The component cannot read a node with access model presence, so
		// idempotence relies on what this process published last.
		if have, known := s.c.lastReach(key); known && reachEqual(have, want) {
			return ResultUnchanged, nil
		}
		iq := elem(nsClient, "iq", publishPayload(NodeReach, reachElement(want), s.cfg.AccessModel)).
			withAttr("type", "set").withAttr("id", "cusax-"+randomID())
		err := s.api.sendStanza(ctx, key, key, iq)
		if err == nil {
			s.c.setLastReach(key, want)
		}
		return result(err)
	}
	return ResultSkipped, nil
}

// syncVCard makes the tel fields of user's vCard follow want per the mode.
func (s *syncRun) syncVCard(ctx context.Context, priv Privileges, plan Plan, user jid.JID, want identity.Identity) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*s.cfg.Timeout)
	defer cancel()
	mode := s.cfg.VCard
	switch {
	case plan.VCard == PathPrivilegedIQ && plan.VCardFormat == FormatVCard4:
		old, exists, err := s.readVCard4(ctx, priv, user)
		if err != nil {
			return ResultError, err
		}
		m := mergeVCard4(old, want.Tel, want.SIP, want.Name, mode)
		if !m.changed {
			return ResultUnchanged, nil
		}
		model := s.cfg.AccessModel
		if exists {
			model = "" // keep the owner's node configuration
		}
		_, err = privilegedIQ(ctx, s.send, priv, s.c.addr, user, stanza.SetIQ, publishPayload(NodeVCard4, m.doc, model))
		return result(err)
	case plan.VCard == PathPrivilegedIQ:
		resp, err := privilegedIQ(ctx, s.send, priv, s.c.addr, user, stanza.GetIQ, elem(NSVCard, "vCard"))
		if err != nil {
			return ResultError, err
		}
		m := mergeVCardTemp(resp.child(NSVCard, "vCard"), want.Tel, mode)
		if !m.changed {
			return ResultUnchanged, nil
		}
		_, err = privilegedIQ(ctx, s.send, priv, s.c.addr, user, stanza.SetIQ, m.doc)
		return result(err)
	case plan.VCard == PathEjabberdAPI:
		// vCards are public on ejabberd: the component reads them itself.
		resp, err := ownIQ(ctx, s.send, s.c.addr, user, stanza.GetIQ, elem(NSVCard, "vCard"))
		if err != nil {
			return ResultError, err
		}
		m := mergeVCardTemp(resp.child(NSVCard, "vCard"), want.Tel, mode)
		if !m.changed {
			return ResultUnchanged, nil
		}
		iq := elem(nsClient, "iq", m.doc).withAttr("type", "set").withAttr("id", "cusax-"+randomID())
		if err := s.api.sendStanza(ctx, user.String(), user.String(), iq); err != nil {
			return ResultError, err
		}
		// send_stanza is fire-and-forget: read back to confirm.
		resp, err = ownIQ(ctx, s.send, s.c.addr, user, stanza.GetIQ, elem(NSVCard, "vCard"))
		if err != nil {
			return ResultError, fmt.Errorf("component: confirm vcard-temp write: %w", err)
		}
		if got, wantN := vcardTempNumbers(resp.child(NSVCard, "vCard")), vcardTempNumbers(m.doc); !equalStrings(got, wantN) {
			return ResultError, fmt.Errorf("component: vcard-temp write not confirmed: numbers %v, want %v", got, wantN)
		}
		return ResultOK, nil
	}
	return ResultSkipped, nil
}

// readVCard4 returns user's vCard4 (nil if none) and whether the node
// exists. Prosody 0.12 forwards the wrapped IQ's item-not-found when the
// node does not exist. Should a server hide the condition, a failed read is
// told apart from a missing node by asking the server's XEP-0292 handler as
// the component itself; anything but item-not-found there is an error (a
// vCard is never overwritten on a guess).
func (s *syncRun) readVCard4(ctx context.Context, priv Privileges, user jid.JID) (*node, bool, error) {
	resp, err := privilegedIQ(ctx, s.send, priv, s.c.addr, user, stanza.GetIQ, itemsPayload(NodeVCard4))
	if err == nil {
		return parseItems(resp.child(NSPubSub, "pubsub")), true, nil
	}
	switch {
	case errors.Is(err, ErrNotGranted):
		return nil, false, err
	case isCondition(err, "item-not-found"):
		return nil, false, nil // Prosody 0.12: the user has no vCard4 node
	}
	_, err2 := ownIQ(ctx, s.send, s.c.addr, user, stanza.GetIQ, elem(NSVCard4, "vcard"))
	if isCondition(err2, "item-not-found") {
		return nil, false, nil
	}
	return nil, false, fmt.Errorf("component: read vCard4: %w", err)
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

// lastReach returns what this process last published (or found) as user's
// reachability.
func (c *Component) lastReach(user string) ([]string, bool) {
	c.reachMu.Lock()
	defer c.reachMu.Unlock()
	v, ok := c.reach[user]
	return v, ok
}

func (c *Component) setLastReach(user string, uris []string) {
	c.reachMu.Lock()
	defer c.reachMu.Unlock()
	c.reach[user] = append([]string(nil), uris...)
}
