//! `POST /admin/v1/test-endpoint` and `relayctl test-endpoint`: every check passes against a
//! healthy mock upstream (saved account and unsaved settings); each failure mode — closed port,
//! wrong key, model not served, no tool calls, a 404 on chat — fails the right check with the
//! right hint; bad requests get admin errors; the API key never shows up in an answer. The
//! relayctl tests drive the real binary (text, `--output json`, exit codes).
//!
//! Multi-threaded runtime: relayctl runs as a blocking child while relayd and the mock serve it.

use std::process::{Command, Stdio};

use relayd_tests::app::TestApp;
use relayd_tests::daemon::binary;
use relayd_tests::http::admin_error;
use relayd_tests::mock_upstream::{MockReply, MockUpstream, completion};
use serde_json::{Value, json};

const KEY: &str = "sk-test-endpoint-secret-7777";
const DEPLOYMENT: &str = "qwen3-32b";
const CHECKS: [&str; 6] = [
    "reachable",
    "model_listed",
    "chat",
    "stream",
    "tool_call",
    "latency",
];

/// A vLLM-like mock: lists `DEPLOYMENT`, streams when asked, and answers a tool request with a
/// `get_weather` call — or, with `tool_calls: false`, with text as a server without a tool
/// parser does.
async fn healthy_mock(tool_calls: bool) -> MockUpstream {
    let mock = MockUpstream::start().await;
    mock.set_models(&["other-model", DEPLOYMENT]);
    mock.set_responder(move |body| {
        if body["stream"] == true {
            let chunk = |delta: Value, finish: Value| {
                json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            };
            MockReply::sse(&[
                chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                chunk(json!({"content": "1 2 3"}), Value::Null),
                chunk(json!({"content": " 4 5"}), json!("stop")),
                json!({"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18}}),
            ])
        } else if body.get("tools").is_some() && tool_calls {
            let mut answer = completion("");
            answer["choices"][0]["message"] = json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}],
            });
            answer["choices"][0]["finish_reason"] = json!("tool_calls");
            MockReply::Json {
                status: 200,
                body: answer,
                headers: Vec::new(),
            }
        } else if body.get("tools").is_some() {
            MockReply::text("<tool_call>{\"name\": \"get_weather\"}</tool_call>")
        } else {
            MockReply::text("pong")
        }
    });
    mock
}

async fn test(app: &TestApp, body: &Value) -> relayd_tests::http::Reply {
    app.admin().post("/test-endpoint", body).await
}

/// `name → check` of a report.
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

fn names(report: &Value) -> Vec<&str> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect()
}

/// Asserts that exactly `failing` failed, in a report that is 200 and names every check.
#[track_caller]
fn only_failing(reply: &relayd_tests::http::Reply, failing: &[&str]) {
    assert_eq!(reply.status, 200, "{}", reply.text);
    let report = &reply.json;
    assert_eq!(names(report), CHECKS, "{report:#}");
    for name in CHECKS {
        let expected = !failing.contains(&name);
        assert_eq!(check(report, name)["ok"], expected, "{name} in {report:#}");
    }
    assert_eq!(report["ok"], failing.is_empty(), "{report:#}");
    assert!(!reply.text.contains(KEY), "key leaked: {}", reply.text);
}

#[tokio::test]
async fn a_saved_account_on_a_healthy_upstream_passes_every_check() {
    let mock = healthy_mock(true).await;
    mock.require_api_key(KEY);
    let app = TestApp::start().await;
    app.admin()
        .create_account(&json!({"name": "qwen", "endpoint": mock.endpoint(), "deploymentName": DEPLOYMENT, "apiKey": KEY}))
        .await;

    let reply = test(&app, &json!({"account": "qwen"})).await;
    only_failing(&reply, &[]);
    let report = &reply.json;
    assert_eq!(report["target"]["name"], "qwen");
    assert_eq!(report["target"]["apiKeySet"], true);
    assert!(
        check(report, "model_listed")["detail"]
            .as_str()
            .expect("detail")
            .contains(DEPLOYMENT)
    );
    assert!(
        check(report, "stream")["detail"]
            .as_str()
            .expect("detail")
            .contains("[DONE]")
    );
    assert_eq!(
        check(report, "tool_call")["detail"],
        "get_weather({\"city\": \"Paris\"})"
    );
    assert_eq!(report["latency"]["outputTokens"], 9);
    assert_eq!(report["latency"]["tokensEstimated"], false);
    assert!(report["latency"]["totalMillis"].as_u64().is_some());

    // The same path as relay traffic: the account's key, its deployment, the OpenAI URL shapes.
    let requests = mock.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    // The checks come first; the capability probe's requests follow them (never beside them).
    assert!(paths.len() > 4, "{paths:?}");
    assert!(
        report["profile"]["probedAt"].as_u64().is_some(),
        "{report:#}"
    );
    assert_eq!(
        paths[..4],
        [
            "/v1/models",
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1/chat/completions"
        ]
    );
    for r in &requests {
        assert_eq!(r.headers["authorization"], format!("Bearer {KEY}"));
    }
    let stream = requests[2].json();
    assert_eq!(stream["model"], DEPLOYMENT);
    assert_eq!(stream["stream"], true);
    let tool = requests[3].json();
    assert_eq!(tool["tool_choice"]["function"]["name"], "get_weather");
    assert_eq!(tool["tools"][0]["function"]["name"], "get_weather");
}

#[tokio::test]
async fn unsaved_settings_without_a_name_pass_and_nothing_is_saved() {
    let mock = healthy_mock(true).await;
    let app = TestApp::start().await;
    let reply = test(
        &app,
        &json!({"endpoint": mock.endpoint(), "deploymentName": DEPLOYMENT, "apiKey": KEY, "kind": "openai"}),
    )
    .await;
    only_failing(&reply, &[]);
    assert!(reply.json["target"].get("name").is_none(), "{}", reply.text);
    assert!(reply.json["target"].get("id").is_none(), "{}", reply.text);
    assert!(app.state.accounts.snapshot().accounts.is_empty());
}

#[tokio::test]
async fn a_closed_port_fails_reachable_with_the_listening_hint_and_skips_the_rest() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let app = TestApp::start().await;
    let reply = test(
        &app,
        &json!({"endpoint": format!("http://127.0.0.1:{port}/v1"), "deploymentName": DEPLOYMENT, "apiKey": KEY}),
    )
    .await;
    only_failing(&reply, &CHECKS);
    let reachable = check(&reply.json, "reachable");
    assert_eq!(
        reachable["hint"],
        format!("is the server running and listening on 127.0.0.1:{port}? (vLLM: --host 0.0.0.0)")
    );
    for name in &CHECKS[1..] {
        assert_eq!(check(&reply.json, name)["skipped"], true, "{name}");
    }
}

#[tokio::test]
async fn a_wrong_key_points_at_the_api_key() {
    let mock = healthy_mock(true).await;
    mock.require_api_key("sk-the-right-one-0000");
    let app = TestApp::start().await;
    let reply = test(
        &app,
        &json!({"endpoint": mock.endpoint(), "deploymentName": DEPLOYMENT, "apiKey": KEY}),
    )
    .await;
    only_failing(
        &reply,
        &["model_listed", "chat", "stream", "tool_call", "latency"],
    );
    let report = &reply.json;
    assert_eq!(
        check(report, "reachable")["detail"],
        "GET /models answered HTTP 401"
    );
    for name in ["model_listed", "chat", "stream", "tool_call"] {
        assert_eq!(
            check(report, name)["hint"],
            "check the account's apiKey",
            "{name}"
        );
    }

    // Without any key, the hint says one is needed.
    let reply = test(
        &app,
        &json!({"endpoint": mock.endpoint(), "deploymentName": DEPLOYMENT}),
    )
    .await;
    assert_eq!(
        check(&reply.json, "chat")["hint"],
        "the server wants an API key: set the account's apiKey"
    );
}

#[tokio::test]
async fn a_model_the_server_does_not_serve_names_the_ones_it_does() {
    let mock = MockUpstream::start().await;
    mock.set_models(&["qwen3-32b", "glm-4.6"]);
    mock.set_responder(|_| MockReply::error(404, "The model `qwen3` does not exist."));
    let app = TestApp::start().await;
    let reply = test(
        &app,
        &json!({"endpoint": mock.endpoint(), "deploymentName": "qwen3"}),
    )
    .await;
    only_failing(
        &reply,
        &["model_listed", "chat", "stream", "tool_call", "latency"],
    );
    let hint = "the server serves [qwen3-32b, glm-4.6]: set deploymentName to one of them";
    let listed = check(&reply.json, "model_listed");
    assert_eq!(listed["detail"], "qwen3 is not among the served models");
    assert_eq!(listed["hint"], hint);
    assert_eq!(check(&reply.json, "chat")["hint"], hint);
    assert!(
        check(&reply.json, "chat")["detail"]
            .as_str()
            .expect("detail")
            .contains("HTTP 404")
    );
}

#[tokio::test]
async fn a_server_without_a_tool_parser_fails_only_the_tool_check() {
    let mock = healthy_mock(false).await;
    let app = TestApp::start().await;
    let reply = test(
        &app,
        &json!({"endpoint": mock.endpoint(), "deploymentName": DEPLOYMENT}),
    )
    .await;
    only_failing(&reply, &["tool_call"]);
    let tool = check(&reply.json, "tool_call");
    assert!(
        tool["detail"]
            .as_str()
            .expect("detail")
            .starts_with("no tool_calls; the model answered with text"),
        "{tool}"
    );
    assert!(
        tool["hint"]
            .as_str()
            .expect("hint")
            .starts_with("start vLLM with --enable-auto-tool-choice --tool-call-parser <name> (hermes for Qwen, glm45 for GLM"),
        "{tool}"
    );
}

#[tokio::test]
async fn a_404_on_chat_without_v1_says_the_endpoint_should_end_with_v1() {
    let mock = MockUpstream::start().await;
    mock.set_models(&[DEPLOYMENT]);
    mock.set_responder(|_| MockReply::error(404, "Not Found"));
    let app = TestApp::start().await;
    let base = format!("http://{}", mock.addr);
    let reply = test(
        &app,
        &json!({"endpoint": base, "deploymentName": DEPLOYMENT}),
    )
    .await;
    only_failing(&reply, &["chat", "stream", "tool_call", "latency"]);
    assert_eq!(
        check(&reply.json, "chat")["hint"],
        format!("endpoint should end with /v1 (e.g. {base}/v1)")
    );
}

#[tokio::test]
async fn a_stream_that_never_ends_is_bounded_by_the_timeout() {
    let mock = healthy_mock(true).await;
    let pieces = vec![
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"1\"}}]}\n\n".to_owned(),
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"2\"}}]}\n\n".to_owned(),
    ];
    // chat is answered first, then this stream, whose second piece comes after the bound.
    mock.push(MockReply::text("pong"));
    mock.push(MockReply::Stream {
        pieces,
        gap: std::time::Duration::from_secs(3),
        abort: false,
    });
    let app = TestApp::start().await;
    let reply = test(
        &app,
        &json!({"endpoint": mock.endpoint(), "deploymentName": DEPLOYMENT, "timeoutSecs": 1}),
    )
    .await;
    only_failing(&reply, &["stream", "latency"]);
    let stream = check(&reply.json, "stream");
    assert_eq!(stream["detail"], "the stream did not end within 1s");
    assert!(
        stream["millis"].as_u64().expect("millis") < 2_500,
        "{stream}"
    );
}

#[tokio::test]
async fn bad_requests_get_admin_errors_naming_the_field() {
    let app = TestApp::start().await;
    let message = admin_error(
        &test(&app, &json!({"account": "nope"})).await,
        404,
        "not_found",
    );
    assert!(message.contains("nope"), "{message}");

    let cases = [
        (json!({}), "endpoint"),
        (
            json!({"endpoint": "ftp://x", "deploymentName": "d"}),
            "endpoint",
        ),
        (
            json!({"endpoint": "http://127.0.0.1:9/v1"}),
            "deploymentName",
        ),
        (
            json!({"account": "a", "endpoint": "http://127.0.0.1:9/v1"}),
            "endpoint",
        ),
        (json!({"account": "a", "timeoutSecs": 0}), "timeoutSecs"),
        (json!({"account": "a", "colour": "red"}), "colour"),
        (json!({"account": 7}), "account"),
    ];
    for (body, field) in cases {
        let reply = test(&app, &body).await;
        let message = admin_error(&reply, 400, "invalid_request");
        assert!(message.contains(field), "{body}: {message}");
    }
}

/// relayctl against `app`, no terminal.
fn relayctl(app: &TestApp, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(binary("relayctl"))
        .args(["--server", &app.url(""), "--token", &app.admin_token])
        .args(args)
        .env_remove("RELAYCTL_SERVER")
        .env_remove("RELAYCTL_TOKEN")
        .env_remove("RELAYD_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("run relayctl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayctl_test_endpoint_text_json_and_exit_codes() {
    let good = healthy_mock(true).await;
    let bad = healthy_mock(false).await;
    let app = TestApp::start().await;
    app.admin()
        .create_account(&json!({"name": "good", "endpoint": good.endpoint(), "deploymentName": DEPLOYMENT, "apiKey": KEY}))
        .await;
    app.admin()
        .create_account(
            &json!({"name": "bad", "endpoint": bad.endpoint(), "deploymentName": DEPLOYMENT}),
        )
        .await;

    let (code, stdout, stderr) = relayctl(&app, &["test-endpoint", "good"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    for name in CHECKS {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("✓ {name} "))),
            "{name}: {stdout}"
        );
    }
    assert!(stdout.contains("✓ latency       first byte "), "{stdout}");
    assert!(stdout.ends_with("all 6 checks passed\n"), "{stdout}");
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY));

    let (code, stdout, stderr) = relayctl(&app, &["test-endpoint", "bad"]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("✗ tool_call "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        lines[at + 1]
            .trim_start()
            .starts_with("hint: start vLLM with --enable-auto-tool-choice"),
        "{stdout}"
    );
    assert!(stdout.ends_with("1 of 6 checks failed\n"), "{stdout}");
    assert!(
        stderr.contains("relayctl: error: endpoint test failed: 1 of 6 checks failed (tool_call)"),
        "{stderr}"
    );

    let (code, stdout, _) = relayctl(&app, &["--output", "json", "test-endpoint", "bad"]);
    assert_eq!(code, Some(1));
    let report: Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(report["ok"], false);
    assert_eq!(check(&report, "tool_call")["ok"], false);

    // Unsaved settings by flags.
    let endpoint = good.endpoint();
    let (code, stdout, stderr) = relayctl(
        &app,
        &[
            "--output",
            "json",
            "test-endpoint",
            "--endpoint",
            &endpoint,
            "--deployment",
            DEPLOYMENT,
            "--api-key",
            KEY,
        ],
    );
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(report["ok"], true);
    assert_eq!(report["target"]["apiKeySet"], true);
    assert!(!stdout.contains(KEY));

    // Usage errors: neither form, or both.
    let (code, _, _) = relayctl(&app, &["test-endpoint"]);
    assert_eq!(code, Some(2));
    let (code, _, _) = relayctl(
        &app,
        &[
            "test-endpoint",
            "good",
            "--endpoint",
            &endpoint,
            "--deployment",
            "d",
        ],
    );
    assert_eq!(code, Some(2));
    // An unknown account is a one-line failure.
    let (code, _, stderr) = relayctl(&app, &["test-endpoint", "nope"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("no account with id or name \"nope\""),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_model_with_test_saves_only_when_every_check_passes() {
    let good = healthy_mock(true).await;
    let bad = healthy_mock(false).await;
    let app = TestApp::start().await;
    let add = |name: &str, endpoint: &str| {
        relayctl(
            &app,
            &[
                "add-model",
                "--test",
                "--name",
                name,
                "--endpoint",
                endpoint,
                "--deployment",
                DEPLOYMENT,
            ],
        )
    };
    let (code, stdout, stderr) = add("bad", &bad.endpoint());
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("✗ tool_call"), "{stderr}");
    assert!(stderr.contains("nothing saved"), "{stderr}");
    assert!(app.state.accounts.snapshot().accounts.is_empty());

    let (code, stdout, stderr) = add("good", &good.endpoint());
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains("all 6 checks passed"), "{stderr}");
    assert!(app.state.accounts.snapshot().find("good").is_some());
}
