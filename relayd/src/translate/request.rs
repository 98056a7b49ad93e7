//! Anthropic Messages request → OpenAI Chat Completions request.
//!
//! The body is parsed into borrowed views (`Cow<str>` and `RawValue`, so big strings without escapes,
//! JSON schemas, tool descriptions and tool inputs are never copied into a tree), mapped into a list of
//! OpenAI messages (where same-role neighbours are merged), and written by hand in a fixed key order.
//! See the module docs of [`super`] for why the output must be byte-stable and append-only.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::json::{
    Items, Path, is_object, is_string, parse_opt, parse_request, push_escaped, push_hex_str,
    push_str, push_str_parts, push_u64,
};
use super::tools::{ToolNames, upstream_tool_id};
use super::{TranslateError, describe_json_error, tokens};

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

/// OpenAI accepts at most this many stop sequences.
const MAX_STOP_SEQUENCES: usize = 4;

/// Claude Code's first system block: changes on every request, so it would defeat prefix caching.
const BILLING_HEADER_PREFIX: &str = "x-anthropic-billing-header:";

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
        let top = &self.top;
        match tokens::estimate(top.system, top.messages, top.tools) {
            Some(n) => Ok(n),
            None => Ok(tokens::count_with_serde(self.body)?.max(1)),
        }
    }
}

/// When a translation computes the input token estimate.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Estimate {
    Always,
    StreamsOnly,
}

fn translate(
    body: &[u8],
    top: TopLevel<'_>,
    opts: &UpstreamOptions<'_>,
    estimate: Estimate,
) -> Result<(Vec<u8>, RequestContext), TranslateError> {
    let requested_model: Cow<'_, str> = match top.model {
        Some(raw) => parse_request(raw, Path::Root("model"))?,
        None => return Err(TranslateError::request("model", "field required")),
    };
    let Some(messages_raw) = top.messages else {
        return Err(TranslateError::request("messages", "field required"));
    };
    let messages_path = Path::Root("messages");
    let mut messages: Items<'_, Message<'_>> = Items::parse(messages_raw, messages_path)?;
    if messages.len() == 0 {
        // Anthropic answers 400 too; an upstream would get a prompt of nothing but the system.
        return Err(TranslateError::request(
            "messages",
            "at least one message is required",
        ));
    }
    let max_tokens: Option<u64> = parse_opt(top.max_tokens, Path::Root("max_tokens"))?;
    if max_tokens == Some(0) {
        return Err(TranslateError::request("max_tokens", "must be at least 1"));
    }
    let stream: Option<bool> = parse_opt(top.stream, Path::Root("stream"))?;
    let stream = stream.unwrap_or(false);
    let stop_sequences: Option<Vec<Cow<'_, str>>> =
        parse_opt(top.stop_sequences, Path::Root("stop_sequences"))?;
    let metadata: Option<Metadata<'_>> = parse_opt(top.metadata, Path::Root("metadata"))?;
    let thinking: Option<Thinking<'_>> = parse_opt(top.thinking, Path::Root("thinking"))?;
    let output_config: Option<OutputConfig<'_>> =
        parse_opt(top.output_config, Path::Root("output_config"))?;
    let tool_choice: Option<ToolChoice<'_>> =
        parse_opt(top.tool_choice, Path::Root("tool_choice"))?;
    let tools_path = Path::Root("tools");
    let tools: Option<Items<'_, Tool<'_>>> = top
        .tools
        .map(|raw| Items::parse(raw, tools_path))
        .transpose()?;
    // Sampling numbers are validated, then copied as the client wrote them.
    let temperature = number(top.temperature, Path::Root("temperature"))?;
    let top_p = number(top.top_p, Path::Root("top_p"))?;
    let _top_k: Option<u64> = parse_opt(top.top_k, Path::Root("top_k"))?;

    let mut names = ToolNames::default();
    let mut out = Vec::with_capacity(body.len() + body.len() / 8);
    out.extend_from_slice(b"{\"model\":");
    push_str(&mut out, opts.deployment);

    // messages
    out.extend_from_slice(b",\"messages\":[");
    let mut converted = Vec::with_capacity(messages.len() + 1);
    let system = match top.system {
        Some(raw) => system_text(raw, Path::Root("system"), true)?,
        None => Cow::Borrowed(""),
    };
    if !system.is_empty() {
        converted.push(OutMessage::System(system));
    }
    let mut i = 0;
    while let Some(message) = messages.next(messages_path.index(i)) {
        convert_message(
            &message?,
            messages_path.index(i),
            opts,
            &mut names,
            &mut converted,
        )?;
        i += 1;
    }
    for (i, message) in converted.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_message(&mut out, message);
    }
    out.push(b']');

    // tools
    let mut wrote_tools = false;
    if let Some(mut tools) = tools {
        let mut first = true;
        let mut i = 0;
        while let Some(tool) = tools.next(tools_path.index(i)) {
            let path = tools_path.index(i);
            i += 1;
            let tool = tool?;
            if let Some(kind) = tool.kind.as_deref()
                && kind != "custom"
            {
                tracing::debug!(tool = %tool.name, kind, "dropping server tool the upstream cannot run");
                continue;
            }
            out.extend_from_slice(if first { b",\"tools\":[" } else { b"," });
            first = false;
            out.extend_from_slice(b"{\"type\":\"function\",\"function\":{\"name\":");
            push_str(&mut out, &names.shorten(&tool.name));
            if let Some(description) = tool.description {
                if !is_string(description) {
                    return Err(TranslateError::request(
                        path.key("description"),
                        "expected a string",
                    ));
                }
                out.extend_from_slice(b",\"description\":");
                out.extend_from_slice(description.get().as_bytes());
            }
            out.extend_from_slice(b",\"parameters\":");
            match tool.input_schema {
                Some(schema) if is_object(schema) => out.extend_from_slice(schema.get().as_bytes()),
                Some(_) => {
                    return Err(TranslateError::request(
                        path.key("input_schema"),
                        "expected an object",
                    ));
                }
                None => out.extend_from_slice(b"{\"type\":\"object\",\"properties\":{}}"),
            }
            out.extend_from_slice(b"}}");
        }
        if !first {
            out.push(b']');
            wrote_tools = true;
        }
    }

    // tool_choice (meaningless, and rejected by some servers, without tools)
    if wrote_tools && let Some(choice) = &tool_choice {
        out.extend_from_slice(b",\"tool_choice\":");
        match choice.kind.as_ref() {
            "auto" => out.extend_from_slice(b"\"auto\""),
            "any" => out.extend_from_slice(b"\"required\""),
            "none" => out.extend_from_slice(b"\"none\""),
            "tool" => {
                let Some(name) = &choice.name else {
                    return Err(TranslateError::request(
                        "tool_choice.name",
                        "field required for type \"tool\"",
                    ));
                };
                out.extend_from_slice(b"{\"type\":\"function\",\"function\":{\"name\":");
                push_str(&mut out, &names.shorten(name));
                out.extend_from_slice(b"}}");
            }
            other => {
                return Err(TranslateError::request(
                    "tool_choice.type",
                    format!("unknown tool_choice type {other:?}"),
                ));
            }
        }
        if choice.disable_parallel_tool_use == Some(true) {
            out.extend_from_slice(b",\"parallel_tool_calls\":false");
        }
    }

    // the rest, in a fixed order
    let limit = opts.max_output_tokens.map(u64::from);
    let max_tokens = match (max_tokens, limit) {
        (Some(asked), Some(limit)) => Some(asked.min(limit)),
        (asked, limit) => asked.or(limit),
    };
    if let Some(max_tokens) = max_tokens {
        out.extend_from_slice(if opts.use_max_completion_tokens {
            b",\"max_completion_tokens\":"
        } else {
            b",\"max_tokens\":"
        });
        push_u64(&mut out, max_tokens);
    }
    let stop_sequences: Vec<String> = stop_sequences
        .unwrap_or_default()
        .into_iter()
        .map(Cow::into_owned)
        .collect();
    if !stop_sequences.is_empty() {
        if stop_sequences.len() > MAX_STOP_SEQUENCES {
            tracing::debug!(
                count = stop_sequences.len(),
                "sending only the first 4 stop sequences upstream"
            );
        }
        out.extend_from_slice(b",\"stop\":[");
        for (i, stop) in stop_sequences.iter().take(MAX_STOP_SEQUENCES).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_str(&mut out, stop);
        }
        out.push(b']');
    }
    if let Some(t) = temperature {
        out.extend_from_slice(b",\"temperature\":");
        out.extend_from_slice(t.as_bytes());
    }
    if let Some(p) = top_p {
        out.extend_from_slice(b",\"top_p\":");
        out.extend_from_slice(p.as_bytes());
    }
    if let Some(user_id) = metadata.as_ref().and_then(|m| m.user_id.as_deref()) {
        // Hashed: the upstream only needs a stable per-user token, not Claude Code's device id.
        let digest = Sha256::digest(user_id.as_bytes());
        out.extend_from_slice(b",\"user\":");
        push_hex_str(&mut out, &digest[..16]);
    }
    write_reasoning(
        &mut out,
        opts.reasoning,
        thinking.as_ref(),
        output_config.as_ref(),
    )?;
    if let Some(format) = output_config.as_ref().and_then(|c| c.format.as_ref()) {
        match (format.kind.as_ref(), format.schema) {
            ("json_schema", Some(schema)) if is_object(schema) => {
                out.extend_from_slice(b",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"output\",\"schema\":");
                out.extend_from_slice(schema.get().as_bytes());
                out.extend_from_slice(b"}}");
            }
            ("json_schema", _) => {
                return Err(TranslateError::request(
                    "output_config.format.schema",
                    "expected an object",
                ));
            }
            (other, _) => {
                return Err(TranslateError::request(
                    "output_config.format.type",
                    format!("unsupported output format {other:?}"),
                ));
            }
        }
    }
    if stream {
        out.extend_from_slice(b",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    }
    out.push(b'}');

    // The values that cost tokens are already split off; only odd input needs another full pass.
    let estimated_input_tokens = if stream || estimate == Estimate::Always {
        match tokens::estimate(top.system, Some(messages_raw), top.tools) {
            Some(n) => n,
            None => tokens::count_with_serde(body)?.max(1),
        }
    } else {
        0
    };
    let context = RequestContext {
        requested_model: requested_model.into_owned(),
        stream,
        estimated_input_tokens,
        tools: names,
        stop_sequences,
    };
    Ok((out, context))
}

/// Top-level keys we read. Everything else (`context_management`, `service_tier`, keys added by new
/// Claude Code releases) is ignored. Each is kept raw so a type error can name its key.
#[derive(Deserialize, Clone, Copy)]
struct TopLevel<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    #[serde(borrow)]
    system: Option<&'a RawValue>,
    #[serde(borrow)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    stop_sequences: Option<&'a RawValue>,
    #[serde(borrow)]
    stream: Option<&'a RawValue>,
    #[serde(borrow)]
    temperature: Option<&'a RawValue>,
    #[serde(borrow)]
    top_p: Option<&'a RawValue>,
    #[serde(borrow)]
    top_k: Option<&'a RawValue>,
    #[serde(borrow)]
    tools: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_choice: Option<&'a RawValue>,
    #[serde(borrow)]
    thinking: Option<&'a RawValue>,
    #[serde(borrow)]
    output_config: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(borrow)]
    user_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Thinking<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    budget_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct OutputConfig<'a> {
    #[serde(borrow)]
    effort: Option<Cow<'a, str>>,
    #[serde(borrow)]
    format: Option<OutputFormat<'a>>,
}

#[derive(Deserialize)]
struct OutputFormat<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    schema: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ToolChoice<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    description: Option<&'a RawValue>,
    #[serde(borrow)]
    input_schema: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow)]
    content: &'a RawValue,
}

/// Every field any content block type uses; which ones matter depends on `type`. One flat struct is
/// cheaper than an enum with `#[serde(tag)]` (which buffers the whole block) and lets errors name
/// the block precisely.
#[derive(Deserialize)]
struct Block<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_use_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    is_error: Option<bool>,
    #[serde(borrow)]
    source: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Source<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    media_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<Cow<'a, str>>,
    #[serde(borrow)]
    url: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

/// One OpenAI message before serialization.
enum OutMessage<'a> {
    System(Cow<'a, str>),
    User(Vec<Part<'a>>),
    Assistant(Assistant<'a>),
    Tool { id: Cow<'a, str>, content: String },
}

enum Part<'a> {
    Text(Cow<'a, str>),
    /// `url` pieces, concatenated when written (saves copying base64 data into a `data:` URL).
    Image([Cow<'a, str>; 4]),
}

#[derive(Default)]
struct Assistant<'a> {
    text: Vec<Cow<'a, str>>,
    reasoning: Vec<Cow<'a, str>>,
    calls: Vec<Call<'a>>,
}

struct Call<'a> {
    id: Cow<'a, str>,
    name: Cow<'a, str>,
    arguments: Option<&'a RawValue>,
}

/// Validates an optional number and returns its text as written.
fn number<'a>(
    raw: Option<&'a RawValue>,
    path: Path<'_>,
) -> Result<Option<&'a str>, TranslateError> {
    let Some(raw) = raw else { return Ok(None) };
    let _: f64 = parse_request(raw, path)?;
    Ok(Some(raw.get().trim()))
}

/// Text of a `system` value (string or array of text blocks), blocks joined with `"\n\n"`.
/// With `strip_billing`, Claude Code's per-request billing line is removed. Borrowed from the
/// request when it is a single text without escapes.
fn system_text<'a>(
    raw: &'a RawValue,
    path: Path<'_>,
    strip_billing: bool,
) -> Result<Cow<'a, str>, TranslateError> {
    let mut joined = Cow::Borrowed("");
    if is_string(raw) {
        join_system(&mut joined, parse_request(raw, path)?, strip_billing);
        return Ok(joined);
    }
    let mut blocks: Items<'a, Block<'a>> = Items::parse(raw, path)?;
    let mut i = 0;
    while let Some(block) = blocks.next(path.index(i)) {
        let block_path = path.index(i);
        i += 1;
        let block = block?;
        match (block.kind.as_ref(), block.text) {
            ("text", Some(text)) => join_system(&mut joined, text, strip_billing),
            ("text", None) => {
                return Err(TranslateError::request(
                    block_path.key("text"),
                    "field required",
                ));
            }
            (other, _) => {
                return Err(TranslateError::request(
                    block_path.key("type"),
                    format!("system blocks must be text, not {other:?}"),
                ));
            }
        }
    }
    Ok(joined)
}

/// Appends one system text (empty texts are skipped, so they add no joiner).
fn join_system<'a>(joined: &mut Cow<'a, str>, text: Cow<'a, str>, strip_billing: bool) {
    let text = if strip_billing {
        strip_billing_lines(text)
    } else {
        text
    };
    if text.is_empty() {
        return;
    }
    if joined.is_empty() {
        *joined = text;
    } else {
        let joined = joined.to_mut();
        joined.push_str(TEXT_JOINER);
        joined.push_str(&text);
    }
}

/// `text` without its leading billing-header lines.
fn strip_billing_lines(text: Cow<'_, str>) -> Cow<'_, str> {
    let mut rest: &str = &text;
    while rest.starts_with(BILLING_HEADER_PREFIX) {
        rest = rest.split_once('\n').map_or("", |(_, after)| after);
    }
    let cut = text.len() - rest.len();
    match text {
        Cow::Borrowed(text) => Cow::Borrowed(&text[cut..]),
        Cow::Owned(mut text) => {
            text.drain(..cut);
            Cow::Owned(text)
        }
    }
}

fn convert_message<'a>(
    message: &Message<'a>,
    path: Path<'_>,
    opts: &UpstreamOptions<'_>,
    names: &mut ToolNames,
    out: &mut Vec<OutMessage<'a>>,
) -> Result<(), TranslateError> {
    let content_path = path.key("content");
    match message.role.as_ref() {
        "system" => {
            let text = system_text(message.content, content_path, false)?;
            if !text.is_empty() {
                out.push(OutMessage::System(text));
            }
        }
        "user" => convert_user(message.content, content_path, out)?,
        "assistant" => convert_assistant(message.content, content_path, opts, names, out)?,
        other => {
            return Err(TranslateError::request(
                path.key("role"),
                format!("expected \"user\", \"assistant\" or \"system\", not {other:?}"),
            ));
        }
    }
    Ok(())
}

/// Content blocks of a message: a string becomes one text block.
fn blocks<'a>(
    raw: &'a RawValue,
    path: Path<'_>,
) -> Result<Result<Items<'a, Block<'a>>, Cow<'a, str>>, TranslateError> {
    if is_string(raw) {
        Ok(Err(parse_request(raw, path)?))
    } else {
        Ok(Ok(Items::parse(raw, path)?))
    }
}

fn convert_user<'a>(
    raw: &'a RawValue,
    path: Path<'_>,
    out: &mut Vec<OutMessage<'a>>,
) -> Result<(), TranslateError> {
    let blocks = match blocks(raw, path)? {
        Ok(blocks) => blocks,
        Err(text) => {
            push_user(out, vec![Part::Text(text)]);
            return Ok(());
        }
    };
    let mut parts = Vec::new();
    let mut tool_images = Vec::new();
    let (mut blocks, mut j) = (blocks, 0);
    while let Some(block) = blocks.next(path.index(j)) {
        let block_path = path.index(j);
        j += 1;
        let block = block?;
        match block.kind.as_ref() {
            "tool_result" => {
                let Some(id) = block.tool_use_id else {
                    return Err(TranslateError::request(
                        block_path.key("tool_use_id"),
                        "field required",
                    ));
                };
                let mut content = String::new();
                if block.is_error == Some(true) {
                    content.push_str("Error: ");
                }
                if let Some(inner) = block.content {
                    tool_result_content(
                        inner,
                        block_path.key("content"),
                        &mut content,
                        &mut tool_images,
                        0,
                    )?;
                }
                let id = decode_id(id);
                out.push(OutMessage::Tool { id, content });
            }
            _ => content_part(block, block_path, &mut parts, 0)?,
        }
    }
    // Images returned by tools can only travel in a user message; it follows the tool messages and
    // merges with the rest of this user message.
    if !tool_images.is_empty() {
        push_user(out, tool_images);
    }
    if !parts.is_empty() {
        push_user(out, parts);
    }
    Ok(())
}

/// Deepest nesting of documents (a document whose `content` source holds another document) that
/// is translated. Each level is a sub-document parsed on its own, so serde_json's recursion limit
/// does not bound it, and without this limit a body of nested documents recursed until the
/// serving thread's stack overflowed, aborting relayd (found by the fuzz bench; 1,000 levels
/// were enough in a debug build). Anthropic's API takes only text and images in a document's
/// content, so real requests never come near it.
const MAX_DOCUMENT_NESTING: usize = 8;

/// A user-side block that becomes a content part (text, image, document); others are dropped.
/// `depth` is the number of documents around the block.
fn content_part<'a>(
    block: Block<'a>,
    path: Path<'_>,
    parts: &mut Vec<Part<'a>>,
    depth: usize,
) -> Result<(), TranslateError> {
    match block.kind.as_ref() {
        "text" => match block.text {
            Some(text) => parts.push(Part::Text(text)),
            None => {
                return Err(TranslateError::request(path.key("text"), "field required"));
            }
        },
        "image" => {
            let source = source(block.source, path)?;
            match source.kind.as_ref() {
                "base64" => {
                    let (Some(media), Some(data)) = (source.media_type, source.data) else {
                        return Err(TranslateError::request(
                            path.key("source"),
                            "base64 image needs media_type and data",
                        ));
                    };
                    parts.push(Part::Image([
                        Cow::Borrowed("data:"),
                        media,
                        Cow::Borrowed(";base64,"),
                        data,
                    ]));
                }
                "url" => match source.url {
                    Some(url) => parts.push(Part::Image([
                        url,
                        Cow::Borrowed(""),
                        Cow::Borrowed(""),
                        Cow::Borrowed(""),
                    ])),
                    None => {
                        return Err(TranslateError::request(
                            path.key("source").key("url"),
                            "field required",
                        ));
                    }
                },
                other => {
                    return Err(TranslateError::request(
                        path,
                        format!("unsupported image source {other:?}"),
                    ));
                }
            }
        }
        "document" => {
            let source = source(block.source, path)?;
            match (source.kind.as_ref(), source.data, source.content) {
                ("text", Some(data), _) => parts.push(Part::Text(data)),
                ("content", _, Some(content)) => {
                    let content_path = path.key("source");
                    let content_path = content_path.key("content");
                    if depth >= MAX_DOCUMENT_NESTING {
                        return Err(TranslateError::request(
                            content_path,
                            format!("documents nested more than {MAX_DOCUMENT_NESTING} deep"),
                        ));
                    }
                    let mut text = String::new();
                    let mut images = Vec::new();
                    tool_result_content(content, content_path, &mut text, &mut images, depth + 1)?;
                    parts.push(Part::Text(Cow::Owned(text)));
                    parts.extend(images);
                }
                (other, _, _) => {
                    return Err(TranslateError::request(
                        path,
                        format!(
                            "unsupported document source {other:?} (only text documents can be sent to this upstream)"
                        ),
                    ));
                }
            }
        }
        // Blocks that only mean something to Anthropic's own servers carry nothing an
        // OpenAI-compatible upstream could use.
        kind if SERVER_SIDE_BLOCKS.contains(&kind) => {
            tracing::debug!(kind = %block.kind, "dropping server-side content block");
        }
        // Anything else would be lost without a word: refuse it, as Anthropic refuses what it
        // does not know.
        other => {
            return Err(TranslateError::request(
                path.key("type"),
                format!(
                    "unsupported content block type {other:?} (text, image, document and tool_result can be sent to this upstream)"
                ),
            ));
        }
    }
    Ok(())
}

/// Content blocks of Anthropic's server tools: they belong to tools relayd never forwards, so
/// they are dropped (with a debug line) wherever they appear, rather than refused.
const SERVER_SIDE_BLOCKS: &[&str] = &[
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "mcp_tool_use",
    "mcp_tool_result",
    "container_upload",
];

fn source<'a>(raw: Option<&'a RawValue>, path: Path<'_>) -> Result<Source<'a>, TranslateError> {
    match raw {
        Some(raw) => parse_request(raw, path.key("source")),
        None => Err(TranslateError::request(
            path.key("source"),
            "field required",
        )),
    }
}

/// Text of a tool result or a document's content (string or blocks); images are collected for a
/// following user message. `depth` is the number of documents around the content.
fn tool_result_content<'a>(
    raw: &'a RawValue,
    path: Path<'_>,
    text: &mut String,
    images: &mut Vec<Part<'a>>,
    depth: usize,
) -> Result<(), TranslateError> {
    let blocks = match blocks(raw, path)? {
        Ok(blocks) => blocks,
        Err(s) => {
            text.push_str(&s);
            return Ok(());
        }
    };
    let mut first = true;
    let (mut blocks, mut k) = (blocks, 0);
    while let Some(block) = blocks.next(path.index(k)) {
        let block_path = path.index(k);
        k += 1;
        let block = block?;
        let mut parts = Vec::new();
        content_part(block, block_path, &mut parts, depth)?;
        for part in parts {
            match part {
                Part::Text(t) => {
                    if !first {
                        text.push_str(TEXT_JOINER);
                    }
                    first = false;
                    text.push_str(&t);
                }
                image @ Part::Image(_) => images.push(image),
            }
        }
    }
    Ok(())
}

fn convert_assistant<'a>(
    raw: &'a RawValue,
    path: Path<'_>,
    opts: &UpstreamOptions<'_>,
    names: &mut ToolNames,
    out: &mut Vec<OutMessage<'a>>,
) -> Result<(), TranslateError> {
    let mut message = Assistant::default();
    match blocks(raw, path)? {
        Err(text) => message.text.push(text),
        Ok(mut blocks) => {
            let mut j = 0;
            while let Some(block) = blocks.next(path.index(j)) {
                let block_path = path.index(j);
                j += 1;
                let block = block?;
                match block.kind.as_ref() {
                    "text" => match block.text {
                        Some(text) => message.text.push(text),
                        None => {
                            return Err(TranslateError::request(
                                block_path.key("text"),
                                "field required",
                            ));
                        }
                    },
                    "tool_use" => {
                        let (Some(id), Some(name)) = (block.id, block.name) else {
                            return Err(TranslateError::request(
                                block_path,
                                "tool_use needs id and name",
                            ));
                        };
                        if let Some(input) = block.input
                            && !is_object(input)
                        {
                            return Err(TranslateError::request(
                                block_path.key("input"),
                                "expected an object",
                            ));
                        }
                        let id = decode_id(id);
                        let name = shorten(names, name);
                        message.calls.push(Call {
                            id,
                            name,
                            arguments: block.input,
                        });
                    }
                    "thinking" if opts.send_reasoning_content => {
                        if let Some(thinking) = block.thinking {
                            message.reasoning.push(thinking);
                        }
                    }
                    // Thinking is dropped unless asked for; redacted thinking is opaque to any upstream
                    // but Anthropic's; server tool blocks belong to tools we never forwarded.
                    "thinking" | "redacted_thinking" => {
                        tracing::debug!(kind = %block.kind, "dropping assistant content block");
                    }
                    kind if SERVER_SIDE_BLOCKS.contains(&kind) => {
                        tracing::debug!(kind = %block.kind, "dropping assistant content block");
                    }
                    other => {
                        return Err(TranslateError::request(
                            block_path.key("type"),
                            format!(
                                "unsupported content block type {other:?} in an assistant message (text, tool_use and thinking are understood)"
                            ),
                        ));
                    }
                }
            }
        }
    }
    if let Some(OutMessage::Assistant(previous)) = out.last_mut() {
        previous.text.extend(message.text);
        previous.reasoning.extend(message.reasoning);
        previous.calls.extend(message.calls);
    } else {
        out.push(OutMessage::Assistant(message));
    }
    Ok(())
}

/// The upstream's name for a tool, borrowed from the request when it needs no shortening.
fn shorten<'a>(names: &mut ToolNames, name: Cow<'a, str>) -> Cow<'a, str> {
    match name {
        Cow::Borrowed(name) => names.shorten(name),
        Cow::Owned(name) => Cow::Owned(names.shorten(&name).into_owned()),
    }
}

/// The upstream's id for a tool-use id the client echoes back.
fn decode_id(id: Cow<'_, str>) -> Cow<'_, str> {
    let decoded = match upstream_tool_id(&id) {
        Cow::Owned(decoded) => Some(decoded),
        Cow::Borrowed(_) => None,
    };
    decoded.map_or(id, Cow::Owned)
}

fn push_user<'a>(out: &mut Vec<OutMessage<'a>>, parts: Vec<Part<'a>>) {
    if let Some(OutMessage::User(previous)) = out.last_mut() {
        previous.extend(parts);
    } else {
        out.push(OutMessage::User(parts));
    }
}

fn write_message(out: &mut Vec<u8>, message: &OutMessage<'_>) {
    match message {
        OutMessage::System(text) => {
            out.extend_from_slice(b"{\"role\":\"system\",\"content\":");
            push_str(out, text);
        }
        OutMessage::User(parts) => {
            out.extend_from_slice(b"{\"role\":\"user\",\"content\":");
            if parts.iter().all(|p| matches!(p, Part::Text(_))) {
                // Plain string content: many chat templates reject content-part arrays.
                let texts = parts.iter().filter_map(|p| match p {
                    Part::Text(t) => Some(t.as_ref()),
                    Part::Image(_) => None,
                });
                write_joined(out, texts);
            } else {
                out.push(b'[');
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    match part {
                        Part::Text(text) => {
                            out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
                            push_str(out, text);
                            out.push(b'}');
                        }
                        Part::Image(url) => {
                            out.extend_from_slice(
                                b"{\"type\":\"image_url\",\"image_url\":{\"url\":",
                            );
                            push_str_parts(out, &[&url[0], &url[1], &url[2], &url[3]]);
                            out.extend_from_slice(b"}}");
                        }
                    }
                }
                out.push(b']');
            }
        }
        OutMessage::Assistant(message) => {
            out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":");
            // Never null or missing: several OpenAI-compatible servers fail on that.
            write_joined(out, message.text.iter().map(AsRef::as_ref));
            if !message.reasoning.is_empty() {
                out.extend_from_slice(b",\"reasoning_content\":");
                write_joined(out, message.reasoning.iter().map(AsRef::as_ref));
            }
            if !message.calls.is_empty() {
                out.extend_from_slice(b",\"tool_calls\":[");
                for (i, call) in message.calls.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(b"{\"id\":");
                    push_str(out, &call.id);
                    out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
                    push_str(out, &call.name);
                    out.extend_from_slice(b",\"arguments\":");
                    push_str(out, call.arguments.map_or("{}", RawValue::get));
                    out.extend_from_slice(b"}}");
                }
                out.push(b']');
            }
        }
        OutMessage::Tool { id, content } => {
            out.extend_from_slice(b"{\"role\":\"tool\",\"tool_call_id\":");
            push_str(out, id);
            out.extend_from_slice(b",\"content\":");
            push_str(out, content);
        }
    }
    out.push(b'}');
}

/// Writes texts as one JSON string joined with [`TEXT_JOINER`].
fn write_joined<'t>(out: &mut Vec<u8>, texts: impl Iterator<Item = &'t str>) {
    out.push(b'"');
    for (i, text) in texts.enumerate() {
        if i > 0 {
            push_escaped(out, TEXT_JOINER);
        }
        push_escaped(out, text);
    }
    out.push(b'"');
}

/// `reasoning_effort` or `chat_template_kwargs`, depending on the account.
fn write_reasoning(
    out: &mut Vec<u8>,
    mode: ReasoningMode,
    thinking: Option<&Thinking<'_>>,
    output_config: Option<&OutputConfig<'_>>,
) -> Result<(), TranslateError> {
    let kind = thinking.map(|t| t.kind.as_ref());
    match kind {
        None | Some("enabled" | "adaptive" | "disabled") => {}
        Some(other) => {
            return Err(TranslateError::request(
                "thinking.type",
                format!("unknown thinking type {other:?}"),
            ));
        }
    }
    match mode {
        ReasoningMode::Drop => {}
        ReasoningMode::ReasoningEffort => {
            let effort = match (kind, thinking.and_then(|t| t.budget_tokens)) {
                (Some("enabled"), Some(budget)) if budget >= 16_000 => Some("high"),
                (Some("enabled"), Some(budget)) if budget >= 4_000 => Some("medium"),
                (Some("enabled"), _) => Some("low"),
                // Adaptive thinking follows `output_config.effort`, whose default is high.
                (Some("adaptive"), _) => match output_config.and_then(|c| c.effort.as_deref()) {
                    Some("low") => Some("low"),
                    Some("medium") => Some("medium"),
                    _ => Some("high"),
                },
                _ => None,
            };
            if let Some(effort) = effort {
                out.extend_from_slice(b",\"reasoning_effort\":");
                push_str(out, effort);
            }
        }
        ReasoningMode::QwenEnableThinking => {
            let enabled = matches!(kind, Some("enabled" | "adaptive"));
            out.extend_from_slice(b",\"chat_template_kwargs\":");
            out.extend_from_slice(if enabled {
                b"{\"enable_thinking\":true}"
            } else {
                b"{\"enable_thinking\":false}"
            });
        }
    }
    Ok(())
}
