//! The Redis coordinator's shared state: its connections (one per serving thread, one for the
//! background tasks), the leases this instance holds, the local cache of in-flight counts and
//! cooldowns that account picking reads, and the work `Drop`s hand to the background writer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::account::AccountId;
use shared::key::KeyId;
use tokio::sync::{Notify, mpsc};

use super::RedisSettings;
use super::scripts::{ACQUIRE, RENEW};
use crate::auth::random_hex;
use crate::coordinator::affinity::{AffinityKey, AffinityMap};
use crate::coordinator::{Cooldown, CoordinationError};
use crate::redis_endpoint::{RedisConn, RedisEndpoint};

/// Work that `Drop` implementations hand to the background writer (they cannot wait).
#[derive(Debug)]
pub(super) enum Deferred {
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
    /// A conversation moved (or back home): store and announce it.
    Affinity {
        key: AffinityKey,
        account: Option<AccountId>,
    },
}

pub(super) struct Inner {
    /// The main runtime's connection: background tasks and threads outside the serving ones.
    pub(super) conn: RedisConn,
    /// One connection per serving thread (serving thread `i` has [`crate::serving_thread::index`]
    /// `i + 1` and slot `i`), opened there on first use: a connection is driven by the runtime that opened it, so a slot taken through
    /// the main runtime's connection cost the request two hand-offs between threads.
    pub(super) local: Box<[tokio::sync::OnceCell<RedisConn>]>,
    /// Where to open those and the subscriber's connections.
    pub(super) endpoint: RedisEndpoint,
    /// The prefix keys and channels are named with (hash-tagged in a cluster).
    pub(super) prefix: String,
    pub(super) instance: String,
    pub(super) lease: Duration,
    /// Redis's clock minus this host's, in ms: lease expiries are on Redis's clock (every
    /// instance prunes with it), and the fast take scores its lease without asking for it.
    /// Measured at start and at every renewal.
    pub(super) clock_offset_ms: AtomicI64,
    pub(super) next_lease: AtomicU64,
    pub(super) round_trips: AtomicU64,
    /// This instance's live leases: zset → members.
    pub(super) held: Mutex<HashMap<String, Vec<String>>>,
    pub(super) in_flight: Mutex<HashMap<AccountId, u32>>,
    /// The cap each account's slots were last taken with.
    pub(super) capacity: Mutex<HashMap<AccountId, u32>>,
    pub(super) cooldowns: Mutex<HashMap<AccountId, Cooldown>>,
    pub(super) freed: Notify,
    pub(super) deferred: mpsc::UnboundedSender<Deferred>,
    /// Moved conversations, as shared by every instance (see `affinity`).
    pub(super) affinity: AffinityMap,
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

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) fn failed(e: &redis::RedisError) -> CoordinationError {
    CoordinationError(format!("Redis: {} ({:?})", e.category(), e.kind()))
}

impl Inner {
    /// Connects to Redis and returns the state with the receiving end of its deferred work.
    pub(super) async fn connect(
        settings: &RedisSettings,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Deferred>), CoordinationError> {
        // The URL was checked with the store's, which opened first: a parse error here is not
        // expected, and its message (which never holds the password) is enough.
        let endpoint = RedisEndpoint::parse(&settings.url).map_err(CoordinationError)?;
        let conn = endpoint.connect().await.map_err(|e| failed(&e))?;
        let (deferred, jobs) = mpsc::unbounded_channel();
        let inner = Self {
            conn,
            local: (0..settings.serving_threads)
                .map(|_| tokio::sync::OnceCell::new())
                .collect(),
            prefix: endpoint.key_prefix(&settings.prefix),
            endpoint,
            instance: random_hex(8),
            lease: settings.lease,
            clock_offset_ms: AtomicI64::new(0),
            next_lease: AtomicU64::new(0),
            round_trips: AtomicU64::new(0),
            held: Mutex::new(HashMap::new()),
            capacity: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            cooldowns: Mutex::new(HashMap::new()),
            freed: Notify::new(),
            deferred,
            affinity: AffinityMap::new(settings.affinity),
        };
        inner.measure_clock().await;
        Ok((inner, jobs))
    }

    /// Measures [`Inner::clock_offset_ms`] with one `TIME` (against the midpoint of the round
    /// trip). A failure keeps the last figure: the next renewal tries again.
    pub(super) async fn measure_clock(&self) {
        let sent = shared::time::now_millis();
        let time: Result<(String, String), _> =
            redis::cmd("TIME").query_async(&mut self.conn.clone()).await;
        let received = shared::time::now_millis();
        let Ok((secs, micros)) = time else { return };
        let (Ok(secs), Ok(micros)) = (secs.parse::<i64>(), micros.parse::<i64>()) else {
            return;
        };
        let redis_ms = secs * 1000 + micros / 1000;
        let local_ms = sent / 2 + received / 2;
        self.clock_offset_ms
            .store(redis_ms - local_ms, Ordering::Relaxed);
    }

    /// Re-reads the live lease count of every account this instance keeps a count for. The
    /// count follows this instance's own takes and releases, and releases elsewhere only when
    /// they free a full account (the others are not announced: a message per request would cost
    /// every instance), so it drifts when other instances give leases back; this bounds the drift
    /// to one renewal period. Expired leases of a crashed instance are not counted. Background
    /// work, so not counted in [`Inner::round_trips`].
    pub(super) async fn refresh_in_flight(&self) {
        let accounts: Vec<AccountId> = lock(&self.in_flight).keys().cloned().collect();
        if accounts.is_empty() {
            return;
        }
        let live_after = format!("({}", self.redis_now_ms());
        let mut pipe = redis::pipe();
        for account in &accounts {
            pipe.zcount(self.slots_key(account), &live_after, "+inf");
        }
        let counts: Vec<u32> = match pipe.query_async(&mut self.conn.clone()).await {
            Ok(counts) => counts,
            Err(e) => {
                tracing::debug!(error = %failed(&e), "cannot refresh slot counts");
                return;
            }
        };
        let mut in_flight = lock(&self.in_flight);
        for (account, live) in accounts.into_iter().zip(counts) {
            in_flight.insert(account, live);
        }
        drop(in_flight);
        self.freed.notify_waiters();
    }

    /// Now on Redis's clock, as far as this host can tell without asking.
    fn redis_now_ms(&self) -> i64 {
        shared::time::now_millis() + self.clock_offset_ms.load(Ordering::Relaxed)
    }

    pub(super) fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    pub(super) fn slots_key(&self, account: &AccountId) -> String {
        self.key(&format!("slots:{}", account.as_str()))
    }

    pub(super) fn key_slots_key(&self, key: &KeyId) -> String {
        self.key(&format!("key-slots:{}", key.0))
    }

    pub(super) fn conn(&self) -> RedisConn {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        self.conn.clone()
    }

    /// The connection of the thread this runs on (see [`Inner::local`]).
    pub(super) async fn conn_here(&self) -> Result<RedisConn, CoordinationError> {
        let Some(cell) = crate::serving_thread::index()
            .checked_sub(1)
            .and_then(|slot| self.local.get(slot))
        else {
            return Ok(self.conn());
        };
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        cell.get_or_try_init(|| self.endpoint.connect())
            .await
            .cloned()
            .map_err(|e| failed(&e))
    }

    /// Takes a lease on `zset` if fewer than `capacity` are live.
    ///
    /// The fast way first, one round trip of plain commands: add the lease, then count. Every
    /// lease that stays was counted with every other that stays (each is added before it counts),
    /// so however takes interleave no more than `capacity` stay. Over the cap — full, or expired
    /// leases of a crashed instance filling it, or a race with other takes — a second round trip
    /// runs the exact script, which takes the added lease out again, prunes expired leases and
    /// decides atomically. A script call costs Redis several times these commands, and Redis
    /// shares the machine with everything else on it.
    pub(super) async fn take_lease(
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
        let lease_ms_signed = i64::try_from(lease_ms).unwrap_or(i64::MAX / 4);
        let mut conn = self.conn_here().await?;
        // The set's expiry (which removes the sets of a crashed fleet) is set when it may be new
        // (an `EXPIRE` on every take would cost Redis as much as the rest); renewals keep it
        // alive while leases are held.
        let may_be_new = match account {
            Some(account) => lock(&self.in_flight).get(account).is_none_or(|n| *n == 0),
            None => lock(&self.held).get(&zset).is_none_or(Vec::is_empty),
        };
        let mut pipe = redis::pipe();
        pipe.zadd(&zset, &member, self.redis_now_ms() + lease_ms_signed)
            .ignore()
            .zcard(&zset);
        if may_be_new {
            pipe.pexpire(&zset, lease_ms_signed.saturating_mul(2))
                .ignore();
        }
        let (counted,): (u32,) = pipe.query_async(&mut conn).await.map_err(|e| failed(&e))?;
        let (taken, live) = if counted <= capacity {
            (true, counted)
        } else {
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            let (taken, live): (i64, u32) = ACQUIRE
                .key(&zset)
                .arg(capacity)
                .arg(lease_ms)
                .arg(&member)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| failed(&e))?;
            (taken == 1, live)
        };
        if let Some(account) = account {
            lock(&self.in_flight).insert(account.clone(), live);
            if lock(&self.capacity).get(account) != Some(&capacity) {
                lock(&self.capacity).insert(account.clone(), capacity);
            }
        }
        if taken {
            lock(&self.held).entry(zset).or_default().push(member);
        }
        Ok(taken)
    }

    /// Gives back one of this instance's leases on `zset`: on a serving thread whose
    /// connection is open, by a task on that thread (the answer comes back to the same thread,
    /// with no hand-off to the main runtime and the wake-up of its thread for every request);
    /// elsewhere through the background writer.
    pub(super) fn give_back(self: &Arc<Self>, zset: String, account: Option<AccountId>) {
        let member = lock(&self.held).get_mut(&zset).and_then(Vec::pop);
        let Some(member) = member else { return };
        // A request waits (here or on another instance) only for an account that is full;
        // releases of the others need no announcement. Queued requests also look again
        // every `recheck_interval`, so a stale count costs time, not progress.
        let announce = account.as_ref().is_some_and(|account| {
            let live = lock(&self.in_flight).get(account).copied().unwrap_or(0);
            let capacity = lock(&self.capacity).get(account).copied().unwrap_or(0);
            live >= capacity
        });
        let here = crate::serving_thread::index()
            .checked_sub(1)
            .and_then(|slot| self.local.get(slot))
            .and_then(|cell| cell.get().cloned());
        match (here, tokio::runtime::Handle::try_current()) {
            (Some(conn), Ok(runtime)) => {
                self.round_trips.fetch_add(1, Ordering::Relaxed);
                let inner = Arc::clone(self);
                runtime.spawn(async move {
                    inner.release(conn, &zset, &member, account, announce).await;
                });
            }
            _ => {
                let _ = self.deferred.send(Deferred::Release {
                    zset,
                    member,
                    account,
                    announce,
                });
            }
        }
    }

    /// Removes a lease and reads the count left, for the local cache. Plain commands, no
    /// script: nothing here needs to be atomic, and a script call costs Redis several times
    /// what these do. Expired leases in the count are pruned by the next take at the cap. A
    /// failure leaves the lease to expire by itself after the lease time.
    async fn release(
        &self,
        mut conn: RedisConn,
        zset: &str,
        member: &str,
        account: Option<AccountId>,
        announce: bool,
    ) {
        let mut pipe = redis::pipe();
        pipe.zrem(zset, member).ignore().zcard(zset);
        if let Some(account) = account.as_ref().filter(|_| announce) {
            pipe.publish(self.key("slots"), account.as_str()).ignore();
        }
        let result: Result<(u32,), _> = pipe.query_async(&mut conn).await;
        match (result, account) {
            (Ok((live,)), Some(account)) => {
                lock(&self.in_flight).insert(account, live);
                self.freed.notify_waiters();
            }
            (Ok(_), None) => {}
            (Err(e), _) => tracing::warn!(error = %failed(&e), "cannot release a lease"),
        }
    }

    pub(super) async fn run_deferred(&self, job: Deferred) {
        match job {
            Deferred::Release {
                zset,
                member,
                account,
                announce,
            } => {
                self.release(self.conn(), &zset, &member, account, announce)
                    .await;
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
            Deferred::Affinity { key, account } => self.share_affinity(key, account).await,
        }
    }

    pub(super) async fn renew(&self) {
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
}
