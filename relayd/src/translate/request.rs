//! Anthropic Messages request → OpenAI Chat Completions request.
//!
//! The body is parsed into borrowed views (`Cow<str>` and `RawValue`, so big strings without escapes,
//! JSON schemas, tool descriptions and tool inputs are never copied into a tree), mapped into a list of
//! OpenAI messages (where same-role neighbours are merged), and written by hand in a fixed key order.
//! See the module docs of [`super`] for why the output must be byte-stable and append-only.
//!
//! This file holds the public face (the options, the context handed to the response side,
//! [`AnthropicRequest`]) and the order of the steps; the steps live in:
//! - `wire`: the borrowed serde views of the request and the validated top level;
//! - `convert`: messages → OpenAI messages (system, assistant, merging);
//! - `user`: user content (text, images, documents, tool results);
//! - `write`: the OpenAI body, written by hand.

mod convert;
mod user;
mod wire;
mod write;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::json::{Path, parse_request, push_str};
use super::tools::ToolNames;
use super::{TranslateError, describe_json_error, tokens};
use convert::convert_messages;
pub(crate) use convert::strip_billing_lines;
use wire::{Fields, Metadata, TopLevel};
use write::{
    write_max_tokens, write_messages, write_output_format, write_reasoning, write_sampling,
    write_stop, write_tool_choice, write_tools, write_user,
};

/// What the upstream account needs the request to look like.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamOptions<'a> {
    /// Model name the upstream knows (the account's deployment).
    pub deployment: &'a str,
    /// The account's output limit: `max_tokens` is clamped to it.
    pub max_output_tokens: Option<u32>,
    /// Send `max_completion_tokens` instead of `max_tokens` (newer Azure/OpenAI models).
    pub use_max_completion_tokens: bool,
    /// What to do with the client's `thinking` setting.
    pub reasoning: ReasoningMode,
    /// Send assistant `thinking` blocks back as `reasoning_content` (upstreams that require it).
    pub send_reasoning_content: bool,
}

/// How the client's `thinking` setting reaches the upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningMode {
    /// Dropped: the upstream decides by itself.
    #[default]
    Drop,
    /// OpenAI's `reasoning_effort` (`low`/`medium`/`high`).
    ReasoningEffort,
    /// `chat_template_kwargs.enable_thinking` (Qwen3 and similar templates on vLLM/SGLang).
    QwenEnableThinking,
}

/// What the response side needs to know about the request it answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    /// The model name the client asked for; echoed back in responses.
    pub requested_model: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Local estimate of the prompt size, used until the upstream reports real usage (never 0).
    pub estimated_input_tokens: u64,
    /// Shortened tool names and their originals.
    pub tools: ToolNames,
    /// The client's stop sequences, to tell `stop_sequence` from `end_turn`.
    pub stop_sequences: Vec<String>,
}

/// Joins text blocks and merged messages; also used by the merge so the old text stays a prefix.
const TEXT_JOINER: &str = "\n\n";

/// Translates an Anthropic Messages request body into an OpenAI Chat Completions body.
///
/// Errors are [`TranslateError::InvalidRequest`] (HTTP 400) naming the offending field.
pub fn anthropic_to_openai(
    body: &[u8],
    opts: &UpstreamOptions<'_>,
) -> Result<(Vec<u8>, RequestContext), TranslateError> {
    AnthropicRequest::parse(body)?.to_openai(opts)
}

/// An Anthropic Messages request with its top level read once, borrowed from the body: routing
/// reads the model and the session from it, then each account tried gets its own translation
/// without the body being parsed again.
#[derive(Clone, Copy)]
pub struct AnthropicRequest<'a> {
    body: &'a [u8],
    top: TopLevel<'a>,
}

impl std::fmt::Debug for AnthropicRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicRequest")
            .field("bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl<'a> AnthropicRequest<'a> {
    /// Reads the top level of `body`. Errors are [`TranslateError::InvalidRequest`].
    pub fn parse(body: &'a [u8]) -> Result<Self, TranslateError> {
        let text = std::str::from_utf8(body)
            .map_err(|e| TranslateError::request("body", format!("not UTF-8: {e}")))?;
        let top: TopLevel<'a> = serde_json::from_str(text)
            .map_err(|e| TranslateError::request("body", describe_json_error(&e)))?;
        Ok(Self { body, top })
    }

    /// The model asked for: an error naming `model` when it is missing or not a string.
    pub fn model(&self) -> Result<Cow<'a, str>, TranslateError> {
        match self.top.model {
            Some(raw) => parse_request(raw, Path::Root("model")),
            None => Err(TranslateError::request("model", "field required")),
        }
    }

    /// `metadata.user_id` (where Claude Code puts its session), read loosely: a malformed
    /// `metadata` is for the translation to report, not for routing.
    pub fn user_id(&self) -> Option<Cow<'a, str>> {
        let metadata: Metadata<'a> = serde_json::from_str(self.top.metadata?.get()).ok()?;
        metadata.user_id
    }

    /// The hash of the conversation's stable prefix (see [`super::prefix`]), read loosely like
    /// the session: `None` without a first message.
    pub fn prefix_hash(&self) -> Option<u128> {
        super::prefix::anthropic(self.top.system, self.top.tools, self.top.messages)
    }

    /// The OpenAI Chat Completions body for an account with `opts`.
    pub fn to_openai(
        &self,
        opts: &UpstreamOptions<'_>,
    ) -> Result<(Vec<u8>, RequestContext), TranslateError> {
        translate(self.body, self.top, opts, Estimate::Always)
    }

    /// As [`Self::to_openai`], but a non-streamed request gets no token estimate
    /// (`estimated_input_tokens` is 0): its answer needs one only when the upstream reports no
    /// usage, and then [`Self::estimate_input_tokens`] gives it. A stream's `message_start`
    /// always carries the estimate.
    pub fn to_openai_estimating_streams(
        &self,
        opts: &UpstreamOptions<'_>,
    ) -> Result<(Vec<u8>, RequestContext), TranslateError> {
        translate(self.body, self.top, opts, Estimate::StreamsOnly)
    }

    /// The local estimate of the request's input tokens (what `count_tokens` answers).
    pub fn estimate_input_tokens(&self) -> Result<u64, TranslateError> {
        estimate_input_tokens(self.body, self.top)
    }
}

/// When a translation computes the input token estimate.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Estimate {
    Always,
    StreamsOnly,
}

/// The translation, step by step: validate the top level, convert the messages, then write the
/// body in its fixed key order.
fn translate(
    body: &[u8],
    top: TopLevel<'_>,
    opts: &UpstreamOptions<'_>,
    estimate: Estimate,
) -> Result<(Vec<u8>, RequestContext), TranslateError> {
    let fields = Fields::parse(top)?;
    let mut names = ToolNames::default();
    let mut out = Vec::with_capacity(body.len() + body.len() / 8);
    out.extend_from_slice(b"{\"model\":");
    push_str(&mut out, opts.deployment);

    let converted = convert_messages(top.system, fields.messages, opts, &mut names)?;
    write_messages(&mut out, &converted);
    let wrote_tools = match fields.tools {
        Some(tools) => write_tools(&mut out, tools, &mut names)?,
        None => false,
    };
    // tool_choice (meaningless, and rejected by some servers, without tools)
    if wrote_tools && let Some(choice) = &fields.tool_choice {
        write_tool_choice(&mut out, choice, &mut names)?;
    }

    // the rest, in a fixed order
    write_max_tokens(&mut out, fields.max_tokens, opts);
    let stop_sequences: Vec<String> = fields
        .stop_sequences
        .unwrap_or_default()
        .into_iter()
        .map(Cow::into_owned)
        .collect();
    write_stop(&mut out, &stop_sequences);
    write_sampling(&mut out, fields.temperature, fields.top_p);
    write_user(&mut out, fields.metadata.as_ref());
    write_reasoning(
        &mut out,
        opts.reasoning,
        fields.thinking.as_ref(),
        fields.output_config.as_ref(),
    )?;
    write_output_format(&mut out, fields.output_config.as_ref())?;
    let stream = fields.stream;
    if stream {
        out.extend_from_slice(b",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    }
    out.push(b'}');

    let context = RequestContext {
        requested_model: fields.requested_model.into_owned(),
        stream,
        estimated_input_tokens: if stream || estimate == Estimate::Always {
            estimate_input_tokens(body, top)?
        } else {
            0
        },
        tools: names,
        stop_sequences,
    };
    Ok((out, context))
}

/// The input token estimate of a request whose top level parsed. The values that cost tokens are
/// already split off; only odd input needs another full pass.
fn estimate_input_tokens(body: &[u8], top: TopLevel<'_>) -> Result<u64, TranslateError> {
    match tokens::estimate(top.system, top.messages, top.tools) {
        Some(n) => Ok(n),
        None => Ok(tokens::count_with_serde(body)?.max(1)),
    }
}
