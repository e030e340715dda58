-- callpolicy: admit one call through one unweighted sliding window (the common case), on the
-- server's clock. The same keys as redis.lua ("sc"): a sorted set of admission ids scored by
-- their time (us), so redis.lua gives admissions back. KEYS[1]: the set.
-- ARGV: admission id, limit, period (us, guard included).
-- Returns {1, now} (taken) or {0, wait_us, 1}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local key, limit, period = KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3])
-- Calls that left are removed 1000 at a time (redis.lua TRIM), the rest counted out.
local gone = redis.call('ZCOUNT', key, '-inf', now - period)
if gone > 0 then redis.call('ZREMRANGEBYRANK', key, 0, math.min(gone, 1000) - 1) end
local left = math.max(gone - 1000, 0)
local count = redis.call('ZCARD', key) - left
if count + 1 > limit then  -- wait for the (count + 1 - limit)-th oldest to leave
  local j = left + count - limit
  local oldest = redis.call('ZRANGE', key, j, j, 'WITHSCORES')
  return {0, math.max(1, tonumber(oldest[2]) + period - now), 1}
end
redis.call('ZADD', key, now, ARGV[1])
redis.call('PEXPIRE', key, math.ceil(period / 1000) + 1000)
return {1, now}
