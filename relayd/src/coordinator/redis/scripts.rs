//! The Lua scripts of the Redis coordinator: each is one atomic step that reads Redis's own clock,
//! so instances on different hosts agree on when a lease or a window ends.

use std::sync::LazyLock;

use redis::Script;

/// Takes a lease if fewer than the cap are live: the exact step behind the fast take (see
/// `Inner::take_lease`), whose optimistic lease it first removes. KEYS: zset. ARGV: cap, lease
/// ms, member. Returns `{taken (0/1), live leases}`. Lua for the atomic check-and-add and for
/// Redis's clock: instances on different hosts must agree on when a lease expires.
pub(super) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZREM', KEYS[1], ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cap = tonumber(ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
-- Expired leases (of a crashed instance) only matter when they would refuse this one.
if n >= cap then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  n = redis.call('ZCARD', KEYS[1])
end
local lease = tonumber(ARGV[2])
if n < cap then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
  -- A new set gets its expiry here; renewals keep it alive while leases are held.
  if n == 0 then redis.call('PEXPIRE', KEYS[1], lease * 2) end
  return {1, n + 1}
end
return {0, n}
",
    )
});

/// Extends leases that still exist. KEYS: zsets. ARGV: lease ms, then (key index, member) pairs.
pub(super) static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  local k = KEYS[tonumber(ARGV[i])]
  redis.call('ZADD', k, 'XX', now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', k, lease * 2)
end
return 1
",
    )
});

/// Counts a request in a rolling minute. KEYS: zset. ARGV: limit, member. Returns -1 when
/// counted, else the milliseconds until the oldest counted request leaves the window.
pub(super) static TAKE_REQUEST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + 60000 - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], 61000)
return -1
",
    )
});

/// Starts a cooldown unless a longer one runs. KEYS: cooldown key. ARGV: until, reason,
/// channel, account id.
pub(super) static COOL_DOWN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local u = tonumber(string.match(cur, '^(%d+)'))
  if u and u >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'PXAT', ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[4] .. ' ' .. ARGV[1] .. ' ' .. ARGV[2])
return 1
",
    )
});

/// Shortens a cooldown that ends after a cap. KEYS: cooldown key. ARGV: cap (Unix ms).
/// Returns 1 when it was shortened. A script, so a cooldown started in between is not replaced.
pub(super) static CAP_COOLDOWN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local u = tonumber(string.match(cur, '^(%d+)'))
if u and u > tonumber(ARGV[1]) then
  local reason = string.match(cur, '^%d+ (.*)$') or ''
  redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. reason, 'PXAT', ARGV[1])
  return 1
end
return 0
",
    )
});
