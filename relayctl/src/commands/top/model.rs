//! What `top` shows, worked out from the latest snapshot and the one before it: one row per
//! account and per key with rates over the time between the two, filtered and sorted, plus the
//! keys a person presses. Plain data and no terminal, so all of it is unit-tested here.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use shared::admin::{Snapshot, SnapshotAccount, SnapshotKey};

use crate::cli::{TopArgs, TopSort};
use crate::output::snapshot::{StateKind, live_state_text, server_text};

/// What a key press asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    /// Keep going.
    Continue,
    /// Leave `top`.
    Quit,
}

/// One account's line.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct AccountRow {
    /// Account name.
    pub name: String,
    /// `ok`, `full`, `disabled`, or `cooling 12s (HTTP 500)`.
    pub state: String,
    /// For colour and for sorting by state.
    pub kind: StateKind,
    /// Requests holding a slot.
    pub in_flight: u32,
    /// Its slots.
    pub concurrency: u32,
    /// Requests answered per second; `None` until two snapshots were seen.
    pub requests: Option<f64>,
    /// Failed attempts per second.
    pub errors: Option<f64>,
    /// Median time to first byte of the 2xx answers in between, in seconds.
    pub ttfb_p50: Option<f64>,
    /// Output tokens per second.
    pub tokens: Option<f64>,
    /// Its priority.
    pub priority: u8,
    /// The profile's server family and context window, `-` when unknown.
    pub server: String,
}

/// One relay key's line.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct KeyRow {
    /// Key name.
    pub name: String,
    /// `active`, `disabled` or `expired`.
    pub state: String,
    /// Requests per second; `None` until two snapshots were seen.
    pub requests: Option<f64>,
    /// Tokens used this UTC day, when known.
    pub tokens_today: Option<u64>,
    /// Its `tokensPerDay` limit.
    pub tokens_per_day: Option<u64>,
}

/// A snapshot and when it arrived (countdowns run on from the server's `at` by the time since).
#[derive(Debug)]
struct Received {
    snapshot: Snapshot,
    at: Instant,
}

/// The state of the view between frames.
#[derive(Debug)]
pub(super) struct Top {
    /// The server being watched, for the banner.
    pub server: String,
    /// Time between refreshes.
    pub interval: Duration,
    /// Column the accounts are sorted by.
    pub sort: TopSort,
    /// Names must contain this (case-insensitive).
    pub filter: String,
    /// Whether key presses are typing into the filter.
    pub editing_filter: bool,
    /// First account row shown (clamped when drawn).
    pub scroll: usize,
    /// Why the last refresh failed, while it keeps failing.
    pub lost: Option<String>,
    latest: Option<Received>,
    previous: Option<Snapshot>,
}

impl Top {
    /// A view of `server` with the command line's settings, before any snapshot arrived.
    pub(super) fn new(args: &TopArgs, server: String) -> Self {
        Self {
            server,
            interval: args.interval,
            sort: args.sort,
            filter: args.filter.clone().unwrap_or_default(),
            editing_filter: false,
            scroll: 0,
            lost: None,
            latest: None,
            previous: None,
        }
    }

    /// The latest snapshot, if one arrived.
    pub(super) fn latest(&self) -> Option<&Snapshot> {
        self.latest.as_ref().map(|r| &r.snapshot)
    }

    /// How long ago the latest snapshot arrived.
    pub(super) fn age(&self, now: Instant) -> Option<Duration> {
        self.latest
            .as_ref()
            .map(|r| now.saturating_duration_since(r.at))
    }

    /// A refresh arrived at `now`: a snapshot, or why there is none.
    pub(super) fn update(&mut self, result: Result<Snapshot, String>, now: Instant) {
        match result {
            Ok(snapshot) => {
                self.lost = None;
                let previous = self.latest.take().map(|r| r.snapshot);
                // A restarted relayd counts from zero again: no rates across the restart.
                self.previous = previous.filter(|p| {
                    p.server.uptime_seconds <= snapshot.server.uptime_seconds && p.at < snapshot.at
                });
                self.latest = Some(Received { snapshot, at: now });
            }
            Err(why) => self.lost = Some(why),
        }
    }

    /// Handles a key press.
    pub(super) fn on_key(&mut self, key: KeyEvent) -> Flow {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Flow::Quit;
        }
        if self.editing_filter {
            match key.code {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.filter.clear();
                    self.editing_filter = false;
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                    self.filter.push(c);
                    self.scroll = 0;
                }
                _ => {}
            }
            return Flow::Continue;
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Flow::Quit,
            KeyCode::Char('s') => self.sort = next_sort(self.sort),
            KeyCode::Char('/') => self.editing_filter = true,
            KeyCode::Up => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::Down => self.scroll = self.scroll.saturating_add(1),
            KeyCode::PageUp => self.scroll = self.scroll.saturating_sub(10),
            KeyCode::PageDown => self.scroll = self.scroll.saturating_add(10),
            KeyCode::Home => self.scroll = 0,
            KeyCode::End => self.scroll = usize::MAX,
            _ => {}
        }
        Flow::Continue
    }

    /// The account rows to show at `now`: filtered, sorted.
    pub(super) fn accounts(&self, now: Instant) -> Vec<AccountRow> {
        let Some(latest) = &self.latest else {
            return Vec::new();
        };
        let elapsed = now.saturating_duration_since(latest.at);
        let server_now = latest
            .snapshot
            .at
            .saturating_add(i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX));
        let window = self.window();
        let before: HashMap<_, _> = self
            .previous
            .iter()
            .flat_map(|p| &p.accounts)
            .map(|a| (&a.id, a))
            .collect();
        let bounds = &latest.snapshot.ttfb_bounds;
        let mut rows: Vec<AccountRow> = latest
            .snapshot
            .accounts
            .iter()
            .filter(|a| self.shows(&a.name))
            .map(|a| {
                let then = before.get(&a.id).copied();
                let (state, kind) = live_state_text(&a.state, server_now);
                AccountRow {
                    name: a.name.clone(),
                    state,
                    kind,
                    in_flight: a.in_flight,
                    concurrency: a.concurrency,
                    requests: rate(a, then, window, |a| a.requests),
                    errors: rate(a, then, window, |a| a.failed_attempts),
                    ttfb_p50: then.and_then(|t| a.ttfb.since(&t.ttfb).quantile(bounds, 0.5)),
                    tokens: rate(a, then, window, |a| a.tokens.output_tokens),
                    priority: a.priority,
                    server: server_text(a.family, a.context_window),
                }
            })
            .collect();
        rows.sort_by(|a, b| compare(self.sort, a, b));
        rows
    }

    /// The key rows to show: filtered, in the snapshot's order (oldest key first).
    pub(super) fn keys(&self) -> Vec<KeyRow> {
        let Some(latest) = &self.latest else {
            return Vec::new();
        };
        let window = self.window();
        let before: HashMap<_, _> = self
            .previous
            .iter()
            .flat_map(|p| &p.keys)
            .map(|k| (&k.id, k))
            .collect();
        latest
            .snapshot
            .keys
            .iter()
            .filter(|k| self.shows(&k.name))
            .map(|k: &SnapshotKey| KeyRow {
                name: k.name.clone(),
                state: k.state.clone(),
                requests: window
                    .zip(before.get(&k.id))
                    .map(|(secs, then)| k.requests.saturating_sub(then.requests) as f64 / secs),
                tokens_today: k.tokens_today,
                tokens_per_day: k.tokens_per_day,
            })
            .collect()
    }

    /// Seconds between the two snapshots, when there are two.
    fn window(&self) -> Option<f64> {
        let latest = self.latest.as_ref()?;
        let previous = self.previous.as_ref()?;
        let millis = latest.snapshot.at - previous.at;
        (millis > 0).then(|| millis as f64 / 1000.0)
    }

    fn shows(&self, name: &str) -> bool {
        self.filter.is_empty() || name.to_lowercase().contains(&self.filter.to_lowercase())
    }
}

/// Per second of `window`, the growth of `counter` since `then`.
fn rate(
    now: &SnapshotAccount,
    then: Option<&SnapshotAccount>,
    window: Option<f64>,
    counter: impl Fn(&SnapshotAccount) -> u64,
) -> Option<f64> {
    let (then, secs) = (then?, window?);
    Some(counter(now).saturating_sub(counter(then)) as f64 / secs)
}

/// The sort after `sort`, wrapping around.
pub(super) fn next_sort(sort: TopSort) -> TopSort {
    match sort {
        TopSort::Name => TopSort::State,
        TopSort::State => TopSort::InFlight,
        TopSort::InFlight => TopSort::Requests,
        TopSort::Requests => TopSort::Errors,
        TopSort::Errors => TopSort::Ttfb,
        TopSort::Ttfb => TopSort::Tokens,
        TopSort::Tokens => TopSort::Name,
    }
}

/// Rows in `sort` order: names A to Z, anything else largest (or most troubled) first, unknown
/// rates last, ties by name.
fn compare(sort: TopSort, a: &AccountRow, b: &AccountRow) -> Ordering {
    let larger_first = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    let by = match sort {
        TopSort::Name => Ordering::Equal,
        TopSort::State => a.kind.cmp(&b.kind),
        TopSort::InFlight => b.in_flight.cmp(&a.in_flight),
        TopSort::Requests => larger_first(a.requests, b.requests),
        TopSort::Errors => larger_first(a.errors, b.errors),
        TopSort::Ttfb => larger_first(a.ttfb_p50, b.ttfb_p50),
        TopSort::Tokens => larger_first(a.tokens, b.tokens),
    };
    by.then_with(|| a.name.cmp(&b.name))
}

/// The column header that `sort` orders by, for the footer.
pub(super) fn sort_name(sort: TopSort) -> &'static str {
    match sort {
        TopSort::Name => "name",
        TopSort::State => "state",
        TopSort::InFlight => "in flight",
        TopSort::Requests => "req/s",
        TopSort::Errors => "err/s",
        TopSort::Ttfb => "p50 ttfb",
        TopSort::Tokens => "out tok/s",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::crossterm::event::KeyEventKind;
    use shared::account::AccountId;
    use shared::admin::{LatencyHistogram, LiveState, SnapshotServer};
    use shared::usage::TokenCounts;

    fn account(name: &str, requests: u64, output: u64, state: LiveState) -> SnapshotAccount {
        SnapshotAccount {
            id: AccountId(format!("acc_{name}")),
            name: name.to_owned(),
            enabled: true,
            state,
            in_flight: 1,
            concurrency: 4,
            priority: 50,
            family: None,
            context_window: None,
            requests,
            errors: 0,
            failed_attempts: requests / 10,
            tokens: TokenCounts {
                input_tokens: 0,
                output_tokens: output,
                cache_read_tokens: 0,
            },
            ttfb: LatencyHistogram {
                buckets: vec![requests, requests],
                count: requests,
                sum_seconds: 0.0,
            },
            latency_seconds_total: 0.0,
        }
    }

    fn snapshot(at: i64, uptime: u64, accounts: Vec<SnapshotAccount>) -> Snapshot {
        Snapshot {
            at,
            server: SnapshotServer {
                version: "0".into(),
                uptime_seconds: uptime,
                store: "embedded".into(),
                in_flight: 0,
                queue_depth: 0,
            },
            ttfb_bounds: vec![0.1, 1.0],
            accounts,
            keys: Vec::new(),
        }
    }

    fn args() -> TopArgs {
        TopArgs {
            interval: Duration::from_secs(1),
            once: false,
            sort: TopSort::Name,
            filter: None,
        }
    }

    fn press(top: &mut Top, code: KeyCode) -> Flow {
        top.on_key(KeyEvent::new_with_kind(
            code,
            KeyModifiers::NONE,
            KeyEventKind::Press,
        ))
    }

    #[test]
    fn rates_come_from_two_snapshots_and_restart_with_the_server() {
        let mut top = Top::new(&args(), "http://x".into());
        let t0 = Instant::now();
        top.update(
            Ok(snapshot(
                10_000,
                5,
                vec![account("a", 10, 100, LiveState::Ok)],
            )),
            t0,
        );
        let rows = top.accounts(t0);
        assert_eq!(rows[0].requests, None, "one snapshot: no rate yet");
        top.update(
            Ok(snapshot(
                12_000,
                7,
                vec![account("a", 30, 500, LiveState::Ok)],
            )),
            t0,
        );
        let row = &top.accounts(t0)[0];
        assert_eq!(row.requests, Some(10.0));
        assert_eq!(row.errors, Some(1.0));
        assert_eq!(row.tokens, Some(200.0));
        assert_eq!(row.ttfb_p50, Some(0.05), "20 answers, all under 0.1 s");
        // A restarted relayd (uptime went down): counters start again, no rate across it.
        top.update(
            Ok(snapshot(
                13_000,
                1,
                vec![account("a", 2, 10, LiveState::Ok)],
            )),
            t0,
        );
        assert_eq!(top.accounts(t0)[0].requests, None);
        // A failed refresh keeps the data and says why.
        top.update(Err("cannot reach relayd".into()), t0);
        assert_eq!(top.lost.as_deref(), Some("cannot reach relayd"));
        assert_eq!(top.accounts(t0).len(), 1);
    }

    #[test]
    fn a_cooldown_counts_down_from_the_servers_clock() {
        let mut top = Top::new(&args(), "http://x".into());
        let t0 = Instant::now();
        let cooling = LiveState::CoolingDown {
            until: 100_000 + 12_000,
            reason: "HTTP 500".into(),
        };
        top.update(
            Ok(snapshot(100_000, 5, vec![account("a", 0, 0, cooling)])),
            t0,
        );
        assert_eq!(top.accounts(t0)[0].state, "cooling 12s (HTTP 500)");
        let later = t0 + Duration::from_millis(2_500);
        assert_eq!(top.accounts(later)[0].state, "cooling 10s (HTTP 500)");
    }

    #[test]
    fn keys_sort_filter_scroll_and_quit() {
        let mut top = Top::new(&args(), "http://x".into());
        let t0 = Instant::now();
        top.update(
            Ok(snapshot(
                1_000,
                5,
                vec![
                    account("beta", 0, 0, LiveState::Ok),
                    account("alpha", 0, 0, LiveState::Full),
                    account("gamma", 0, 0, LiveState::Disabled),
                ],
            )),
            t0,
        );
        let names =
            |top: &Top| -> Vec<String> { top.accounts(t0).into_iter().map(|r| r.name).collect() };
        assert_eq!(names(&top), ["alpha", "beta", "gamma"]);
        assert_eq!(press(&mut top, KeyCode::Char('s')), Flow::Continue);
        assert_eq!(top.sort, TopSort::State);
        assert_eq!(
            names(&top),
            ["alpha", "gamma", "beta"],
            "full, disabled, ok"
        );
        // `/` types a filter; Enter keeps it, Esc clears it.
        press(&mut top, KeyCode::Char('/'));
        press(&mut top, KeyCode::Char('A'));
        press(&mut top, KeyCode::Char('m'));
        assert_eq!(names(&top), ["gamma"], "case-insensitive");
        press(&mut top, KeyCode::Backspace);
        assert_eq!(names(&top), ["alpha", "gamma", "beta"]);
        press(&mut top, KeyCode::Enter);
        assert!(!top.editing_filter);
        assert_eq!(top.filter, "A");
        press(&mut top, KeyCode::Char('/'));
        press(&mut top, KeyCode::Esc);
        assert_eq!(top.filter, "");
        // `q` typed into the filter is text; outside it, it quits.
        press(&mut top, KeyCode::Char('/'));
        assert_eq!(press(&mut top, KeyCode::Char('q')), Flow::Continue);
        press(&mut top, KeyCode::Enter);
        press(&mut top, KeyCode::Down);
        press(&mut top, KeyCode::Down);
        press(&mut top, KeyCode::Up);
        assert_eq!(top.scroll, 1);
        press(&mut top, KeyCode::Home);
        assert_eq!(top.scroll, 0);
        assert_eq!(press(&mut top, KeyCode::Char('q')), Flow::Quit);
        assert_eq!(press(&mut top, KeyCode::Esc), Flow::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        top.editing_filter = true;
        assert_eq!(top.on_key(ctrl_c), Flow::Quit, "even while typing a filter");
        // Every column comes round again.
        let mut sort = TopSort::Name;
        for _ in 0..7 {
            sort = next_sort(sort);
        }
        assert_eq!(sort, TopSort::Name);
    }
}
