//! Routing: which accounts may serve a client-facing model name ([`table`]), which one a request
//! goes to ([`scheduler`]), and how long a failing account is skipped ([`cooldown`]). The shared
//! state the decision reads — slots, cooldowns, key counters — is the [`crate::coordinator`]'s.
//! [`Router`] ties them together for the proxy. Routing is pure selection over an account
//! snapshot: it does not read the store, call upstreams or know the server (the probe of cooling
//! accounts is [`crate::cooling_probe`]; the `/metrics` gauges are the server's).
//!
//! The rule (also in the README): among enabled accounts the key may use, accounts listing the
//! name exactly win over accounts matching it with a `*` pattern, and those over the configured
//! default route. Then the account a conversation moved to while it is healthy and has room;
//! otherwise the lowest `priority` number, and inside it the conversation's rendezvous-ranked
//! home within its load bound, or else the fewest requests in flight, round robin on ties;
//! accounts cooling down or at their concurrency cap are skipped; all full → a bounded wait
//! queue. A conversation is a client session id, or the request's stable prefix; see
//! [`crate::coordinator::affinity`].

pub mod cooldown;
pub mod scheduler;
pub mod table;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use shared::account::{AccountId, is_pattern, model_matches};
use shared::admin::{AccountState, ModelRoute, RouteEntry, RoutingTable};
use shared::key::RelayKey;
use shared::time::{UnixMillis, now_millis};

pub use self::cooldown::{Failure, cooldown_for};
pub use self::scheduler::Placement;
use self::scheduler::{Affinity, Choice, View, choose, placement};
use self::table::RouteTable;
use crate::accounts::{AccountSnapshot, LiveAccount};
use crate::config::Routing;
use crate::coordinator::{AffinityKey, Cooldown, Coordinator};
use crate::error::{ApiError, ErrorKind};

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

/// The routing table for the admin API: each name or pattern with its accounts in routing order,
/// their requests in flight and their cooldowns.
pub fn table(snapshot: &AccountSnapshot, coordinator: &dyn Coordinator) -> RoutingTable {
    let now = now_millis();
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
                    in_flight: coordinator.in_flight(&account.id),
                    context_window: account.resolved.context_window.value,
                    anthropic_only: !account.resolved.serves_openai_clients,
                    state: account_state(account, coordinator, now),
                });
        }
    }
    RoutingTable {
        affinity: None,
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

/// An account's state for the admin API.
pub fn account_state(
    account: &LiveAccount,
    coordinator: &dyn Coordinator,
    now: UnixMillis,
) -> AccountState {
    if !account.settings.enabled {
        return AccountState::Disabled;
    }
    match coordinator.cooldown(&account.id, now) {
        Some(c) => AccountState::CoolingDown {
            until: c.until,
            reason: c.reason,
        },
        None => AccountState::Ok,
    }
}

/// A concurrency slot of one account, given back when dropped — at the last byte of the answer
/// (streamed bodies own it) or when the client goes away.
#[derive(Debug)]
pub struct Slot {
    coordinator: Arc<dyn Coordinator>,
    account: AccountId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.coordinator.release(&self.account);
    }
}

/// Leaves the wait queue when dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A slot taken for a request: on which candidate, and how that placed its conversation.
#[derive(Debug)]
pub struct Acquired {
    /// Index into the candidates.
    pub index: usize,
    /// The slot, given back when dropped.
    pub slot: Slot,
    /// What to remember of the conversation once the account answers.
    pub placement: Placement,
}

/// The routing state of one process: the route table of the current account snapshot, the
/// coordinator (which also remembers moved conversations), the round-robin turn and the wait
/// queue.
#[derive(Debug)]
pub struct Router {
    config: Routing,
    table: ArcSwap<RouteTable>,
    coordinator: Arc<dyn Coordinator>,
    turn: AtomicUsize,
    waiting: AtomicUsize,
}

impl Router {
    /// A router over `snapshot` (later snapshots are picked up by [`Router::table_for`]).
    pub fn new(
        config: Routing,
        coordinator: Arc<dyn Coordinator>,
        snapshot: Arc<AccountSnapshot>,
    ) -> Self {
        let table = RouteTable::build(snapshot, &config.default_route);
        Self {
            config,
            table: ArcSwap::from_pointee(table),
            coordinator,
            turn: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Stops the coordinator's background work, giving back what it holds (Redis leases).
    pub async fn shutdown(&self) {
        self.coordinator.shutdown().await;
    }

    /// Requests waiting in the queue for a free slot right now.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The `[routing]` settings.
    pub fn config(&self) -> &Routing {
        &self.config
    }

    /// The shared state.
    pub fn coordinator(&self) -> &Arc<dyn Coordinator> {
        &self.coordinator
    }

    /// The route table of `snapshot`: the current one when it was built from that snapshot,
    /// else rebuilt once and swapped in (the snapshot changes only on admin writes).
    pub fn table_for(&self, snapshot: Arc<AccountSnapshot>) -> Arc<RouteTable> {
        let current = self.table.load_full();
        if Arc::ptr_eq(current.source(), &snapshot) {
            return current;
        }
        let table = Arc::new(RouteTable::build(snapshot, &self.config.default_route));
        self.table.store(Arc::clone(&table));
        table
    }

    /// Remembers where conversation `key` was served: away from its home (see
    /// [`Placement`]) for every instance; back home, nothing.
    pub fn remember(&self, key: &AffinityKey, account: &AccountId, placement: Placement) {
        match placement {
            Placement::Home => self.coordinator.set_affinity(key, None),
            Placement::Moved => self.coordinator.set_affinity(key, Some(account)),
            Placement::Spilled => {}
        }
    }

    /// The cooldown an upstream failure earns its account, if any.
    pub fn cooldown_for(&self, failure: &Failure, now: UnixMillis) -> Option<Cooldown> {
        cooldown_for(&self.config, failure, now)
    }

    /// Takes a slot on the best candidate not yet `tried` for conversation `key` (if the
    /// request names one), waiting in the bounded queue while every healthy candidate is full.
    /// `Ok(None)`: every candidate was tried.
    pub async fn acquire(
        &self,
        candidates: &[Arc<LiveAccount>],
        tried: &[bool],
        key: Option<&AffinityKey>,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Acquired>, ApiError> {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let affinity = Affinity {
            moved_to: key
                .and_then(|k| self.coordinator.affinity(k))
                .and_then(|id| candidates.iter().position(|a| a.id == id)),
            keyed: key.is_some(),
        };
        let mut queued: Option<Waiting<'_>> = None;
        loop {
            // Registered before looking, so a slot freed in between still wakes us.
            let freed = self.coordinator.slot_freed().notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let now = now_millis();
            let views: Vec<View> = candidates
                .iter()
                .zip(tried)
                .map(|(a, &tried)| View {
                    priority: a.settings.priority,
                    in_flight: self.coordinator.in_flight(&a.id),
                    capacity: a.settings.concurrency,
                    cooling_until: self.coordinator.cooldown(&a.id, now).map(|c| c.until),
                    tried,
                    rank: key.map_or(0, |k| k.rank(&a.id)),
                    bound: self.config.load_bound(a.settings.concurrency),
                })
                .collect();
            match choose(&views, affinity, now, turn) {
                Choice::Account(i) | Choice::LastResort(i) => {
                    if let Some(slot) = self.try_take(candidates, i).await? {
                        let placement = placement(&views, affinity, i, now);
                        return Ok(Some(Acquired {
                            index: i,
                            slot,
                            placement,
                        }));
                    }
                    // Another request (or instance) took the last slot first: look again.
                    continue;
                }
                Choice::Exhausted => return Ok(None),
                Choice::AllFull => {
                    if let Some((i, slot)) = self.probe(candidates, &views, now).await? {
                        let placement = placement(&views, affinity, i, now);
                        return Ok(Some(Acquired {
                            index: i,
                            slot,
                            placement,
                        }));
                    }
                }
            }
            if queued.is_none() {
                let before = self.waiting.fetch_add(1, Ordering::Relaxed);
                let guard = Waiting(&self.waiting);
                if before >= self.config.queue_size {
                    return Err(self.overloaded(
                        "every account serving this model is busy and the wait queue is full",
                    ));
                }
                queued = Some(guard);
            }
            let wake = match self.coordinator.recheck_interval() {
                Some(every) => deadline.min(tokio::time::Instant::now() + every),
                None => deadline,
            };
            if tokio::time::timeout_at(wake, freed).await.is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return Err(self.overloaded(
                    "every account serving this model is busy; no slot freed in time",
                ));
            }
        }
    }

    /// With a shared store the cached counts may be stale (a crashed instance's leases expire
    /// silently), so before waiting ask the store itself, best candidate first.
    async fn probe(
        &self,
        candidates: &[Arc<LiveAccount>],
        views: &[View],
        now: UnixMillis,
    ) -> Result<Option<(usize, Slot)>, ApiError> {
        if self.coordinator.recheck_interval().is_none() {
            return Ok(None);
        }
        let mut order: Vec<usize> = (0..views.len())
            .filter(|&i| !views[i].tried && views[i].cooling_until.is_none_or(|u| u <= now))
            .collect();
        order.sort_by_key(|&i| views[i].priority);
        for i in order {
            if let Some(slot) = self.try_take(candidates, i).await? {
                return Ok(Some((i, slot)));
            }
        }
        Ok(None)
    }

    /// One attempt at a slot on `candidates[i]`.
    async fn try_take(
        &self,
        candidates: &[Arc<LiveAccount>],
        i: usize,
    ) -> Result<Option<Slot>, ApiError> {
        let account = &candidates[i];
        let taken = self
            .coordinator
            .try_acquire(&account.id, account.settings.concurrency)
            .await
            .map_err(|e| ApiError::new(ErrorKind::Unavailable, e.to_string()))?;
        Ok(taken.then(|| Slot {
            coordinator: Arc::clone(&self.coordinator),
            account: account.id.clone(),
        }))
    }

    fn overloaded(&self, message: &str) -> ApiError {
        // A slot did not free within the queue time; asking the client to wait about as long
        // again is the honest estimate (at least a second).
        ApiError::new(ErrorKind::Overloaded, message)
            .with_retry_after(self.config.queue_timeout_secs.max(1))
    }
}
