//! The sections of the configuration file other than `[server]`: `[upstream]`, `[usage]`,
//! `[metrics]`, `[routing]`, `[timeouts]` and `[context]`, each with its defaults and helpers.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[upstream]`: pooled upstream connections and bounds on upstream answers. An upstream that
/// breaks a bound fails its attempt like any other upstream fault (failover while nothing went
/// to the client, an `error` event after).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// How long an idle pooled connection is kept. Short by default: uvicorn (vLLM, SGLang)
    /// closes idle connections after 5 s without announcing it, and a connection reused just as
    /// the server closes it fails. A server's `Keep-Alive: timeout=N` shortens it further.
    pub pool_idle_secs: u64,
    /// Longest line of a streamed (SSE) answer.
    pub max_line_bytes: usize,
    /// Largest non-streamed answer (and largest JSON answer to a streaming request).
    pub max_answer_bytes: usize,
    /// Probe accounts' capabilities by themselves: after a change of how one is reached, at
    /// start for those never probed, and every `probe_profile_hours`. When off, only on demand
    /// (`POST /admin/v1/accounts/{id}/probe`, `relayctl accounts probe`).
    pub probe_profiles: bool,
    /// A capability profile this many hours old is probed again (checked at least hourly; 0 =
    /// never again by itself).
    pub probe_profile_hours: u64,
}

impl UpstreamConfig {
    /// The idle time of pooled connections.
    pub fn pool_idle(&self) -> Duration {
        Duration::from_secs(self.pool_idle_secs)
    }

    /// The age at which a profile is probed again, if ever.
    pub fn probe_profile_every(&self) -> Option<Duration> {
        (self.probe_profile_hours > 0)
            .then(|| Duration::from_secs(self.probe_profile_hours.saturating_mul(3600)))
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            pool_idle_secs: 4,
            max_line_bytes: 8 * 1024 * 1024,
            max_answer_bytes: 64 * 1024 * 1024,
            probe_profiles: true,
            probe_profile_hours: 24,
        }
    }
}

/// Usage accounting: how records are batched on their way to the store and how long raw records
/// are kept (hourly and daily aggregates are kept for good).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// Longest time a finished request waits before it is written; a crash loses at most this.
    pub flush_interval_ms: u64,
    /// Records per store write; a full batch is written without waiting for the interval.
    pub batch_size: usize,
    /// Records waiting for the writer; beyond this, new records are dropped (and counted) rather
    /// than slowing requests down.
    pub queue_capacity: usize,
    /// Records kept in memory while the store is failing; the oldest are dropped beyond this.
    pub max_pending: usize,
    /// Days raw per-request records are kept.
    pub retention_days: u32,
}

impl UsageConfig {
    /// The flush interval.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    /// The raw-record retention.
    pub fn retention(&self) -> Duration {
        Duration::from_secs(u64::from(self.retention_days) * 86_400)
    }
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            flush_interval_ms: 1000,
            batch_size: 500,
            queue_capacity: 10_000,
            max_pending: 100_000,
            retention_days: 30,
        }
    }
}

/// Who may read `/metrics`. Deny by default: without a `token` the admin token is required.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Bearer token for scrapers, so they need not hold the admin token.
    pub token: Option<String>,
    /// A separate address serving only `/metrics` (open there unless `token` is set), e.g.
    /// `127.0.0.1:9464` for a local Prometheus agent.
    pub listen: Option<SocketAddr>,
}

/// `[routing]`: how requests are spread over accounts and what happens when they fail or are full.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Routing {
    /// Most accounts tried for one request (failover stops after this many attempts).
    pub max_attempts: u32,
    /// Requests allowed to wait for a free slot when every candidate is at its cap.
    pub queue_size: usize,
    /// Longest wait in that queue before answering 529 (Anthropic) / 429 (OpenAI).
    pub queue_timeout_secs: u64,
    /// Account names that serve any model no account lists, exactly or by pattern.
    pub default_route: Vec<String>,
    /// How long a conversation that had to leave its home account stays on the one it moved
    /// to, after its last request.
    pub sticky_ttl_secs: u64,
    /// Most moved conversations remembered (the least recently used are forgotten first).
    pub sticky_max_sessions: usize,
    /// Requests without a session id are kept together by their stable prefix (system prompt,
    /// tools, first user message), so a conversation's turns reach the same upstream cache.
    pub prefix_affinity: bool,
    /// How far a conversation's home account may be loaded above its tier's least loaded
    /// account before a new placement goes elsewhere: this share of the home's `concurrency`
    /// (rounded up), in requests in flight.
    pub affinity_load_bound: f64,
    /// Cooldown after a connect error (or an unusable proxy).
    pub cooldown_connect_secs: u64,
    /// Cooldown after no response within the first-byte timeout, or a broken transport.
    pub cooldown_timeout_secs: u64,
    /// Cooldown after an HTTP 5xx.
    pub cooldown_server_error_secs: u64,
    /// Cooldown after an HTTP 429 without `retry-after` (with one, its value is used, up to
    /// `max_retry_after_secs`).
    pub cooldown_rate_limit_secs: u64,
    /// Ceiling on an upstream's `retry-after`: the longest cooldown one earns, and the most
    /// relayd passes on to a client in its own `retry-after`. One header saying `999999999` must
    /// not take an account out of routing for decades.
    pub max_retry_after_secs: u64,
    /// Cooldown after an HTTP 401 or 403 (relayd's credentials are wrong: a human must act).
    pub cooldown_auth_secs: u64,
    /// Every this many seconds, accounts cooling down are checked with `GET {endpoint}/models`
    /// and brought back early when it answers; 0 (the default) turns probing off.
    pub probe_interval_secs: u64,
    /// Redis mode: how long a concurrency slot survives without renewal (a crashed instance's
    /// slots come back after this).
    pub lease_secs: u64,
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            queue_size: 100,
            queue_timeout_secs: 30,
            default_route: Vec::new(),
            sticky_ttl_secs: 3600,
            sticky_max_sessions: 10_000,
            prefix_affinity: true,
            affinity_load_bound: 0.25,
            cooldown_connect_secs: 30,
            cooldown_timeout_secs: 60,
            cooldown_server_error_secs: 10,
            cooldown_rate_limit_secs: 30,
            max_retry_after_secs: 600,
            cooldown_auth_secs: 300,
            probe_interval_secs: 0,
            lease_secs: 30,
        }
    }
}

impl Routing {
    /// The load bound for `capacity`, in requests in flight (see `affinity_load_bound`).
    pub fn load_bound(&self, capacity: u32) -> u32 {
        let bound = (self.affinity_load_bound * f64::from(capacity)).ceil();
        if bound.is_finite() && bound > 0.0 {
            bound.min(f64::from(u32::MAX)) as u32
        } else {
            0
        }
    }

    /// The longest cooldown these settings can start, in seconds: the longest configured one, or
    /// an upstream's capped `retry-after`. A cooldown found in Redis that runs longer was not
    /// started under these settings (an older build, another configuration).
    pub fn longest_cooldown_secs(&self) -> u64 {
        [
            self.cooldown_connect_secs,
            self.cooldown_timeout_secs,
            self.cooldown_server_error_secs,
            self.cooldown_rate_limit_secs,
            self.cooldown_auth_secs,
            self.max_retry_after_secs,
        ]
        .into_iter()
        .max()
        .unwrap_or(self.max_retry_after_secs)
    }
}

/// Upstream timeouts. First byte is generous: a 100k-token prefill on a busy GPU takes minutes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP + TLS connect.
    pub connect_secs: u64,
    /// From request sent to the first response byte.
    pub first_byte_secs: u64,
    /// Longest silence between two chunks of a streamed answer.
    pub idle_secs: u64,
    /// How often an Anthropic stream gets a `ping` event while the upstream is silent (long
    /// prefill), so clients and proxies in between do not give up on the connection.
    pub ping_secs: u64,
}

impl Timeouts {
    /// Connect timeout.
    pub fn connect(&self) -> Duration {
        Duration::from_secs(self.connect_secs)
    }
    /// First-byte timeout.
    pub fn first_byte(&self) -> Duration {
        Duration::from_secs(self.first_byte_secs)
    }
    /// Idle timeout between chunks.
    pub fn idle(&self) -> Duration {
        Duration::from_secs(self.idle_secs)
    }
    /// Keep-alive interval of Anthropic streams.
    pub fn ping(&self) -> Duration {
        Duration::from_secs(self.ping_secs)
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect_secs: 10,
            first_byte_secs: 600,
            idle_secs: 300,
            ping_secs: 10,
        }
    }
}

/// `[context]`: keeping requests inside an upstream's context window (its `contextWindow`,
/// set or detected).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContextConfig {
    /// A prompt that leaves less room than this for the answer is refused as too long, without
    /// calling the upstream (which would refuse it anyway, or answer a few words).
    pub min_output_tokens: u32,
    /// Tokens kept free besides prompt and answer: the chat template's own tokens and the
    /// difference between a count and what the server really renders.
    pub margin_tokens: u32,
    /// Shrink Claude Code's compaction request (its summary instruction) to fit by cutting the
    /// middle of the largest tool results, so `/compact` succeeds on a small window.
    pub shrink_compaction: bool,
}

impl Default for ContextConfig {
    fn default() -> Self {
        Self {
            min_output_tokens: 1024,
            margin_tokens: 64,
            shrink_compaction: true,
        }
    }
}

/// `[ui]`: the status page at `/ui/` (read-only HTML over the admin API's data).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// Serve the page. Off: `/ui/` is a 404 like any unknown path.
    pub enabled: bool,
    /// A file holding a second token that signs in read-only viewers, so people who only look
    /// need not hold the admin token. Read at start; absent: only the admin token signs in.
    pub viewer_token_file: Option<std::path::PathBuf>,
    /// How long a sign-in lasts, in hours.
    pub session_hours: u64,
    /// Mark the session cookie `Secure`. relayd itself speaks plain HTTP; set this when browsers
    /// reach it over HTTPS through a proxy, so the cookie is never sent in clear.
    pub secure_cookie: bool,
}

impl UiConfig {
    /// How long a sign-in lasts.
    pub fn session(&self) -> Duration {
        Duration::from_secs(self.session_hours.saturating_mul(3600))
    }
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            viewer_token_file: None,
            session_hours: 12,
            secure_cookie: false,
        }
    }
}
