//! `POST /v1/chat/completions` for OpenAI clients: the body passes through with the model name
//! rewritten to the account's deployment (and back in the answer); streams are forwarded as
//! they arrive while a tap reads usage.

use axum::extract::{Extension, Request, State};
use axum::response::Response;
use bytes::Bytes;

use super::answer::Answer;
use super::dispatch::{Attempt, dispatch};
use super::stream::{openai_passthrough, stream_limits};
use super::trace::{Trace, logged_model};
use super::{
    Caller, RequestId, account_header, in_flight_guard, json_response, sse_response,
    translate_error,
};
use crate::error::{ApiError, Surface};
use crate::extract::read_body;
use crate::state::AppState;
use crate::translate::{
    OpenAiRequestInfo, OpenAiStreamTap, prepare_openai_request, rewrite_openai_response,
};

/// `POST /v1/chat/completions`.
pub(super) async fn chat_completions(
    State(state): State<AppState>,
    Extension(Caller(caller)): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    req: Request,
) -> Response {
    let mut trace = Trace::start(&state, &request_id.0, Surface::OpenAi, &caller);
    match inner(&state, &caller, &request_id, &mut trace, req).await {
        Ok(response) => response,
        Err(e) => {
            trace.failed(&e, Surface::OpenAi);
            e.into_response_for(Surface::OpenAi)
        }
    }
}

async fn inner(
    state: &AppState,
    caller: &crate::store::KeyRecord,
    request_id: &RequestId,
    trace: &mut Trace,
    req: Request,
) -> Result<Response, ApiError> {
    let session = super::session_header(req.headers());
    let body = read_body(req, state).await?;
    // Validate and learn the model once; each attempt re-targets the deployment.
    let (_, info) = prepare_openai_request(&body, "").map_err(translate_error)?;
    let model = info.requested_model.clone();
    trace.model(&model);
    let admission = crate::limits::admit(state.routing.coordinator(), &caller.key).await?;
    let guard = in_flight_guard(state);
    let dispatched = dispatch(
        state,
        trace,
        caller,
        &model,
        session.as_deref(),
        |account| {
            let (upstream, info) = prepare_openai_request(&body, &account.settings.deployment_name)
                .map_err(translate_error)?;
            Ok(Attempt {
                body: Bytes::from(upstream),
                stream: info.stream,
                extra: info,
            })
        },
    )
    .await?;
    let account = dispatched.account;
    let info: OpenAiRequestInfo = dispatched.extra;
    // The one info line per request is written by the trace when the request ends.
    tracing::debug!(
        request_id = %request_id.0,
        key = %caller.key.name,
        model = %logged_model(&model),
        account = %account.settings.name,
        stream = info.stream,
        "dispatched"
    );
    let mut response = match dispatched.answer {
        Answer::Stream(upstream) => {
            let tap = OpenAiStreamTap::new(&info);
            let body = openai_passthrough(
                upstream,
                tap,
                stream_limits(state),
                admission,
                trace.hand_over(),
                Box::new((guard, dispatched.slot)),
            );
            sse_response(body)
        }
        Answer::Complete(upstream) => {
            let (answer, usage) = rewrite_openai_response(&upstream, &info.requested_model)
                .map_err(translate_error)?;
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
