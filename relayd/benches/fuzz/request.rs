//! Fuzz target `request`: Anthropic Messages request bodies through `AnthropicRequest` (model,
//! session, both translations, the token estimate) and `count_tokens`.
//!
//! Bodies are Claude-Code-shaped requests built field by field (every content block type, nested
//! tool results and documents, tools, `tool_choice`, thinking, output formats, with odd types in
//! every field), the recorded Claude Code requests with subtrees replaced, chains of nested
//! documents far deeper than any real request, and raw bytes.
//!
//! Properties: nothing panics; errors are `InvalidRequest`; the two translations agree; an
//! accepted body becomes a valid OpenAI request (model first, known roles, string contents, tool
//! names the upstream accepts and that map back, at most 4 stop sequences, `max_tokens` clamped,
//! `stream_options` with streams); the estimate is what `count_tokens` answers; and `count_tokens`
//! (a byte scan) equals its serde reference on every body.

use std::sync::LazyLock;

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;
use relayd::translate::tokens::count_tokens_reference;
use relayd::translate::tools::MAX_TOOL_NAME_LEN;
use relayd::translate::{
    AnthropicRequest, ReasoningMode, RequestContext, TranslateError, UpstreamOptions, count_tokens,
};
use serde_json::Value;

use crate::inputs::{
    Shown, Spliceable, array, boolean, fixed, lit, member, mutated, nested, number, object, odd,
    parse_output, raw_bytes, required, str_lit, str_lit_or, text, text_or,
};

/// One generated case: a body and the account it is translated for.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    body: Shown,
    deployment: &'static str,
    max_output_tokens: Option<u32>,
    use_max_completion_tokens: bool,
    reasoning: ReasoningMode,
    send_reasoning_content: bool,
}

/// The recorded requests (request file → body), weighted so the small ones come up more often.
static FIXTURES: LazyLock<Vec<(u32, Spliceable)>> = LazyLock::new(|| {
    let recorded = [
        (
            1,
            include_str!("../../testdata/claude-code/tool_turn1_request.json"),
        ),
        (
            1,
            include_str!("../../testdata/claude-code/tool_turn2_tool_result_request.json"),
        ),
        (
            1,
            include_str!("../../testdata/claude-code/sonnet45_request.json"),
        ),
        (
            1,
            include_str!("../../testdata/claude-code/text_request.json"),
        ),
        (
            1,
            include_str!("../../testdata/claude-code/nonstreaming_fallback_request.json"),
        ),
        (
            8,
            include_str!("../../testdata/claude-code/title_generation_request.json"),
        ),
    ];
    let mut out: Vec<(u32, Spliceable)> = recorded
        .iter()
        .map(|(weight, file)| {
            let file: Value = serde_json::from_str(file).expect("fixture is JSON");
            (*weight, Spliceable::new(&file["body"]))
        })
        .collect();
    out.push((
        8,
        Spliceable::parse(include_str!("../../testdata/bench/claude_code_1kb.json")),
    ));
    out
});

/// The strategy for [`Case`].
pub(crate) fn cases() -> BoxedStrategy<Case> {
    let body = prop_oneof![
        12 => request().prop_map(String::into_bytes),
        6 => mutated(&FIXTURES, prop_oneof![3 => odd(), 2 => block(), 1 => message()].boxed()),
        1 => nested_documents().prop_map(String::into_bytes),
        2 => raw_bytes(),
    ];
    let reasoning = select(
        &[
            ReasoningMode::Drop,
            ReasoningMode::ReasoningEffort,
            ReasoningMode::QwenEnableThinking,
        ][..],
    );
    (
        body,
        select(&["qwen3-coder", "", "dep\"loy\\ment\n日本"][..]),
        prop::option::of(select(&[1, 1_024, 32_000, u32::MAX][..])),
        any::<bool>(),
        reasoning,
        any::<bool>(),
    )
        .prop_map(
            |(body, deployment, max_output_tokens, use_max_completion_tokens, reasoning, send)| {
                Case {
                    body: Shown(body),
                    deployment,
                    max_output_tokens,
                    use_max_completion_tokens,
                    reasoning,
                    send_reasoning_content: send,
                }
            },
        )
        .boxed()
}

const MODELS: &[&str] = &[
    "claude-opus-4-8",
    "claude-sonnet-4-5-20250929",
    "",
    "gpt-4o",
];
const ROLES: &[&str] = &["user", "assistant", "system", "tool", "User"];
const IDS: &[&str] = &[
    "toolu_01A09q90qw90lq917835lq9",
    "call_0",
    "call:0",
    "functions.Bash:1",
    "toolu_hex_63616c6c3a30",
    "toolu_hex_zz",
    "toolu_hex_",
    "",
    "ü",
];
const TOOL_NAMES: &[&str] = &[
    "Bash",
    "Read",
    "mcp__github__create_pull_request",
    "",
    "é",
    "mcp__a_very_long_server_name_for_testing__a_very_long_tool_name_that_exceeds",
    "mcp__a_very_long_server_name_for_testing__a_very_long_tool_name_that_exceeds_2",
    "ééééééééééééééééééééééééééééééééééééééééééééééééééé",
];
const BLOCK_TYPES: &[&str] = &[
    "redacted_thinking",
    "server_tool_use",
    "web_search_tool_result",
    "image",
    "document",
    "search_result",
    "",
    "TEXT",
];

fn tool_name() -> BoxedStrategy<String> {
    prop_oneof![
        4 => text_or(TOOL_NAMES),
        1 => (select(&["mcp__x__", "é", "日", "a"][..]), 20..70usize).prop_map(|(p, n)| p.repeat(n)),
    ]
    .boxed()
}

/// An object value (a tool's `input`, say), or something else.
fn input() -> BoxedStrategy<String> {
    prop_oneof![
        3 => Just("{}".to_owned()),
        3 => Just("{\"command\":\"ls -la\",\"description\":\"List files\"}".to_owned()),
        1 => odd(),
    ]
    .boxed()
}

/// A JSON schema, or something that is not one.
fn schema() -> BoxedStrategy<String> {
    prop_oneof![
        4 => Just(
            "{\"type\":\"object\",\"properties\":{\"command\":{\"type\":\"string\"}},\"required\":[\"command\"]}"
                .to_owned()
        ),
        1 => Just("{}".to_owned()),
        1 => odd(),
    ]
    .boxed()
}

fn cache_control() -> BoxedStrategy<String> {
    Just("{\"type\":\"ephemeral\"}".to_owned()).boxed()
}

fn text_block() -> BoxedStrategy<String> {
    object(vec![
        fixed("type", "text"),
        required("text", str_lit()),
        member("cache_control", cache_control()),
    ])
}

fn image_source() -> BoxedStrategy<String> {
    let base64 = (
        select(&["QUJD", "iVBORw0KGgo", "AAAA", "a b "][..]),
        0..200usize,
    )
        .prop_map(|(p, n)| lit(&p.repeat(n)))
        .boxed();
    prop_oneof![
        3 => object(vec![
            fixed("type", "base64"),
            required("media_type", str_lit_or(&["image/png", "image/jpeg"])),
            required("data", base64),
        ]),
        1 => object(vec![fixed("type", "url"), required("url", str_lit())]),
        1 => object(vec![required("type", str_lit_or(&["file", "base64", "url"]))]),
    ]
    .boxed()
}

fn image_block() -> BoxedStrategy<String> {
    object(vec![
        fixed("type", "image"),
        required("source", image_source()),
    ])
}

fn tool_use_block() -> BoxedStrategy<String> {
    object(vec![
        fixed("type", "tool_use"),
        required("id", str_lit_or(IDS)),
        required("name", tool_name().prop_map(|n| lit(&n)).boxed()),
        member("input", input()),
    ])
}

fn thinking_block() -> BoxedStrategy<String> {
    object(vec![
        fixed("type", "thinking"),
        member("thinking", str_lit()),
        member("signature", str_lit()),
    ])
}

/// Blocks a translator drops or rejects: other types, a missing type.
fn other_block() -> BoxedStrategy<String> {
    prop_oneof![
        object(vec![
            required("type", str_lit_or(BLOCK_TYPES)),
            member("data", str_lit()),
            member("id", str_lit_or(IDS)),
            member("input", input()),
        ]),
        object(vec![member("text", str_lit())]),
    ]
    .boxed()
}

fn tool_result_block(inner: BoxedStrategy<String>) -> BoxedStrategy<String> {
    object(vec![
        fixed("type", "tool_result"),
        required("tool_use_id", str_lit_or(IDS)),
        member(
            "content",
            prop_oneof![2 => str_lit(), 3 => array(inner, 4)].boxed(),
        ),
        member("is_error", boolean()),
    ])
}

fn document_block(inner: BoxedStrategy<String>) -> BoxedStrategy<String> {
    let source = prop_oneof![
        2 => object(vec![
            fixed("type", "text"),
            member("media_type", str_lit_or(&["text/plain"])),
            required("data", str_lit()),
        ]),
        2 => object(vec![
            fixed("type", "content"),
            required("content", prop_oneof![str_lit(), array(inner, 4)].boxed()),
        ]),
        1 => object(vec![
            required("type", str_lit_or(&["base64", "url", "file"])),
            member("data", str_lit()),
        ]),
    ];
    object(vec![
        fixed("type", "document"),
        required("source", source.boxed()),
        member("title", str_lit()),
    ])
}

/// A content block of any type, with tool results and documents holding more blocks.
pub(crate) fn block() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        6 => text_block(),
        1 => image_block(),
        3 => tool_use_block(),
        1 => thinking_block(),
        1 => other_block(),
    ];
    nested(&leaf.boxed(), 3, 3, |inner| {
        prop_oneof![tool_result_block(inner.clone()), document_block(inner)].boxed()
    })
}

fn content() -> BoxedStrategy<String> {
    prop_oneof![
        2 => str_lit(),
        5 => array(block(), 5),
        1 => odd(),
    ]
    .boxed()
}

/// One message of any role (mid-conversation `system` messages included).
pub(crate) fn message() -> BoxedStrategy<String> {
    object(vec![
        required("role", str_lit_or(ROLES)),
        required("content", content()),
    ])
}

fn system() -> BoxedStrategy<String> {
    let billing = (text(), boolean()).prop_map(|(rest, _)| {
        lit(&format!(
            "x-anthropic-billing-header: cc_version=2.0.14; cc_entrypoint=cli;\n{rest}"
        ))
    });
    prop_oneof![
        3 => str_lit(),
        1 => billing,
        4 => array(
            prop_oneof![
                6 => text_block(),
                1 => other_block(),
            ]
            .boxed(),
            4,
        ),
    ]
    .boxed()
}

fn tool() -> BoxedStrategy<String> {
    object(vec![
        member(
            "type",
            str_lit_or(&["custom", "web_search_20250305", "bash_20250124"]),
        ),
        required("name", tool_name().prop_map(|n| lit(&n)).boxed()),
        member("description", str_lit()),
        member("input_schema", schema()),
        member("cache_control", cache_control()),
    ])
}

fn tool_choice() -> BoxedStrategy<String> {
    object(vec![
        required("type", str_lit_or(&["auto", "any", "none", "tool"])),
        member("name", tool_name().prop_map(|n| lit(&n)).boxed()),
        member("disable_parallel_tool_use", boolean()),
    ])
}

fn thinking() -> BoxedStrategy<String> {
    object(vec![
        required("type", str_lit_or(&["enabled", "adaptive", "disabled"])),
        member("budget_tokens", number()),
    ])
}

fn output_config() -> BoxedStrategy<String> {
    let format = object(vec![
        required("type", str_lit_or(&["json_schema", "text"])),
        member("schema", schema()),
    ]);
    object(vec![
        member("effort", str_lit_or(&["low", "medium", "high", "max"])),
        member("format", format),
    ])
}

/// A whole Claude-Code-shaped request.
pub(crate) fn request() -> BoxedStrategy<String> {
    object(vec![
        required("model", str_lit_or(MODELS)),
        required("messages", array(message(), 6)),
        member("system", system()),
        member("max_tokens", number()),
        member(
            "metadata",
            object(vec![member(
                "user_id",
                str_lit_or(&["user_abc_account_x_session_y"]),
            )]),
        ),
        member("stop_sequences", array(str_lit(), 6)),
        member("stream", boolean()),
        member("temperature", number()),
        member("top_p", number()),
        member("top_k", number()),
        member("tools", array(tool(), 5)),
        member("tool_choice", tool_choice()),
        member("thinking", thinking()),
        member("output_config", output_config()),
        member("context_management", odd()),
    ])
}

/// A user message whose content is documents nested in documents (`source.type: "content"`),
/// usually a few levels, rarely tens of thousands: nothing in the JSON limits that depth, because
/// each level is parsed on its own.
fn nested_documents() -> BoxedStrategy<String> {
    let depth = prop_oneof![
        40 => 1..40usize,
        1 => 1_000..60_000usize,
    ];
    (depth, any::<bool>())
        .prop_map(|(depth, in_tool_result)| {
            const OPEN: &str = "[{\"type\":\"document\",\"source\":{\"type\":\"content\",\"content\":";
            const CLOSE: &str = "}}]";
            let mut content = String::with_capacity(depth * (OPEN.len() + CLOSE.len()) + 64);
            for _ in 0..depth {
                content.push_str(OPEN);
            }
            content.push_str("\"innermost\"");
            for _ in 0..depth {
                content.push_str(CLOSE);
            }
            let content = if in_tool_result {
                format!("[{{\"type\":\"tool_result\",\"tool_use_id\":\"t\",\"content\":{content}}}]")
            } else {
                content
            };
            format!(
                "{{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{{\"role\":\"user\",\"content\":{content}}}]}}"
            )
        })
        .boxed()
}

/// Checks every property on one case.
pub(crate) fn check(case: &Case) -> Result<(), TestCaseError> {
    let body = &case.body.0;
    let opts = UpstreamOptions {
        deployment: case.deployment,
        max_output_tokens: case.max_output_tokens,
        use_max_completion_tokens: case.use_max_completion_tokens,
        reasoning: case.reasoning,
        send_reasoning_content: case.send_reasoning_content,
    };
    let counted = count_tokens(body);
    prop_assert_eq!(
        &counted,
        &count_tokens_reference(body),
        "count_tokens differs from its reference"
    );
    is_request_error(counted.as_ref().err())?;
    if let Ok(n) = counted {
        prop_assert!(n >= 1, "count_tokens gave 0");
    }

    let request = match AnthropicRequest::parse(body) {
        Ok(request) => request,
        Err(e) => return is_request_error(Some(&e)),
    };
    let model = request.model();
    is_request_error(model.as_ref().err())?;
    let _ = request.user_id();
    let estimate = request.estimate_input_tokens();
    is_request_error(estimate.as_ref().err())?;
    if let Ok(n) = estimate {
        prop_assert!(n >= 1, "estimate gave 0");
        prop_assert_eq!(
            Ok(n),
            counted,
            "estimate_input_tokens is not what count_tokens answers"
        );
    }

    let always = request.to_openai(&opts);
    let streams_only = request.to_openai_estimating_streams(&opts);
    match (always, streams_only) {
        (Err(a), Err(b)) => {
            prop_assert_eq!(&a, &b, "the two translations fail differently");
            is_request_error(Some(&a))
        }
        // A body only the estimate rejects (one serde judges more strictly than the translator,
        // e.g. a lone surrogate escape inside a tool's input): a non-streamed request needs no
        // estimate, so only its estimating translation fails.
        (Err(a), Ok((_, ctx))) if !ctx.stream && estimate.as_ref().err() == Some(&a) => Ok(()),
        (Ok((out, ctx)), Ok((out2, ctx2))) => {
            prop_assert!(out == out2, "the two translations differ");
            let expected2 = RequestContext {
                estimated_input_tokens: if ctx.stream {
                    ctx.estimated_input_tokens
                } else {
                    0
                },
                ..ctx.clone()
            };
            prop_assert_eq!(&ctx2, &expected2, "contexts differ beyond the estimate");
            prop_assert_eq!(Ok(ctx.estimated_input_tokens), estimate);
            prop_assert_eq!(
                model.as_deref().ok(),
                Some(ctx.requested_model.as_str()),
                "requested model"
            );
            check_openai(&out, &opts, &ctx).map_err(TestCaseError::fail)
        }
        (a, b) => Err(TestCaseError::fail(format!(
            "one translation failed: {:?} / {:?}",
            a.err(),
            b.err()
        ))),
    }
}

/// Request errors must be `InvalidRequest` with a path and a message.
fn is_request_error(e: Option<&TranslateError>) -> Result<(), TestCaseError> {
    match e {
        None => Ok(()),
        Some(TranslateError::InvalidRequest { path, message }) => {
            prop_assert!(
                !path.is_empty() && !message.is_empty(),
                "empty error: {e:?}"
            );
            Ok(())
        }
        Some(other) => Err(TestCaseError::fail(format!(
            "a request error that is not InvalidRequest: {other:?}"
        ))),
    }
}

/// The translated body is an OpenAI chat request an upstream accepts.
fn check_openai(
    out: &[u8],
    opts: &UpstreamOptions<'_>,
    ctx: &RequestContext,
) -> Result<(), String> {
    let Some(value) = parse_output(out)? else {
        return Ok(());
    };
    let Value::Object(top) = &value else {
        return Err("output is not an object".to_owned());
    };
    let keys: Vec<&str> = top.keys().map(String::as_str).collect();
    if keys.first() != Some(&"model") || keys.get(1) != Some(&"messages") {
        return Err(format!("model and messages must come first: {keys:?}"));
    }
    if top["model"] != Value::String(opts.deployment.to_owned()) {
        return Err("model is not the deployment".to_owned());
    }
    let Some(messages) = top["messages"].as_array() else {
        return Err("messages is not an array".to_owned());
    };
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or_default();
        let content = &message["content"];
        let ok = match role {
            "system" | "tool" => content.is_string(),
            "assistant" => content.is_string(),
            "user" => content.is_string() || content.is_array(),
            _ => false,
        };
        if !ok {
            return Err(format!("message {i}: role {role:?} with content {content}"));
        }
        if role == "tool" && !message["tool_call_id"].is_string() {
            return Err(format!("message {i}: tool message without tool_call_id"));
        }
        if let Some(calls) = message.get("tool_calls") {
            for call in calls.as_array().into_iter().flatten() {
                check_tool_name(&call["function"]["name"], ctx)?;
                let arguments = call["function"]["arguments"].as_str().unwrap_or("");
                let parsed: Result<Value, _> = serde_json::from_str(arguments);
                if !matches!(parsed, Ok(Value::Object(_))) {
                    return Err(format!("message {i}: arguments {arguments:?}"));
                }
            }
        }
    }
    if let Some(tools) = top.get("tools") {
        for tool in tools.as_array().into_iter().flatten() {
            check_tool_name(&tool["function"]["name"], ctx)?;
            if !tool["function"]["parameters"].is_object() {
                return Err("tool parameters are not an object".to_owned());
            }
        }
    } else if top.contains_key("tool_choice") {
        return Err("tool_choice without tools".to_owned());
    }
    if let Some(stop) = top.get("stop") {
        let n = stop.as_array().map_or(usize::MAX, Vec::len);
        if n == 0 || n > 4 {
            return Err(format!("stop has {n} entries"));
        }
    }
    let max = top
        .get("max_tokens")
        .or_else(|| top.get("max_completion_tokens"));
    if let (Some(max), Some(limit)) = (max, opts.max_output_tokens)
        && max.as_u64().is_none_or(|m| m > u64::from(limit))
    {
        return Err(format!("max tokens {max} above the limit {limit}"));
    }
    let include_usage = top
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool);
    if ctx.stream != (top.get("stream") == Some(&Value::Bool(true)))
        || ctx.stream != (include_usage == Some(true))
    {
        return Err("stream and stream_options disagree with the context".to_owned());
    }
    if ctx.estimated_input_tokens == 0 {
        return Err("estimate of 0".to_owned());
    }
    Ok(())
}

/// Upstream tool names fit the upstream's limit, and the context maps them back to a name that
/// shortens to them again.
fn check_tool_name(name: &Value, ctx: &RequestContext) -> Result<(), String> {
    let Some(name) = name.as_str() else {
        return Err(format!("tool name {name}"));
    };
    if name.len() > MAX_TOOL_NAME_LEN {
        return Err(format!(
            "tool name longer than {MAX_TOOL_NAME_LEN}: {name:?}"
        ));
    }
    let original = ctx.tools.original(name);
    let mut names = relayd::translate::ToolNames::default();
    if names.shorten(original) != name {
        return Err(format!("{name:?} does not map back: {original:?}"));
    }
    Ok(())
}
