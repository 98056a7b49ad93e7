//! Everything relayctl prints goes through here: comfy-table tables for people (`--output text`)
//! and pretty JSON for scripts (`--output json`). Results go to stdout; notes, prompts' summaries
//! and errors go to stderr, so `--output json` stdout is always exactly one JSON document.
//!
//! Writes return `io::Result` instead of panicking like `println!`: a closed pipe
//! (`relayctl accounts list | head -1`) surfaces as `BrokenPipe`, which `run` treats as a quiet exit.
//!
//! Text for people never carries a control character other than a line break: names, models,
//! descriptions and messages come from import files, from relayd's answers and — through usage
//! reports — from any client's model names, and an ESC, CR, BEL or C1 control in them would make
//! the terminal act (clear the screen, retitle the window, overwrite a line). They are shown
//! escaped (`\u{1b}`), cell by cell before a table is laid out (so its columns line up) and once
//! more at the writer. JSON output is left exact: JSON escapes control characters itself, and a
//! script must get the values as they are.
//!
//! [`snapshot`] holds the live snapshot's tables and the cell texts `relayctl top` shares with
//! them. The one thing drawn elsewhere is `top`'s full-screen view: ratatui paints it on the
//! alternate screen (`commands/top`), where line-oriented output has no place.

pub mod snapshot;

use std::borrow::Cow;
use std::io::{self, Write};

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, Table};
use serde::Serialize;
use serde_json::json;
use shared::account::{Account, AccountInput, DEFAULT_CONCURRENCY, DEFAULT_PRIORITY};
use shared::admin::{
    AccountList, AccountState, CooldownReset, KeyList, ModelRoute, RoutingTable, Status,
    TestEndpointReport,
};
use shared::error::FieldError;
use shared::import::ImportReport;
use shared::key::{CreatedKey, RelayKey};
use shared::time::{UnixMillis, now_millis};
use shared::usage::{UsageGroupBy, UsageReport, UsageTotals};

use crate::cli::OutputFormat;

/// Prints results in the chosen format.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    format: OutputFormat,
}

impl Printer {
    /// A printer for `format`.
    pub fn new(format: OutputFormat) -> Self {
        Self { format }
    }

    /// Whether scripts asked for JSON.
    pub fn is_json(self) -> bool {
        self.format == OutputFormat::Json
    }

    /// `value` as pretty JSON on stdout.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> io::Result<()> {
        let mut text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
        text.push('\n');
        write_stdout(text.as_bytes())
    }

    /// The account list: one row per account.
    pub fn account_list(self, list: &AccountList) -> io::Result<()> {
        if self.is_json() {
            return self.json(list);
        }
        if list.accounts.is_empty() {
            return stdout("no accounts; add one with `relayctl add-model` or `relayctl import`\n");
        }
        let mut table = table(&[
            "ID",
            "NAME",
            "KIND",
            "ENDPOINT",
            "DEPLOYMENT",
            "MODELS",
            "PRIORITY",
            "CONCURRENCY",
            "ENABLED",
            "API KEY",
        ]);
        for a in &list.accounts {
            let s = &a.settings;
            add_row(
                &mut table,
                vec![
                    a.id.to_string(),
                    s.name.clone(),
                    s.kind.to_string(),
                    s.endpoint.clone(),
                    s.deployment_name.clone(),
                    s.supported_models.join("\n"),
                    s.priority.to_string(),
                    s.concurrency.to_string(),
                    yes_no(s.enabled).to_owned(),
                    secret_text(a),
                ],
            );
        }
        print_table(&table)
    }

    /// One account in full.
    pub fn account(self, account: &Account) -> io::Result<()> {
        if self.is_json() {
            return self.json(account);
        }
        let s = &account.settings;
        let mut rows = vec![
            ("id", account.id.to_string()),
            ("name", s.name.clone()),
            ("kind", s.kind.to_string()),
            ("endpoint", s.endpoint.clone()),
            ("deployment", s.deployment_name.clone()),
            ("api key", secret_text(account)),
            ("supported models", s.supported_models.join("\n")),
            ("priority", s.priority.to_string()),
            ("concurrency", s.concurrency.to_string()),
            ("enabled", yes_no(s.enabled).to_owned()),
            ("api version", s.api_version.clone()),
            (
                "proxy",
                account.proxy.clone().unwrap_or_else(|| "-".to_owned()),
            ),
        ];
        if let Some(d) = &s.description {
            rows.push(("description", d.clone()));
        }
        rows.push(("created", format_time(account.created_at)));
        rows.push(("updated", format_time(account.updated_at)));
        print_table(&key_value(&rows))
    }

    /// Confirmation that an account was deleted.
    pub fn account_removed(self, id_or_name: &str) -> io::Result<()> {
        if self.is_json() {
            return self.json(&json!({ "removed": id_or_name }));
        }
        stdout(&format!("removed account {id_or_name}\n"))
    }

    /// The outcome of `accounts reset`: which cooldown ended, and whether the account is routable.
    pub fn cooldown_reset(self, reset: &CooldownReset) -> io::Result<()> {
        if self.is_json() {
            return self.json(reset);
        }
        stdout(&cooldown_reset_text(reset))
    }

    /// Local or server-side validation errors of an import file: one row per problem.
    pub fn import_errors(self, file: &str, errors: &[FieldError]) -> io::Result<()> {
        if self.is_json() {
            return self.json(&json!({ "file": file, "valid": false, "errors": errors }));
        }
        let mut table = table(&["ROW", "NAME", "FIELD", "PROBLEM"]);
        for e in errors {
            add_row(
                &mut table,
                vec![
                    e.row.map_or_else(|| "-".to_owned(), |r| r.to_string()),
                    e.name.clone().unwrap_or_else(|| "-".to_owned()),
                    e.field.clone().unwrap_or_else(|| "-".to_owned()),
                    e.message.clone(),
                ],
            );
        }
        print_table(&table)
    }

    /// The per-row result of an import and a summary line.
    pub fn import_report(self, report: &ImportReport) -> io::Result<()> {
        if self.is_json() {
            return self.json(report);
        }
        let mut table = table(&["ROW", "NAME", "RESULT", "DETAIL"]);
        for r in &report.rows {
            add_row(
                &mut table,
                vec![
                    r.row.to_string(),
                    r.name.clone(),
                    r.result.as_str().to_owned(),
                    r.detail.clone(),
                ],
            );
        }
        print_table(&table)?;
        let s = report.summary;
        let prefix = if report.dry_run {
            "dry run, nothing written: would be "
        } else {
            ""
        };
        stdout(&format!(
            "{prefix}{} created, {} updated, {} unchanged, {} failed\n",
            s.created, s.updated, s.unchanged, s.failed
        ))
    }

    /// The routing table: one row per model name, its accounts in routing order.
    pub fn routing_table(self, table: &RoutingTable) -> io::Result<()> {
        if self.is_json() {
            return self.json(table);
        }
        if table.models.is_empty() {
            return stdout(
                "no models are routed; add accounts with `relayctl add-model` or `relayctl import`\n",
            );
        }
        print_table(&routes_table(&table.models))
    }

    /// The routes a request for `model` would try, in order (`models --check`).
    pub fn model_check(self, model: &str, routes: &[ModelRoute]) -> io::Result<()> {
        if self.is_json() {
            return self.json(&json!({ "model": model, "routes": routes }));
        }
        if routes.is_empty() {
            return stdout(&format!("{model} is not served by any account\n"));
        }
        stdout(&format!(
            "{model} is routed as follows (first row wins; exact names before patterns):\n"
        ))?;
        print_table(&routes_table(routes))
    }

    /// Relay keys, without secrets.
    pub fn key_list(self, list: &KeyList) -> io::Result<()> {
        if self.is_json() {
            return self.json(list);
        }
        if list.keys.is_empty() {
            return stdout("no relay keys; create one with `relayctl keys create --name NAME`\n");
        }
        let mut table = table(&[
            "ID", "NAME", "STATE", "MODELS", "ACCOUNTS", "LIMITS", "EXPIRES",
        ]);
        let now = now_millis();
        for k in &list.keys {
            add_row(
                &mut table,
                vec![
                    k.id.to_string(),
                    k.name.clone(),
                    k.refusal(now).unwrap_or("active").to_owned(),
                    all_or(&k.allowed_models),
                    all_or(&k.bound_accounts),
                    limits_text(k),
                    k.expires_at.map_or_else(|| "never".to_owned(), format_time),
                ],
            );
        }
        print_table(&table)
    }

    /// One relay key.
    pub fn key(self, key: &RelayKey) -> io::Result<()> {
        if self.is_json() {
            return self.json(key);
        }
        let rows = [
            ("id", key.id.to_string()),
            ("name", key.name.clone()),
            (
                "state",
                key.refusal(now_millis()).unwrap_or("active").to_owned(),
            ),
            ("allowed models", all_or(&key.allowed_models)),
            ("bound accounts", all_or(&key.bound_accounts)),
            ("limits", limits_text(key)),
            (
                "expires",
                key.expires_at
                    .map_or_else(|| "never".to_owned(), format_time),
            ),
            ("created", format_time(key.created_at)),
        ];
        print_table(&key_value(&rows))
    }

    /// A new key: its secret (the only time it is shown) and how to use it.
    pub fn created_key(self, created: &CreatedKey, server: &str) -> io::Result<()> {
        let anthropic = format!(
            "ANTHROPIC_BASE_URL={server} ANTHROPIC_AUTH_TOKEN={} claude",
            created.secret
        );
        let openai = format!(
            "OPENAI_BASE_URL={server}/v1 OPENAI_API_KEY={}",
            created.secret
        );
        if self.is_json() {
            return self.json(&json!({
                "key": created.key,
                "secret": created.secret,
                "usage": { "anthropic": anthropic, "openai": openai },
            }));
        }
        stdout(&format!(
            "created key {} ({})\n\
             secret (shown only now; store it safely):\n  {}\n\n\
             Claude Code:\n  {anthropic}\n\
             OpenAI-compatible clients:\n  {openai}\n",
            created.key.name, created.key.id, created.secret
        ))
    }

    /// Daemon status.
    pub fn status(self, status: &Status) -> io::Result<()> {
        if self.is_json() {
            return self.json(status);
        }
        let a = status.accounts;
        let rows = [
            ("version", status.version.clone()),
            ("uptime", format_duration(status.uptime_seconds)),
            ("store", status.store.clone()),
            (
                "accounts",
                format!(
                    "{} total: {} up, {} cooling down, {} disabled",
                    a.total, a.up, a.cooling_down, a.disabled
                ),
            ),
            ("active keys", status.active_keys.to_string()),
            ("requests in flight", status.in_flight.to_string()),
        ];
        print_table(&key_value(&rows))
    }

    /// A usage report: one row per group, then the total.
    pub fn usage_report(self, report: &UsageReport) -> io::Result<()> {
        if self.is_json() {
            return self.json(report);
        }
        let q = &report.query;
        let period = match (q.since, q.until) {
            (None, None) => "all recorded usage".to_owned(),
            (Some(s), None) => format!("since {}", format_time(s)),
            (None, Some(u)) => format!("until {}", format_time(u)),
            (Some(s), Some(u)) => format!("{} to {}", format_time(s), format_time(u)),
        };
        let filters: Vec<String> = [
            ("key", &q.key),
            ("account", &q.account),
            ("model", &q.model),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name} {v}")))
        .collect();
        let filters = if filters.is_empty() {
            String::new()
        } else {
            format!(", {}", filters.join(", "))
        };
        stdout(&format!("usage: {period}{filters}\n"))?;
        let group = match q.group_by {
            Some(UsageGroupBy::Key) | None => "KEY",
            Some(UsageGroupBy::Account) => "ACCOUNT",
            Some(UsageGroupBy::Model) => "MODEL",
            Some(UsageGroupBy::Hour) => "HOUR (UTC)",
            Some(UsageGroupBy::Day) => "DAY (UTC)",
        };
        let mut table = table(&[
            group,
            "REQUESTS",
            "ERRORS",
            "INPUT",
            "OUTPUT",
            "CACHE READ",
            "ESTIMATED",
        ]);
        let row = |t: &UsageTotals, name: &str| {
            vec![
                name.to_owned(),
                t.requests.to_string(),
                t.errors.to_string(),
                t.tokens.input_tokens.to_string(),
                t.tokens.output_tokens.to_string(),
                t.tokens.cache_read_tokens.to_string(),
                t.estimated.to_string(),
            ]
        };
        for t in &report.groups {
            add_row(&mut table, row(t, &t.group));
        }
        add_row(&mut table, row(&report.total, "TOTAL"));
        for column in 1..7 {
            if let Some(c) = table.column_mut(column) {
                c.set_cell_alignment(comfy_table::CellAlignment::Right);
            }
        }
        print_table(&table)
    }

    /// The checks of `test-endpoint`: one line per check with ✓/✗, detail and time, the hint
    /// under a failed check, then a summary line.
    pub fn test_report(self, report: &TestEndpointReport) -> io::Result<()> {
        if self.is_json() {
            return self.json(report);
        }
        stdout(&test_report_text(report))
    }

    /// A completion script or other raw text, as is.
    pub fn raw(self, bytes: &[u8]) -> io::Result<()> {
        write_stdout(bytes)
    }
}

/// What `add-model` is about to save, on stderr (before the confirmation prompt).
pub fn account_summary(input: &AccountInput) -> io::Result<()> {
    let models = input
        .supported_models
        .as_ref()
        .map_or_else(|| "the 14 default names".to_owned(), |m| m.join(", "));
    let rows = [
        ("name", input.name.clone()),
        ("endpoint", input.endpoint.clone()),
        ("deployment", input.deployment_name.clone()),
        (
            "api key",
            if input.api_key.is_some() {
                "set"
            } else {
                "none"
            }
            .to_owned(),
        ),
        ("supported models", models),
        (
            "priority",
            input
                .priority
                .unwrap_or(i64::from(DEFAULT_PRIORITY))
                .to_string(),
        ),
        (
            "concurrency",
            input
                .concurrency
                .unwrap_or(i64::from(DEFAULT_CONCURRENCY))
                .to_string(),
        ),
        (
            "kind",
            input.kind.map_or_else(
                || "inferred from the endpoint".to_owned(),
                |k| k.to_string(),
            ),
        ),
    ];
    let mut err = io::stderr().lock();
    writeln!(err, "{}", key_value(&rows))?;
    err.flush()
}

/// The text form of a `test-endpoint` report.
pub fn test_report_text(report: &TestEndpointReport) -> String {
    let t = &report.target;
    let mut text = format!(
        "{}: {} {}, deployment {}{}\n",
        t.name.as_deref().unwrap_or("unsaved settings"),
        t.kind,
        t.endpoint,
        t.deployment_name,
        t.proxy
            .as_deref()
            .map(|p| format!(", via {p}"))
            .unwrap_or_default()
    );
    let width = report
        .checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    for c in &report.checks {
        let mark = if c.ok { '✓' } else { '✗' };
        let timing = if c.skipped {
            String::new()
        } else {
            format!(" ({} ms)", c.millis)
        };
        text.push_str(&format!(
            "{mark} {:<width$}  {}{timing}\n",
            c.name, c.detail
        ));
        if let Some(hint) = &c.hint {
            text.push_str(&format!("  {:<width$}  hint: {hint}\n", ""));
        }
    }
    let failed = report.failed_checks().len();
    if failed == 0 {
        text.push_str(&format!("all {} checks passed\n", report.checks.len()));
    } else {
        text.push_str(&format!(
            "{failed} of {} checks failed\n",
            report.checks.len()
        ));
    }
    text
}

/// A note for the person at the terminal, on stderr.
pub fn note(message: &str) {
    // A failed write to stderr has nowhere better to be reported.
    let _ = writeln!(io::stderr().lock(), "{}", terminal_safe(message));
}

/// The one-line error `relayctl: error: …` on stderr.
pub fn error_line(message: &str) {
    // Keep it one line even if a server message carried newlines.
    let one_line = message.replace(['\n', '\r'], " ");
    let _ = writeln!(
        io::stderr().lock(),
        "relayctl: error: {}",
        terminal_safe(&one_line)
    );
}

/// Text for people on stdout, control characters escaped.
fn stdout(text: &str) -> io::Result<()> {
    write_stdout(terminal_safe(text).as_bytes())
}

fn write_stdout(bytes: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// `text` with every character a terminal would act on escaped the way Rust writes it (`\u{1b}`,
/// `\r`, `\t`): C0 and C1 controls and DEL, except the line break, and the bidirectional
/// overrides and isolates, which reorder what is shown around them. Borrowed when there is none.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    fn acts_on_terminal(c: char) -> bool {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !text.chars().any(acts_on_terminal) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if acts_on_terminal(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Adds a row of cells made terminal-safe before the table measures them.
fn add_row(table: &mut Table, cells: Vec<String>) {
    table.add_row(
        cells
            .into_iter()
            .map(|cell| match terminal_safe(&cell) {
                Cow::Borrowed(_) => cell,
                Cow::Owned(safe) => safe,
            })
            .collect::<Vec<_>>(),
    );
}

fn print_table(table: &Table) -> io::Result<()> {
    stdout(&format!("{table}\n"))
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(header);
    table
}

fn key_value(rows: &[(&str, String)]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    for (k, v) in rows {
        table.add_row(vec![Cell::new(k), Cell::new(terminal_safe(v))]);
    }
    table
}

/// Model rows; each account of a model is one line inside the model's row, in routing order.
fn routes_table(routes: &[ModelRoute]) -> Table {
    let mut table = table(&[
        "MODEL",
        "ACCOUNTS (routing order)",
        "PRIORITY",
        "IN FLIGHT / CONCURRENCY",
        "STATE",
    ]);
    for route in routes {
        let col = |f: &dyn Fn(&shared::admin::RouteEntry) -> String| {
            route.accounts.iter().map(f).collect::<Vec<_>>().join("\n")
        };
        add_row(
            &mut table,
            vec![
                route.model.clone(),
                col(&|e| e.name.clone()),
                col(&|e| e.priority.to_string()),
                col(&|e| format!("{} / {}", e.in_flight, e.concurrency)),
                col(&|e| state_text(&e.state)),
            ],
        );
    }
    table
}

fn cooldown_reset_text(reset: &CooldownReset) -> String {
    let name = &reset.name;
    let mut text = match &reset.ended {
        Some(ended) => format!(
            "account {name}: cooldown ended (it was cooling down until {}: {})\n",
            format_time(ended.until),
            ended.reason
        ),
        None => format!("account {name}: was not cooling down\n"),
    };
    if reset.state == AccountState::Disabled {
        text.push_str(&format!(
            "account {name} is disabled: `relayctl accounts enable {name}` puts it back into routing\n"
        ));
    }
    text
}

fn state_text(state: &AccountState) -> String {
    match state {
        AccountState::Ok => "ok".to_owned(),
        AccountState::Disabled => "disabled".to_owned(),
        AccountState::CoolingDown { until, reason } => {
            format!("cooling down until {} ({reason})", format_time(*until))
        }
    }
}

fn secret_text(account: &Account) -> String {
    match (&account.api_key.set, &account.api_key.last4) {
        (false, _) => "none".to_owned(),
        (true, Some(last4)) => format!("set (…{last4})"),
        (true, None) => "set".to_owned(),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn all_or(list: &[String]) -> String {
    if list.is_empty() {
        "all".to_owned()
    } else {
        list.join(", ")
    }
}

fn limits_text(key: &RelayKey) -> String {
    let l = &key.limits;
    let mut parts = Vec::new();
    if let Some(n) = l.requests_per_minute {
        parts.push(format!("{n} rpm"));
    }
    if let Some(n) = l.tokens_per_day {
        parts.push(format!("{n} tokens/day"));
    }
    if let Some(n) = l.concurrency {
        parts.push(format!("{n} concurrent"));
    }
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

pub(crate) fn format_duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    if d > 0 {
        format!("{d}d {h}h {m}m")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else {
        format!("{m}m {s}s")
    }
}

/// `YYYY-MM-DD HH:MM UTC`, computed here so the CLI needs no date crate.
fn format_time(ms: UnixMillis) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = shared::time::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(format_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_time(1_709_210_096_000), "2024-02-29 12:34 UTC");
    }

    #[test]
    fn a_reset_says_what_ended_and_whether_the_account_routes() {
        let reset = |ended, state| CooldownReset {
            id: shared::account::AccountId("acc_1".into()),
            name: "box".into(),
            ended,
            state,
        };
        let ended = Some(shared::admin::EndedCooldown {
            until: 1_709_210_096_000,
            reason: "HTTP 429".into(),
        });
        assert_eq!(
            cooldown_reset_text(&reset(ended, AccountState::Ok)),
            "account box: cooldown ended (it was cooling down until 2024-02-29 12:34 UTC: HTTP 429)\n"
        );
        let text = cooldown_reset_text(&reset(None, AccountState::Disabled));
        assert!(
            text.starts_with("account box: was not cooling down\n"),
            "{text}"
        );
        assert!(text.contains("relayctl accounts enable box"), "{text}");
    }

    #[test]
    fn terminal_safe_escapes_what_a_terminal_acts_on() {
        assert!(matches!(terminal_safe("plain\nlines ✓"), Cow::Borrowed(_)));
        assert_eq!(
            terminal_safe("a\u{1b}[2Jb\rc\u{7}d\te\u{9b}f\u{7f}g\u{202e}h"),
            "a\\u{1b}[2Jb\\rc\\u{7}d\\te\\u{9b}f\\u{7f}g\\u{202e}h"
        );
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(format_duration(59), "0m 59s");
        assert_eq!(format_duration(3_661), "1h 1m");
        assert_eq!(format_duration(90_061), "1d 1h 1m");
    }
}
