//! The official client SDKs against relayd: the `anthropic` and `openai` Python SDKs (installed
//! once into a venv under the target dir, see `relayd_tests::python`) run the scripts in
//! `tests/sdk/` against an in-process relayd whose account points at a mock upstream. The tests
//! assert both on what the SDK made of relayd's answers (the script's JSON summary) and on what
//! relayd sent upstream.

use std::path::PathBuf;

use relayd_tests::app::TestApp;
use relayd_tests::mock_upstream::{MockReply, MockUpstream, Recorded};
use relayd_tests::python::{Finished, run_script, sdk_python};
use serde_json::{Value, json};

/// The model clients ask for; the account serves it as [`DEPLOYMENT`].
const CLAUDE_MODEL: &str = "claude-sonnet-4-5-20250929";
const GPT_MODEL: &str = "gpt-4o";
const DEPLOYMENT: &str = "upstream-deploy";

struct Setup {
    python: PathBuf,
    app: TestApp,
    mock: MockUpstream,
    key: String,
}

async fn setup() -> Setup {
    // Blocking (pip on the first run): off the runtime that will serve relayd and the mock.
    let python = tokio::task::spawn_blocking(sdk_python)
        .await
        .expect("provision the SDK venv");
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    app.admin()
        .create_account(&json!({
            "name": "mock", "endpoint": mock.endpoint(), "deploymentName": DEPLOYMENT,
            "supportedModels": [CLAUDE_MODEL, GPT_MODEL]
        }))
        .await;
    let key = app.admin().create_key(&json!({"name": "sdk"})).await;
    Setup {
        python,
        app,
        mock,
        key,
    }
}

impl Setup {
    async fn anthropic(&self, scenario: &str, auth: &str) -> Value {
        self.anthropic_at("", scenario, auth).await
    }

    /// Runs an anthropic scenario with the base URL `http://ADDR{prefix}`.
    async fn anthropic_at(&self, prefix: &str, scenario: &str, auth: &str) -> Value {
        let base = self.app.url(prefix);
        let finished = run_script(
            &self.python,
            "anthropic_client.py",
            &[scenario],
            &[
                ("RELAY_BASE_URL", &base),
                ("RELAY_KEY", &self.key),
                ("RELAY_MODEL", CLAUDE_MODEL),
                ("RELAY_AUTH", auth),
            ],
        )
        .await;
        summary(&finished)
    }

    async fn openai(&self, scenario: &str) -> Value {
        self.openai_at("", scenario).await
    }

    /// Runs an openai scenario with the base URL `http://ADDR{prefix}/v1`.
    async fn openai_at(&self, prefix: &str, scenario: &str) -> Value {
        let base = self.app.url(&format!("{prefix}/v1"));
        let finished = run_script(
            &self.python,
            "openai_client.py",
            &[scenario],
            &[
                ("RELAY_BASE_URL", &base),
                ("RELAY_KEY", &self.key),
                ("RELAY_MODEL", GPT_MODEL),
            ],
        )
        .await;
        summary(&finished)
    }

    /// The chat requests the mock received (model listing excluded).
    fn chat_requests(&self) -> Vec<Recorded> {
        self.mock
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/chat/completions"))
            .collect()
    }
}

fn summary(finished: &Finished) -> Value {
    finished.assert_success();
    let summary = finished.json();
    println!("SDK {}: {summary}", summary["sdk"]);
    summary
}

/// A streamed chat chunk with one choice.
fn chunk(delta: &Value, finish_reason: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": DEPLOYMENT,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    })
}

/// The usage-only chunk an upstream sends last when asked for `include_usage`.
fn usage_chunk() -> Value {
    json!({
        "id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": DEPLOYMENT,
        "choices": [], "usage": {"prompt_tokens": 21, "completion_tokens": 5, "total_tokens": 26}
    })
}

fn counting_stream() -> MockReply {
    MockReply::sse(&[
        chunk(&json!({"role": "assistant", "content": ""}), None),
        chunk(&json!({"content": "One"}), None),
        chunk(&json!({"content": ", two"}), None),
        chunk(&json!({"content": ", three."}), None),
        chunk(&json!({}), Some("stop")),
        usage_chunk(),
    ])
}

#[tokio::test]
async fn sdk_anthropic_messages_create_with_both_auth_forms() {
    let s = setup().await;
    for auth in ["api_key", "auth_token"] {
        s.mock.push(MockReply::text("Hello from upstream."));
        let out = s.anthropic("create", auth).await;
        assert_eq!(out["text"], "Hello from upstream.", "{auth}: {out}");
        assert_eq!(out["type"], "message");
        assert_eq!(out["role"], "assistant");
        assert_eq!(
            out["model"], CLAUDE_MODEL,
            "the client sees the model it asked for"
        );
        assert_eq!(out["stop_reason"], "end_turn");
        assert_eq!(out["input_tokens"], 11);
        assert_eq!(out["output_tokens"], 7);
        assert!(out["id"].as_str().is_some_and(|id| id.starts_with("msg_")));
    }
    // The prefixes users of other relays already have in their base URLs.
    for prefix in ["/api", "/claude"] {
        s.mock.push(MockReply::text("Hello via a prefix."));
        let out = s.anthropic_at(prefix, "create", "api_key").await;
        assert_eq!(out["text"], "Hello via a prefix.", "{prefix}: {out}");
    }
    let requests = s.chat_requests();
    assert_eq!(requests.len(), 4);
    for request in &requests {
        let body = request.json();
        assert_eq!(body["model"], DEPLOYMENT);
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(body["messages"][1]["role"], "user");
        assert!(
            request.headers.get("anthropic-beta").is_none()
                && request.headers.get("x-api-key").is_none(),
            "client headers leak upstream: {:?}",
            request.headers
        );
    }
}

#[tokio::test]
async fn sdk_anthropic_messages_stream_collects_deltas_and_final_message() {
    let s = setup().await;
    s.mock.push(counting_stream());
    let out = s.anthropic("stream", "api_key").await;
    assert_eq!(out["deltas"], json!(["One", ", two", ", three."]), "{out}");
    assert_eq!(out["final_text"], "One, two, three.");
    assert_eq!(out["stop_reason"], "end_turn");
    assert_eq!(out["output_tokens"], 5);
    assert!(out["input_tokens"].as_u64().is_some_and(|n| n > 0), "{out}");
    let events: Vec<&str> = out["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(events.first(), Some(&"message_start"), "{events:?}");
    assert_eq!(events.last(), Some(&"message_stop"), "{events:?}");
    let body = s.chat_requests()[0].json();
    assert_eq!(body["model"], DEPLOYMENT);
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn sdk_anthropic_tool_round_trip() {
    let s = setup().await;
    s.mock.push(MockReply::Json {
        status: 200,
        body: json!({
            "id": "chatcmpl-t", "object": "chat.completion", "created": 1, "model": DEPLOYMENT,
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": "call_weather_1", "type": "function", "function": {
                    "name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"C\"}"}}]
            }}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}
        }),
        headers: Vec::new(),
    });
    s.mock
        .push(MockReply::text("It is 18 C and sunny in Paris."));
    let out = s.anthropic("tools", "api_key").await;
    assert_eq!(out["first_stop_reason"], "tool_use", "{out}");
    assert_eq!(out["tool_name"], "get_weather");
    assert_eq!(out["tool_input"], json!({"city": "Paris", "unit": "C"}));
    assert_eq!(out["second_stop_reason"], "end_turn");
    assert_eq!(out["second_text"], "It is 18 C and sunny in Paris.");

    let requests = s.chat_requests();
    assert_eq!(requests.len(), 2);
    let first = requests[0].json();
    assert_eq!(first["tools"][0]["type"], "function", "{first}");
    assert_eq!(first["tools"][0]["function"]["name"], "get_weather");
    let second = requests[1].json();
    let messages = second["messages"].as_array().expect("messages");
    let assistant = messages
        .iter()
        .find(|m| m["role"] == "assistant")
        .unwrap_or_else(|| panic!("no assistant message upstream: {second}"));
    let call = &assistant["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather", "{second}");
    let arguments: Value = serde_json::from_str(
        call["function"]["arguments"]
            .as_str()
            .expect("arguments string"),
    )
    .expect("arguments are JSON");
    assert_eq!(arguments, json!({"city": "Paris", "unit": "C"}));
    let tool = messages
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap_or_else(|| panic!("no role:tool message upstream: {second}"));
    assert_eq!(tool["tool_call_id"], call["id"], "{second}");
    assert_eq!(
        tool["tool_call_id"], out["tool_id"],
        "the id the SDK saw goes back upstream"
    );
    assert!(
        tool["content"].to_string().contains("18 C and sunny"),
        "{tool}"
    );
}

#[tokio::test]
async fn sdk_openai_chat_completion() {
    let s = setup().await;
    s.mock.push(MockReply::text("Hello from upstream."));
    let out = s.openai("create").await;
    assert_eq!(out["text"], "Hello from upstream.", "{out}");
    assert_eq!(
        out["model"], GPT_MODEL,
        "the client sees the model it asked for"
    );
    assert_eq!(out["finish_reason"], "stop");
    assert_eq!(out["prompt_tokens"], 11);
    for prefix in ["/openai", "/api"] {
        s.mock.push(MockReply::text("Hello via a prefix."));
        let out = s.openai_at(prefix, "create").await;
        assert_eq!(out["text"], "Hello via a prefix.", "{prefix}: {out}");
    }
    let requests = s.chat_requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        let body = request.json();
        assert_eq!(body["model"], DEPLOYMENT);
        assert!(body.get("stream_options").is_none(), "{body}");
    }
}

#[tokio::test]
async fn sdk_openai_stream_hides_the_usage_chunk_it_did_not_ask_for() {
    let s = setup().await;
    s.mock.push(counting_stream());
    let out = s.openai("stream").await;
    assert_eq!(out["text"], "One, two, three.", "{out}");
    assert_eq!(out["finish_reason"], "stop");
    assert_eq!(out["empty_choice_chunks"], 0, "{out}");
    assert_eq!(out["usage_chunks"], 0, "{out}");
    assert_eq!(out["models"], json!([GPT_MODEL]));
    let body = s.chat_requests()[0].json();
    assert_eq!(body["model"], DEPLOYMENT);
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn sdk_openai_models_list() {
    let s = setup().await;
    let out = s.openai("models").await;
    assert_eq!(out["ids"], json!([CLAUDE_MODEL, GPT_MODEL]), "{out}");
    assert!(s.chat_requests().is_empty());
}

#[tokio::test]
async fn sdk_anthropic_stream_with_text_then_tool_call() {
    let s = setup().await;
    s.mock.push(MockReply::sse(&[
        chunk(
            &json!({"role": "assistant", "content": "Let me check."}),
            None,
        ),
        chunk(
            &json!({"tool_calls": [{"index": 0, "id": "call_w", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}}]}),
            None,
        ),
        chunk(
            &json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            None,
        ),
        chunk(
            &json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
            None,
        ),
        chunk(&json!({}), Some("tool_calls")),
        usage_chunk(),
    ]));
    let out = s.anthropic("stream_tools", "api_key").await;
    assert_eq!(out["blocks"], json!(["text", "tool_use"]), "{out}");
    assert_eq!(out["text"], "Let me check.");
    assert_eq!(out["tool_names"], json!(["get_weather"]));
    assert_eq!(out["tool_inputs"], json!([{"city": "Paris"}]));
    assert_eq!(out["stop_reason"], "tool_use");
}

#[tokio::test]
async fn sdk_anthropic_stream_with_reasoning_gives_a_thinking_block() {
    let s = setup().await;
    s.mock.push(MockReply::sse(&[
        chunk(
            &json!({"role": "assistant", "reasoning_content": "First, "}),
            None,
        ),
        chunk(&json!({"reasoning_content": "consider."}), None),
        chunk(&json!({"content": "Answer."}), None),
        chunk(&json!({}), Some("stop")),
        usage_chunk(),
    ]));
    let out = s.anthropic("thinking", "api_key").await;
    assert_eq!(out["blocks"], json!(["thinking", "text"]), "{out}");
    assert_eq!(out["thinking"], "First, consider.");
    assert_eq!(out["text"], "Answer.");
    assert_eq!(out["stop_reason"], "end_turn");
}

#[tokio::test]
async fn sdk_anthropic_count_tokens_and_models_stay_local() {
    let s = setup().await;
    let counted = s.anthropic("count_tokens", "api_key").await;
    let tokens = counted["input_tokens"].as_u64().expect("input_tokens");
    assert!(tokens > 100, "system + tools + 20 questions: {counted}");
    let models = s.anthropic("models", "api_key").await;
    assert_eq!(models["ids"], json!([CLAUDE_MODEL, GPT_MODEL]), "{models}");
    assert_eq!(models["types"], json!(["model"]));
    assert!(s.mock.requests().is_empty(), "nothing goes upstream");
}

#[tokio::test]
async fn sdk_errors_arrive_as_the_sdks_typed_exceptions() {
    let s = setup().await;
    s.mock.push(MockReply::error(429, "slow down"));
    let out = s.anthropic("error", "api_key").await;
    assert_eq!(out["class"], "RateLimitError", "{out}");
    assert_eq!(out["status"], 429);
    assert_eq!(out["error_type"], "rate_limit_error");
    assert!(out["retry_after"].is_string(), "{out}");

    s.mock.push(MockReply::error(401, "bad upstream key"));
    let out = s.anthropic("error", "api_key").await;
    assert_eq!(
        out["status"], 502,
        "an upstream 401 is not the client's: {out}"
    );

    s.mock.push(MockReply::error(429, "slow down"));
    let out = s.openai("error").await;
    assert_eq!(out["class"], "RateLimitError", "{out}");
    assert_eq!(out["status"], 429);
    assert!(out["retry_after"].is_string(), "{out}");
}

#[tokio::test]
async fn sdk_openai_stream_keeps_the_usage_chunk_it_asked_for() {
    let s = setup().await;
    s.mock.push(counting_stream());
    let out = s.openai("stream_usage").await;
    assert_eq!(out["text"], "One, two, three.", "{out}");
    assert_eq!(out["empty_choice_chunks"], 1, "{out}");
    assert_eq!(out["usage_chunks"], 1, "{out}");
    assert_eq!(out["usage"]["completion_tokens"], 5, "{out}");
}
