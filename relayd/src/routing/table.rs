//! The route table: for every model name some enabled account lists exactly, its accounts in
//! routing order (priority, then name), plus the enabled pattern entries and the configured
//! default route. Built once per account snapshot and swapped atomically, so resolving a model
//! on the request path is a hash lookup without any lock.
//!
//! Resolving a name also says which configured entry matched ([`Route::label`]): that label, not
//! the client's string, is what metrics and usage record, so their label sets stay as small as the
//! configuration however many distinct names clients send.

use std::collections::HashMap;
use std::sync::Arc;

use shared::account::{is_pattern, model_matches};
use shared::key::RelayKey;

use super::key_may_use;
use crate::accounts::{AccountSnapshot, LiveAccount};

/// The label of requests no exact name or pattern routed: the default route, and everything
/// refused before routing (unknown model, model not allowed, bad body, key limits).
pub const OTHER_LABEL: &str = "other";

/// The accounts that may serve one request, and the configured entry that chose them.
#[derive(Debug, Clone)]
pub struct Route {
    /// Candidates in routing order; empty when no account serves the name for this key.
    pub accounts: Vec<Arc<LiveAccount>>,
    /// The exact `supportedModels` name or `*` pattern that matched, or [`OTHER_LABEL`] for the
    /// default route and for no match. Shared with the table, so a clone costs no allocation.
    pub label: Arc<str>,
}

/// An immutable route table, valid for the account snapshot it was built from.
#[derive(Debug)]
pub struct RouteTable {
    source: Arc<AccountSnapshot>,
    exact: HashMap<Arc<str>, Vec<Arc<LiveAccount>>>,
    /// `(pattern, account)` of enabled accounts, in routing order.
    patterns: Vec<(Arc<str>, Arc<LiveAccount>)>,
    default_route: Vec<Arc<LiveAccount>>,
    other: Arc<str>,
}

fn routing_order(a: &Arc<LiveAccount>, b: &Arc<LiveAccount>) -> std::cmp::Ordering {
    (a.settings.priority, &a.settings.name).cmp(&(b.settings.priority, &b.settings.name))
}

impl RouteTable {
    /// Precomputes the table of `snapshot`. `default_route` names accounts (unknown names are
    /// ignored: the account may be created later).
    pub fn build(snapshot: Arc<AccountSnapshot>, default_route: &[String]) -> Self {
        let mut exact: HashMap<Arc<str>, Vec<Arc<LiveAccount>>> = HashMap::new();
        let mut patterns = Vec::new();
        for account in snapshot.accounts.iter().filter(|a| a.settings.enabled) {
            for model in &account.settings.supported_models {
                if is_pattern(model) {
                    patterns.push((Arc::from(model.as_str()), Arc::clone(account)));
                } else {
                    exact
                        .entry(Arc::from(model.as_str()))
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
            other: Arc::from(OTHER_LABEL),
        }
    }

    /// The snapshot this table was built from.
    pub fn source(&self) -> &Arc<AccountSnapshot> {
        &self.source
    }

    /// Accounts that may serve `model` for `key`, in routing order: exact names win over
    /// patterns, patterns over the default route. Empty when none does. The label is the entry
    /// that matched: the exact name, the first matching pattern in routing order, else `other`.
    pub fn candidates(&self, key: &RelayKey, model: &str) -> Route {
        if let Some((name, list)) = self.exact.get_key_value(model) {
            let usable: Vec<_> = list
                .iter()
                .filter(|a| key_may_use(key, a))
                .cloned()
                .collect();
            if !usable.is_empty() {
                return Route {
                    accounts: usable,
                    label: Arc::clone(name),
                };
            }
        }
        let mut matched: Vec<Arc<LiveAccount>> = Vec::new();
        let mut label = None;
        for (pattern, account) in &self.patterns {
            if model_matches(pattern, model)
                && key_may_use(key, account)
                && !matched.iter().any(|m| m.id == account.id)
            {
                label.get_or_insert(pattern);
                matched.push(Arc::clone(account));
            }
        }
        if let Some(pattern) = label {
            return Route {
                accounts: matched,
                label: Arc::clone(pattern),
            };
        }
        Route {
            accounts: self
                .default_route
                .iter()
                .filter(|a| key_may_use(key, a))
                .cloned()
                .collect(),
            label: Arc::clone(&self.other),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use shared::account::{AccountId, AccountInput};
    use shared::key::{KeyId, KeyLimits};

    use super::*;

    fn account(name: &str, priority: u8, models: &[&str], enabled: bool) -> Arc<LiveAccount> {
        let input: AccountInput = serde_json::from_value(json!({
            "name": name, "endpoint": "http://127.0.0.1:1/v1", "deploymentName": "d",
            "priority": priority, "supportedModels": models, "enabled": enabled
        }))
        .unwrap();
        let (settings, secrets) = input.validate().unwrap();
        Arc::new(LiveAccount::new(
            AccountId(format!("acc_{name}")),
            settings,
            secrets,
            (0, 0),
            None,
        ))
    }

    fn key(bound: &[&str]) -> RelayKey {
        RelayKey {
            id: KeyId("key_1".into()),
            name: "k".into(),
            enabled: true,
            revoked_at: None,
            expires_at: None,
            bound_accounts: bound.iter().map(|s| (*s).to_owned()).collect(),
            allowed_models: Vec::new(),
            limits: KeyLimits::default(),
            description: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn names(route: &Route) -> Vec<&str> {
        route
            .accounts
            .iter()
            .map(|a| a.settings.name.as_str())
            .collect()
    }

    fn table(default_route: &[&str]) -> RouteTable {
        let snapshot = AccountSnapshot::new(vec![
            account("exact-b", 20, &["m-1", "m-2"], true),
            account("exact-a", 20, &["m-1"], true),
            account("exact-first", 5, &["m-1"], true),
            account("off", 1, &["m-1", "m-*"], false),
            account("pattern", 1, &["m-*"], true),
            account("fallback", 50, &["other"], true),
        ]);
        let default_route: Vec<String> = default_route.iter().map(|s| (*s).to_owned()).collect();
        RouteTable::build(Arc::new(snapshot), &default_route)
    }

    #[test]
    fn exact_names_win_in_priority_then_name_order() {
        let t = table(&[]);
        assert_eq!(
            names(&t.candidates(&key(&[]), "m-1")),
            ["exact-first", "exact-a", "exact-b"],
            "the pattern account is better by priority but exact names win; disabled never"
        );
    }

    #[test]
    fn patterns_then_the_default_route() {
        let t = table(&["fallback", "unknown-name"]);
        assert_eq!(names(&t.candidates(&key(&[]), "m-9")), ["pattern"]);
        assert_eq!(names(&t.candidates(&key(&[]), "x")), ["fallback"]);
        assert!(table(&[]).candidates(&key(&[]), "x").accounts.is_empty());
    }

    #[test]
    fn bound_accounts_apply_before_the_precedence() {
        let t = table(&[]);
        // A key bound to the pattern account gets it even though others list the name exactly.
        assert_eq!(names(&t.candidates(&key(&["pattern"]), "m-1")), ["pattern"]);
        assert_eq!(
            names(&t.candidates(&key(&["acc_exact-a"]), "m-1")),
            ["exact-a"]
        );
        assert!(t.candidates(&key(&["fallback"]), "m-1").accounts.is_empty());
    }

    #[test]
    fn the_label_is_the_entry_that_matched_never_the_requested_name() {
        let t = table(&["fallback"]);
        let label = |key: &RelayKey, model: &str| t.candidates(key, model).label.to_string();
        assert_eq!(
            label(&key(&[]), "m-1"),
            "m-1",
            "an exact name is its own label"
        );
        assert_eq!(
            label(&key(&[]), "m-9"),
            "m-*",
            "a pattern match is labelled by the pattern"
        );
        assert_eq!(
            label(&key(&[]), "x"),
            OTHER_LABEL,
            "the default route is `other`"
        );
        assert_eq!(
            label(&key(&["pattern"]), "m-1"),
            "m-*",
            "what matched for this key, not what matched for others"
        );
        assert_eq!(
            label(&key(&["exact-a"]), "zzz"),
            OTHER_LABEL,
            "no candidate: `other`"
        );
        // The label is shared with the table: resolving allocates no copy of it.
        let a = t.candidates(&key(&[]), "m-1").label;
        let b = t.candidates(&key(&[]), "m-1").label;
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn the_first_pattern_in_routing_order_labels_a_match_of_several() {
        let snapshot = AccountSnapshot::new(vec![
            account("late", 30, &["claude-*"], true),
            account("early", 10, &["*opus*"], true),
        ]);
        let t = RouteTable::build(Arc::new(snapshot), &[]);
        let route = t.candidates(&key(&[]), "claude-opus-9");
        assert_eq!(names(&route), ["early", "late"]);
        assert_eq!(&*route.label, "*opus*");
    }
}
