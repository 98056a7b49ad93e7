//! `[server]`: client connections — read deadlines and the connection cap.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Open-file limit assumed when the real one cannot be read (not Linux, or no `/proc`).
pub(super) const ASSUMED_OPEN_FILE_LIMIT: u64 = 20_000;
/// Descriptors kept for relayd itself (store, logs, runtimes, listeners) when the connection cap
/// is derived from the open-file limit.
pub(super) const RESERVED_FILES: u64 = 64;
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
    pub(super) fn check(&self) -> Result<(), ConfigError> {
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
pub(super) fn parse_open_file_limit(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}
