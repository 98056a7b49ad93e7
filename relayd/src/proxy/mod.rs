//! The client-facing API: the Anthropic Messages routes Claude Code calls and the OpenAI routes
//! OpenAI-compatible clients call, under `/v1` and the `/api`, `/claude` and `/openai` prefixes
//! that users of other relays already have in their base URLs.
//!
//! Every route here requires a relay key (see [`authenticate`]); errors are answered in the
//! protocol of the route that was called.

mod answer;
mod anthropic;
mod dispatch;
mod handler;
mod models;
mod native;
mod openai;
mod stream;
mod trace;
mod window;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::accounts::LiveAccount;
use crate::auth::{presented_credential, random_hex};
use crate::error::{ApiError, Surface};
use crate::state::AppState;

/// Path prefixes under which the client API is also served.
const PREFIXES: [&str; 4] = ["", "/api", "/claude", "/openai"];

/// The request id of a client request, also returned in `x-request-id`.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The client routes, behind relay-key authentication.
pub fn router(state: AppState) -> Router<AppState> {
    let mut router = Router::new();
    for prefix in PREFIXES {
        router = router
            .route(&format!("{prefix}/v1/models"), get(models::list))
            .route(
                &format!("{prefix}/v1/messages"),
                post(handler::handle::<anthropic::Messages>),
            )
            .route(
                &format!("{prefix}/v1/messages/count_tokens"),
                post(anthropic::count),
            )
            .route(
                &format!("{prefix}/v1/chat/completions"),
                post(handler::handle::<openai::ChatCompletions>),
            );
    }
    router
        .route_layer(middleware::from_fn_with_state(state, authenticate))
        .route_layer(middleware::from_fn(request_id))
}

/// Gives every client request an id, in the log and in the `x-request-id` response header.
async fn request_id(mut req: Request, next: Next) -> Response {
    let id = RequestId(format!("req_{}", random_hex(12)));
    req.extensions_mut().insert(id.clone());
    let mut response = next.run(req).await;
    if let Ok(value) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// A streamed answer: the body as it comes, with the SSE content type and no caching.
fn sse_response<S, E>(body: S) -> Response
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
    E: Into<axum::BoxError>,
{
    let mut response = axum::body::Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    response
}

/// A complete JSON answer already serialised by a translator.
fn json_response(body: Vec<u8>) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Names the account that served a response (`x-relay-account`).
fn account_header(response: &mut Response, account: &LiveAccount) {
    if let Ok(value) = HeaderValue::from_str(&account.settings.name) {
        response.headers_mut().insert("x-relay-account", value);
    }
}

/// The client's session id for sticky routing (`X-Claude-Code-Session-Id`), when present.
fn session_header(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get("x-claude-code-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Counts one request in flight until dropped (held by streamed bodies until their last byte).
struct InFlight(Arc<std::sync::atomic::AtomicU64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn in_flight_guard(state: &AppState) -> InFlight {
    state.in_flight.fetch_add(1, Ordering::Relaxed);
    InFlight(Arc::clone(&state.in_flight))
}

/// Checks the relay key (`Authorization: Bearer`, `x-api-key` or `api-key`); refusals are a 401
/// in the protocol of the route called.
async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match state.keys.authenticate(presented_credential(req.headers())) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(refusal) => {
            tracing::info!(path = %req.uri().path(), reason = ?refusal, "client refused");
            ApiError::unauthenticated(refusal.message())
                .into_response_for(Surface::for_request(req.uri().path(), req.headers()))
                .into_response()
        }
    }
}

/// The client's view of a translation failure: its own mistakes are 400s naming the field, the
/// upstream's are 502s (logged, with the details kept out of the answer).
fn translate_error(e: crate::translate::TranslateError) -> ApiError {
    use crate::translate::TranslateError;
    match e {
        TranslateError::InvalidRequest { path, message } => {
            let mut error = ApiError::invalid(format!("{path}: {message}"));
            error.param = Some(path);
            error
        }
        TranslateError::InvalidUpstream { path, message } => {
            tracing::warn!(%path, %message, "untranslatable upstream answer");
            ApiError::new(
                crate::error::ErrorKind::BadGateway,
                "the upstream answered with something relayd cannot translate",
            )
        }
    }
}
