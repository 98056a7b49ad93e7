//! OpenAI Chat Completions response → Anthropic Messages response (non-streaming), plus the pieces
//! the stream translator shares with it: usage conversion, `finish_reason` mapping and tool-argument
//! repair.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::json::{is_object, is_string, push_str, push_u64};
use super::request::RequestContext;
use super::tools::client_tool_id;
use super::{TranslateError, Usage, describe_json_error, tokens::text_tokens};
use shared::usage::TokenCounts;

/// Translates a non-streaming OpenAI response body into an Anthropic message body, and returns the
/// usage it reported (or relayd's estimate when it reported none).
///
/// Errors are [`TranslateError::InvalidUpstream`] (HTTP 502): the upstream sent something that is
/// not a chat completion, or tool arguments that are not JSON and cannot be repaired.
pub fn openai_to_anthropic(
    body: &[u8],
    ctx: &RequestContext,
) -> Result<(Vec<u8>, Usage), TranslateError> {
    openai_to_anthropic_with(body, ctx, || ctx.estimated_input_tokens)
}

/// As [`openai_to_anthropic`], with the input token estimate computed by `estimate` only when
/// the upstream reports no usage.
pub fn openai_to_anthropic_with(
    body: &[u8],
    ctx: &RequestContext,
    estimate: impl FnOnce() -> u64,
) -> Result<(Vec<u8>, Usage), TranslateError> {
    let completion: Completion<'_> = serde_json::from_slice(body)
        .map_err(|e| TranslateError::upstream("body", describe_json_error(&e)))?;
    let choice = completion.choices.unwrap_or_default().into_iter().next();
    let (message, finish_reason, matched_stop) = match choice {
        Some(choice) => (choice.message, choice.finish_reason, choice.stop_reason),
        None => (None, None, None),
    };
    let message = message.unwrap_or_default();

    let message_id = message_id(completion.id.as_deref(), body);

    let mut out = Vec::with_capacity(body.len() + 256);
    out.extend_from_slice(b"{\"id\":");
    push_str(&mut out, &message_id);
    out.extend_from_slice(b",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    push_str(&mut out, &ctx.requested_model);
    out.extend_from_slice(b",\"content\":[");

    let mut blocks = 0usize;
    let mut begin_block = |out: &mut Vec<u8>| {
        if blocks > 0 {
            out.push(b',');
        }
        blocks += 1;
    };
    let mut output_estimate = 0u64;
    let reasoning = text_of(message.reasoning_content).or_else(|| text_of(message.reasoning));
    if let Some(thinking) = reasoning.filter(|t| !t.is_empty()) {
        output_estimate += text_tokens(&thinking);
        begin_block(&mut out);
        out.extend_from_slice(b"{\"type\":\"thinking\",\"thinking\":");
        push_str(&mut out, &thinking);
        out.extend_from_slice(b",\"signature\":\"\"}");
    }
    let text = content_text(message.content)?
        .filter(|t| !t.is_empty())
        .or(message.refusal);
    if let Some(text) = text.filter(|t| !t.is_empty()) {
        output_estimate += text_tokens(&text);
        begin_block(&mut out);
        out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
        push_str(&mut out, &text);
        out.push(b'}');
    }
    let calls = message.tool_calls.unwrap_or_default();
    for (i, call) in calls.iter().enumerate() {
        begin_block(&mut out);
        output_estimate += write_tool_use(&mut out, call, i, &message_id, ctx)?;
    }
    out.push(b']');

    let matched_stop = matched_stop
        .as_ref()
        .and_then(|raw| serde_json::from_str::<Cow<'_, str>>(raw.get()).ok());
    let (stop_reason, stop_sequence) = map_stop_reason(
        finish_reason.as_deref(),
        !calls.is_empty(),
        matched_stop.as_deref(),
        ctx,
    );
    out.extend_from_slice(b",\"stop_reason\":");
    push_str(&mut out, stop_reason);
    out.extend_from_slice(b",\"stop_sequence\":");
    match stop_sequence {
        Some(s) => push_str(&mut out, s),
        None => out.extend_from_slice(b"null"),
    }

    let usage = match completion.usage {
        Some(u) => u.with_timings(completion.timings).to_usage(),
        None => Usage {
            tokens: TokenCounts {
                input_tokens: estimate(),
                output_tokens: output_estimate,
                cache_read_tokens: 0,
            },
            from_upstream: false,
        },
    };
    out.extend_from_slice(b",\"usage\":");
    write_usage(&mut out, &usage.tokens);
    out.push(b'}');
    Ok((out, usage))
}

/// The Anthropic message id for an answer: the upstream's id kept to its safe characters, or,
/// when it has none usable, one derived from the body so it is stable for the same answer.
fn message_id(upstream_id: Option<&str>, body: &[u8]) -> String {
    match upstream_id {
        Some(id) if id.bytes().any(|b| b.is_ascii_alphanumeric()) => {
            let mut message_id = String::with_capacity("msg_".len() + id.len());
            message_id.push_str("msg_");
            message_id.extend(
                id.chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_'),
            );
            message_id
        }
        _ => format!("msg_{}", hex::encode(&Sha256::digest(body)[..12])),
    }
}

/// Writes the `i`-th tool call as a `tool_use` block (arguments repaired into an object) and
/// returns its output token estimate.
fn write_tool_use(
    out: &mut Vec<u8>,
    call: &ToolCall<'_>,
    i: usize,
    message_id: &str,
    ctx: &RequestContext,
) -> Result<u64, TranslateError> {
    // Formatted only on error.
    let path = |field: &str| format!("choices[0].message.tool_calls[{i}].{field}");
    let function = call.function.as_ref();
    let name = function.and_then(|f| f.name.as_deref()).unwrap_or_default();
    if name.is_empty() {
        return Err(TranslateError::upstream(
            path("function.name"),
            "missing tool name",
        ));
    }
    let arguments = function
        .and_then(|f| f.arguments.as_deref())
        .unwrap_or_default();
    let input = repair_arguments(arguments)
        .map_err(|message| TranslateError::upstream(path("function.arguments"), message))?;
    out.extend_from_slice(b"{\"type\":\"tool_use\",\"id\":");
    match call.id.as_deref().filter(|id| !id.is_empty()) {
        Some(id) => push_str(out, &client_tool_id(id)),
        None => push_str(out, &format!("toolu_{}_{i}", &message_id["msg_".len()..])),
    }
    out.extend_from_slice(b",\"name\":");
    push_str(out, ctx.tools.original(name));
    out.extend_from_slice(b",\"input\":");
    out.extend_from_slice(input.as_bytes());
    out.push(b'}');
    Ok(text_tokens(arguments))
}

/// Writes an Anthropic `usage` object.
pub(crate) fn write_usage(out: &mut Vec<u8>, tokens: &TokenCounts) {
    out.extend_from_slice(b"{\"input_tokens\":");
    push_u64(out, tokens.input_tokens);
    out.extend_from_slice(b",\"output_tokens\":");
    push_u64(out, tokens.output_tokens);
    out.extend_from_slice(b",\"cache_read_input_tokens\":");
    push_u64(out, tokens.cache_read_tokens);
    out.extend_from_slice(b",\"cache_creation_input_tokens\":0}");
}

/// Anthropic `stop_reason` (and matched stop sequence) for an OpenAI `finish_reason`.
///
/// `stop` after tool calls is `tool_use`: Ollama and others report `stop` there, and Claude Code
/// only runs tools when it sees `tool_use`.
pub(crate) fn map_stop_reason<'c>(
    finish_reason: Option<&str>,
    saw_tool_calls: bool,
    matched_stop: Option<&str>,
    ctx: &'c RequestContext,
) -> (&'static str, Option<&'c str>) {
    match finish_reason {
        Some("length") => ("max_tokens", None),
        Some("tool_calls" | "function_call") => ("tool_use", None),
        Some("content_filter") => ("refusal", None),
        _ if saw_tool_calls => ("tool_use", None),
        _ => {
            // vLLM reports the matched stop string in `stop_reason`; only trust it when it is one of
            // the client's own stop sequences.
            match matched_stop.and_then(|m| ctx.stop_sequences.iter().find(|s| s.as_str() == m)) {
                Some(s) => ("stop_sequence", Some(s.as_str())),
                None => ("end_turn", None),
            }
        }
    }
}

/// Tool arguments as a JSON object text: as sent when valid, repaired when trivially broken.
///
/// Repairs: empty or whitespace-only → `{}`; `null` → `{}`; an object double-encoded as a JSON
/// string → the object; an object cut short (unclosed strings, arrays, objects, as when the output
/// hit `max_tokens`) → closed. Anything else is an error message.
pub(crate) fn repair_arguments(arguments: &str) -> Result<Cow<'_, str>, String> {
    let trimmed = arguments.trim();
    if trimmed.is_empty() || trimmed == "null" {
        return Ok(Cow::Borrowed("{}"));
    }
    match serde_json::from_str::<&RawValue>(trimmed) {
        Ok(raw) if is_object(raw) => return Ok(Cow::Borrowed(trimmed)),
        Ok(raw) if is_string(raw) => {
            if let Ok(inner) = serde_json::from_str::<String>(raw.get())
                && let Ok(inner_raw) = serde_json::from_str::<&RawValue>(inner.trim())
                && is_object(inner_raw)
            {
                return Ok(Cow::Owned(inner.trim().to_owned()));
            }
            return Err("tool arguments are a string, not a JSON object".to_owned());
        }
        Ok(_) => return Err("tool arguments are not a JSON object".to_owned()),
        Err(_) => {}
    }
    if trimmed.starts_with('{') {
        let closed = close_truncated_json(trimmed);
        if serde_json::from_str::<&RawValue>(&closed).is_ok_and(is_object) {
            return Ok(Cow::Owned(closed));
        }
    }
    Err(format!(
        "tool arguments are not valid JSON: {}",
        preview(trimmed)
    ))
}

/// Appends the closers a truncated JSON text is missing.
fn close_truncated_json(text: &str) -> String {
    let mut stack = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' => stack.push(b'}'),
            b'[' => stack.push(b']'),
            b'}' | b']' => {
                stack.pop();
            }
            _ => {}
        }
    }
    let mut closed = text.to_owned();
    if in_string {
        if escaped {
            closed.pop();
        }
        closed.push('"');
    }
    // A dangling `,` or `:` cannot be closed meaningfully; the parse after this will reject it.
    while let Some(closer) = stack.pop() {
        closed.push(char::from(closer));
    }
    closed
}

fn preview(text: &str) -> String {
    let mut cut = text.len().min(80);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    if cut < text.len() {
        format!("{}…", &text[..cut])
    } else {
        text.to_owned()
    }
}

/// A string value's text, borrowed from the body when it has no escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// A JSON value as text when it is a string.
fn text_of(raw: Option<&RawValue>) -> Option<Cow<'_, str>> {
    let raw = raw?;
    if is_string(raw) {
        return serde_json::from_str(raw.get()).ok().map(|t: Text<'_>| t.0);
    }
    None
}

/// `message.content`: a string, null, or (some upstreams) an array of text parts.
fn content_text(raw: Option<&RawValue>) -> Result<Option<Cow<'_, str>>, TranslateError> {
    let Some(raw) = raw else { return Ok(None) };
    if is_string(raw) {
        return serde_json::from_str(raw.get())
            .map(|t: Text<'_>| Some(t.0))
            .map_err(|e| {
                TranslateError::upstream("choices[0].message.content", describe_json_error(&e))
            });
    }
    #[derive(Deserialize)]
    struct TextPart {
        text: Option<String>,
    }
    let parts: Vec<TextPart> = serde_json::from_str(raw.get()).map_err(|e| {
        TranslateError::upstream("choices[0].message.content", describe_json_error(&e))
    })?;
    Ok(Some(Cow::Owned(
        parts.into_iter().filter_map(|p| p.text).collect(),
    )))
}

#[derive(Deserialize)]
struct Completion<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    choices: Option<Vec<Choice<'a>>>,
    usage: Option<OpenAiUsage>,
    timings: Option<Timings>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    message: Option<ChoiceMessage<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    stop_reason: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct ChoiceMessage<'a> {
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    reasoning_content: Option<&'a RawValue>,
    #[serde(borrow)]
    reasoning: Option<&'a RawValue>,
    #[serde(borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// OpenAI `usage`, shared with the stream translator and the OpenAI passthrough.
///
/// OpenAI's `prompt_tokens` includes the cached part (`prompt_tokens_details.cached_tokens`);
/// relayd counts, as Anthropic does, `input_tokens` without it and cache reads apart, so that
/// input + cache read = the prompt and nothing is counted twice.
#[derive(Debug, Deserialize, Default, Clone, Copy)]
pub(crate) struct OpenAiUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Debug, Deserialize, Default, Clone, Copy)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

/// llama.cpp's `timings`, a sibling of `usage` in its answers and in its last stream chunk:
/// `cache_n` prompt tokens were reused from the KV cache and `prompt_n` were processed anew
/// (`prompt_tokens` = `cache_n` + `prompt_n`). Builds that also fill `cached_tokens` give it the
/// same value; older ones report cache reuse only here.
#[derive(Debug, Deserialize, Default, Clone, Copy)]
pub(crate) struct Timings {
    cache_n: Option<u64>,
}

impl OpenAiUsage {
    /// Takes llama.cpp's `timings.cache_n` as the cached count when `usage` gives none itself.
    pub(crate) fn with_timings(mut self, timings: Option<Timings>) -> Self {
        let from_timings = timings.and_then(|t| t.cache_n);
        let details = self.prompt_tokens_details.get_or_insert_default();
        if details.cached_tokens.is_none() {
            details.cached_tokens = from_timings;
        }
        self
    }

    /// Anthropic-style counts: input excludes the cached part, which is reported separately.
    pub(crate) fn to_usage(self) -> Usage {
        let prompt = self.prompt_tokens.unwrap_or(0);
        let cached = self
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
            .min(prompt);
        Usage {
            tokens: TokenCounts {
                input_tokens: prompt - cached,
                output_tokens: self.completion_tokens.unwrap_or(0),
                cache_read_tokens: cached,
            },
            from_upstream: true,
        }
    }
}
