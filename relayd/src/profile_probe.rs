//! Probing accounts for their capability profile (see [`crate::upstream::probe`]) and keeping the
//! result: after an admin write that changes how an account is reached (in the background — the
//! admin call has already returned), on demand, at start for accounts never probed, and whenever
//! a profile is `upstream.probe_profile_hours` old.
//!
//! A probe never blocks an admin write and never disables or cools down an account: it only
//! records what it saw. A few run at once at most, whatever asked for them, so importing a
//! hundred accounts does not send a hundred upstreams their probes in the same second.
//!
//! The periodic round probes only profiles that are due, by their `probedAt`: with several
//! instances on one Redis, a profile one of them refreshed is not probed again by the others,
//! and an on-demand probe postpones the next periodic one.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use shared::account::AccountId;
use shared::profile::Profile;
use shared::time::{UnixMillis, now_millis};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::accounts::{AccountRegistry, LiveAccount, ProfileRecorded};
use crate::error::{ApiError, ErrorKind};
use crate::upstream::Upstreams;

/// Probes running at once, across every trigger.
const CONCURRENT_PROBES: usize = 3;

/// The longest one probe may take before its result is given up. The probe bounds each of its
/// requests itself; this only keeps a probe that hangs anyway from holding its place forever.
const PROBE_DEADLINE: Duration = Duration::from_secs(120);

/// The longest wait between two looks for profiles that are due.
const LONGEST_CHECK: Duration = Duration::from_secs(3600);

/// Why a probe left no profile.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The account was deleted while it was probed.
    #[error("account {0:?} was deleted during its probe")]
    Deleted(String),
    /// How the account is reached changed while it was probed; the change brings its own probe.
    #[error("account {0:?} changed how it is reached during its probe; probe it again")]
    Superseded(String),
    /// The probe did not finish within [`PROBE_DEADLINE`].
    #[error("the probe of account {0:?} did not finish within {secs} s", secs = PROBE_DEADLINE.as_secs())]
    TimedOut(String),
    /// The profile could not be stored.
    #[error("{}", .0.message)]
    Store(ApiError),
}

impl From<ProbeError> for ApiError {
    fn from(e: ProbeError) -> Self {
        match e {
            ProbeError::Deleted(_) => ApiError::new(ErrorKind::NotFound, e.to_string()),
            ProbeError::Superseded(_) => ApiError::new(ErrorKind::Conflict, e.to_string()),
            ProbeError::TimedOut(_) => ApiError::new(ErrorKind::GatewayTimeout, e.to_string()),
            ProbeError::Store(e) => e,
        }
    }
}

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

    /// Probes `account` now (after the probes already waiting) and records what was found.
    pub async fn probe(&self, account: &LiveAccount) -> Result<Profile, ProbeError> {
        let name = || account.settings.name.clone();
        // The semaphore is never closed, so a permit always comes.
        let _permit = self.running.acquire().await;
        let probed = crate::upstream::probe::probe(&self.upstreams, account);
        let profile = tokio::time::timeout(PROBE_DEADLINE, probed)
            .await
            .map_err(|_| ProbeError::TimedOut(name()))?;
        tracing::info!(
            account = %account.settings.name,
            family = %profile.family,
            version = profile.version.as_deref().unwrap_or("-"),
            window = ?profile.context_window,
            tokenizer = ?profile.tokenizer,
            native_messages = ?profile.native_messages,
            notes = profile.notes.len(),
            "account {} probed: {}",
            account.settings.name,
            summary(&profile)
        );
        match self.accounts.record_profile(account, &profile).await {
            Ok(ProfileRecorded::Kept) => Ok(profile),
            Ok(ProfileRecorded::Deleted) => Err(ProbeError::Deleted(name())),
            Ok(ProfileRecorded::Superseded) => Err(ProbeError::Superseded(name())),
            Err(e) => Err(ProbeError::Store(e)),
        }
    }

    /// Probes each of `ids` that still exists, a few at once, until `cancel`. Failures are
    /// logged: nobody is waiting for these results.
    pub async fn probe_ids(&self, ids: Vec<AccountId>, cancel: CancellationToken) {
        let all = futures_util::stream::iter(ids).for_each_concurrent(CONCURRENT_PROBES, |id| {
            async move {
                let Some(account) = self.accounts.snapshot().get(&id).cloned() else {
                    return;
                };
                match self.probe(&account).await {
                    Ok(_) => {}
                    // The write that caused it asked for a probe of its own.
                    Err(e @ (ProbeError::Deleted(_) | ProbeError::Superseded(_))) => {
                        tracing::debug!(account = %account.settings.name, "probe result dropped: {e}");
                    }
                    Err(e) => {
                        tracing::warn!(account = %account.settings.name, error = %e, "no profile recorded: {e}");
                    }
                }
            }
        });
        tokio::select! {
            () = cancel.cancelled() => {}
            () = all => {}
        }
    }

    /// Probes the accounts that are due — at start, and then at least hourly — until `cancel`:
    /// those never probed, and those probed `every` ago or longer (never again when `None`).
    pub async fn run(self: Arc<Self>, every: Option<Duration>, cancel: CancellationToken) {
        loop {
            let due = due(&self.accounts.snapshot().accounts, every, now_millis());
            self.probe_ids(due, cancel.clone()).await;
            let Some(every) = every else { return };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(every.min(LONGEST_CHECK)) => {}
            }
        }
    }
}

/// The accounts whose profile is missing, or at least `every` old at `now`.
fn due(accounts: &[Arc<LiveAccount>], every: Option<Duration>, now: UnixMillis) -> Vec<AccountId> {
    let every = every.map(|d| UnixMillis::try_from(d.as_millis()).unwrap_or(UnixMillis::MAX));
    accounts
        .iter()
        .filter(|a| match (&a.profile, every) {
            (None, _) => true,
            (Some(p), Some(every)) => now.saturating_sub(p.probed_at) >= every,
            (Some(_), None) => false,
        })
        .map(|a| a.id.clone())
        .collect()
}

/// One line saying what a probe found, for the log.
fn summary(profile: &Profile) -> String {
    let mut text = profile.family.to_string();
    if let Some(version) = &profile.version {
        text.push(' ');
        text.push_str(version);
    }
    match profile.context_window {
        Some(window) => text.push_str(&format!(", window {window}")),
        None => text.push_str(", window unknown"),
    }
    text
}

#[cfg(test)]
mod tests {
    use shared::account::AccountInput;

    use super::*;

    fn account(n: u8, probed_at: Option<UnixMillis>) -> Arc<LiveAccount> {
        let (settings, secrets) = AccountInput {
            name: format!("a{n}"),
            endpoint: "http://127.0.0.1:8000/v1".into(),
            deployment_name: "d".into(),
            ..AccountInput::default()
        }
        .validate()
        .unwrap();
        let profile = probed_at.map(|probed_at| {
            Arc::new(Profile {
                probed_at,
                ..Profile::default()
            })
        });
        Arc::new(LiveAccount::new(
            AccountId(format!("acc_000000000000000{n}")),
            settings,
            secrets,
            (0, 0),
            profile,
        ))
    }

    #[test]
    fn due_are_the_unprobed_and_the_old() {
        let hour = 3_600_000;
        let now = 100 * hour;
        let accounts = [
            account(1, None),
            account(2, Some(now - 24 * hour)),
            account(3, Some(now - 23 * hour)),
            account(4, Some(now + hour)),
        ];
        let ids = |v: Vec<AccountId>| v.into_iter().map(|id| id.0).collect::<Vec<_>>();
        assert_eq!(
            ids(due(&accounts, Some(Duration::from_secs(24 * 3600)), now)),
            ["acc_0000000000000001", "acc_0000000000000002"]
        );
        // Periodic probing off: only the accounts never probed.
        assert_eq!(ids(due(&accounts, None, now)), ["acc_0000000000000001"]);
    }
}
