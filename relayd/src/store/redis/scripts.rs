//! The Lua scripts of the Redis backend: every write that touches more than one key, and the
//! reads that must see one consistent state, each run atomically by Redis. Also the argument
//! layout of the usage script, built next to the script that reads it.
//!
//! Every script is called with `{p}meta` as KEYS[1], which none of them reads: it routes the
//! call in a cluster, where all the keys a script builds from the prefix share that key's slot.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use redis::{Script, ScriptInvocation};
use shared::time::UnixMillis;
use shared::usage::UsageRecord;

use super::backend;
use crate::store::StoreResult;
use crate::store::usage::{CellDims, Granularity, UsageCounters};

/// Checks every name, frees the old names of the batch's ids, then writes all records.
/// ARGV: prefix, then (id, name, json) per record. Returns `{"ok"}` or `{"taken", name}`.
pub(super) static PUT_ACCOUNTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p = ARGV[1]
local n = (#ARGV - 1) / 3
local in_batch = {}
for i = 0, n - 1 do in_batch[ARGV[2 + 3 * i]] = true end
for i = 0, n - 1 do
  local id, name = ARGV[2 + 3 * i], ARGV[3 + 3 * i]
  local owner = redis.call('GET', p .. 'account-name:' .. name)
  if owner and owner ~= id and not in_batch[owner] then
    return {'taken', name}
  end
end
for i = 0, n - 1 do
  local id = ARGV[2 + 3 * i]
  local old = redis.call('GET', p .. 'account:' .. id)
  if old then
    local ok, rec = pcall(cjson.decode, old)
    if ok and type(rec) == 'table' and type(rec.settings) == 'table'
        and type(rec.settings.name) == 'string' then
      local k = p .. 'account-name:' .. rec.settings.name
      if redis.call('GET', k) == id then redis.call('DEL', k) end
    end
  end
end
for i = 0, n - 1 do
  local id, name, json = ARGV[2 + 3 * i], ARGV[3 + 3 * i], ARGV[4 + 3 * i]
  redis.call('SET', p .. 'account:' .. id, json)
  redis.call('SET', p .. 'account-name:' .. name, id)
  redis.call('SADD', p .. 'accounts', id)
end
redis.call('PUBLISH', p .. 'changes', 'accounts')
return {'ok'}
",
    )
});

/// Removes an account's record, name index entry and set member. ARGV: prefix, id. Returns 1 if
/// the record existed.
pub(super) static DELETE_ACCOUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p, id = ARGV[1], ARGV[2]
local old = redis.call('GET', p .. 'account:' .. id)
redis.call('SREM', p .. 'accounts', id)
if not old then return 0 end
local ok, rec = pcall(cjson.decode, old)
if ok and type(rec) == 'table' and type(rec.settings) == 'table'
    and type(rec.settings.name) == 'string' then
  local k = p .. 'account-name:' .. rec.settings.name
  if redis.call('GET', k) == id then redis.call('DEL', k) end
end
redis.call('DEL', p .. 'account:' .. id)
redis.call('HDEL', p .. 'profiles', id)
redis.call('PUBLISH', p .. 'changes', 'accounts')
return 1
",
    )
});

/// Stores a probe result beside its account, only while the account exists, and tells the
/// other instances. ARGV: prefix, account id, profile JSON. Returns 1 when written, else 0.
pub(super) static PUT_PROFILE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p, id, json = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', p .. 'account:' .. id) == 0 then return 0 end
redis.call('HSET', p .. 'profiles', id, json)
redis.call('PUBLISH', p .. 'changes', 'accounts')
return 1
",
    )
});

/// Reads every record of a set in one atomic step. ARGV: prefix, set key, record key infix.
/// Returns a flat list of id, json pairs.
pub(super) static LIST_RECORDS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p = ARGV[1]
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', p .. ARGV[2])) do
  local v = redis.call('GET', p .. ARGV[3] .. id)
  if v then
    out[#out + 1] = id
    out[#out + 1] = v
  end
end
return out
",
    )
});

/// Resolves a name and reads the record in one atomic step. ARGV: prefix, name. Returns
/// `{id, json}` or nil.
pub(super) static GET_ACCOUNT_BY_NAME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p = ARGV[1]
local id = redis.call('GET', p .. 'account-name:' .. ARGV[2])
if not id then return false end
local v = redis.call('GET', p .. 'account:' .. id)
if not v then return false end
return {id, v}
",
    )
});

/// Stores raw records (`SET NX`, so a request id seen before is skipped) and adds the new ones
/// into the hourly and daily hashes. ARGV: prefix, time to live in ms, record count, then per
/// record: request id, JSON, arrival, hour start, day start, encoded cell, errors, input, output,
/// cache-read, estimated; then the batch's sums per period: `hour`/`day`, period start, field
/// count, and that many (field, amount) pairs. Returns the number of records newly counted.
///
/// The sums (made by relayd) are added when every record was new, which is the rule: a few
/// HINCRBY per batch instead of a dozen per record. A batch holding records already counted (a
/// retried write) adds the new records one by one instead.
pub(super) static RECORD_USAGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p, ttl, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local per = 11 -- values per record, as pushed by `record_usage`
local recorded, new, hours = 0, {}, {}
for r = 0, n - 1 do
  local b = 4 + r * per
  if redis.call('SET', p .. 'usage:rec:' .. ARGV[b], ARGV[b + 1], 'NX', 'PX', ttl) then
    recorded = recorded + 1
    new[#new + 1] = b
    -- An index per hour: a small set is cheaper to add to than one holding every record.
    redis.call('ZADD', p .. 'usage:recs:' .. ARGV[b + 3], ARGV[b + 2], ARGV[b])
    hours[ARGV[b + 3]] = true
  end
end
for hour, _ in pairs(hours) do redis.call('ZADD', p .. 'usage:rechours', hour, hour) end
local s = 4 + n * per
while s <= #ARGV do
  local g, period, fields = ARGV[s], ARGV[s + 1], tonumber(ARGV[s + 2])
  if recorded > 0 then redis.call('ZADD', p .. 'usage:' .. g .. 's', period, period) end
  if recorded == n then
    local h = p .. 'usage:' .. g .. ':' .. period
    for f = s + 3, s + 1 + 2 * fields, 2 do redis.call('HINCRBY', h, ARGV[f], ARGV[f + 1]) end
  end
  s = s + 3 + 2 * fields
end
if recorded > 0 and recorded < n then
  local names = {'e', 'i', 'o', 'c', 'x'}
  for _, b in ipairs(new) do
    local cell = ARGV[b + 5]
    for g, period in pairs({hour = ARGV[b + 3], day = ARGV[b + 4]}) do
      local h = p .. 'usage:' .. g .. ':' .. period
      redis.call('HINCRBY', h, 'r:' .. cell, 1)
      for k = 1, 5 do
        local v = ARGV[b + 5 + k]
        if v ~= '0' then redis.call('HINCRBY', h, names[k] .. ':' .. cell, v) end
      end
    end
  end
end
return recorded
",
    )
});

/// Reads every counter of the periods in a score range, atomically. ARGV: prefix, `hour` or
/// `day`, min score, max score (Redis range syntax). Returns flat (period, field, value) triples.
pub(super) static USAGE_CELLS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p, g = ARGV[1], ARGV[2]
local out = {}
for _, period in ipairs(redis.call('ZRANGEBYSCORE', p .. 'usage:' .. g .. 's', ARGV[3], ARGV[4])) do
  local flat = redis.call('HGETALL', p .. 'usage:' .. g .. ':' .. period)
  for j = 1, #flat, 2 do
    out[#out + 1] = period
    out[#out + 1] = flat[j]
    out[#out + 1] = flat[j + 1]
  end
end
return out
",
    )
});

/// Deletes up to a limit of raw records that arrived before a time. ARGV: prefix, time
/// (exclusive), limit. Returns how many were deleted; callers repeat until it is below the limit.
/// Records indexed in the single set of older stores go first, then the hourly sets.
pub(super) static PRUNE_USAGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p, before, limit = ARGV[1], '(' .. ARGV[2], tonumber(ARGV[3])
local n = 0
local function prune(index)
  local ids = redis.call('ZRANGEBYSCORE', index, '-inf', before, 'LIMIT', 0, limit - n)
  for _, id in ipairs(ids) do
    redis.call('DEL', p .. 'usage:rec:' .. id)
    redis.call('ZREM', index, id)
  end
  n = n + #ids
end
prune(p .. 'usage:recs')
for _, hour in ipairs(redis.call('ZRANGEBYSCORE', p .. 'usage:rechours', '-inf', before)) do
  if n >= limit then break end
  local index = p .. 'usage:recs:' .. hour
  prune(index)
  if redis.call('ZCARD', index) == 0 then redis.call('ZREM', p .. 'usage:rechours', hour) end
end
return n
",
    )
});

/// Raw records deleted per [`PRUNE_USAGE`] call: small enough that Redis stays responsive.
pub(super) const PRUNE_CHUNK: u64 = 1000;

/// Adds the batch to a [`RECORD_USAGE`] invocation, after its prefix, time to live and count:
/// each record's values, then the batch's sums per period (see the script for the layout).
pub(super) fn push_usage_args(
    invocation: &mut ScriptInvocation<'_>,
    records: &[UsageRecord],
) -> StoreResult<()> {
    // (granularity, period) → hash field → amount, over the whole batch.
    let mut sums: BTreeMap<(&str, UnixMillis), BTreeMap<String, u64>> = BTreeMap::new();
    for r in records {
        let json =
            serde_json::to_string(r).map_err(|e| backend(format!("encoding usage record: {e}")))?;
        let c = UsageCounters::of(r);
        let cell = CellDims::of(r).encode();
        for granularity in [Granularity::Hour, Granularity::Day] {
            let fields = sums
                .entry((granularity.as_str(), granularity.start(r.at)))
                .or_default();
            for (name, amount) in [
                ("r", c.requests),
                ("e", c.errors),
                ("i", c.input_tokens),
                ("o", c.output_tokens),
                ("c", c.cache_read_tokens),
                ("x", c.estimated),
            ] {
                if amount > 0 {
                    *fields.entry(format!("{name}:{cell}")).or_default() += amount;
                }
            }
        }
        invocation
            .arg(&r.request_id)
            .arg(json)
            .arg(r.at)
            .arg(Granularity::Hour.start(r.at))
            .arg(Granularity::Day.start(r.at))
            .arg(cell)
            .arg(c.errors)
            .arg(c.input_tokens)
            .arg(c.output_tokens)
            .arg(c.cache_read_tokens)
            .arg(c.estimated);
    }
    for ((granularity, period), fields) in &sums {
        invocation.arg(*granularity).arg(period).arg(fields.len());
        for (field, amount) in fields {
            invocation.arg(field).arg(amount);
        }
    }
    Ok(())
}
