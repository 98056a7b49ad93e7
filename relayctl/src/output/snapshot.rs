//! The live snapshot (`GET /admin/v1/snapshot`) for people: `relayctl top --once` as tables, and
//! the cell texts the full-screen `top` shares with them (states with their countdown, rates,
//! durations, tokens against a daily limit).

use std::io;

use comfy_table::CellAlignment;
use shared::admin::{LiveState, Snapshot, SnapshotAccount};
use shared::profile::ServerFamily;
use shared::time::UnixMillis;

use super::{Printer, format_duration, print_table, stdout, table};

/// How an account's state reads, in the order `top` sorts problems first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StateKind {
    /// Skipped until its cooldown ends.
    Cooling,
    /// Every slot taken.
    Full,
    /// Taken out by an operator.
    Disabled,
    /// Taking traffic.
    Ok,
}

impl Printer {
    /// One snapshot: a line about the server, then accounts and keys with their counters since
    /// relayd started (one snapshot has no rates).
    pub fn snapshot(self, snapshot: &Snapshot) -> io::Result<()> {
        if self.is_json() {
            return self.json(snapshot);
        }
        let s = &snapshot.server;
        stdout(&format!(
            "relayd {} ({} store), up {}: {} requests in flight, {} queued\n",
            s.version,
            s.store,
            format_duration(s.uptime_seconds),
            s.in_flight,
            s.queue_depth
        ))?;
        if snapshot.accounts.is_empty() {
            stdout("no accounts; add one with `relayctl add-model` or `relayctl import`\n")?;
        } else {
            let mut accounts = table(&[
                "ACCOUNT",
                "STATE",
                "IN FLIGHT",
                "PRIORITY",
                "SERVER / WINDOW",
                "REQUESTS",
                "ERRORS",
                "FAILED ATTEMPTS",
                "P50 TTFB",
                "INPUT",
                "OUTPUT",
            ]);
            for a in &snapshot.accounts {
                accounts.add_row(vec![
                    a.name.clone(),
                    live_state_text(&a.state, snapshot.at).0,
                    format!("{}/{}", a.in_flight, a.concurrency),
                    a.priority.to_string(),
                    server_text(a.family, a.context_window),
                    a.requests.to_string(),
                    a.errors.to_string(),
                    a.failed_attempts.to_string(),
                    seconds_text(ttfb_p50(snapshot, a)),
                    a.tokens.input_tokens.to_string(),
                    a.tokens.output_tokens.to_string(),
                ]);
            }
            right_align(&mut accounts, 2..4);
            right_align(&mut accounts, 5..11);
            print_table(&accounts)?;
        }
        if snapshot.keys.is_empty() {
            return Ok(());
        }
        let mut keys = table(&["KEY", "STATE", "REQUESTS", "ERRORS", "TOKENS TODAY"]);
        for k in &snapshot.keys {
            keys.add_row(vec![
                k.name.clone(),
                k.state.clone(),
                k.requests.to_string(),
                k.errors.to_string(),
                tokens_today_text(k.tokens_today, k.tokens_per_day),
            ]);
        }
        right_align(&mut keys, 2..5);
        print_table(&keys)
    }
}

/// The median time to first byte of `account`'s 2xx answers since relayd started.
fn ttfb_p50(snapshot: &Snapshot, account: &SnapshotAccount) -> Option<f64> {
    account.ttfb.quantile(&snapshot.ttfb_bounds, 0.5)
}

fn right_align(table: &mut comfy_table::Table, columns: std::ops::Range<usize>) {
    for column in columns {
        if let Some(c) = table.column_mut(column) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// `ok`, `full`, `disabled`, or `cooling 12s (HTTP 500)` with the time left at `now` (the
/// server's clock: a snapshot's `at`, plus the time since it arrived).
pub fn live_state_text(state: &LiveState, now: UnixMillis) -> (String, StateKind) {
    match state {
        LiveState::Ok => ("ok".to_owned(), StateKind::Ok),
        LiveState::Full => ("full".to_owned(), StateKind::Full),
        LiveState::Disabled => ("disabled".to_owned(), StateKind::Disabled),
        LiveState::CoolingDown { until, reason } => {
            // Rounded up: "0s" would read as over while it still runs.
            let left = u64::try_from(until.saturating_sub(now).max(0)).unwrap_or(0);
            let secs = left.div_ceil(1000);
            (
                format!("cooling {} ({reason})", countdown_text(secs)),
                StateKind::Cooling,
            )
        }
    }
}

/// `45s`, `4m05s`, `2h03m`: short enough for a table cell, exact to the second when it matters.
pub fn countdown_text(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs / 60 % 60),
    }
}

/// A rate with one decimal under 100, whole above; `-` when unknown.
pub fn rate_text(rate: Option<f64>) -> String {
    match rate {
        None => "-".to_owned(),
        Some(r) if r < 100.0 => format!("{r:.1}"),
        Some(r) => format!("{r:.0}"),
    }
}

/// Seconds as `850ms` or `2.4s`; `-` when unknown.
pub fn seconds_text(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".to_owned(),
        Some(s) if s < 1.0 => format!("{:.0}ms", s * 1000.0),
        Some(s) => format!("{s:.1}s"),
    }
}

/// The profile's server family and the context window, as far as they are known:
/// `vllm 32768`, `vllm`, `32768` or `-`.
pub fn server_text(family: Option<ServerFamily>, window: Option<u32>) -> String {
    match (family, window) {
        (Some(f), Some(w)) => format!("{f} {w}"),
        (Some(f), None) => f.to_string(),
        (None, Some(w)) => w.to_string(),
        (None, None) => "-".to_owned(),
    }
}

/// `1234 / 10000 (12%)` against a limit, `1234` without one, `?` when the store did not answer.
pub fn tokens_today_text(today: Option<u64>, limit: Option<u64>) -> String {
    match (today, limit) {
        (None, Some(limit)) => format!("? / {limit}"),
        (None, None) => "?".to_owned(),
        (Some(today), None) => today.to_string(),
        (Some(today), Some(limit)) => {
            let percent = (today as f64 * 100.0 / limit.max(1) as f64).round();
            format!("{today} / {limit} ({percent:.0}%)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_texts() {
        let cooling = LiveState::CoolingDown {
            until: 10_500,
            reason: "HTTP 500".into(),
        };
        assert_eq!(
            live_state_text(&cooling, 0),
            ("cooling 11s (HTTP 500)".to_owned(), StateKind::Cooling)
        );
        assert_eq!(live_state_text(&cooling, 20_000).0, "cooling 0s (HTTP 500)");
        assert_eq!(live_state_text(&LiveState::Full, 0).0, "full");
        assert_eq!(countdown_text(245), "4m05s");
        assert_eq!(countdown_text(7380), "2h03m");
        assert_eq!(rate_text(None), "-");
        assert_eq!(rate_text(Some(2.345)), "2.3");
        assert_eq!(rate_text(Some(1234.5)), "1234");
        assert_eq!(seconds_text(Some(0.85)), "850ms");
        assert_eq!(seconds_text(Some(2.44)), "2.4s");
        assert_eq!(
            tokens_today_text(Some(1234), Some(10_000)),
            "1234 / 10000 (12%)"
        );
        assert_eq!(tokens_today_text(Some(5), None), "5");
        assert_eq!(
            server_text(Some(ServerFamily::LlamaCpp), Some(8192)),
            "llama.cpp 8192"
        );
        assert_eq!(server_text(Some(ServerFamily::Vllm), None), "vllm");
        assert_eq!(server_text(None, Some(4096)), "4096");
        assert_eq!(server_text(None, None), "-");
        assert_eq!(tokens_today_text(None, Some(10)), "? / 10");
    }
}
