package identity

import "github.com/redis/go-redis/v9"

// The Lua scripts of the redis backend. Each write script first checks
// everything that could make it fail (conflicts, a missing entry, a value
// it cannot decode) and only then writes: Redis runs a script atomically
// but does not roll back the writes a script made before an error, so no
// call after the first write may fail.
//
// Every script gets KEYS[1] = {prefix}rev so that a cluster client routes
// it to the node holding the prefix's hash slot; the other keys are built
// from the prefix (ARGV[1]). With Redis Cluster the prefix must carry a
// hash tag ("{cusax}:") so that all of them live in that one slot.
//
// Index keys are passed as "kind:value" ("sip:sip:alice@example.com",
// "tel:+15551230001") and stored as {prefix}key:{kind}:{value}.
//
// Write results are {1, rev} on success, {0, "kind:value", owner} on a
// conflict, {0} when Delete finds nothing.

// luaCommon is prepended to every write script.
const luaCommon = `
local function storedKeys(body)
  local t = cjson.decode(body)
  local out = {}
  if type(t) ~= 'table' then return out end
  if type(t.sip) == 'table' then
    for _, v in ipairs(t.sip) do out[#out + 1] = 'sip:' .. v end
  end
  if type(t.tel) == 'table' then
    for _, v in ipairs(t.tel) do out[#out + 1] = 'tel:' .. v end
  end
  return out
end

-- dropCred deletes the digest credential of an index key "sip:{aor}"
-- (other kinds have none).
local function dropCred(p, k)
  if string.sub(k, 1, 4) == 'sip:' then redis.call('DEL', p .. 'cred:' .. string.sub(k, 5)) end
end

-- dropTomb removes the tombstone of jid, if any.
local function dropTomb(p, jid)
  if redis.call('DEL', p .. 'tomb:' .. jid) == 1 then
    redis.call('ZREM', p .. 'tombs', jid)
    redis.call('ZREM', p .. 'tombtimes', jid)
  end
end

local function withVersion(rev, js)
  return '{"version":' .. string.format('%d', rev) .. ',' .. string.sub(js, 2)
end

-- unindex deletes the index keys of jid among keys, and their credentials.
local function unindex(p, jid, keys)
  for _, k in ipairs(keys) do
    if redis.call('GET', p .. 'key:' .. k) == jid then
      redis.call('DEL', p .. 'key:' .. k)
      dropCred(p, k)
    end
  end
end

-- logGuard drops a log that is ahead of the counter (someone reset the
-- counter): XADD with an explicit ID would fail after the first write.
local function logGuard(p, rev)
  local last = redis.call('XREVRANGE', p .. 'log', '+', '-', 'COUNT', 1)
  if #last > 0 then
    local ms = tonumber(string.match(last[1][1], '^(%d+)'))
    if ms == nil or ms >= rev then redis.call('DEL', p .. 'log') end
  end
end

local function logAdd(p, rev, op, jid, body)
  local r = string.format('%d', rev)
  redis.call('XADD', p .. 'log', r .. '-0', 'rev', r, 'op', op, 'jid', jid, 'identity', body)
end

local function emit(p, rev, op, jid, body, max)
  logGuard(p, rev)
  logAdd(p, rev, op, jid, body)
  redis.call('XTRIM', p .. 'log', 'MAXLEN', '~', max)
  redis.call('PUBLISH', p .. 'events',
    '{"rev":' .. string.format('%d', rev) .. ',"op":"' .. op .. '","identity":' .. body .. '}')
end

-- storeIdentity is the write of Create and Put once every check passed:
-- jid's identity js (without version) under a new revision, indexed under
-- ARGV[5] onwards, no longer under stale, without a tombstone; the put
-- logged and published.
local function storeIdentity(p, jid, js, max, stale)
  local rev = redis.call('INCR', KEYS[1])
  local body = withVersion(rev, js)
  redis.call('SET', p .. 'id:' .. jid, body)
  unindex(p, jid, stale)
  for i = 5, #ARGV do redis.call('SET', p .. 'key:' .. ARGV[i], jid) end
  redis.call('ZADD', p .. 'jids', 0, jid)
  dropTomb(p, jid)
  emit(p, rev, 'put', jid, body, max)
  return {1, rev}
end
`

// redisCreate: ARGV prefix, jid, json (without version), logmax, keys...
var redisCreate = redis.NewScript(luaCommon + `
local p, jid, js, max = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if redis.call('EXISTS', p .. 'id:' .. jid) == 1 then return {0, 'jid:' .. jid, jid} end
for i = 5, #ARGV do
  local owner = redis.call('GET', p .. 'key:' .. ARGV[i])
  if owner then return {0, ARGV[i], owner} end
end
return storeIdentity(p, jid, js, max, {})
`)

// redisPut: ARGV prefix, jid, json (without version), logmax, keys...
var redisPut = redis.NewScript(luaCommon + `
local p, jid, js, max = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
for i = 5, #ARGV do
  local owner = redis.call('GET', p .. 'key:' .. ARGV[i])
  if owner and owner ~= jid then return {0, ARGV[i], owner} end
end
local stale = {}
local old = redis.call('GET', p .. 'id:' .. jid)
if old then
  local keep = {}
  for i = 5, #ARGV do keep[ARGV[i]] = true end
  for _, k in ipairs(storedKeys(old)) do
    if not keep[k] then stale[#stale + 1] = k end
  end
end
return storeIdentity(p, jid, js, max, stale)
`)

// redisDelete: ARGV prefix, jid, logmax, now and expiry cutoff (Unix
// milliseconds). It writes jid's tombstone after removing up to 64
// tombstones deleted before the cutoff.
var redisDelete = redis.NewScript(luaCommon + `
local p, jid, max, now, cutoff = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local idk = p .. 'id:' .. jid
local old = redis.call('GET', idk)
if not old then return {0} end
local keys = storedKeys(old)
local rev = redis.call('INCR', KEYS[1])
redis.call('DEL', idk)
unindex(p, jid, keys)
redis.call('ZREM', p .. 'jids', jid)
local expired = redis.call('ZRANGEBYSCORE', p .. 'tombtimes', '-inf', '(' .. cutoff, 'LIMIT', 0, 64)
for _, j in ipairs(expired) do dropTomb(p, j) end
redis.call('SET', p .. 'tomb:' .. jid, '{"rev":' .. string.format('%d', rev) .. ',"time":' .. now .. '}')
redis.call('ZADD', p .. 'tombs', 0, jid)
redis.call('ZADD', p .. 'tombtimes', now, jid)
emit(p, rev, 'delete', jid, old, max)
return {1, rev}
`)

// redisLookup: ARGV prefix, "kind:value". Returns the owner's stored JSON
// or nil, reading the index key and the identity in one atomic step.
var redisLookup = redis.NewScript(`
local j = redis.call('GET', ARGV[1] .. 'key:' .. ARGV[2])
if not j then return false end
return redis.call('GET', ARGV[1] .. 'id:' .. j)
`)

// redisPage: ARGV prefix, ZRANGEBYLEX min ("-" or "(after"), count, set,
// value kind. Returns {jid, json, jid, json, ...} in JID order from the
// sorted set {prefix}{set}, each value read from {prefix}{kind}{jid}:
// "jids", "id:" pages identities; "tombs", "tomb:" pages tombstones.
var redisPage = redis.NewScript(`
local p = ARGV[1]
local jids = redis.call('ZRANGEBYLEX', p .. ARGV[4], ARGV[2], '+', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, j in ipairs(jids) do
  local v = redis.call('GET', p .. ARGV[5] .. j)
  if v then
    out[#out + 1] = j
    out[#out + 1] = v
  end
end
return out
`)

// redisImport: ARGV prefix, identities, logmax, then per identity: jid,
// json (without version), the number of index keys, the index keys. The
// script checks every JID and key against the store and the batch itself,
// then writes all identities with consecutive revisions, logs the newest
// logmax of them and publishes one "import" notification covering the
// whole range. Nothing is written unless every check passed.
var redisImport = redis.NewScript(luaCommon + `
local p, n, max = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local jids, jss, keys, owners = {}, {}, {}, {}
local seen = {}
local pos = 4
for i = 1, n do
  local jid, js, nk = ARGV[pos], ARGV[pos + 1], tonumber(ARGV[pos + 2])
  pos = pos + 3
  if seen['jid:' .. jid] then return {0, 'jid:' .. jid, jid} end
  seen['jid:' .. jid] = jid
  jids[i], jss[i] = jid, js
  for k = 1, nk do
    local key = ARGV[pos]
    pos = pos + 1
    if seen[key] then return {0, key, seen[key]} end
    seen[key] = jid
    keys[#keys + 1] = key
    owners[#owners + 1] = jid
  end
end
for i = 1, n do
  if redis.call('EXISTS', p .. 'id:' .. jids[i]) == 1 then return {0, 'jid:' .. jids[i], jids[i]} end
end
for i = 1, #keys do
  local o = redis.call('GET', p .. 'key:' .. keys[i])
  if o then return {0, keys[i], o} end
end
local last = redis.call('INCRBY', KEYS[1], n)
local first = last - n + 1
local bodies = {}
for i = 1, n do
  bodies[i] = withVersion(first + i - 1, jss[i])
  redis.call('SET', p .. 'id:' .. jids[i], bodies[i])
  redis.call('ZADD', p .. 'jids', 0, jids[i])
  dropTomb(p, jids[i])
end
for i = 1, #keys do redis.call('SET', p .. 'key:' .. keys[i], owners[i]) end
logGuard(p, first)
for i = math.max(1, n - max + 1), n do
  logAdd(p, first + i - 1, 'put', jids[i], bodies[i])
end
redis.call('XTRIM', p .. 'log', 'MAXLEN', '~', max)
redis.call('PUBLISH', p .. 'events',
  '{"rev":' .. string.format('%d', last) .. ',"op":"import","first":' .. string.format('%d', first) .. '}')
return {1, last}
`)

// redisAckTombstone: ARGV prefix, jid, rev. Removes jid's tombstone unless
// it is newer than rev; returns 1 when it removed one, else 0. A tombstone
// that does not decode is removed.
var redisAckTombstone = redis.NewScript(luaCommon + `
local p, jid, rev = ARGV[1], ARGV[2], tonumber(ARGV[3])
local v = redis.call('GET', p .. 'tomb:' .. jid)
if not v then return 0 end
local ok, t = pcall(cjson.decode, v)
if ok and type(t) == 'table' and tonumber(t.rev) and tonumber(t.rev) > rev then return 0 end
dropTomb(p, jid)
return 1
`)

// Digest credentials live in {prefix}cred:{aor} as JSON with the owner's
// "jid". They are not identity writes: no revision, no log, no event.

// redisSetCred: ARGV prefix, jid, aor, credential JSON (with jid). Returns
// {1} when stored, {0} when the JID does not exist, {0, owner} when jid
// does not own the AOR (owner "" if nobody does).
var redisSetCred = redis.NewScript(`
local p, jid, aor = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', p .. 'id:' .. jid) == 0 then return {0} end
local owner = redis.call('GET', p .. 'key:sip:' .. aor)
if owner ~= jid then return {0, owner or ''} end
redis.call('SET', p .. 'cred:' .. aor, ARGV[4])
return {1}
`)

// redisGetCred: ARGV prefix, aor. Returns the credential JSON while the
// JID it names still owns the AOR, else nil.
var redisGetCred = redis.NewScript(`
local p, aor = ARGV[1], ARGV[2]
local v = redis.call('GET', p .. 'cred:' .. aor)
if not v then return false end
local ok, t = pcall(cjson.decode, v)
if not ok or type(t) ~= 'table' then return false end
if redis.call('GET', p .. 'key:sip:' .. aor) ~= t.jid then return false end
return v
`)

// redisDelCred: ARGV prefix, jid, aor. Returns 1 when it deleted the
// credential of aor owned by jid, else 0.
var redisDelCred = redis.NewScript(`
local p, jid, aor = ARGV[1], ARGV[2], ARGV[3]
local v = redis.call('GET', p .. 'cred:' .. aor)
if not v then return 0 end
local ok, t = pcall(cjson.decode, v)
if not ok or type(t) ~= 'table' or t.jid ~= jid then return 0 end
if redis.call('GET', p .. 'key:sip:' .. aor) ~= jid then return 0 end
redis.call('DEL', p .. 'cred:' .. aor)
return 1
`)
