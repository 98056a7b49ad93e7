//! Shared routing state — concurrency slots, cooldowns, relay-key counters and conversation
//! affinity — behind one
//! trait, chosen at start-up: [`LocalCoordinator`] keeps everything in this process (embedded
//! store: no I/O on the request path); [`RedisCoordinator`] shares it between instances.
//!
//! The coordinator knows nothing of the registries, the store or the server: it deals in account
//! and key ids. What another instance changed through its admin API arrives here as a [`Change`],
//! handed to whoever the daemon set up to apply it (see `crate::registry_sync`).
//!
//! Files: this one is the trait and its types; [`affinity`] names conversations and remembers the
//! moved ones; [`local`] and [`redis`] are the two backends. One
//! conformance suite runs the same cases against both (`tests/it/coordinator_conformance.rs`).

pub mod affinity;
mod local;
pub mod redis;

pub use affinity::{AffinityKey, AffinitySettings};
pub use local::LocalCoordinator;
pub use redis::{RedisCoordinator, RedisSettings};

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
    /// The account conversation `key` was moved to, while that lasts (no I/O: with Redis, what
    /// the instances shared so far).
    fn affinity(&self, key: &AffinityKey) -> Option<AccountId>;
    /// Records that conversation `key` now lives on `account`, or on its home account
    /// (`None`); with a shared store, for every instance (from a request's end: cannot wait).
    fn set_affinity(&self, key: &AffinityKey, account: Option<&AccountId>);
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

/// What an admin change on another instance touched: the registry to reload. Sent on the channel
/// given to [`RedisCoordinator::start`]; also sent for both registries after every
/// (re)subscription, since announcements made while unsubscribed are lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Accounts were created, changed or deleted.
    Accounts,
    /// Relay keys were created, changed or deleted.
    Keys,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_midnights_are_utc() {
        let day = 86_400_000;
        assert_eq!(utc_day(0), 0);
        assert_eq!(utc_day(day - 1), 0);
        assert_eq!(utc_day(day), 1);
        assert_eq!(utc_day(-1), -1, "before 1970 still counts down");
        assert_eq!(secs_to_midnight(2 * day - 1500), 2);
        assert_eq!(secs_to_midnight(2 * day - 1), 1);
        assert_eq!(secs_to_midnight(day), 86_400);
    }
}
