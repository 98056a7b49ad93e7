//! The HTTP server: one pure router builder and a `serve` that takes an already-bound listener
//! and a shutdown future (so tests bind port 0 and the binary decides how to stop), and the
//! `/metrics` page, whose current-state gauges are read from the live state here.

use std::future::Future;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shared::time::now_millis;
use tokio::net::TcpListener;

use crate::accounts::LiveAccount;
use crate::connection::ReadTimeouts;
use crate::error::{ApiError, ErrorKind, Surface};
use crate::metrics::Gauge;
use crate::state::AppState;
use crate::workers::ConnectionLimits;

/// Every route relayd serves. Open routes: `HEAD /` (Claude Code's warm-up), `/healthz`,
/// `/readyz`, and the status page's sign-in form and stylesheet; everything else requires a
/// relay key, the admin token, or (the status page) a signed-in session.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/", get(root).head(root))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::admin::router(state.clone()))
        .merge(crate::proxy::router(state.clone()));
    if state.config.ui.enabled {
        router = router.merge(crate::ui::router(state.clone()));
    }
    router
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
    let gauges = gauges(state);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&gauges),
    )
        .into_response()
}

/// Current-state gauges for `/metrics`, read from live state at scrape time: per account whether
/// it is enabled, its requests in flight and whether it is cooling down; the queue depth and the
/// requests in flight on this instance.
fn gauges(state: &AppState) -> Vec<Gauge> {
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
