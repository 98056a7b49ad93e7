//! The running process's life after start-up: signals (SIGTERM and Ctrl-C start a bounded drain,
//! a second one stops at once; SIGHUP reloads the configuration), the reloadable log filter, and
//! the key-by-key comparison that says which reloaded settings took effect and which need a
//! restart.
//!
//! Live-reloadable today: `log` and `shutdown_grace_secs`. Everything else is reported as
//! "needs a restart" — notably `timeouts.*`, which the upstream client pool copies at start-up.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{Config, Overrides, load_config};
use crate::state::AppState;
use crate::systemd::Notifier;

/// Keys whose new value takes effect on SIGHUP without a restart.
pub const LIVE_KEYS: &[&str] = &["log", "shutdown_grace_secs"];

/// Replaces the log filter of the running process.
#[derive(Debug, Clone)]
pub struct LogControl {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
}

impl LogControl {
    /// Wraps the handle `init_logging` got from its reloadable filter layer.
    pub fn new(handle: reload::Handle<EnvFilter, Registry>) -> Self {
        Self {
            handle: Some(handle),
        }
    }

    /// A control that changes nothing (for processes that installed no subscriber).
    pub fn none() -> Self {
        Self { handle: None }
    }

    /// Installs `filter` (`tracing` filter syntax) as the new log filter.
    pub fn set_filter(&self, filter: &str) -> Result<(), String> {
        let parsed = EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
        if let Some(handle) = &self.handle {
            handle.reload(parsed).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// One key whose value differs between two configurations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Dotted key, as in the file: `timeouts.idle_secs`.
    pub key: String,
    /// The running value, rendered for a log line (secrets hidden).
    pub old: String,
    /// The new value, rendered the same way.
    pub new: String,
    /// Whether it takes effect without a restart.
    pub live: bool,
}

/// Every key that differs between `old` and `new`, in the order `Config` declares them.
pub fn config_changes(old: &Config, new: &Config) -> Vec<Change> {
    let mut before = Vec::new();
    let mut after = Vec::new();
    flatten(
        "",
        &serde_json::to_value(old).unwrap_or_default(),
        &mut before,
    );
    flatten(
        "",
        &serde_json::to_value(new).unwrap_or_default(),
        &mut after,
    );
    let after: std::collections::BTreeMap<_, _> = after.into_iter().collect();
    before
        .into_iter()
        .filter_map(|(key, old_value)| {
            let new_value = after.get(&key)?;
            (old_value != *new_value).then(|| Change {
                live: LIVE_KEYS.contains(&key.as_str()),
                old: render(&key, &old_value),
                new: render(&key, new_value),
                key,
            })
        })
        .collect()
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_owned(), other.clone())),
    }
}

/// A value for a log line. Secrets are never printed: a Redis URL can carry a password, and the
/// metrics token is a credential.
fn render(key: &str, value: &serde_json::Value) -> String {
    match (key, value) {
        ("store" | "metrics.token", _) => "(not shown)".to_owned(),
        (_, serde_json::Value::Null) => "(unset)".to_owned(),
        (_, v) => v.to_string(),
    }
}

/// Re-reads the configuration the way start-up did (file, then environment, then flags), logs one
/// line per changed key, applies the live ones and publishes the result in
/// [`AppState::live_config`]. An invalid configuration changes nothing.
pub fn reload(
    config_path: Option<&Path>,
    overrides: &Overrides,
    state: &AppState,
    log: &LogControl,
) {
    let new = match load_config(config_path, overrides) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("reload failed, keeping the running configuration: {e:#}");
            return;
        }
    };
    let current = state.live_config.load_full();
    let changes = config_changes(&current, &new);
    // Check the new filter before announcing anything, so a bad one is refused as a whole.
    if changes.iter().any(|c| c.key == "log")
        && let Err(e) = EnvFilter::try_new(&new.log)
    {
        tracing::error!(
            key = "log",
            "reload failed, keeping the running configuration: invalid setting `log` = {:?}: {e}",
            new.log
        );
        return;
    }
    let mut effective = (*current).clone();
    for change in &changes {
        let when = if change.live {
            "takes effect now"
        } else {
            "needs a restart"
        };
        tracing::info!(
            key = %change.key,
            live = change.live,
            "config {}: {} -> {} ({when})",
            change.key,
            change.old,
            change.new
        );
    }
    let restart = changes.iter().filter(|c| !c.live).count();
    tracing::info!(
        changed = changes.len(),
        restart,
        "configuration reloaded: {} changed, {restart} need a restart",
        changes.len()
    );
    effective.shutdown_grace_secs = new.shutdown_grace_secs;
    if effective.log != new.log {
        // Applied last, so the lines above still pass the old filter.
        match log.set_filter(&new.log) {
            Ok(()) => effective.log.clone_from(&new.log),
            Err(e) => tracing::error!(key = "log", "cannot apply `log`: {e}"),
        }
    }
    state.live_config.store(Arc::new(effective));
}

/// The process's signal handlers, registered before relayd announces that it listens so that an
/// early SIGTERM already drains instead of killing it outright.
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Registers SIGTERM, SIGINT and SIGHUP.
    pub fn register() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// What the signal task needs and whom it tells.
#[derive(Debug)]
pub struct SignalContext {
    /// The configuration file to re-read, if any.
    pub config_path: Option<PathBuf>,
    /// The command line's settings, applied over the re-read file and environment.
    pub overrides: Overrides,
    /// Where the live configuration lives.
    pub state: AppState,
    /// The log filter.
    pub log: LogControl,
    /// systemd.
    pub notifier: Notifier,
    /// Cancelled by the first SIGTERM/SIGINT: start draining.
    pub drain: CancellationToken,
    /// Cancelled by the second: stop now.
    pub force: CancellationToken,
    /// Cancelled when the process is done; ends this task.
    pub done: CancellationToken,
}

/// Handles signals until `ctx.done` fires. Run it as a tracked task.
pub async fn handle_signals(mut signals: Signals, ctx: SignalContext) {
    loop {
        let name = tokio::select! {
            () = ctx.done.cancelled() => return,
            _ = signals.term.recv() => "SIGTERM",
            _ = signals.int.recv() => "SIGINT",
            _ = signals.hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                reload(ctx.config_path.as_deref(), &ctx.overrides, &ctx.state, &ctx.log);
                continue;
            }
        };
        if ctx.drain.is_cancelled() {
            tracing::warn!("{name} again: stopping now without waiting for open requests");
            ctx.force.cancel();
        } else {
            let grace = ctx.state.live_config.load().shutdown_grace_secs;
            tracing::info!(
                grace_secs = grace,
                "{name}: shutting down: no new connections, finishing open requests (up to {grace} s)"
            );
            ctx.notifier.stopping("draining open requests");
            ctx.drain.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_listed_per_key_and_classified() {
        let old = Config::default();
        let mut new = Config {
            log: "warn".to_owned(),
            store: "redis://:hunter2@127.0.0.1:6379/0".to_owned(),
            encryption_key_file: Some("/etc/relayd/key".into()),
            ..Config::default()
        };
        new.timeouts.idle_secs = 5;
        let changes = config_changes(&old, &new);
        let keys: Vec<_> = changes.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(
            keys,
            ["store", "encryption_key_file", "log", "timeouts.idle_secs"]
        );
        let log = &changes[2];
        assert!(log.live);
        assert_eq!(
            (log.old.as_str(), log.new.as_str()),
            ("\"info\"", "\"warn\"")
        );
        assert!(!changes[3].live);
        assert_eq!(changes[1].old, "(unset)");
        assert!(changes.iter().all(|c| !c.new.contains("hunter2")));
        assert!(config_changes(&old, &Config::default()).is_empty());
    }

    #[test]
    fn the_example_config_loads_and_spells_out_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/relayd.toml");
        let example = Config::load(Some(std::path::Path::new(path)), Vec::new()).unwrap();
        assert!(config_changes(&Config::default(), &example).is_empty());
    }

    #[test]
    fn an_invalid_filter_is_refused() {
        assert!(LogControl::none().set_filter("relayd=debug").is_ok());
        assert!(LogControl::none().set_filter("relayd=[").is_err());
    }
}
