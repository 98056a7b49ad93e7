//! `GET /admin/v1/models`: every client-facing model name (and pattern) with the accounts that
//! serve it, in routing order, and the conversation-affinity rule applied inside that order.

use axum::Json;
use axum::extract::State;
use shared::admin::{AffinityRule, RoutingTable};

use crate::routing;
use crate::state::AppState;

pub(super) async fn table(State(state): State<AppState>) -> Json<RoutingTable> {
    Json(routing_table(&state))
}

/// The table itself, for the endpoint and for the status page.
pub(crate) fn routing_table(state: &AppState) -> RoutingTable {
    let mut table = routing::table(
        &state.accounts.snapshot(),
        state.routing.coordinator().as_ref(),
    );
    let config = state.routing.config();
    table.affinity = Some(AffinityRule {
        prefix_affinity: config.prefix_affinity,
        load_bound: config.affinity_load_bound,
        moved_ttl_secs: config.sticky_ttl_secs,
    });
    table
}
