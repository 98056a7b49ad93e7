//! Same-format passthrough for Anthropic clients on Anthropic-native upstreams: the request and
//! the answer stay as they are except for what the upstream must not see or the client must
//! not see differently.
//!
//! On the way up: `model` becomes the account's deployment, Claude Code's per-request
//! `x-anthropic-billing-header:` system line is removed (it changes on every request and would
//! break the upstream's prefix cache from the first token on), and `max_tokens` above what the
//! account's context window leaves is lowered. On the way back: `model` in the answer (or in a
//! stream's `message_start`) is the name the client asked for, and usage is read for accounting.
//!
//! Bytes are forwarded as they came wherever possible: values are spliced in place using the
//! position of the parsed `RawValue` inside the payload, so key order, whitespace and every
//! field relayd does not rewrite (`cache_control`, `thinking`, tools, `metadata`, …) pass
//! through untouched.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use shared::usage::TokenCounts;

use super::json::{is_string, push_str};
use super::openai::{Entries, splice_model};
use super::request::strip_billing_lines;
use super::sse::LineSplitter;
use super::{TranslateError, Usage, describe_json_error};

/// How Claude Code's billing line starts (see [`super::request`]).
const BILLING_HEADER_PREFIX: &str = "x-anthropic-billing-header:";

/// What the proxy needs to remember about a request sent natively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeRequestInfo {
    /// The model name the client asked for.
    pub requested_model: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
}

/// Rewrites an Anthropic Messages request for a native upstream: `model` becomes `deployment`,
/// the billing line leaves `system`, and `max_tokens` above `max_tokens_cap` is lowered to it.
/// Other members are copied byte for byte.
///
/// Errors are [`TranslateError::InvalidRequest`] (HTTP 400).
pub fn prepare_native_request(
    body: &[u8],
    deployment: &str,
    max_tokens_cap: Option<u32>,
) -> Result<(Vec<u8>, NativeRequestInfo), TranslateError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| TranslateError::request("body", format!("not UTF-8: {e}")))?;
    let Entries(entries) = serde_json::from_str(text)
        .map_err(|e| TranslateError::request("body", describe_json_error(&e)))?;
    let mut requested_model = None;
    let mut stream = false;
    for (key, value) in &entries {
        match key.as_ref() {
            "model" => requested_model = Some(parse::<String>(value, "model")?),
            "stream" => stream = parse::<Option<bool>>(value, "stream")?.unwrap_or(false),
            _ => {}
        }
    }
    let Some(requested_model) = requested_model else {
        return Err(TranslateError::request("model", "field required"));
    };
    let mut out = Vec::with_capacity(body.len());
    out.push(b'{');
    let mut first = true;
    for (key, value) in &entries {
        let system;
        let rewritten: Cow<'_, [u8]> = match key.as_ref() {
            "model" => {
                let mut model = Vec::with_capacity(deployment.len() + 2);
                push_str(&mut model, deployment);
                Cow::Owned(model)
            }
            "system" => {
                system = without_billing(value)?;
                match &system {
                    System::Keep => Cow::Borrowed(value.get().as_bytes()),
                    System::Drop => continue,
                    System::Replace(bytes) => Cow::Borrowed(bytes.as_slice()),
                }
            }
            "max_tokens" => capped(value, max_tokens_cap),
            _ => Cow::Borrowed(value.get().as_bytes()),
        };
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        push_str(&mut out, key);
        out.push(b':');
        out.extend_from_slice(&rewritten);
    }
    out.push(b'}');
    Ok((
        out,
        NativeRequestInfo {
            requested_model,
            stream,
        },
    ))
}

/// A `max_tokens` value, lowered to the cap when above it (anything that is not a number is the
/// upstream's to judge).
fn capped(value: &RawValue, cap: Option<u32>) -> Cow<'_, [u8]> {
    match (cap, value.get().parse::<u64>()) {
        (Some(cap), Ok(asked)) if asked > u64::from(cap) => {
            Cow::Owned(itoa::Buffer::new().format(cap).as_bytes().to_vec())
        }
        _ => Cow::Borrowed(value.get().as_bytes()),
    }
}

/// What becomes of `system`.
enum System {
    /// No billing line: copied as it came.
    Keep,
    /// Nothing but the billing line: the member is left out.
    Drop,
    /// The value without its billing line.
    Replace(Vec<u8>),
}

/// One system block, as far as the billing line is concerned.
#[derive(Deserialize)]
struct SystemBlock<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
}

/// `system` (a string or a list of text blocks) without Claude Code's billing line. A block
/// that held only the billing line is removed; other blocks keep every byte.
fn without_billing(raw: &RawValue) -> Result<System, TranslateError> {
    if is_string(raw) {
        let text: Cow<'_, str> = parse(raw, "system")?;
        if !text.starts_with(BILLING_HEADER_PREFIX) {
            return Ok(System::Keep);
        }
        let rest = strip_billing_lines(text);
        if rest.is_empty() {
            return Ok(System::Drop);
        }
        let mut out = Vec::with_capacity(rest.len() + 2);
        push_str(&mut out, &rest);
        return Ok(System::Replace(out));
    }
    if !raw.get().starts_with('[') {
        return Ok(System::Keep);
    }
    let blocks: Vec<&RawValue> = parse(raw, "system")?;
    let mut changed = false;
    let mut out = vec![b'['];
    let mut kept = 0;
    for (i, block) in blocks.iter().enumerate() {
        let billing = billing_block(block).map_err(|e| {
            TranslateError::request(format!("system[{i}]"), describe_json_error(&e))
        })?;
        let Some((text_raw, text)) = billing else {
            if kept > 0 {
                out.push(b',');
            }
            out.extend_from_slice(block.get().as_bytes());
            kept += 1;
            continue;
        };
        changed = true;
        let rest = strip_billing_lines(text);
        if rest.is_empty() {
            continue;
        }
        if kept > 0 {
            out.push(b',');
        }
        splice_model(&mut out, block.get(), Some(text_raw), &rest);
        kept += 1;
    }
    out.push(b']');
    Ok(match (changed, kept) {
        (false, _) => System::Keep,
        (true, 0) => System::Drop,
        (true, _) => System::Replace(out),
    })
}

/// A text block starting with the billing line: its raw `text` value and the text.
fn billing_block(block: &RawValue) -> Result<Option<(&RawValue, Cow<'_, str>)>, serde_json::Error> {
    if !block.get().starts_with('{') {
        return Ok(None);
    }
    let parsed: SystemBlock<'_> = serde_json::from_str(block.get())?;
    let Some(raw) = parsed.text.filter(|t| is_string(t)) else {
        return Ok(None);
    };
    if parsed.kind.as_deref() != Some("text") {
        return Ok(None);
    }
    let text: Cow<'_, str> = serde_json::from_str(raw.get())?;
    Ok(text
        .starts_with(BILLING_HEADER_PREFIX)
        .then_some((raw, text)))
}

/// Rewrites a non-streamed Messages answer for the client (`model` back to the requested name)
/// and reads its usage (`None` when the upstream reported none).
///
/// Errors are [`TranslateError::InvalidUpstream`] (HTTP 502).
pub fn rewrite_native_response(
    body: &[u8],
    requested_model: &str,
) -> Result<(Vec<u8>, Option<Usage>), TranslateError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| TranslateError::upstream("body", format!("not UTF-8: {e}")))?;
    let parsed: MessageHead<'_> = serde_json::from_str(text)
        .map_err(|e| TranslateError::upstream("body", describe_json_error(&e)))?;
    let mut out = Vec::with_capacity(body.len() + requested_model.len());
    splice_model(&mut out, text, parsed.model, requested_model);
    Ok((
        out,
        parsed
            .usage
            .map(|u| AnthropicUsage::default().merged(u).to_usage()),
    ))
}

/// An SSE `error` event in the Messages API's shape, for a failure relayd reports mid-stream.
pub fn native_error_event(error_type: &str, message: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":");
    push_str(out, error_type);
    out.extend_from_slice(b",\"message\":");
    push_str(out, message);
    out.extend_from_slice(b"}}\n\n");
}

/// Watches a native Messages stream on its way to the client: forwards it event by event (whole
/// events only, so relayd's own `ping`s never land inside one), rewrites `message.model` in
/// `message_start`, and reads usage from `message_start` and `message_delta`.
#[derive(Debug)]
pub struct NativeStreamTap {
    lines: LineSplitter,
    requested_model: String,
    /// The lines of the event being read, until the blank line that ends it.
    event: Vec<u8>,
    usage: Option<AnthropicUsage>,
    ended: bool,
    errored: bool,
}

impl NativeStreamTap {
    /// A tap for the answer to the request described by `info`.
    pub fn new(info: &NativeRequestInfo) -> Self {
        Self {
            lines: LineSplitter::default(),
            requested_model: info.requested_model.clone(),
            event: Vec::new(),
            usage: None,
            ended: false,
            errored: false,
        }
    }

    /// Feeds upstream bytes; appends the complete events to forward to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.lines.push(bytes);
        self.drain(false, out);
    }

    /// The upstream ended: forwards whatever is left.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.drain(true, out);
        out.append(&mut self.event);
    }

    /// Usage reported by the upstream so far (`None`: none yet).
    pub fn usage(&self) -> Option<Usage> {
        self.usage.map(AnthropicUsage::to_usage)
    }

    /// The upstream sent `message_stop`: the answer is complete.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The upstream sent an `error` event.
    pub fn errored(&self) -> bool {
        self.errored
    }

    /// Bytes held back (an unfinished line or event), for the caller to bound.
    pub fn pending_bytes(&self) -> usize {
        self.lines.pending_bytes() + self.event.len()
    }

    fn drain(&mut self, at_eof: bool, out: &mut Vec<u8>) {
        while let Some(line) = self.lines.next_line(at_eof) {
            let content = self.lines.bytes(line.content.clone());
            let whole = self.lines.bytes(line.whole.clone());
            if content.is_empty() {
                self.event.extend_from_slice(whole);
                out.append(&mut self.event);
                continue;
            }
            let payload = content
                .strip_prefix(b"data:")
                .map(|p| p.strip_prefix(b" ").unwrap_or(p))
                .filter(|p| p.first() == Some(&b'{') && !carries_nothing_read(p))
                .and_then(|p| std::str::from_utf8(p).ok());
            let parsed = payload.and_then(|p| {
                serde_json::from_str::<EventData<'_>>(p)
                    .ok()
                    .map(|parsed| (p, parsed))
            });
            let Some((payload, parsed)) = parsed else {
                self.event.extend_from_slice(whole);
                continue;
            };
            let usage = parsed
                .usage
                .or_else(|| parsed.message.as_ref().and_then(|m| m.usage));
            if let Some(usage) = usage {
                self.usage = Some(self.usage.unwrap_or_default().merged(usage));
            }
            match parsed.kind.as_ref() {
                "message_stop" => self.ended = true,
                "error" => self.errored = true,
                _ => {}
            }
            let model = parsed.message.as_ref().and_then(|m| m.model);
            if parsed.kind == "message_start" && model.is_some() {
                let prefix_len = content.len() - payload.len();
                self.event.extend_from_slice(&whole[..prefix_len]);
                splice_model(&mut self.event, payload, model, &self.requested_model);
                self.event.extend_from_slice(&whole[content.len()..]);
            } else {
                self.event.extend_from_slice(whole);
            }
        }
    }
}

/// Events the tap has nothing to read in — a text or tool-input delta, most of a stream —
/// recognised without parsing them when written compactly with `type` first, as Anthropic and
/// most servers write them. Others are parsed; being wrong here only costs that parse.
fn carries_nothing_read(payload: &[u8]) -> bool {
    const SKIPPED: [&[u8]; 2] = [b"{\"type\":\"content_block_delta\",", b"{\"type\":\"ping\""];
    SKIPPED.iter().any(|prefix| payload.starts_with(prefix))
}

fn parse<'a, T: Deserialize<'a>>(raw: &'a RawValue, path: &str) -> Result<T, TranslateError> {
    serde_json::from_str(raw.get())
        .map_err(|e| TranslateError::request(path, describe_json_error(&e)))
}

/// The parts of a stream event the tap reads.
#[derive(Deserialize)]
struct EventData<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    message: Option<MessageHead<'a>>,
    usage: Option<AnthropicUsage>,
}

/// The parts of a message (a complete answer, or `message_start`'s) the passthrough reads.
#[derive(Deserialize)]
struct MessageHead<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    usage: Option<AnthropicUsage>,
}

/// The Messages API's usage: input excludes both cache reads and cache writes.
#[derive(Debug, Deserialize, Default, Clone, Copy)]
struct AnthropicUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// `self` with the counts `later` reports (`message_delta` carries the final ones).
    fn merged(self, later: Self) -> Self {
        Self {
            input_tokens: later.input_tokens.or(self.input_tokens),
            output_tokens: later.output_tokens.or(self.output_tokens),
            cache_read_input_tokens: later
                .cache_read_input_tokens
                .or(self.cache_read_input_tokens),
            cache_creation_input_tokens: later
                .cache_creation_input_tokens
                .or(self.cache_creation_input_tokens),
        }
    }

    /// relayd's counts: tokens written to the cache were processed as input, so they count as
    /// input (relayd records no separate cache-write count).
    fn to_usage(self) -> Usage {
        Usage {
            tokens: TokenCounts {
                input_tokens: self.input_tokens.unwrap_or(0)
                    + self.cache_creation_input_tokens.unwrap_or(0),
                output_tokens: self.output_tokens.unwrap_or(0),
                cache_read_tokens: self.cache_read_input_tokens.unwrap_or(0),
            },
            from_upstream: true,
        }
    }
}

#[cfg(test)]
#[path = "native_tests.rs"]
mod tests;
