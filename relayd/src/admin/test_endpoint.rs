//! `POST /admin/v1/test-endpoint`: checks that an upstream works for relay traffic — a saved
//! account, or settings not saved yet — and says what to fix when it does not.
//!
//! The checks go through [`Upstreams`], the same pooled clients, proxy, URL shapes and auth
//! headers as real traffic, so a pass means the relay itself can use the upstream. They run one
//! after another (so the latency figures are not skewed by our own concurrent requests), each
//! bounded by its own timeout:
//!
//! 1. `reachable` — `GET /models` is answered at all (any HTTP status counts);
//! 2. `model_listed` — that answer lists the deployment. Azure: not applicable (its `/models`
//!    lists base models, not deployments; the chat check proves the deployment exists), reported
//!    as passed and skipped;
//! 3. `chat` — a tiny non-streaming chat returns a choice;
//! 4. `stream` — a streaming chat yields chunks and ends with `[DONE]` or a `finish_reason`;
//! 5. `tool_call` — a call forcing the `get_weather` function comes back as `tool_calls` with
//!    JSON-object arguments;
//! 6. `latency` — figures from the streaming chat: time to first body byte, total time, output
//!    tokens per second (usage when the upstream sends it, else one token per content chunk).
//!
//! When the endpoint is unreachable the later checks are reported as failed and skipped: they
//! would all fail with the same cause. The API key (and proxy credentials) never appear in the
//! report or the log: every text taken from the upstream is scrubbed of them.
//!
//! This file holds the handler and the timeouts; `target` resolves what to test, `checker` runs
//! the checks and assembles the report, `checks` and `stream` are the chat checks, and `hints`
//! turns failures into advice and scrubs secrets.

mod checker;
mod checks;
mod hints;
mod stream;
mod target;

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use shared::admin::{TestEndpointReport, TestEndpointRequest};
use shared::error::FieldError;

use crate::error::{AdminApiError, ApiError};
use crate::extract::AdminJson;
use crate::state::AppState;
use checker::Checker;
use target::resolve;

/// Default bound on each chat check.
const DEFAULT_CHAT_TIMEOUT_SECS: u64 = 60;
/// Default bound on the reachability check.
const DEFAULT_REACH_TIMEOUT_SECS: u64 = 10;
/// Largest timeout a request may ask for.
const MAX_TIMEOUT_SECS: u64 = 600;

/// The handler.
pub(super) async fn test_endpoint(
    State(state): State<AppState>,
    AdminJson(request): AdminJson<TestEndpointRequest>,
) -> Result<Json<TestEndpointReport>, AdminApiError> {
    let limits = Limits::of(&request)?;
    let (account, target) = resolve(&state, request)?;
    let report = Checker::new(&state.upstreams, &account, limits)
        .run(target)
        .await;
    let failed = report.failed_checks();
    tracing::info!(
        account = %account.settings.name,
        endpoint = %account.settings.endpoint,
        ok = report.ok,
        failed = ?failed,
        "endpoint tested"
    );
    Ok(Json(report))
}

/// The timeouts of one test.
#[derive(Debug, Clone, Copy)]
struct Limits {
    chat: Duration,
    reach: Duration,
}

impl Limits {
    fn of(request: &TestEndpointRequest) -> Result<Self, ApiError> {
        let mut errors = Vec::new();
        let mut secs = |value: Option<u64>, default: u64, field: &str| match value {
            None => Duration::from_secs(default),
            Some(s) if (1..=MAX_TIMEOUT_SECS).contains(&s) => Duration::from_secs(s),
            Some(s) => {
                errors.push(field_error(
                    field,
                    format!("must be between 1 and {MAX_TIMEOUT_SECS} seconds, got {s}"),
                ));
                Duration::from_secs(default)
            }
        };
        let limits = Self {
            chat: secs(
                request.timeout_secs,
                DEFAULT_CHAT_TIMEOUT_SECS,
                "timeoutSecs",
            ),
            reach: secs(
                request.reachability_timeout_secs,
                DEFAULT_REACH_TIMEOUT_SECS,
                "reachabilityTimeoutSecs",
            ),
        };
        if errors.is_empty() {
            Ok(limits)
        } else {
            Err(ApiError::fields(errors))
        }
    }
}

fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        row: None,
        name: None,
        field: Some(field.to_owned()),
        message: message.into(),
    }
}
