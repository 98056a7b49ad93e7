//! Routing: which accounts may serve a client-facing model name ([`table`]), which one a request
//! goes to ([`scheduler`]), and the shared state that decision reads — slots, cooldowns, key
//! counters ([`coordinator`]). [`Router`] ties them together for the proxy.
//!
//! The rule (also in the README): among enabled accounts the key may use, accounts listing the
//! name exactly win over accounts matching it with a `*` pattern, and those over the configured
//! default route. Then a sticky session's account while it is healthy and has room; otherwise
//! the lowest `priority` number, the fewest requests in flight, round robin on ties; accounts
//! cooling down or at their concurrency cap are skipped; all full → a bounded wait queue.

pub mod coordinator;
pub mod redis;
pub mod scheduler;
pub mod table;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use shared::account::{AccountId, is_pattern, model_matches};
use shared::admin::{AccountState, ModelRoute, RouteEntry, RoutingTable};
use shared::key::{KeyId, RelayKey};
use shared::time::{UnixMillis, now_millis};

use self::coordinator::{Cooldown, Coordinator};
use self::scheduler::{Choice, View, choose};
use self::table::RouteTable;
use crate::accounts::{AccountSnapshot, LiveAccount};
use crate::config::Routing;
use crate::error::{ApiError, ErrorKind};
use crate::proxy::upstream::UpstreamError;

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
                    state: account_state(account, coordinator, now),
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

/// Longest client session id used as is in the sticky map, in bytes. Real ids (Claude Code's
/// UUIDs, its `metadata.user_id`) are well under 200; longer ones are replaced by their hash.
pub const MAX_SESSION_ID_BYTES: usize = 256;

/// The sticky-map key of the client session `session` of relay key `key`. Sessions are per key:
/// two keys never share an account binding. An id over [`MAX_SESSION_ID_BYTES`] is replaced by
/// its SHA-256 (hex), so a client sending huge ids costs a bounded amount of memory for each of
/// the `sticky_max_sessions` it can fill, while the same id still finds the same account.
pub fn session_key(key: &KeyId, session: &str) -> String {
    if session.len() <= MAX_SESSION_ID_BYTES {
        format!("{}\u{0}{session}", key.0)
    } else {
        let digest = Sha256::digest(session.as_bytes());
        format!("{}\u{0}sha256:{}", key.0, hex::encode(digest))
    }
}

/// Sessions and the account that served them, bounded in time and size.
#[derive(Debug)]
struct StickyMap {
    ttl: Duration,
    max: usize,
    // std mutex: a hash-map operation per request, never held across an await.
    map: Mutex<HashMap<String, (AccountId, Instant)>>,
}

impl StickyMap {
    fn get(&self, session: &str) -> Option<AccountId> {
        let map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(session)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(id, _)| id.clone())
    }

    fn put(&self, session: &str, account: &AccountId) {
        if self.max == 0 {
            return;
        }
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= self.max && !map.contains_key(session) {
            map.retain(|_, (_, at)| at.elapsed() < self.ttl);
            if map.len() >= self.max {
                // Forget the least recently used session.
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
        }
        map.insert(session.to_owned(), (account.clone(), Instant::now()));
    }
}

/// The routing state of one process: the route table of the current account snapshot, the
/// coordinator, sticky sessions, the round-robin turn and the wait queue.
#[derive(Debug)]
pub struct Router {
    config: Routing,
    table: ArcSwap<RouteTable>,
    coordinator: Arc<dyn Coordinator>,
    sticky: StickyMap,
    turn: AtomicUsize,
    waiting: AtomicUsize,
    /// Background probing of cooled-down accounts, when configured.
    tasks: tokio_util::task::TaskTracker,
    cancel: tokio_util::sync::CancellationToken,
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
            sticky: StickyMap {
                ttl: Duration::from_secs(config.sticky_ttl_secs),
                max: config.sticky_max_sessions,
                map: Mutex::new(HashMap::new()),
            },
            config,
            table: ArcSwap::from_pointee(table),
            coordinator,
            turn: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            tasks: tokio_util::task::TaskTracker::new(),
            cancel: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Starts probing cooled-down accounts every `probe_interval_secs` (no-op when 0).
    pub fn start_probing(
        &self,
        accounts: Arc<crate::accounts::AccountRegistry>,
        upstreams: Arc<crate::proxy::upstream::Upstreams>,
    ) {
        if self.config.probe_interval_secs == 0 {
            return;
        }
        let every = Duration::from_secs(self.config.probe_interval_secs);
        let coordinator = Arc::clone(&self.coordinator);
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                probe_cooling(&accounts.snapshot(), coordinator.as_ref(), &upstreams).await;
            }
        });
    }

    /// Stops background work (probing, the coordinator's tasks).
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
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

    /// The account that served `session` recently.
    pub fn sticky(&self, session: &str) -> Option<AccountId> {
        self.sticky.get(session)
    }

    /// Remembers that `account` served `session`.
    pub fn stick(&self, session: &str, account: &AccountId) {
        self.sticky.put(session, account);
    }

    /// The cooldown an upstream failure earns its account, if any.
    pub fn cooldown_for(&self, error: &UpstreamError, now: UnixMillis) -> Option<Cooldown> {
        cooldown_for(&self.config, error, now)
    }

    /// Takes a slot on the best candidate not yet `tried`, waiting in the bounded queue while
    /// every healthy candidate is full. `Ok(None)`: every candidate was tried.
    pub async fn acquire(
        &self,
        candidates: &[Arc<LiveAccount>],
        tried: &[bool],
        sticky: Option<&AccountId>,
        deadline: tokio::time::Instant,
    ) -> Result<Option<(usize, Slot)>, ApiError> {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let sticky = sticky.and_then(|id| candidates.iter().position(|a| &a.id == id));
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
                })
                .collect();
            match choose(&views, sticky, now, turn) {
                Choice::Account(i) | Choice::LastResort(i) => {
                    if let Some(slot) = self.try_take(candidates, i).await? {
                        return Ok(Some((i, slot)));
                    }
                    // Another request (or instance) took the last slot first: look again.
                    continue;
                }
                Choice::Exhausted => return Ok(None),
                Choice::AllFull => {
                    if let Some(slot) = self.probe(candidates, &views, now).await? {
                        return Ok(Some(slot));
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

impl Drop for Router {
    fn drop(&mut self) {
        // Embedders that never call `shutdown` (tests) still stop the probe task.
        self.cancel.cancel();
    }
}

/// Asks every enabled account that is cooling down for its model list; a 2xx ends the cooldown.
async fn probe_cooling(
    snapshot: &AccountSnapshot,
    coordinator: &dyn Coordinator,
    upstreams: &crate::proxy::upstream::Upstreams,
) {
    let now = now_millis();
    for account in snapshot.accounts.iter().filter(|a| a.settings.enabled) {
        if coordinator.cooldown(&account.id, now).is_none() {
            continue;
        }
        // Bounded well below the first-byte timeout: a probe must not hang the loop.
        let answer = tokio::time::timeout(Duration::from_secs(10), upstreams.models(account)).await;
        if matches!(answer, Ok(Ok(_))) {
            match coordinator.clear_cooldown(&account.id).await {
                Ok(()) => {
                    tracing::info!(account = %account.settings.name, "probe answered: cooldown ended");
                }
                Err(e) => {
                    tracing::warn!(account = %account.settings.name, error = %e, "probe answered but the cooldown could not be ended");
                }
            }
        }
    }
}

/// Seconds an upstream's `retry-after` value asks for at `now`: delay-seconds, or an HTTP-date
/// (seconds until then, rounded up; 0 once past). A run of digits too large for `u64` saturates
/// rather than being ignored: it asks for a long wait, which the caller caps. `None` for
/// anything else (negative, fractional, garbage).
pub fn retry_after_secs(value: &str, now: SystemTime) -> Option<u64> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(value.parse().unwrap_or(u64::MAX));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).map_or(0, |d| {
        d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
    }))
}

/// The cooldown `error` earns under `config`: connect errors, first-byte timeouts, broken
/// transports, 5xx, 429 (for its `retry-after` when given, at most `max_retry_after_secs`) and
/// 401/403.
pub fn cooldown_for(config: &Routing, error: &UpstreamError, now: UnixMillis) -> Option<Cooldown> {
    let (secs, reason) = match error {
        UpstreamError::BadProxy(_) | UpstreamError::ProxyConnect(_) => {
            (config.cooldown_connect_secs, "proxy unusable".to_owned())
        }
        UpstreamError::Connect(_) => (config.cooldown_connect_secs, "connect error".to_owned()),
        UpstreamError::FirstByteTimeout(_) => {
            (config.cooldown_timeout_secs, "no answer in time".to_owned())
        }
        UpstreamError::Transport(_) => (
            config.cooldown_server_error_secs,
            "connection broke".to_owned(),
        ),
        UpstreamError::BadAnswer(_) => (
            config.cooldown_server_error_secs,
            "unusable answer".to_owned(),
        ),
        // Closed without an answer on a new connection as well: the request is the likely
        // cause (a client-caused failure must not cool the account down).
        UpstreamError::Dropped(_) => return None,
        UpstreamError::Status {
            status,
            retry_after,
            ..
        } => match status {
            429 => (
                retry_after.map_or(config.cooldown_rate_limit_secs, |secs| {
                    secs.min(config.max_retry_after_secs)
                }),
                "HTTP 429".to_owned(),
            ),
            401 | 403 => (config.cooldown_auth_secs, format!("HTTP {status}")),
            500..=599 => (config.cooldown_server_error_secs, format!("HTTP {status}")),
            _ => return None,
        },
    };
    if secs == 0 {
        return None;
    }
    let millis = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX / 2);
    Some(Cooldown {
        until: now.saturating_add(millis),
        reason,
    })
}

/// Current-state gauges for `/metrics`, read from live state at scrape time: per account whether
/// it is enabled, its requests in flight and whether it is cooling down; the queue depth and the
/// requests in flight on this instance.
pub fn gauges(state: &crate::state::AppState) -> Vec<crate::metrics::Gauge> {
    use crate::metrics::Gauge;
    let snapshot = state.accounts.snapshot();
    let coordinator = state.routing.coordinator();
    let now = now_millis();
    let per_account =
        |name: &'static str, help: &'static str, value: &dyn Fn(&LiveAccount) -> f64| {
            snapshot
                .accounts
                .iter()
                .map(|a| Gauge {
                    name,
                    help,
                    labels: vec![("account", a.settings.name.clone())],
                    value: value(a),
                })
                .collect::<Vec<_>>()
        };
    let mut gauges = per_account(
        "relayd_account_enabled",
        "1 when the account takes traffic, 0 when disabled.",
        &|a| f64::from(u8::from(a.settings.enabled)),
    );
    gauges.extend(per_account(
        "relayd_account_in_flight",
        "Requests in flight per account (cluster-wide with the Redis store).",
        &|a| f64::from(coordinator.in_flight(&a.id)),
    ));
    gauges.extend(per_account(
        "relayd_account_cooling_down",
        "1 while the account is skipped after an upstream failure.",
        &|a| f64::from(u8::from(coordinator.cooldown(&a.id, now).is_some())),
    ));
    gauges.push(Gauge {
        name: "relayd_queue_depth",
        help: "Requests waiting for a free slot.",
        labels: Vec::new(),
        value: state.routing.queue_depth() as f64,
    });
    gauges.push(Gauge {
        name: "relayd_requests_in_flight",
        help: "Client requests being served by this instance.",
        labels: Vec::new(),
        value: state.in_flight.load(Ordering::Relaxed) as f64,
    });
    gauges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, retry_after: Option<u64>) -> UpstreamError {
        UpstreamError::Status {
            status,
            retry_after,
            body: String::new(),
        }
    }

    #[test]
    fn cooldowns_per_cause() {
        let config = Routing::default();
        let at = |e: &UpstreamError| cooldown_for(&config, e, 0).map(|c| c.until);
        assert_eq!(
            at(&status(429, Some(7))),
            Some(7_000),
            "retry-after honoured"
        );
        assert_eq!(
            at(&status(429, None)),
            Some(1000 * i64::try_from(config.cooldown_rate_limit_secs).unwrap())
        );
        assert_eq!(
            at(&status(503, None)),
            Some(1000 * i64::try_from(config.cooldown_server_error_secs).unwrap())
        );
        assert_eq!(
            at(&status(401, None)),
            Some(1000 * i64::try_from(config.cooldown_auth_secs).unwrap())
        );
        assert_eq!(
            at(&UpstreamError::Connect("refused".into())),
            Some(1000 * i64::try_from(config.cooldown_connect_secs).unwrap())
        );
        assert_eq!(
            at(&UpstreamError::FirstByteTimeout(Duration::from_secs(1))),
            Some(1000 * i64::try_from(config.cooldown_timeout_secs).unwrap())
        );
        assert_eq!(
            at(&status(400, None)),
            None,
            "the request's fault, not the account's"
        );
        assert_eq!(at(&status(404, None)), None);
    }

    #[test]
    fn a_retry_after_is_capped_and_never_overflows() {
        let config = Routing {
            max_retry_after_secs: 600,
            ..Routing::default()
        };
        let until = |secs: u64, now: UnixMillis| {
            cooldown_for(&config, &status(429, Some(secs)), now).map(|c| c.until)
        };
        assert_eq!(until(7, 1_000), Some(8_000), "under the cap: as asked");
        assert_eq!(until(600, 1_000), Some(601_000));
        assert_eq!(
            until(999_999_999, 1_000),
            Some(601_000),
            "the issue's header"
        );
        assert_eq!(until(u64::MAX, 1_000), Some(601_000));
        assert_eq!(
            until(u64::MAX, i64::MAX - 5),
            Some(i64::MAX),
            "saturates at the end of time"
        );
        assert_eq!(until(0, 1_000), None, "retry-after: 0 means no wait");
        // The ceiling is for what an upstream says; configured durations stay as configured.
        let long = Routing {
            max_retry_after_secs: 1,
            cooldown_rate_limit_secs: 30,
            cooldown_auth_secs: 300,
            ..Routing::default()
        };
        let at = |e: &UpstreamError| cooldown_for(&long, e, 0).map(|c| c.until);
        assert_eq!(at(&status(429, Some(u64::MAX))), Some(1_000));
        assert_eq!(at(&status(429, None)), Some(30_000));
        assert_eq!(at(&status(401, None)), Some(300_000));
        // Configured durations near u64::MAX do not overflow either.
        let huge = Routing {
            cooldown_auth_secs: u64::MAX,
            ..Routing::default()
        };
        assert!(cooldown_for(&huge, &status(403, None), 0).is_some_and(|c| c.until > 0));
    }

    #[test]
    fn retry_after_values_parse_as_seconds_or_http_dates() {
        // Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example date.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let parse = |v: &str| retry_after_secs(v, now);
        assert_eq!(parse("120"), Some(120));
        assert_eq!(parse(" 7 "), Some(7));
        assert_eq!(parse("0"), Some(0));
        assert_eq!(parse("18446744073709551615"), Some(u64::MAX));
        assert_eq!(
            parse("99999999999999999999999999"),
            Some(u64::MAX),
            "saturates"
        );
        assert_eq!(parse("Sun, 06 Nov 1994 08:50:37 GMT"), Some(60));
        assert_eq!(
            parse("Sunday, 06-Nov-94 08:49:47 GMT"),
            Some(10),
            "RFC 850 form"
        );
        assert_eq!(parse("Sun Nov  6 08:49:57 1994"), Some(20), "asctime form");
        assert_eq!(
            parse("Sat, 05 Nov 1994 08:49:37 GMT"),
            Some(0),
            "in the past"
        );
        assert_eq!(
            parse("Fri, 31 Dec 9999 23:59:59 GMT").map(|s| s > 0),
            Some(true)
        );
        for bad in ["", "-1", "1.5", "soon", "0x10", "Sun, 06 Nov 1994"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn long_session_ids_are_hashed_and_still_stick() {
        let key = KeyId("key_1".into());
        let other = KeyId("key_2".into());
        // Short ids are kept as they are, per key.
        assert_eq!(session_key(&key, "abc"), "key_1\u{0}abc");
        assert_ne!(session_key(&key, "abc"), session_key(&other, "abc"));
        let at_limit = "s".repeat(MAX_SESSION_ID_BYTES);
        assert!(session_key(&key, &at_limit).ends_with(&at_limit));
        // Longer ones are a bounded, stable hash of the whole id.
        let bound = "key_1".len() + 1 + "sha256:".len() + 64;
        let just_over = "s".repeat(MAX_SESSION_ID_BYTES + 1);
        let huge = "x".repeat(1 << 20);
        let mut huge_too = huge.clone();
        huge_too.push('y');
        for id in [&just_over, &huge, &huge_too] {
            let k = session_key(&key, id);
            assert_eq!(k.len(), bound, "{id:.20}…");
            assert_eq!(k, session_key(&key, id), "stable");
        }
        assert_ne!(session_key(&key, &huge), session_key(&key, &huge_too));
        assert_ne!(session_key(&key, &huge), session_key(&other, &huge));
        // Multi-byte ids are measured in bytes: 100 four-byte characters are hashed.
        assert!(session_key(&key, &"🦀".repeat(100)).contains("sha256:"));

        let map = StickyMap {
            ttl: Duration::from_secs(60),
            max: 10,
            map: Mutex::new(HashMap::new()),
        };
        let a = AccountId("acc_a".into());
        map.put(&session_key(&key, &huge), &a);
        assert_eq!(map.get(&session_key(&key, &huge)), Some(a), "still sticky");
        assert_eq!(map.get(&session_key(&key, &huge_too)), None);
        let stored: usize = map.map.lock().unwrap().keys().map(String::len).sum();
        assert_eq!(stored, bound, "one bounded key for a 1 MiB id");
    }

    #[test]
    fn sticky_sessions_expire_and_are_bounded() {
        let map = StickyMap {
            ttl: Duration::from_secs(60),
            max: 2,
            map: Mutex::new(HashMap::new()),
        };
        let a = AccountId("acc_a".into());
        let b = AccountId("acc_b".into());
        map.put("s1", &a);
        map.put("s2", &b);
        map.put("s3", &a);
        assert_eq!(map.map.lock().unwrap().len(), 2);
        assert_eq!(map.get("s1"), None, "the oldest session was forgotten");
        assert_eq!(map.get("s3"), Some(a));
        let expired = StickyMap {
            ttl: Duration::ZERO,
            max: 2,
            map: Mutex::new(HashMap::new()),
        };
        expired.put("s1", &b);
        assert_eq!(expired.get("s1"), None);
    }
}
