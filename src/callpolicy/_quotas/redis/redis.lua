-- callpolicy quota admission, run atomically by Redis (EVALSHA), on the server's clock.
--
-- KEYS: two per quota (k1, k2), three for "sw" (k3), all under one hash tag so the script
-- also runs on a cluster.
-- ARGV[1] = operation: "admit", "change", "end" or "batch"; ARGV[2] = n quotas; ARGV[3] =
-- the admission id; ARGV[4] = when the admission was made (us; not "admit"); then 6 per quota:
--   algorithm ("sc" sliding window of calls, "sw" of weighted costs, "fw" fixed window,
--   "lb" leaky bucket, "tb" token bucket, "sp" spread window, "cc" in flight),
--   limit (a leaky or token bucket's burst), period (us; a bucket's interval per cost unit;
--   the lease for "cc"), cost, new cost ("change" only), guard (us; buckets) or, for "sw",
--   the most entries (calls of cost > 0) the window holds.
-- "admit" returns {1, now, before...} when every quota admits the cost (and takes it), with
-- the cost each bucket had admitted before it (0 for the others); else nothing is taken
-- and it returns {0, wait_us, index}: wait_us -1 = until a call in flight ends, -2 = never
-- (the cost is above the limit). "change" sets an admission's cost in each quota to its new
-- cost (0 gives it back) and returns {1, now}. "end" (its "new cost": the bucket's `before`)
-- tells that the call ended: slots are given back, and leaky and token buckets are moved to
-- at least where the calls admitted since it would have left them, had it been counted at
-- its end (see buckets.py); said twice, it is said once. "renew" (the ids after the quotas'
-- arguments) leases again the in-flight slots of calls still running and returns
-- {1, now, "i:id"...}: the slots of quota i that had lapsed: a slot gone stays gone, as
-- another call may have it. "batch" (ARGV[3]: how many; the quotas' cost and new cost
-- unused) applies changes and ends kept while Redis was away (pending.py), each as:
-- "change" or "end", id, when admitted, then cost and new cost of each quota.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local op, n, id = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local taken_at = tonumber(ARGV[4]) or now

local LATE = 50000  -- us: buckets.py LATE

local function keep(key, us)
  redis.call('PEXPIRE', key, math.ceil(us / 1000) + 1000)
end

local function keep_longer(key, us)  -- never shortens: leases differ between processes
  local ms = math.ceil(us / 1000) + 1000
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end

-- Calls ("sc") and slots ("cc") that left are removed TRIM at a time, the rest counted out
-- (ZCOUNT), so that a million leaving at once costs no call more than O(log n + TRIM).
local TRIM = 1000

local function trim(key, cutoff)
  local gone = redis.call('ZCOUNT', key, '-inf', cutoff)
  if gone > 0 then redis.call('ZREMRANGEBYRANK', key, 0, math.min(gone, TRIM) - 1) end
  return math.max(gone - TRIM, 0)  -- left behind, at the set's start
end

local function cost_of(member)
  return tonumber(string.match(member, ':([^:]+)$')) or 0
end

-- A weighted window ("sw"): k1 its entries "id:cost" scored by time, k2 the same members
-- scored by the running total of costs when each was admitted (a cumulative index: "when
-- will `excess` cost have left" is one range query), k3 a hash: total (exact: admissions are
-- decided on it), cum (the running total), debt (cost added to entries after their index
-- score was set, so that a wait read from the index is never too long), until (the latest
-- such entry's time), last (the latest entry's time: entries are stamped in index order).
-- A call of cost 0 takes no entry. Expiry reads each entry once, at most TRIM a call; the rest
-- is O(log n) per call.
local function sw_save(s)
  redis.call('HSET', s.k3, 'total', s.total, 'cum', s.cum, 'debt', s.debt, 'until', s.till,
    'last', s.last)
end

-- Reads the hash and expires the entries that left, saved at once (a refused call returns
-- without saving).
local function sw_load(s)
  local h = redis.call('HMGET', s.k3, 'total', 'cum', 'debt', 'until', 'last')
  s.total, s.cum = tonumber(h[1]) or 0, tonumber(h[2]) or 0
  s.debt, s.till, s.last = tonumber(h[3]) or 0, tonumber(h[4]) or 0, tonumber(h[5]) or 0
  local cutoff = now - s.period
  -- At most TRIM entries that left are read a call: the rest stay in the total until later
  -- calls take them off (for a while it admits less, never more, and a refusal's wait is
  -- then the shortest: the caller asks again at once, and each call takes TRIM more off).
  local old = redis.call('ZRANGEBYSCORE', s.k1, '-inf', cutoff, 'LIMIT', 0, TRIM)
  if #old > 0 then
    for _, member in ipairs(old) do s.total = s.total - cost_of(member) end
    redis.call('ZREMRANGEBYRANK', s.k1, 0, #old - 1)
    for j = 1, #old, 1000 do
      redis.call('ZREM', s.k2, unpack(old, j, math.min(j + 999, #old)))
    end
  end
  if s.till <= cutoff then s.debt = 0 end
  s.count = redis.call('ZCARD', s.k1)
  if s.count == 0 then s.total, s.cum = 0, 0 end  -- no float drift left behind
  if #old > 0 and h[1] then sw_save(s) end
end

-- When `excess` cost will have left: the first entry whose cumulative cost reaches it. Later
-- refunds make the index overstate what left before an entry, so the wait can be short (the
-- caller asks again), never long; cost added later is `debt`, subtracted from the target.
local function sw_wait(s, excess)
  local first = redis.call('ZRANGE', s.k2, 0, 0, 'WITHSCORES')
  local at
  if #first > 0 then
    local base = tonumber(first[2]) - cost_of(first[1])
    local hit = redis.call('ZRANGEBYSCORE', s.k2, base + excess - s.debt, '+inf', 'LIMIT', 0, 1)
    if #hit > 0 then at = tonumber(redis.call('ZSCORE', s.k1, hit[1])) end
  end
  if not at then  -- the oldest entry: the shortest wait
    local oldest = redis.call('ZRANGE', s.k1, 0, 0, 'WITHSCORES')
    at = tonumber(oldest[2]) or now
  end
  return math.max(1, at + s.period - now)
end

local function sw_keep(s)
  keep(s.k1, s.period)
  keep(s.k2, s.period)
  keep(s.k3, s.period)
end


local specs, k = {}, 1
for i = 1, n do
  local b = 4 + (i - 1) * 6
  specs[i] = {
    algo = ARGV[b + 1], limit = tonumber(ARGV[b + 2]), period = tonumber(ARGV[b + 3]),
    cost = tonumber(ARGV[b + 4]), new = tonumber(ARGV[b + 5]), guard = tonumber(ARGV[b + 6]),
    k1 = KEYS[k], k2 = KEYS[k + 1],
  }
  if specs[i].algo == 'sw' then
    specs[i].k3 = KEYS[k + 2]
    k = k + 3
  else
    k = k + 2
  end
end

local function ended(id, taken_at)
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
end

if op == 'renew' then  -- replies {1, now, "i:id"...}: the slots of quota i that had lapsed
  local reply = {1, now}
  for i = 1, n do
    local s = specs[i]
    if s.algo == 'cc' then
      for j = 5 + 6 * n, #ARGV do
        if redis.call('ZSCORE', s.k1, ARGV[j]) then
          redis.call('ZADD', s.k1, 'XX', now + s.period, ARGV[j])
        else
          reply[#reply + 1] = i .. ':' .. ARGV[j]
        end
      end
      keep_longer(s.k1, s.period)
    end
  end
  return reply
end

local function changed(id, taken_at)
  for i = 1, n do
    local s = specs[i]
    local delta = s.new - s.cost
    if s.algo == 'sc' then
      if s.new == 0 then redis.call('ZREM', s.k1, id) end
    elseif s.algo == 'sw' then
      sw_load(s)
      local member = id .. ':' .. s.cost
      local at = tonumber(redis.call('ZSCORE', s.k1, member))
      local index = tonumber(redis.call('ZSCORE', s.k2, member))
      if at then
        redis.call('ZREM', s.k1, member)
        redis.call('ZREM', s.k2, member)
      elseif s.cost == 0 and taken_at > now - s.period
          and not redis.call('ZSCORE', s.k1, id .. ':' .. s.new) then  -- no entry yet
        at, s.cum = taken_at, s.cum + s.new  -- counted from its admission
        index = s.cum
      end
      if at then
        if s.new > 0 then
          redis.call('ZADD', s.k1, at, id .. ':' .. s.new)
          redis.call('ZADD', s.k2, index or s.cum, id .. ':' .. s.new)
        end
        s.total = s.total + delta
        if delta > 0 then s.debt, s.till = s.debt + delta, math.max(s.till, at) end
        sw_save(s)
        sw_keep(s)
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
end

if op == 'end' then
  ended(id, taken_at)
  return {1, now}
elseif op == 'change' then
  changed(id, taken_at)
  return {1, now}
elseif op == 'batch' then  -- ARGV[3] changes after the quotas: op, id, at, (cost, new) each
  local b = 4 + n * 6
  for _ = 1, tonumber(ARGV[3]) do
    for i = 1, n do
      specs[i].cost, specs[i].new = tonumber(ARGV[b + 2 + 2 * i]), tonumber(ARGV[b + 3 + 2 * i])
    end
    if ARGV[b + 1] == 'end' then ended(ARGV[b + 2], tonumber(ARGV[b + 3]) or now)
    else changed(ARGV[b + 2], tonumber(ARGV[b + 3]) or now) end
    b = b + 3 + 2 * n
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
    local left = trim(s.k1, now - s.period)
    local count = redis.call('ZCARD', s.k1) - left
    if count + 1 > s.limit then  -- wait for the (count + 1 - limit)-th oldest to leave
      local j = left + count - s.limit
      local oldest = redis.call('ZRANGE', s.k1, j, j, 'WITHSCORES')
      wait = math.max(1, tonumber(oldest[2]) + s.period - now)
    end
  elseif s.algo == 'sw' then
    sw_load(s)
    if s.total + s.cost > s.limit then wait = sw_wait(s, s.total + s.cost - s.limit) end
    if s.cost > 0 and s.count >= s.guard then  -- full of entries: wait for the oldest to go
      local oldest = redis.call('ZRANGE', s.k1, s.count - s.guard, s.count - s.guard, 'WITHSCORES')
      wait = math.max(wait, 1, tonumber(oldest[2]) + s.period - now)
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
    local left = trim(s.k1, now)  -- leases of calls that never ended
    if redis.call('ZCARD', s.k1) - left >= s.limit then wait = -1 end
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
    local member = id .. ':' .. s.cost
    s.last = math.max(now, s.last)  -- a clock stepping back: counted longer, never shorter
    -- said twice (a retried send), taken once
    if s.cost > 0 and redis.call('ZADD', s.k1, 'NX', s.last, member) == 1 then
      s.cum, s.total = s.cum + s.cost, s.total + s.cost
      redis.call('ZADD', s.k2, s.cum, member)
    end
    sw_save(s)
    sw_keep(s)
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
