//! The one state value every handler receives: cheap to clone (a handful of `Arc`s).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use crate::accounts::AccountRegistry;
use crate::auth::AdminToken;
use crate::config::Config;
use crate::keys::KeyRegistry;
use crate::store::Store;

/// Shared state of one relayd process.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Effective configuration.
    pub config: Arc<Config>,
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// Accounts and their live snapshot.
    pub accounts: Arc<AccountRegistry>,
    /// Relay keys and their live snapshot.
    pub keys: Arc<KeyRegistry>,
    /// Guards `/admin/v1`.
    pub admin_token: Arc<AdminToken>,
    /// Process start, for uptime.
    pub started: Instant,
    /// Pooled upstream HTTP clients.
    pub upstreams: Arc<crate::proxy::upstream::Upstreams>,
    /// Client requests being served right now.
    pub in_flight: Arc<AtomicU64>,
    /// Route tables, account selection, slots and cooldowns.
    pub routing: Arc<crate::routing::Router>,
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.kind().as_str())
    }
}
