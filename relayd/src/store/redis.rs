//! The Redis backend, for several relayd instances sharing one Redis or one Redis Cluster.
//!
//! Key layout (every key starts with the configured prefix `{p}`, `relayd:` by default; in a
//! cluster the prefix is hash-tagged, `{relayd}:`, so every key is in one slot — see
//! [`connection`]):
//!
//! | key                       | type   | holds                         |
//! |---------------------------|--------|-------------------------------|
//! | `{p}account:{id}`         | string | account record JSON           |
//! | `{p}account-name:{name}`  | string | id of the account with `name` |
//! | `{p}accounts`             | set    | every account id              |
//! | `{p}key:{id}`             | string | relay-key record JSON         |
//! | `{p}keys`                 | set    | every relay-key id            |
//! | `{p}meta`                 | hash   | metadata (format version, …)  |
//! | `{p}profiles`             | hash   | account id → probe result JSON |
//! | `{p}usage:raw:{hour start}` | hash | request id → raw usage record JSON, for the requests that arrived in that hour; expires `usage.retention_days` after the hour ends |
//! | `{p}usage:rawhours`       | zset   | the hours that have such a hash, scored by start |
//! | `{p}usage:rec:{request id}` | string | raw usage record JSON, as stores before the hourly hashes kept it (with a time to live; read only by pruning) |
//! | `{p}usage:recs:{hour start}`, `{p}usage:rechours`, `{p}usage:recs` | zset | the indexes of those older records, kept only for pruning |
//! | `{p}usage:hour:{start}`   | hash   | that hour's counters: field `{c}:[key,account,model]` |
//! | `{p}usage:day:{start}`    | hash   | that day's counters, fields as above |
//! | `{p}usage:hours`, `{p}usage:days` | zset | the periods that have a hash, scored by start |
//!
//! A raw record is found again by its request id within its arrival hour: a re-sent batch carries
//! the same records, so the same hours. Records an earlier version kept as keys of their own are
//! not looked at when recording (a batch is only ever re-sent by the process that wrote it), and
//! they expire or are pruned as before.
//!
//! Counter names `c` in usage fields: `r` requests, `e` errors, `i`/`o`/`c` input, output and
//! cache-read tokens, `x` requests with estimated tokens.
//!
//! Every write also publishes `accounts` or `keys` on the `{p}changes` channel, so other
//! instances reload their snapshots (see `coordinator::redis`).
//!
//! Everything that touches more than one key is one Lua script (or a MULTI/EXEC block), which
//! Redis runs atomically, so other instances never see half of a write. The scripts build key names
//! from the prefix passed as an argument (which records they touch is only known inside them) and
//! declare `{p}meta` as their one key: a cluster routes the call by it, and every key they build
//! shares its hash tag, so Redis sees them all in the declared key's slot.
//!
//! The connection is a [`RedisConn`]: one multiplexed connection shared by every request,
//! re-established in the background when it drops (or, in a cluster, one per node, following the
//! slot map).
//!
//! This file holds the store and its [`Store`] impl; the Lua scripts are in `scripts`.

mod scripts;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use shared::account::AccountId;
use shared::key::KeyId;
use shared::profile::Profile;
use shared::time::{UnixMillis, now_millis};
use shared::usage::{UsageQuery, UsageRecord, UsageReport};

use super::codec::{
    decode_account, decode_key, decode_profile, encode_account, encode_key, encode_profile,
};
use super::usage::{CellDims, UsageCell, UsageCounters, UsagePlan, UsageWrite, summarise};
use super::{
    AccountRecord, FORMAT_VERSION, FORMAT_VERSION_META, KeyRecord, Store, StoreError, StoreKind,
    StoreResult, check_format_version, plan_account_batch,
};
use crate::redis_endpoint::{RedisConn, RedisEndpoint, scrub};
use scripts::{
    DELETE_ACCOUNT, GET_ACCOUNT_BY_NAME, LIST_RECORDS, PRUNE_CHUNK, PRUNE_USAGE, PUT_ACCOUNTS,
    PUT_PROFILE, RECORD_USAGE, USAGE_CELLS, push_usage_args,
};

/// A [`Store`] over a Redis server.
#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConn,
    /// The prefix keys are named with (hash-tagged in a cluster).
    prefix: String,
    /// The URL with its password masked, for messages.
    display_url: String,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.display_url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://[user:password@]host[:port][/db]`, `rediss://…`, or
    /// `redis+cluster://[user:password@]host:port,host:port…`) and checks the store format under
    /// `prefix` (hash-tagged in a cluster, see [`connection`]), recording it if this is a fresh
    /// prefix. Errors never contain the password.
    pub async fn connect(url: &str, prefix: &str) -> StoreResult<Self> {
        let endpoint = RedisEndpoint::parse(url).map_err(backend)?;
        let display_url = endpoint.display().to_owned();
        let conn = endpoint.connect().await.map_err(|e| {
            let detail = scrub(&e.to_string(), url);
            backend(format!("cannot connect to {display_url}: {detail}"))
        })?;
        let store = Self {
            conn,
            prefix: endpoint.key_prefix(prefix),
            display_url,
        };
        store.check_format().await?;
        Ok(store)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// The key every script declares (`{p}meta`): in a cluster the call is routed by its declared
    /// keys, and every key a script builds from the prefix shares this one's hash tag and slot.
    fn script_key(&self) -> String {
        self.key("meta")
    }

    async fn check_format(&self) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let meta = self.key("meta");
        // HSETNX claims a fresh prefix for this version without racing another instance doing
        // the same; the HGET then checks whatever is there, ours or theirs.
        let () = redis::cmd("HSETNX")
            .arg(&meta)
            .arg(FORMAT_VERSION_META)
            .arg(FORMAT_VERSION)
            .exec_async(&mut conn)
            .await
            .map_err(from_redis)?;
        let found: Option<String> = redis::cmd("HGET")
            .arg(&meta)
            .arg(FORMAT_VERSION_META)
            .query_async(&mut conn)
            .await
            .map_err(from_redis)?;
        match found {
            Some(found) => check_format_version(&found),
            None => Ok(()),
        }
    }

    async fn get_string(&self, key: String) -> StoreResult<Option<String>> {
        let mut conn = self.conn.clone();
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(from_redis)
    }

    async fn list_records(&self, set: &str, infix: &str) -> StoreResult<Vec<(String, String)>> {
        let mut conn = self.conn.clone();
        let flat: Vec<String> = LIST_RECORDS
            .key(self.script_key())
            .arg(&self.prefix)
            .arg(set)
            .arg(infix)
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        let mut pairs = Vec::with_capacity(flat.len() / 2);
        let mut it = flat.into_iter();
        while let (Some(id), Some(json)) = (it.next(), it.next()) {
            pairs.push((id, json));
        }
        Ok(pairs)
    }
}

fn backend(detail: String) -> StoreError {
    StoreError::Backend {
        backend: "redis",
        detail,
    }
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "used as `map_err(from_redis)`, which passes the error by value"
)]
fn from_redis(e: redis::RedisError) -> StoreError {
    backend(e.to_string())
}

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Redis
    }

    async fn ping(&self) -> StoreResult<()> {
        // A read of the store's own key rather than PING: on a cluster it reaches the node
        // holding the store's slot and fails while the cluster refuses commands (a node PINGs
        // back even then).
        let mut conn = self.conn.clone();
        let _: bool = redis::cmd("EXISTS")
            .arg(self.script_key())
            .query_async(&mut conn)
            .await
            .map_err(from_redis)?;
        Ok(())
    }

    async fn list_accounts(&self) -> StoreResult<Vec<AccountRecord>> {
        let mut out = self
            .list_records("accounts", "account:")
            .await?
            .into_iter()
            .map(|(id, json)| decode_account(&id, &json))
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort_by(|a, b| {
            (a.settings.name.as_str(), &a.id).cmp(&(b.settings.name.as_str(), &b.id))
        });
        Ok(out)
    }

    async fn get_account(&self, id: &AccountId) -> StoreResult<Option<AccountRecord>> {
        self.get_string(self.key(&format!("account:{id}")))
            .await?
            .map(|json| decode_account(id.as_str(), &json))
            .transpose()
    }

    async fn get_account_by_name(&self, name: &str) -> StoreResult<Option<AccountRecord>> {
        let mut conn = self.conn.clone();
        let found: Option<(String, String)> = GET_ACCOUNT_BY_NAME
            .key(self.script_key())
            .arg(&self.prefix)
            .arg(name)
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        let Some((id, json)) = found else {
            return Ok(None);
        };
        let record = decode_account(&id, &json)?;
        // A stale index entry (left by a damaged record) must not return another name's account.
        Ok((record.settings.name == name).then_some(record))
    }

    async fn put_accounts(&self, records: &[AccountRecord]) -> StoreResult<()> {
        let batch = plan_account_batch(records)?;
        if batch.is_empty() {
            return Ok(());
        }
        let mut invocation = PUT_ACCOUNTS.prepare_invoke();
        invocation.key(self.script_key()).arg(&self.prefix);
        for record in batch {
            invocation
                .arg(record.id.as_str())
                .arg(&record.settings.name)
                .arg(encode_account(record)?);
        }
        let mut conn = self.conn.clone();
        let reply: Vec<String> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        match reply.as_slice() {
            [ok] if ok == "ok" => Ok(()),
            [taken, name] if taken == "taken" => Err(StoreError::NameTaken { name: name.clone() }),
            other => Err(backend(format!(
                "unexpected reply from the account write script: {other:?}"
            ))),
        }
    }

    async fn delete_account(&self, id: &AccountId) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let removed: i64 = DELETE_ACCOUNT
            .key(self.script_key())
            .arg(&self.prefix)
            .arg(id.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        Ok(removed == 1)
    }

    async fn put_profile(&self, id: &AccountId, profile: &Profile) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let written: i64 = PUT_PROFILE
            .key(self.script_key())
            .arg(&self.prefix)
            .arg(id.as_str())
            .arg(encode_profile(profile)?)
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        Ok(written == 1)
    }

    async fn list_profiles(&self) -> StoreResult<Vec<(AccountId, Profile)>> {
        let mut conn = self.conn.clone();
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.key("profiles"))
            .query_async(&mut conn)
            .await
            .map_err(from_redis)?;
        Ok(all
            .into_iter()
            .filter_map(|(id, json)| {
                decode_profile(&id, &json).map(|profile| (AccountId(id), profile))
            })
            .collect())
    }

    async fn list_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        let mut out = self
            .list_records("keys", "key:")
            .await?
            .into_iter()
            .map(|(id, json)| decode_key(&id, &json))
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort_by(|a, b| (a.key.created_at, &a.key.id).cmp(&(b.key.created_at, &b.key.id)));
        Ok(out)
    }

    async fn get_key(&self, id: &KeyId) -> StoreResult<Option<KeyRecord>> {
        self.get_string(self.key(&format!("key:{id}")))
            .await?
            .map(|json| decode_key(id.as_str(), &json))
            .transpose()
    }

    async fn put_key(&self, record: &KeyRecord) -> StoreResult<()> {
        let json = encode_key(record)?;
        let mut conn = self.conn.clone();
        let () = redis::pipe()
            .atomic()
            .set(self.key(&format!("key:{}", record.key.id)), json)
            .ignore()
            .sadd(self.key("keys"), record.key.id.as_str())
            .ignore()
            .publish(self.key("changes"), "keys")
            .ignore()
            .exec_async(&mut conn)
            .await
            .map_err(from_redis)?;
        Ok(())
    }

    async fn get_meta(&self, name: &str) -> StoreResult<Option<String>> {
        let mut conn = self.conn.clone();
        redis::cmd("HGET")
            .arg(self.key("meta"))
            .arg(name)
            .query_async(&mut conn)
            .await
            .map_err(from_redis)
    }

    async fn set_meta(&self, name: &str, value: &str) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("HSET")
            .arg(self.key("meta"))
            .arg(name)
            .arg(value)
            .exec_async(&mut conn)
            .await
            .map_err(from_redis)
    }

    async fn record_usage(
        &self,
        records: &[UsageRecord],
        keep_raw: Duration,
    ) -> StoreResult<UsageWrite> {
        if records.is_empty() {
            return Ok(UsageWrite::default());
        }
        let ttl_ms = UnixMillis::try_from(keep_raw.as_millis())
            .unwrap_or(UnixMillis::MAX)
            .max(1);
        // Every pass either counts all it sends or learns which records are duplicates and
        // leaves them out of the next, so this ends after a pass or two.
        let mut pending: Vec<&UsageRecord> = records.iter().collect();
        let mut duplicates = 0;
        while !pending.is_empty() {
            let mut invocation = RECORD_USAGE.prepare_invoke();
            invocation.key(self.script_key()).arg(&self.prefix);
            let order = push_usage_args(&mut invocation, &pending, ttl_ms, now_millis())?;
            let mut conn = self.conn.clone();
            let reply: Vec<usize> = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(from_redis)?;
            match reply.split_first() {
                Some((&recorded, [])) if recorded == order.len() => {
                    return Ok(UsageWrite {
                        recorded: u64::try_from(recorded).unwrap_or(u64::MAX),
                        duplicates,
                    });
                }
                Some((0, seen)) if !seen.is_empty() => {
                    let seen: std::collections::HashSet<usize> = seen.iter().copied().collect();
                    let sent = order.len();
                    pending = order
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| !seen.contains(&(i + 1)))
                        .map(|(_, r)| r)
                        .collect();
                    if pending.len() == sent {
                        return Err(backend(format!(
                            "the usage script named records it was not sent: {seen:?}"
                        )));
                    }
                    duplicates += u64::try_from(sent - pending.len()).unwrap_or(u64::MAX);
                }
                _ => {
                    return Err(backend(format!(
                        "unexpected reply to the usage script: {reply:?}"
                    )));
                }
            }
        }
        Ok(UsageWrite {
            recorded: 0,
            duplicates,
        })
    }

    async fn usage_totals(&self, query: &UsageQuery) -> StoreResult<UsageReport> {
        let plan = UsagePlan::for_query(query);
        let min = plan
            .from
            .map_or_else(|| "-inf".to_owned(), |t| t.to_string());
        let max = plan
            .to
            .map_or_else(|| "+inf".to_owned(), |t| format!("({t}"));
        let mut conn = self.conn.clone();
        let flat: Vec<String> = USAGE_CELLS
            .key(self.script_key())
            .arg(&self.prefix)
            .arg(plan.granularity.as_str())
            .arg(min)
            .arg(max)
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        let mut cells: std::collections::HashMap<(UnixMillis, String), UsageCounters> =
            std::collections::HashMap::new();
        let mut it = flat.into_iter();
        while let (Some(period), Some(field), Some(value)) = (it.next(), it.next(), it.next()) {
            let corrupt = |detail: &str| StoreError::Corrupt {
                what: format!("usage {}:{period} field {field}", plan.granularity.as_str()),
                detail: detail.to_owned(),
            };
            let period: UnixMillis = period.parse().map_err(|_| corrupt("bad period"))?;
            let (name, cell) = field.split_once(':').ok_or_else(|| corrupt("bad field"))?;
            let value: u64 = value.parse().map_err(|_| corrupt("bad count"))?;
            let counters = cells.entry((period, cell.to_owned())).or_default();
            if !counters.set_field(name, value) {
                return Err(corrupt("unknown counter"));
            }
        }
        let cells = cells
            .into_iter()
            .map(|((period, cell), counters)| {
                Ok(UsageCell {
                    period,
                    dims: CellDims::decode(&cell)?,
                    counters,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(summarise(query, cells))
    }

    async fn prune_usage(&self, before: UnixMillis) -> StoreResult<u64> {
        let mut pruned = 0;
        let mut cursor = "0".to_owned();
        loop {
            let mut conn = self.conn.clone();
            let (n, next): (u64, String) = PRUNE_USAGE
                .key(self.script_key())
                .arg(&self.prefix)
                .arg(before)
                .arg(PRUNE_CHUNK)
                .arg(&cursor)
                .invoke_async(&mut conn)
                .await
                .map_err(from_redis)?;
            pruned += n;
            if n < PRUNE_CHUNK && next == "0" {
                return Ok(pruned);
            }
            cursor = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connection_errors_hide_the_password() {
        // A port that was free a moment ago: the connection is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("redis://user:hunter2-secret@127.0.0.1:{port}/0");
        let err = RedisStore::connect(&url, "t:").await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("redis store: cannot connect"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    }

    #[tokio::test]
    async fn cluster_connection_errors_hide_the_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("redis+cluster://user:hunter2-secret@127.0.0.1:{port},127.0.0.1:{port}");
        let err = RedisStore::connect(&url, "t:").await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("redis store: cannot connect"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(msg.contains("user:****@"), "{msg}");
        assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    }

    #[tokio::test]
    async fn malformed_url_errors_hide_the_password() {
        let err = RedisStore::connect("http://user:hunter2-secret@127.0.0.1/", "t:")
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("invalid Redis URL"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }
}
