//! Shared routing state — concurrency slots, cooldowns and relay-key counters — behind one
//! trait, chosen at start-up: [`LocalCoordinator`] keeps everything in this process (embedded
//! store: no I/O on the request path); the Redis one shares it between instances.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use shared::account::AccountId;
use shared::key::KeyId;
use shared::time::UnixMillis;
use tokio::sync::Notify;

/// Why and until when an account is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cooldown {
    /// Unix milliseconds at which it may be used again.
    pub until: UnixMillis,
    /// What went wrong (no secret: a cause and an HTTP status at most).
    pub reason: String,
}

/// The shared state failed (Redis unreachable).
#[derive(Debug, thiserror::Error)]
#[error("routing state unavailable: {0}")]
pub struct CoordinationError(pub String);

/// A relay-key limit that refused a request, with the seconds after which it may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// Requests per minute.
    RequestsPerMinute {
        /// Seconds until the oldest counted request leaves the window.
        retry_after: u64,
    },
    /// Tokens per UTC day.
    TokensPerDay {
        /// Seconds until the next UTC midnight.
        retry_after: u64,
    },
    /// Requests in flight at once.
    Concurrency,
}

/// Shared routing state. Methods that only read return what this instance last knew (cheap,
/// no I/O); methods that decide (`try_acquire`, `take_request`, `enter_key`) are authoritative.
#[async_trait]
pub trait Coordinator: Send + Sync + std::fmt::Debug + 'static {
    /// Requests holding a slot of `account`.
    fn in_flight(&self, account: &AccountId) -> u32;
    /// Takes a slot of `account` if fewer than `capacity` are taken.
    async fn try_acquire(
        &self,
        account: &AccountId,
        capacity: u32,
    ) -> Result<bool, CoordinationError>;
    /// Gives a slot back (called from a guard's `Drop`, so it cannot wait).
    fn release(&self, account: &AccountId);
    /// Woken whenever a slot is given back (here or, with Redis, on another instance).
    fn slot_freed(&self) -> &Notify;
    /// The account's cooldown, if it has one that has not ended at `now`.
    fn cooldown(&self, account: &AccountId, now: UnixMillis) -> Option<Cooldown>;
    /// Starts (or extends) a cooldown.
    async fn cool_down(&self, account: &AccountId, cooldown: Cooldown);
    /// Ends a cooldown now (an active probe found the account healthy, or an operator reset or
    /// enabled it); with a shared store, on every instance.
    async fn clear_cooldown(&self, account: &AccountId) -> Result<(), CoordinationError>;
    /// Counts one request against a requests-per-minute limit; refuses when it is reached.
    async fn take_request(
        &self,
        key: &KeyId,
        per_minute: u32,
        now: UnixMillis,
    ) -> Result<Result<(), u64>, CoordinationError>;
    /// Tokens `key` used on the UTC day of `now`.
    async fn tokens_today(&self, key: &KeyId, now: UnixMillis) -> Result<u64, CoordinationError>;
    /// Adds tokens to `key`'s count for the UTC day of `now` (from a `Drop`: cannot wait).
    fn add_tokens(&self, key: &KeyId, tokens: u64, now: UnixMillis);
    /// Counts one request of `key` in flight if fewer than `limit` are.
    async fn enter_key(&self, key: &KeyId, limit: u32) -> Result<bool, CoordinationError>;
    /// The request counted by `enter_key` ended.
    fn leave_key(&self, key: &KeyId);
    /// Round trips to shared storage so far (0 for the local coordinator): a debug counter.
    fn round_trips(&self) -> u64;
    /// While waiting for a slot, look again at least this often: set when a slot can come back
    /// without a wake-up (an expired lease of a crashed instance).
    fn recheck_interval(&self) -> Option<std::time::Duration> {
        None
    }
    /// Stops background tasks, giving back what can be given back.
    async fn shutdown(&self) {}
}

/// The UTC day number of `now`.
pub fn utc_day(now: UnixMillis) -> i64 {
    now.div_euclid(86_400_000)
}

/// Seconds from `now` to the next UTC midnight (at least 1).
pub fn secs_to_midnight(now: UnixMillis) -> u64 {
    let next = (utc_day(now) + 1) * 86_400_000;
    u64::try_from((next - now + 999) / 1000).unwrap_or(1).max(1)
}

#[derive(Debug, Default)]
struct AccountEntry {
    in_flight: u32,
    cooldown: Option<Cooldown>,
}

#[derive(Debug, Default)]
struct KeyEntry {
    /// Start times of the requests of the last minute.
    minute: VecDeque<UnixMillis>,
    day: i64,
    tokens: u64,
    in_flight: u32,
}

/// Everything in this process: the state dies with it, which is right for a single instance.
#[derive(Debug, Default)]
pub struct LocalCoordinator {
    // std mutexes: every section is a few map operations, never held across an await.
    accounts: Mutex<HashMap<AccountId, AccountEntry>>,
    keys: Mutex<HashMap<KeyId, KeyEntry>>,
    freed: Notify,
    round_trips: AtomicU64,
}

impl LocalCoordinator {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    fn accounts(&self) -> std::sync::MutexGuard<'_, HashMap<AccountId, AccountEntry>> {
        self.accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<KeyId, KeyEntry>> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Coordinator for LocalCoordinator {
    fn in_flight(&self, account: &AccountId) -> u32 {
        self.accounts().get(account).map_or(0, |e| e.in_flight)
    }

    async fn try_acquire(
        &self,
        account: &AccountId,
        capacity: u32,
    ) -> Result<bool, CoordinationError> {
        let mut accounts = self.accounts();
        let entry = accounts.entry(account.clone()).or_default();
        if entry.in_flight < capacity {
            entry.in_flight += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn release(&self, account: &AccountId) {
        if let Some(entry) = self.accounts().get_mut(account) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
        }
        self.freed.notify_waiters();
    }

    fn slot_freed(&self) -> &Notify {
        &self.freed
    }

    fn cooldown(&self, account: &AccountId, now: UnixMillis) -> Option<Cooldown> {
        self.accounts()
            .get(account)
            .and_then(|e| e.cooldown.clone())
            .filter(|c| c.until > now)
    }

    async fn cool_down(&self, account: &AccountId, cooldown: Cooldown) {
        let mut accounts = self.accounts();
        let entry = accounts.entry(account.clone()).or_default();
        if entry
            .cooldown
            .as_ref()
            .is_none_or(|c| c.until < cooldown.until)
        {
            entry.cooldown = Some(cooldown);
        }
    }

    async fn clear_cooldown(&self, account: &AccountId) -> Result<(), CoordinationError> {
        if let Some(entry) = self.accounts().get_mut(account) {
            entry.cooldown = None;
        }
        // Requests queued while every candidate was cooling may go now.
        self.freed.notify_waiters();
        Ok(())
    }

    async fn take_request(
        &self,
        key: &KeyId,
        per_minute: u32,
        now: UnixMillis,
    ) -> Result<Result<(), u64>, CoordinationError> {
        let mut keys = self.keys();
        let entry = keys.entry(key.clone()).or_default();
        while entry.minute.front().is_some_and(|&t| t <= now - 60_000) {
            entry.minute.pop_front();
        }
        if entry.minute.len() >= per_minute as usize {
            let oldest = entry.minute.front().copied().unwrap_or(now);
            let wait_ms = oldest + 60_000 - now;
            return Ok(Err(u64::try_from((wait_ms + 999) / 1000)
                .unwrap_or(1)
                .max(1)));
        }
        entry.minute.push_back(now);
        Ok(Ok(()))
    }

    async fn tokens_today(&self, key: &KeyId, now: UnixMillis) -> Result<u64, CoordinationError> {
        Ok(self
            .keys()
            .get(key)
            .filter(|e| e.day == utc_day(now))
            .map_or(0, |e| e.tokens))
    }

    fn add_tokens(&self, key: &KeyId, tokens: u64, now: UnixMillis) {
        let mut keys = self.keys();
        let entry = keys.entry(key.clone()).or_default();
        let day = utc_day(now);
        if entry.day != day {
            entry.day = day;
            entry.tokens = 0;
        }
        entry.tokens = entry.tokens.saturating_add(tokens);
    }

    async fn enter_key(&self, key: &KeyId, limit: u32) -> Result<bool, CoordinationError> {
        let mut keys = self.keys();
        let entry = keys.entry(key.clone()).or_default();
        if entry.in_flight < limit {
            entry.in_flight += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn leave_key(&self, key: &KeyId) {
        if let Some(entry) = self.keys().get_mut(key) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
        }
    }

    fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_are_capped_and_released() {
        let c = LocalCoordinator::new();
        let a = AccountId("acc_1".into());
        assert!(c.try_acquire(&a, 2).await.unwrap());
        assert!(c.try_acquire(&a, 2).await.unwrap());
        assert!(!c.try_acquire(&a, 2).await.unwrap());
        assert_eq!(c.in_flight(&a), 2);
        c.release(&a);
        assert!(c.try_acquire(&a, 2).await.unwrap());
    }

    #[tokio::test]
    async fn requests_per_minute_window_slides() {
        let c = LocalCoordinator::new();
        let k = KeyId("key_1".into());
        assert_eq!(c.take_request(&k, 2, 0).await.unwrap(), Ok(()));
        assert_eq!(c.take_request(&k, 2, 30_000).await.unwrap(), Ok(()));
        assert_eq!(c.take_request(&k, 2, 45_000).await.unwrap(), Err(15));
        assert_eq!(c.take_request(&k, 2, 60_000).await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn tokens_reset_at_utc_midnight() {
        let c = LocalCoordinator::new();
        let k = KeyId("key_1".into());
        let day = 86_400_000;
        c.add_tokens(&k, 10, day + 5);
        assert_eq!(c.tokens_today(&k, day + 6).await.unwrap(), 10);
        assert_eq!(c.tokens_today(&k, 2 * day).await.unwrap(), 0);
        assert_eq!(secs_to_midnight(2 * day - 1500), 2);
    }

    #[tokio::test]
    async fn a_longer_cooldown_is_not_shortened() {
        let c = LocalCoordinator::new();
        let a = AccountId("acc_1".into());
        let long = Cooldown {
            until: 5000,
            reason: "x".into(),
        };
        c.cool_down(&a, long.clone()).await;
        c.cool_down(
            &a,
            Cooldown {
                until: 2000,
                reason: "y".into(),
            },
        )
        .await;
        assert_eq!(c.cooldown(&a, 1000), Some(long));
        assert_eq!(c.cooldown(&a, 5000), None);
    }

    #[tokio::test]
    async fn clearing_ends_even_the_longest_cooldown() {
        let c = LocalCoordinator::new();
        let a = AccountId("acc_1".into());
        c.cool_down(
            &a,
            Cooldown {
                until: i64::MAX,
                reason: "HTTP 429".into(),
            },
        )
        .await;
        assert!(c.cooldown(&a, 0).is_some());
        c.clear_cooldown(&a).await.unwrap();
        assert_eq!(c.cooldown(&a, 0), None);
        // Clearing an account that never cooled down is fine too.
        c.clear_cooldown(&AccountId("acc_2".into())).await.unwrap();
    }
}
