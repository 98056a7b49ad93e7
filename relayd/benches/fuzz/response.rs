//! Fuzz target `response`: OpenAI chat completions (what an upstream answers) through
//! `openai_to_anthropic_with`, for requests with shortened tool names and stop sequences.
//!
//! Completions are built field by field (content as a string, null or parts; reasoning under both
//! keys; refusals; tool calls whose arguments are valid, truncated, double-encoded or garbage;
//! every `finish_reason`; usage with odd numbers), with odd types in every field, plus raw bytes.
//!
//! Properties: nothing panics; errors are `InvalidUpstream`; an accepted completion becomes an
//! Anthropic message with the requested model, blocks in order (thinking, text, tool uses), tool
//! ids Anthropic accepts, object inputs, a known stop reason, a stop sequence only when it is one
//! of the client's, and the usage it returns.

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;
use relayd::translate::{RequestContext, ToolNames, TranslateError, openai_to_anthropic_with};
use serde_json::Value;

use crate::inputs::{
    Shown, array, fixed, lit, member, number, object, odd, parse_output, raw_bytes, required,
    str_lit, str_lit_or, text, text_or,
};

/// Tool names of the generated requests: short ones and ones too long for an upstream.
pub(crate) const TOOL_POOL: &[&str] = &[
    "Bash",
    "Read",
    "mcp__a_very_long_server_name_for_testing__a_very_long_tool_name_that_exceeds",
    "mcp__a_very_long_server_name_for_testing__a_very_long_tool_name_that_exceeds_2",
    "ééééééééééééééééééééééééééééééééééééééééééééééééééé",
];

/// The client's stop sequences, and strings an upstream might report as matched.
pub(crate) const STOPS: &[&str] = &["\n\nHuman:", "END", "", "é"];

/// Tool-call ids upstreams send: plain, with characters Anthropic rejects, empty, or our prefix.
pub(crate) const UPSTREAM_IDS: &[&str] = &[
    "call_abc123",
    "call:0",
    "functions.Bash:1",
    "",
    "toolu_hex_41",
    "ü",
];

/// One generated case.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    ctx: RequestContext,
    /// The upstream's body.
    pub(crate) body: Shown,
}

/// The context of a request: model, stream, estimate, shortened tool names, stop sequences.
pub(crate) fn context() -> BoxedStrategy<RequestContext> {
    (
        text_or(&["claude-opus-4-8", "", "gpt-4o"]),
        any::<bool>(),
        prop_oneof![Just(0u64), 1..100_000u64, Just(u64::MAX)],
        prop::collection::vec(select(TOOL_POOL), 0..4),
        prop::collection::vec(select(STOPS), 0..3),
    )
        .prop_map(|(requested_model, stream, estimate, tools, stops)| {
            let mut names = ToolNames::default();
            for tool in tools {
                names.shorten(tool);
            }
            RequestContext {
                requested_model,
                stream,
                estimated_input_tokens: estimate,
                tools: names,
                stop_sequences: stops.into_iter().map(str::to_owned).collect(),
            }
        })
        .boxed()
}

/// A tool name as an upstream sends it back: the shortened form of a known name, a known name, or
/// anything.
pub(crate) fn upstream_tool_name() -> BoxedStrategy<String> {
    prop_oneof![
        2 => select(TOOL_POOL).prop_map(|n| ToolNames::default().shorten(n).into_owned()),
        1 => text_or(TOOL_POOL),
    ]
    .boxed()
}

/// Tool arguments as an upstream sends them (decoded text): valid, cut short, double-encoded,
/// not an object, or anything.
pub(crate) fn arguments() -> BoxedStrategy<String> {
    const SHAPES: &[&str] = &[
        "{}",
        "",
        "  ",
        "null",
        "{\"command\":\"ls -la\",\"timeout\":120}",
        "{\"a\":[1,{\"b\":\"c\\\"",
        "{\"a\":\"x\\",
        "{\"a\":\"\\u12",
        "\"{\\\"a\\\":1}\"",
        "\"x\"",
        "[1,2]",
        "5",
        "{\"a\":1}}",
        "{,",
        "{\"a\":",
        "{\"a\":\"\\ud800\"}",
    ];
    let full =
        "{\"file_path\":\"/src/é😀.rs\",\"edits\":[{\"old\":\"a\\\"b\",\"new\":null}],\"n\":1.5}";
    prop_oneof![
        4 => select(SHAPES).prop_map(str::to_owned),
        2 => (0..=full.len()).prop_map(move |cut| {
            let mut cut = cut;
            while !full.is_char_boundary(cut) {
                cut -= 1;
            }
            full[..cut].to_owned()
        }),
        1 => text(),
    ]
    .boxed()
}

fn tool_call() -> BoxedStrategy<String> {
    let function = object(vec![
        required("name", upstream_tool_name().prop_map(|n| lit(&n)).boxed()),
        member("arguments", arguments().prop_map(|a| lit(&a)).boxed()),
    ]);
    object(vec![
        member("id", str_lit_or(UPSTREAM_IDS)),
        fixed("type", "function"),
        required("function", function),
    ])
}

/// OpenAI `usage`.
pub(crate) fn usage() -> BoxedStrategy<String> {
    let details = object(vec![member("cached_tokens", number())]);
    object(vec![
        member("prompt_tokens", number()),
        member("completion_tokens", number()),
        member("total_tokens", number()),
        member(
            "prompt_tokens_details",
            prop_oneof![3 => details, 1 => Just("null".to_owned())].boxed(),
        ),
    ])
}

/// `finish_reason`: every known one, null, or anything.
pub(crate) fn finish_reason() -> BoxedStrategy<String> {
    prop_oneof![
        6 => str_lit_or(&["stop", "length", "tool_calls", "function_call", "content_filter"]),
        1 => Just("null".to_owned()),
    ]
    .boxed()
}

fn completion() -> BoxedStrategy<String> {
    let parts = array(
        object(vec![fixed("type", "text"), member("text", str_lit())]),
        3,
    );
    let content = prop_oneof![
        5 => str_lit(),
        2 => Just("null".to_owned()),
        1 => parts,
    ];
    let message = object(vec![
        fixed("role", "assistant"),
        member("content", content.boxed()),
        member("reasoning_content", str_lit()),
        member("reasoning", str_lit()),
        member(
            "refusal",
            prop_oneof![str_lit(), Just("null".to_owned())].boxed(),
        ),
        member("tool_calls", array(tool_call(), 4)),
    ]);
    let choice = object(vec![
        member("index", number()),
        required("message", message),
        member("finish_reason", finish_reason()),
        member(
            "stop_reason",
            prop_oneof![str_lit_or(STOPS), number(), Just("null".to_owned())].boxed(),
        ),
        fixed("logprobs", "null"),
    ]);
    object(vec![
        member("id", str_lit_or(&["chatcmpl-3f1c2a9b", "", "--", "é"])),
        fixed("object", "chat.completion"),
        member("created", number()),
        member("model", str_lit_or(&["qwen3-coder"])),
        required("choices", array(choice, 3)),
        member("usage", usage()),
        member("system_fingerprint", odd()),
    ])
}

/// The strategy for [`Case`].
pub(crate) fn cases() -> BoxedStrategy<Case> {
    let body = prop_oneof![
        12 => completion().prop_map(String::into_bytes),
        1 => raw_bytes(),
    ];
    (context(), body)
        .prop_map(|(ctx, body)| Case {
            ctx,
            body: Shown(body),
        })
        .boxed()
}

/// What the estimate closure answers, to recognise it in the output.
const ESTIMATE: u64 = 4_242;

/// Checks every property on one case.
pub(crate) fn check(case: &Case) -> Result<(), TestCaseError> {
    match openai_to_anthropic_with(&case.body.0, &case.ctx, || ESTIMATE) {
        Err(TranslateError::InvalidUpstream { path, message }) => {
            prop_assert!(!path.is_empty() && !message.is_empty());
            Ok(())
        }
        Err(other) => Err(TestCaseError::fail(format!(
            "a response error that is not InvalidUpstream: {other:?}"
        ))),
        Ok((out, usage)) => {
            let Some(value) = parse_output(&out).map_err(TestCaseError::fail)? else {
                return Ok(());
            };
            check_message(&value, &case.ctx).map_err(TestCaseError::fail)?;
            let u = &value["usage"];
            prop_assert_eq!(u["input_tokens"].as_u64(), Some(usage.tokens.input_tokens));
            prop_assert_eq!(
                u["output_tokens"].as_u64(),
                Some(usage.tokens.output_tokens)
            );
            prop_assert_eq!(
                u["cache_read_input_tokens"].as_u64(),
                Some(usage.tokens.cache_read_tokens)
            );
            if !usage.from_upstream {
                prop_assert_eq!(usage.tokens.input_tokens, ESTIMATE);
            }
            Ok(())
        }
    }
}

/// Whether `id` is a tool-use id Anthropic accepts (`^[a-zA-Z0-9_-]+$`).
pub(crate) fn is_anthropic_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The stop reasons Anthropic clients know.
pub(crate) const STOP_REASONS: &[&str] = &[
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "refusal",
];

fn check_message(value: &Value, ctx: &RequestContext) -> Result<(), String> {
    let id = value["id"].as_str().unwrap_or_default();
    if !id.starts_with("msg_") || !is_anthropic_id(id) {
        return Err(format!("message id {id:?}"));
    }
    if value["type"] != "message" || value["role"] != "assistant" {
        return Err("type or role".to_owned());
    }
    if value["model"].as_str() != Some(ctx.requested_model.as_str()) {
        return Err("model is not the requested one".to_owned());
    }
    let Some(content) = value["content"].as_array() else {
        return Err("content is not an array".to_owned());
    };
    // Order: at most one thinking block, then at most one text block, then tool uses.
    let mut stage = 0;
    for block in content {
        let kind = block["type"].as_str().unwrap_or_default();
        let next = match kind {
            "thinking" if block["signature"] == "" && block["thinking"].is_string() => 1,
            "text" if block["text"].is_string() => 2,
            "tool_use" => {
                let id = block["id"].as_str().unwrap_or_default();
                if !is_anthropic_id(id) || !block["name"].is_string() || !block["input"].is_object()
                {
                    return Err(format!("tool_use block {block}"));
                }
                3
            }
            _ => return Err(format!("block {block}")),
        };
        if next < stage || (next == stage && next != 3) {
            return Err(format!("blocks out of order: {content:?}"));
        }
        stage = next;
    }
    let stop_reason = value["stop_reason"].as_str().unwrap_or_default();
    if !STOP_REASONS.contains(&stop_reason) {
        return Err(format!("stop_reason {stop_reason:?}"));
    }
    check_stop_sequence(stop_reason, &value["stop_sequence"], ctx)
}

/// `stop_sequence` is set exactly when the stop reason says so, and is one of the client's.
pub(crate) fn check_stop_sequence(
    stop_reason: &str,
    stop_sequence: &Value,
    ctx: &RequestContext,
) -> Result<(), String> {
    match stop_sequence {
        Value::Null if stop_reason != "stop_sequence" => Ok(()),
        Value::String(s) if stop_reason == "stop_sequence" && ctx.stop_sequences.contains(s) => {
            Ok(())
        }
        other => Err(format!(
            "stop_sequence {other} with stop_reason {stop_reason}"
        )),
    }
}
