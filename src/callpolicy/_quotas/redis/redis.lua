-- callpolicy quota admission, run atomically by Redis (EVALSHA), on the server's clock.
--
-- KEYS: two per quota (k1, k2), all under one hash tag so the script also runs on a cluster.
-- ARGV[1] = operation: "admit" or "change"; ARGV[2] = n quotas; ARGV[3] = the admission id;
-- ARGV[4] = when the admission was made (us; "change" only); then 6 per quota:
--   algorithm ("sc" sliding window of calls, "sw" of weighted costs, "fw" fixed window,
--   "lb" leaky bucket, "tb" token bucket, "sp" spread window, "cc" in flight),
--   limit (a leaky or token bucket's burst), period (us; a bucket's interval per cost unit;
--   the lease for "cc"), cost, new cost ("change" only), guard (us; buckets only).
-- "admit" returns {1, now, before...} when every quota admits the cost (and takes it), with
-- the cost each bucket had admitted before it (0 for the others); else nothing is taken
-- and it returns {0, wait_us, index}: wait_us -1 = until a call in flight ends, -2 = never
-- (the cost is above the limit). "change" sets an admission's cost in each quota to its new
-- cost (0 gives it back) and returns {1, now}. "end" (its "new cost": the bucket's `before`)
-- tells that the call ended: slots are given back, and leaky and token buckets are moved to
-- at least where the calls admitted since it would have left them, had it been counted at
-- its end (see buckets.py); said twice, it is said once. "renew" (the ids after the quotas'
-- arguments) leases again the in-flight slots of calls still running and returns
-- {1, now, id...} with the ids whose slot had lapsed: a slot gone stays gone (XX), as
-- another call may have it.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local op, n, id = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local taken_at = tonumber(ARGV[4]) or now

local function cost_of(member)
  return tonumber(string.match(member, ':([^:]+)$')) or 0
end

local function expire_window(k1, k2, period)
  local cutoff = now - period
  local old = redis.call('ZRANGEBYSCORE', k1, '-inf', cutoff)
  if #old > 0 then
    local freed = 0
    for _, member in ipairs(old) do freed = freed + cost_of(member) end
    redis.call('ZREMRANGEBYSCORE', k1, '-inf', cutoff)
    redis.call('INCRBYFLOAT', k2, -freed)
  end
end

local LATE = 50000  -- us: buckets.py LATE

local function keep(key, us)
  redis.call('PEXPIRE', key, math.ceil(us / 1000) + 1000)
end

local function keep_longer(key, us)  -- never shortens: leases differ between processes
  local ms = math.ceil(us / 1000) + 1000
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end

local specs = {}
for i = 1, n do
  local b = 4 + (i - 1) * 6
  specs[i] = {
    algo = ARGV[b + 1], limit = tonumber(ARGV[b + 2]), period = tonumber(ARGV[b + 3]),
    cost = tonumber(ARGV[b + 4]), new = tonumber(ARGV[b + 5]), guard = tonumber(ARGV[b + 6]),
    k1 = KEYS[2 * i - 1], k2 = KEYS[2 * i],
  }
end

if op == 'end' then
  for i = 1, n do
    local s = specs[i]
    if s.algo == 'cc' then
      redis.call('ZREM', s.k1, id)
    elseif s.algo == 'lb' or s.algo == 'tb' then
      local h = redis.call('HMGET', s.k1, 'tat', 'cum')
      local tat, cum = tonumber(h[1]), tonumber(h[2]) or 0
      local since = math.max(cum - s.new, s.cost)
      local room = s.limit  -- the burst beyond the call (buckets.py `late`)
      if s.algo == 'tb' then room = math.max(s.limit - s.cost, 0) end
      local bound = math.min(now, taken_at + LATE + room * s.period) + since * s.period
      if not tat or tat < bound then
        redis.call('HSET', s.k1, 'tat', bound, 'cum', cum)
        redis.call('PEXPIRE', s.k1, math.ceil((bound - now) / 1000) + 1000)
      end
    end
  end
  return {1, now}
end

if op == 'renew' then
  local reply = {1, now}
  for i = 1, n do
    local s = specs[i]
    if s.algo == 'cc' then
      for j = 5 + 6 * n, #ARGV do
        if redis.call('ZADD', s.k1, 'XX', 'CH', now + s.period, ARGV[j]) == 0 then
          reply[#reply + 1] = ARGV[j]
        end
      end
      keep_longer(s.k1, s.period)
    end
  end
  return reply
end

if op == 'change' then
  for i = 1, n do
    local s = specs[i]
    local delta = s.new - s.cost
    if s.algo == 'sc' then
      if s.new == 0 then redis.call('ZREM', s.k1, id) end
    elseif s.algo == 'sw' then
      local member = id .. ':' .. s.cost
      local score = redis.call('ZSCORE', s.k1, member)
      if score then
        redis.call('ZREM', s.k1, member)
        if s.new > 0 then redis.call('ZADD', s.k1, score, id .. ':' .. s.new) end
        redis.call('INCRBYFLOAT', s.k2, delta)
      end
    elseif s.algo == 'lb' or s.algo == 'tb' or s.algo == 'sp' then
      local h = redis.call('HMGET', s.k1, 'tat', 'cum')
      local tat = tonumber(h[1])
      if tat then
        tat = tat + delta * s.period
        redis.call('HSET', s.k1, 'tat', tat, 'cum', (tonumber(h[2]) or 0) + delta)
        redis.call('PEXPIRE', s.k1, math.max(math.ceil((tat - now) / 1000), 0) + 1000)
      end
    elseif s.algo == 'fw' then
      local start = tonumber(redis.call('HGET', s.k1, 'start'))
      if start and taken_at >= start and taken_at < start + s.period then
        redis.call('HINCRBYFLOAT', s.k1, 'count', delta)
      end
    elseif s.algo == 'cc' and s.new == 0 then
      redis.call('ZREM', s.k1, id)
    end
  end
  return {1, now}
end

local worst, worst_i = 0, 0
for i = 1, n do
  local s = specs[i]
  local wait = 0
  local most = s.limit  -- the largest cost: a leaky bucket's burst and the call itself
  if s.algo == 'lb' then most = s.limit + 1 end
  if s.cost > most and s.algo ~= 'cc' then
    return {0, -2, i}
  end
  if s.algo == 'sc' then  -- one entry per call: the count is the set's size
    redis.call('ZREMRANGEBYSCORE', s.k1, '-inf', now - s.period)
    local count = redis.call('ZCARD', s.k1)
    if count + 1 > s.limit then  -- wait for the (count + 1 - limit)-th oldest to leave
      local oldest = redis.call('ZRANGE', s.k1, count - s.limit, count - s.limit, 'WITHSCORES')
      wait = math.max(1, tonumber(oldest[2]) + s.period - now)
    end
  elseif s.algo == 'sw' then
    expire_window(s.k1, s.k2, s.period)
    local total = tonumber(redis.call('GET', s.k2) or '0')
    if total + s.cost > s.limit then
      local excess, freed = total + s.cost - s.limit, 0
      local entries = redis.call('ZRANGE', s.k1, 0, -1, 'WITHSCORES')
      wait = s.period
      for j = 1, #entries, 2 do
        freed = freed + cost_of(entries[j])
        if freed >= excess then
          wait = tonumber(entries[j + 1]) + s.period - now
          break
        end
      end
      if wait < 1 then wait = 1 end
    end
  elseif s.algo == 'lb' or s.algo == 'tb' or s.algo == 'sp' then  -- GCRA: see buckets.py
    local h = redis.call('HMGET', s.k1, 'tat', 'cum')
    local tat = tonumber(h[1]) or 0
    s.cum = tonumber(h[2]) or 0
    local room = s.limit
    if s.algo == 'tb' then room = s.limit - s.cost elseif s.algo == 'sp' then room = 0 end
    local early = tat - room * s.period + s.guard - now
    if early > 0.001 then wait = math.max(1, math.ceil(early)) end
    s.tat = math.max(tat, now) + s.cost * s.period
  elseif s.algo == 'fw' then
    local h = redis.call('HMGET', s.k1, 'start', 'count')
    local start, count = tonumber(h[1]), tonumber(h[2]) or 0
    if start and now - start < s.period then
      s.start = start
      if count + s.cost > s.limit then wait = math.max(1, start + s.period - now) end
    end
  elseif s.algo == 'cc' then
    redis.call('ZREMRANGEBYSCORE', s.k1, '-inf', now)  -- leases of calls that never ended
    if redis.call('ZCARD', s.k1) >= s.limit then wait = -1 end
  end
  -- A timed wait outranks "until a call ends": waiting less would not help.
  if wait ~= 0 and (worst_i == 0 or (wait > 0 and (worst < 0 or wait > worst))) then
    worst, worst_i = wait, i
  end
end
if worst_i > 0 then
  return {0, worst, worst_i}
end

local reply = {1, now}
for i = 1, n do
  local s = specs[i]
  reply[2 + i] = 0
  if s.algo == 'sc' then
    redis.call('ZADD', s.k1, now, id)
    keep(s.k1, s.period)
  elseif s.algo == 'sw' then
    redis.call('ZADD', s.k1, now, id .. ':' .. s.cost)
    redis.call('INCRBYFLOAT', s.k2, s.cost)
    keep(s.k1, s.period)
    keep(s.k2, s.period)
  elseif s.algo == 'lb' or s.algo == 'tb' or s.algo == 'sp' then
    redis.call('HSET', s.k1, 'tat', s.tat, 'cum', s.cum + s.cost)
    redis.call('PEXPIRE', s.k1, math.ceil((s.tat - now) / 1000) + 1000)  -- then drained
    reply[2 + i] = math.floor(s.cum)
  elseif s.algo == 'fw' then
    if s.start then
      redis.call('HINCRBYFLOAT', s.k1, 'count', s.cost)
    else
      redis.call('HSET', s.k1, 'start', now, 'count', s.cost)
    end
    keep(s.k1, s.period)
  elseif s.algo == 'cc' then
    redis.call('ZADD', s.k1, now + s.period, id)
    keep_longer(s.k1, s.period)
  end
end
return reply
