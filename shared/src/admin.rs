//! Request and response bodies of the admin API (`/admin/v1/...`) that are not already defined
//! next to their data type (accounts, keys, import, usage).

use serde::{Deserialize, Serialize};

use crate::account::{Account, AccountId};
use crate::key::RelayKey;
use crate::time::UnixMillis;

/// `GET /admin/v1/accounts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountList {
    /// Accounts ordered by name.
    pub accounts: Vec<Account>,
}

/// `GET /admin/v1/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    /// Keys ordered by creation time.
    pub keys: Vec<RelayKey>,
}

/// Whether an account can take traffic right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum AccountState {
    /// Enabled and healthy.
    Ok,
    /// Skipped after an upstream failure until `until`.
    #[serde(rename_all = "camelCase")]
    CoolingDown {
        /// When it will be tried again.
        until: UnixMillis,
        /// What went wrong.
        reason: String,
    },
    /// Excluded by an operator.
    Disabled,
}

/// One account in the routing order of one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteEntry {
    /// Account id.
    pub id: AccountId,
    /// Account name.
    pub name: String,
    /// The `supportedModels` entry that matched (an exact name or a pattern).
    pub matched: String,
    /// 1–100, lower first.
    pub priority: u8,
    /// Max in flight.
    pub concurrency: u32,
    /// In flight right now (on this instance, or cluster-wide with Redis).
    pub in_flight: u32,
    /// Health.
    #[serde(flatten)]
    pub state: AccountState,
}

/// One client-facing model name (or pattern) and the accounts that serve it, in routing order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelRoute {
    /// Client-facing name or `*` pattern.
    pub model: String,
    /// Whether `model` is a pattern.
    pub pattern: bool,
    /// Accounts in routing order: priority, then name.
    pub accounts: Vec<RouteEntry>,
}

/// `GET /admin/v1/models`: the routing table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingTable {
    /// Exact names first (sorted), then patterns (sorted).
    pub models: Vec<ModelRoute>,
}

/// `GET /admin/v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// relayd version.
    pub version: String,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// `embedded` or `redis`.
    pub store: String,
    /// Account counts.
    pub accounts: AccountCounts,
    /// Relay keys that can currently be used.
    pub active_keys: usize,
    /// Requests in flight on this instance.
    pub in_flight: u64,
}

/// Account counts for [`Status`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountCounts {
    /// All accounts.
    pub total: usize,
    /// Enabled and not cooling down.
    pub up: usize,
    /// Cooling down.
    pub cooling_down: usize,
    /// Disabled.
    pub disabled: usize,
}
