//! Model resolution: which accounts may serve a client-facing model name, in routing order.
//!
//! The rule (also in the README): among enabled accounts the key may use, accounts listing the
//! name exactly win over accounts matching it with a `*` pattern. Within the chosen set, lower
//! `priority` numbers come first; ties are ordered by name here (load is spread among them by the
//! scheduler at request time).

use std::collections::BTreeMap;
use std::sync::Arc;

use shared::account::{is_pattern, model_matches};
use shared::admin::{AccountState, ModelRoute, RouteEntry, RoutingTable};
use shared::key::RelayKey;

use crate::accounts::{AccountSnapshot, LiveAccount};

/// One account able to serve a request, with the `supportedModels` entry that matched.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The account.
    pub account: Arc<LiveAccount>,
    /// Whether the match was exact (otherwise a pattern).
    pub exact: bool,
}

/// Whether `key` may use `account` at all.
pub fn key_may_use(key: &RelayKey, account: &LiveAccount) -> bool {
    key.bound_accounts.is_empty()
        || key
            .bound_accounts
            .iter()
            .any(|b| b == &account.settings.name || b == account.id.as_str())
}

/// Whether `key` may ask for `model`.
pub fn key_may_request(key: &RelayKey, model: &str) -> bool {
    key.allowed_models.is_empty() || key.allowed_models.iter().any(|p| model_matches(p, model))
}

/// Accounts that may serve `model` for `key`, in routing order (exact names before patterns;
/// then priority; then name). Empty when none does.
pub fn candidates(snapshot: &AccountSnapshot, key: &RelayKey, model: &str) -> Vec<Candidate> {
    let mut exact = Vec::new();
    let mut patterned = Vec::new();
    for account in &snapshot.accounts {
        if !account.settings.enabled || !key_may_use(key, account) {
            continue;
        }
        let models = &account.settings.supported_models;
        if models.iter().any(|m| m == model) {
            exact.push(account);
        } else if models
            .iter()
            .any(|m| is_pattern(m) && model_matches(m, model))
        {
            patterned.push(account);
        }
    }
    let (chosen, is_exact) = if exact.is_empty() {
        (patterned, false)
    } else {
        (exact, true)
    };
    let mut out: Vec<Candidate> = chosen
        .into_iter()
        .map(|a| Candidate {
            account: Arc::clone(a),
            exact: is_exact,
        })
        .collect();
    out.sort_by(|a, b| {
        (a.account.settings.priority, &a.account.settings.name)
            .cmp(&(b.account.settings.priority, &b.account.settings.name))
    });
    out
}

/// Exact model names a key can ask for (patterns cannot be listed), sorted.
pub fn listable_models(snapshot: &AccountSnapshot, key: &RelayKey) -> Vec<String> {
    let mut names: Vec<String> = snapshot
        .accounts
        .iter()
        .filter(|a| a.settings.enabled && key_may_use(key, a))
        .flat_map(|a| a.settings.supported_models.iter())
        .filter(|m| !is_pattern(m) && key_may_request(key, m))
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The routing table for the admin API: each name or pattern with its accounts in routing order.
pub fn table(snapshot: &AccountSnapshot) -> RoutingTable {
    let mut by_model: BTreeMap<(bool, &str), Vec<RouteEntry>> = BTreeMap::new();
    for account in &snapshot.accounts {
        for model in &account.settings.supported_models {
            by_model
                .entry((is_pattern(model), model.as_str()))
                .or_default()
                .push(RouteEntry {
                    id: account.id.clone(),
                    name: account.settings.name.clone(),
                    matched: model.clone(),
                    priority: account.settings.priority,
                    concurrency: account.settings.concurrency,
                    in_flight: 0,
                    state: if account.settings.enabled {
                        AccountState::Ok
                    } else {
                        AccountState::Disabled
                    },
                });
        }
    }
    RoutingTable {
        models: by_model
            .into_iter()
            .map(|((pattern, model), mut accounts)| {
                // Disabled accounts are listed last: they are not in the routing order at all.
                accounts.sort_by(|a, b| {
                    (a.state == AccountState::Disabled, a.priority, &a.name).cmp(&(
                        b.state == AccountState::Disabled,
                        b.priority,
                        &b.name,
                    ))
                });
                ModelRoute {
                    model: model.to_owned(),
                    pattern,
                    accounts,
                }
            })
            .collect(),
    }
}

/// Current-state gauges for `/metrics`: accounts enabled and requests in flight.
pub fn gauges(state: &crate::state::AppState) -> Vec<crate::metrics::Gauge> {
    let snapshot = state.accounts.snapshot();
    let mut gauges: Vec<crate::metrics::Gauge> = snapshot
        .accounts
        .iter()
        .map(|a| crate::metrics::Gauge {
            name: "relayd_account_enabled",
            help: "1 when the account takes traffic, 0 when disabled.",
            labels: vec![("account", a.settings.name.clone())],
            value: if a.settings.enabled { 1.0 } else { 0.0 },
        })
        .collect();
    gauges.push(crate::metrics::Gauge {
        name: "relayd_requests_in_flight",
        help: "Client requests being served by this instance.",
        labels: Vec::new(),
        value: state.in_flight.load(std::sync::atomic::Ordering::Relaxed) as f64,
    });
    gauges
}
