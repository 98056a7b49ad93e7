//! Writing the OpenAI request by hand, in a fixed key order and byte-stable: the converted
//! messages, the tools and tool choice, and the settings that follow them (see the module docs of
//! [`super::super`] for why the output must be append-only).

use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::super::TranslateError;
use super::super::json::{
    Items, Path, is_object, is_string, push_escaped, push_hex_str, push_str, push_str_parts,
    push_u64,
};
use super::super::tools::ToolNames;
use super::convert::{Call, OutMessage, Part};
use super::wire::{Metadata, OutputConfig, Thinking, Tool, ToolChoice};
use super::{ReasoningMode, TEXT_JOINER, UpstreamOptions};

/// OpenAI accepts at most this many stop sequences.
const MAX_STOP_SEQUENCES: usize = 4;

/// `,"messages":[…]`.
pub(super) fn write_messages(out: &mut Vec<u8>, converted: &[OutMessage<'_>]) {
    out.extend_from_slice(b",\"messages\":[");
    for (i, message) in converted.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_message(out, message);
    }
    out.push(b']');
}

/// `,"tools":[…]` with the client's custom tools as functions (server tools are dropped).
/// Returns whether any tool was written.
pub(super) fn write_tools<'a>(
    out: &mut Vec<u8>,
    mut tools: Items<'a, Tool<'a>>,
    names: &mut ToolNames,
) -> Result<bool, TranslateError> {
    let tools_path = Path::Root("tools");
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
        push_str(out, &names.shorten(&tool.name));
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
    }
    Ok(!first)
}

/// `,"tool_choice":…` (and `parallel_tool_calls`); only written when tools were.
pub(super) fn write_tool_choice(
    out: &mut Vec<u8>,
    choice: &ToolChoice<'_>,
    names: &mut ToolNames,
) -> Result<(), TranslateError> {
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
            push_str(out, &names.shorten(name));
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
    Ok(())
}

/// `max_tokens` (or `max_completion_tokens`), clamped to the account's output limit.
pub(super) fn write_max_tokens(
    out: &mut Vec<u8>,
    max_tokens: Option<u64>,
    opts: &UpstreamOptions<'_>,
) {
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
        push_u64(out, max_tokens);
    }
}

/// `,"stop":[…]`: the first [`MAX_STOP_SEQUENCES`] of the client's stop sequences.
pub(super) fn write_stop(out: &mut Vec<u8>, stop_sequences: &[String]) {
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
            push_str(out, stop);
        }
        out.push(b']');
    }
}

/// `temperature` and `top_p`, as the client wrote them.
pub(super) fn write_sampling(out: &mut Vec<u8>, temperature: Option<&str>, top_p: Option<&str>) {
    if let Some(t) = temperature {
        out.extend_from_slice(b",\"temperature\":");
        out.extend_from_slice(t.as_bytes());
    }
    if let Some(p) = top_p {
        out.extend_from_slice(b",\"top_p\":");
        out.extend_from_slice(p.as_bytes());
    }
}

/// `user`: a hash of `metadata.user_id`.
pub(super) fn write_user(out: &mut Vec<u8>, metadata: Option<&Metadata<'_>>) {
    if let Some(user_id) = metadata.and_then(|m| m.user_id.as_deref()) {
        // Hashed: the upstream only needs a stable per-user token, not Claude Code's device id.
        let digest = Sha256::digest(user_id.as_bytes());
        out.extend_from_slice(b",\"user\":");
        push_hex_str(out, &digest[..16]);
    }
}

/// `response_format` from `output_config.format`.
pub(super) fn write_output_format(
    out: &mut Vec<u8>,
    output_config: Option<&OutputConfig<'_>>,
) -> Result<(), TranslateError> {
    if let Some(format) = output_config.and_then(|c| c.format.as_ref()) {
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
    Ok(())
}

/// One OpenAI message as a JSON object.
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
                write_parts(out, parts);
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
            write_tool_calls(out, &message.calls);
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

/// User content as an array of content parts (text and `image_url`).
fn write_parts(out: &mut Vec<u8>, parts: &[Part<'_>]) {
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
                out.extend_from_slice(b"{\"type\":\"image_url\",\"image_url\":{\"url\":");
                push_str_parts(out, &[&url[0], &url[1], &url[2], &url[3]]);
                out.extend_from_slice(b"}}");
            }
        }
    }
    out.push(b']');
}

/// An assistant message's `tool_calls`, when it has any.
fn write_tool_calls(out: &mut Vec<u8>, calls: &[Call<'_>]) {
    if !calls.is_empty() {
        out.extend_from_slice(b",\"tool_calls\":[");
        for (i, call) in calls.iter().enumerate() {
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
pub(super) fn write_reasoning(
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
