//! Translation between the Anthropic Messages API and OpenAI Chat Completions, plus the helpers the
//! proxy needs around it (SSE decoding, same-format passthrough, local token counting).
//!
//! Everything here is pure: bytes in, bytes out, no I/O, no async, no clock, no randomness. The proxy
//! owns the network and feeds this module whole bodies (non-streaming) or one SSE `data:` payload at a
//! time (streaming).
//!
//! Files:
//! - [`request`]: Anthropic request → OpenAI request ([`anthropic_to_openai`]).
//! - [`response`]: OpenAI response → Anthropic message ([`openai_to_anthropic`]).
//! - [`stream`]: OpenAI chunk stream → Anthropic SSE events ([`StreamTranslator`]).
//! - [`sse`]: incremental SSE decoder ([`SseDecoder`]).
//! - [`openai`]: OpenAI-client passthrough ([`prepare_openai_request`], [`OpenAiStreamTap`],
//!   [`rewrite_openai_response`]).
//! - [`native`]: Anthropic-client passthrough to Anthropic-native upstreams
//!   ([`prepare_native_request`], [`NativeStreamTap`], [`rewrite_native_response`]).
//! - [`replay`]: a complete OpenAI completion as the chunk stream that would have carried it
//!   ([`completion_as_sse`]), for servers that ignore `stream: true`.
//! - [`tokens`]: local `count_tokens` ([`count_tokens`]).
//! - [`compaction`]: Claude Code's compaction request, shrunk to fit a small window.
//! - [`prefix`]: the hash of a conversation's stable prefix, for routing affinity.
//! - [`tools`]: tool-name shortening ([`ToolNames`]) and tool-call id mapping.
//!
//! Design decisions that are visible on the wire:
//! - **Append-only output.** The upstream's prefix cache only helps when turn N+1's prompt starts with
//!   turn N's. The request is therefore written by hand in a fixed key order (`model`, `messages`,
//!   `tools`, `tool_choice`, then the rest), JSON schemas, tool descriptions and tool inputs are copied
//!   as the client wrote them (`RawValue`), and nothing that varies per request (the Claude Code
//!   `x-anthropic-billing-header:` system line, `cache_control`) reaches the upstream.
//! - **Mid-conversation `role: "system"` messages are emitted in place** as OpenAI `system` messages.
//!   Folding them into the leading system message would rewrite the very first message whenever one
//!   appears, destroying the whole cached prefix; emitting them where they occur keeps the output
//!   append-only. OpenAI-compatible servers accept `system` messages at any position.
//! - **Merging same-role neighbours** (user/user, assistant/assistant) concatenates text with `"\n\n"`,
//!   so the merged message starts with the text it had before the merge: the token prefix survives.
//! - **Tool-call ids** are kept when they match `^[a-zA-Z0-9_-]+$`; others are hex-encoded behind a
//!   fixed prefix and decoded again when the client sends them back (stateless, see [`tools`]).
//! - **Tool names** longer than 64 bytes are shortened to a 55-byte prefix + `_` + 8 hex digits of
//!   their SHA-256; [`ToolNames`] in the [`RequestContext`] maps them back in responses.

pub mod compaction;
pub mod native;
pub mod openai;
pub mod prefix;
pub mod replay;
pub mod request;
pub mod response;
pub mod sse;
pub mod stream;
pub mod tokens;
pub mod tools;

pub(crate) mod json;

pub use native::{
    NativeRequestInfo, NativeStreamTap, native_error_event, prepare_native_request,
    rewrite_native_response,
};
pub use openai::{
    OpenAiRequestInfo, OpenAiStreamTap, prepare_openai_request, rewrite_openai_response,
};
pub use replay::completion_as_sse;
pub use request::{
    AnthropicRequest, ReasoningMode, RequestContext, UpstreamOptions, anthropic_to_openai,
};
pub use response::{openai_to_anthropic, openai_to_anthropic_with};
pub use sse::{SseDecoder, SseEvent};
pub use stream::StreamTranslator;
pub use tokens::count_tokens;
pub use tools::ToolNames;

use shared::usage::TokenCounts;

/// Token usage of one exchange as seen by the translator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input (prompt tokens minus cached), output and cache-read tokens.
    pub tokens: TokenCounts,
    /// True when the counts came from the upstream; false when they are relayd's estimate.
    pub from_upstream: bool,
}

/// Everything translation can fail with. Each variant names where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The client's request is malformed or asks for something we cannot translate.
    /// An HTTP 400 `invalid_request_error` for the client.
    #[error("{path}: {message}")]
    InvalidRequest {
        /// JSON path of the offending field, e.g. `messages[3].content[0]` (`body` for the whole body).
        path: String,
        /// What is wrong, in the client's terms.
        message: String,
    },
    /// The upstream answered with something we cannot translate. An HTTP 502 for the client (it is
    /// not the client's fault, and not retryable by re-sending the same request to the same upstream).
    #[error("upstream response {path}: {message}")]
    InvalidUpstream {
        /// JSON path in the upstream body, e.g. `choices[0].message.tool_calls[1].function.arguments`.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl TranslateError {
    /// The HTTP status the proxy should answer with: 400 for the client's mistakes, 502 for the
    /// upstream's.
    pub fn status_code(&self) -> u16 {
        match self {
            Self::InvalidRequest { .. } => 400,
            Self::InvalidUpstream { .. } => 502,
        }
    }

    pub(crate) fn request(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn upstream(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidUpstream {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// serde_json's messages end in " at line L column C", which is meaningless for a sub-document we
/// parsed on its own; the path we attach says where the problem is instead.
pub(crate) fn describe_json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.find(" at line ") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests;
