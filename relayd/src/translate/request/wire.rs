//! The borrowed serde views of an Anthropic Messages request: the top level kept raw
//! ([`TopLevel`]), its values validated ([`Fields`]), and the messages, blocks, tools and settings
//! they hold. Strings are `Cow` and sub-documents `RawValue`, so nothing without escapes is copied.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::super::TranslateError;
use super::super::json::{Items, Path, parse_opt, parse_request};

/// Top-level keys we read. Everything else (`context_management`, `service_tier`, keys added by new
/// Claude Code releases) is ignored. Each is kept raw so a type error can name its key.
#[derive(Deserialize, Clone, Copy)]
pub(super) struct TopLevel<'a> {
    #[serde(borrow)]
    pub(super) model: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) messages: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) system: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) max_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) stop_sequences: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) stream: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) temperature: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) top_p: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) top_k: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) tools: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) tool_choice: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) thinking: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) output_config: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(super) struct Metadata<'a> {
    #[serde(borrow)]
    pub(super) user_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct Thinking<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Cow<'a, str>,
    pub(super) budget_tokens: Option<u64>,
}

#[derive(Deserialize)]
pub(super) struct OutputConfig<'a> {
    #[serde(borrow)]
    pub(super) effort: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) format: Option<OutputFormat<'a>>,
}

#[derive(Deserialize)]
pub(super) struct OutputFormat<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) schema: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(super) struct ToolChoice<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) name: Option<Cow<'a, str>>,
    pub(super) disable_parallel_tool_use: Option<bool>,
}

#[derive(Deserialize)]
pub(super) struct Tool<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) name: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) description: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) input_schema: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(super) struct Message<'a> {
    #[serde(borrow)]
    pub(super) role: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) content: &'a RawValue,
}

/// Every field any content block type uses; which ones matter depends on `type`. One flat struct is
/// cheaper than an enum with `#[serde(tag)]` (which buffers the whole block) and lets errors name
/// the block precisely.
#[derive(Deserialize)]
pub(super) struct Block<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) thinking: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) input: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) tool_use_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) content: Option<&'a RawValue>,
    pub(super) is_error: Option<bool>,
    #[serde(borrow)]
    pub(super) source: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(super) struct Source<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) media_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) data: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) url: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) content: Option<&'a RawValue>,
}

/// The top-level values the translation reads, validated in a fixed order so the first error
/// reported is always the same one.
pub(super) struct Fields<'a> {
    pub(super) requested_model: Cow<'a, str>,
    pub(super) messages: Items<'a, Message<'a>>,
    pub(super) max_tokens: Option<u64>,
    pub(super) stream: bool,
    pub(super) stop_sequences: Option<Vec<Cow<'a, str>>>,
    pub(super) metadata: Option<Metadata<'a>>,
    pub(super) thinking: Option<Thinking<'a>>,
    pub(super) output_config: Option<OutputConfig<'a>>,
    pub(super) tool_choice: Option<ToolChoice<'a>>,
    pub(super) tools: Option<Items<'a, Tool<'a>>>,
    /// Sampling numbers are validated, then copied as the client wrote them.
    pub(super) temperature: Option<&'a str>,
    pub(super) top_p: Option<&'a str>,
}

impl<'a> Fields<'a> {
    /// Validates the top level. Errors are [`TranslateError::InvalidRequest`].
    pub(super) fn parse(top: TopLevel<'a>) -> Result<Self, TranslateError> {
        let requested_model: Cow<'_, str> = match top.model {
            Some(raw) => parse_request(raw, Path::Root("model"))?,
            None => return Err(TranslateError::request("model", "field required")),
        };
        let Some(messages_raw) = top.messages else {
            return Err(TranslateError::request("messages", "field required"));
        };
        let messages: Items<'_, Message<'_>> = Items::parse(messages_raw, Path::Root("messages"))?;
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
        let tools: Option<Items<'_, Tool<'_>>> = top
            .tools
            .map(|raw| Items::parse(raw, Path::Root("tools")))
            .transpose()?;
        let temperature = number(top.temperature, Path::Root("temperature"))?;
        let top_p = number(top.top_p, Path::Root("top_p"))?;
        let _top_k: Option<u64> = parse_opt(top.top_k, Path::Root("top_k"))?;
        Ok(Self {
            requested_model,
            messages,
            max_tokens,
            stream,
            stop_sequences,
            metadata,
            thinking,
            output_config,
            tool_choice,
            tools,
            temperature,
            top_p,
        })
    }
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
