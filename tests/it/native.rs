//! Anthropic-native upstreams end to end: Anthropic clients passed through untranslated (only the
//! model, Claude Code's billing line and an over-large `max_tokens` change), streams forwarded
//! event by event, usage recorded, auth per `upstreamAuth`, failover across the native and the
//! translated path both ways, and accounts that speak only Anthropic kept from OpenAI clients.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use relayd_tests::anthropic_upstream::{
    error_reply, message, message_reply, stream_events, stream_reply,
};
use relayd_tests::app::TestApp;
use relayd_tests::http::{Admin, Reply, send};
use relayd_tests::mock_upstream::{MockReply, MockUpstream};
use serde_json::{Value, json};

const MODEL: &str = "claude-sonnet-4-5-20250929";

/// An app with one relay key and the accounts `accounts` (JSON bodies, `supportedModels` added).
async fn app_with(accounts: &[Value]) -> (TestApp, String) {
    let app = TestApp::start().await;
    let admin = app.admin();
    for account in accounts {
        let mut account = account.clone();
        account["supportedModels"] = json!([MODEL]);
        admin.create_account(&account).await;
    }
    let key = admin.create_key(&json!({"name": "tester"})).await;
    (app, key)
}

fn native(name: &str, mock: &MockUpstream, extra: Value) -> Value {
    let mut account = json!({"name": name, "endpoint": mock.endpoint(),
        "deploymentName": format!("{name}-dep"), "apiKey": "sk-upstream-0000",
        "anthropicMode": "native"});
    if let (Some(account), Value::Object(extra)) = (account.as_object_mut(), extra) {
        account.extend(extra);
    }
    account
}

async fn anthropic(app: &TestApp, key: &str, body: &str) -> Reply {
    send(
        reqwest::Client::new()
            .post(app.url("/v1/messages"))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .header("anthropic-beta", "interleaved-thinking-2025-05-14")
            .header("content-type", "application/json")
            .body(body.to_owned()),
    )
    .await
}

/// Polls the usage report until its total holds `requests` requests.
async fn usage_total(admin: &Admin, requests: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = admin.get("/usage?since=1d").await;
        if reply.json["total"]["requests"] == requests {
            return reply.json["total"].clone();
        }
        assert!(Instant::now() < deadline, "usage: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Claude Code-like request: billing line, cache_control, thinking, tools, metadata, a large
/// `max_tokens`, and whitespace of its own inside the values (relayd writes the top-level
/// members without any between them).
fn claude_code_body(stream: bool) -> String {
    format!(
        r#"{{"model":"{MODEL}","max_tokens":32000,"stream":{stream},"system":[{{"type":"text","text":"x-anthropic-billing-header: cc_version=2.1.0.abc; cc_entrypoint=cli; cch=00000;"}},{{"type":"text", "text":"You are Claude Code.","cache_control":{{"type":"ephemeral"}}}}],"thinking":{{"type": "enabled", "budget_tokens": 1024}},"metadata":{{"user_id": "user_abc_session_123"}},"tools":[{{"name": "Read", "description": "reads", "input_schema": {{"type": "object", "properties": {{"path": {{"type": "string"}}}}}}}}],"messages":[{{"role": "user", "content": [{{"type": "text", "text": "hi \u00e9", "cache_control": {{"type": "ephemeral"}}}}]}}]}}"#
    )
}

/// What the upstream must receive for [`claude_code_body`]: the same bytes but for the model,
/// the billing block and `max_tokens`.
fn expected_upstream(body: &str, deployment: &str, max_tokens: u32) -> String {
    body.replace(&format!("\"{MODEL}\""), &format!("\"{deployment}\""))
        .replace("32000", &max_tokens.to_string())
        .replace(
            r#"{"type":"text","text":"x-anthropic-billing-header: cc_version=2.1.0.abc; cc_entrypoint=cli; cch=00000;"},"#,
            "",
        )
}

#[tokio::test]
async fn a_message_passes_through_with_only_the_model_billing_line_and_cap_changed() {
    let mock = MockUpstream::start().await;
    let (app, key) = app_with(&[native(
        "box",
        &mock,
        json!({"upstreamAuth": "x-api-key", "maxOutputTokens": 2048}),
    )])
    .await;
    mock.push(message_reply("box-dep", "Hello natively"));
    let body = claude_code_body(false);
    let reply = anthropic(&app, &key, &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // The answer is the upstream's, byte for byte, but for the model the client asked for.
    assert_eq!(
        reply.text,
        message(MODEL, "Hello natively").to_string(),
        "answer"
    );
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(
        String::from_utf8_lossy(&sent.body),
        expected_upstream(&body, "box-dep", 2048)
    );
    let header = |name: &str| {
        sent.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(header("x-api-key").as_deref(), Some("sk-upstream-0000"));
    assert_eq!(header("authorization"), None);
    assert_eq!(header("anthropic-version").as_deref(), Some("2023-06-01"));
    assert_eq!(
        header("anthropic-beta").as_deref(),
        Some("interleaved-thinking-2025-05-14")
    );
    // Usage: input counts cache writes; cache reads apart.
    let total = usage_total(&app.admin(), 1).await;
    assert_eq!(total["tokens"]["inputTokens"], 24, "{total}");
    assert_eq!(total["tokens"]["outputTokens"], 5, "{total}");
    assert_eq!(total["tokens"]["cacheReadTokens"], 8, "{total}");
}

#[tokio::test]
async fn a_stream_passes_through_event_by_event_with_the_model_rewritten() {
    let mock = MockUpstream::start().await;
    let (app, key) = app_with(&[native("box", &mock, json!({}))]).await;
    let events = stream_events("box-dep", &["Hel", "lo ", "there"]);
    mock.push(stream_reply(events, Duration::from_millis(5)));
    let reply = anthropic(&app, &key, &claude_code_body(true)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.text,
        stream_events(MODEL, &["Hel", "lo ", "there"]).concat()
    );
    // The default auth of an OpenAI-kind account is a bearer token.
    let sent = &mock.requests()[0];
    assert_eq!(
        sent.headers.get("authorization").unwrap(),
        "Bearer sk-upstream-0000"
    );
    assert!(sent.headers.get("x-api-key").is_none());
    let total = usage_total(&app.admin(), 1).await;
    assert_eq!(total["tokens"]["inputTokens"], 40, "{total}");
    assert_eq!(total["tokens"]["outputTokens"], 9, "{total}");
    assert_eq!(total["tokens"]["cacheReadTokens"], 12, "{total}");
    assert_eq!(total["errors"], 0, "{total}");
}

#[tokio::test]
async fn failover_crosses_from_native_to_translated_and_back() {
    let plain = r#"{"model":"claude-sonnet-4-5-20250929","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#;
    // Native first, failing with a 529: the translated account answers.
    let native_mock = MockUpstream::start().await;
    let openai_mock = MockUpstream::start().await;
    let (app, key) = app_with(&[
        native("first", &native_mock, json!({"priority": 10})),
        json!({"name": "second", "endpoint": openai_mock.endpoint(), "deploymentName": "second-dep",
            "anthropicMode": "translate", "priority": 20}),
    ])
    .await;
    native_mock.push(error_reply(529, "overloaded_error", "Overloaded"));
    let reply = anthropic(&app, &key, plain).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.json["content"][0]["text"],
        "Hello from the mock upstream."
    );
    assert_eq!(native_mock.requests()[0].path, "/v1/messages");
    assert_eq!(openai_mock.requests()[0].path, "/v1/chat/completions");
    drop(app);

    // Translated first, rate limited: the native account answers.
    let native_mock = MockUpstream::start().await;
    let openai_mock = MockUpstream::start().await;
    let (app, key) = app_with(&[
        json!({"name": "first", "endpoint": openai_mock.endpoint(), "deploymentName": "first-dep",
            "anthropicMode": "translate", "priority": 10}),
        native("second", &native_mock, json!({"priority": 20})),
    ])
    .await;
    openai_mock.push(MockReply::error(429, "slow down"));
    native_mock.push(message_reply("second-dep", "native answer"));
    let reply = anthropic(&app, &key, plain).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["content"][0]["text"], "native answer");
    assert_eq!(reply.json["model"], MODEL);
}

#[tokio::test]
async fn native_errors_keep_anthropics_shape_and_overflow_is_reworded() {
    let mock = MockUpstream::start().await;
    let (app, key) = app_with(&[native("box", &mock, json!({}))]).await;
    mock.push(error_reply(
        400,
        "invalid_request_error",
        "request (9543 tokens) exceeds the available context size (8192 tokens), try increasing it",
    ));
    let plain = r#"{"model":"claude-sonnet-4-5-20250929","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#;
    let reply = anthropic(&app, &key, plain).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.json["type"], "error");
    assert_eq!(reply.json["error"]["type"], "invalid_request_error");
    assert_eq!(
        reply.json["error"]["message"],
        "prompt is too long: 9543 tokens > 8192 maximum"
    );
}

#[tokio::test]
async fn an_anthropic_only_account_serves_anthropic_clients_only() {
    let mock = MockUpstream::start().await;
    let (app, key) = app_with(&[json!({"name": "vendor", "kind": "anthropic",
        "endpoint": format!("http://{}", mock.addr), "deploymentName": "glm",
        "apiKey": "sk-vendor-0000"})])
    .await;
    // OpenAI clients get a clear 404 naming why; nothing is sent.
    let reply = send(
        reqwest::Client::new()
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    let text = reply.json["error"]["message"].as_str().unwrap();
    assert!(text.contains("only the Anthropic Messages API"), "{text}");
    assert!(text.contains("vendor"), "{text}");
    assert!(mock.requests().is_empty());
    // Anthropic clients go natively, with the kind's own auth header.
    mock.push(message_reply("glm", "from the vendor"));
    let plain = r#"{"model":"claude-sonnet-4-5-20250929","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#;
    let reply = anthropic(&app, &key, plain).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let sent = &mock.requests()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.headers.get("x-api-key").unwrap(), "sk-vendor-0000");
    // The routing table says so.
    let table = app.admin().get("/models").await;
    let entry = &table.json["models"][0]["accounts"][0];
    assert_eq!(entry["anthropicOnly"], true, "{}", table.text);
}

#[tokio::test]
async fn a_native_stream_cancelled_by_the_client_releases_the_slot() {
    let mock = MockUpstream::start().await;
    let (app, key) = app_with(&[native("box", &mock, json!({"concurrency": 1}))]).await;
    let texts: Vec<String> = (0..500).map(|i| format!("w{i} ")).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    mock.push(stream_reply(
        stream_events("box-dep", &texts),
        Duration::from_millis(20),
    ));
    let response = reqwest::Client::new()
        .post(app.url("/v1/messages"))
        .header("x-api-key", &key)
        .header("content-type", "application/json")
        .body(claude_code_body(true))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("w2 ") {
        seen.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
    }
    drop(body);
    tokio::time::timeout(Duration::from_secs(2), mock.wait_idle())
        .await
        .expect("upstream still streaming after the client left");
    // The one slot is free again: the next request is served at once.
    mock.push(message_reply("box-dep", "again"));
    let plain = r#"{"model":"claude-sonnet-4-5-20250929","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#;
    let reply = tokio::time::timeout(Duration::from_secs(5), anthropic(&app, &key, plain))
        .await
        .expect("the slot was not released");
    assert_eq!(reply.status, 200, "{}", reply.text);
}
