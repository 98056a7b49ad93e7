//! `POST /v1/chat/completions` for OpenAI clients: the body passes through with the model name
//! rewritten to the account's deployment (and back in the answer); streams are forwarded as
//! they arrive while a tap reads usage. The request flow is the shared
//! [`handler`](super::handler).

use std::borrow::Cow;
use std::future::Future;

use axum::response::Response;
use bytes::Bytes;

use super::dispatch::{Attempt, Call};
use super::handler::{Protocol, StreamTail};
use super::stream::openai_passthrough;
use super::window::Prompt;
use super::{sse_response, translate_error};
use crate::accounts::LiveAccount;
use crate::error::{ApiError, Surface};
use crate::translate::{
    OpenAiRequestInfo, OpenAiStreamTap, Usage, prepare_openai_request, rewrite_openai_response,
};
use crate::upstream::BodyStream;

/// The OpenAI Chat Completions protocol (`POST /v1/chat/completions`).
#[derive(Debug)]
pub(super) struct ChatCompletions;

impl Protocol for ChatCompletions {
    const SURFACE: Surface = Surface::OpenAi;
    /// The body itself: each attempt re-targets it to the account's deployment.
    type Request<'a> = &'a [u8];
    type Extra = OpenAiRequestInfo;

    /// Validates the body and learns the model once.
    fn parse(body: &[u8]) -> Result<(&[u8], Cow<'_, str>), ApiError> {
        let (_, info) = prepare_openai_request(body, "", None).map_err(translate_error)?;
        Ok((body, Cow::Owned(info.requested_model)))
    }

    fn session(_request: &&[u8]) -> Option<String> {
        None
    }

    fn prefix(request: &&[u8]) -> Option<u128> {
        crate::translate::prefix::openai(request)
    }

    /// Judged by the local estimate only: the whole body's text, which over-counts (keys,
    /// punctuation) rather than under.
    fn prompt<'a>(_request: &'a &[u8], body: &'a Bytes) -> Prompt<'a> {
        Prompt::new(
            || crate::translate::tokens::text_tokens(&String::from_utf8_lossy(body)),
            None,
        )
    }

    fn attempt(
        _request: &&[u8],
        body: &Bytes,
        account: &LiveAccount,
        max_tokens_cap: Option<u32>,
    ) -> Result<Attempt<OpenAiRequestInfo>, ApiError> {
        let (upstream, info) =
            prepare_openai_request(body, &account.settings.deployment_name, max_tokens_cap)
                .map_err(translate_error)?;
        Ok(Attempt {
            call: Call::Chat,
            body: Bytes::from(upstream),
            stream: info.stream,
            extra: info,
        })
    }

    fn streams(info: &OpenAiRequestInfo) -> bool {
        info.stream
    }

    fn stream(
        upstream: BodyStream,
        info: OpenAiRequestInfo,
        tail: StreamTail,
    ) -> impl Future<Output = Response> + Send {
        let tap = OpenAiStreamTap::new(&info);
        let body = openai_passthrough(
            upstream,
            tap,
            tail.limits,
            tail.admission,
            tail.trace,
            tail.guard,
        );
        std::future::ready(sse_response(body))
    }

    fn complete(
        _request: &&[u8],
        upstream: &[u8],
        info: &OpenAiRequestInfo,
    ) -> Result<(Vec<u8>, Option<Usage>), ApiError> {
        rewrite_openai_response(upstream, &info.requested_model).map_err(translate_error)
    }
}
