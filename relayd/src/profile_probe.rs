//! Probing accounts for their capability profile (see [`crate::upstream::probe`]) and keeping the
//! result: after an admin write that changes how an account is reached (in the background — the
//! admin call has already returned), on demand, at start for accounts never probed, and every
//! `upstream.probe_profile_hours`.
//!
//! A probe never blocks an admin write and never disables or cools down an account: it only
//! records what it saw. A few run at once at most, so importing a hundred accounts does not send
//! a hundred upstreams their probes in the same second.

use std::sync::Arc;
use std::time::Duration;

use shared::account::{AccountId, AccountPatch};
use shared::profile::Profile;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::accounts::{AccountRegistry, LiveAccount};
use crate::upstream::Upstreams;

/// Probes running at once.
const CONCURRENT_PROBES: usize = 3;

/// Runs probes and records their results.
#[derive(Debug)]
pub struct ProfileProbe {
    accounts: Arc<AccountRegistry>,
    upstreams: Arc<Upstreams>,
    running: Semaphore,
}

impl ProfileProbe {
    /// A prober over `accounts`, reaching upstreams with `upstreams`.
    pub fn new(accounts: Arc<AccountRegistry>, upstreams: Arc<Upstreams>) -> Self {
        Self {
            accounts,
            upstreams,
            running: Semaphore::new(CONCURRENT_PROBES),
        }
    }

    /// Probes `account` now and records what was found; `None` when the account was deleted
    /// meanwhile or the result could not be stored (logged).
    pub async fn probe(&self, account: &LiveAccount) -> Option<Profile> {
        let _permit = self.running.acquire().await.ok()?;
        let profile = crate::upstream::probe::probe(&self.upstreams, account).await;
        tracing::info!(
            account = %account.settings.name,
            family = %profile.family,
            window = ?profile.context_window,
            tokenizer = ?profile.tokenizer,
            native_messages = ?profile.native_messages,
            "account probed"
        );
        match self.accounts.record_profile(&account.id, &profile).await {
            Ok(true) => Some(profile),
            Ok(false) => None,
            Err(e) => {
                tracing::warn!(account = %account.settings.name, error = %e.message, "cannot store an account's profile");
                None
            }
        }
    }

    /// Probes each of `ids` that still exists, one after another, until `cancel`.
    pub async fn probe_ids(&self, ids: Vec<AccountId>, cancel: CancellationToken) {
        for id in ids {
            let Some(account) = self.accounts.snapshot().get(&id).cloned() else {
                continue;
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = self.probe(&account) => {}
            }
        }
    }

    /// At start, the accounts never probed; then every account every `every` (never when
    /// `None`), until `cancel`.
    pub async fn run(self: Arc<Self>, every: Option<Duration>, cancel: CancellationToken) {
        let unprobed = self
            .accounts
            .snapshot()
            .accounts
            .iter()
            .filter(|a| a.profile.is_none())
            .map(|a| a.id.clone())
            .collect();
        self.probe_ids(unprobed, cancel.clone()).await;
        let Some(every) = every else {
            return;
        };
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let all = self
                .accounts
                .snapshot()
                .accounts
                .iter()
                .map(|a| a.id.clone())
                .collect();
            self.probe_ids(all, cancel.clone()).await;
        }
    }
}

/// Whether `patch` changes how the account's upstream is reached (and so what a probe finds).
pub fn changes_the_upstream(patch: &AccountPatch) -> bool {
    patch.endpoint.is_some()
        || patch.kind.is_some()
        || patch.deployment_name.is_some()
        || patch.api_key.is_some()
        || patch.proxy.is_some()
        || patch.upstream_auth.is_some()
        || patch.api_version.is_some()
}
