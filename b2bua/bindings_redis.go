package b2bua

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The Redis layout of RedisBindings. Every key starts with the prefix,
// written {p} here (default "cusax:"):
//
//	{p}bind:{token}  string  JSON of the Binding; Redis expires it at Expires (PEXPIREAT)
//	{p}aor:{aor}     zset    tokens of the AOR scored by Expires in Unix ms; the key
//	                         itself expires with its last member
//	{p}bindings      zset    every token scored by Expires in Unix ms (Len, Expire)
//
// Redis TTLs do the real expiry work: a binding's key disappears at its
// Expires even if no gateway sweeps. The indexes are cleaned as they are
// used: Put and ByAOR drop an AOR's expired members (ZREMRANGEBYSCORE),
// ByAOR drops tokens whose key is gone, an AOR zset expires with its
// latest member, and Expire removes expired tokens from {p}bindings (and
// from their AOR, and deletes their keys if the server's clock lags).
//
// Reads are filtered with the gateway's clock as well as the server's
// TTLs, so a binding is hidden once either says it lapsed. Index scores
// have millisecond resolution.
//
// Put, Delete, ByAOR and Expire are Lua scripts, each atomic. They build
// some keys from the prefix, so with Redis Cluster the prefix must hold a
// hash tag ("{cusax}:") to keep them in one slot.

// Defaults of NewRedisBindings.
const (
	DefaultRedisBindingsPrefix    = "cusax:"
	DefaultRedisBindingsOpTimeout = 500 * time.Millisecond
)

// redisExpireBatch is how many expired tokens one Expire script removes.
const redisExpireBatch = 500

// RedisBindings is the Bindings store on Redis, shared by every gateway
// instance that uses the same Redis and prefix: a phone registered
// through one instance is reachable from any other. It is safe for
// concurrent use. It does not own the client; the caller closes it.
type RedisBindings struct {
	client    redis.UniversalClient
	p         string
	allKey    string
	opTimeout time.Duration
	now       func() time.Time // the gateway's clock; tests replace it
}

var _ Bindings = (*RedisBindings)(nil)

// NewRedisBindings returns a store on client whose keys start with prefix
// ("cusax:" when empty). Every call whose ctx has no deadline gets
// opTimeout (500ms when not positive); the client must honour context
// deadlines (redis.Options.ContextTimeoutEnabled) for it to cut a call
// short. It does not contact Redis.
func NewRedisBindings(client redis.UniversalClient, prefix string, opTimeout time.Duration) *RedisBindings {
	if prefix == "" {
		prefix = DefaultRedisBindingsPrefix
	}
	if opTimeout <= 0 {
		opTimeout = DefaultRedisBindingsOpTimeout
	}
	return &RedisBindings{
		client:    client,
		p:         prefix,
		allKey:    prefix + "bindings",
		opTimeout: opTimeout,
		now:       time.Now,
	}
}

// redisBinding is the stored JSON of a Binding.
type redisBinding struct {
	Token     string    `json:"token"`
	AOR       string    `json:"aor"`
	Contact   string    `json:"contact"`
	Source    string    `json:"source"`
	Transport string    `json:"transport"`
	CallID    string    `json:"call_id"`
	Expires   time.Time `json:"expires"`
}

// redisBindingsPut stores a binding and indexes it, unlinking the token
// from its previous AOR.
//
// KEYS: bind key, aor zset, all zset. ARGV: prefix, token, json, aor,
// expires ms, now ms.
var redisBindingsPut = redis.NewScript(`
local old = redis.call('GET', KEYS[1])
if old then
  local ok, o = pcall(cjson.decode, old)
  if ok and type(o) == 'table' and type(o.aor) == 'string' and o.aor ~= ARGV[4] then
    redis.call('ZREM', ARGV[1] .. 'aor:' .. o.aor, ARGV[2])
  end
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[2])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if last[2] then
  redis.call('PEXPIREAT', KEYS[2], last[2])
end
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[2])
return 1
`)

// redisBindingsDelete removes a binding and its index entries.
//
// KEYS: bind key, all zset. ARGV: prefix, token.
var redisBindingsDelete = redis.NewScript(`
local old = redis.call('GET', KEYS[1])
if old then
  local ok, o = pcall(cjson.decode, old)
  if ok and type(o) == 'table' and type(o.aor) == 'string' then
    redis.call('ZREM', ARGV[1] .. 'aor:' .. o.aor, ARGV[2])
  end
  redis.call('DEL', KEYS[1])
end
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
`)

// redisBindingsByAOR drops the AOR's expired members and returns the
// JSON of its live bindings, dropping tokens whose key is gone.
//
// KEYS: aor zset. ARGV: prefix, now ms.
var redisBindingsByAOR = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
local tokens = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf')
local out = {}
for _, t in ipairs(tokens) do
  local v = redis.call('GET', ARGV[1] .. 'bind:' .. t)
  if v then
    out[#out + 1] = v
  else
    redis.call('ZREM', KEYS[1], t)
  end
end
return out
`)

// redisBindingsExpire removes up to ARGV[3] tokens whose expiry is not
// after now and returns how many it removed.
//
// KEYS: all zset. ARGV: prefix, now ms, batch.
var redisBindingsExpire = redis.NewScript(`
local tokens = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, t in ipairs(tokens) do
  local key = ARGV[1] .. 'bind:' .. t
  local v = redis.call('GET', key)
  if v then
    local ok, o = pcall(cjson.decode, v)
    if ok and type(o) == 'table' and type(o.aor) == 'string' then
      redis.call('ZREM', ARGV[1] .. 'aor:' .. o.aor, t)
    end
    redis.call('DEL', key)
  end
  redis.call('ZREM', KEYS[1], t)
end
return #tokens
`)

// opctx applies the op timeout to ctx unless it has a deadline.
func (s *RedisBindings) opctx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.opTimeout)
}

func (s *RedisBindings) bindKey(token string) string { return s.p + "bind:" + token }
func (s *RedisBindings) aorKey(aor string) string    { return s.p + "aor:" + aor }

func redisMillis(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

func (s *RedisBindings) decode(body string) (Binding, error) {
	var rb redisBinding
	if err := json.Unmarshal([]byte(body), &rb); err != nil {
		return Binding{}, fmt.Errorf("b2bua: redis: stored binding is not JSON: %w", err)
	}
	return Binding(rb), nil
}

// Put implements Bindings. A binding whose Expires has passed is stored
// only in the indexes (Redis drops its key at once), so Expire counts it.
func (s *RedisBindings) Put(ctx context.Context, b Binding) error {
	rb := redisBinding(b)
	rb.Expires = b.Expires.UTC()
	js, err := json.Marshal(rb)
	if err != nil {
		return fmt.Errorf("b2bua: redis put %q: %w", b.Token, err)
	}
	ctx, cancel := s.opctx(ctx)
	defer cancel()
	err = redisBindingsPut.Run(ctx, s.client,
		[]string{s.bindKey(b.Token), s.aorKey(b.AOR), s.allKey},
		s.p, b.Token, string(js), b.AOR, redisMillis(b.Expires), redisMillis(s.now()),
	).Err()
	if err != nil {
		return fmt.Errorf("b2bua: redis put %q: %w", b.Token, err)
	}
	return nil
}

// ByToken implements Bindings.
func (s *RedisBindings) ByToken(ctx context.Context, token string) (Binding, error) {
	ctx, cancel := s.opctx(ctx)
	defer cancel()
	body, err := s.client.Get(ctx, s.bindKey(token)).Result()
	if errors.Is(err, redis.Nil) {
		return Binding{}, ErrNotFound
	}
	if err != nil {
		return Binding{}, fmt.Errorf("b2bua: redis get %q: %w", token, err)
	}
	b, err := s.decode(body)
	if err != nil {
		return Binding{}, err
	}
	if !b.Expires.After(s.now()) {
		return Binding{}, ErrNotFound
	}
	return b, nil
}

// ByAOR implements Bindings. It also drops the AOR's expired index
// entries.
func (s *RedisBindings) ByAOR(ctx context.Context, aor string) ([]Binding, error) {
	ctx, cancel := s.opctx(ctx)
	defer cancel()
	now := s.now()
	bodies, err := redisBindingsByAOR.Run(ctx, s.client, []string{s.aorKey(aor)}, s.p, redisMillis(now)).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("b2bua: redis by aor %q: %w", aor, err)
	}
	var out []Binding
	for _, body := range bodies {
		b, err := s.decode(body)
		if err != nil {
			return nil, err
		}
		if b.Expires.After(now) {
			out = append(out, b)
		}
	}
	return out, nil
}

// Delete implements Bindings.
func (s *RedisBindings) Delete(ctx context.Context, token string) error {
	ctx, cancel := s.opctx(ctx)
	defer cancel()
	err := redisBindingsDelete.Run(ctx, s.client, []string{s.bindKey(token), s.allKey}, s.p, token).Err()
	if err != nil {
		return fmt.Errorf("b2bua: redis delete %q: %w", token, err)
	}
	return nil
}

// Expire implements Bindings. Redis has usually dropped the bindings'
// keys already (TTL); Expire cleans the indexes, in batches of
// redisExpireBatch, each with its own deadline. With several gateways on
// one Redis, each expired binding is counted by the one that removed it.
func (s *RedisBindings) Expire(ctx context.Context, now time.Time) (int, error) {
	total := 0
	for {
		n, err := s.expireBatch(ctx, now)
		total += n
		if err != nil {
			return total, err
		}
		if n < redisExpireBatch {
			return total, nil
		}
	}
}

func (s *RedisBindings) expireBatch(ctx context.Context, now time.Time) (int, error) {
	ctx, cancel := s.opctx(ctx)
	defer cancel()
	n, err := redisBindingsExpire.Run(ctx, s.client, []string{s.allKey}, s.p, redisMillis(now), redisExpireBatch).Int()
	if err != nil {
		return 0, fmt.Errorf("b2bua: redis expire: %w", err)
	}
	return n, nil
}

// Len implements Bindings: the bindings whose Expires is after now, by
// the gateway's clock, across every gateway sharing the store.
func (s *RedisBindings) Len(ctx context.Context) (int, error) {
	ctx, cancel := s.opctx(ctx)
	defer cancel()
	n, err := s.client.ZCount(ctx, s.allKey, "("+redisMillis(s.now()), "+inf").Result()
	if err != nil {
		return 0, fmt.Errorf("b2bua: redis len: %w", err)
	}
	return int(n), nil
}
