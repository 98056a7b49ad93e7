//! `GET /admin/v1/snapshot`: the live state of this relayd in one document — the process, every
//! account (state, slots, cumulative counters) and every relay key (counters, tokens today) —
//! for `relayctl top` and monitoring scripts, which poll it every second.
//!
//! So it reads memory: the account and key snapshots, the coordinator's cached slots and
//! cooldowns, and the metrics registry's per-account and per-key totals (one short section under
//! the lock requests already take). Two reads may leave the process: the day's count of each
//! key with a `tokensPerDay` limit (a map read locally, a Redis `GET` per key with Redis, sent
//! together), and one usage query for the day's tokens of the other keys. Rates are left to the
//! client (two snapshots' counters over their `at`), so nothing is kept per viewer.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use shared::admin::{
    AccountState, LatencyHistogram, LiveState, Snapshot, SnapshotAccount, SnapshotKey,
    SnapshotServer,
};
use shared::key::{KeyId, RelayKey};
use shared::profile::ServerFamily;
use shared::time::{UnixMillis, now_millis};
use shared::usage::{UsageGroupBy, UsageQuery};

use crate::accounts::LiveAccount;
use crate::coordinator::{Coordinator, utc_day};
use crate::metrics::{HISTOGRAM_BOUNDS, Histogram};
use crate::state::AppState;

pub(super) async fn snapshot(State(state): State<AppState>) -> Json<Snapshot> {
    Json(take(&state).await)
}

/// The snapshot itself, for the endpoint and for the status page (which renders it as HTML).
pub(crate) async fn take(state: &AppState) -> Snapshot {
    let now = now_millis();
    let accounts = state.accounts.snapshot();
    let keys: Vec<RelayKey> = state
        .keys
        .list()
        .into_iter()
        .filter(|k| k.revoked_at.is_none())
        .collect();
    let names: Vec<&str> = accounts
        .accounts
        .iter()
        .map(|a| a.settings.name.as_str())
        .collect();
    let ids: Vec<&KeyId> = keys.iter().map(|k| &k.id).collect();
    let (account_totals, key_totals) = state.metrics.totals(&names, &ids);
    let coordinator = state.routing.coordinator();
    let accounts = accounts
        .accounts
        .iter()
        .zip(account_totals)
        .map(|(account, totals)| {
            let in_flight = coordinator.in_flight(&account.id);
            let s = &account.settings;
            SnapshotAccount {
                id: account.id.clone(),
                name: s.name.clone(),
                enabled: s.enabled,
                state: live_state(account, coordinator.as_ref(), in_flight, now),
                in_flight,
                concurrency: s.concurrency,
                priority: s.priority,
                family: account
                    .profile
                    .as_ref()
                    .map(|p| p.family)
                    .filter(|f| *f != ServerFamily::Unknown),
                context_window: account.resolved.context_window.value,
                requests: totals.requests,
                errors: totals.errors,
                failed_attempts: totals.failed_attempts,
                tokens: totals.tokens,
                ttfb: histogram(&totals.ttfb),
                latency_seconds_total: totals.latency_seconds,
            }
        })
        .collect();
    let today = tokens_today(state, &keys, now).await;
    let keys = keys
        .into_iter()
        .zip(key_totals)
        .zip(today)
        .map(|((key, totals), tokens_today)| SnapshotKey {
            state: key.refusal(now).unwrap_or("active").to_owned(),
            id: key.id,
            name: key.name,
            requests: totals.requests,
            errors: totals.errors,
            tokens: totals.tokens,
            tokens_today,
            tokens_per_day: key.limits.tokens_per_day,
        })
        .collect();
    Snapshot {
        at: now,
        server: SnapshotServer {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: state.started.elapsed().as_secs(),
            store: state.store.kind().as_str().to_owned(),
            in_flight: state.in_flight.load(Ordering::Relaxed),
            queue_depth: state.routing.queue_depth() as u64,
        },
        ttfb_bounds: HISTOGRAM_BOUNDS.to_vec(),
        accounts,
        keys,
    }
}

/// The routing state, refined: an enabled, healthy account whose slots are all taken is `full`.
fn live_state(
    account: &LiveAccount,
    coordinator: &dyn Coordinator,
    in_flight: u32,
    now: UnixMillis,
) -> LiveState {
    match crate::routing::account_state(account, coordinator, now) {
        AccountState::Disabled => LiveState::Disabled,
        AccountState::CoolingDown { until, reason } => LiveState::CoolingDown { until, reason },
        AccountState::Ok if in_flight >= account.settings.concurrency => LiveState::Full,
        AccountState::Ok => LiveState::Ok,
    }
}

fn histogram(h: &Histogram) -> LatencyHistogram {
    LatencyHistogram {
        buckets: h.buckets.to_vec(),
        count: h.count,
        sum_seconds: h.sum,
    }
}

/// Tokens each key used this UTC day, in the order of `keys`: a key with a `tokensPerDay` limit
/// from the counter that limit is checked against; the others from the usage totals, grouped by
/// key name (so keys sharing a name share a total). `None` where the source failed: the live
/// view shows the rest rather than failing as a whole.
async fn tokens_today(state: &AppState, keys: &[RelayKey], now: UnixMillis) -> Vec<Option<u64>> {
    let coordinator = state.routing.coordinator();
    let limited = futures_util::future::join_all(
        keys.iter()
            .filter(|k| k.limits.tokens_per_day.is_some())
            .map(|k| coordinator.tokens_today(&k.id, now)),
    );
    let unlimited = async {
        if keys.iter().all(|k| k.limits.tokens_per_day.is_some()) {
            return Some(HashMap::new());
        }
        let query = UsageQuery {
            since: Some(utc_day(now) * 86_400_000),
            group_by: Some(UsageGroupBy::Key),
            ..UsageQuery::default()
        };
        match state.store.usage_totals(&query).await {
            Ok(report) => Some(
                report
                    .groups
                    .into_iter()
                    .map(|g| (g.group, g.tokens.total()))
                    .collect::<HashMap<String, u64>>(),
            ),
            Err(e) => {
                // Polled every second: the failing store is reported elsewhere (readyz, usage).
                tracing::debug!(error = %e, "snapshot: cannot read today's usage");
                None
            }
        }
    };
    let (limited, unlimited) = tokio::join!(limited, unlimited);
    let mut limited = limited.into_iter();
    keys.iter()
        .map(|k| {
            if k.limits.tokens_per_day.is_some() {
                limited.next().and_then(Result::ok)
            } else {
                unlimited
                    .as_ref()
                    .map(|totals| totals.get(&k.name).copied().unwrap_or(0))
            }
        })
        .collect()
}
