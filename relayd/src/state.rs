//! The one state value every handler receives: one `Arc` around the process's parts, so the
//! clones axum makes for each request (one per layer and extractor) cost one atomic count, not
//! one per part — counts that both cores of a small machine would otherwise bounce between
//! them. Also the daemon's own background tasks that run alongside it.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::AccountRegistry;
use crate::auth::AdminToken;
use crate::config::Config;
use crate::keys::KeyRegistry;
use crate::store::Store;

/// Shared state of one relayd process: [`StateParts`] behind one `Arc`, read through `Deref`.
#[derive(Clone, Debug)]
pub struct AppState(Arc<StateParts>);

impl AppState {
    pub fn new(parts: StateParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = StateParts;

    fn deref(&self) -> &StateParts {
        &self.0
    }
}

/// What [`AppState`] holds. The parts stay `Arc`s of their own: tasks and registries keep
/// just the part they need.
#[derive(Debug)]
pub struct StateParts {
    /// Effective configuration as it was at start-up.
    pub config: Arc<Config>,
    /// The configuration in effect now: the start-up one with the live-reloadable keys replaced
    /// on each `SIGHUP` (see `crate::lifecycle`). Read it with `live_config.load()`.
    pub live_config: Arc<ArcSwap<Config>>,
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// Accounts and their live snapshot.
    pub accounts: Arc<AccountRegistry>,
    /// Relay keys and their live snapshot.
    pub keys: Arc<KeyRegistry>,
    /// Guards `/admin/v1`.
    pub admin_token: Arc<AdminToken>,
    /// Signs read-only viewers in to the status page (`ui.viewer_token_file`), when configured.
    pub ui_viewer_token: Option<Arc<AdminToken>>,
    /// Process start, for uptime.
    pub started: Instant,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Pooled upstream HTTP clients.
    pub upstreams: Arc<crate::upstream::Upstreams>,
    /// Client requests being served right now.
    pub in_flight: Arc<AtomicU64>,
    /// Usage accounting: `state.usage.record(record)` once per finished request.
    pub usage: Arc<crate::usage::UsageRecorder>,
    /// Route tables, account selection, slots and cooldowns.
    pub routing: Arc<crate::routing::Router>,
    /// The daemon's background tasks (cooling-account probes, registry reloads).
    pub background: Arc<Background>,
    /// Capability probes of accounts, and their results.
    pub profile_probe: Arc<crate::profile_probe::ProfileProbe>,
}

/// Background tasks started with the state: tracked, and cancelled together by
/// [`Background::shutdown`] — or when the last state handle is dropped (embedders and tests
/// that never shut down).
#[derive(Debug, Default)]
pub struct Background {
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl Background {
    /// Runs `task`, giving it the token that tells it to stop.
    pub fn spawn<F>(&self, task: impl FnOnce(CancellationToken) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task(self.cancel.clone()));
    }

    /// Stops every task and waits for them to end.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.kind().as_str())
    }
}
