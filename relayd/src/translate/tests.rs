//! Tests of the public translation API: golden files from real Claude Code requests, the
//! append-only property, request edge cases, non-streaming responses, streams and the passthrough.

use serde_json::{Value, json};

use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/claude-code");
const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/golden");

fn opts() -> UpstreamOptions<'static> {
    UpstreamOptions {
        deployment: "qwen3-coder",
        max_output_tokens: Some(32_768),
        use_max_completion_tokens: false,
        reasoning: ReasoningMode::Drop,
        send_reasoning_content: false,
    }
}

fn fixture_body(name: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{name}")).expect("fixture readable");
    let file: Value = serde_json::from_str(&text).expect("fixture is JSON");
    serde_json::to_vec(&file["body"]).expect("serializable")
}

fn translate(body: &Value) -> Result<(Value, RequestContext), TranslateError> {
    translate_with(body, &opts())
}

fn translate_with(
    body: &Value,
    opts: &UpstreamOptions<'_>,
) -> Result<(Value, RequestContext), TranslateError> {
    let bytes = serde_json::to_vec(body).expect("serializable");
    let (out, ctx) = anthropic_to_openai(&bytes, opts)?;
    // The estimate from the already-split values is the full count of the body.
    assert_eq!(
        Ok(ctx.estimated_input_tokens),
        tokens::count_with_serde(&bytes)
    );
    Ok((
        serde_json::from_slice(&out).expect("translator output is JSON"),
        ctx,
    ))
}

fn ok(body: &Value) -> Value {
    translate(body).expect("translates").0
}

fn err(body: &Value) -> String {
    match translate(body) {
        Ok(_) => panic!("expected an error"),
        Err(e) => {
            assert_eq!(e.status_code(), 400);
            e.to_string()
        }
    }
}

fn request(messages: Value) -> Value {
    let mut body = json!({"model": "claude-opus-4-8", "max_tokens": 1000});
    body["messages"] = messages;
    body
}

// ---------------------------------------------------------------------------------------------
// Golden files and the append-only property

#[test]
fn golden_files_match_fixtures() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut names: Vec<String> = std::fs::read_dir(FIXTURES)
        .expect("fixtures dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(names.len() >= 6, "fixtures missing: {names:?}");
    for name in names {
        let body = fixture_body(&name);
        let (out, ctx) =
            anthropic_to_openai(&body, &opts()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = String::from_utf8(out.clone()).expect("UTF-8");
        assert!(
            !text.contains("x-anthropic-billing-header"),
            "{name}: billing header leaked"
        );
        assert!(
            !text.contains("cache_control"),
            "{name}: cache_control leaked"
        );
        assert!(ctx.estimated_input_tokens > 0);
        assert_eq!(
            Ok(ctx.estimated_input_tokens),
            tokens::count_with_serde(&body)
        );
        // Deterministic: the same input gives the same bytes.
        assert_eq!(
            anthropic_to_openai(&body, &opts()).map(|r| r.0).ok(),
            Some(out.clone())
        );
        let value: Value = serde_json::from_slice(&out).expect("output is JSON");
        let pretty = serde_json::to_string_pretty(&value).expect("pretty") + "\n";
        let golden = format!("{GOLDEN}/{}.openai.json", name.trim_end_matches(".json"));
        if update {
            std::fs::create_dir_all(GOLDEN).expect("golden dir");
            std::fs::write(&golden, &pretty).expect("write golden");
        } else {
            let expected = std::fs::read_to_string(&golden)
                .unwrap_or_else(|_| panic!("{golden} missing: run with UPDATE_GOLDEN=1"));
            assert!(
                expected == pretty,
                "{name}: output differs from {golden} (UPDATE_GOLDEN=1 rewrites it)"
            );
        }
    }
}

#[test]
fn fixture_translation_shape() {
    let (out, ctx) =
        anthropic_to_openai(&fixture_body("tool_turn1_request.json"), &opts()).expect("ok");
    let value: Value = serde_json::from_slice(&out).expect("json");
    let keys: Vec<&String> = value.as_object().expect("object").keys().collect();
    assert_eq!(
        keys,
        [
            "model",
            "messages",
            "tools",
            "max_tokens",
            "user",
            "stream",
            "stream_options"
        ]
    );
    assert_eq!(value["model"], "qwen3-coder");
    assert_eq!(value["max_tokens"], 32_768);
    assert_eq!(value["stream_options"], json!({"include_usage": true}));
    assert_eq!(value["tools"].as_array().map(Vec::len), Some(24));
    let messages = value["messages"].as_array().expect("messages");
    assert_eq!(messages[0]["role"], "system");
    assert!(messages[0]["content"].is_string());
    assert_eq!(messages[1]["role"], "user");
    assert!(
        messages[1]["content"]
            .as_str()
            .is_some_and(|s| s.ends_with("Run a shell command that says hello"))
    );
    // The mid-conversation system message stays where it was.
    assert_eq!(messages[2]["role"], "system");
    assert_eq!(ctx.requested_model, "claude-opus-4-8");
    assert!(ctx.stream);
    // Schemas keep the client's key order.
    let schema = &value["tools"][0]["function"]["parameters"];
    assert_eq!(
        schema
            .as_object()
            .and_then(|o| o.keys().next())
            .map(String::as_str),
        Some("$schema")
    );

    let title =
        ok(&serde_json::from_slice(&fixture_body("title_generation_request.json")).expect("json"));
    assert_eq!(title["response_format"]["type"], "json_schema");
    assert_eq!(title["response_format"]["json_schema"]["name"], "output");
    assert_eq!(
        title["response_format"]["json_schema"]["schema"]["required"],
        json!(["title"])
    );
    assert!(title.get("tools").is_none());
}

#[test]
fn turn_two_starts_with_turn_one() {
    let (one, _) =
        anthropic_to_openai(&fixture_body("tool_turn1_request.json"), &opts()).expect("turn 1");
    let (two, _) = anthropic_to_openai(
        &fixture_body("tool_turn2_tool_result_request.json"),
        &opts(),
    )
    .expect("turn 2");
    // Byte-level: everything up to the end of turn 1's last message is a prefix of turn 2.
    let one_text = std::str::from_utf8(&one).expect("utf8");
    let two_text = std::str::from_utf8(&two).expect("utf8");
    let cut = one_text.find("],\"tools\":").expect("messages end");
    assert!(
        two_text.starts_with(&one_text[..cut]),
        "turn 2 does not extend turn 1's messages"
    );
    // Element by element, and the tools.
    let one: Value = serde_json::from_slice(&one).expect("json");
    let two: Value = serde_json::from_slice(&two).expect("json");
    let (m1, m2) = (
        one["messages"].as_array().expect("m1"),
        two["messages"].as_array().expect("m2"),
    );
    assert!(m2.len() > m1.len());
    for (a, b) in m1.iter().zip(m2) {
        assert_eq!(serde_json::to_string(a).ok(), serde_json::to_string(b).ok());
    }
    assert_eq!(
        serde_json::to_string(&one["tools"]).ok(),
        serde_json::to_string(&two["tools"]).ok()
    );
    let tail: Vec<&str> = m2[m1.len()..]
        .iter()
        .filter_map(|m| m["role"].as_str())
        .collect();
    assert_eq!(tail, ["assistant", "tool"]);
    assert_eq!(m2[m1.len()]["content"], "");
    assert_eq!(
        m2[m1.len()]["tool_calls"][0]["function"]["arguments"],
        r#"{"command":"echo hello-from-tool && pwd","description":"Print a greeting"}"#
    );
    assert_eq!(
        m2[m1.len() + 1]["tool_call_id"],
        "toolu_1ca12aeecd634bed9261d3bf"
    );
}

#[test]
fn fixture_translation_is_fast() {
    let body = fixture_body("tool_turn1_request.json");
    let runs = 50;
    let started = std::time::Instant::now();
    for _ in 0..runs {
        assert!(anthropic_to_openai(&body, &opts()).is_ok());
    }
    eprintln!("translate: {:?} per request", started.elapsed() / runs);
    let count_started = std::time::Instant::now();
    for _ in 0..runs {
        assert!(count_tokens(&body).is_ok());
    }
    eprintln!(
        "count_tokens: {:?} per request",
        count_started.elapsed() / runs
    );
    // Generous for debug builds on a loaded 2-core machine; release is far below 1 ms per request.
    assert!(
        started.elapsed() / runs < std::time::Duration::from_millis(50),
        "{:?}",
        started.elapsed() / runs
    );
}

// ---------------------------------------------------------------------------------------------
// Request edge cases

#[test]
fn system_string_billing_line_and_mid_conversation_system() {
    let mut body = request(json!([
        {"role": "user", "content": "a"},
        {"role": "system", "content": "note"},
        {"role": "user", "content": "b"}
    ]));
    body["system"] = json!("x-anthropic-billing-header: cc_version=1;\nYou are helpful.");
    let out = ok(&body);
    assert_eq!(
        out["messages"],
        json!([
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "a"},
            {"role": "system", "content": "note"},
            {"role": "user", "content": "b"}
        ])
    );
    body["system"] = json!([
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2;"},
        {"type": "text", "text": "one", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "two"}
    ]);
    assert_eq!(
        ok(&body)["messages"][0],
        json!({"role": "system", "content": "one\n\ntwo"})
    );
}

#[test]
fn images_and_documents() {
    let out = ok(&request(json!([{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.invalid/a.png"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc text"}}
    ]}])));
    assert_eq!(
        out["messages"][0]["content"],
        json!([
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "image_url", "image_url": {"url": "https://example.invalid/a.png"}},
            {"type": "text", "text": "doc text"}
        ])
    );
    let message = err(&request(json!([{"role": "user", "content": [
        {"type": "text", "text": "x"},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "AAAA"}}
    ]}])));
    assert!(
        message.starts_with("messages[0].content[1]: unsupported document source"),
        "{message}"
    );
}

/// A user message of `depth` documents, each the only block of the one around it.
fn nested_documents(depth: usize) -> Vec<u8> {
    const OPEN: &str = "[{\"type\":\"document\",\"source\":{\"type\":\"content\",\"content\":";
    let content = format!("{}\"innermost\"{}", OPEN.repeat(depth), "}}]".repeat(depth));
    format!(r#"{{"model":"m","max_tokens":1,"messages":[{{"role":"user","content":{content}}}]}}"#)
        .into_bytes()
}

/// Found by the fuzz bench: documents nested in documents recursed once per level with nothing
/// to bound the depth (each level is parsed on its own), so a large enough body overflowed the
/// serving thread's stack and aborted relayd. Now a few levels translate and more are a 400.
#[test]
fn nested_documents_are_bounded() {
    let out = anthropic_to_openai(&nested_documents(8), &opts());
    let (body, _) = out.expect("8 levels translate");
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(body["messages"][0]["content"], "innermost");

    // On a thread with the stack of relayd's serving threads, as in production.
    let deep = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let shallow = anthropic_to_openai(&nested_documents(9), &opts()).map(|_| ());
            let deep = anthropic_to_openai(&nested_documents(20_000), &opts()).map(|_| ());
            (shallow, deep)
        })
        .expect("thread starts")
        .join()
        .expect("no stack overflow");
    for result in [deep.0, deep.1] {
        match result {
            Err(TranslateError::InvalidRequest { path, message }) => {
                assert!(
                    path.starts_with("messages[0].content[0].source.content[0]"),
                    "{path}"
                );
                assert_eq!(message, "documents nested more than 8 deep");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn tool_results_come_first_with_errors_and_images() {
    let out = ok(&request(json!([
        {"role": "assistant", "content": [
            {"type": "text", "text": "running"},
            {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}},
            {"type": "tool_use", "id": "toolu_2", "name": "Read", "input": {}}
        ]},
        {"role": "user", "content": [
            {"type": "text", "text": "after"},
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "failed", "is_error": true},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": [
                {"type": "text", "text": "line 1"},
                {"type": "text", "text": "line 2"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "BBBB"}}
            ]}
        ]}
    ])));
    assert_eq!(
        out["messages"],
        json!([
            {"role": "assistant", "content": "running", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\":\"ls\"}"}},
                {"id": "toolu_2", "type": "function", "function": {"name": "Read", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: failed"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "line 1\n\nline 2"},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,BBBB"}},
                {"type": "text", "text": "after"}
            ]}
        ])
    );
}

#[test]
fn encoded_tool_ids_are_decoded_for_the_upstream() {
    let id = tools::client_tool_id("call:0").into_owned();
    let out = ok(&request(json!([
        {"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": "Bash", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "ok"}]}
    ])));
    assert_eq!(out["messages"][0]["tool_calls"][0]["id"], "call:0");
    assert_eq!(out["messages"][1]["tool_call_id"], "call:0");
}

#[test]
fn assistant_thinking_dropped_or_sent_as_reasoning_content() {
    let body = request(json!([
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "redacted_thinking", "data": "xx"},
            {"type": "text", "text": "answer"}
        ]}
    ]));
    assert_eq!(
        ok(&body)["messages"][1],
        json!({"role": "assistant", "content": "answer"})
    );
    let with = UpstreamOptions {
        send_reasoning_content: true,
        ..opts()
    };
    assert_eq!(
        translate_with(&body, &with).expect("ok").0["messages"][1],
        json!({"role": "assistant", "content": "answer", "reasoning_content": "hmm"})
    );
}

#[test]
fn consecutive_same_role_messages_merge_keeping_the_prefix() {
    let out = ok(&request(json!([
        {"role": "user", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "a"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}]}
    ])));
    assert_eq!(
        out["messages"][0],
        json!({"role": "user", "content": "one\n\ntwo"})
    );
    assert_eq!(out["messages"][1]["content"], "a");
    assert_eq!(out["messages"][1]["tool_calls"][0]["id"], "t1");
    assert_eq!(out["messages"].as_array().map(Vec::len), Some(2));
}

#[test]
fn errors_name_the_first_bad_element_in_order() {
    // A later element that does not even parse must not hide an earlier element's error.
    for (messages, expected) in [
        (
            json!([{"role": "bogus", "content": "x"}, {"role": "user"}]),
            r#"messages[0].role: expected "user", "assistant" or "system", not "bogus""#,
        ),
        (
            json!([{"role": "user", "content": "x"}, {"role": "user"}]),
            "messages[1]: missing field `content`",
        ),
        (
            json!([{"role": "user", "content": [{"type": "text"}, 5]}]),
            "messages[0].content[0].text: field required",
        ),
        (
            json!([{"role": "user", "content": [{"type": "text", "text": "a"}, 5]}]),
            "messages[0].content[1]: invalid type: integer `5`, expected struct Block",
        ),
        (
            json!([{"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "b", "input": 1}, {"type": 2}]}]),
            "messages[0].content[0].input: expected an object",
        ),
        (
            json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": [{"type": "image", "source": {"type": "file"}}, []]}]}]),
            r#"messages[0].content[0].content[0]: unsupported image source "file""#,
        ),
        (
            json!([{"role": "system", "content": [{"type": "text", "text": "a"}, {"text": 1}]}]),
            "messages[0].content[1]: invalid type: integer `1`, expected a string",
        ),
        (
            json!({}),
            "messages: invalid type: map, expected a sequence",
        ),
    ] {
        assert_eq!(err(&request(messages)), expected);
    }
    for (tools, expected) in [
        (
            json!([{"name": "a", "description": 5}, 7]),
            "tools[0].description: expected a string",
        ),
        (
            json!([{"name": "a"}, {"input_schema": {}}]),
            "tools[1]: missing field `name`",
        ),
        (json!({}), "tools: invalid type: map, expected a sequence"),
    ] {
        let mut body = request(json!([{"role": "user", "content": "hi"}]));
        body["tools"] = tools;
        assert_eq!(err(&body), expected);
    }
}

#[test]
fn tools_choice_and_server_tools() {
    let long = format!("mcp__some_server__{}", "very_long_tool_name_".repeat(4));
    let mut body = request(json!([{"role": "user", "content": "hi"}]));
    body["tools"] = json!([
        {"name": "Bash", "description": "Run", "input_schema": {"type": "object", "properties": {"b": {}, "a": {}}}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
        {"type": "bash_20250124", "name": "bash"},
        {"type": "custom", "name": long, "input_schema": {"type": "object"}}
    ]);
    let cases = [
        (json!({"type": "auto"}), json!("auto"), None),
        (json!({"type": "any"}), json!("required"), None),
        (json!({"type": "none"}), json!("none"), None),
        (
            json!({"type": "auto", "disable_parallel_tool_use": true}),
            json!("auto"),
            Some(false),
        ),
        (
            json!({"type": "tool", "name": "Bash"}),
            json!({"type": "function", "function": {"name": "Bash"}}),
            None,
        ),
    ];
    for (choice, expected, parallel) in cases {
        body["tool_choice"] = choice;
        let (out, ctx) = translate(&body).expect("ok");
        assert_eq!(out["tool_choice"], expected);
        assert_eq!(out["parallel_tool_calls"].as_bool(), parallel);
        let tools = out["tools"].as_array().expect("tools");
        assert_eq!(tools.len(), 2, "server tools dropped");
        assert_eq!(
            tools[0]["function"]["parameters"]["properties"]
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["b".to_owned(), "a".to_owned()])
        );
        let short = tools[1]["function"]["name"].as_str().expect("name");
        assert!(short.len() <= 64);
        assert_eq!(ctx.tools.original(short), long);
    }
    body["tool_choice"] = json!({"type": "bogus"});
    assert!(err(&body).starts_with("tool_choice.type"));
}

#[test]
fn parameters_map_and_clamp() {
    let mut body = request(json!([{"role": "user", "content": "hi"}]));
    body["max_tokens"] = json!(64_000);
    body["stop_sequences"] = json!(["a", "b", "c", "d", "e"]);
    body["temperature"] = json!(0.5);
    body["top_p"] = json!(0.9);
    body["top_k"] = json!(40);
    body["metadata"] = json!({"user_id": "someone"});
    body["context_management"] = json!({"edits": []});
    body["some_future_key"] = json!({"x": 1});
    let out = ok(&body);
    assert_eq!(out["max_tokens"], 32_768);
    assert_eq!(out["stop"], json!(["a", "b", "c", "d"]));
    assert_eq!(out["temperature"], 0.5);
    assert_eq!(out["top_p"], 0.9);
    assert!(out.get("top_k").is_none() && out.get("context_management").is_none());
    assert!(out.get("stream").is_none());
    let user = out["user"].as_str().expect("user");
    assert!(user.len() == 32 && user != "someone");
    let completion = UpstreamOptions {
        use_max_completion_tokens: true,
        max_output_tokens: None,
        ..opts()
    };
    let out = translate_with(&body, &completion).expect("ok").0;
    assert_eq!(out["max_completion_tokens"], 64_000);
    assert!(out.get("max_tokens").is_none());

    body["temperature"] = json!("hot");
    assert!(err(&body).starts_with("temperature: invalid type"));
    body["temperature"] = json!(null);
    body["messages"] = json!("nope");
    assert!(err(&body).starts_with("messages: "));
    body["messages"] = json!([{"role": "robot", "content": "x"}]);
    assert!(err(&body).starts_with("messages[0].role"));
    assert!(translate(&json!({"messages": []})).is_err());
}

#[test]
fn thinking_modes() {
    let mut body = request(json!([{"role": "user", "content": "hi"}]));
    let effort = UpstreamOptions {
        reasoning: ReasoningMode::ReasoningEffort,
        ..opts()
    };
    let qwen = UpstreamOptions {
        reasoning: ReasoningMode::QwenEnableThinking,
        ..opts()
    };
    let cases = [
        (
            json!({"type": "enabled", "budget_tokens": 31_999}),
            None,
            Some("high"),
            true,
        ),
        (
            json!({"type": "enabled", "budget_tokens": 8_000}),
            None,
            Some("medium"),
            true,
        ),
        (
            json!({"type": "enabled", "budget_tokens": 1_024}),
            None,
            Some("low"),
            true,
        ),
        (
            json!({"type": "adaptive"}),
            Some("high"),
            Some("high"),
            true,
        ),
        (json!({"type": "adaptive"}), Some("low"), Some("low"), true),
        (json!({"type": "disabled"}), None, None, false),
    ];
    for (thinking, effort_config, expected, enabled) in cases {
        body["thinking"] = thinking;
        body["output_config"] = effort_config.map_or(Value::Null, |e| json!({"effort": e}));
        assert!(
            ok(&body).get("reasoning_effort").is_none(),
            "dropped by default"
        );
        assert_eq!(
            translate_with(&body, &effort).expect("ok").0["reasoning_effort"].as_str(),
            expected
        );
        assert_eq!(
            translate_with(&body, &qwen).expect("ok").0["chat_template_kwargs"],
            json!({"enable_thinking": enabled})
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Non-streaming responses

fn ctx() -> RequestContext {
    RequestContext {
        requested_model: "claude-opus-4-8".to_owned(),
        stream: false,
        estimated_input_tokens: 1234,
        tools: ToolNames::default(),
        stop_sequences: vec!["STOP".to_owned()],
    }
}

fn respond(message: Value, finish_reason: &str, usage: Value, ctx: &RequestContext) -> Value {
    let mut body = json!({"id": "chatcmpl-123", "object": "chat.completion", "model": "qwen3-coder",
        "choices": [{"index": 0, "finish_reason": finish_reason}]});
    body["choices"][0]["message"] = message;
    body["usage"] = usage;
    let (out, _) =
        openai_to_anthropic(&serde_json::to_vec(&body).expect("json"), ctx).expect("translates");
    serde_json::from_slice(&out).expect("output is JSON")
}

#[test]
fn response_text_usage_and_finish_reasons() {
    let usage = json!({"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 60}});
    let out = respond(
        json!({"role": "assistant", "content": "Hello"}),
        "stop",
        usage.clone(),
        &ctx(),
    );
    assert_eq!(
        out,
        json!({"id": "msg_chatcmpl123", "type": "message", "role": "assistant", "model": "claude-opus-4-8",
            "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 40, "output_tokens": 7, "cache_read_input_tokens": 60, "cache_creation_input_tokens": 0}})
    );
    for (finish, expected) in [
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
    ] {
        let out = respond(json!({"content": "x"}), finish, usage.clone(), &ctx());
        assert_eq!(out["stop_reason"], expected, "{finish}");
    }
    // vLLM reports the matched stop string.
    let body = json!({"id": "x", "choices": [{"message": {"content": "x"}, "finish_reason": "stop", "stop_reason": "STOP"}]});
    let (out, usage) =
        openai_to_anthropic(&serde_json::to_vec(&body).expect("json"), &ctx()).expect("ok");
    let out: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(
        (out["stop_reason"].as_str(), out["stop_sequence"].as_str()),
        (Some("stop_sequence"), Some("STOP"))
    );
    assert!(!usage.from_upstream);
    assert_eq!(usage.tokens.input_tokens, 1234);
}

#[test]
fn response_refusal_and_escaped_text() {
    let usage = json!({"prompt_tokens": 1, "completion_tokens": 1});
    for (message, text) in [
        (
            json!({"content": null, "refusal": "I can't \"do\" that"}),
            "I can't \"do\" that",
        ),
        (json!({"content": "", "refusal": "no"}), "no"),
        (json!({"content": "a\n\"b\" é"}), "a\n\"b\" é"),
    ] {
        let out = respond(message, "stop", usage.clone(), &ctx());
        assert_eq!(out["content"], json!([{"type": "text", "text": text}]));
    }
    let out = respond(
        json!({"content": "x", "reasoning_content": "why\tnot"}),
        "stop",
        usage,
        &ctx(),
    );
    assert_eq!(out["content"][0]["thinking"], "why\tnot");
}

#[test]
fn response_thinking_tools_and_repairs() {
    let long = format!("mcp__server__{}", "x".repeat(80));
    let mut context = ctx();
    let short = context.tools.shorten(&long).into_owned();
    let out = respond(
        json!({"content": null, "reasoning_content": "think", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\": \"ls\"}"}},
            {"id": "call:2", "type": "function", "function": {"name": short, "arguments": ""}},
            {"id": "call_3", "type": "function", "function": {"name": "Read", "arguments": "{\"path\": \"/a"}}
        ]}),
        "stop",
        json!({"prompt_tokens": 10, "completion_tokens": 5}),
        &context,
    );
    assert_eq!(
        out["stop_reason"], "tool_use",
        "stop after tool calls is tool_use"
    );
    assert_eq!(
        out["content"][0],
        json!({"type": "thinking", "thinking": "think", "signature": ""})
    );
    assert_eq!(
        out["content"][1],
        json!({"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls"}})
    );
    assert_eq!(out["content"][2]["name"], long);
    assert_eq!(out["content"][2]["input"], json!({}));
    assert_eq!(
        out["content"][2]["id"],
        tools::client_tool_id("call:2").as_ref()
    );
    assert_eq!(out["content"][3]["input"], json!({"path": "/a"}));
    let reasoning = respond(
        json!({"content": "hi", "reasoning": "r"}),
        "stop",
        json!({}),
        &ctx(),
    );
    assert_eq!(reasoning["content"][0]["thinking"], "r");

    let bad = json!({"id": "x", "choices": [{"message": {"tool_calls": [
        {"id": "c", "function": {"name": "Bash", "arguments": "not json"}}]}, "finish_reason": "tool_calls"}]});
    let error = openai_to_anthropic(&serde_json::to_vec(&bad).expect("json"), &ctx())
        .expect_err("broken arguments");
    assert_eq!(error.status_code(), 502);
    assert!(
        error
            .to_string()
            .contains("choices[0].message.tool_calls[0].function.arguments"),
        "{error}"
    );
}

// ---------------------------------------------------------------------------------------------
// Streaming

/// Runs chunks through a translator; returns the events as compact strings, checking that each
/// `event:` line matches `data.type`.
fn run_stream(chunks: &[Value], done: bool) -> Vec<String> {
    let mut translator = StreamTranslator::new(&ctx(), "msg_1".to_owned());
    let mut out = Vec::new();
    for chunk in chunks {
        translator
            .on_data(&chunk.to_string(), &mut out)
            .expect("chunk accepted");
    }
    if done {
        translator.on_data("[DONE]", &mut out).expect("done");
    }
    translator.finish(&mut out);
    translator.finish(&mut out); // idempotent
    summarize(&out)
}

fn summarize(out: &[u8]) -> Vec<String> {
    let mut decoder = SseDecoder::new();
    decoder.push(out);
    let mut events = Vec::new();
    while let Some(event) = decoder.next_event() {
        let data: Value = serde_json::from_str(&event.data).expect("event data is JSON");
        assert_eq!(
            data["type"],
            event.event.as_str(),
            "event line matches data.type"
        );
        events.push(match event.event.as_str() {
            "message_start" => format!("start in={}", data["message"]["usage"]["input_tokens"]),
            "content_block_start" => {
                let block = &data["content_block"];
                match block["type"].as_str() {
                    Some("tool_use") => format!(
                        "open {} tool_use {} {}",
                        data["index"], block["id"], block["name"]
                    ),
                    other => format!("open {} {}", data["index"], other.unwrap_or_default()),
                }
            }
            "content_block_delta" => {
                let delta = &data["delta"];
                let text = ["text", "thinking", "partial_json", "signature"]
                    .iter()
                    .find_map(|k| delta[*k].as_str())
                    .unwrap_or_default();
                format!(
                    "delta {} {} {text}",
                    data["index"],
                    delta["type"].as_str().unwrap_or_default()
                )
            }
            "content_block_stop" => format!("close {}", data["index"]),
            "message_delta" => format!(
                "end {} {} in={} out={} cached={}",
                data["delta"]["stop_reason"].as_str().unwrap_or_default(),
                data["delta"]["stop_sequence"],
                data["usage"]["input_tokens"],
                data["usage"]["output_tokens"],
                data["usage"]["cache_read_input_tokens"]
            ),
            "error" => format!(
                "error {} {}",
                data["error"]["type"].as_str().unwrap_or_default(),
                data["error"]["message"].as_str().unwrap_or_default()
            ),
            other => other.to_owned(),
        });
    }
    events
}

fn content(text: &str) -> Value {
    json!({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
}

fn finish(reason: &str) -> Value {
    json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
}

fn usage_chunk(prompt: u64, completion: u64) -> Value {
    json!({"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "prompt_tokens_details": {"cached_tokens": 10}}})
}

fn tool_delta(calls: Value) -> Value {
    let mut chunk = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": null}]});
    chunk["choices"][0]["delta"]["tool_calls"] = calls;
    chunk
}

fn strings(events: &[&str]) -> Vec<String> {
    events.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn stream_text_only() {
    let events = run_stream(
        &[
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
            content("Hel"),
            content("lo"),
            finish("stop"),
            usage_chunk(100, 2),
        ],
        true,
    );
    assert_eq!(
        events,
        strings(&[
            "start in=1234",
            "open 0 text",
            "delta 0 text_delta Hel",
            "delta 0 text_delta lo",
            "close 0",
            "end end_turn null in=90 out=2 cached=10",
            "message_stop"
        ])
    );
}

#[test]
fn stream_thinking_then_text() {
    let events = run_stream(
        &[
            json!({"choices": [{"index": 0, "delta": {"reasoning_content": "let me"}}]}),
            json!({"choices": [{"index": 0, "delta": {"reasoning": " think"}}]}),
            content("Answer"),
            finish("stop"),
        ],
        true,
    );
    assert_eq!(
        events,
        strings(&[
            "start in=1234",
            "open 0 thinking",
            "delta 0 thinking_delta let me",
            "delta 0 thinking_delta  think",
            "delta 0 signature_delta ",
            "close 0",
            "open 1 text",
            "delta 1 text_delta Answer",
            "close 1",
            "end end_turn null in=1234 out=6 cached=0",
            "message_stop"
        ])
    );
}

#[test]
fn stream_one_tool() {
    let events = run_stream(
        &[
            content("Running"),
            tool_delta(
                json!([{"index": 0, "id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": ""}}]),
            ),
            tool_delta(json!([{"index": 0, "function": {"arguments": "{\"command\":"}}])),
            tool_delta(json!([{"index": 0, "function": {"arguments": "\"ls\"}"}}])),
            finish("tool_calls"),
            usage_chunk(50, 9),
        ],
        true,
    );
    assert_eq!(
        events,
        strings(&[
            "start in=1234",
            "open 0 text",
            "delta 0 text_delta Running",
            "close 0",
            "open 1 tool_use \"call_1\" \"Bash\"",
            "delta 1 input_json_delta {\"command\":",
            "delta 1 input_json_delta \"ls\"}",
            "close 1",
            "end tool_use null in=40 out=9 cached=10",
            "message_stop"
        ])
    );
}

#[test]
fn stream_two_tools_in_one_chunk_and_long_names_restored() {
    let long = format!("mcp__server__{}", "x".repeat(80));
    let mut context = ctx();
    let short = context.tools.shorten(&long).into_owned();
    let mut translator = StreamTranslator::new(&context, "msg_1".to_owned());
    let mut out = Vec::new();
    let chunk = tool_delta(json!([
        {"index": 0, "id": "call_a", "function": {"name": "Read", "arguments": "{\"p\":1}"}},
        {"index": 1, "id": "call:b", "function": {"name": short, "arguments": "{}"}}
    ]));
    translator
        .on_data(&chunk.to_string(), &mut out)
        .expect("ok");
    translator
        .on_data(&finish("tool_calls").to_string(), &mut out)
        .expect("ok");
    translator.finish(&mut out);
    let b_id = tools::client_tool_id("call:b");
    assert_eq!(
        summarize(&out),
        vec![
            "start in=1234".to_owned(),
            "open 0 tool_use \"call_a\" \"Read\"".to_owned(),
            "delta 0 input_json_delta {\"p\":1}".to_owned(),
            "close 0".to_owned(),
            format!("open 1 tool_use \"{b_id}\" \"{long}\""),
            "delta 1 input_json_delta {}".to_owned(),
            "close 1".to_owned(),
            "end tool_use null in=1234 out=3 cached=0".to_owned(),
            "message_stop".to_owned(),
        ]
    );
}

#[test]
fn stream_reused_index_with_new_id_is_a_new_call() {
    let events = run_stream(
        &[
            tool_delta(
                json!([{"index": 0, "id": "call_a", "function": {"name": "Read", "arguments": "{}"}}]),
            ),
            tool_delta(
                json!([{"index": 0, "id": "call_b", "function": {"name": "Bash", "arguments": "{\"c\":"}}]),
            ),
            tool_delta(json!([{"index": 0, "function": {"arguments": "1}"}}])),
            finish("tool_calls"),
        ],
        true,
    );
    assert_eq!(
        events,
        strings(&[
            "start in=1234",
            "open 0 tool_use \"call_a\" \"Read\"",
            "delta 0 input_json_delta {}",
            "close 0",
            "open 1 tool_use \"call_b\" \"Bash\"",
            "delta 1 input_json_delta {\"c\":",
            "delta 1 input_json_delta 1}",
            "close 1",
            "end tool_use null in=1234 out=4 cached=0",
            "message_stop"
        ])
    );
}

#[test]
fn stream_tool_without_argument_fragments() {
    let events = run_stream(
        &[
            tool_delta(json!([{"index": 0, "id": "call_1", "function": {"name": "TaskList"}}])),
            finish("tool_calls"),
        ],
        true,
    );
    assert_eq!(
        events,
        strings(&[
            "start in=1234",
            "open 0 tool_use \"call_1\" \"TaskList\"",
            "delta 0 input_json_delta {}",
            "close 0",
            "end tool_use null in=1234 out=0 cached=0",
            "message_stop"
        ])
    );
}

/// Found by the fuzz bench: an upstream index of `u32::MAX` followed by another call made the
/// index guess for a missing `index` overflow (a panic in debug builds), even when the next call
/// had an index of its own.
#[test]
fn stream_tool_index_at_u32_max_does_not_overflow() {
    let events = run_stream(
        &[
            tool_delta(json!([{"index": u32::MAX, "function": {"arguments": "{}"}}])),
            tool_delta(json!([{"index": 0, "id": "call_1", "function": {"arguments": "{}"}}])),
            content("x"),
            // No index after `u32::MAX`: the guess saturates instead of wrapping to 0.
            tool_delta(json!([{"id": "call_2", "function": {"name": "Bash"}}])),
            finish("tool_calls"),
        ],
        true,
    );
    assert_eq!(
        events,
        strings(&[
            "start in=1234",
            "open 0 tool_use \"toolu_1_0\" \"\"",
            "delta 0 input_json_delta {}",
            "close 0",
            "open 1 tool_use \"call_1\" \"\"",
            "delta 1 input_json_delta {}",
            "close 1",
            "open 2 text",
            "delta 2 text_delta x",
            "close 2",
            "open 3 tool_use \"call_2\" \"Bash\"",
            "delta 3 input_json_delta {}",
            "close 3",
            "end tool_use null in=1234 out=3 cached=0",
            "message_stop"
        ])
    );
}

#[test]
fn stream_cumulative_argument_snapshots() {
    let events = run_stream(
        &[
            tool_delta(
                json!([{"index": 0, "id": "call_1", "function": {"name": "Bash", "arguments": "{\"c\":"}}]),
            ),
            tool_delta(json!([{"index": 0, "function": {"arguments": "{\"c\":\"l"}}])),
            tool_delta(json!([{"index": 0, "function": {"arguments": "{\"c\":\"ls\"}"}}])),
            tool_delta(json!([{"index": 0, "function": {"arguments": "{\"c\":\"ls\"}"}}])),
            finish("tool_calls"),
        ],
        true,
    );
    assert_eq!(
        events,
        strings(&[
            "start in=1234",
            "open 0 tool_use \"call_1\" \"Bash\"",
            "delta 0 input_json_delta {\"c\":",
            "delta 0 input_json_delta \"l",
            "delta 0 input_json_delta s\"}",
            "close 0",
            "end tool_use null in=1234 out=4 cached=0",
            "message_stop"
        ])
    );
}

#[test]
fn stream_content_and_finish_in_one_chunk() {
    let events = run_stream(
        &[
            json!({"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "length"}], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}),
        ],
        false,
    );
    assert_eq!(
        events,
        strings(&[
            "start in=5",
            "open 0 text",
            "delta 0 text_delta Hi",
            "close 0",
            "end max_tokens null in=5 out=1 cached=0",
            "message_stop"
        ])
    );
}

#[test]
fn stream_stop_after_tool_calls_is_tool_use() {
    let events = run_stream(
        &[
            tool_delta(
                json!([{"index": 0, "id": "call_1", "function": {"name": "Bash", "arguments": "{}"}}]),
            ),
            finish("stop"),
        ],
        true,
    );
    assert_eq!(
        events.get(events.len() - 2).map(String::as_str),
        Some("end tool_use null in=1234 out=1 cached=0")
    );
}

#[test]
fn stream_azure_empty_choices_first_and_usage_only_final_chunk() {
    let events = run_stream(
        &[
            json!({"choices": [], "prompt_filter_results": [{"prompt_index": 0}]}),
            content("ok"),
            finish("stop"),
            json!({"choices": null, "usage": {"prompt_tokens": 70, "completion_tokens": 3}}),
        ],
        false, // the usage chunk alone ends the message; no [DONE] needed
    );
    assert_eq!(
        events,
        strings(&[
            "start in=1234",
            "open 0 text",
            "delta 0 text_delta ok",
            "close 0",
            "end end_turn null in=70 out=3 cached=0",
            "message_stop"
        ])
    );
}

#[test]
fn stream_holds_message_delta_until_usage() {
    let mut translator = StreamTranslator::new(&ctx(), "msg_1".to_owned());
    let mut out = Vec::new();
    for chunk in [content("a"), finish("stop")] {
        translator
            .on_data(&chunk.to_string(), &mut out)
            .expect("ok");
    }
    assert_eq!(summarize(&out).last().map(String::as_str), Some("close 0"));
    translator
        .on_data(&usage_chunk(20, 1).to_string(), &mut out)
        .expect("ok");
    assert_eq!(
        summarize(&out).last().map(String::as_str),
        Some("message_stop")
    );
    let usage = translator.usage();
    assert!(usage.from_upstream);
    assert_eq!(
        (usage.tokens.input_tokens, usage.tokens.cache_read_tokens),
        (10, 10)
    );
    let before = out.len();
    // A later cumulative usage report still updates what gets recorded, but writes nothing.
    translator
        .on_data(&usage_chunk(30, 2).to_string(), &mut out)
        .expect("ok");
    assert_eq!(translator.usage().tokens.input_tokens, 20);
    translator.on_data("[DONE]", &mut out).expect("ok");
    translator.finish(&mut out);
    assert_eq!(out.len(), before, "nothing after message_stop");
}

#[test]
fn stream_without_done_or_finish_reason_still_closes() {
    let events = run_stream(&[content("partial")], false);
    assert_eq!(
        events,
        strings(&[
            "start in=1234",
            "open 0 text",
            "delta 0 text_delta partial",
            "close 0",
            "end end_turn null in=1234 out=2 cached=0",
            "message_stop"
        ])
    );
}

#[test]
fn stream_utf8_split_across_reads_through_decoder() {
    let sse = format!(
        "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
        content("héllo 🦀"),
        finish("stop")
    );
    let bytes = sse.as_bytes();
    let crab = bytes.iter().position(|&b| b == 0xf0).expect("crab");
    let mut decoder = SseDecoder::new();
    let mut translator = StreamTranslator::new(&ctx(), "msg_1".to_owned());
    let mut out = Vec::new();
    for piece in [
        &bytes[..crab + 1],
        &bytes[crab + 1..crab + 3],
        &bytes[crab + 3..],
    ] {
        decoder.push(piece);
        while let Some(event) = decoder.next_event() {
            translator.on_data(&event.data, &mut out).expect("ok");
        }
    }
    translator.finish(&mut out);
    assert!(summarize(&out).contains(&"delta 0 text_delta héllo 🦀".to_owned()));
}

#[test]
fn stream_mid_stream_failure() {
    let mut translator = StreamTranslator::new(&ctx(), "msg_1".to_owned());
    let mut out = Vec::new();
    translator
        .on_data(&content("a").to_string(), &mut out)
        .expect("ok");
    assert!(translator.started());
    assert!(translator.on_data("{not json", &mut out).is_err());
    translator.fail("overloaded_error", "upstream went away", &mut out);
    translator.finish(&mut out);
    translator.fail("api_error", "again", &mut out);
    assert_eq!(
        summarize(&out),
        strings(&[
            "start in=1234",
            "open 0 text",
            "delta 0 text_delta a",
            "error overloaded_error upstream went away"
        ])
    );
    // An in-band error chunk becomes an error event too.
    let events = run_stream(
        &[
            content("a"),
            json!({"error": {"message": "boom", "type": "server_error"}}),
        ],
        false,
    );
    assert_eq!(
        events.last().map(String::as_str),
        Some("error api_error boom")
    );
}

#[test]
fn stream_ping_and_explicit_start() {
    let mut translator = StreamTranslator::new(&ctx(), "msg_1".to_owned());
    let mut out = Vec::new();
    translator.start(&mut out);
    StreamTranslator::ping(&mut out);
    translator
        .on_data(&content("x").to_string(), &mut out)
        .expect("ok");
    translator.finish(&mut out);
    let events = summarize(&out);
    assert_eq!(
        events[..3],
        strings(&["start in=1234", "ping", "open 0 text"])
    );
}

#[test]
fn stream_is_linear_in_chunks() {
    let mut translator = StreamTranslator::new(&ctx(), "msg_1".to_owned());
    let mut out = Vec::new();
    let started = std::time::Instant::now();
    translator
        .on_data(
            &tool_delta(json!([{"index": 0, "id": "c", "function": {"name": "Write"}}]))
                .to_string(),
            &mut out,
        )
        .expect("ok");
    let fragment =
        tool_delta(json!([{"index": 0, "function": {"arguments": "aaaaaaaaaa"}}])).to_string();
    for _ in 0..100_000 {
        translator.on_data(&fragment, &mut out).expect("ok");
        out.clear();
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// OpenAI passthrough

#[test]
fn openai_request_rewrites_model_and_adds_include_usage() {
    let body = br#"{"model":"gpt-4o", "messages":[{"role":"user","content":"hi"}],"stream":true,"x":{"y":1}}"#;
    let (out, info) = prepare_openai_request(body, "deploy-1", None).expect("ok");
    assert_eq!(
        std::str::from_utf8(&out).ok(),
        Some(
            r#"{"model":"deploy-1","messages":[{"role":"user","content":"hi"}],"stream":true,"x":{"y":1},"stream_options":{"include_usage":true}}"#
        )
    );
    assert_eq!(
        info,
        OpenAiRequestInfo {
            requested_model: "gpt-4o".to_owned(),
            stream: true,
            added_include_usage: true
        }
    );
    let asked = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
    let (out, info) = prepare_openai_request(asked, "d", None).expect("ok");
    assert!(!info.added_include_usage);
    assert_eq!(
        std::str::from_utf8(&out).ok(),
        Some(r#"{"model":"d","stream":true,"stream_options":{"include_usage":true}}"#)
    );
    let (_, info) =
        prepare_openai_request(br#"{"model":"m","messages":[]}"#, "d", None).expect("ok");
    assert!(!info.stream && !info.added_include_usage);
    assert!(prepare_openai_request(br#"{"messages":[]}"#, "d", None).is_err());
}

#[test]
fn openai_token_limits_above_the_window_cap_are_lowered() {
    let body = br#"{"model":"m","max_tokens":32000,"max_completion_tokens":100,"n":2}"#;
    let (out, _) = prepare_openai_request(body, "d", Some(4096)).expect("ok");
    assert_eq!(
        std::str::from_utf8(&out).ok(),
        Some(r#"{"model":"d","max_tokens":4096,"max_completion_tokens":100,"n":2}"#)
    );
    let (out, _) = prepare_openai_request(body, "d", None).expect("ok");
    assert_eq!(
        std::str::from_utf8(&out).ok(),
        Some(r#"{"model":"d","max_tokens":32000,"max_completion_tokens":100,"n":2}"#)
    );
}

fn tap_all(info: &OpenAiRequestInfo, input: &[u8], piece: usize) -> (String, Option<Usage>) {
    let mut tap = OpenAiStreamTap::new(info);
    let mut out = Vec::new();
    for chunk in input.chunks(piece) {
        tap.push(chunk, &mut out);
    }
    tap.finish(&mut out);
    (String::from_utf8(out).expect("utf8"), tap.usage())
}

#[test]
fn openai_tap_rewrites_model_and_handles_usage_chunk() {
    let input = concat!(
        "data: {\"id\":\"1\",\"model\":\"deploy-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hé\"}}]}\n\n",
        ": comment\n\n",
        "data: {\"id\":\"1\",\"model\":\"deploy-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n",
        "data: [DONE]\n\n"
    );
    let added = OpenAiRequestInfo {
        requested_model: "gpt-4o".to_owned(),
        stream: true,
        added_include_usage: true,
    };
    for piece in [1, 7, input.len()] {
        let (out, usage) = tap_all(&added, input.as_bytes(), piece);
        assert_eq!(
            out,
            concat!(
                "data: {\"id\":\"1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hé\"}}]}\n\n",
                ": comment\n\n",
                "data: [DONE]\n\n"
            ),
            "piece {piece}"
        );
        assert_eq!(
            usage.map(|u| (u.tokens.input_tokens, u.tokens.output_tokens)),
            Some((9, 2))
        );
    }
    let asked = OpenAiRequestInfo {
        added_include_usage: false,
        ..added
    };
    let (out, usage) = tap_all(&asked, input.as_bytes(), 5);
    assert!(
        out.contains("\"model\":\"gpt-4o\",\"choices\":[],\"usage\""),
        "{out}"
    );
    assert!(usage.is_some());
}

#[test]
fn openai_response_rewrites_model_and_reads_usage() {
    let body = br#"{"id":"c","model":"deploy-1","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":2}}}"#;
    let (out, usage) = rewrite_openai_response(body, "gpt-4o").expect("ok");
    assert_eq!(
        std::str::from_utf8(&out).ok(),
        Some(
            r#"{"id":"c","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":2}}}"#
        )
    );
    assert_eq!(
        usage.map(|u| (u.tokens.input_tokens, u.tokens.cache_read_tokens)),
        Some((3, 2))
    );
}

/// A non-streamed request is translated without the token estimate; its answer computes one
/// only when the upstream reports no usage, and then it is the full count.
#[test]
fn non_streamed_requests_estimate_tokens_only_for_answers_without_usage() {
    let body = serde_json::to_vec(&json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
        "system": "Be brief.", "messages": [{"role": "user", "content": "Hello there"}]}))
    .expect("json");
    let request = AnthropicRequest::parse(&body).expect("parses");
    let (_, ctx) = request
        .to_openai_estimating_streams(&opts())
        .expect("translates");
    assert_eq!(ctx.estimated_input_tokens, 0);
    let full = tokens::count_with_serde(&body).expect("counts");
    assert_eq!(request.estimate_input_tokens(), Ok(full));

    let answer = |usage: Option<Value>| {
        let mut upstream = json!({"id": "c1", "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Hi"}}]});
        if let Some(usage) = usage {
            upstream["usage"] = usage;
        }
        let mut calls = 0;
        let (out, usage) =
            openai_to_anthropic_with(&serde_json::to_vec(&upstream).expect("json"), &ctx, || {
                calls += 1;
                request.estimate_input_tokens().expect("estimates")
            })
            .expect("translates");
        let out: Value = serde_json::from_slice(&out).expect("json");
        (
            out["usage"]["input_tokens"].clone(),
            usage.from_upstream,
            calls,
        )
    };
    assert_eq!(
        answer(Some(json!({"prompt_tokens": 42, "completion_tokens": 1}))),
        (json!(42), true, 0)
    );
    assert_eq!(answer(None), (json!(full), false, 1));

    let mut streamed: Value = serde_json::from_slice(&body).expect("json");
    streamed["stream"] = json!(true);
    let streamed = serde_json::to_vec(&streamed).expect("json");
    let request = AnthropicRequest::parse(&streamed).expect("parses");
    let (_, ctx) = request
        .to_openai_estimating_streams(&opts())
        .expect("translates");
    assert_eq!(
        Ok(ctx.estimated_input_tokens),
        tokens::count_with_serde(&streamed)
    );
}

#[test]
fn nothing_is_dropped_silently_and_empty_asks_are_refused() {
    let base = |messages: Value| json!({"model": "m", "max_tokens": 5, "messages": messages});
    // An unknown user block would vanish on its way upstream: refused, naming where it is.
    let unknown_user = base(json!([{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "hologram", "data": "b"}]}]));
    let message = err(&unknown_user);
    assert!(message.contains("messages[0].content[1].type"), "{message}");
    assert!(message.contains("hologram"), "{message}");
    let unknown_assistant = base(json!([
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": [{"type": "hologram"}]},
        {"role": "user", "content": "b"}]));
    assert!(err(&unknown_assistant).contains("messages[1].content[0].type"));
    // Blocks that are known and mean nothing upstream are still dropped.
    let known = base(json!([
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": ""},
                                          {"type": "redacted_thinking", "data": "x"},
                                          {"type": "text", "text": "b"}]},
        {"role": "user", "content": "c"}]));
    assert_eq!(ok(&known)["messages"][1]["content"], "b");
    // Empty conversations and a zero budget are the client's mistake, as Anthropic says.
    assert!(err(&base(json!([]))).contains("messages"));
    let zero =
        json!({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "a"}]});
    assert!(err(&zero).contains("max_tokens"));
}

// ---------------------------------------------------------------------------------------------
// Cache reads: `prompt_tokens_details.cached_tokens`, else llama.cpp's `timings.cache_n`

/// A llama.cpp-shaped answer: `usage` plus `timings`, with `cached` in `usage` when given.
fn llama_answer(prompt: u64, cached: Option<u64>, cache_n: u64) -> Value {
    let mut usage =
        json!({"prompt_tokens": prompt, "completion_tokens": 3, "total_tokens": prompt + 3});
    if let Some(cached) = cached {
        usage["prompt_tokens_details"] = json!({"cached_tokens": cached});
    }
    json!({"id": "chatcmpl-1", "model": "gemma", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": usage,
        "timings": {"cache_n": cache_n, "prompt_n": prompt - cache_n, "prompt_ms": 1.5, "predicted_n": 3}})
}

fn cache_counts(usage: Option<Usage>) -> Option<(u64, u64, u64)> {
    usage.map(|u| {
        (
            u.tokens.input_tokens,
            u.tokens.cache_read_tokens,
            u.tokens.output_tokens,
        )
    })
}

#[test]
fn translated_answers_read_cache_n_when_usage_has_no_cached_tokens() {
    // Older llama.cpp builds: cache reuse only in `timings`.
    let body = serde_json::to_vec(&llama_answer(1713, None, 1712)).expect("json");
    let (out, usage) = openai_to_anthropic(&body, &ctx()).expect("translates");
    assert_eq!(cache_counts(Some(usage)), Some((1, 1712, 3)));
    let out: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(
        (
            &out["usage"]["input_tokens"],
            &out["usage"]["cache_read_input_tokens"]
        ),
        (&json!(1), &json!(1712)),
        "Anthropic's input_tokens excludes the cache reads"
    );
    // `cached_tokens`, when given, is the upstream's own figure and wins over `timings`.
    let body = serde_json::to_vec(&llama_answer(100, Some(40), 60)).expect("json");
    let (_, usage) = openai_to_anthropic(&body, &ctx()).expect("translates");
    assert_eq!(cache_counts(Some(usage)), Some((60, 40, 3)));
    // A cached count beyond the prompt is capped: input never goes below 0.
    let mut body = llama_answer(10, None, 0);
    body["timings"]["cache_n"] = json!(50);
    let (_, usage) =
        openai_to_anthropic(&serde_json::to_vec(&body).expect("json"), &ctx()).expect("ok");
    assert_eq!(cache_counts(Some(usage)), Some((0, 10, 3)));
}

#[test]
fn translated_streams_read_cache_reads_from_the_usage_chunk() {
    for (cached, cache_n, expected) in [(Some(1712), 1712, (1, 1712)), (None, 1700, (13, 1700))] {
        let mut translator = StreamTranslator::new(&ctx(), "msg_1".to_owned());
        let mut out = Vec::new();
        translator
            .on_data(&content("Hi").to_string(), &mut out)
            .expect("ok");
        translator
            .on_data(&finish("stop").to_string(), &mut out)
            .expect("ok");
        let answer = llama_answer(1713, cached, cache_n);
        let last = json!({"choices": [], "usage": answer["usage"], "timings": answer["timings"]});
        translator.on_data(&last.to_string(), &mut out).expect("ok");
        translator.on_data("[DONE]", &mut out).expect("ok");
        assert_eq!(
            cache_counts(Some(translator.usage())),
            Some((expected.0, expected.1, 3)),
            "{cached:?}"
        );
        let end = summarize(&out)
            .into_iter()
            .find(|e| e.starts_with("end "))
            .expect("message_delta");
        assert_eq!(
            end,
            format!(
                "end end_turn null in={} out=3 cached={}",
                expected.0, expected.1
            )
        );
    }
}

#[test]
fn openai_passthrough_reads_cache_reads_streamed_and_not() {
    // Not streamed: `timings.cache_n` when `usage` has no cached count; the body is untouched
    // but for the model.
    let body = serde_json::to_vec(&llama_answer(1713, None, 1712)).expect("json");
    let (out, usage) = rewrite_openai_response(&body, "gpt-4o").expect("ok");
    assert_eq!(cache_counts(usage), Some((1, 1712, 3)));
    let out: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(out["timings"]["cache_n"], 1712);
    assert_eq!(out["model"], "gpt-4o");

    // Streamed: the usage chunk's cached count, else its `timings`.
    let info = OpenAiRequestInfo {
        requested_model: "gpt-4o".to_owned(),
        stream: true,
        added_include_usage: false,
    };
    for (cached, cache_n, expected) in [(Some(1712), 1712, (1, 1712)), (None, 1600, (113, 1600))] {
        let answer = llama_answer(1713, cached, cache_n);
        let last = json!({"choices": [], "model": "gemma", "usage": answer["usage"], "timings": answer["timings"]});
        let input = format!(
            "data: {}\n\ndata: {last}\n\ndata: [DONE]\n\n",
            json!({"choices": [{"index": 0, "delta": {"content": "Hi"}}], "model": "gemma"})
        );
        for piece in [1, 9, input.len()] {
            let (out, usage) = tap_all(&info, input.as_bytes(), piece);
            assert_eq!(
                cache_counts(usage),
                Some((expected.0, expected.1, 3)),
                "{cached:?} piece {piece}"
            );
            assert!(out.contains("\"cache_n\":"), "{out}");
        }
    }
}
