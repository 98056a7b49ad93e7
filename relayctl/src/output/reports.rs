//! Printing reports: relayd's status, usage totals, and the checks of `test-endpoint`.

use std::io;

use comfy_table::Table;
use shared::admin::{Status, TestEndpointReport};
use shared::usage::{UsageGroupBy, UsageQuery, UsageReport, UsageTotals};

use super::{
    Printer, add_row, format_duration, format_time, key_value, print_table, stdout, table,
};

impl Printer {
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
        stdout(&usage_heading(&report.query))?;
        print_table(&usage_table(report))
    }

    /// The checks of `test-endpoint`: one line per check with ✓/✗, detail and time, the hint
    /// under a failed check, then a summary line.
    pub fn test_report(self, report: &TestEndpointReport) -> io::Result<()> {
        if self.is_json() {
            return self.json(report);
        }
        stdout(&test_report_text(report))
    }
}

/// The line above a usage table: the period and the filters of the query.
fn usage_heading(q: &UsageQuery) -> String {
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
    format!("usage: {period}{filters}\n")
}

/// The usage totals per group and in all, numbers right-aligned.
fn usage_table(report: &UsageReport) -> Table {
    let group = match report.query.group_by {
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
    table
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
    if let Some(profile) = &report.profile {
        text.push_str(&profile_text(profile));
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

/// What the capability probe found, one line per finding; unknowns as `?`.
fn profile_text(p: &shared::profile::Profile) -> String {
    fn yes_no(v: Option<bool>) -> &'static str {
        match v {
            Some(true) => "yes",
            Some(false) => "no",
            None => "?",
        }
    }
    let mut text = format!(
        "profile: {}{}\n",
        p.family,
        p.version
            .as_deref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default()
    );
    let lines = [
        (
            "context window",
            p.context_window
                .map_or_else(|| "?".to_owned(), |w| format!("{w} tokens")),
        ),
        (
            "tokenizer",
            p.tokenizer
                .map_or_else(|| "?".to_owned(), |t| format!("{t:?}")),
        ),
        ("native messages", yes_no(p.native_messages).to_owned()),
        (
            "native streamed tool calls",
            yes_no(p.native_streamed_tool_calls).to_owned(),
        ),
        ("tool calls", yes_no(p.tool_calls).to_owned()),
        (
            "streamed tool calls",
            yes_no(p.streamed_tool_calls).to_owned(),
        ),
        ("usage in streams", yes_no(p.stream_usage).to_owned()),
        (
            "max_completion_tokens",
            yes_no(p.max_completion_tokens).to_owned(),
        ),
        (
            "reasoning field",
            p.reasoning_field
                .map_or_else(|| "?".to_owned(), |r| format!("{r:?}")),
        ),
    ];
    for (name, value) in lines {
        text.push_str(&format!("  {name:<27} {value}\n"));
    }
    for note in &p.notes {
        text.push_str(&format!("  note: {note}\n"));
    }
    text
}
