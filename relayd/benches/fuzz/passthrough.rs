//! Fuzz target `openai`: the same-format passthrough for OpenAI clients, both ways:
//! `prepare_openai_request` on chat requests and `rewrite_openai_response` on completions.
//!
//! Requests are built field by field (`model`, `messages`, `stream`, `stream_options` of every
//! type, unknown keys, duplicates) or are relayd's own recorded translations with subtrees
//! replaced, plus raw bytes; responses are the completions of the `response` target.
//!
//! Properties: nothing panics; request errors are `InvalidRequest`, response errors
//! `InvalidUpstream`; the request that goes upstream is the client's with `model` set to the
//! deployment and, for streams, `stream_options.include_usage` on (and the info says whether we
//! added it); the response the client gets is the upstream's with `model` set back.

use std::sync::LazyLock;

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;
use relayd::translate::{TranslateError, prepare_openai_request, rewrite_openai_response};
use serde_json::Value;

use crate::inputs::{
    Shown, Spliceable, array, boolean, member, mutated, number, object, odd, parse_output,
    raw_bytes, required, str_lit, str_lit_or, text_or,
};
use crate::response;

/// One generated case: a request for `deployment` and a response for `requested_model`.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    request: Shown,
    deployment: &'static str,
    response: Shown,
    requested_model: String,
}

/// relayd's recorded OpenAI translations of Claude Code requests: real OpenAI chat requests.
static GOLDEN: LazyLock<Vec<(u32, Spliceable)>> = LazyLock::new(|| {
    vec![
        (
            6,
            Spliceable::parse(include_str!(
                "../../testdata/golden/title_generation_request.openai.json"
            )),
        ),
        (
            1,
            Spliceable::parse(include_str!(
                "../../testdata/golden/tool_turn1_request.openai.json"
            )),
        ),
    ]
});

fn openai_request() -> BoxedStrategy<String> {
    let message = object(vec![
        required("role", str_lit_or(&["system", "user", "assistant", "tool"])),
        member("content", str_lit()),
    ]);
    let stream_options = prop_oneof![
        4 => object(vec![member("include_usage", boolean())]),
        1 => Just("null".to_owned()),
    ];
    object(vec![
        required("model", str_lit_or(&["gpt-4o", "claude-opus-4-8"])),
        required("messages", array(message, 4)),
        member(
            "stream",
            prop_oneof![4 => boolean(), 1 => Just("null".to_owned())].boxed(),
        ),
        member("stream_options", stream_options.boxed()),
        member("temperature", number()),
        member("tools", odd()),
        member("user", str_lit()),
    ])
}

/// The strategy for [`Case`].
pub(crate) fn cases() -> BoxedStrategy<Case> {
    let request = prop_oneof![
        8 => openai_request().prop_map(String::into_bytes),
        4 => mutated(&GOLDEN, odd()),
        1 => raw_bytes(),
    ];
    (
        request,
        select(&["qwen3-coder", "", "dep\"loy\\ment\n日本"][..]),
        response::cases(),
        text_or(&["gpt-4o", "qwen3-coder"]),
    )
        .prop_map(|(request, deployment, response, requested_model)| Case {
            request: Shown(request),
            deployment,
            response: response.body,
            requested_model,
        })
        .boxed()
}

/// Checks every property on one case.
pub(crate) fn check(case: &Case) -> Result<(), TestCaseError> {
    check_request(case)?;
    check_response(case)
}

fn check_request(case: &Case) -> Result<(), TestCaseError> {
    let body = &case.request.0;
    let (out, info) = match prepare_openai_request(body, case.deployment, None) {
        Err(TranslateError::InvalidRequest { path, message }) => {
            prop_assert!(!path.is_empty() && !message.is_empty());
            return Ok(());
        }
        Err(other) => {
            return Err(TestCaseError::fail(format!(
                "a request error that is not InvalidRequest: {other:?}"
            )));
        }
        Ok(answer) => answer,
    };
    let output = parse_output(&out).map_err(TestCaseError::fail)?;
    // Values other than the model are copied as written, lone surrogate escapes included.
    let (Ok(Value::Object(input)), Some(Value::Object(output))) =
        (serde_json::from_slice::<Value>(body), output)
    else {
        prop_assert!(serde_json::from_slice::<Value>(body).is_err());
        return Ok(());
    };
    prop_assert_eq!(
        output.get("model"),
        Some(&Value::String(case.deployment.to_owned()))
    );
    prop_assert_eq!(
        input.get("model").and_then(Value::as_str),
        Some(info.requested_model.as_str())
    );
    let stream = input.get("stream") == Some(&Value::Bool(true));
    prop_assert_eq!(info.stream, stream);
    for (key, value) in &input {
        if key != "model" && !(stream && key == "stream_options") {
            prop_assert_eq!(output.get(key), Some(value), "{} changed", key);
        }
    }
    let asked = input
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        == Some(&Value::Bool(true));
    if stream {
        let include_usage = output
            .get("stream_options")
            .and_then(|o| o.get("include_usage"));
        prop_assert_eq!(include_usage, Some(&Value::Bool(true)));
        prop_assert_eq!(info.added_include_usage, !asked);
    } else {
        prop_assert!(!info.added_include_usage);
        prop_assert_eq!(input.len(), output.len());
    }
    Ok(())
}

fn check_response(case: &Case) -> Result<(), TestCaseError> {
    let body = &case.response.0;
    let (out, usage) = match rewrite_openai_response(body, &case.requested_model) {
        Err(TranslateError::InvalidUpstream { path, message }) => {
            prop_assert!(!path.is_empty() && !message.is_empty());
            return Ok(());
        }
        Err(other) => {
            return Err(TestCaseError::fail(format!(
                "a response error that is not InvalidUpstream: {other:?}"
            )));
        }
        Ok(answer) => answer,
    };
    let output = parse_output(&out).map_err(TestCaseError::fail)?;
    let (Ok(Value::Object(mut input)), Some(Value::Object(output))) =
        (serde_json::from_slice::<Value>(body), output)
    else {
        return Ok(());
    };
    if input.get("model").is_some_and(Value::is_string) {
        input.insert(
            "model".to_owned(),
            Value::String(case.requested_model.clone()),
        );
    }
    prop_assert_eq!(&input, &output, "only the model may change");
    // A usage object is read; no usage is none. (serde also reads a struct from an array, so
    // `[1, 2]` is usage too: lenient, and harmless.)
    match input.get("usage") {
        Some(Value::Object(_)) => prop_assert!(usage.is_some()),
        None | Some(Value::Null) => prop_assert!(usage.is_none()),
        Some(_) => {}
    }
    Ok(())
}
