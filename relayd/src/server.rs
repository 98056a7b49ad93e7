//! The HTTP server: one pure router builder and a `serve` that takes an already-bound listener
//! and a shutdown future (so tests bind port 0 and the binary decides how to stop).

use std::future::Future;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::connection::ReadTimeouts;
use crate::error::{ApiError, ErrorKind, Surface};
use crate::state::AppState;
use crate::workers::ConnectionLimits;

/// Every route relayd serves. Open routes: `HEAD /` (Claude Code's warm-up), `/healthz`,
/// `/readyz`; everything else requires a relay key or the admin token.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(root).head(root))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::admin::router(state.clone()))
        .merge(crate::proxy::router(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state)
}

/// Serves until `shutdown` completes, then stops accepting and lets open requests finish.
/// Connections are answered on `config.workers` threads (see [`crate::workers`]).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let workers = state.config.serving_threads();
    let server = &state.config.server;
    let limits = ConnectionLimits {
        timeouts: ReadTimeouts {
            header: server.header_read_timeout(),
            body: server.body_read_timeout(),
            keep_alive_idle: server.keep_alive_idle(),
        },
        max_connections: server.connection_cap(),
    };
    tracing::info!(
        max_connections = limits.max_connections,
        "serving at most {} client connections at once (server.max_connections{})",
        limits.max_connections,
        if server.max_connections == 0 {
            ", derived from the open-file limit"
        } else {
            ""
        }
    );
    crate::workers::serve(listener, router(state), workers, limits, shutdown).await
}

async fn root() -> &'static str {
    "relayd\n"
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => "ready\n".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
        }
    }
}

/// `GET /metrics` on the main listener: requires `metrics.token` when configured, else the admin
/// token (the counters name accounts and models, which are not public).
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let presented = crate::auth::presented_credential(&headers);
    let allowed = match (&state.config.metrics.token, presented) {
        (_, None) => false,
        (Some(token), Some(p)) => crate::auth::AdminToken::new(token).verify(p),
        (None, Some(p)) => state.admin_token.verify(p),
    };
    if allowed {
        render_metrics(&state)
    } else {
        metrics_refused()
    }
}

/// `GET /metrics` on the separate `metrics.listen` address: open (the address is chosen to be
/// reachable only by the scraper) unless `metrics.token` is set.
async fn open_metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let allowed = match &state.config.metrics.token {
        None => true,
        Some(token) => crate::auth::presented_credential(&headers)
            .is_some_and(|p| crate::auth::AdminToken::new(token).verify(p)),
    };
    if allowed {
        render_metrics(&state)
    } else {
        metrics_refused()
    }
}

/// The router of the separate metrics listener: `/metrics` and nothing else.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(open_metrics))
        .fallback(not_found)
        .with_state(state)
}

fn metrics_refused() -> Response {
    ApiError::unauthenticated("metrics need `Authorization: Bearer <metrics token or admin token>`")
        .into_response_for(Surface::Admin)
}

fn render_metrics(state: &AppState) -> Response {
    let gauges = crate::routing::gauges(state);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&gauges),
    )
        .into_response()
}

async fn not_found(uri: Uri) -> Response {
    ApiError::new(ErrorKind::NotFound, format!("no route for {}", uri.path()))
        .into_response_for(Surface::for_path(uri.path()))
}

async fn method_not_allowed(uri: Uri) -> Response {
    ApiError::new(
        ErrorKind::MethodNotAllowed,
        format!("method not allowed on {}", uri.path()),
    )
    .into_response_for(Surface::for_path(uri.path()))
}
