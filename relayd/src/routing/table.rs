//! The route table: for every model name some enabled account lists exactly, its accounts in
//! routing order (priority, then name), plus the enabled pattern entries and the configured
//! default route. Built once per account snapshot and swapped atomically, so resolving a model
//! on the request path is a hash lookup without any lock.

use std::collections::HashMap;
use std::sync::Arc;

use shared::account::{is_pattern, model_matches};
use shared::key::RelayKey;

use super::key_may_use;
use crate::accounts::{AccountSnapshot, LiveAccount};

/// An immutable route table, valid for the account snapshot it was built from.
#[derive(Debug)]
pub struct RouteTable {
    source: Arc<AccountSnapshot>,
    exact: HashMap<String, Vec<Arc<LiveAccount>>>,
    /// `(pattern, account)` of enabled accounts, in routing order.
    patterns: Vec<(String, Arc<LiveAccount>)>,
    default_route: Vec<Arc<LiveAccount>>,
}

fn routing_order(a: &Arc<LiveAccount>, b: &Arc<LiveAccount>) -> std::cmp::Ordering {
    (a.settings.priority, &a.settings.name).cmp(&(b.settings.priority, &b.settings.name))
}

impl RouteTable {
    /// Precomputes the table of `snapshot`. `default_route` names accounts (unknown names are
    /// ignored: the account may be created later).
    pub fn build(snapshot: Arc<AccountSnapshot>, default_route: &[String]) -> Self {
        let mut exact: HashMap<String, Vec<Arc<LiveAccount>>> = HashMap::new();
        let mut patterns = Vec::new();
        for account in snapshot.accounts.iter().filter(|a| a.settings.enabled) {
            for model in &account.settings.supported_models {
                if is_pattern(model) {
                    patterns.push((model.clone(), Arc::clone(account)));
                } else {
                    exact
                        .entry(model.clone())
                        .or_default()
                        .push(Arc::clone(account));
                }
            }
        }
        for list in exact.values_mut() {
            list.sort_by(routing_order);
            list.dedup_by(|a, b| a.id == b.id);
        }
        patterns.sort_by(|a, b| routing_order(&a.1, &b.1));
        let mut default_accounts: Vec<Arc<LiveAccount>> = default_route
            .iter()
            .filter_map(|name| snapshot.find(name))
            .filter(|a| a.settings.enabled)
            .cloned()
            .collect();
        default_accounts.sort_by(routing_order);
        default_accounts.dedup_by(|a, b| a.id == b.id);
        Self {
            source: snapshot,
            exact,
            patterns,
            default_route: default_accounts,
        }
    }

    /// The snapshot this table was built from.
    pub fn source(&self) -> &Arc<AccountSnapshot> {
        &self.source
    }

    /// Accounts that may serve `model` for `key`, in routing order: exact names win over
    /// patterns, patterns over the default route. Empty when none does.
    pub fn candidates(&self, key: &RelayKey, model: &str) -> Vec<Arc<LiveAccount>> {
        if let Some(list) = self.exact.get(model) {
            let usable: Vec<_> = list
                .iter()
                .filter(|a| key_may_use(key, a))
                .cloned()
                .collect();
            if !usable.is_empty() {
                return usable;
            }
        }
        let mut matched: Vec<Arc<LiveAccount>> = Vec::new();
        for (pattern, account) in &self.patterns {
            if model_matches(pattern, model)
                && key_may_use(key, account)
                && !matched.iter().any(|m| m.id == account.id)
            {
                matched.push(Arc::clone(account));
            }
        }
        if !matched.is_empty() {
            return matched;
        }
        self.default_route
            .iter()
            .filter(|a| key_may_use(key, a))
            .cloned()
            .collect()
    }
}
