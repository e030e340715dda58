"""The Lua scripts of a circuit breaker shared through Redis (see redis_breaker.py). Times are the
Redis server's (TIME, in milliseconds), so processes with different clocks agree on when an
open breaker probes. Keys: KEYS[1] the state (a hash), KEYS[2] the window (a string of one
digit per call for a count window, a hash of 10 buckets for a time window); both carry the
hash tag `{prefix:breaker}`, so a Cluster keeps them on one node.

State hash fields: state (0 closed, 1 open, 2 half-open), gen (bumped at each change),
probe_at (open: when trial calls may go), half_at (half-open: when it began), taken / done /
pfail / pslow (half-open: trial calls out, ended, failed, slow), calls / failures / slow (the
window's totals), next (a count window's slot) and head (a time window's newest bucket
number). Ratios are thousandths (integers: 0.07 of 100 calls is 7 failures, exactly).

Eviction: a missing state hash starts afresh (the window key is deleted with it) at
generation `now` in milliseconds, above any generation the lost hash reached, so a process's
view (which never moves back to an older generation) follows; a missing window key with
calls counted resets the totals. Counts never go below zero.
"""

from __future__ import annotations

# ARGV[1] is always the keys' time to live (ms).
PRELUDE = """
local h, w, ttl = KEYS[1], KEYS[2], ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function num(key, field, default)
  local v = redis.call('HGET', key, field)
  if v then return tonumber(v) end
  return default
end
local fresh = redis.call('EXISTS', h) == 0
if fresh then
  redis.call('DEL', w)
  redis.call('HSET', h, 'state', 0, 'gen', now, 'calls', 0, 'failures', 0, 'slow', 0,
             'next', 0, 'head', -1)
  redis.call('PEXPIRE', h, ttl)
end
local st, gen = num(h, 'state', 0), num(h, 'gen', 0)
local function reopen(open_for)
  gen = gen + 1
  redis.call('HSET', h, 'state', 1, 'gen', gen, 'probe_at', now + open_for, 'taken', 0,
             'done', 0, 'pfail', 0, 'pslow', 0)
end
local function lapsed(lease)
  return st == 2 and now >= num(h, 'half_at', 0) + lease
end
"""

# ARGV: ttl_ms, probes, open_for_ms, lease_ms. Reply: {state, gen, wait_ms, changed}:
# wait_ms > 0 refused (open), -1 refused (half-open, its trial calls out), 0 admitted;
# changed 1: this call made it half-open, 2: it opened it again, the trial calls of a
# half-open state having not ended within lease_ms.
ENTER = (
    PRELUDE
    + """
local probes, open_for = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('PEXPIRE', h, ttl)
redis.call('PEXPIRE', w, ttl)
if lapsed(tonumber(ARGV[4])) then
  reopen(open_for)
  return {1, gen, open_for, 2}
end
local changed = 0
if st == 1 then
  local at = num(h, 'probe_at', 0)
  if now < at then return {1, gen, at - now, 0} end
  st, gen, changed = 2, gen + 1, 1
  redis.call('HSET', h, 'state', 2, 'gen', gen, 'half_at', now, 'taken', 0, 'done', 0,
             'pfail', 0, 'pslow', 0)
end
if st == 2 then
  if num(h, 'taken', 0) >= probes then return {2, gen, -1, changed} end
  redis.call('HINCRBY', h, 'taken', 1)
end
return {st, gen, 0, changed}
"""
)

# ARGV: ttl_ms, gen, outcome (bit 1 failed, bit 2 slow), window kind (0 calls, 1 time), size
# (calls, or a bucket's width in ms), min_calls, failure and slow-call ratios in thousandths,
# open_for_ms, probes, lease_ms. Reply: {state, gen, wait_ms, change, calls, failures,
# slow}: change 1 opened by the window, 2 opened by the trial calls, 3 closed (calls,
# failures, slow: the trial calls'), 4 opened again, the trial calls not ended in lease_ms.
RECORD = (
    PRELUDE
    + """
local outcome, open_for = tonumber(ARGV[3]), tonumber(ARGV[9])
local fr, sr = tonumber(ARGV[7]), tonumber(ARGV[8])
local function opened(change, a, b, c)
  reopen(open_for)
  return {1, gen, open_for, change, a, b, c}
end
if lapsed(tonumber(ARGV[11])) then return opened(4, 0, 0, 0) end
if (tonumber(ARGV[2]) ~= gen and not fresh) or st == 1 then
  return {st, gen, math.max(0, num(h, 'probe_at', 0) - now), 0, 0, 0, 0}
end
redis.call('PEXPIRE', h, ttl)
local failed, slow = outcome % 2, math.floor(outcome / 2)
if st == 2 then
  local done = redis.call('HINCRBY', h, 'done', 1)
  local pf = redis.call('HINCRBY', h, 'pfail', failed)
  local ps = redis.call('HINCRBY', h, 'pslow', slow)
  local probes = tonumber(ARGV[10])
  if pf * 1000 >= fr * probes or ps * 1000 >= sr * probes then
    return opened(2, done, pf, ps)
  end
  if done < probes then return {2, gen, 0, 0, done, pf, ps} end
  redis.call('DEL', w)
  gen = gen + 1
  redis.call('HSET', h, 'state', 0, 'gen', gen, 'calls', 0, 'failures', 0, 'slow', 0,
             'next', 0, 'head', -1)
  return {0, gen, 0, 3, done, pf, ps}
end
local calls, fails, slows = num(h, 'calls', 0), num(h, 'failures', 0), num(h, 'slow', 0)
if calls > 0 and redis.call('EXISTS', w) == 0 then  -- the window evicted alone
  calls, fails, slows = 0, 0, 0
  redis.call('HSET', h, 'next', 0)
end
local size = tonumber(ARGV[5])
if ARGV[4] == '0' then
  local slot = num(h, 'next', 0)
  if calls >= size then
    local old = tonumber(redis.call('GETRANGE', w, slot, slot)) or 0
    fails, slows, calls = fails - old % 2, slows - math.floor(old / 2), size
  else
    calls = calls + 1
  end
  redis.call('SETRANGE', w, slot, tostring(outcome))
  redis.call('HSET', h, 'next', (slot + 1) % size)
else
  local newest, head = math.floor(now / size), num(h, 'head', -1)
  if newest > head then
    for n = math.max(head + 1, newest - 9), newest do
      local i = n % 10
      calls = calls - num(w, 'c' .. i, 0)
      fails = fails - num(w, 'f' .. i, 0)
      slows = slows - num(w, 's' .. i, 0)
      redis.call('HDEL', w, 'c' .. i, 'f' .. i, 's' .. i)
    end
    head = newest
    redis.call('HSET', h, 'head', head)
  end
  local i = head % 10
  redis.call('HINCRBY', w, 'c' .. i, 1)
  redis.call('HINCRBY', w, 'f' .. i, failed)
  redis.call('HINCRBY', w, 's' .. i, slow)
  calls = calls + 1
end
calls = math.max(calls, 0)
fails, slows = math.max(fails + failed, 0), math.max(slows + slow, 0)
redis.call('HSET', h, 'calls', calls, 'failures', fails, 'slow', slows)
redis.call('PEXPIRE', w, ttl)
if calls >= tonumber(ARGV[6]) and (fails * 1000 >= fr * calls or slows * 1000 >= sr * calls) then
  return opened(1, calls, fails, slows)
end
return {0, gen, 0, 0, calls, fails, slows}
"""
)

# ARGV: ttl_ms, gen. A trial call not made (or ended by an interrupt) is given back.
CANCEL = (
    PRELUDE
    + """
if st == 2 and tonumber(ARGV[2]) == gen and num(h, 'taken', 0) > 0 then
  redis.call('HINCRBY', h, 'taken', -1)
end
return 0
"""
)
