//! The admin API under `/admin/v1`: accounts, batch import, the routing table, relay keys, usage,
//! status, the live snapshot and endpoint tests. Every route requires the admin bearer token; every answer is JSON,
//! errors included.

mod accounts;
mod keys;
mod models;
mod snapshot;
mod status;
mod test_endpoint;
mod usage;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

use crate::error::{AdminApiError, ApiError};

// What the status page (`crate::ui`) renders, read the way the endpoints read it.
use crate::state::AppState;
pub(crate) use models::routing_table;
pub(crate) use snapshot::take as live_snapshot;
pub(crate) use usage::totals as usage_totals;

/// The admin routes, already behind the admin-token check.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/admin/v1/accounts",
            get(accounts::list).post(accounts::create),
        )
        .route(
            "/admin/v1/accounts/{id}",
            get(accounts::get)
                .patch(accounts::update)
                .delete(accounts::delete),
        )
        .route("/admin/v1/accounts/{id}/enable", post(accounts::enable))
        .route("/admin/v1/accounts/{id}/disable", post(accounts::disable))
        .route("/admin/v1/accounts/{id}/reset", post(accounts::reset))
        .route("/admin/v1/accounts/{id}/probe", post(accounts::probe))
        .route("/admin/v1/import", post(accounts::import))
        .route("/admin/v1/models", get(models::table))
        .route("/admin/v1/keys", get(keys::list).post(keys::create))
        .route(
            "/admin/v1/keys/{id}",
            get(keys::get).patch(keys::update).delete(keys::revoke),
        )
        .route("/admin/v1/keys/{id}/revoke", post(keys::revoke))
        .route("/admin/v1/status", get(status::status))
        .route("/admin/v1/snapshot", get(snapshot::snapshot))
        .route("/admin/v1/usage", get(usage::report))
        .route(
            "/admin/v1/test-endpoint",
            post(test_endpoint::test_endpoint),
        )
        .route_layer(middleware::from_fn_with_state(state, require_admin))
}

/// Rejects requests without the admin bearer token.
async fn require_admin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, AdminApiError> {
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match token {
        Some(token) if state.admin_token.verify(token) => Ok(next.run(req).await),
        Some(_) => Err(ApiError::unauthenticated("invalid admin token").into()),
        None => Err(ApiError::unauthenticated(
            "missing admin token: send `Authorization: Bearer <token>` (the token is in <data_dir>/admin.token)",
        )
        .into()),
    }
}
