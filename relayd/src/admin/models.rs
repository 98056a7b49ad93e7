//! `GET /admin/v1/models`: every client-facing model name (and pattern) with the accounts that
//! serve it, in routing order.

use axum::Json;
use axum::extract::State;
use shared::admin::RoutingTable;

use crate::routing;
use crate::state::AppState;

pub(super) async fn table(State(state): State<AppState>) -> Json<RoutingTable> {
    Json(routing::table(
        &state.accounts.snapshot(),
        state.routing.coordinator().as_ref(),
    ))
}
