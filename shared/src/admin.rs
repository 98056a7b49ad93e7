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

/// A cooldown that was running when it was ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndedCooldown {
    /// When it would have ended by itself.
    pub until: UnixMillis,
    /// What had gone wrong.
    pub reason: String,
}

/// `POST /admin/v1/accounts/{id or name}/reset`: the account's cooldown was ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CooldownReset {
    /// Account id.
    pub id: AccountId,
    /// Account name.
    pub name: String,
    /// The cooldown that was ended; absent when the account was not cooling down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<EndedCooldown>,
    /// The account's state now: `ok`, or `disabled` (a reset does not enable an account).
    #[serde(flatten)]
    pub state: AccountState,
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
    /// The account's context window (set or detected), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u32>,
    /// The account speaks only the Anthropic Messages API (kind `anthropic`): it serves
    /// Anthropic-format clients (`/v1/messages`) and is never routed OpenAI-format ones.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anthropic_only: bool,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingTable {
    /// Exact names first (sorted), then patterns (sorted).
    pub models: Vec<ModelRoute>,
    /// How conversations are kept on one account (absent from older servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<AffinityRule>,
}

/// The conversation-affinity settings routing applies (`[routing]` in the server's config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AffinityRule {
    /// Requests without a session id are kept together by their prefix.
    pub prefix_affinity: bool,
    /// Share of an account's concurrency it may have in flight above its tier's least loaded
    /// account and still take a conversation it is home to.
    pub load_bound: f64,
    /// How long a moved conversation stays on its new account after its last request.
    pub moved_ttl_secs: u64,
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

/// `POST /admin/v1/test-endpoint`: which upstream to check — a saved account (`account`) or
/// unsaved settings (`endpoint` + `deploymentName`, optionally the rest) — and how long to wait.
///
/// The two forms are exclusive; relayd answers 400 naming the field when they are mixed or
/// neither is given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TestEndpointRequest {
    /// A saved account's id or name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Name for unsaved settings (only shown in the report; optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Base URL of unsaved settings.
    #[serde(
        default,
        alias = "azureEndpoint",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint: Option<String>,
    /// Model name sent upstream (unsaved settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_name: Option<String>,
    /// Upstream key (unsaved settings); never echoed back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// URL shape (unsaved settings); inferred from the endpoint when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<crate::account::AccountKind>,
    /// Azure `api-version` (unsaved settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Outbound proxy (unsaved settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Bound on each chat check (chat, stream, tool call), 1–600 s; default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Bound on the reachability check, 1–600 s; default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachability_timeout_secs: Option<u64>,
}

/// What was tested: never the key or proxy credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestTarget {
    /// The saved account's id (absent for unsaved settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<AccountId>,
    /// The account name (absent for unsaved settings without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// URL shape.
    pub kind: crate::account::AccountKind,
    /// Base URL.
    pub endpoint: String,
    /// Model name sent upstream.
    pub deployment_name: String,
    /// Whether an upstream key was used.
    pub api_key_set: bool,
    /// The proxy, password replaced by `****`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// `reachable`, `model_listed`, `chat`, `stream`, `tool_call` or `latency`.
    pub name: String,
    /// Whether it passed (a check that does not apply passes, with `skipped`).
    pub ok: bool,
    /// What was seen, in one line.
    pub detail: String,
    /// The likely fix, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Not run: it does not apply (Azure `model_listed`) or an earlier check made it pointless.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// How long it took.
    pub millis: u64,
}

/// Latency figures measured on the streaming chat.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencyFigures {
    /// From sending the request to the first streamed body byte.
    pub first_byte_millis: u64,
    /// From sending the request to the end of the stream.
    pub total_millis: u64,
    /// Output tokens of the answer.
    pub output_tokens: u64,
    /// Whether `output_tokens` is an estimate (the upstream sent no usage).
    pub tokens_estimated: bool,
    /// Output tokens per second between the first byte and the end.
    pub tokens_per_second: f64,
}

/// `POST /admin/v1/test-endpoint` answer: one result per check, in the order they ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestEndpointReport {
    /// What was tested.
    pub target: TestTarget,
    /// Results in order: reachable, model_listed, chat, stream, tool_call, latency.
    pub checks: Vec<CheckResult>,
    /// Latency figures, when the streaming chat completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyFigures>,
    /// What the capability probe found, when the endpoint was reachable. Not a check: it
    /// never makes the report fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<crate::profile::Profile>,
    /// Whether every check passed.
    pub ok: bool,
}

impl TestEndpointReport {
    /// Names of the checks that failed, in the order they ran: what relayd logs and relayctl
    /// reports as the reason for its exit status.
    pub fn failed_checks(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect()
    }
}

/// `GET /admin/v1/snapshot`: the live state of one relayd in one document — cheap enough to be
/// polled every second by `relayctl top` and monitoring scripts.
///
/// Counters are cumulative since this relayd started; a rate is the difference of two
/// snapshots' counters over the difference of their `at`, so the server keeps no per-viewer
/// state. In-flight counts and cooldowns are cluster-wide with the Redis store; counters are
/// this instance's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// When it was taken.
    pub at: UnixMillis,
    /// The process as a whole.
    pub server: SnapshotServer,
    /// Upper bounds, in seconds, of the buckets of every [`LatencyHistogram`] in this snapshot.
    pub ttfb_bounds: Vec<f64>,
    /// Every account, ordered by name.
    pub accounts: Vec<SnapshotAccount>,
    /// Every relay key that is not revoked, oldest first.
    pub keys: Vec<SnapshotKey>,
}

/// The process part of a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotServer {
    /// relayd version.
    pub version: String,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// `embedded` or `redis`.
    pub store: String,
    /// Client requests being served by this instance.
    pub in_flight: u64,
    /// Requests waiting for a free slot on this instance.
    pub queue_depth: u64,
}

/// What an account is doing right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum LiveState {
    /// Enabled, healthy, with a free slot.
    Ok,
    /// Enabled and healthy, every `concurrency` slot taken: new requests go elsewhere or wait.
    Full,
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

/// One account in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotAccount {
    /// Account id.
    pub id: AccountId,
    /// Account name.
    pub name: String,
    /// Whether an operator left it in routing.
    pub enabled: bool,
    /// Its state now.
    #[serde(flatten)]
    pub state: LiveState,
    /// Requests holding one of its slots.
    pub in_flight: u32,
    /// Its slots.
    pub concurrency: u32,
    /// 1–100, lower first.
    pub priority: u8,
    /// The server software its capability probe recognised; absent before the first probe and
    /// when nothing recognisable answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<crate::profile::ServerFamily>,
    /// Its context window in tokens (set on the account, or detected by the probe), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u32>,
    /// Client requests it answered (the account of their last attempt).
    pub requests: u64,
    /// Of those, the ones not answered with a 2xx (as in usage totals: 499 included).
    pub errors: u64,
    /// Failed attempts on it, including those that moved on to another account.
    pub failed_attempts: u64,
    /// Tokens of its answers.
    pub tokens: crate::usage::TokenCounts,
    /// Time to first byte of its 2xx answers.
    pub ttfb: LatencyHistogram,
    /// Arrival to last byte, summed over its requests (with `requests`: the mean).
    pub latency_seconds_total: f64,
}

/// One relay key in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotKey {
    /// Key id.
    pub id: crate::key::KeyId,
    /// Key name.
    pub name: String,
    /// `active`, `disabled` or `expired`.
    pub state: String,
    /// Client requests made with it.
    pub requests: u64,
    /// Of those, the ones not answered with a 2xx.
    pub errors: u64,
    /// Tokens of its answers.
    pub tokens: crate::usage::TokenCounts,
    /// Tokens used this UTC day (input + output + cache reads), cluster-wide: the `tokensPerDay`
    /// counter for a key with that limit, else the usage totals (up to one usage flush behind).
    /// Absent when the store could not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_today: Option<u64>,
    /// The key's `tokensPerDay` limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
}

/// Cumulative histogram counts: `buckets[i]` observations at most `bounds[i]` seconds (the
/// [`Snapshot::ttfb_bounds`]), `count` in all, summing to `sum_seconds`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencyHistogram {
    /// Observations at most each bound, in bound order.
    pub buckets: Vec<u64>,
    /// Every observation, including those above the last bound.
    pub count: u64,
    /// Their sum.
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    /// The observations made after `earlier` was taken (counters never go down; a histogram
    /// that did — a restarted relayd — counts from zero).
    pub fn since(&self, earlier: &Self) -> Self {
        if earlier.count > self.count || earlier.buckets.len() != self.buckets.len() {
            return self.clone();
        }
        Self {
            buckets: self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
            count: self.count - earlier.count,
            sum_seconds: (self.sum_seconds - earlier.sum_seconds).max(0.0),
        }
    }

    /// The `q` quantile (0–1) in seconds, interpolated inside its bucket the way Prometheus'
    /// `histogram_quantile` does; the last bound when it lies above it; `None` when empty.
    pub fn quantile(&self, bounds: &[f64], q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut below = 0u64;
        let mut lower = 0.0;
        for (&upper, &n) in bounds.iter().zip(&self.buckets) {
            if n as f64 >= rank && n > below {
                let share = (rank - below as f64) / (n - below) as f64;
                return Some(lower + (upper - lower) * share);
            }
            below = n;
            lower = upper;
        }
        bounds.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_checks_names_the_failures_in_order() {
        let check = |name: &str, ok| CheckResult {
            name: name.to_owned(),
            ok,
            detail: String::new(),
            hint: None,
            skipped: false,
            millis: 0,
        };
        let report = TestEndpointReport {
            target: TestTarget {
                id: None,
                name: None,
                kind: crate::account::AccountKind::Openai,
                endpoint: String::new(),
                deployment_name: String::new(),
                api_key_set: false,
                proxy: None,
            },
            checks: vec![
                check("reachable", true),
                check("chat", false),
                check("stream", false),
            ],
            latency: None,
            profile: None,
            ok: false,
        };
        assert_eq!(report.failed_checks(), ["chat", "stream"]);
    }

    #[test]
    fn histogram_quantiles_interpolate_inside_buckets() {
        let bounds = [0.1, 0.5, 1.0];
        let h = |buckets: [u64; 3], count| LatencyHistogram {
            buckets: buckets.to_vec(),
            count,
            sum_seconds: 0.0,
        };
        assert_eq!(h([0, 0, 0], 0).quantile(&bounds, 0.5), None);
        // 10 under 0.1 s: the median is halfway into the first bucket.
        assert_eq!(h([10, 10, 10], 10).quantile(&bounds, 0.5), Some(0.05));
        // 4 under 0.1, 4 more under 0.5: rank 4 is the end of the first bucket.
        assert_eq!(h([4, 8, 8], 8).quantile(&bounds, 0.5), Some(0.1));
        let p = h([2, 6, 8], 8).quantile(&bounds, 0.5).unwrap();
        assert!((p - 0.3).abs() < 1e-9, "{p}");
        // Above every bound: the last bound.
        assert_eq!(h([0, 0, 0], 3).quantile(&bounds, 0.5), Some(1.0));
    }

    #[test]
    fn histogram_deltas_count_what_happened_in_between() {
        let earlier = LatencyHistogram {
            buckets: vec![1, 2],
            count: 3,
            sum_seconds: 1.0,
        };
        let now = LatencyHistogram {
            buckets: vec![1, 5],
            count: 7,
            sum_seconds: 2.5,
        };
        let delta = now.since(&earlier);
        assert_eq!(delta.buckets, [0, 3]);
        assert_eq!(delta.count, 4);
        assert!((delta.sum_seconds - 1.5).abs() < 1e-9);
        // A restart: the newer counters are smaller, so they are the delta.
        assert_eq!(earlier.since(&now), earlier);
    }
}
