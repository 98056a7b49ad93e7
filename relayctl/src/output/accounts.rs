//! Printing accounts and what concerns them: the account list and one account, removals and
//! cooldown resets, import results, the routing table and a model check, and the summary
//! `add-model` shows before saving.

use std::io::{self, Write as _};

use comfy_table::Table;
use serde_json::json;
use shared::account::{Account, AccountInput, DEFAULT_CONCURRENCY, DEFAULT_PRIORITY};
use shared::admin::{
    AccountList, AccountState, AffinityRule, CooldownReset, ModelRoute, RoutingTable,
};
use shared::error::FieldError;
use shared::import::ImportReport;

use super::{Printer, add_row, format_time, key_value, print_table, stdout, table, yes_no};

impl Printer {
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
            "FAMILY",
            "WINDOW",
        ]);
        for a in &list.accounts {
            let s = &a.settings;
            let (family, window) = super::profiles::list_cells(a);
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
                    family,
                    window,
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
            ("upstream auth", s.auth().as_str().to_owned()),
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
        rows.extend(super::profiles::profile_rows(account));
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

    /// The routes a request for `model` would try, in order, and how conversations are kept
    /// together inside that order (`models --check`).
    pub fn model_check(
        self,
        model: &str,
        routes: &[ModelRoute],
        affinity: Option<&AffinityRule>,
    ) -> io::Result<()> {
        if self.is_json() {
            return self.json(&json!({ "model": model, "routes": routes, "affinity": affinity }));
        }
        if routes.is_empty() {
            return stdout(&format!("{model} is not served by any account\n"));
        }
        stdout(&format!(
            "{model} is routed as follows (first row wins; exact names before patterns):\n"
        ))?;
        print_table(&routes_table(routes))?;
        let only_anthropic = routes
            .iter()
            .flat_map(|r| &r.accounts)
            .all(|a| a.anthropic_only);
        if only_anthropic {
            stdout(&format!(
                "{model} serves Anthropic clients only (/v1/messages): its accounts speak only the Anthropic Messages API, so OpenAI clients (/v1/chat/completions) get a 404\n"
            ))?;
        }
        if let Some(rule) = affinity {
            stdout(&affinity_text(rule))?;
        }
        Ok(())
    }
}

/// The conversation-affinity rule in words, as `models --check` prints it under the routes.
fn affinity_text(rule: &AffinityRule) -> String {
    let conversation = if rule.prefix_affinity {
        "a session id (X-Claude-Code-Session-Id or metadata.user_id), or else its prefix: system prompt, tools, first user message"
    } else {
        "a session id (X-Claude-Code-Session-Id or metadata.user_id); requests without one take turns (prefix affinity is off)"
    };
    format!(
        "Inside the first usable priority tier, each conversation ({conversation}) goes to the account its rendezvous hash ranks first, unless that account has more than {}% of its concurrency in flight above the tier's least loaded account; then to the least loaded. A conversation whose account could not take it (cooling down, full, failed) stays where it moved for {} s after its last request.\n",
        rule.load_bound * 100.0,
        rule.moved_ttl_secs
    )
}

/// What `add-model` is about to save, on stderr (before the confirmation prompt).
pub fn account_summary(input: &AccountInput) -> io::Result<()> {
    let models = input
        .supported_models
        .as_ref()
        .map_or_else(|| "the 14 default names".to_owned(), |m| m.join(", "));
    let mut rows = vec![
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
    if let Some(window) = input.context_window {
        rows.push(("context window", window.to_string()));
    }
    if let Some(mode) = input.anthropic_mode {
        rows.push(("anthropic mode", mode.as_str().to_owned()));
    }
    if let Some(auth) = input.upstream_auth {
        rows.push(("upstream auth", auth.as_str().to_owned()));
    }
    let mut err = io::stderr().lock();
    writeln!(err, "{}", key_value(&rows))?;
    err.flush()
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
                col(&|e| {
                    if e.anthropic_only {
                        format!("{} (Anthropic clients only)", e.name)
                    } else {
                        e.name.clone()
                    }
                }),
                col(&|e| e.priority.to_string()),
                col(&|e| format!("{} / {}", e.in_flight, e.concurrency)),
                col(&|e| state_text(&e.state)),
            ],
        );
    }
    table
}

pub(super) fn cooldown_reset_text(reset: &CooldownReset) -> String {
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
