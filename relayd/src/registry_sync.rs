//! Applies the coordinator's change events to the registries: when another instance changes
//! accounts or keys through its admin API, the coordinator reports a [`Change`] and this task
//! reloads that registry from the store. The coordinator itself never touches the store.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::accounts::AccountRegistry;
use crate::coordinator::Change;
use crate::keys::KeyRegistry;

/// Changes waiting to be applied. Changes are rare (admin writes); the coordinator waits when the
/// queue is full rather than dropping one.
pub const QUEUE: usize = 16;

/// The registries a change reloads.
#[derive(Debug)]
pub struct RegistrySync {
    /// Reloaded on [`Change::Accounts`].
    pub accounts: Arc<AccountRegistry>,
    /// Reloaded on [`Change::Keys`].
    pub keys: Arc<KeyRegistry>,
}

impl RegistrySync {
    /// Applies changes until the sender is gone or `cancel` fires. Run it as a tracked task.
    pub async fn run(self, mut changes: mpsc::Receiver<Change>, cancel: CancellationToken) {
        loop {
            let change = tokio::select! {
                () = cancel.cancelled() => return,
                change = changes.recv() => change,
            };
            let Some(change) = change else { return };
            self.apply(change).await;
        }
    }

    async fn apply(&self, change: Change) {
        match change {
            Change::Accounts => {
                if let Err(e) = self.accounts.reload().await {
                    tracing::warn!(error = %e.message, "cannot reload accounts");
                }
            }
            Change::Keys => {
                if let Err(e) = self.keys.reload().await {
                    tracing::warn!(error = %e, "cannot reload keys");
                }
            }
        }
    }
}
