//! `POST /v1/messages` and `POST /v1/messages/count_tokens`: the Anthropic Messages API over
//! OpenAI-compatible upstreams, streaming or not.

use std::borrow::Cow;

use axum::extract::{Extension, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use shared::account::ThinkingMapping;

use super::answer::Answer;
use super::dispatch::{Attempt, dispatch};
use super::stream::{anthropic_sse, stream_limits};
use super::trace::{Trace, logged_model};
use super::{
    Caller, RequestId, account_header, in_flight_guard, json_response, sse_response,
    translate_error,
};
use crate::auth::random_hex;
use crate::error::{ApiError, Surface};
use crate::extract::read_body;
use crate::state::AppState;
use crate::translate::{
    AnthropicRequest, ReasoningMode, RequestContext, StreamTranslator, UpstreamOptions,
    count_tokens, openai_to_anthropic_with,
};

/// `POST /v1/messages`.
pub(super) async fn messages(
    State(state): State<AppState>,
    Extension(Caller(caller)): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    req: Request,
) -> Response {
    let mut trace = Trace::start(&state, &request_id.0, Surface::Anthropic, &caller);
    match messages_inner(&state, &caller, &request_id, &mut trace, req).await {
        Ok(response) => response,
        Err(e) => {
            trace.failed(&e, Surface::Anthropic);
            e.into_response_for(Surface::Anthropic)
        }
    }
}

async fn messages_inner(
    state: &AppState,
    caller: &crate::store::KeyRecord,
    request_id: &RequestId,
    trace: &mut Trace,
    req: Request,
) -> Result<Response, ApiError> {
    let session_header = super::session_header(req.headers());
    let body = read_body(req, state).await?;
    // Read once: routing needs the model and the session, each account its own translation.
    let request = AnthropicRequest::parse(&body).map_err(translate_error)?;
    let model = request.model().map_err(translate_error)?;
    if model.is_empty() {
        return Err(ApiError::invalid("model: field required"));
    }
    trace.model(&model);
    let admission = crate::limits::admit(state.routing.coordinator(), &caller.key).await?;
    let guard = in_flight_guard(state);
    // `metadata.user_id` (Claude Code puts its session in it) is the fallback session id.
    let session = session_header.or_else(|| {
        request
            .user_id()
            .filter(|s| !s.is_empty())
            .map(Cow::into_owned)
    });
    let dispatched = dispatch(
        state,
        trace,
        caller,
        &model,
        session.as_deref(),
        |account| {
            let settings = &account.settings;
            let options = UpstreamOptions {
                deployment: &settings.deployment_name,
                max_output_tokens: settings.max_output_tokens,
                use_max_completion_tokens: settings.use_max_completion_tokens,
                reasoning: match settings.thinking {
                    ThinkingMapping::Drop => ReasoningMode::Drop,
                    ThinkingMapping::ReasoningEffort => ReasoningMode::ReasoningEffort,
                    ThinkingMapping::EnableThinking => ReasoningMode::QwenEnableThinking,
                },
                send_reasoning_content: settings.send_reasoning_content,
            };
            let (upstream_body, ctx) = request
                .to_openai_estimating_streams(&options)
                .map_err(translate_error)?;
            Ok(Attempt {
                body: Bytes::from(upstream_body),
                stream: ctx.stream,
                extra: ctx,
            })
        },
    )
    .await?;
    let account = dispatched.account;
    let ctx: RequestContext = dispatched.extra;
    // The one info line per request is written by the trace when the request ends.
    tracing::debug!(
        request_id = %request_id.0,
        key = %caller.key.name,
        model = %logged_model(&model),
        account = %account.settings.name,
        stream = ctx.stream,
        "dispatched"
    );
    let message_id = format!("msg_{}", random_hex(12));
    let mut response = match dispatched.answer {
        Answer::Stream(upstream) => {
            let translator = StreamTranslator::new(&ctx, message_id);
            let body = anthropic_sse(
                upstream,
                translator,
                stream_limits(state),
                admission,
                trace.hand_over(),
                Box::new((guard, dispatched.slot)),
            )
            .await;
            sse_response(body)
        }
        Answer::Complete(upstream) => {
            // The estimate is made only for an upstream that reports no usage.
            let estimate = || request.estimate_input_tokens().unwrap_or(1);
            let (answer, usage) =
                openai_to_anthropic_with(&upstream, &ctx, estimate).map_err(translate_error)?;
            admission.record(&usage);
            trace.answered(200, Some(usage));
            drop((guard, dispatched.slot));
            json_response(answer)
        }
    };
    account_header(&mut response, &account);
    Ok(response)
}

/// `POST /v1/messages/count_tokens`: computed locally, never forwarded.
pub(super) async fn count(State(state): State<AppState>, req: Request) -> Response {
    let result = async {
        let body = read_body(req, &state).await?;
        let tokens = count_tokens(&body).map_err(translate_error)?;
        Ok::<_, ApiError>(axum::Json(serde_json::json!({ "input_tokens": tokens })))
    }
    .await;
    match result {
        Ok(json) => json.into_response(),
        Err(e) => e.into_response_for(Surface::Anthropic),
    }
}
