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
    /// The model the client asked for.
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
}
