//! The Redis coordinator: several relayd instances on one Redis (or one Redis Cluster) share
//! concurrency slots, cooldowns and relay-key counters, and hear about each other's admin changes.
//!
//! Keys (prefix `{p}` as for the store: hash-tagged in a cluster, so the coordinator's keys share
//! the store's slot and the renewal script may extend leases of many accounts and keys at once;
//! see [`crate::redis_endpoint`]):
//!
//! | key                        | type   | holds                                             |
//! |----------------------------|--------|---------------------------------------------------|
//! | `{p}slots:{account}`       | zset   | slot leases, scored by expiry (Unix ms)           |
//! | `{p}key-slots:{key}`       | zset   | a relay key's in-flight leases, same shape        |
//! | `{p}cooldown:{account}`    | string | `"{until} {reason}"`, expiring at `until`         |
//! | `{p}rpm:{key}`             | zset   | request start times of the last minute            |
//! | `{p}tokens:{key}:{day}`    | string | tokens used on that UTC day                       |
//! | `{p}affinity:{conversation}` | string | the account a moved conversation lives on, with its TTL |
//!
//! Channels (in a cluster the subscriber listens on one seed node, since every node passes each
//! PUBLISH on): `{p}changes` (`accounts` / `keys`: passed on as a [`Change`], so the daemon reloads
//! that registry), `{p}slots`
//! (`"{account}"` after a release on a full account, waking requests queued on other instances),
//! `{p}cooldowns` (`"{account} {until} {reason}"`), `{p}affinity` (see [`affinity`]).
//!
//! A request costs two round trips: one takes a slot (plain commands; the script that prunes
//! expired leases only when the account looks full, see `Inner::take_lease`), on the serving
//! thread's own connection (one per serving thread, plus one for the
//! background tasks and one subscriber), one pipeline gives it back; key limits add one each
//! when the key has them. Leases are renewed every lease/3 by a background task, so a long
//! stream keeps its slot while a crashed instance's slots expire after the lease time. Reads that pick an account (in-flight counts,
//! cooldowns) come from a local cache fed by the take/release answers and the channels.
//!
//! Files: this one is the coordinator and its trait implementation; [`inner`] holds the
//! connections, leases and local cache; [`scripts`] the Lua; [`background`] the writer, lease
//! renewal and subscriber tasks; [`cooldowns`] reads the stored cooldowns at start; [`affinity`]
//! shares moved conversations.

mod affinity;
mod background;
mod cooldowns;
mod inner;
mod scripts;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use shared::account::AccountId;
use shared::key::KeyId;
use shared::time::UnixMillis;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::inner::{Deferred, Inner, failed, lock};
use self::scripts::{COOL_DOWN, TAKE_REQUEST};
use super::affinity::{AffinityKey, AffinitySettings, Put};
use super::{Change, Cooldown, CoordinationError, Coordinator, utc_day};

/// Where and how the Redis coordinator shares its state.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://`, `rediss://` or `redis+cluster://` URL.
    pub url: String,
    /// Prefix of every key and channel (the store's `redis_prefix`).
    pub prefix: String,
    /// How long a slot lease lives without renewal (a crashed instance's slots free after it).
    pub lease: Duration,
    /// Longest cooldown this configuration can start; stored ones ending later are cut to it.
    pub longest_cooldown: Duration,
    /// Serving threads, each of which gets a connection of its own on first use
    /// ([`crate::serving_thread::index`]).
    pub serving_threads: usize,
    /// How long a moved conversation is remembered, and how many are.
    pub affinity: AffinitySettings,
}

/// Shared routing state in Redis, with its background tasks (writer, lease renewal, subscriber).
#[derive(Debug)]
pub struct RedisCoordinator {
    inner: Arc<Inner>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl RedisCoordinator {
    /// Connects, loads the shared cooldowns (none ending later than `longest_cooldown` from now)
    /// and starts the background tasks. Admin changes another instance announces are sent on
    /// `changes`; the coordinator itself reloads nothing.
    pub async fn start(
        settings: &RedisSettings,
        changes: mpsc::Sender<Change>,
    ) -> Result<Self, CoordinationError> {
        let (inner, jobs) = Inner::connect(settings).await?;
        let inner = Arc::new(inner);
        inner.load_cooldowns(settings.longest_cooldown).await?;
        inner.load_affinities().await?;
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(background::write_deferred(
            Arc::clone(&inner),
            jobs,
            cancel.clone(),
        ));
        tasks.spawn(background::renew_leases(Arc::clone(&inner), cancel.clone()));
        let (ready_tx, ready_rx) = oneshot::channel();
        tasks.spawn(background::subscribe(
            Arc::clone(&inner),
            changes,
            ready_tx,
            cancel.clone(),
        ));
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

    fn affinity(&self, key: &AffinityKey) -> Option<AccountId> {
        self.inner.affinity.get(key)
    }

    fn set_affinity(&self, key: &AffinityKey, account: Option<&AccountId>) {
        if self.inner.affinity.put(key, account) == Put::Share {
            let _ = self.inner.deferred.send(Deferred::Affinity {
                key: *key,
                account: account.cloned(),
            });
        }
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
