//! The one handler shell both client protocols run through: authenticate (done by the
//! middleware, which hands over the [`Caller`]), read and parse the body, check the key's limits,
//! route and dispatch with failover, then answer as a stream or a complete body, recording usage
//! and answering errors in the caller's protocol. What differs between the Anthropic and the
//! OpenAI route is a [`Protocol`]: how a request is parsed, what each account is sent, and how
//! its answer is read back.

use std::borrow::Cow;
use std::future::Future;

use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use bytes::Bytes;

use super::answer::Answer;
use super::dispatch::{Ask, Attempt, dispatch};
use super::stream::{Guard, StreamLimits, stream_limits};
use super::trace::{Trace, logged_model};
use super::window::Prompt;
use super::{RequestId, account_header, in_flight_guard, json_response};
use crate::accounts::LiveAccount;
use crate::coordinator::AffinityKey;
use crate::error::{ApiError, Surface};
use crate::extract::read_body;
use crate::keys::Caller;
use crate::limits::Admission;
use crate::state::AppState;
use crate::translate::Usage;
use crate::upstream::BodyStream;

/// What a client protocol adds to the shell.
pub(super) trait Protocol {
    /// The surface errors are answered in, and the request is recorded under.
    const SURFACE: Surface;
    /// The client's request, parsed once (borrowing the body): routing needs its model and
    /// session, each account its own translation.
    type Request<'a>: Send + Sync;
    /// What one account's translation leaves for reading its answer.
    type Extra: Send;

    /// Parses and validates the body; returns the request and the model it asks for.
    fn parse(body: &[u8]) -> Result<(Self::Request<'_>, Cow<'_, str>), ApiError>;

    /// The client headers an upstream called natively gets (none by default).
    fn forwarded(_headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        Vec::new()
    }

    /// The session id in the request itself, used when no session header was sent.
    fn session(request: &Self::Request<'_>) -> Option<String>;

    /// A hash of the request's stable prefix — what stays the same from one turn of a
    /// conversation to the next (system prompt, tools, first user message) — for requests
    /// without a session id; `None` when the body has none to hash.
    fn prefix(request: &Self::Request<'_>) -> Option<u128>;

    /// The prompt, for the accounts' context windows.
    fn prompt<'a>(request: &'a Self::Request<'_>, body: &'a Bytes) -> Prompt<'a>;

    /// A replacement body, decided before parsing (Claude Code's compaction request shrunk to
    /// the window of the accounts that would serve it); `None` keeps the body.
    fn shrink(_state: &AppState, _caller: &Caller, _body: &Bytes) -> Option<Bytes> {
        None
    }

    /// The upstream body for `account`, its output capped at `max_tokens_cap` when the
    /// account's context window leaves less than the client asked for.
    fn attempt(
        request: &Self::Request<'_>,
        body: &Bytes,
        account: &LiveAccount,
        max_tokens_cap: Option<u32>,
    ) -> Result<Attempt<Self::Extra>, ApiError>;

    /// Whether the client asked for a stream (for the log).
    fn streams(extra: &Self::Extra) -> bool;

    /// The client's streamed answer for an upstream stream.
    fn stream(
        upstream: BodyStream,
        extra: Self::Extra,
        tail: StreamTail,
    ) -> impl Future<Output = Response> + Send;

    /// The client's answer for a complete upstream body, and the usage it reports.
    fn complete(
        request: &Self::Request<'_>,
        upstream: &[u8],
        extra: &Self::Extra,
    ) -> Result<(Vec<u8>, Option<Usage>), ApiError>;
}

/// What a streamed answer carries to its end: the stream's bounds, the key's admission (its
/// tokens are added when usage is known), the request's trace, and the guards (in flight, the
/// account's slot) released with the last byte.
pub(super) struct StreamTail {
    /// Idle and size bounds of the stream.
    pub limits: StreamLimits,
    /// The key's admission.
    pub admission: Admission,
    /// The request's record, finished when the stream ends.
    pub trace: Trace,
    /// Released after the last byte.
    pub guard: Guard,
}

/// The handler of a protocol's completion route.
pub(super) async fn handle<P: Protocol>(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    req: Request,
) -> Response {
    let mut trace = Trace::start(&state, &request_id.0, P::SURFACE, &caller);
    match serve::<P>(&state, &caller, &request_id, &mut trace, req).await {
        Ok(response) => response,
        Err(e) => {
            trace.failed(&e, P::SURFACE);
            e.into_response_for(P::SURFACE)
        }
    }
}

/// The conversation a request belongs to: its session id (header, else body), or else its
/// prefix when `prefix_affinity` is on.
fn affinity<P: Protocol>(
    state: &AppState,
    caller: &Caller,
    session_header: Option<String>,
    request: &P::Request<'_>,
) -> Option<AffinityKey> {
    if let Some(session) = session_header.or_else(|| P::session(request)) {
        return Some(AffinityKey::session(&caller.id, &session));
    }
    if !state.routing.config().prefix_affinity {
        return None;
    }
    P::prefix(request).map(|prefix| AffinityKey::prefix(&caller.id, prefix))
}

async fn serve<P: Protocol>(
    state: &AppState,
    caller: &Caller,
    request_id: &RequestId,
    trace: &mut Trace,
    req: Request,
) -> Result<Response, ApiError> {
    let session_header = super::session_header(req.headers());
    let forward = P::forwarded(req.headers());
    let body = read_body(req, state).await?;
    let body = P::shrink(state, caller, &body).unwrap_or(body);
    let (request, model) = P::parse(&body)?;
    trace.model(&model);
    let admission = crate::limits::admit(state.routing.coordinator(), caller).await?;
    let guard = in_flight_guard(state);
    let prompt = P::prompt(&request, &body);
    let ask = Ask {
        surface: P::SURFACE,
        forward: &forward,
        model: &model,
        affinity: affinity::<P>(state, caller, session_header, &request),
        prompt: &prompt,
    };
    let dispatched = dispatch(state, trace, caller, ask, |account, cap| {
        P::attempt(&request, &body, account, cap)
    })
    .await?;
    let account = dispatched.account;
    let extra = dispatched.extra;
    // The one info line per request is written by the trace when the request ends.
    tracing::debug!(
        request_id = %request_id.0,
        key = %caller.name,
        model = %logged_model(&model),
        account = %account.settings.name,
        stream = P::streams(&extra),
        "dispatched"
    );
    let mut response = match dispatched.answer {
        Answer::Stream(upstream) => {
            let tail = StreamTail {
                limits: stream_limits(state),
                admission,
                trace: trace.hand_over(),
                guard: Box::new((guard, dispatched.slot)),
            };
            P::stream(upstream, extra, tail).await
        }
        Answer::Complete(upstream) => {
            let (answer, usage) = P::complete(&request, &upstream, &extra)?;
            if let Some(usage) = &usage {
                admission.record(usage);
            }
            trace.answered(200, usage);
            drop((guard, dispatched.slot));
            json_response(answer)
        }
    };
    account_header(&mut response, &account);
    Ok(response)
}
