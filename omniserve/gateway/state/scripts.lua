-- The atomic steps of the shared queue and slot claims (omniserve/gateway/state/shared_pool.py).
-- Each section between "--@ NAME" lines is loaded as one script; ARGV[1] is the key prefix.
-- Keys (all under the prefix):
--   q            zset  ticket id -> order: Redis's clock in µs for arrivals (never below the last one,
--                      so a Redis restarted empty still puts newcomers behind the waiters the gateways
--                      put back), the head's order minus one for a ticket put back at the head
--   tk:<id>      hash  type, gw (owner gateway), hashes (chat affinity chain, space-separated), seq
--   types        hash  request type -> tickets waiting
--   qver         int   bumped whenever someone leaves the queue or is put back at its head
--   gws          set   gateway ids;  gw:<gid> its lease (PX);  gwt:<gid> its tickets;  gwc:<gid> its claims
--   slots        set   slot keys "<worker url>#<index>";  slot:<key> hash state, epoch, ticket, gw, type, since, used
--   free         zset  free slot key -> when last used (ms): dispatch takes the least recently used
--   hashes:<url> set   a worker's cached chat prefix hashes
--   asgd:<id>    str   "<slot key> <epoch>": the slot a ticket was given (kept a minute: a gateway that
--                      missed the notice finds it)
--   channel asg:<gid>  "<ticket id> <slot key> <epoch>" to the gateway holding the ticket's client
-- States of a slot: free (its worker said idle, nobody holds it), claimed, busy (its worker is busy,
-- or a release waits for an idle report taken after it: epoch), down (offline, loading, error, stuck).

--@ prelude
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- a whole number as Redis should store it (Lua would write 1.8e+15 and lose digits)
local function int(x)
  return string.format('%d', x)
end

-- Pop the head, claim a free slot, as long as there are both (``claim``; ``enqueue`` too).
local function claim_loop(P, most)
  local out = {0}
  local now = now_ms()
  for _ = 1, most do
    out[1] = out[1] + 1
    if redis.call('ZCARD', P .. 'free') == 0 then out[1] = out[1] - 1; break end
    local head = redis.call('ZRANGE', P .. 'q', 0, 0)
    if #head == 0 then out[1] = out[1] - 1; break end
    local tid = head[1]
    local tk = P .. 'tk:' .. tid
    local t = redis.call('HMGET', tk, 'type', 'gw', 'hashes')
    redis.call('ZREM', P .. 'q', tid)
    redis.call('INCR', P .. 'qver')
    if t[1] then redis.call('HINCRBY', P .. 'types', t[1], -1) end
    redis.call('DEL', tk)
    if t[2] then redis.call('SREM', P .. 'gwt:' .. t[2], tid) end
    if t[2] and redis.call('EXISTS', P .. 'gw:' .. t[2]) == 1 then
      local free = redis.call('ZRANGE', P .. 'free', 0, -1)
      local chosen = nil
      if t[1] == 'chat' and t[3] and t[3] ~= '' then
        local hs = {}
        for h in string.gmatch(t[3], '%S+') do hs[#hs + 1] = h end
        local best = 0
        for _, sk in ipairs(free) do
          local url = string.match(sk, '^(.*)#%d+$')
          for k = #hs, best + 1, -1 do
            if redis.call('SISMEMBER', P .. 'hashes:' .. url, hs[k]) == 1 then best = k; chosen = sk; break end
          end
        end
      end
      if not chosen then
        for _, sk in ipairs(free) do
          if redis.call('SCARD', P .. 'hashes:' .. string.match(sk, '^(.*)#%d+$')) == 0 then chosen = sk; break end
        end
      end
      chosen = chosen or free[1]
      redis.call('ZREM', P .. 'free', chosen)
      redis.call('HSET', P .. 'slot:' .. chosen, 'state', 'claimed', 'ticket', tid, 'gw', t[2], 'type', t[1], 'since', int(now))
      local epoch = redis.call('HINCRBY', P .. 'slot:' .. chosen, 'epoch', 1)
      redis.call('SADD', P .. 'gwc:' .. t[2], chosen)
      redis.call('SET', P .. 'asgd:' .. tid, chosen .. ' ' .. epoch, 'PX', 60000)
      redis.call('PUBLISH', P .. 'asg:' .. t[2], tid .. ' ' .. chosen .. ' ' .. epoch)
      out[#out + 1] = tid; out[#out + 1] = t[2]; out[#out + 1] = chosen; out[#out + 1] = epoch
    end
  end
  return out
end

--@ enqueue
-- ARGV: prefix, ticket id, type, gateway id, hashes, capacity  ->  {rank, length, order, claims} or -1
-- (full). With a slot free, the head is served at once (``claims``: as ``claim`` returns them), so a
-- newcomer that need not wait is never told ``queued``.
local P = ARGV[1]
if redis.call('ZCARD', P .. 'q') >= tonumber(ARGV[6]) then return -1 end
local seq = int(math.max(now_ms() * 1000, tonumber(redis.call('GET', P .. 'seq') or '0') + 1))
redis.call('SET', P .. 'seq', seq)
redis.call('ZADD', P .. 'q', seq, ARGV[2])
redis.call('HSET', P .. 'tk:' .. ARGV[2], 'type', ARGV[3], 'gw', ARGV[4], 'hashes', ARGV[5], 'seq', seq)
redis.call('SADD', P .. 'gwt:' .. ARGV[4], ARGV[2])
redis.call('HINCRBY', P .. 'types', ARGV[3], 1)
local rank, length = redis.call('ZRANK', P .. 'q', ARGV[2]), redis.call('ZCARD', P .. 'q')
local claims = {0}
if redis.call('ZCARD', P .. 'free') > 0 then claims = claim_loop(P, 64) end
return {rank, length, seq, claims}   -- seq as a string

--@ remove
-- ARGV: prefix, ticket id  ->  1 if it was waiting, 2 if it had just been given a slot that is now
-- free again (its client left before its gateway heard of the assignment), else 0
local P = ARGV[1]
local tid = ARGV[2]
local tk = P .. 'tk:' .. tid
local t = redis.call('HMGET', tk, 'type', 'gw')
local removed = redis.call('ZREM', P .. 'q', tid)
if removed == 1 then
  if t[1] then redis.call('HINCRBY', P .. 'types', t[1], -1) end
  redis.call('INCR', P .. 'qver')
end
if t[2] then redis.call('SREM', P .. 'gwt:' .. t[2], tid) end
redis.call('DEL', tk)
if removed == 0 then
  local a = redis.call('GET', P .. 'asgd:' .. tid)
  local sk = a and string.match(a, '^(%S+)')
  if sk then
    local s = redis.call('HMGET', P .. 'slot:' .. sk, 'state', 'ticket', 'gw')
    if s[1] == 'claimed' and s[2] == tid then
      if s[3] then redis.call('SREM', P .. 'gwc:' .. s[3], sk) end
      redis.call('HINCRBY', P .. 'slot:' .. sk, 'epoch', 1)
      redis.call('HSET', P .. 'slot:' .. sk, 'state', 'free', 'ticket', '', 'gw', '', 'type', '')
      redis.call('ZADD', P .. 'free', redis.call('HGET', P .. 'slot:' .. sk, 'used') or '0', sk)
      return 2
    end
  end
end
return removed

--@ requeue_front
-- ARGV: prefix, ticket id, type, gateway id, hashes  ->  the ticket's new order (ahead of everyone)
local P = ARGV[1]
if redis.call('ZSCORE', P .. 'q', ARGV[2]) then return 0 end
local head = redis.call('ZRANGE', P .. 'q', 0, 0, 'WITHSCORES')
local seq = int(head[2] and (tonumber(head[2]) - 1) or now_ms() * 1000)
redis.call('ZADD', P .. 'q', seq, ARGV[2])
redis.call('HSET', P .. 'tk:' .. ARGV[2], 'type', ARGV[3], 'gw', ARGV[4], 'hashes', ARGV[5], 'seq', seq)
redis.call('SADD', P .. 'gwt:' .. ARGV[4], ARGV[2])
redis.call('HINCRBY', P .. 'types', ARGV[3], 1)
redis.call('INCR', P .. 'qver')
return seq

--@ claim
-- ARGV: prefix, most assignments  ->  {tickets taken off the head, then ticket, gateway, slot, epoch, ...}
-- Pop the head, claim a free slot, as long as there are both. A ticket whose gateway's lease is
-- gone is dropped (its client went with its gateway). Chat: the slot whose worker holds the longest
-- cached prefix of the history, else a worker with nothing cached, else the least recently used.
return claim_loop(ARGV[1], tonumber(ARGV[2]))

--@ release
-- ARGV: prefix, slot, ticket, unused ("1": the session never reached the worker, the slot is free
-- again at once)  ->  1 if the claim was this ticket's
local P = ARGV[1]
local sk = P .. 'slot:' .. ARGV[2]
local s = redis.call('HMGET', sk, 'state', 'ticket', 'gw')
if s[1] ~= 'claimed' or s[2] ~= ARGV[3] then return 0 end
if s[3] then redis.call('SREM', P .. 'gwc:' .. s[3], ARGV[2]) end
redis.call('HINCRBY', sk, 'epoch', 1)
local now = now_ms()
if ARGV[4] == '1' then
  redis.call('HSET', sk, 'state', 'free', 'ticket', '', 'gw', '', 'type', '', 'used', int(now))
  redis.call('ZADD', P .. 'free', int(now), ARGV[2])
else
  redis.call('HSET', sk, 'state', 'busy', 'ticket', '', 'gw', '', 'type', '', 'used', int(now))
end
return 1

--@ report
-- ARGV: prefix, worker url, slot count, hashes (space-separated; "=" unchanged since this gateway's
-- last report), then per slot: index, epoch seen before the health request ("" = learned directly),
-- state (free | busy | down)  ->  how many slots it made free
-- The worker is the source of truth: a claimed slot is left alone (its gateway ends the claim); a
-- report is ignored for a slot claimed or released since it was requested (the epoch moved).
local P = ARGV[1]
local url = ARGV[2]
local n = tonumber(ARGV[3])
local hk = P .. 'hashes:' .. url
if ARGV[4] ~= '=' then
  redis.call('DEL', hk)
  local hs = {}
  for h in string.gmatch(ARGV[4], '%S+') do hs[#hs + 1] = h end
  for j = 1, #hs, 512 do redis.call('SADD', hk, unpack(hs, j, math.min(j + 511, #hs))) end
end
local freed = 0
local i = 5
for _ = 1, n do
  local sk = url .. '#' .. ARGV[i]
  local seen, want = ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  redis.call('SADD', P .. 'slots', sk)
  local s = redis.call('HMGET', P .. 'slot:' .. sk, 'state', 'epoch', 'used')
  local state, epoch = s[1] or 'down', s[2] or '0'
  if state ~= 'claimed' and (seen == '' or seen == epoch) and state ~= want then
    if want == 'free' then
      redis.call('ZADD', P .. 'free', s[3] or '0', sk)
      freed = freed + 1
    elseif state == 'free' then
      redis.call('ZREM', P .. 'free', sk)
    end
    redis.call('HSET', P .. 'slot:' .. sk, 'state', want)
  end
end
return freed

--@ forget
-- ARGV: prefix, worker url, slot count  ->  1 if the worker's slots are gone from the shared state (a
-- worker forgotten for want of heartbeats; not while one of its slots is claimed)
local P = ARGV[1]
local url = ARGV[2]
local keys = {}
for i = 0, tonumber(ARGV[3]) - 1 do
  local sk = url .. '#' .. i
  if redis.call('HGET', P .. 'slot:' .. sk, 'state') == 'claimed' then return 0 end
  keys[#keys + 1] = sk
end
for _, sk in ipairs(keys) do
  redis.call('SREM', P .. 'slots', sk)
  redis.call('ZREM', P .. 'free', sk)
  redis.call('DEL', P .. 'slot:' .. sk)
end
redis.call('DEL', P .. 'hashes:' .. url)
return 1

--@ epochs
-- ARGV: prefix, slot keys...  ->  their epochs ("0" for a slot never seen)
local P = ARGV[1]
local out = {}
for i = 2, #ARGV do out[#out + 1] = redis.call('HGET', P .. 'slot:' .. ARGV[i], 'epoch') or '0' end
return out

--@ renew
-- ARGV: prefix, gateway id, lease ms  ->  1 if the lease was still held, 0 if it had lapsed (or
-- Redis lost it: the caller puts its tickets and claims back)
local P = ARGV[1]
redis.call('SADD', P .. 'gws', ARGV[2])
local old = redis.call('SET', P .. 'gw:' .. ARGV[2], '1', 'PX', tonumber(ARGV[3]), 'GET')
if old then return 1 end
return 0

--@ restore
-- ARGV: prefix, gateway id, lease ms, ticket count, then per ticket: id, type, hashes, seq; then per
-- claim: slot, ticket, type. Takes the lease again and puts back what this gateway holds after Redis lost it (a restart without
-- persistence) or reaped it (this gateway stalled past its lease). A slot claimed meanwhile by
-- another gateway is left to it (the worker refuses one of the two; that one is requeued).
local P = ARGV[1]
local gw = ARGV[2]
redis.call('SET', P .. 'gw:' .. gw, '1', 'PX', tonumber(ARGV[3]))
redis.call('SADD', P .. 'gws', gw)
local n = tonumber(ARGV[4])
local i = 5
for _ = 1, n do
  local tid, ty, hs, seq = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  if not redis.call('ZSCORE', P .. 'q', tid) then
    redis.call('ZADD', P .. 'q', seq, tid)
    redis.call('HSET', P .. 'tk:' .. tid, 'type', ty, 'gw', gw, 'hashes', hs, 'seq', seq)
    redis.call('SADD', P .. 'gwt:' .. gw, tid)
    redis.call('HINCRBY', P .. 'types', ty, 1)
  end
end
local now = now_ms()
while i <= #ARGV do
  local sk, tid, ty = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  local s = redis.call('HMGET', P .. 'slot:' .. sk, 'state', 'gw')
  if s[1] ~= 'claimed' or s[2] == gw then
    redis.call('SADD', P .. 'slots', sk)
    redis.call('ZREM', P .. 'free', sk)
    redis.call('HSET', P .. 'slot:' .. sk, 'state', 'claimed', 'ticket', tid, 'gw', gw, 'type', ty, 'since', int(now))
    redis.call('SADD', P .. 'gwc:' .. gw, sk)
  end
end
redis.call('INCR', P .. 'qver')
return 1

--@ reap
-- ARGV: prefix  ->  how many gateways were gone. A gateway whose lease lapsed loses its waiting
-- tickets; the slots it held become busy until their workers report idle (they see the sockets close).
local P = ARGV[1]
local gone = 0
for _, gid in ipairs(redis.call('SMEMBERS', P .. 'gws')) do
  if redis.call('EXISTS', P .. 'gw:' .. gid) == 0 then
    gone = gone + 1
    for _, tid in ipairs(redis.call('SMEMBERS', P .. 'gwt:' .. gid)) do
      local tk = P .. 'tk:' .. tid
      local ty = redis.call('HGET', tk, 'type')
      if redis.call('ZREM', P .. 'q', tid) == 1 and ty then redis.call('HINCRBY', P .. 'types', ty, -1) end
      redis.call('DEL', tk)
    end
    for _, sk in ipairs(redis.call('SMEMBERS', P .. 'gwc:' .. gid)) do
      local s = redis.call('HMGET', P .. 'slot:' .. sk, 'state', 'gw')
      if s[1] == 'claimed' and s[2] == gid then
        redis.call('HSET', P .. 'slot:' .. sk, 'state', 'busy', 'ticket', '', 'gw', '', 'type', '')
        redis.call('HINCRBY', P .. 'slot:' .. sk, 'epoch', 1)
      end
    end
    redis.call('DEL', P .. 'gwt:' .. gid, P .. 'gwc:' .. gid)
    redis.call('SREM', P .. 'gws', gid)
    redis.call('INCR', P .. 'qver')
  end
end
return gone

--@ view
-- ARGV: prefix, ticket ids...  ->  {length, qver, now ms, {rank or -1 per id}, {type, count, ...},
-- {state, type, since, ...} per slot}: one round trip gives a gateway its waiters' positions (ranks,
-- never recomputed per event) and what the ETA needs.
local P = ARGV[1]
local ranks = {}
for i = 2, #ARGV do ranks[#ranks + 1] = redis.call('ZRANK', P .. 'q', ARGV[i]) or -1 end
local slots = {}
for _, sk in ipairs(redis.call('SMEMBERS', P .. 'slots')) do
  local s = redis.call('HMGET', P .. 'slot:' .. sk, 'state', 'type', 'since')
  slots[#slots + 1] = s[1] or 'down'; slots[#slots + 1] = s[2] or ''; slots[#slots + 1] = s[3] or '0'
end
return {redis.call('ZCARD', P .. 'q'), tonumber(redis.call('GET', P .. 'qver') or '0'), now_ms(), ranks,
        redis.call('HGETALL', P .. 'types'), slots}

--@ list
-- ARGV: prefix, limit  ->  {now ms, length, {ticket, type, order, ...} for the first ``limit``
-- waiters, {slot, ticket, type, since, ...} per claimed slot}: the whole queue's listing
-- (``GET /api/queue``), whichever gateway holds each waiter.
local P = ARGV[1]
local n = tonumber(ARGV[2])
local head = n > 0 and redis.call('ZRANGE', P .. 'q', 0, n - 1, 'WITHSCORES') or {}
local items = {}
for i = 1, #head, 2 do
  items[#items + 1] = head[i]
  items[#items + 1] = redis.call('HGET', P .. 'tk:' .. head[i], 'type') or ''
  items[#items + 1] = head[i + 1]
end
local running = {}
for _, sk in ipairs(redis.call('SMEMBERS', P .. 'slots')) do
  local s = redis.call('HMGET', P .. 'slot:' .. sk, 'state', 'ticket', 'type', 'since')
  if s[1] == 'claimed' and s[2] and s[2] ~= '' then
    running[#running + 1] = sk; running[#running + 1] = s[2]
    running[#running + 1] = s[3] or ''; running[#running + 1] = s[4] or '0'
  end
end
return {now_ms(), redis.call('ZCARD', P .. 'q'), items, running}

--@ ips
-- ARGV: prefix, gateway id, ttl ms, kind count, then per kind: kind, pair count, address, count, ...
--   ->  per kind, in order: {address, the other gateways' sum, ...}. This gateway's report (its
-- addresses holding many of that kind) replaces its last one and expires with ``ttl``; every other
-- gateway's report is summed (``SharedIpCounts``: per-address limits for all gateways together).
local P, gw, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local gws = redis.call('SMEMBERS', P .. 'gws')
local out = {}
local i = 5
for _ = 1, tonumber(ARGV[4]) do
  local kind, n = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local mine = P .. 'ips:' .. kind .. ':' .. gw
  redis.call('DEL', mine)
  for _ = 1, n do
    redis.call('HSET', mine, ARGV[i], ARGV[i + 1])
    i = i + 2
  end
  if n > 0 then redis.call('PEXPIRE', mine, ttl) end
  local sums = {}
  for _, g in ipairs(gws) do
    if g ~= gw then
      local h = redis.call('HGETALL', P .. 'ips:' .. kind .. ':' .. g)
      for j = 1, #h, 2 do sums[h[j]] = (sums[h[j]] or 0) + tonumber(h[j + 1]) end
    end
  end
  local flat = {}
  for addr, s in pairs(sums) do
    flat[#flat + 1] = addr
    flat[#flat + 1] = s
  end
  out[#out + 1] = flat
end
return out

--@ voice_sync
-- ARGV: prefix, channel, notice, then per voice on this gateway's disk: id, record (JSON)
--   ->  {ids whose audio Redis lacks or holds only for a while, ids deleted}. A voice of the shared
-- map ``voices`` keeps its record; one deleted through some gateway (a ``voice_gone`` tombstone)
-- is reported, for its spare to go; any other was lost with a Redis restart: its record goes back
-- (with a notice), and its audio is asked for.
local P = ARGV[1]
local map = P .. 'map:voices'
local need, gone, added = {}, {}, false
for i = 4, #ARGV, 2 do
  local id, rec = ARGV[i], ARGV[i + 1]
  if redis.call('HEXISTS', map, id) == 0 then
    if redis.call('EXISTS', P .. 'voice_gone:' .. id) == 1 then
      gone[#gone + 1] = id
    elseif redis.call('TTL', P .. 'voice:' .. id) < 0 then   -- an expiring audio: its upload is under way
      redis.call('HSET', map, id, rec)
      added = true
    end
  end
  if redis.call('HEXISTS', map, id) == 1 and redis.call('TTL', P .. 'voice:' .. id) ~= -1 then
    need[#need + 1] = id         -- -2: missing; 0 or more: still expiring (its upload did not finish)
  end
end
if added then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return {need, gone}

--@ voice_audio
-- ARGV: prefix, id, audio  ->  1 when the audio is in Redis for good now, 0 when the voice is not
-- listed (a deleted voice never comes back this way).
local P = ARGV[1]
if redis.call('HEXISTS', P .. 'map:voices', ARGV[2]) == 0 then return 0 end
if redis.call('EXISTS', P .. 'voice_gone:' .. ARGV[2]) == 1 then return 0 end
local k = P .. 'voice:' .. ARGV[2]
if redis.call('EXISTS', k) == 1 then
  redis.call('PERSIST', k)
else
  redis.call('SET', k, ARGV[3])
end
return 1

--@ voice_gone
-- ARGV: prefix, id, tombstone seconds, channel, notice  ->  1 when the voice was listed. In one step:
-- a tombstone (the gateway holding the spare then drops it instead of putting it back), the audio
-- and the record gone, and the shared map's change notice.
local P = ARGV[1]
redis.call('SET', P .. 'voice_gone:' .. ARGV[2], '1', 'EX', tonumber(ARGV[3]))
redis.call('DEL', P .. 'voice:' .. ARGV[2])
local n = redis.call('HDEL', P .. 'map:voices', ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return n
