//! `POST /v1/messages` and `POST /v1/messages/count_tokens`: the Anthropic Messages API over
//! OpenAI-compatible upstreams (translated) and Anthropic-native ones (passed through, see
//! [`super::native`]), streaming or not. Each attempt decides by its account, so one request may
//! fail over from one path to the other. The request flow is the shared
//! [`handler`](super::handler); this file says how Anthropic requests are read and translated.

use std::borrow::Cow;

use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use shared::account::ThinkingMapping;

use super::dispatch::{Attempt, Call};
use super::handler::{Protocol, StreamTail};
use super::native;
use super::stream::{Translated, anthropic_sse};
use super::window::{self, Prompt};
use super::{sse_response, translate_error};
use crate::accounts::LiveAccount;
use crate::auth::random_hex;
use crate::error::{ApiError, Surface};
use crate::extract::read_body;
use crate::keys::Caller;
use crate::state::AppState;
use crate::translate::{
    AnthropicRequest, NativeRequestInfo, NativeStreamTap, ReasoningMode, RequestContext,
    StreamTranslator, UpstreamOptions, Usage, count_tokens, openai_to_anthropic_with,
    rewrite_native_response,
};
use crate::upstream::{BodyStream, anthropic_headers};

/// The Anthropic Messages protocol (`POST /v1/messages`).
#[derive(Debug)]
pub(super) struct Messages;

/// How an attempt's answer is read back: translated from chat completions, or passed through.
#[derive(Debug)]
pub(super) enum Path {
    /// Translated to chat completions.
    Translated(RequestContext),
    /// Sent natively to the Messages API.
    Native(NativeRequestInfo),
}

impl Protocol for Messages {
    const SURFACE: Surface = Surface::Anthropic;
    type Request<'a> = AnthropicRequest<'a>;
    type Extra = Path;

    fn forwarded(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        anthropic_headers(headers)
    }

    fn parse(body: &[u8]) -> Result<(AnthropicRequest<'_>, Cow<'_, str>), ApiError> {
        let request = AnthropicRequest::parse(body).map_err(translate_error)?;
        let model = request.model().map_err(translate_error)?;
        if model.is_empty() {
            return Err(ApiError::invalid("model: field required"));
        }
        Ok((request, model))
    }

    /// `metadata.user_id` (Claude Code puts its session in it).
    fn session(request: &AnthropicRequest<'_>) -> Option<String> {
        request
            .user_id()
            .filter(|s| !s.is_empty())
            .map(Cow::into_owned)
    }

    fn prefix(request: &AnthropicRequest<'_>) -> Option<u128> {
        request.prefix_hash()
    }

    fn prompt<'a>(request: &'a AnthropicRequest<'_>, body: &'a Bytes) -> Prompt<'a> {
        Prompt::new(|| request.estimate_input_tokens().unwrap_or(1), Some(body))
    }

    fn shrink(state: &AppState, caller: &Caller, body: &Bytes) -> Option<Bytes> {
        // Only the compaction request is ever altered; the model is read loosely here, the
        // real parse reports any problem.
        if !crate::translate::compaction::is_compaction_request(body) {
            return None;
        }
        let model = AnthropicRequest::parse(body)
            .ok()?
            .model()
            .ok()?
            .into_owned();
        let table = state.routing.table_for(state.accounts.snapshot());
        let route = table.candidates(caller, &model);
        window::shrink_compaction(state, &route.accounts, body)
    }

    fn attempt(
        request: &AnthropicRequest<'_>,
        body: &Bytes,
        account: &LiveAccount,
        max_tokens_cap: Option<u32>,
    ) -> Result<Attempt<Path>, ApiError> {
        let settings = &account.settings;
        let max_output_tokens = match (settings.max_output_tokens, max_tokens_cap) {
            (Some(limit), Some(cap)) => Some(limit.min(cap)),
            (limit, cap) => limit.or(cap),
        };
        if account.resolved.native_messages.value {
            let attempt = native::attempt(body, account, max_output_tokens)?;
            return Ok(Attempt {
                call: attempt.call,
                body: attempt.body,
                stream: attempt.stream,
                extra: Path::Native(attempt.extra),
            });
        }
        let options = UpstreamOptions {
            deployment: &settings.deployment_name,
            max_output_tokens,
            use_max_completion_tokens: account.resolved.use_max_completion_tokens.value,
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
            call: Call::Chat,
            body: Bytes::from(upstream_body),
            stream: ctx.stream,
            extra: Path::Translated(ctx),
        })
    }

    fn streams(path: &Path) -> bool {
        match path {
            Path::Translated(ctx) => ctx.stream,
            Path::Native(info) => info.stream,
        }
    }

    async fn stream(upstream: BodyStream, path: Path, tail: StreamTail) -> Response {
        let StreamTail {
            limits,
            admission,
            trace,
            guard,
        } = tail;
        match path {
            Path::Translated(ctx) => {
                let translator = StreamTranslator::new(&ctx, format!("msg_{}", random_hex(12)));
                let events = Translated::new(translator);
                sse_response(anthropic_sse(upstream, events, limits, admission, trace, guard).await)
            }
            Path::Native(info) => {
                let events = NativeStreamTap::new(&info);
                sse_response(anthropic_sse(upstream, events, limits, admission, trace, guard).await)
            }
        }
    }

    fn complete(
        request: &AnthropicRequest<'_>,
        upstream: &[u8],
        path: &Path,
    ) -> Result<(Vec<u8>, Option<Usage>), ApiError> {
        let ctx = match path {
            Path::Translated(ctx) => ctx,
            Path::Native(info) => {
                return rewrite_native_response(upstream, &info.requested_model)
                    .map_err(translate_error);
            }
        };
        // The estimate is made only for an upstream that reports no usage.
        let estimate = || request.estimate_input_tokens().unwrap_or(1);
        let (answer, usage) =
            openai_to_anthropic_with(upstream, ctx, estimate).map_err(translate_error)?;
        Ok((answer, Some(usage)))
    }
}

/// `POST /v1/messages/count_tokens`: counted by the upstream that would serve the model when it
/// can (its tokenizer renders with the server's own chat template, which only the server
/// knows), else estimated locally. The request itself is never forwarded.
pub(super) async fn count(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> Response {
    let result = async {
        let body = read_body(req, &state).await?;
        let local = count_tokens(&body).map_err(translate_error)?;
        let tokens = match upstream_count(&state, &caller, &body).await {
            Some(tokens) => tokens,
            None => local,
        };
        Ok::<_, ApiError>(axum::Json(serde_json::json!({ "input_tokens": tokens })))
    }
    .await;
    match result {
        Ok(json) => json.into_response(),
        Err(e) => e.into_response_for(Surface::Anthropic),
    }
}

/// The count of the first candidate account for the request's model that has a tokenizer.
async fn upstream_count(state: &AppState, caller: &Caller, body: &[u8]) -> Option<u64> {
    let model = AnthropicRequest::parse(body).ok()?.model().ok()?;
    if !crate::routing::key_may_request(caller, &model) {
        return None;
    }
    let table = state.routing.table_for(state.accounts.snapshot());
    let route = table.candidates(caller, &model);
    let account = route
        .accounts
        .iter()
        .find(|a| a.resolved.tokenizer.value.is_some())?;
    let tokenizer = account.resolved.tokenizer.value?;
    window::exact(state, account, tokenizer, body).await
}
