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

mod sections;
mod server;
#[cfg(test)]
mod tests;

pub use sections::{
    ContextConfig, MetricsConfig, Routing, Timeouts, UiConfig, UpstreamConfig, UsageConfig,
};
pub use server::{ServerConfig, open_file_limit};

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
    /// `embedded` (default), a `redis://` / `rediss://` URL, or a Redis Cluster's seed nodes as
    /// `redis+cluster://[user:password@]host:port,host:port`.
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
    /// Keeping requests inside upstreams' context windows.
    pub context: ContextConfig,
    /// The status page at `/ui/`.
    pub ui: UiConfig,
    // --- Client connections and the upstream address policy (see the block near the end). ---
    /// Client connections: read timeouts and the connection cap.
    pub server: ServerConfig,
    /// Accept account endpoints and proxies at link-local or cloud-metadata addresses
    /// (169.254.0.0/16, fe80::/10, fd00:ec2::254). Off by default: a relay that admins can point
    /// anywhere must not become a way to read the host's cloud credentials.
    pub allow_link_local_endpoints: bool,
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
            context: ContextConfig::default(),
            ui: UiConfig::default(),
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

/// The command line's settings, the last layer over file and environment (`relayd --listen …`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Replaces `listen`.
    pub listen: Option<SocketAddr>,
    /// Replaces `data_dir`.
    pub data_dir: Option<PathBuf>,
    /// Replaces `store` (checked: `embedded`, a redis:// or a redis+cluster:// URL).
    pub store: Option<String>,
    /// Replaces `log_format`.
    pub log_format: Option<LogFormat>,
}

/// Loads the configuration the way start-up and every `SIGHUP` do: defaults ← the file at
/// `path` (if any) ← the process's `RELAYD_*` variables ← `overrides`.
pub fn load_config(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    let mut config = Config::load(path, std::env::vars())?;
    if let Some(listen) = overrides.listen {
        config.listen = listen;
    }
    if let Some(dir) = &overrides.data_dir {
        config.data_dir.clone_from(dir);
    }
    if let Some(store) = &overrides.store {
        config.store.clone_from(store);
        config.store_spec()?;
    }
    if let Some(format) = overrides.log_format {
        config.log_format = format;
    }
    Ok(config)
}

/// What the store setting selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// redb file in the data directory.
    Embedded,
    /// Redis at this URL: one server (`redis://`, `rediss://`) or a cluster's seed nodes
    /// (`redis+cluster://host:port,host:port`).
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
        let bound = self.routing.affinity_load_bound;
        if !(bound.is_finite() && bound >= 0.0) {
            return Err(ConfigError::Value {
                key: "routing.affinity_load_bound",
                message: format!("{bound} is not a share of concurrency (0 or more, e.g. 0.25)"),
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
        self.check_ui()?;
        Ok(())
    }

    fn check_ui(&self) -> Result<(), ConfigError> {
        // A year at most: a stolen cookie must not outlive every rotation plan.
        if !(1..=8760).contains(&self.ui.session_hours) {
            return Err(ConfigError::Value {
                key: "ui.session_hours",
                message: format!(
                    "{} is out of range (1 to 8760, a year)",
                    self.ui.session_hours
                ),
            });
        }
        if let Some(path) = &self.ui.viewer_token_file
            && path.as_os_str().is_empty()
        {
            return Err(ConfigError::Value {
                key: "ui.viewer_token_file",
                message: "is empty; name a file or leave the key out".to_owned(),
            });
        }
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
        } else if ["redis://", "rediss://", "redis+cluster://"]
            .iter()
            .any(|scheme| s.starts_with(scheme))
        {
            Ok(StoreSpec::Redis(s.to_owned()))
        } else {
            Err(ConfigError::Value {
                key: "store",
                message:
                    "expected `embedded`, a redis:// URL or redis+cluster://host:port,host:port"
                        .to_owned(),
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
