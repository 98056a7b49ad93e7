//! Usage: what one request consumed, and totals over many.

use serde::{Deserialize, Serialize};

use crate::time::UnixMillis;

/// Token counts of one request or a sum of many.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenCounts {
    /// Prompt tokens not served from the upstream's prefix cache.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Prompt tokens served from the upstream's prefix cache.
    pub cache_read_tokens: u64,
}

impl TokenCounts {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Self) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
    }

    /// Everything counted, for per-day token limits.
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens + self.cache_read_tokens
    }
}

/// One finished (or failed, or cancelled) request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRecord {
    /// Request id (also sent to the client in `x-request-id`).
    pub request_id: String,
    /// When the request arrived.
    pub at: UnixMillis,
    /// Relay key name.
    pub key: String,
    /// Account name, when one was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The model label: the account's `supportedModels` entry that routed the request (the
    /// exact name, or the `*` pattern that matched), or `other` for the default route and for
    /// requests refused before routing. Never the client's own string, so totals stay bounded.
    pub model: String,
    /// The deployment sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_model: Option<String>,
    /// Tokens.
    pub tokens: TokenCounts,
    /// True when the upstream gave no usage and the counts are relayd's estimate.
    pub estimated: bool,
    /// HTTP status sent to the client (499 when the client went away first).
    pub status: u16,
    /// Whether the answer was streamed.
    pub streamed: bool,
    /// Time from arrival to the last byte.
    pub latency_ms: u64,
    /// Time from arrival to the first byte sent to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttfb_ms: Option<u64>,
}

/// Totals for one group (key, account or model) over a period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageTotals {
    /// The group's value (a key name, account name or model), or `"*"` for the grand total.
    pub group: String,
    /// Requests counted.
    pub requests: u64,
    /// Requests that did not end in a 2xx.
    pub errors: u64,
    /// Tokens.
    pub tokens: TokenCounts,
    /// Requests whose token counts are relayd's estimate (the upstream reported none).
    #[serde(default)]
    pub estimated: u64,
}

impl UsageTotals {
    /// Empty totals for `group`.
    pub fn named(group: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            ..Self::default()
        }
    }

    /// Adds `other`'s counts (not its group name) into `self`.
    pub fn add(&mut self, other: &Self) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.tokens.add(&other.tokens);
        self.estimated += other.estimated;
    }
}

impl UsageRecord {
    /// Whether the client was not answered with a 2xx (failed, refused or cancelled).
    pub fn is_error(&self) -> bool {
        !(200..300).contains(&self.status)
    }
}

/// What usage totals are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageGroupBy {
    /// Relay key name.
    Key,
    /// Account name (`(none)` for requests refused before an account was chosen).
    Account,
    /// The model label (configured name, pattern, or `other`).
    Model,
    /// UTC hour (`2025-01-31T13:00:00Z`).
    Hour,
    /// UTC day (`2025-01-31`).
    Day,
}

impl UsageGroupBy {
    /// Every grouping, in the order help texts list them.
    pub const ALL: [Self; 5] = [Self::Key, Self::Account, Self::Model, Self::Hour, Self::Day];

    /// The lower-case name used in query strings and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Account => "account",
            Self::Model => "model",
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }
}

impl std::fmt::Display for UsageGroupBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for UsageGroupBy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|g| g.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("{s:?} is not one of key, account, model, hour, day"))
    }
}

/// The group name of requests that never reached an account.
pub const NO_ACCOUNT: &str = "(none)";

/// The group name of the grand total.
pub const TOTAL_GROUP: &str = "total";

/// Which usage to add up: every filter is optional; times are resolved to Unix milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageQuery {
    /// Only this relay key name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Only this account name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Only this model label (configured name, pattern, or `other`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// From this time on (rounded down to the hour, the aggregates' resolution).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<UnixMillis>,
    /// Before this time (rounded up to the hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<UnixMillis>,
    /// How to group; `None` gives only the grand total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<UsageGroupBy>,
}

/// `GET /admin/v1/usage`: totals per group and overall.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    /// The query as resolved (relative times turned into milliseconds).
    pub query: UsageQuery,
    /// One entry per group: names in order, hours and days in time order. Empty without `groupBy`.
    pub groups: Vec<UsageTotals>,
    /// Everything matched by the filters, group `total`.
    pub total: UsageTotals,
}
