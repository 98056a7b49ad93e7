//! Printing what probes found: an account's profile and the values requests use, each with
//! where it came from (`set` on the account, `detected` by the probe, or relayd's `default`).

use std::io;

use shared::account::Account;
use shared::profile::{Profile, Resolved, Source, Sourced, Tokenizer};

use super::{Printer, add_row, format_time, print_table, table};

impl Printer {
    /// The profiles of `accounts` after `accounts probe --all`: one row each.
    pub fn profiles(self, accounts: &[Account]) -> io::Result<()> {
        if self.is_json() {
            return self.json(accounts);
        }
        let mut out = table(&[
            "NAME",
            "FAMILY",
            "VERSION",
            "WINDOW",
            "TOKENIZER",
            "NATIVE",
            "NOTES",
        ]);
        for account in accounts {
            let p = account.profile.clone().unwrap_or_default();
            add_row(
                &mut out,
                vec![
                    account.settings.name.clone(),
                    p.family.to_string(),
                    p.version.clone().unwrap_or_else(|| "-".to_owned()),
                    p.context_window
                        .map_or_else(|| "-".to_owned(), |w| w.to_string()),
                    p.tokenizer.map_or("-", tokenizer_name).to_owned(),
                    flag(p.native_messages).to_owned(),
                    p.notes.join("; "),
                ],
            );
        }
        print_table(&out)
    }
}

/// What a probe of `account` found, in one line: `vllm 0.11.0, window 32768 (detected), 2 notes`.
pub fn probe_summary(account: &Account) -> String {
    let Some(p) = &account.profile else {
        return "no profile".to_owned();
    };
    let mut text = family_text(p);
    let window = account.resolved.context_window;
    text.push_str(&match window.value {
        Some(w) => format!(", window {w} ({})", source(window.source)),
        None => ", window unknown".to_owned(),
    });
    match p.notes.len() {
        0 => {}
        1 => text.push_str(", 1 note"),
        n => text.push_str(&format!(", {n} notes")),
    }
    text
}

/// The `FAMILY` and `WINDOW` cells of `accounts list`: the server as probed (`-` before the
/// first probe) and the window requests use, `set` ones marked.
pub(super) fn list_cells(account: &Account) -> (String, String) {
    let family = account
        .profile
        .as_ref()
        .map_or_else(|| "-".to_owned(), family_text);
    let window = account.resolved.context_window;
    let window = match (window.value, window.source) {
        (None, _) => "-".to_owned(),
        (Some(w), Source::Set) => format!("{w} (set)"),
        (Some(w), Source::Detected | Source::Default) => w.to_string(),
    };
    (family, window)
}

/// `vllm 0.11.0`, or the family alone when it gave no version.
fn family_text(p: &Profile) -> String {
    match &p.version {
        Some(v) => format!("{} {v}", p.family),
        None => p.family.to_string(),
    }
}

/// The rows `accounts show` adds for the profile and the resolved values.
pub(super) fn profile_rows(account: &Account) -> Vec<(&'static str, String)> {
    let r: &Resolved = &account.resolved;
    let mut rows = vec![
        (
            "context window",
            sourced(r.context_window, |w| {
                w.map_or_else(|| "unknown".to_owned(), |w| w.to_string())
            }),
        ),
        (
            "anthropic clients",
            format!(
                "{} (mode {}; {})",
                if r.native_messages.value {
                    "native"
                } else {
                    "translated"
                },
                account.settings.anthropic_mode.as_str(),
                source(r.native_messages.source)
            ),
        ),
        (
            "openai clients",
            if r.serves_openai_clients {
                "served"
            } else {
                "not served (kind anthropic)"
            }
            .to_owned(),
        ),
        (
            "tokenizer",
            sourced(r.tokenizer, |t| {
                t.map_or("local estimate", tokenizer_name).to_owned()
            }),
        ),
        (
            "max_completion_tokens",
            sourced(r.use_max_completion_tokens, |v| {
                if v { "sent" } else { "max_tokens sent" }.to_owned()
            }),
        ),
    ];
    match &account.profile {
        None => rows.push((
            "profile",
            "not probed yet (relayctl accounts probe NAME)".to_owned(),
        )),
        Some(p) => rows.extend(detected_rows(p)),
    }
    rows
}

/// What the probe itself saw.
fn detected_rows(p: &Profile) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("server", family_text(p)),
        ("native messages", flag(p.native_messages).to_owned()),
        (
            "tool calls",
            format!(
                "plain {}, streamed {}, native streamed {}",
                flag(p.tool_calls),
                flag(p.streamed_tool_calls),
                flag(p.native_streamed_tool_calls)
            ),
        ),
        (
            "reasoning field",
            p.reasoning_field
                .map_or("-", |f| match f {
                    shared::profile::ReasoningField::ReasoningContent => "reasoning_content",
                    shared::profile::ReasoningField::Reasoning => "reasoning",
                })
                .to_owned(),
        ),
        ("usage in streams", flag(p.stream_usage).to_owned()),
        (
            "max_completion_tokens honoured",
            flag(p.max_completion_tokens).to_owned(),
        ),
        ("probed", format_time(p.probed_at)),
    ];
    if !p.notes.is_empty() {
        rows.push(("probe notes", p.notes.join("\n")));
    }
    rows
}

fn sourced<T: Copy>(value: Sourced<T>, show: impl Fn(T) -> String) -> String {
    format!("{} ({})", show(value.value), source(value.source))
}

fn source(source: Source) -> &'static str {
    match source {
        Source::Set => "set",
        Source::Detected => "detected",
        Source::Default => "default",
    }
}

fn tokenizer_name(tokenizer: Tokenizer) -> &'static str {
    match tokenizer {
        Tokenizer::ChatTokenize => "/tokenize (chat template)",
        Tokenizer::LlamaCpp => "llama.cpp /apply-template + /tokenize",
        Tokenizer::AnthropicCountTokens => "/v1/messages/count_tokens",
    }
}

fn flag(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}
