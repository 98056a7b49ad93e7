//! Configuration: built-in defaults, then an optional TOML file, then `RELAYD_*` environment
//! variables, then command-line flags — each layer overriding the one before.
//!
//! Unknown keys are errors that name the key (a typo must not silently fall back to a default),
//! in the file as well as in the environment. Environment variables map to keys by lower-casing
//! and using `__` for nesting: `RELAYD_TIMEOUTS__FIRST_BYTE_SECS=900` sets `timeouts.first_byte_secs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Environment variables with the `RELAYD_` prefix that are not configuration keys.
const NON_CONFIG_ENV: &[&str] = &[
    "RELAYD_CONFIG",
    "RELAYD_ENCRYPTION_KEY",
    "RELAYD_ADMIN_TOKEN",
];

/// Most `__`-separated levels an environment variable's key may have before it is rejected
/// unread. Real keys have two (`TIMEOUTS__IDLE_SECS`), and deeper ones are unknown keys whose
/// errors name them; but each level became a nested table, built and dropped recursively, so a
/// variable name of a few thousand levels overflowed the stack (found by the fuzz bench).
const MAX_ENV_KEY_DEPTH: usize = 16;

/// Most serving threads `workers` may ask for.
const MAX_WORKERS: usize = 1024;

/// The whole configuration of one relayd process. `Serialize` is for comparing two of them key
/// by key on reload (`SIGHUP`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the client and admin listener.
    pub listen: SocketAddr,
    /// Threads answering connections; 0 (the default) means one per CPU core.
    pub workers: usize,
    /// Directory for the embedded store, the generated admin token and encryption key.
    pub data_dir: PathBuf,
    /// `embedded` (default) or a `redis://` / `rediss://` URL.
    pub store: String,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    pub redis_prefix: String,
    /// File holding the encryption key (default `<data_dir>/encryption.key`).
    pub encryption_key_file: Option<PathBuf>,
    /// File holding the admin token (default `<data_dir>/admin.token`).
    pub admin_token_file: Option<PathBuf>,
    /// Largest request body accepted, in bytes. Claude Code bodies reach several MB.
    pub max_body_bytes: usize,
    /// `text` (default on a terminal) or `json`.
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info` or `relayd=debug`.
    pub log: String,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// On SIGTERM or Ctrl-C, how long open requests and streams may run on before they are cut
    /// off and relayd exits anyway. Keep systemd's `TimeoutStopSec` above it.
    pub shutdown_grace_secs: u64,
    /// The `/metrics` endpoint.
    pub metrics: MetricsConfig,
    /// Usage accounting.
    pub usage: UsageConfig,
    /// Account selection, queueing, failover and cooldowns.
    pub routing: Routing,
    /// Upstream connections and the size of what upstreams may send.
    pub upstream: UpstreamConfig,
    // --- Client connections and the upstream address policy (see the block near the end). ---
    /// Client connections: read timeouts and the connection cap.
    pub server: ServerConfig,
    /// Accept account endpoints and proxies at link-local or cloud-metadata addresses
    /// (169.254.0.0/16, fe80::/10, fd00:ec2::254). Off by default: a relay that admins can point
    /// anywhere must not become a way to read the host's cloud credentials.
    pub allow_link_local_endpoints: bool,
}

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
}

impl UpstreamConfig {
    /// The idle time of pooled connections.
    pub fn pool_idle(&self) -> Duration {
        Duration::from_secs(self.pool_idle_secs)
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            pool_idle_secs: 4,
            max_line_bytes: 8 * 1024 * 1024,
            max_answer_bytes: 64 * 1024 * 1024,
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
    /// How long a session stays bound to the account that served it.
    pub sticky_ttl_secs: u64,
    /// Most sessions remembered (the oldest are forgotten first).
    pub sticky_max_sessions: usize,
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

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            workers: 0,
            data_dir: PathBuf::from("./relayd-data"),
            store: "embedded".to_owned(),
            redis_prefix: "relayd:".to_owned(),
            encryption_key_file: None,
            admin_token_file: None,
            max_body_bytes: 32 * 1024 * 1024,
            log_format: LogFormat::Text,
            log: "info".to_owned(),
            timeouts: Timeouts::default(),
            shutdown_grace_secs: 30,
            metrics: MetricsConfig::default(),
            usage: UsageConfig::default(),
            routing: Routing::default(),
            upstream: UpstreamConfig::default(),
            server: ServerConfig::default(),
            allow_link_local_endpoints: false,
        }
    }
}

/// A configuration problem, always naming the file, variable or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The merged configuration does not deserialize (unknown key, wrong type).
    #[error("{origin}: {message}")]
    Invalid {
        /// Where the bad value came from (`config file X` or `environment`).
        origin: String,
        /// serde's message, naming the key.
        message: String,
    },
    /// A semantic check failed.
    #[error("invalid setting `{key}`: {message}")]
    Value {
        /// The key.
        key: &'static str,
        /// Why.
        message: String,
    },
}

/// What the store setting selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// redb file in the data directory.
    Embedded,
    /// Redis at this URL.
    Redis(String),
}

impl Config {
    /// Loads defaults ← `file` (if given) ← `env` (`RELAYD_*` pairs).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let Some(path) = file else {
            return Self::from_layers(None, env);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string(), env)
    }

    /// As [`Config::load`] with the file already read: defaults ← `text` (TOML) ← `env`.
    /// `file_name` names the file in error messages. No I/O, so any text can be tested (the fuzz
    /// bench feeds it generated files and environments).
    pub fn from_toml_str(
        text: &str,
        file_name: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::from_layers(Some((text, file_name)), env)
    }

    /// The layers over the defaults: `file` is the TOML text and the file's name.
    fn from_layers(
        file: Option<(&str, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = toml::Table::new();
        let mut origin = "configuration".to_owned();
        if let Some((text, file_name)) = file {
            table = toml::from_str(text).map_err(|e| ConfigError::Invalid {
                origin: format!("config file {file_name}"),
                message: describe_toml_error(&e, text),
            })?;
            origin = format!("config file {file_name} or environment");
            // Validate the file on its own first, so its errors name the file.
            Self::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
                ConfigError::Invalid {
                    origin: format!("config file {file_name}"),
                    message: e.message().to_owned(),
                }
            })?;
        }
        let overrides: BTreeMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("RELAYD_") && !NON_CONFIG_ENV.contains(&k.as_str()))
            .collect();
        for (var, raw) in &overrides {
            let key = var["RELAYD_".len()..].to_ascii_lowercase();
            let path: Vec<&str> = key.split("__").collect();
            if path.len() > MAX_ENV_KEY_DEPTH {
                return Err(ConfigError::Invalid {
                    origin: format!("environment variable {var}"),
                    message: format!(
                        "unknown key: nested {} levels deep (configuration keys have at most 2)",
                        path.len()
                    ),
                });
            }
            set_path(&mut table, &path, env_value(raw)).map_err(|message| {
                ConfigError::Invalid {
                    origin: format!("environment variable {var}"),
                    message,
                }
            })?;
            // Check each variable alone so an unknown one is named as the variable.
            let mut probe = toml::Table::new();
            let _ = set_path(&mut probe, &path, env_value(raw));
            Self::deserialize(toml::Value::Table(probe)).map_err(|e| ConfigError::Invalid {
                origin: format!("environment variable {var}"),
                message: e.message().to_owned(),
            })?;
        }
        let config =
            Self::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Invalid {
                origin,
                message: e.message().to_owned(),
            })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        self.store_spec()?;
        if self.workers > MAX_WORKERS {
            return Err(ConfigError::Value {
                key: "workers",
                message: format!(
                    "{} is too many (maximum {MAX_WORKERS}; 0 means one per CPU core)",
                    self.workers
                ),
            });
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Value {
                key: "max_body_bytes",
                message: format!("{} is too small (minimum 1024)", self.max_body_bytes),
            });
        }
        if self.timeouts.connect_secs == 0
            || self.timeouts.first_byte_secs == 0
            || self.timeouts.idle_secs == 0
            || self.timeouts.ping_secs == 0
        {
            return Err(ConfigError::Value {
                key: "timeouts",
                message: "timeouts must be at least 1 second".to_owned(),
            });
        }
        if self.routing.max_attempts == 0 {
            return Err(ConfigError::Value {
                key: "routing.max_attempts",
                message: "must be at least 1".to_owned(),
            });
        }
        if self.routing.max_retry_after_secs == 0 {
            return Err(ConfigError::Value {
                key: "routing.max_retry_after_secs",
                message: "must be at least 1 second".to_owned(),
            });
        }
        if self.routing.lease_secs == 0 {
            return Err(ConfigError::Value {
                key: "routing.lease_secs",
                message: "must be at least 1 second".to_owned(),
            });
        }
        self.check_usage()?;
        if self.upstream.max_line_bytes < 1024 || self.upstream.max_answer_bytes < 1024 {
            return Err(ConfigError::Value {
                key: "upstream.max_line_bytes / upstream.max_answer_bytes",
                message: "must be at least 1024".to_owned(),
            });
        }
        self.server.check()?;
        Ok(())
    }

    fn check_usage(&self) -> Result<(), ConfigError> {
        let u = &self.usage;
        let bad = |key, message: &str| {
            Err(ConfigError::Value {
                key,
                message: message.to_owned(),
            })
        };
        if !(10..=3_600_000).contains(&u.flush_interval_ms) {
            return bad(
                "usage.flush_interval_ms",
                "must be between 10 and 3600000 (one hour)",
            );
        }
        if u.batch_size == 0 || u.queue_capacity == 0 {
            return bad(
                "usage.batch_size / usage.queue_capacity",
                "must be at least 1",
            );
        }
        if u.max_pending < u.batch_size {
            return bad("usage.max_pending", "must be at least usage.batch_size");
        }
        if u.retention_days == 0 {
            return bad("usage.retention_days", "must be at least 1");
        }
        Ok(())
    }

    /// Which store to open.
    pub fn store_spec(&self) -> Result<StoreSpec, ConfigError> {
        let s = self.store.trim();
        if s.is_empty() || s == "embedded" {
            Ok(StoreSpec::Embedded)
        } else if s.starts_with("redis://") || s.starts_with("rediss://") {
            Ok(StoreSpec::Redis(s.to_owned()))
        } else {
            Err(ConfigError::Value {
                key: "store",
                message: "expected `embedded` or a redis:// URL".to_owned(),
            })
        }
    }

    /// How many serving threads to run: [`Config::workers`], or one per CPU core when it is 0.
    pub fn serving_threads(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            n => n,
        }
    }

    /// How long a shutdown waits for open requests ([`Config::shutdown_grace_secs`]).
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// Where the admin token lives.
    pub fn admin_token_path(&self) -> PathBuf {
        self.admin_token_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("admin.token"))
    }
}

/// toml's message for a parse error of `text`. A few errors come without one (a control character
/// in a comment, found by the fuzz bench), which left the error saying nothing at all; those get
/// their position at least.
fn describe_toml_error(e: &toml::de::Error, text: &str) -> String {
    if !e.message().trim().is_empty() {
        return e.message().to_owned();
    }
    let Some(before) = e.span().and_then(|span| text.get(..span.start)) else {
        return "invalid TOML".to_owned();
    };
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    format!("invalid TOML at line {line}, column {column}")
}

// ------------------------------------------------------------------------------------------------
// `[server]`: client connections. One block, so that it merges cleanly with other changes here.

/// Open-file limit assumed when the real one cannot be read (not Linux, or no `/proc`).
const ASSUMED_OPEN_FILE_LIMIT: u64 = 20_000;
/// Descriptors kept for relayd itself (store, logs, runtimes, listeners) when the connection cap
/// is derived from the open-file limit.
const RESERVED_FILES: u64 = 64;
/// Longest read timeout accepted, in seconds (a day); beyond it a typo is likelier.
const MAX_READ_TIMEOUT_SECS: u64 = 86_400;

/// `[server]`: how long a client may take to send a request, how long an idle keep-alive
/// connection is kept, and how many connections are served at once.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Longest time from a connection's opening, or from the first byte of a request, until its
    /// request line and headers are complete; then the connection is closed.
    pub header_read_timeout_secs: u64,
    /// Longest time from the end of a request's head until its body is complete; then the
    /// request is answered 408 and the connection closed.
    pub body_read_timeout_secs: u64,
    /// Longest time a keep-alive connection may sit idle between an answer and the next request.
    pub keep_alive_idle_secs: u64,
    /// Most client connections served at once; further ones wait, unaccepted, until one closes.
    /// 0 (the default) derives it from the open-file limit: half of it less 64, since each
    /// relayed request holds a client and an upstream socket.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 30,
            body_read_timeout_secs: 60,
            keep_alive_idle_secs: 75,
            max_connections: 0,
        }
    }
}

impl ServerConfig {
    fn check(&self) -> Result<(), ConfigError> {
        for (key, secs) in [
            (
                "server.header_read_timeout_secs",
                self.header_read_timeout_secs,
            ),
            ("server.body_read_timeout_secs", self.body_read_timeout_secs),
            ("server.keep_alive_idle_secs", self.keep_alive_idle_secs),
        ] {
            if !(1..=MAX_READ_TIMEOUT_SECS).contains(&secs) {
                return Err(ConfigError::Value {
                    key,
                    message: format!(
                        "{secs} is out of range (1 to {MAX_READ_TIMEOUT_SECS} seconds)"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Header read timeout.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    /// Body read timeout.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_secs(self.body_read_timeout_secs)
    }

    /// Keep-alive idle timeout.
    pub fn keep_alive_idle(&self) -> Duration {
        Duration::from_secs(self.keep_alive_idle_secs)
    }

    /// The connection cap in effect: [`ServerConfig::max_connections`], or when that is 0, half
    /// the process's open-file limit less [`RESERVED_FILES`] (at least 16).
    pub fn connection_cap(&self) -> usize {
        if self.max_connections > 0 {
            return self.max_connections;
        }
        let files = open_file_limit().unwrap_or(ASSUMED_OPEN_FILE_LIMIT);
        let cap = (files.saturating_sub(RESERVED_FILES) / 2).max(16);
        usize::try_from(cap).unwrap_or(usize::MAX)
    }
}

/// The soft limit on open files of this process, from `/proc/self/limits` (no unsafe
/// `getrlimit` in this crate); `None` where that cannot be read or says `unlimited`.
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_file_limit(&limits)
}

/// The soft "Max open files" value of a `/proc/<pid>/limits` text.
fn parse_open_file_limit(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

// ------------------------------------------------------------------------------------------------

/// Interprets an environment value as a TOML scalar when it parses as one (`900`, `true`),
/// otherwise as a string (`127.0.0.1:3000`, `redis://…`).
fn env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_table())
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set_path(table: &mut toml::Table, path: &[&str], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Err("empty key".to_owned()),
        [last] => {
            table.insert((*last).to_owned(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = table
                .entry((*first).to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(inner) => set_path(inner, rest, value),
                _ => Err(format!("`{first}` is not a section")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_without_anything() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:3000");
        assert_eq!(c.data_dir, PathBuf::from("./relayd-data"));
        assert_eq!(c.store_spec().unwrap(), StoreSpec::Embedded);
        assert_eq!(c.max_body_bytes, 32 * 1024 * 1024);
    }

    #[test]
    fn env_overrides_file_and_nests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relayd.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:4000\"\n[timeouts]\nidle_secs = 5\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&path),
            env(&[
                ("RELAYD_LISTEN", "0.0.0.0:5000"),
                ("RELAYD_TIMEOUTS__FIRST_BYTE_SECS", "900"),
                ("RELAYD_STORE", "redis://127.0.0.1:6379/0"),
                ("RELAYD_ENCRYPTION_KEY", "ignored-here"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:5000");
        assert_eq!(c.timeouts.idle_secs, 5);
        assert_eq!(c.timeouts.first_byte_secs, 900);
        assert_eq!(
            c.store_spec().unwrap(),
            StoreSpec::Redis("redis://127.0.0.1:6379/0".into())
        );
    }

    #[test]
    fn routing_section_from_file_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relayd.toml");
        std::fs::write(
            &path,
            "[routing]\nqueue_size = 7\ndefault_route = [\"fallback\"]\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&path),
            env(&[("RELAYD_ROUTING__COOLDOWN_AUTH_SECS", "5")]),
        )
        .unwrap();
        assert_eq!(c.routing.queue_size, 7);
        assert_eq!(c.routing.default_route, ["fallback"]);
        assert_eq!(c.routing.cooldown_auth_secs, 5);
        assert_eq!(c.routing.max_attempts, 3);
        let err = Config::load(None, env(&[("RELAYD_ROUTING__QUEUE_SIZ", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("queue_siz"), "{err}");
        let err = Config::load(None, env(&[("RELAYD_ROUTING__MAX_ATTEMPTS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("routing.max_attempts"), "{err}");
    }

    #[test]
    fn the_retry_after_ceiling_defaults_to_ten_minutes_and_is_checked() {
        assert_eq!(Routing::default().max_retry_after_secs, 600);
        assert_eq!(Routing::default().longest_cooldown_secs(), 600);
        let auth_longest = Routing {
            cooldown_auth_secs: 3600,
            ..Routing::default()
        };
        assert_eq!(auth_longest.longest_cooldown_secs(), 3600);
        let c = Config::load(None, env(&[("RELAYD_ROUTING__MAX_RETRY_AFTER_SECS", "60")])).unwrap();
        assert_eq!(c.routing.max_retry_after_secs, 60);
        let err = Config::load(None, env(&[("RELAYD_ROUTING__MAX_RETRY_AFTER_SECS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("routing.max_retry_after_secs"), "{err}");
    }

    #[test]
    fn unknown_file_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relayd.toml");
        std::fs::write(&path, "lisen = \"127.0.0.1:4000\"\n").unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains("lisen"), "{err}");
        assert!(err.contains("relayd.toml"), "{err}");
    }

    #[test]
    fn unknown_env_key_is_named() {
        let err = Config::load(None, env(&[("RELAYD_LISTN", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("RELAYD_LISTN"), "{err}");
        assert!(err.contains("listn"), "{err}");
    }

    #[test]
    fn usage_section_has_defaults_and_is_checked() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.usage.flush_interval_ms, 1000);
        assert_eq!(c.usage.retention_days, 30);
        let c = Config::load(None, env(&[("RELAYD_USAGE__RETENTION_DAYS", "90")])).unwrap();
        assert_eq!(c.usage.retention(), Duration::from_secs(90 * 86_400));
        let err = Config::load(None, env(&[("RELAYD_USAGE__FLUSH_INTERVAL_MS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("usage.flush_interval_ms"), "{err}");
        let err = Config::load(None, env(&[("RELAYD_USAGE__FLUSH_EVERY", "5")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("flush_every"), "{err}");
    }

    /// Found by the fuzz bench: a variable nested thousands of levels deep overflowed the stack.
    #[test]
    fn deeply_nested_env_keys_are_rejected_not_built() {
        let deep = format!("RELAYD_{}", vec!["TIMEOUTS"; 50_000].join("__"));
        let err = Config::load(None, vec![(deep.clone(), "1".to_owned())])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "environment variable {deep}: unknown key: nested 50000 levels deep (configuration keys have at most 2)"
            )
        );
        // Up to the limit, the key is read and serde names what is wrong with it.
        let var = format!("RELAYD_{}", vec!["TIMEOUTS"; 16].join("__"));
        let err = Config::load(None, vec![(var, "1".to_owned())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `timeouts`"), "{err}");
    }

    #[test]
    fn workers_default_to_one_per_core_and_are_bounded() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.workers, 0);
        assert!(c.serving_threads() >= 1);
        let c = Config::load(None, env(&[("RELAYD_WORKERS", "3")])).unwrap();
        assert_eq!(c.serving_threads(), 3);
        let err = Config::load(None, env(&[("RELAYD_WORKERS", "100000")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`workers`") && err.contains("1024"), "{err}");
    }

    #[test]
    fn text_and_file_load_alike() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relayd.toml");
        let text = "lisen = 1\n";
        std::fs::write(&path, text).unwrap();
        let from_file = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        let name = path.display().to_string();
        let from_text = Config::from_toml_str(text, &name, env(&[]))
            .unwrap_err()
            .to_string();
        assert_eq!(from_file, from_text);
        let c = Config::from_toml_str("workers = 2\n", "x.toml", env(&[])).unwrap();
        assert_eq!(c.workers, 2);
    }

    /// Found by the fuzz bench: toml gives no message for this one, and the error said nothing.
    #[test]
    fn parse_errors_without_a_message_give_the_position() {
        let err = Config::from_toml_str("#\0", "x.toml", env(&[]))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "config file x.toml: invalid TOML at line 1, column 2");
        let err = Config::from_toml_str("workers = 1\n  # é\0", "x.toml", env(&[]))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "config file x.toml: invalid TOML at line 2, column 6");
    }

    #[test]
    fn server_section_has_defaults_and_is_checked() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.server, ServerConfig::default());
        assert_eq!(c.server.header_read_timeout(), Duration::from_secs(30));
        assert!(!c.allow_link_local_endpoints);
        let c = Config::load(
            None,
            env(&[
                ("RELAYD_SERVER__KEEP_ALIVE_IDLE_SECS", "5"),
                ("RELAYD_SERVER__MAX_CONNECTIONS", "7"),
                ("RELAYD_ALLOW_LINK_LOCAL_ENDPOINTS", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.keep_alive_idle(), Duration::from_secs(5));
        assert_eq!(c.server.connection_cap(), 7);
        assert!(c.allow_link_local_endpoints);
        let err = Config::load(None, env(&[("RELAYD_SERVER__BODY_READ_TIMEOUT_SECS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.body_read_timeout_secs"), "{err}");
        let err = Config::load(None, env(&[("RELAYD_SERVER__HEADER_TIMEOUT", "5")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("header_timeout"), "{err}");
    }

    #[test]
    fn the_connection_cap_is_derived_from_the_open_file_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63398                63398                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_file_limit(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_file_limit(unlimited), None);
        let derived = ServerConfig::default().connection_cap();
        match open_file_limit() {
            Some(files) => assert_eq!(
                derived as u64,
                (files.saturating_sub(RESERVED_FILES) / 2).max(16)
            ),
            None => assert_eq!(
                derived as u64,
                (ASSUMED_OPEN_FILE_LIMIT - RESERVED_FILES) / 2
            ),
        }
    }

    #[test]
    fn example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/relayd.toml");
        let c = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(c.usage, UsageConfig::default());
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::load(None, env(&[("RELAYD_LISTEN", "nonsense")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("RELAYD_LISTEN"), "{err}");
        let err = Config::load(None, env(&[("RELAYD_STORE", "postgres://x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("store"), "{err}");
    }
}
