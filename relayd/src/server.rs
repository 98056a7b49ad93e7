//! The HTTP server: one pure router builder and a `serve` that takes an already-bound listener
//! and a shutdown future (so tests bind port 0 and the binary decides how to stop).

use std::future::Future;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::error::{ApiError, ErrorKind, Surface};
use crate::state::AppState;

/// Every route relayd serves. Open routes: `HEAD /` (Claude Code's warm-up), `/healthz`,
/// `/readyz`; everything else requires a relay key or the admin token.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(root).head(root))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(crate::admin::router(state.clone()))
        .merge(crate::proxy::router(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state)
}

/// Serves until `shutdown` completes, then stops accepting and lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // TCP_NODELAY: a streamed answer is many small writes (one SSE event each); with Nagle's
    // algorithm each one after the first waits for the client's delayed ACK, 40 ms per event.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY on a client connection");
        }
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
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
