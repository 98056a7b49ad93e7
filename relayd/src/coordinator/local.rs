//! The in-process coordinator: everything in this process's memory, which dies with it — right
//! for a single instance on the embedded store.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use shared::account::AccountId;
use shared::key::KeyId;
use shared::time::UnixMillis;
use tokio::sync::Notify;

use super::affinity::{AffinityKey, AffinityMap, AffinitySettings};
use super::{Cooldown, CoordinationError, Coordinator, utc_day};

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
    affinity: AffinityMap,
}

impl LocalCoordinator {
    /// An empty state, with the default affinity settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty state remembering moved conversations as `affinity` says.
    pub fn with_affinity(affinity: AffinitySettings) -> Self {
        Self {
            affinity: AffinityMap::new(affinity),
            ..Self::default()
        }
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

    fn affinity(&self, key: &AffinityKey) -> Option<AccountId> {
        self.affinity.get(key)
    }

    fn set_affinity(&self, key: &AffinityKey, account: Option<&AccountId>) {
        self.affinity.put(key, account);
    }

    fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }
}
