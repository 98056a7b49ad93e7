//! The cooling-account probe: a background task that, every `routing.probe_interval_secs`, asks
//! each enabled account that is cooling down for its model list, and ends the cooldown when it
//! answers. It lives here, above routing and the upstream client, because it needs both: routing
//! stays pure selection over a snapshot.

use std::sync::Arc;
use std::time::Duration;

use shared::time::now_millis;
use tokio_util::sync::CancellationToken;

use crate::accounts::{AccountRegistry, AccountSnapshot};
use crate::coordinator::Coordinator;
use crate::upstream::Upstreams;

/// Longest wait for one probe's answer: well below the first-byte timeout, so one silent
/// account cannot hang the loop.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the probe loop reads and whom it asks.
#[derive(Debug)]
pub struct CoolingProbe {
    /// The accounts (their live snapshot is read on each round).
    pub accounts: Arc<AccountRegistry>,
    /// Who knows which accounts are cooling down, and ends cooldowns.
    pub coordinator: Arc<dyn Coordinator>,
    /// The upstream client.
    pub upstreams: Arc<Upstreams>,
}

impl CoolingProbe {
    /// Probes every `every` until `cancel` fires. Run it as a tracked task.
    pub async fn run(self, every: Duration, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.probe_once(&self.accounts.snapshot()).await;
        }
    }

    /// One round over `snapshot`: a 2xx model list ends an account's cooldown.
    async fn probe_once(&self, snapshot: &AccountSnapshot) {
        let now = now_millis();
        for account in snapshot.accounts.iter().filter(|a| a.settings.enabled) {
            if self.coordinator.cooldown(&account.id, now).is_none() {
                continue;
            }
            let answer = tokio::time::timeout(PROBE_TIMEOUT, self.upstreams.models(account)).await;
            if !matches!(answer, Ok(Ok(_))) {
                continue;
            }
            match self.coordinator.clear_cooldown(&account.id).await {
                Ok(()) => {
                    tracing::info!(account = %account.settings.name, "probe answered: cooldown ended");
                }
                Err(e) => {
                    tracing::warn!(account = %account.settings.name, error = %e, "probe answered but the cooldown could not be ended");
                }
            }
        }
    }
}
