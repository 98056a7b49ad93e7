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

/// Stores a batch of raw records and adds the batch's sums into the hourly and daily hashes, when
/// every record is new. A raw record is a field of its hour's hash (request id → JSON), written
/// with `HSETNX`; each hash written to gets its expiry and an entry in the index of raw hours.
///
/// ARGV: prefix, record count, hour count; then per hour: hour start, expiry (Unix ms), record
/// count, and that many (request id, JSON) pairs; then the batch's sums per period:
/// `hour`/`day`, period start, field count, and that many (field, amount) pairs.
///
/// Returns `{count}` when every record was new and was counted. Otherwise nothing is left
/// written and the reply is `{0, position, …}`: the 1-based positions (in argument order) of the
/// records already stored, or repeated within the batch; relayd sends the others again, with
/// their own sums. A retried write is rare, so the common batch costs one field per record and
/// a few HINCRBY, and the arguments carry nothing per record but its id and JSON.
pub(super) static RECORD_USAGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p, n, nh = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local a, pos, dups, written = 4, 0, {}, {}
for _ = 1, nh do
  local hour, expiry, k = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local key = p .. 'usage:raw:' .. hour
  a = a + 3
  for i = a, a + 2 * (k - 1), 2 do
    pos = pos + 1
    if redis.call('HSETNX', key, ARGV[i], ARGV[i + 1]) == 1 then
      written[#written + 1] = key
      written[#written + 1] = ARGV[i]
    else
      dups[#dups + 1] = pos
    end
  end
  if k > 0 then
    redis.call('PEXPIREAT', key, expiry)
    redis.call('ZADD', p .. 'usage:rawhours', hour, hour)
  end
  a = a + 2 * k
end
if #dups > 0 then
  for i = 1, #written, 2 do redis.call('HDEL', written[i], written[i + 1]) end
  table.insert(dups, 1, 0)
  return dups
end
while a <= #ARGV do
  local g, period, fields = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  redis.call('ZADD', p .. 'usage:' .. g .. 's', period, period)
  local h = p .. 'usage:' .. g .. ':' .. period
  for f = a + 3, a + 1 + 2 * fields, 2 do redis.call('HINCRBY', h, ARGV[f], ARGV[f + 1]) end
  a = a + 3 + 2 * fields
end
return {n}
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

/// Deletes up to about a limit of raw records that arrived before a time. ARGV: prefix, time
/// (exclusive), limit, scan cursor of the hour holding that time (`0` to start). Returns the
/// number deleted and the cursor to pass next; callers repeat while the number reaches the limit
/// or the cursor is not `0`.
///
/// Hours that ended by that time go whole (their count taken first, so one large hour may exceed
/// the limit). In the hour holding the time only earlier records go, found by scanning its hash a
/// slice per call. Records indexed the way older stores kept them (a key per record, indexed in
/// one set, later in a set per hour) are pruned too, first.
pub(super) static PRUNE_USAGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p, before, limit, cursor = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local HOUR = 3600000
local n = 0
local function prune_legacy(index)
  local ids = redis.call('ZRANGEBYSCORE', index, '-inf', '(' .. ARGV[2], 'LIMIT', 0, limit - n)
  for _, id in ipairs(ids) do
    redis.call('DEL', p .. 'usage:rec:' .. id)
    redis.call('ZREM', index, id)
  end
  n = n + #ids
end
prune_legacy(p .. 'usage:recs')
for _, hour in ipairs(redis.call('ZRANGEBYSCORE', p .. 'usage:rechours', '-inf', '(' .. ARGV[2])) do
  if n >= limit then return {n, cursor} end
  local index = p .. 'usage:recs:' .. hour
  prune_legacy(index)
  if redis.call('ZCARD', index) == 0 then redis.call('ZREM', p .. 'usage:rechours', hour) end
end
local index = p .. 'usage:rawhours'
for _, hour in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', before - HOUR)) do
  if n >= limit then return {n, cursor} end
  local key = p .. 'usage:raw:' .. hour
  n = n + redis.call('HLEN', key)
  redis.call('UNLINK', key)
  redis.call('ZREM', index, hour)
end
if n >= limit then return {n, cursor} end
for _, hour in ipairs(redis.call('ZRANGEBYSCORE', index, '(' .. (before - HOUR), '(' .. ARGV[2])) do
  local key = p .. 'usage:raw:' .. hour
  local page = redis.call('HSCAN', key, cursor, 'COUNT', limit - n)
  local flat = page[2]
  for j = 1, #flat, 2 do
    local ok, rec = pcall(cjson.decode, flat[j + 1])
    if ok and type(rec) == 'table' and tonumber(rec.at) and tonumber(rec.at) < before then
      redis.call('HDEL', key, flat[j])
      n = n + 1
    end
  end
  if redis.call('EXISTS', key) == 0 then redis.call('ZREM', index, hour) end
  return {n, page[1]}
end
return {n, '0'}
",
    )
});

/// Raw records deleted per [`PRUNE_USAGE`] call: small enough that Redis stays responsive.
pub(super) const PRUNE_CHUNK: u64 = 1000;

/// Adds a batch to a [`RECORD_USAGE`] invocation, after its prefix: the counts, the records
/// grouped by hour with each hour's raw-record expiry, then the batch's sums per period (see the
/// script for the layout). Returns the records in the order the script numbers them. A raw record
/// is kept at least `ttl_ms` after its hour ends or after now, whichever is later, so a late record
/// never goes into a hash that expires at once.
pub(super) fn push_usage_args<'r>(
    invocation: &mut ScriptInvocation<'_>,
    records: &[&'r UsageRecord],
    ttl_ms: UnixMillis,
    now: UnixMillis,
) -> StoreResult<Vec<&'r UsageRecord>> {
    // (granularity, period) → hash field → amount, over the whole batch.
    let mut sums: BTreeMap<(&str, UnixMillis), BTreeMap<String, u64>> = BTreeMap::new();
    // hour start → (request id, JSON) of the records that arrived in it.
    let mut hours: BTreeMap<UnixMillis, Vec<(&'r UsageRecord, String)>> = BTreeMap::new();
    for &r in records {
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
        hours
            .entry(Granularity::Hour.start(r.at))
            .or_default()
            .push((r, json));
    }
    invocation.arg(records.len()).arg(hours.len());
    let mut order = Vec::with_capacity(records.len());
    for (hour, batch) in hours {
        let ends = hour.saturating_add(Granularity::Hour.millis());
        invocation
            .arg(hour)
            .arg(ends.max(now).saturating_add(ttl_ms))
            .arg(batch.len());
        for (r, json) in batch {
            invocation.arg(&r.request_id).arg(json);
            order.push(r);
        }
    }
    for ((granularity, period), fields) in &sums {
        invocation.arg(*granularity).arg(period).arg(fields.len());
        for (field, amount) in fields {
            invocation.arg(field).arg(amount);
        }
    }
    Ok(order)
}
