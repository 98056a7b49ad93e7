//! The Redis coordinator: several relayd instances on one Redis share concurrency slots,
//! cooldowns and relay-key counters, and hear about each other's admin changes.
//!
//! Keys (prefix `{p}` as for the store):
//!
//! | key                        | type   | holds                                             |
//! |----------------------------|--------|---------------------------------------------------|
//! | `{p}slots:{account}`       | zset   | slot leases, scored by expiry (Unix ms)           |
//! | `{p}key-slots:{key}`       | zset   | a relay key's in-flight leases, same shape        |
//! | `{p}cooldown:{account}`    | string | `"{until} {reason}"`, expiring at `until`         |
//! | `{p}rpm:{key}`             | zset   | request start times of the last minute            |
//! | `{p}tokens:{key}:{day}`    | string | tokens used on that UTC day                       |
//!
//! Channels: `{p}changes` (`accounts` / `keys`: reload the snapshot), `{p}slots`
//! (`"{account}"` after a release on a full account, waking requests queued on other instances),
//! `{p}cooldowns` (`"{account} {until} {reason}"`).
//!
//! A request costs two round trips: one script call takes a slot (pruning expired leases
//! first), on the serving thread's own connection (one per serving thread, plus one for the
//! background tasks and one subscriber), one pipeline gives it back; key limits add one each when the key has them. Leases are renewed
//! every lease/3 by a background task, so a long stream keeps its slot while a crashed
//! instance's slots expire after the lease time. Reads that pick an account (in-flight counts,
//! cooldowns) come from a local cache fed by the take/release answers and the channels.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use shared::account::AccountId;
use shared::key::KeyId;
use shared::time::UnixMillis;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::coordinator::{Cooldown, CoordinationError, Coordinator, utc_day};
use crate::accounts::AccountRegistry;
use crate::auth::random_hex;
use crate::keys::KeyRegistry;

/// Takes a lease if fewer than the cap are live. KEYS: zset. ARGV: cap, lease ms, member.
/// Returns `{taken (0/1), live leases}`. Lua for the atomic check-and-add and for Redis's clock:
/// instances on different hosts must agree on when a lease expires.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
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
static RENEW: LazyLock<Script> = LazyLock::new(|| {
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
static TAKE_REQUEST: LazyLock<Script> = LazyLock::new(|| {
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
static COOL_DOWN: LazyLock<Script> = LazyLock::new(|| {
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
static CAP_COOLDOWN: LazyLock<Script> = LazyLock::new(|| {
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

/// Work that `Drop` implementations hand to the background writer (they cannot wait).
#[derive(Debug)]
enum Deferred {
    Release {
        zset: String,
        member: String,
        /// The account, for slot leases (cached); `None` for key leases.
        account: Option<AccountId>,
        /// Whether to tell the other instances: only when the account looked full, since only
        /// then can requests be queued for it.
        announce: bool,
    },
    Tokens {
        key: KeyId,
        day: i64,
        tokens: u64,
    },
}

struct Inner {
    /// The main runtime's connection: background tasks and threads outside the serving ones.
    conn: ConnectionManager,
    /// One connection per serving thread (serving thread `i` has [`crate::workers::worker_index`]
    /// `i + 1` and slot `i`), opened there on first use: a connection is driven by the runtime that opened it, so a slot taken through
    /// the main runtime's connection cost the request two hand-offs between threads.
    local: Box<[tokio::sync::OnceCell<ConnectionManager>]>,
    client: redis::Client,
    config: ConnectionManagerConfig,
    prefix: String,
    instance: String,
    lease: Duration,
    next_lease: AtomicU64,
    round_trips: AtomicU64,
    /// This instance's live leases: zset → members.
    held: Mutex<HashMap<String, Vec<String>>>,
    in_flight: Mutex<HashMap<AccountId, u32>>,
    /// The cap each account's slots were last taken with.
    capacity: Mutex<HashMap<AccountId, u32>>,
    cooldowns: Mutex<HashMap<AccountId, Cooldown>>,
    freed: Notify,
    deferred: mpsc::UnboundedSender<Deferred>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("prefix", &self.prefix)
            .field("instance", &self.instance)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn failed(e: &redis::RedisError) -> CoordinationError {
    CoordinationError(format!("Redis: {} ({:?})", e.category(), e.kind()))
}

impl Inner {
    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    fn slots_key(&self, account: &AccountId) -> String {
        self.key(&format!("slots:{}", account.as_str()))
    }

    fn key_slots_key(&self, key: &KeyId) -> String {
        self.key(&format!("key-slots:{}", key.0))
    }

    fn conn(&self) -> ConnectionManager {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        self.conn.clone()
    }

    /// The connection of the thread this runs on (see [`Inner::local`]).
    async fn conn_here(&self) -> Result<ConnectionManager, CoordinationError> {
        let Some(cell) = crate::workers::worker_index()
            .checked_sub(1)
            .and_then(|slot| self.local.get(slot))
        else {
            return Ok(self.conn());
        };
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        cell.get_or_try_init(|| {
            ConnectionManager::new_with_config(self.client.clone(), self.config.clone())
        })
        .await
        .cloned()
        .map_err(|e| failed(&e))
    }

    async fn take_lease(
        &self,
        zset: String,
        capacity: u32,
        account: Option<&AccountId>,
    ) -> Result<bool, CoordinationError> {
        let member = format!(
            "{}:{}",
            self.instance,
            self.next_lease.fetch_add(1, Ordering::Relaxed)
        );
        let lease_ms = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX / 4);
        let (taken, live): (i64, u32) = ACQUIRE
            .key(&zset)
            .arg(capacity)
            .arg(lease_ms)
            .arg(&member)
            .invoke_async(&mut self.conn_here().await?)
            .await
            .map_err(|e| failed(&e))?;
        if let Some(account) = account {
            lock(&self.in_flight).insert(account.clone(), live);
            if lock(&self.capacity).get(account) != Some(&capacity) {
                lock(&self.capacity).insert(account.clone(), capacity);
            }
        }
        if taken == 1 {
            lock(&self.held).entry(zset).or_default().push(member);
        }
        Ok(taken == 1)
    }

    /// Hands one of this instance's leases on `zset` to the writer.
    fn give_back(&self, zset: String, account: Option<AccountId>) {
        let member = lock(&self.held).get_mut(&zset).and_then(Vec::pop);
        if let Some(member) = member {
            // A request waits (here or on another instance) only for an account that is full;
            // releases of the others need no announcement. Queued requests also look again
            // every `recheck_interval`, so a stale count costs time, not progress.
            let announce = account.as_ref().is_some_and(|account| {
                let live = lock(&self.in_flight).get(account).copied().unwrap_or(0);
                let capacity = lock(&self.capacity).get(account).copied().unwrap_or(0);
                live >= capacity
            });
            let _ = self.deferred.send(Deferred::Release {
                zset,
                member,
                account,
                announce,
            });
        }
    }

    async fn run_deferred(&self, job: Deferred) {
        match job {
            Deferred::Release {
                zset,
                member,
                account,
                announce,
            } => {
                // Plain commands, no script: nothing here needs to be atomic, and a script
                // call costs Redis several times what these do. The count is for this
                // instance's cache; expired leases in it are pruned by the next take.
                let mut pipe = redis::pipe();
                pipe.zrem(&zset, &member).ignore().zcard(&zset);
                if let Some(account) = account.as_ref().filter(|_| announce) {
                    pipe.publish(self.key("slots"), account.as_str()).ignore();
                }
                let result: Result<(u32,), _> = pipe.query_async(&mut self.conn()).await;
                match (result, account) {
                    (Ok((live,)), Some(account)) => {
                        lock(&self.in_flight).insert(account, live);
                        self.freed.notify_waiters();
                    }
                    (Ok(_), None) => {}
                    // The lease expires by itself after the lease time.
                    (Err(e), _) => tracing::warn!(error = %failed(&e), "cannot release a lease"),
                }
            }
            Deferred::Tokens { key, day, tokens } => {
                let counter = self.key(&format!("tokens:{}:{day}", key.0));
                let result: Result<(), _> = redis::pipe()
                    .incr(&counter, tokens)
                    .ignore()
                    .expire(&counter, 2 * 86_400)
                    .ignore()
                    .exec_async(&mut self.conn())
                    .await;
                if let Err(e) = result {
                    tracing::warn!(error = %failed(&e), "cannot count tokens");
                }
            }
        }
    }

    async fn renew(&self) {
        let held: Vec<(String, Vec<String>)> = lock(&self.held)
            .iter()
            .filter(|(_, members)| !members.is_empty())
            .map(|(k, m)| (k.clone(), m.clone()))
            .collect();
        if held.is_empty() {
            return;
        }
        let mut invocation = RENEW.prepare_invoke();
        invocation.arg(u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX / 4));
        for (index, (zset, members)) in held.iter().enumerate() {
            invocation.key(zset);
            for member in members {
                invocation.arg(index + 1).arg(member);
            }
        }
        let result: Result<i64, _> = invocation.invoke_async(&mut self.conn.clone()).await;
        if let Err(e) = result {
            tracing::warn!(error = %failed(&e), "cannot renew slot leases");
        }
    }

    /// Reads the cooldowns other instances started before this one came up. One that ends later
    /// than `longest` from now was not started under this configuration (an older build wrote
    /// cooldowns for as long as an upstream's `retry-after` asked, such as 31 years): it is
    /// loaded, and shortened in Redis, as ending `longest` from now.
    async fn load_cooldowns(&self, longest: Duration) -> Result<(), CoordinationError> {
        let longest_ms = i64::try_from(longest.as_millis()).unwrap_or(i64::MAX / 2);
        let cap = shared::time::now_millis().saturating_add(longest_ms);
        let prefix = self.key("cooldown:");
        let mut conn = self.conn.clone();
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .map_err(|e| failed(&e))?;
            if !keys.is_empty() {
                let values: Vec<Option<String>> = redis::cmd("MGET")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| failed(&e))?;
                for (key, value) in keys.iter().zip(values) {
                    let (Some(id), Some(value)) = (key.strip_prefix(&prefix), value) else {
                        continue;
                    };
                    let value = match capped_cooldown(&value, cap) {
                        Some(capped) => {
                            tracing::warn!(
                                account = id,
                                cooldown = %value,
                                "a stored cooldown runs longer than this configuration allows; shortened"
                            );
                            let shortened: Result<i64, _> =
                                CAP_COOLDOWN.key(key).arg(cap).invoke_async(&mut conn).await;
                            if let Err(e) = shortened {
                                tracing::warn!(error = %failed(&e), "cannot shorten a stored cooldown");
                            }
                            capped
                        }
                        None => value,
                    };
                    let payload = format!("{id} {value}");
                    let _ = self.on_message(&self.key("cooldowns"), &payload);
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    fn on_message(&self, channel: &str, payload: &str) -> Option<Change> {
        let rest = channel.strip_prefix(&self.prefix)?;
        match rest {
            "changes" => match payload {
                "accounts" => Some(Change::Accounts),
                "keys" => Some(Change::Keys),
                _ => None,
            },
            "slots" => {
                // `{account}`: a lease on it was given back somewhere. The cached count is a
                // hint for picking accounts; the next take on it returns the real one.
                if let Some(live) = lock(&self.in_flight).get_mut(&AccountId(payload.to_owned())) {
                    *live = live.saturating_sub(1);
                }
                self.freed.notify_waiters();
                None
            }
            "cooldowns" => {
                let mut parts = payload.splitn(3, ' ');
                let id = parts.next()?;
                let until: UnixMillis = parts.next()?.parse().ok()?;
                let reason = parts.next().unwrap_or_default().to_owned();
                let mut cooldowns = lock(&self.cooldowns);
                if until == 0 {
                    // Ended early by a probe or an operator.
                    cooldowns.remove(&AccountId(id.to_owned()));
                    self.freed.notify_waiters();
                    return None;
                }
                let entry = cooldowns
                    .entry(AccountId(id.to_owned()))
                    .or_insert(Cooldown {
                        until,
                        reason: reason.clone(),
                    });
                if entry.until < until {
                    *entry = Cooldown { until, reason };
                }
                None
            }
            _ => None,
        }
    }
}

enum Change {
    Accounts,
    Keys,
}

/// A stored cooldown value (`"{until} {reason}"`) ending after `cap`, rewritten to end at `cap`;
/// `None` when it ends by then (or is not a cooldown value, which the loader then ignores).
fn capped_cooldown(value: &str, cap: UnixMillis) -> Option<String> {
    let (until, reason) = value.split_once(' ').unwrap_or((value, ""));
    let until: UnixMillis = until.parse().ok()?;
    (until > cap).then(|| format!("{cap} {reason}"))
}

/// Shared routing state in Redis, with its background tasks (writer, lease renewal, subscriber).
#[derive(Debug)]
pub struct RedisCoordinator {
    inner: Arc<Inner>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl RedisCoordinator {
    /// Connects to `url`, loads the shared cooldowns (none ending later than `longest_cooldown`
    /// from now) and starts the background tasks; admin changes announced on the `changes`
    /// channel reload `accounts` and `keys`.
    pub async fn start(
        url: &str,
        prefix: &str,
        lease: Duration,
        longest_cooldown: Duration,
        accounts: Arc<AccountRegistry>,
        keys: Arc<KeyRegistry>,
        workers: usize,
    ) -> Result<Self, CoordinationError> {
        let client = redis::Client::open(url).map_err(|e| failed(&e))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(5))
            .set_response_timeout(Duration::from_secs(10))
            .set_factor(2)
            .set_max_delay(500)
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client.clone(), config.clone())
            .await
            .map_err(|e| failed(&e))?;
        let (deferred, mut jobs) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            conn,
            local: (0..workers).map(|_| tokio::sync::OnceCell::new()).collect(),
            client: client.clone(),
            config,
            prefix: prefix.to_owned(),
            instance: random_hex(8),
            lease,
            next_lease: AtomicU64::new(0),
            round_trips: AtomicU64::new(0),
            held: Mutex::new(HashMap::new()),
            capacity: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            cooldowns: Mutex::new(HashMap::new()),
            freed: Notify::new(),
            deferred,
        });
        inner.load_cooldowns(longest_cooldown).await?;
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();

        // Writer: releases and token counts handed over by `Drop`s. Everything waiting is sent at
        // once (the multiplexed connection pipelines it): one round trip at a time would let
        // releases fall behind under load, filling the slot sets with finished requests' leases.
        let writer = Arc::clone(&inner);
        let stop = cancel.clone();
        tasks.spawn(async move {
            let mut batch = Vec::with_capacity(256);
            loop {
                let n = tokio::select! {
                    () = stop.cancelled() => break,
                    n = jobs.recv_many(&mut batch, 256) => n,
                };
                if n == 0 {
                    break;
                }
                futures_util::future::join_all(batch.drain(..).map(|job| writer.run_deferred(job)))
                    .await;
            }
            // Give back what is already handed over before stopping.
            while let Ok(job) = jobs.try_recv() {
                writer.run_deferred(job).await;
            }
        });

        // Lease renewal every lease/3.
        let renewer = Arc::clone(&inner);
        let stop = cancel.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval((lease / 3).max(Duration::from_millis(100)));
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => renewer.renew().await,
                }
            }
        });

        // Subscriber, reconnecting; every (re)subscription reloads, since messages sent while
        // it was away are lost.
        let subscriber = Arc::clone(&inner);
        let stop = cancel.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tasks.spawn(async move {
            let mut ready = Some(ready_tx);
            let channels = ["changes", "slots", "cooldowns"].map(|c| subscriber.key(c));
            while !stop.is_cancelled() {
                let connected = async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(&channels).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                };
                let pubsub = match tokio::time::timeout(Duration::from_secs(5), connected).await {
                    Ok(Ok(pubsub)) => pubsub,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %failed(&e), "cannot subscribe to changes");
                        tokio::select! {
                            () = stop.cancelled() => break,
                            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                    Err(_) => continue,
                };
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                } else {
                    reload(&accounts, &keys).await;
                }
                let mut messages = pubsub.into_on_message();
                loop {
                    let message = tokio::select! {
                        () = stop.cancelled() => return,
                        m = messages.next() => m,
                    };
                    let Some(message) = message else { break };
                    let Ok(payload) = message.get_payload::<String>() else {
                        continue;
                    };
                    match subscriber.on_message(message.get_channel_name(), &payload) {
                        Some(Change::Accounts) => {
                            if let Err(e) = accounts.reload().await {
                                tracing::warn!(error = %e.message, "cannot reload accounts");
                            }
                        }
                        Some(Change::Keys) => {
                            if let Err(e) = keys.reload().await {
                                tracing::warn!(error = %e, "cannot reload keys");
                            }
                        }
                        None => {}
                    }
                }
            }
        });
        tasks.close();
        // Changes made between loading the registries and subscribing would be missed.
        if tokio::time::timeout(Duration::from_secs(5), ready_rx)
            .await
            .is_err()
        {
            tracing::warn!("not subscribed to admin changes yet; will keep trying");
        }
        Ok(Self {
            inner,
            cancel,
            tasks,
        })
    }
}

async fn reload(accounts: &AccountRegistry, keys: &KeyRegistry) {
    if let Err(e) = accounts.reload().await {
        tracing::warn!(error = %e.message, "cannot reload accounts");
    }
    if let Err(e) = keys.reload().await {
        tracing::warn!(error = %e, "cannot reload keys");
    }
}

impl Drop for RedisCoordinator {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[async_trait]
impl Coordinator for RedisCoordinator {
    fn in_flight(&self, account: &AccountId) -> u32 {
        lock(&self.inner.in_flight)
            .get(account)
            .copied()
            .unwrap_or(0)
    }

    async fn try_acquire(
        &self,
        account: &AccountId,
        capacity: u32,
    ) -> Result<bool, CoordinationError> {
        let zset = self.inner.slots_key(account);
        self.inner.take_lease(zset, capacity, Some(account)).await
    }

    fn release(&self, account: &AccountId) {
        let zset = self.inner.slots_key(account);
        self.inner.give_back(zset, Some(account.clone()));
    }

    fn slot_freed(&self) -> &Notify {
        &self.inner.freed
    }

    fn recheck_interval(&self) -> Option<Duration> {
        // A crashed instance's leases expire silently: look again now and then while waiting.
        Some((self.inner.lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(1)))
    }

    fn cooldown(&self, account: &AccountId, now: UnixMillis) -> Option<Cooldown> {
        lock(&self.inner.cooldowns)
            .get(account)
            .filter(|c| c.until > now)
            .cloned()
    }

    async fn cool_down(&self, account: &AccountId, cooldown: Cooldown) {
        {
            let mut cooldowns = lock(&self.inner.cooldowns);
            let entry = cooldowns
                .entry(account.clone())
                .or_insert_with(|| cooldown.clone());
            if entry.until < cooldown.until {
                *entry = cooldown.clone();
            }
        }
        let result: Result<i64, _> = COOL_DOWN
            .key(self.inner.key(&format!("cooldown:{}", account.as_str())))
            .arg(cooldown.until)
            .arg(&cooldown.reason)
            .arg(self.inner.key("cooldowns"))
            .arg(account.as_str())
            .invoke_async(&mut self.inner.conn())
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %failed(&e), "cannot share a cooldown");
        }
    }

    async fn clear_cooldown(&self, account: &AccountId) -> Result<(), CoordinationError> {
        lock(&self.inner.cooldowns).remove(account);
        self.inner.freed.notify_waiters();
        // Until 0 tells the other instances to forget it (see `on_message`).
        redis::pipe()
            .del(self.inner.key(&format!("cooldown:{}", account.as_str())))
            .ignore()
            .publish(
                self.inner.key("cooldowns"),
                format!("{} 0 cleared", account.as_str()),
            )
            .ignore()
            .exec_async(&mut self.inner.conn())
            .await
            .map_err(|e| failed(&e))
    }

    async fn take_request(
        &self,
        key: &KeyId,
        per_minute: u32,
        _now: UnixMillis,
    ) -> Result<Result<(), u64>, CoordinationError> {
        let member = format!(
            "{}:{}",
            self.inner.instance,
            self.inner.next_lease.fetch_add(1, Ordering::Relaxed)
        );
        let wait_ms: i64 = TAKE_REQUEST
            .key(self.inner.key(&format!("rpm:{}", key.0)))
            .arg(per_minute)
            .arg(member)
            .invoke_async(&mut self.inner.conn())
            .await
            .map_err(|e| failed(&e))?;
        if wait_ms < 0 {
            Ok(Ok(()))
        } else {
            Ok(Err(u64::try_from((wait_ms + 999) / 1000)
                .unwrap_or(1)
                .max(1)))
        }
    }

    async fn tokens_today(&self, key: &KeyId, now: UnixMillis) -> Result<u64, CoordinationError> {
        let counter = self
            .inner
            .key(&format!("tokens:{}:{}", key.0, utc_day(now)));
        let used: Option<u64> = redis::cmd("GET")
            .arg(counter)
            .query_async(&mut self.inner.conn())
            .await
            .map_err(|e| failed(&e))?;
        Ok(used.unwrap_or(0))
    }

    fn add_tokens(&self, key: &KeyId, tokens: u64, now: UnixMillis) {
        let _ = self.inner.deferred.send(Deferred::Tokens {
            key: key.clone(),
            day: utc_day(now),
            tokens,
        });
    }

    async fn enter_key(&self, key: &KeyId, limit: u32) -> Result<bool, CoordinationError> {
        let zset = self.inner.key_slots_key(key);
        self.inner.take_lease(zset, limit, None).await
    }

    fn leave_key(&self, key: &KeyId) {
        let zset = self.inner.key_slots_key(key);
        self.inner.give_back(zset, None);
    }

    fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    async fn shutdown(&self) {
        self.cancel.cancel();
        // The writer ends when every sender is gone; the other tasks on the token.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_cooldown_past_the_cap_is_cut_to_it() {
        let cap = 1_000_000;
        assert_eq!(
            capped_cooldown("2783000000000 HTTP 429", cap).as_deref(),
            Some("1000000 HTTP 429"),
            "a 2058 cooldown of an older build"
        );
        assert_eq!(
            capped_cooldown("1000001 connect error", cap).as_deref(),
            Some("1000000 connect error")
        );
        assert_eq!(capped_cooldown("1000000 HTTP 503", cap), None, "at the cap");
        assert_eq!(capped_cooldown("999 HTTP 503", cap), None);
        assert_eq!(
            capped_cooldown("2783000000000", cap).as_deref(),
            Some("1000000 ")
        );
        assert_eq!(capped_cooldown("garbage", cap), None);
        assert_eq!(capped_cooldown("", cap), None);
    }
}
