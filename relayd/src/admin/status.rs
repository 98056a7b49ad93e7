//! `GET /admin/v1/status`: version, uptime, store kind, account and key counts, requests in flight.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use shared::admin::{AccountCounts, AccountState, Status};

use crate::state::AppState;

pub(super) async fn status(State(state): State<AppState>) -> Json<Status> {
    let snapshot = state.accounts.snapshot();
    let mut accounts = AccountCounts {
        total: snapshot.accounts.len(),
        ..AccountCounts::default()
    };
    let now = shared::time::now_millis();
    let coordinator = state.routing.coordinator();
    for account in &snapshot.accounts {
        match crate::routing::account_state(account, coordinator.as_ref(), now) {
            AccountState::Ok => accounts.up += 1,
            AccountState::CoolingDown { .. } => accounts.cooling_down += 1,
            AccountState::Disabled => accounts.disabled += 1,
        }
    }
    Json(Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: state.started.elapsed().as_secs(),
        store: state.store.kind().as_str().to_owned(),
        accounts,
        active_keys: state.keys.active_count(),
        in_flight: state.in_flight.load(Ordering::Relaxed),
    })
}
