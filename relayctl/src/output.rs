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
//! This file holds the [`Printer`] and the shared helpers (tables, escaping, times); the printing
//! of each kind of result lives next to its kind: `accounts` (accounts, imports, routing),
//! `keys` (relay keys) and `reports` (status, usage, `test-endpoint`).
//!
//! [`snapshot`] holds the live snapshot's tables and the cell texts `relayctl top` shares with
//! them. The one thing drawn elsewhere is `top`'s full-screen view: ratatui paints it on the
//! alternate screen (`commands/top`), where line-oriented output has no place.

mod accounts;
mod keys;
mod profiles;
mod reports;
pub mod snapshot;

pub use accounts::account_summary;
pub use profiles::probe_summary;
pub use reports::test_report_text;

use std::borrow::Cow;
use std::io::{self, Write};

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, Table};
use serde::Serialize;
use shared::time::UnixMillis;

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

    /// A completion script or other raw text, as is.
    pub fn raw(self, bytes: &[u8]) -> io::Result<()> {
        write_stdout(bytes)
    }
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
mod tests;
