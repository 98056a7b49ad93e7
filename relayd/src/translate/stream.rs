//! OpenAI Chat Completions chunk stream → Anthropic Messages SSE events.
//!
//! [`StreamTranslator`] is a state machine fed one SSE `data:` payload at a time. It owns the event
//! order Claude Code relies on: `message_start`, then content blocks that never interleave (each
//! `content_block_start` → deltas → `content_block_stop`, indexes 0, 1, 2, …), then `message_delta`
//! with the stop reason and cumulative usage, then `message_stop`. After `finish_reason` it holds
//! `message_delta` back until the usage chunk, `[DONE]` or the end of the stream, because the
//! usage (which Claude Code's context meter reads) usually arrives in a chunk of its own.
//!
//! Every step appends to the caller's buffer and does work proportional to the chunk it was given,
//! so a stream of any length translates in linear time.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::json::{is_string, push_str, push_u64};
use super::request::RequestContext;
use super::response::{OpenAiUsage, Timings, map_stop_reason, write_usage};
use super::tokens::text_tokens;
use super::tools::client_tool_id;
use super::{TranslateError, Usage, describe_json_error};
use shared::usage::TokenCounts;

/// Turns an OpenAI chunk stream into Anthropic SSE frames.
///
/// Usage by the proxy: [`StreamTranslator::on_data`] for every upstream `data:` payload, then
/// [`StreamTranslator::finish`] when the upstream ends (cleanly or not), or
/// [`StreamTranslator::fail`] when it fails. All three are safe to call after the stream ended (they
/// then write nothing).
#[derive(Debug)]
pub struct StreamTranslator {
    ctx: RequestContext,
    message_id: String,
    started: bool,
    ended: bool,
    /// `finish_reason` seen: no more content is accepted, `message_delta` is pending.
    content_done: bool,
    finish_reason: Option<String>,
    matched_stop: Option<String>,
    next_block: u32,
    open: Open,
    saw_tool_calls: bool,
    /// Upstream tool-call indexes already opened (a fragment for a closed one comes too late).
    seen_tool_indexes: Vec<u32>,
    tool_calls: usize,
    upstream_usage: Option<Usage>,
    output_estimate: u64,
}

/// The block currently open, if any.
#[derive(Debug)]
enum Open {
    None,
    Text,
    Thinking,
    Tool {
        upstream_index: u32,
        /// The upstream's id of this call (some upstreams reuse `index` and only change the id).
        upstream_id: Option<String>,
        /// Arguments received so far (needed to recognise cumulative snapshots).
        arguments: String,
        mode: ArgumentsMode,
        sent_any: bool,
    },
}

/// How an upstream sends tool arguments; decided on the second non-empty fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArgumentsMode {
    Unknown,
    /// Each fragment continues the previous ones (OpenAI, vLLM).
    Fragments,
    /// Each fragment repeats everything so far and adds to it (some Ollama/llama.cpp versions).
    Snapshots,
}

impl StreamTranslator {
    /// A translator for the answer to the request described by `ctx`; `message_id` is the `msg_…`
    /// id the client will see.
    pub fn new(ctx: &RequestContext, message_id: String) -> Self {
        Self {
            ctx: ctx.clone(),
            message_id,
            started: false,
            ended: false,
            content_done: false,
            finish_reason: None,
            matched_stop: None,
            next_block: 0,
            open: Open::None,
            saw_tool_calls: false,
            seen_tool_indexes: Vec::new(),
            tool_calls: 0,
            upstream_usage: None,
            output_estimate: 0,
        }
    }

    /// Whether `message_start` was written (after which only an `error` event can report failure).
    pub fn started(&self) -> bool {
        self.started
    }

    /// Whether the stream was closed (`message_stop` or `error` written).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Usage so far: the upstream's when it reported one, else relayd's estimate.
    pub fn usage(&self) -> Usage {
        self.upstream_usage.unwrap_or(Usage {
            tokens: TokenCounts {
                input_tokens: self.ctx.estimated_input_tokens,
                output_tokens: self.output_estimate,
                cache_read_tokens: 0,
            },
            from_upstream: false,
        })
    }

    /// A keep-alive `ping` event. Only valid after `message_start` (see [`StreamTranslator::start`]).
    pub fn ping(out: &mut Vec<u8>) {
        out.extend_from_slice(b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
    }

    /// Writes `message_start` now if it was not written yet (the proxy may want to commit before the
    /// first upstream chunk, e.g. to send pings during a long prefill). Idempotent.
    pub fn start(&mut self, out: &mut Vec<u8>) {
        if self.started || self.ended {
            return;
        }
        self.started = true;
        let usage = self.usage();
        begin_event(out, "message_start");
        out.extend_from_slice(b"{\"type\":\"message_start\",\"message\":{\"id\":");
        push_str(out, &self.message_id);
        out.extend_from_slice(b",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
        push_str(out, &self.ctx.requested_model);
        out.extend_from_slice(
            b",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":",
        );
        // Output so far is 0 whatever the estimate says; input is real or estimated, never 0.
        let tokens = TokenCounts {
            output_tokens: 0,
            input_tokens: usage.tokens.input_tokens.max(1),
            ..usage.tokens
        };
        write_usage(out, &tokens);
        out.extend_from_slice(b"}}");
        end_event(out);
    }

    /// Handles one SSE `data:` payload from the upstream: a JSON chunk or `[DONE]`.
    ///
    /// An unparseable chunk is a [`TranslateError::InvalidUpstream`]; the proxy should then call
    /// [`StreamTranslator::fail`]. An in-band `{"error":…}` chunk is turned into an `error` event here.
    pub fn on_data(&mut self, data: &str, out: &mut Vec<u8>) -> Result<(), TranslateError> {
        let data = data.trim();
        if data == "[DONE]" {
            self.finish(out);
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        let chunk: Chunk<'_> = match serde_json::from_str(data) {
            Ok(chunk) => chunk,
            Err(_) if self.ended => return Ok(()),
            Err(e) => {
                return Err(TranslateError::upstream(
                    "stream chunk",
                    describe_json_error(&e),
                ));
            }
        };
        if self.ended {
            // Upstreams that report usage on every chunk may send a final count after the message
            // ended; it is still the best number to record.
            if let Some(usage) = chunk.usage
                && self.upstream_usage.is_some()
            {
                self.upstream_usage = Some(usage.with_timings(chunk.timings).to_usage());
            }
            return Ok(());
        }
        if let Some(error) = chunk.error {
            let message = error.message.as_deref().unwrap_or("upstream error");
            self.fail("api_error", message, out);
            return Ok(());
        }
        if let Some(usage) = chunk.usage {
            self.upstream_usage = Some(usage.with_timings(chunk.timings).to_usage());
        }
        self.start(out);
        // Azure's content-filter chunk and the usage chunk have no choices; only their usage counts.
        for choice in chunk.choices.unwrap_or_default() {
            if choice.index.unwrap_or(0) != 0 || self.content_done {
                continue; // n > 1 is not representable in Anthropic's format
            }
            if let Some(delta) = choice.delta {
                self.on_delta(delta, out);
            }
            if let Some(reason) = choice.finish_reason {
                self.close_block(out);
                self.content_done = true;
                self.finish_reason = Some(reason.into_owned());
                self.matched_stop = choice
                    .stop_reason
                    .filter(|r| is_string(r))
                    .and_then(|r| serde_json::from_str(r.get()).ok());
            }
        }
        if self.content_done && self.upstream_usage.is_some() {
            self.write_end(out);
        }
        Ok(())
    }

    /// The upstream stream ended (after `[DONE]` or not): closes the open block and writes
    /// `message_delta` and `message_stop`. Idempotent.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.start(out);
        self.close_block(out);
        self.write_end(out);
    }

    /// The upstream failed mid-stream: writes an `error` event (`error_type` is an Anthropic error
    /// type such as `api_error` or `overloaded_error`); nothing is written after it.
    pub fn fail(&mut self, error_type: &str, message: &str, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ended = true;
        begin_event(out, "error");
        out.extend_from_slice(b"{\"type\":\"error\",\"error\":{\"type\":");
        push_str(out, error_type);
        out.extend_from_slice(b",\"message\":");
        push_str(out, message);
        out.extend_from_slice(b"}}");
        end_event(out);
    }

    fn on_delta(&mut self, delta: Delta<'_>, out: &mut Vec<u8>) {
        let reasoning = delta.reasoning_content.or(delta.reasoning);
        if let Some(reasoning) = reasoning.filter(|r| is_string(r))
            && let Ok(text) = serde_json::from_str::<Cow<'_, str>>(reasoning.get())
            && !text.is_empty()
        {
            if !matches!(self.open, Open::Thinking) {
                self.close_block(out);
                self.open_block(
                    out,
                    Open::Thinking,
                    b"{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}",
                );
            }
            self.output_estimate += text_tokens(&text);
            self.delta(out, b"{\"type\":\"thinking_delta\",\"thinking\":", &text);
        }
        if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
            if !matches!(self.open, Open::Text) {
                self.close_block(out);
                self.open_block(out, Open::Text, b"{\"type\":\"text\",\"text\":\"\"}");
            }
            self.output_estimate += text_tokens(&text);
            self.delta(out, b"{\"type\":\"text_delta\",\"text\":", &text);
        }
        for call in delta.tool_calls.unwrap_or_default() {
            self.on_tool_call(call, out);
        }
    }

    fn on_tool_call(&mut self, call: DeltaToolCall<'_>, out: &mut Vec<u8>) {
        let new_id = call.id.as_deref().filter(|id| !id.is_empty());
        let (index, same_call) = self.tool_call_index(call.index, new_id);
        if !same_call {
            if new_id.is_none() && self.seen_tool_indexes.contains(&index) {
                tracing::debug!(
                    index,
                    "dropping a fragment for a tool call that was already closed"
                );
                return;
            }
            let name = call
                .function
                .as_ref()
                .and_then(|f| f.name.as_deref())
                .unwrap_or_default();
            self.start_tool_call(index, new_id, name, out);
        }
        if let Some(fragment) = call
            .function
            .and_then(|f| f.arguments)
            .filter(|a| !a.is_empty())
        {
            self.append_arguments(&fragment, out);
        }
    }

    /// The upstream index a fragment belongs to, and whether it continues the open call.
    fn tool_call_index(&self, index: Option<u32>, new_id: Option<&str>) -> (u32, bool) {
        match &self.open {
            Open::Tool {
                upstream_index,
                upstream_id,
                ..
            } => {
                // Upstreams that omit `index` start a new call by sending a new id. The guess is
                // only made when `index` is missing, and saturates: the upstream chose the open
                // call's index, which may be `u32::MAX` (adding 1 there panicked in debug builds).
                let index = index.unwrap_or_else(|| match new_id {
                    Some(_) => upstream_index.saturating_add(1),
                    None => *upstream_index,
                });
                let same_id = new_id
                    .is_none_or(|id| upstream_id.as_deref().is_none_or(|current| current == id));
                (index, index == *upstream_index && same_id)
            }
            _ => (
                index.unwrap_or_else(|| {
                    self.seen_tool_indexes
                        .last()
                        .map_or(0, |i| i.saturating_add(1))
                }),
                false,
            ),
        }
    }

    /// Closes the open block and opens a `tool_use` block for upstream call `index`.
    fn start_tool_call(&mut self, index: u32, new_id: Option<&str>, name: &str, out: &mut Vec<u8>) {
        self.close_block(out);
        self.seen_tool_indexes.push(index);
        self.saw_tool_calls = true;
        let id = match new_id {
            Some(id) => client_tool_id(id).into_owned(),
            None => format!(
                "toolu_{}_{}",
                self.message_id.trim_start_matches("msg_"),
                self.tool_calls
            ),
        };
        self.tool_calls += 1;
        let mut start = Vec::with_capacity(64 + name.len() + id.len());
        start.extend_from_slice(b"{\"type\":\"tool_use\",\"id\":");
        push_str(&mut start, &id);
        start.extend_from_slice(b",\"name\":");
        push_str(&mut start, self.ctx.tools.original(name));
        start.extend_from_slice(b",\"input\":{}}");
        let open = Open::Tool {
            upstream_index: index,
            upstream_id: new_id.map(str::to_owned),
            arguments: String::new(),
            mode: ArgumentsMode::Unknown,
            sent_any: false,
        };
        self.open_block(out, open, &start);
    }

    /// Sends the new part of an arguments fragment. Upstreams send either fragments to append
    /// or growing snapshots of the whole; the first fragment that extends what came before
    /// decides which.
    fn append_arguments(&mut self, fragment: &str, out: &mut Vec<u8>) {
        let Open::Tool {
            arguments,
            mode,
            sent_any,
            ..
        } = &mut self.open
        else {
            return;
        };
        let new_part = match *mode {
            ArgumentsMode::Unknown if arguments.is_empty() => fragment,
            ArgumentsMode::Unknown | ArgumentsMode::Snapshots
                if fragment.starts_with(arguments.as_str()) =>
            {
                *mode = ArgumentsMode::Snapshots;
                &fragment[arguments.len()..]
            }
            _ => {
                *mode = ArgumentsMode::Fragments;
                fragment
            }
        };
        if new_part.is_empty() {
            return;
        }
        arguments.push_str(new_part);
        *sent_any |= !new_part.trim().is_empty();
        self.output_estimate += text_tokens(new_part);
        self.delta(
            out,
            b"{\"type\":\"input_json_delta\",\"partial_json\":",
            new_part,
        );
    }

    fn open_block(&mut self, out: &mut Vec<u8>, open: Open, content_block: &[u8]) {
        self.open = open;
        begin_event(out, "content_block_start");
        out.extend_from_slice(b"{\"type\":\"content_block_start\",\"index\":");
        push_u64(out, u64::from(self.next_block));
        out.extend_from_slice(b",\"content_block\":");
        out.extend_from_slice(content_block);
        out.push(b'}');
        end_event(out);
        self.next_block += 1;
    }

    /// A delta for the open block: `prefix` is the delta object up to its text value.
    fn delta(&self, out: &mut Vec<u8>, prefix: &[u8], text: &str) {
        begin_event(out, "content_block_delta");
        out.extend_from_slice(b"{\"type\":\"content_block_delta\",\"index\":");
        push_u64(out, u64::from(self.next_block.saturating_sub(1)));
        out.extend_from_slice(b",\"delta\":");
        out.extend_from_slice(prefix);
        push_str(out, text);
        out.extend_from_slice(b"}}");
        end_event(out);
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        match std::mem::replace(&mut self.open, Open::None) {
            Open::None => return,
            Open::Text => {}
            // Anthropic clients expect a signature before a thinking block closes; ours is empty
            // (there is nothing to sign, and we drop thinking blocks the client sends back).
            Open::Thinking => self.delta(out, b"{\"type\":\"signature_delta\",\"signature\":", ""),
            Open::Tool { sent_any, .. } => {
                if !sent_any {
                    // A tool without arguments may get no fragment at all; `{}` keeps it parseable.
                    self.delta(
                        out,
                        b"{\"type\":\"input_json_delta\",\"partial_json\":",
                        "{}",
                    );
                }
            }
        }
        begin_event(out, "content_block_stop");
        out.extend_from_slice(b"{\"type\":\"content_block_stop\",\"index\":");
        push_u64(out, u64::from(self.next_block.saturating_sub(1)));
        out.push(b'}');
        end_event(out);
    }

    fn write_end(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ended = true;
        let (stop_reason, stop_sequence) = map_stop_reason(
            self.finish_reason.as_deref(),
            self.saw_tool_calls,
            self.matched_stop.as_deref(),
            &self.ctx,
        );
        let usage = self.usage();
        begin_event(out, "message_delta");
        out.extend_from_slice(b"{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":");
        push_str(out, stop_reason);
        out.extend_from_slice(b",\"stop_sequence\":");
        match stop_sequence {
            Some(s) => push_str(out, s),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"},\"usage\":");
        write_usage(out, &usage.tokens);
        out.push(b'}');
        end_event(out);
        begin_event(out, "message_stop");
        out.extend_from_slice(b"{\"type\":\"message_stop\"}");
        end_event(out);
    }
}

fn begin_event(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
}

fn end_event(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\n\n");
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow)]
    choices: Option<Vec<ChunkChoice<'a>>>,
    usage: Option<OpenAiUsage>,
    timings: Option<Timings>,
    error: Option<ChunkError>,
}

#[derive(Deserialize)]
struct ChunkError {
    message: Option<String>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    index: Option<u32>,
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    stop_reason: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reasoning_content: Option<&'a RawValue>,
    #[serde(borrow)]
    reasoning: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_calls: Option<Vec<DeltaToolCall<'a>>>,
}

#[derive(Deserialize)]
struct DeltaToolCall<'a> {
    index: Option<u32>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: Option<DeltaFunction<'a>>,
}

#[derive(Deserialize)]
struct DeltaFunction<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
}
