//! The request's messages as a list of OpenAI messages ([`OutMessage`]): system text (without
//! Claude Code's billing line), assistant text, reasoning and tool calls, with same-role
//! neighbours merged. User content is converted in [`super::user`].

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::super::TranslateError;
use super::super::json::{Items, Path, is_object, is_string, parse_request};
use super::super::tools::{ToolNames, upstream_tool_id};
use super::user::convert_user;
use super::wire::{Block, Message};
use super::{TEXT_JOINER, UpstreamOptions};

/// Claude Code's first system block: changes on every request, so it would defeat prefix caching.
const BILLING_HEADER_PREFIX: &str = "x-anthropic-billing-header:";

/// Content blocks of Anthropic's server tools: they belong to tools relayd never forwards, so
/// they are dropped (with a debug line) wherever they appear, rather than refused.
pub(super) const SERVER_SIDE_BLOCKS: &[&str] = &[
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

/// One OpenAI message before serialization.
pub(super) enum OutMessage<'a> {
    System(Cow<'a, str>),
    User(Vec<Part<'a>>),
    Assistant(Assistant<'a>),
    Tool { id: Cow<'a, str>, content: String },
}

/// One part of a user message's content.
pub(super) enum Part<'a> {
    Text(Cow<'a, str>),
    /// `url` pieces, concatenated when written (saves copying base64 data into a `data:` URL).
    Image([Cow<'a, str>; 4]),
}

#[derive(Default)]
/// An assistant message: its texts, reasoning and tool calls, joined when written.
pub(super) struct Assistant<'a> {
    pub(super) text: Vec<Cow<'a, str>>,
    pub(super) reasoning: Vec<Cow<'a, str>>,
    pub(super) calls: Vec<Call<'a>>,
}

/// One tool call of an assistant message.
pub(super) struct Call<'a> {
    pub(super) id: Cow<'a, str>,
    pub(super) name: Cow<'a, str>,
    pub(super) arguments: Option<&'a RawValue>,
}

/// The system prompt and every message, in order, as OpenAI messages.
pub(super) fn convert_messages<'a>(
    system: Option<&'a RawValue>,
    mut messages: Items<'a, Message<'a>>,
    opts: &UpstreamOptions<'_>,
    names: &mut ToolNames,
) -> Result<Vec<OutMessage<'a>>, TranslateError> {
    let messages_path = Path::Root("messages");
    let mut converted = Vec::with_capacity(messages.len() + 1);
    let system = match system {
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
            names,
            &mut converted,
        )?;
        i += 1;
    }
    Ok(converted)
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
pub(crate) fn strip_billing_lines(text: Cow<'_, str>) -> Cow<'_, str> {
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
pub(super) fn blocks<'a>(
    raw: &'a RawValue,
    path: Path<'_>,
) -> Result<Result<Items<'a, Block<'a>>, Cow<'a, str>>, TranslateError> {
    if is_string(raw) {
        Ok(Err(parse_request(raw, path)?))
    } else {
        Ok(Ok(Items::parse(raw, path)?))
    }
}

/// An assistant message, merged into the previous one when that is an assistant message too.
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
                assistant_block(block, block_path, opts, names, &mut message)?;
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

/// One block of an assistant message, added to `message`.
fn assistant_block<'a>(
    block: Block<'a>,
    block_path: Path<'_>,
    opts: &UpstreamOptions<'_>,
    names: &mut ToolNames,
    message: &mut Assistant<'a>,
) -> Result<(), TranslateError> {
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
        "tool_use" => message.calls.push(tool_call(block, block_path, names)?),
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
    Ok(())
}

/// A `tool_use` block as a tool call, with the upstream's id and name for the tool.
fn tool_call<'a>(
    block: Block<'a>,
    block_path: Path<'_>,
    names: &mut ToolNames,
) -> Result<Call<'a>, TranslateError> {
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
    Ok(Call {
        id,
        name,
        arguments: block.input,
    })
}

/// The upstream's name for a tool, borrowed from the request when it needs no shortening.
fn shorten<'a>(names: &mut ToolNames, name: Cow<'a, str>) -> Cow<'a, str> {
    match name {
        Cow::Borrowed(name) => names.shorten(name),
        Cow::Owned(name) => Cow::Owned(names.shorten(&name).into_owned()),
    }
}

/// The upstream's id for a tool-use id the client echoes back.
pub(super) fn decode_id(id: Cow<'_, str>) -> Cow<'_, str> {
    let decoded = match upstream_tool_id(&id) {
        Cow::Owned(decoded) => Some(decoded),
        Cow::Borrowed(_) => None,
    };
    decoded.map_or(id, Cow::Owned)
}

/// Adds a user message, merged into the previous one when that is a user message too.
pub(super) fn push_user<'a>(out: &mut Vec<OutMessage<'a>>, parts: Vec<Part<'a>>) {
    if let Some(OutMessage::User(previous)) = out.last_mut() {
        previous.extend(parts);
    } else {
        out.push(OutMessage::User(parts));
    }
}
