package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The redis backend's data layout. Every key starts with
// RedisOptions.KeyPrefix, written {p} here (default "cusax:"):
//
//	{p}id:{jid}             string  JSON of the identity, with "version" (the revision of its last write)
//	{p}key:sip:{aor}        string  owner JID of a SIP AOR ({p}key:sip:sip:alice@example.com)
//	{p}key:tel:{number}     string  owner JID of an E.164 number ({p}key:tel:+15551230001)
//	{p}cred:{aor}           string  JSON digest credential of an AOR (hashes only, with the owner
//	                                "jid"); not an identity write: no revision, log entry or event
//	{p}jids                 zset    every JID with score 0, for List paging with ZRANGEBYLEX
//	{p}rev                  string  the revision counter, INCR'd by every write (INCRBY n by an import)
//	{p}log                  stream  recent changes, entry ID "{rev}-0", fields rev, op (put|delete),
//	                                jid, identity (JSON; the old value for delete); trimmed to about
//	                                RedisOptions.LogSize entries
//	{p}tomb:{jid}           string  JSON tombstone of a deleted identity, {"rev":7,"time":1732600000000}
//	                                (Unix milliseconds); written by delete, removed by create, put,
//	                                import and AckTombstone (see Tombstone)
//	{p}tombs                zset    every JID with a tombstone, score 0, for Tombstones paging
//	{p}tombtimes            zset    every JID with a tombstone, score its deletion time (Unix ms):
//	                                the expiry order
//	{p}events               channel pub/sub: one JSON message per write,
//	                                {"rev":7,"op":"put","identity":{...}} or op "delete", and one
//	                                {"rev":107,"op":"import","first":8} per import (read the log)
//
// Every write checks and writes every key, bumps the counter, appends to
// the log and publishes in one atomic step, so two gateways racing for the
// same number can never both own it and a conflicting write changes
// nothing: Create, Put, Delete and small imports are Lua scripts (see
// redis_scripts.go), large imports a MULTI/EXEC transaction under WATCH of
// {p}rev (see Import).

// Defaults of RedisOptions.
const (
	DefaultRedisKeyPrefix     = "cusax:"
	DefaultRedisOpTimeout     = 500 * time.Millisecond
	DefaultRedisImportTimeout = 2 * time.Minute
	DefaultRedisLogSize       = 10000
	DefaultRedisWatchBuffer   = 1024
)

// RedisOptions configures a RedisStore. The zero value takes every
// default.
type RedisOptions struct {
	// KeyPrefix starts every key and the pub/sub channel; default
	// "cusax:". Stores with different prefixes on one Redis do not see
	// each other. With Redis Cluster it must contain a hash tag, e.g.
	// "{cusax}:", so that the scripts' keys share one slot.
	KeyPrefix string
	// OpTimeout is the deadline applied to every backend call whose ctx
	// has none; default 500ms. The client must honour context deadlines
	// (redis.Options.ContextTimeoutEnabled, which OpenRedis sets);
	// otherwise its own read/write timeouts bound each call.
	OpTimeout time.Duration
	// ImportTimeout bounds a whole Import whose ctx has no deadline;
	// default 2m.
	ImportTimeout time.Duration
	// LogSize is about how many recent changes the log keeps for Watch to
	// replay; default 10000. A watcher further behind gets OpResync.
	LogSize int
	// WatchBuffer is how many events one watcher queues for a slow
	// consumer before it drops them for one OpResync; default 1024.
	WatchBuffer int
	// TombstoneMaxAge is how long an unacknowledged tombstone is kept;
	// default DefaultTombstoneMaxAge.
	TombstoneMaxAge time.Duration
	// Now is the clock of tombstones; default time.Now. For tests.
	Now func() time.Time
}

func (o *RedisOptions) setDefaults() error {
	if o.KeyPrefix == "" {
		o.KeyPrefix = DefaultRedisKeyPrefix
	}
	if o.OpTimeout < 0 || o.ImportTimeout < 0 || o.LogSize < 0 || o.WatchBuffer < 0 {
		return errors.New("identity: redis options: timeouts and sizes must not be negative")
	}
	if o.OpTimeout == 0 {
		o.OpTimeout = DefaultRedisOpTimeout
	}
	if o.ImportTimeout == 0 {
		o.ImportTimeout = DefaultRedisImportTimeout
	}
	if o.LogSize == 0 {
		o.LogSize = DefaultRedisLogSize
	}
	if o.WatchBuffer == 0 {
		o.WatchBuffer = DefaultRedisWatchBuffer
	}
	if o.TombstoneMaxAge <= 0 {
		o.TombstoneMaxAge = DefaultTombstoneMaxAge
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// RedisStore is the Store on Redis (standalone or Sentinel; Cluster with a
// hash-tagged prefix). Any number of stores, in any number of processes,
// may share one Redis and prefix: they share the map, the revision counter
// and the change feed. A RedisStore is safe for concurrent use.
type RedisStore struct {
	client redis.UniversalClient
	owned  bool // Close closes client (OpenRedis)
	opts   RedisOptions
	p      string // KeyPrefix
	revKey string
	jidKey string
	logKey string
	chName string

	// importScriptMax is the largest import committed by one script.
	importScriptMax int
	// testHookImport, if set, runs between a large import's check and
	// its EXEC.
	testHookImport func()

	closed atomic.Bool
	mu     sync.Mutex     // guards wg.Add against Close
	done   chan struct{}  // closed by Close
	wg     sync.WaitGroup // watchers
}

var _ Store = (*RedisStore)(nil)

// NewRedisStore returns a store that uses client. It does not contact
// Redis (Ping does). Close does not close client: the caller still owns
// it and closes it after the store.
func NewRedisStore(client redis.UniversalClient, opts RedisOptions) (*RedisStore, error) {
	if client == nil {
		return nil, errors.New("identity: redis: nil client")
	}
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if _, ok := client.(*redis.ClusterClient); ok && !redisHashTag(opts.KeyPrefix) {
		return nil, fmt.Errorf("identity: redis key prefix %q: Redis Cluster needs a hash tag such as \"{cusax}:\"", opts.KeyPrefix)
	}
	p := opts.KeyPrefix
	return &RedisStore{
		client: client,
		opts:   opts,
		p:      p,
		revKey: p + "rev",
		jidKey: p + "jids",
		logKey: p + "log",
		chName: p + "events",
		done:   make(chan struct{}),

		importScriptMax: 256,
	}, nil
}

// OpenRedis parses url and returns a store with its own client, which
// Close closes. A redis:// or rediss:// URL (redis.ParseURL) names one
// server; with a master_name query parameter it names Sentinels instead
// (redis.ParseFailoverURL: redis://:password@sentinel1:26379/0?master_name=mymaster&addr=sentinel2:26379).
// The client honours context deadlines. Errors never contain the URL, which
// may hold a password.
func OpenRedis(rawURL string, opts RedisOptions) (*RedisStore, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, errors.New("identity: redis url: cannot parse")
	}
	var client redis.UniversalClient
	if u.Query().Has("master_name") {
		fo, err := redis.ParseFailoverURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("identity: redis sentinel url: %s", redisRedact(err, u))
		}
		if fo.MasterName == "" {
			return nil, errors.New("identity: redis sentinel url: empty master_name")
		}
		fo.ContextTimeoutEnabled = true
		client = redis.NewFailoverClient(fo)
	} else {
		o, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("identity: redis url: %s", redisRedact(err, u))
		}
		o.ContextTimeoutEnabled = true
		client = redis.NewClient(o)
	}
	s, err := NewRedisStore(client, opts)
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	s.owned = true
	return s, nil
}

// redisRedact returns err's text with any secret of u removed: the
// parsers' messages quote parts of the URL (options, paths).
func redisRedact(err error, u *url.URL) string {
	msg := err.Error()
	var secrets []string
	if u.User != nil {
		if pw, ok := u.User.Password(); ok {
			secrets = append(secrets, pw)
		}
		if _, raw, ok := strings.Cut(u.User.String(), ":"); ok {
			secrets = append(secrets, raw)
		}
	}
	q := u.Query()
	for _, name := range []string{"password", "sentinel_password"} {
		secrets = append(secrets, q[name]...)
	}
	for _, v := range secrets {
		if v != "" {
			msg = strings.ReplaceAll(msg, v, "REDACTED")
		}
	}
	return msg
}

// redisHashTag reports whether s holds a Redis Cluster hash tag ("{x}").
func redisHashTag(s string) bool {
	i := strings.IndexByte(s, '{')
	if i < 0 {
		return false
	}
	j := strings.IndexByte(s[i+1:], '}')
	return j > 0
}

// Client returns the client the store uses.
func (s *RedisStore) Client() redis.UniversalClient { return s.client }

// opctx applies OpTimeout to ctx unless it has a deadline.
func (s *RedisStore) opctx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.opts.OpTimeout)
}

// enter reports ErrClosed after Close and the error of a ctx that is
// already done, before any round trip.
func (s *RedisStore) enter(ctx context.Context, what func() string) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return s.fail(what(), err)
	}
	return nil
}

// fail wraps err from the backend call described by what ("get
// \"alice@example.com\""): network errors, timeouts and the server's
// "not now" replies also wrap ErrUnavailable.
func (s *RedisStore) fail(what string, err error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if redisUnavailable(err) {
		return fmt.Errorf("identity: redis %s: %w: %w", what, err, ErrUnavailable)
	}
	return fmt.Errorf("identity: redis %s: %w", what, err)
}

// redisUnavailable reports whether err means Redis cannot answer now, as
// opposed to the caller giving up (context.Canceled) or Redis answering
// with an error about the request or the data.
func redisUnavailable(err error) bool {
	switch {
	case errors.Is(err, context.Canceled):
		return false
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, redis.ErrClosed), errors.Is(err, redis.ErrPoolTimeout):
		return true
	}
	if ne := net.Error(nil); errors.As(err, &ne) {
		return true
	}
	var re redis.Error
	if errors.As(err, &re) {
		msg := re.Error()
		for _, p := range []string{"LOADING", "BUSY", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOREPLICAS", "OOM"} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
		return false
	}
	return true // not a server reply: the transport failed
}

func (s *RedisStore) decode(body string) (Identity, error) {
	var id Identity
	if err := json.Unmarshal([]byte(body), &id); err != nil {
		return Identity{}, fmt.Errorf("identity: redis: stored identity is not JSON: %w", err)
	}
	return id, nil
}

// redisEncode returns id's JSON without a version (the scripts add it) and
// its index keys as "kind:value".
func redisEncode(id Identity) (string, []any, error) {
	id.Version = 0
	if id.SIP == nil {
		id.SIP = []string{}
	}
	if id.Tel == nil {
		id.Tel = []string{}
	}
	b, err := json.Marshal(id)
	if err != nil {
		return "", nil, err
	}
	keys := make([]any, 0, len(id.SIP)+len(id.Tel))
	for _, v := range id.SIP {
		keys = append(keys, "sip:"+v)
	}
	for _, v := range id.Tel {
		keys = append(keys, "tel:"+v)
	}
	return string(b), keys, nil
}

func redisCheckJID(jid string) error {
	if jid == "" {
		return &FieldError{Field: "jid", Value: jid, Msg: "must not be empty"}
	}
	return nil
}

// redisParseKey turns a script's "kind:value" back into a Key.
func redisParseKey(s string) Key {
	kind, value, _ := strings.Cut(s, ":")
	switch kind {
	case "jid":
		return Key{KindJID, value}
	case "sip":
		return Key{KindAOR, value}
	case "tel":
		return Key{KindTel, value}
	}
	return Key{Value: s}
}

func redisKeyString(k Key) (string, bool) {
	switch k.Kind {
	case KindAOR:
		return "sip:" + k.Value, true
	case KindTel:
		return "tel:" + k.Value, true
	}
	return "", false
}

// redisWriteResult interprets a write script's reply.
func redisWriteResult(v any) (rev uint64, conflict *ConflictError, notFound bool, err error) {
	a, ok := v.([]any)
	if !ok || len(a) == 0 {
		return 0, nil, false, fmt.Errorf("identity: redis: unexpected script reply %v", v)
	}
	code, _ := a[0].(int64)
	switch {
	case code == 1 && len(a) == 2:
		r, _ := a[1].(int64)
		return uint64(r), nil, false, nil
	case code == 0 && len(a) == 3:
		k, _ := a[1].(string)
		o, _ := a[2].(string)
		return 0, &ConflictError{Key: redisParseKey(k), Owner: o}, false, nil
	case code == 0 && len(a) == 1:
		return 0, nil, true, nil
	}
	return 0, nil, false, fmt.Errorf("identity: redis: unexpected script reply %v", v)
}

// Get implements Store.
func (s *RedisStore) Get(ctx context.Context, jid string) (Identity, error) {
	if err := s.enter(ctx, func() string { return fmt.Sprintf("get %q", jid) }); err != nil {
		return Identity{}, err
	}
	ctx, cancel := s.opctx(ctx)
	defer cancel()
	body, err := s.client.Get(ctx, s.p+"id:"+jid).Result()
	if errors.Is(err, redis.Nil) {
		return Identity{}, fmt.Errorf("%w: jid %s", ErrNotFound, jid)
	}
	if err != nil {
		return Identity{}, s.fail(fmt.Sprintf("get %q", jid), err)
	}
	return s.decode(body)
}

// Lookup implements Store. It reads the index key and the identity in one
// script, so it never returns an identity that does not own key.
func (s *RedisStore) Lookup(ctx context.Context, key Key) (Identity, error) {
	if key.Kind == KindJID {
		return s.Get(ctx, key.Value)
	}
	if err := s.enter(ctx, func() string { return fmt.Sprintf("lookup %q", key.String()) }); err != nil {
		return Identity{}, err
	}
	ks, ok := redisKeyString(key)
	if !ok {
		return Identity{}, &FieldError{Field: "kind", Value: key.Kind.String(), Msg: "unknown key kind"}
	}
	ctx, cancel := s.opctx(ctx)
	defer cancel()
	body, err := redisLookup.Run(ctx, s.client, []string{s.revKey}, s.p, ks).Text()
	if errors.Is(err, redis.Nil) {
		return Identity{}, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err != nil {
		return Identity{}, s.fail(fmt.Sprintf("lookup %q", key.String()), err)
	}
	return s.decode(body)
}

// Create implements Store.
func (s *RedisStore) Create(ctx context.Context, id Identity) (Identity, error) {
	return s.write(ctx, "create", redisCreate, id)
}

// Put implements Store.
func (s *RedisStore) Put(ctx context.Context, id Identity) (Identity, error) {
	return s.write(ctx, "put", redisPut, id)
}

func (s *RedisStore) write(ctx context.Context, op string, script *redis.Script, id Identity) (Identity, error) {
	if err := s.enter(ctx, func() string { return fmt.Sprintf("%s %q", op, id.JID) }); err != nil {
		return Identity{}, err
	}
	if err := redisCheckJID(id.JID); err != nil {
		return Identity{}, err
	}
	js, keys, err := redisEncode(id)
	if err != nil {
		return Identity{}, fmt.Errorf("identity: redis %s %q: %w", op, id.JID, err)
	}
	ctx, cancel := s.opctx(ctx)
	defer cancel()
	args := append([]any{s.p, id.JID, js, s.opts.LogSize}, keys...)
	v, err := script.Run(ctx, s.client, []string{s.revKey}, args...).Result()
	if err != nil {
		return Identity{}, s.fail(fmt.Sprintf("%s %q", op, id.JID), err)
	}
	rev, conflict, _, err := redisWriteResult(v)
	if err != nil {
		return Identity{}, err
	}
	if conflict != nil {
		return Identity{}, conflict
	}
	out := id.Clone()
	out.Version = rev
	return out, nil
}

// Delete implements Store.
func (s *RedisStore) Delete(ctx context.Context, jid string) error {
	if err := s.enter(ctx, func() string { return fmt.Sprintf("delete %q", jid) }); err != nil {
		return err
	}
	ctx, cancel := s.opctx(ctx)
	defer cancel()
	now := s.opts.Now()
	v, err := redisDelete.Run(ctx, s.client, []string{s.revKey}, s.p, jid, s.opts.LogSize,
		now.UnixMilli(), now.Add(-s.opts.TombstoneMaxAge).UnixMilli()).Result()
	if err != nil {
		return s.fail(fmt.Sprintf("delete %q", jid), err)
	}
	_, _, notFound, err := redisWriteResult(v)
	if err != nil {
		return err
	}
	if notFound {
		return fmt.Errorf("%w: jid %s", ErrNotFound, jid)
	}
	return nil
}

// redisMaxListPage bounds one List script so that it cannot stall Redis;
// List runs several for a larger limit.
const redisMaxListPage = 5000

// List implements Store. A limit below 1 means no limit. It reads at most
// 5000 identities per script, so a large page is not one snapshot: an
// identity written meanwhile may appear in its old or new form.
func (s *RedisStore) List(ctx context.Context, after string, limit int) ([]Identity, string, error) {
	if err := s.enter(ctx, func() string { return fmt.Sprintf("list after %q", after) }); err != nil {
		return nil, "", err
	}
	var out []Identity
	for {
		want := redisMaxListPage
		if limit > 0 {
			want = min(limit-len(out), redisMaxListPage)
		}
		page, more, err := s.listPage(ctx, after, want)
		if err != nil {
			return nil, "", err
		}
		if out == nil {
			out = page
		} else {
			out = append(out, page...)
		}
		if !more {
			return out, "", nil
		}
		after = out[len(out)-1].JID
		if limit > 0 && len(out) >= limit {
			return out, after, nil
		}
	}
}

// listPage returns up to limit (> 0) identities after after, and whether
// there are more.
func (s *RedisStore) listPage(ctx context.Context, after string, limit int) ([]Identity, bool, error) {
	lo := "-"
	if after != "" {
		lo = "(" + after
	}
	ctx, cancel := s.opctx(ctx)
	defer cancel()
	v, err := redisPage.Run(ctx, s.client, []string{s.jidKey}, s.p, lo, limit+1, "jids", "id:").StringSlice()
	if err != nil {
		return nil, false, s.fail(fmt.Sprintf("list after %q", after), err)
	}
	n := len(v) / 2
	more := n > limit
	n = min(n, limit)
	ids := make([]Identity, 0, n)
	for i := range n {
		id, err := s.decode(v[2*i+1])
		if err != nil {
			return nil, false, err
		}
		ids = append(ids, id)
	}
	return ids, more && n > 0, nil
}

// Count implements Store.
func (s *RedisStore) Count(ctx context.Context) (int, error) {
	if err := s.enter(ctx, func() string { return "count" }); err != nil {
		return 0, err
	}
	ctx, cancel := s.opctx(ctx)
	defer cancel()
	n, err := s.client.ZCard(ctx, s.jidKey).Result()
	if err != nil {
		return 0, s.fail("count", err)
	}
	return int(n), nil
}

// Rev implements Store.
func (s *RedisStore) Rev(ctx context.Context) (uint64, error) {
	if err := s.enter(ctx, func() string { return "rev" }); err != nil {
		return 0, err
	}
	ctx, cancel := s.opctx(ctx)
	defer cancel()
	return s.rev(ctx)
}

func (s *RedisStore) rev(ctx context.Context) (uint64, error) {
	v, err := s.client.Get(ctx, s.revKey).Uint64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, s.fail("rev", err)
	}
	return v, nil
}

// SetCredential implements Store: one script checks that jid owns aor
// and stores c.
func (s *RedisStore) SetCredential(ctx context.Context, jid, aor string, c Credential) error {
	what := func() string { return fmt.Sprintf("set credential of %q", aor) }
	if err := s.enter(ctx, what); err != nil {
		return err
	}
	if err := c.valid(); err != nil {
		return err
	}
	c.JID = jid
	js, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("identity: redis %s: %w", what(), err)
	}
	ctx, cancel := s.opctx(ctx)
	defer cancel()
	v, err := redisSetCred.Run(ctx, s.client, []string{s.revKey}, s.p, jid, aor, string(js)).Slice()
	if err != nil {
		return s.fail(what(), err)
	}
	switch {
	case len(v) == 1 && v[0] == int64(1):
		return nil
	case len(v) == 1:
		return fmt.Errorf("%w: jid %s", ErrNotFound, jid)
	case len(v) == 2:
		return notOwnAOR(jid, aor)
	}
	return fmt.Errorf("identity: redis %s: unexpected script reply %v", what(), v)
}

// Credential implements Store.
func (s *RedisStore) Credential(ctx context.Context, aor string) (Credential, error) {
	what := func() string { return fmt.Sprintf("get credential of %q", aor) }
	if err := s.enter(ctx, what); err != nil {
		return Credential{}, err
	}
	ctx, cancel := s.opctx(ctx)
	defer cancel()
	body, err := redisGetCred.Run(ctx, s.client, []string{s.revKey}, s.p, aor).Text()
	if errors.Is(err, redis.Nil) {
		return Credential{}, fmt.Errorf("%w: credential of %s", ErrNotFound, aor)
	}
	if err != nil {
		return Credential{}, s.fail(what(), err)
	}
	var c Credential
	if err := json.Unmarshal([]byte(body), &c); err != nil {
		return Credential{}, fmt.Errorf("identity: redis %s: stored credential is not JSON", what())
	}
	return c, nil
}

// DeleteCredential implements Store.
func (s *RedisStore) DeleteCredential(ctx context.Context, jid, aor string) error {
	what := func() string { return fmt.Sprintf("delete credential of %q", aor) }
	if err := s.enter(ctx, what); err != nil {
		return err
	}
	ctx, cancel := s.opctx(ctx)
	defer cancel()
	n, err := redisDelCred.Run(ctx, s.client, []string{s.revKey}, s.p, jid, aor).Int()
	if err != nil {
		return s.fail(what(), err)
	}
	if n == 0 {
		return fmt.Errorf("%w: credential of %s", ErrNotFound, aor)
	}
	return nil
}

// redisTomb is a tombstone as {p}tomb:{jid} stores it.
type redisTomb struct {
	Rev  uint64 `json:"rev"`
	Time int64  `json:"time"` // Unix milliseconds
}

// Tombstones implements Store. Like List, it reads at most 5000 per
// script.
func (s *RedisStore) Tombstones(ctx context.Context, after string, limit int) ([]Tombstone, string, error) {
	what := func() string { return fmt.Sprintf("tombstones after %q", after) }
	if err := s.enter(ctx, what); err != nil {
		return nil, "", err
	}
	now := s.opts.Now()
	var out []Tombstone
	for {
		want := redisMaxListPage
		if limit > 0 {
			want = min(limit-len(out), redisMaxListPage)
		}
		lo := "-"
		if after != "" {
			lo = "(" + after
		}
		octx, cancel := s.opctx(ctx)
		v, err := redisPage.Run(octx, s.client, []string{s.revKey}, s.p, lo, want, "tombs", "tomb:").StringSlice()
		cancel()
		if err != nil {
			return nil, "", s.fail(what(), err)
		}
		for i := 0; i+1 < len(v); i += 2 {
			var rt redisTomb
			if err := json.Unmarshal([]byte(v[i+1]), &rt); err != nil {
				return nil, "", fmt.Errorf("identity: redis %s: stored tombstone of %q is not JSON", what(), v[i])
			}
			t := Tombstone{JID: v[i], Rev: rt.Rev, Time: time.UnixMilli(rt.Time)}
			if !tombstoneExpired(t, now, s.opts.TombstoneMaxAge) {
				out = append(out, t)
			}
			after = v[i]
		}
		// The zset may hold a JID whose key is gone only if someone
		// edited Redis by hand; a short reply still ends the walk.
		if len(v)/2 < want {
			return out, "", nil
		}
		if limit > 0 && len(out) >= limit {
			return out, out[len(out)-1].JID, nil
		}
	}
}

// AckTombstone implements Store.
func (s *RedisStore) AckTombstone(ctx context.Context, jid string, rev uint64) (bool, error) {
	what := func() string { return fmt.Sprintf("ack tombstone of %q", jid) }
	if err := s.enter(ctx, what); err != nil {
		return false, err
	}
	ctx, cancel := s.opctx(ctx)
	defer cancel()
	n, err := redisAckTombstone.Run(ctx, s.client, []string{s.revKey}, s.p, jid, rev).Int()
	if err != nil {
		return false, s.fail(what(), err)
	}
	return n == 1, nil
}

// Ping implements Store.
func (s *RedisStore) Ping(ctx context.Context) error {
	if err := s.enter(ctx, func() string { return "ping" }); err != nil {
		return err
	}
	ctx, cancel := s.opctx(ctx)
	defer cancel()
	if err := s.client.Ping(ctx).Err(); err != nil {
		return s.fail("ping", err)
	}
	return nil
}

// Close implements Store: it ends every Watch, waits for their goroutines
// and, for a store from OpenRedis, closes the client. Later calls return
// ErrClosed; closing twice returns nil.
func (s *RedisStore) Close() error {
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return nil
	}
	s.closed.Store(true)
	close(s.done)
	s.mu.Unlock()
	s.wg.Wait()
	if s.owned {
		if err := s.client.Close(); err != nil {
			return fmt.Errorf("identity: redis close: %w", err)
		}
	}
	return nil
}

// Import implements Store, all or nothing. The batch is first checked
// against itself (a JID, AOR or number twice) without touching Redis; then
// one of two atomic commits runs, neither of which makes part of an
// import visible:
//
//   - Up to importScriptMax (256) identities: one Lua script gets the
//     whole batch, checks every JID and key, and writes everything or
//     nothing, like Create.
//   - Larger batches: Lua is slow at handling that many values (seconds
//     for 100,000 identities, during which Redis serves nobody), so the
//     commit is a MULTI/EXEC transaction under WATCH {p}rev, the usual
//     optimistic lock. On the watching connection: read the revision,
//     check every JID and key in pipelined MGET chunks (Redis keeps
//     serving others between chunks), then queue the writes (identities
//     with consecutive versions, index keys, zset, log, the revision, one
//     "import" notification) and EXEC. Every write of any store bumps
//     {p}rev in the same atomic step as its keys, so an unchanged {p}rev
//     at EXEC proves that the check still holds; a changed one makes
//     EXEC write nothing, and the import starts over (at most 8 attempts,
//     then an error wrapping ErrUnavailable).
//
// Crash safety: Redis queues a transaction's commands on the connection
// and discards them if the connection closes before EXEC, so a gateway
// dying mid-import leaves nothing, not even a staging key. EXEC and a
// script run atomically; AOF and replicas receive their writes as one
// MULTI/EXEC block after they ran, and Redis drops a truncated block at
// the end of the AOF when it loads it.
//
// The commit blocks Redis while it runs: about 1 to 2 seconds for 100,000
// identities on a small VM (see BenchmarkRedisImport100k), during which
// other gateways' uncached lookups may time out. It must also finish
// within the client's read timeout (go-redis default 5s; read_timeout in
// the URL), or the call reports a timeout while Redis completes the
// commit: that outcome is unknown (the error wraps ErrUnavailable); Get
// one of the JIDs to find out.
func (s *RedisStore) Import(ctx context.Context, ids []Identity) error {
	what := func() string { return fmt.Sprintf("import of %d identities", len(ids)) }
	if err := s.enter(ctx, what); err != nil {
		return err
	}
	if len(ids) == 0 {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.opts.ImportTimeout)
		defer cancel()
	}
	seen := make(map[Key]string, len(ids)*3)
	for i, id := range ids {
		if err := redisCheckJID(id.JID); err != nil {
			return fmt.Errorf("identity: import row %d: %w", i+1, err)
		}
		for _, k := range id.Keys() {
			if owner, ok := seen[k]; ok {
				return &ConflictError{Key: k, Owner: owner}
			}
			seen[k] = id.JID
		}
	}
	batch := make([]redisImportRow, len(ids))
	for i, id := range ids {
		js, keys, err := redisEncode(id)
		if err != nil {
			return fmt.Errorf("identity: redis %s: %q: %w", what(), id.JID, err)
		}
		batch[i] = redisImportRow{jid: id.JID, js: js, keys: keys}
	}
	if len(batch) <= s.importScriptMax {
		return s.importScript(ctx, what(), batch)
	}
	return s.importTx(ctx, what(), batch)
}

// redisImportRow is one identity of an import, encoded.
type redisImportRow struct {
	jid  string
	js   string // JSON without version
	keys []any  // "kind:value" of its AORs and numbers
}

// Tuning of large imports.
const (
	redisImportAttempts = 8    // WATCH/EXEC attempts before giving up
	redisImportChunk    = 1000 // identities per MGET of the check, keys per MSET/ZADD
)

// importScript commits a small batch with one script.
func (s *RedisStore) importScript(ctx context.Context, what string, batch []redisImportRow) error {
	args := make([]any, 0, 3+len(batch)*5)
	args = append(args, s.p, len(batch), s.opts.LogSize)
	for _, r := range batch {
		args = append(args, r.jid, r.js, len(r.keys))
		args = append(args, r.keys...)
	}
	v, err := redisImport.Run(ctx, s.client, []string{s.revKey}, args...).Result()
	if err != nil {
		return s.fail(what, err)
	}
	_, conflict, _, err := redisWriteResult(v)
	if err != nil {
		return err
	}
	if conflict != nil {
		return conflict
	}
	return nil
}

// importTx commits a large batch with WATCH/MULTI/EXEC, starting over
// when another write got in between.
func (s *RedisStore) importTx(ctx context.Context, what string, batch []redisImportRow) error {
	wait := 5 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := s.client.Watch(ctx, func(tx *redis.Tx) error {
			return s.importAttempt(ctx, tx, batch)
		}, s.revKey)
		if !errors.Is(err, redis.TxFailedErr) {
			var ce *ConflictError
			if err == nil || errors.As(err, &ce) {
				return err
			}
			return s.fail(what, err)
		}
		if attempt == redisImportAttempts {
			return fmt.Errorf("identity: redis %s: other writes got in the way %d times: %w", what, attempt, ErrUnavailable)
		}
		t := time.NewTimer(wait/2 + time.Duration(mrand.Int64N(int64(wait))))
		select {
		case <-ctx.Done():
			t.Stop()
			return s.fail(what, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// importAttempt runs on the connection that watches {p}rev: check, then
// queue every write and EXEC. It returns redis.TxFailedErr if {p}rev
// changed since the WATCH.
func (s *RedisStore) importAttempt(ctx context.Context, tx *redis.Tx, batch []redisImportRow) error {
	r0, err := tx.Get(ctx, s.revKey).Uint64()
	if errors.Is(err, redis.Nil) {
		r0, err = 0, nil
	}
	if err != nil {
		return err
	}
	if err := s.importCheck(ctx, tx.Pipeline(), batch); err != nil {
		return err
	}
	newest, err := tx.XRevRangeN(ctx, s.logKey, "+", "-", 1).Result()
	if err != nil {
		return err
	}
	if s.testHookImport != nil {
		s.testHookImport()
	}
	n := uint64(len(batch))
	first := r0 + 1
	_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.IncrBy(ctx, s.revKey, int64(n))
		bodies := make([]string, len(batch))
		for i := 0; i < len(batch); i += redisImportChunk {
			part := batch[i:min(i+redisImportChunk, len(batch))]
			kv := make([]any, 0, 2*len(part))
			z := make([]redis.Z, 0, len(part))
			for j, r := range part {
				bodies[i+j] = redisWithVersion(first+uint64(i+j), r.js)
				kv = append(kv, s.p+"id:"+r.jid, bodies[i+j])
				z = append(z, redis.Z{Member: r.jid})
			}
			p.MSet(ctx, kv...)
			p.ZAdd(ctx, s.jidKey, z...)
			// Tombstones of re-created JIDs go (as dropTomb in the scripts).
			tk := make([]string, len(part))
			members := make([]any, len(part))
			for j, r := range part {
				tk[j], members[j] = s.p+"tomb:"+r.jid, r.jid
			}
			p.Del(ctx, tk...)
			p.ZRem(ctx, s.p+"tombs", members...)
			p.ZRem(ctx, s.p+"tombtimes", members...)
		}
		kv := make([]any, 0, 2*redisImportChunk)
		for _, r := range batch {
			for _, k := range r.keys {
				kv = append(kv, s.p+"key:"+k.(string), r.jid)
				if len(kv) == cap(kv) {
					p.MSet(ctx, kv...)
					kv = make([]any, 0, 2*redisImportChunk)
				}
			}
		}
		if len(kv) > 0 {
			p.MSet(ctx, kv...)
		}
		// The log: drop it if it is ahead of the counter (as logGuard in
		// the scripts), then the newest LogSize identities.
		if len(newest) > 0 {
			if r, ok := redisParseRev(newest[0].ID); !ok || r >= first {
				p.Del(ctx, s.logKey)
			}
		}
		for i := max(0, len(batch)-s.opts.LogSize); i < len(batch); i++ {
			rev := first + uint64(i)
			p.XAdd(ctx, &redis.XAddArgs{
				Stream: s.logKey,
				ID:     strconv.FormatUint(rev, 10) + "-0",
				Values: []any{"rev", rev, "op", "put", "jid", batch[i].jid, "identity", bodies[i]},
			})
		}
		p.XTrimMaxLenApprox(ctx, s.logKey, int64(s.opts.LogSize), 0)
		p.Publish(ctx, s.chName, fmt.Sprintf(`{"rev":%d,"op":"import","first":%d}`, r0+n, first))
		return nil
	})
	return err
}

// redisWithVersion adds "version" to an identity's JSON, as the scripts'
// withVersion does.
func redisWithVersion(v uint64, js string) string {
	return `{"version":` + strconv.FormatUint(v, 10) + "," + js[1:]
}

// importCheck reads the batch's JIDs and keys in pipelined chunks and
// returns the first conflict with a stored identity.
func (s *RedisStore) importCheck(ctx context.Context, pipe redis.Pipeliner, batch []redisImportRow) error {
	type chunk struct {
		keys []Key
		cmd  *redis.SliceCmd
	}
	var chunks []chunk
	for i := 0; i < len(batch); i += redisImportChunk {
		var c chunk
		names := make([]string, 0, redisImportChunk*3)
		for _, r := range batch[i:min(i+redisImportChunk, len(batch))] {
			c.keys = append(c.keys, Key{KindJID, r.jid})
			names = append(names, s.p+"id:"+r.jid)
			for _, k := range r.keys {
				c.keys = append(c.keys, redisParseKey(k.(string)))
				names = append(names, s.p+"key:"+k.(string))
			}
		}
		c.cmd = pipe.MGet(ctx, names...)
		chunks = append(chunks, c)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	for _, c := range chunks {
		for i, v := range c.cmd.Val() {
			if v == nil {
				continue
			}
			k := c.keys[i]
			if k.Kind == KindJID {
				return &ConflictError{Key: k, Owner: k.Value}
			}
			owner, _ := v.(string)
			return &ConflictError{Key: k, Owner: owner}
		}
	}
	return nil
}

// redisParseRev reads the revision from a log entry ID "{rev}-0".
func redisParseRev(id string) (uint64, bool) {
	ms, _, _ := strings.Cut(id, "-")
	r, err := strconv.ParseUint(ms, 10, 64)
	return r, err == nil
}
