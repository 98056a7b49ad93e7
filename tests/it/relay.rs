//! The relay end to end: relayd in front of in-process mock upstreams, both client protocols,
//! streaming and not, failover, error mapping and cancellation.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use relayd_tests::app::TestApp;
use relayd_tests::http::{Reply, send};
use relayd_tests::mock_upstream::{MockReply, MockUpstream};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

const MODEL: &str = "claude-sonnet-4-5-20250929";

struct Setup {
    app: TestApp,
    key: String,
}

async fn setup(upstreams: &[(&str, &str, u8)]) -> Setup {
    let app = TestApp::start().await;
    let admin = app.admin();
    for (name, endpoint, priority) in upstreams {
        admin
            .create_account(&json!({
                "name": name, "endpoint": endpoint, "deploymentName": format!("{name}-deployment"),
                "apiKey": "sk-upstream-secret-0000", "priority": priority,
                "supportedModels": [MODEL, "gpt-4o"]
            }))
            .await;
    }
    let key = admin.create_key(&json!({"name": "tester"})).await;
    Setup { app, key }
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../relayd/testdata/claude-code/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).expect("fixture");
    serde_json::from_str::<Value>(&text).expect("fixture JSON")["body"].clone()
}

impl Setup {
    async fn anthropic(&self, body: &Value) -> Reply {
        send(
            reqwest::Client::new()
                .post(self.app.url("/v1/messages?beta=true"))
                .header("x-api-key", &self.key)
                .header("anthropic-version", "2023-06-01")
                .json(body),
        )
        .await
    }

    async fn openai(&self, body: &Value) -> Reply {
        send(
            reqwest::Client::new()
                .post(self.app.url("/v1/chat/completions"))
                .bearer_auth(&self.key)
                .json(body),
        )
        .await
    }
}

/// `event:` names of an SSE body, in order.
fn event_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn claude_code_request_non_streaming() {
    let mock = MockUpstream::start().await;
    let s = setup(&[("box1", &mock.endpoint(), 50)]).await;
    mock.push(MockReply::text("Hi there"));
    let body = fixture("nonstreaming_fallback_request.json");
    let mut body = body;
    body["model"] = json!(MODEL);

    let reply = s.anthropic(&body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["type"], "message");
    assert_eq!(reply.json["model"], MODEL);
    assert_eq!(reply.json["content"][0]["text"], "Hi there");
    assert_eq!(reply.json["stop_reason"], "end_turn");
    assert_eq!(reply.json["usage"]["input_tokens"], 11);
    assert_eq!(reply.headers["x-relay-account"], "box1");
    assert!(
        reply.headers["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );

    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(
        seen[0].headers["authorization"],
        "Bearer sk-upstream-secret-0000"
    );
    let upstream = seen[0].json();
    assert_eq!(upstream["model"], "box1-deployment");
    assert!(!String::from_utf8_lossy(&seen[0].body).contains("x-anthropic-billing-header"));
    assert!(seen[0].headers.get("anthropic-beta").is_none());
}

#[tokio::test]
async fn streamed_tool_call_is_translated_to_anthropic_events() {
    let mock = MockUpstream::start().await;
    let s = setup(&[("box1", &mock.endpoint(), 50)]).await;
    mock.push(MockReply::sse(&[
        json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Let me look."}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "Read", "arguments": "{\"file_"}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "path\":\"/tmp/x\"}"}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        json!({"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}}),
    ]));
    let mut body = fixture("tool_turn1_request.json");
    body["model"] = json!(MODEL);
    let reply = s.anthropic(&body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    assert_eq!(
        event_names(&reply.text),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(
        reply.text.contains(r#""stop_reason":"tool_use""#),
        "{}",
        reply.text
    );
    assert!(reply.text.contains(r#""name":"Read""#));
    let upstream = mock.requests()[0].json();
    assert_eq!(upstream["stream"], true);
    assert_eq!(upstream["stream_options"]["include_usage"], true);
}

/// A streamed answer is read to the end of the upstream body after `[DONE]`, so its upstream
/// connection goes back to the pool; dropped early, every stream cost a new connection.
#[tokio::test]
async fn streamed_answers_give_their_upstream_connection_back() {
    let mock = MockUpstream::start().await;
    let s = setup(&[("box1", &mock.endpoint(), 50)]).await;
    const STREAMS: usize = 5;
    for _ in 0..STREAMS {
        // The body ends a moment after `[DONE]` (the empty piece is a pause, not a chunk), as
        // when the terminator arrives in a later packet.
        let chunks = [
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        ];
        let mut pieces: Vec<String> = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
        pieces.push("data: [DONE]\n\n".to_owned());
        pieces.push(String::new());
        mock.push(MockReply::Stream {
            pieces,
            gap: Duration::from_millis(30),
            abort: false,
        });
        let reply = s
            .anthropic(&json!({"model": MODEL, "max_tokens": 100, "stream": true,
                "messages": [{"role": "user", "content": "hi"}]}))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(
            event_names(&reply.text).last().map(String::as_str),
            Some("message_stop")
        );
    }
    let connections: HashSet<_> = mock.requests().iter().map(|r| r.peer).collect();
    assert!(
        connections.len() < STREAMS,
        "{STREAMS} streams used {} upstream connections",
        connections.len()
    );
}

#[tokio::test]
async fn upstream_dying_mid_stream_ends_with_an_error_event() {
    let mock = MockUpstream::start().await;
    let s = setup(&[("box1", &mock.endpoint(), 50)]).await;
    mock.push(MockReply::Stream {
        pieces: vec![format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": {"content": "partial"}}]})
        )],
        gap: Duration::from_millis(200),
        abort: true,
    });
    let reply = s
        .anthropic(&json!({"model": MODEL, "max_tokens": 100, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(reply.status, 200);
    let events = event_names(&reply.text);
    assert_eq!(events.first().map(String::as_str), Some("message_start"));
    assert_eq!(
        events.last().map(String::as_str),
        Some("error"),
        "{}",
        reply.text
    );
    assert!(!events.contains(&"message_stop".to_owned()));
    assert_eq!(
        mock.requests().len(),
        1,
        "a started stream must not be retried"
    );
}

#[tokio::test]
async fn openai_clients_pass_through_with_the_model_rewritten() {
    let mock = MockUpstream::start().await;
    let s = setup(&[("box1", &mock.endpoint(), 50)]).await;
    let reply = s
        .openai(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["model"], "gpt-4o");
    assert_eq!(
        reply.json["choices"][0]["message"]["content"],
        "Hello from the mock upstream."
    );
    assert_eq!(mock.requests()[0].json()["model"], "box1-deployment");

    mock.push(MockReply::sse(&[
        json!({"id": "c1", "model": "box1-deployment", "choices": [{"index": 0, "delta": {"content": "He"}}]}),
        json!({"id": "c1", "model": "box1-deployment", "choices": [{"index": 0, "delta": {"content": "llo"}, "finish_reason": "stop"}]}),
        json!({"id": "c1", "model": "box1-deployment", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
    ]));
    let reply = s
        .openai(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(reply.status, 200);
    assert!(reply.text.contains("\"llo\""));
    assert!(reply.text.contains("data: [DONE]"));
    assert!(!reply.text.contains("box1-deployment"), "{}", reply.text);
    assert!(
        !reply.text.contains("\"usage\""),
        "client did not ask for usage: {}",
        reply.text
    );
    assert_eq!(
        mock.requests()[1].json()["stream_options"]["include_usage"],
        true
    );
}

#[tokio::test]
async fn unknown_models_are_404_in_each_protocol() {
    let mock = MockUpstream::start().await;
    let s = setup(&[("box1", &mock.endpoint(), 50)]).await;
    let reply = s
        .anthropic(&json!({"model": "claude-nope-1", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json["error"]["type"], "not_found_error");
    assert!(
        reply.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("claude-nope-1")
    );
    let reply = s
        .openai(&json!({"model": "gpt-nope", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json["error"]["code"], "model_not_found");
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn bad_client_input_is_400_not_500() {
    let mock = MockUpstream::start().await;
    let s = setup(&[("box1", &mock.endpoint(), 50)]).await;
    let reply = s
        .anthropic(&json!({"model": MODEL, "messages": "not a list", "max_tokens": 5}))
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.json["error"]["type"], "invalid_request_error");
    let reply = send(
        reqwest::Client::new()
            .post(s.app.url("/v1/messages"))
            .header("x-api-key", &s.key)
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json["error"]["type"], "invalid_request_error");
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn failover_hides_a_failing_account_and_credentials_errors_are_502() {
    let bad = MockUpstream::start().await;
    let good = MockUpstream::start().await;
    let s = setup(&[
        ("first", &bad.endpoint(), 10),
        ("second", &good.endpoint(), 20),
    ])
    .await;
    bad.push(MockReply::error(500, "boom"));
    let reply = s
        .anthropic(&json!({"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.headers["x-relay-account"], "second");

    bad.push(MockReply::error(401, "bad key"));
    good.push(MockReply::error(403, "bad key"));
    let reply = s
        .anthropic(&json!({"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(reply.status, 502, "{}", reply.text);
    assert_eq!(reply.json["error"]["type"], "api_error");
    assert!(!reply.text.contains("sk-upstream-secret"));
}

#[tokio::test]
async fn context_overflow_uses_anthropic_wording() {
    let mock = MockUpstream::start().await;
    let s = setup(&[("box1", &mock.endpoint(), 50)]).await;
    mock.push(MockReply::error(
        400,
        "This model's maximum context length is 32768 tokens. However, you requested 40000 tokens.",
    ));
    let reply = s
        .anthropic(&json!({"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json["error"]["message"],
        "prompt is too long: 40000 tokens > 32768 maximum"
    );
}

#[tokio::test]
async fn count_tokens_is_local_and_grows_with_content() {
    let mock = MockUpstream::start().await;
    let s = setup(&[("box1", &mock.endpoint(), 50)]).await;
    let count = |body: Value| {
        let s = &s;
        async move {
            send(
                reqwest::Client::new()
                    .post(s.app.url("/v1/messages/count_tokens?beta=true"))
                    .header("x-api-key", &s.key)
                    .json(&body),
            )
            .await
        }
    };
    let small =
        count(json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(small.status, 200, "{}", small.text);
    let big = count(fixture("tool_turn1_request.json")).await;
    let small_n = small.json["input_tokens"].as_u64().unwrap();
    let big_n = big.json["input_tokens"].as_u64().unwrap();
    assert!(small_n > 0 && big_n > 10_000, "{small_n} {big_n}");
    assert!(
        mock.requests().is_empty(),
        "count_tokens must not reach the upstream"
    );
}

#[tokio::test]
async fn azure_accounts_use_the_deployment_url_and_api_key_header() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    app.admin()
        .create_account(&json!({
            "name": "azure", "kind": "azure", "endpoint": format!("http://{}", mock.addr),
            "deploymentName": "gpt4o-prod", "apiKey": "azure-key-123456", "supportedModels": ["gpt-4o"]
        }))
        .await;
    let key = app.admin().create_key(&json!({"name": "k"})).await;
    let reply = send(
        reqwest::Client::new()
            .post(app.url("/openai/v1/chat/completions"))
            .header("api-key", &key)
            .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let seen = &mock.requests()[0];
    assert_eq!(
        seen.path,
        "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(seen.headers["api-key"], "azure-key-123456");
    assert!(seen.headers.get("authorization").is_none());
}

/// A raw TCP upstream that accepts one connection, reads the request, never answers, and
/// reports how long after `t0` the peer (relayd) closed the connection.
async fn silent_upstream() -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Receiver<Instant>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = tx.send(Instant::now());
    });
    (addr, rx)
}

#[tokio::test]
async fn a_client_leaving_before_the_first_byte_cancels_the_upstream_request() {
    let (addr, closed) = silent_upstream().await;
    let s = setup(&[("silent", &format!("http://{addr}/v1"), 50)]).await;
    let client = reqwest::Client::new();
    let request = client
        .post(s.app.url("/v1/messages"))
        .header("x-api-key", &s.key)
        .json(&json!({"model": MODEL, "max_tokens": 10, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send();
    // The client gives up after 300 ms (its request future is dropped, closing its socket).
    let gave_up = tokio::time::timeout(Duration::from_millis(300), request).await;
    assert!(gave_up.is_err(), "the silent upstream cannot have answered");
    let left = Instant::now();
    drop(client);
    let closed_at = tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("upstream connection still open 5 s after the client left")
        .unwrap();
    let delay = closed_at.saturating_duration_since(left);
    assert!(
        delay < Duration::from_secs(1),
        "upstream closed {delay:?} after the client left"
    );
}

#[tokio::test]
async fn a_client_leaving_mid_stream_cancels_the_upstream_request() {
    let mock = MockUpstream::start().await;
    let s = setup(&[("box1", &mock.endpoint(), 50)]).await;
    let chunk = |t: &str| {
        format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": {"content": t}}]})
        )
    };
    mock.push(MockReply::Stream {
        pieces: (0..1000).map(|i| chunk(&format!("t{i} "))).collect(),
        gap: Duration::from_millis(50),
        abort: false,
    });
    let response = reqwest::Client::new()
        .post(s.app.url("/v1/messages"))
        .header("x-api-key", &s.key)
        .json(&json!({"model": MODEL, "max_tokens": 10, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    use futures_util::StreamExt;
    let mut seen = String::new();
    while !seen.contains("t2 ") {
        let piece = stream.next().await.unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&piece));
    }
    drop(stream);
    let left = Instant::now();
    // The mock's in-flight counter drops when relayd closes the upstream connection.
    tokio::time::timeout(Duration::from_secs(1), mock.wait_idle())
        .await
        .expect("upstream still streaming 1 s after the client left");
    assert!(left.elapsed() < Duration::from_secs(1));
    assert!(mock.requests().len() == 1);
}

async fn via_proxy(proxy_url: &str, mock: &MockUpstream) -> (Setup, Reply) {
    let app = TestApp::start().await;
    let created = app
        .admin()
        .create_account(&json!({
            "name": "proxied", "endpoint": mock.endpoint(), "deploymentName": "d",
            "proxy": proxy_url, "supportedModels": [MODEL]
        }))
        .await;
    // The proxy password is a secret: shown redacted, never in clear.
    assert!(!created.to_string().contains("pw-secret"), "{created}");
    let key = app.admin().create_key(&json!({"name": "k"})).await;
    let s = Setup { app, key };
    let reply = s
        .anthropic(&json!({"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    (s, reply)
}

#[tokio::test]
async fn an_accounts_http_proxy_is_really_used() {
    let mock = MockUpstream::start().await;
    let proxy = relayd_tests::forward_proxy::ForwardProxy::http().await;
    let (_s, reply) = via_proxy(&format!("http://user:pw-secret@{}", proxy.addr), &mock).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(proxy.connections() >= 1);
    assert_eq!(proxy.credentials(), ["user:pw-secret"]);
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn an_accounts_socks5_proxy_is_really_used() {
    let mock = MockUpstream::start().await;
    let proxy =
        relayd_tests::forward_proxy::ForwardProxy::socks5(Some(("user", "pw-secret"))).await;
    let (_s, reply) = via_proxy(&format!("socks5://user:pw-secret@{}", proxy.addr), &mock).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(proxy.connections(), 1);
    assert_eq!(proxy.credentials(), ["user:pw-secret"]);
    assert_eq!(mock.requests().len(), 1);

    // A proxy that refuses the credentials fails the request (502), it is never bypassed.
    let strict = relayd_tests::forward_proxy::ForwardProxy::socks5(Some(("user", "other"))).await;
    let (_s, reply) = via_proxy(&format!("socks5://user:pw-secret@{}", strict.addr), &mock).await;
    assert_eq!(reply.status, 502, "{}", reply.text);
    assert_eq!(
        mock.requests().len(),
        1,
        "the request went around the proxy"
    );
}

#[tokio::test]
async fn per_account_knobs_shape_the_upstream_request() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    app.admin()
        .create_account(&json!({
            "name": "qwen", "endpoint": mock.endpoint(), "deploymentName": "qwen3",
            "supportedModels": [MODEL], "maxOutputTokens": 8192, "thinking": "enableThinking",
            "useMaxCompletionTokens": true
        }))
        .await;
    let key = app.admin().create_key(&json!({"name": "k"})).await;
    let s = Setup { app, key };
    let body = fixture("sonnet45_request.json");
    assert_eq!(body["thinking"]["type"], "enabled");
    let reply = s.anthropic(&body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let upstream = mock.requests()[0].json();
    assert_eq!(upstream["max_completion_tokens"], 8192);
    assert!(upstream.get("max_tokens").is_none());
    assert_eq!(upstream["chat_template_kwargs"]["enable_thinking"], true);

    let patched = s
        .app
        .admin()
        .patch(
            "/accounts/qwen",
            &json!({"maxOutputTokens": null, "thinking": "drop"}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert!(patched.json.get("maxOutputTokens").is_none());
    let bad = s
        .app
        .admin()
        .patch("/accounts/qwen", &json!({"thinking": "sometimes"}))
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.text.contains("thinking"), "{}", bad.text);
}

#[tokio::test]
async fn pings_keep_a_silent_stream_alive() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start_with(|c| c.timeouts.ping_secs = 1).await;
    app.admin()
        .create_account(&json!({"name": "slow", "endpoint": mock.endpoint(),
            "deploymentName": "d", "supportedModels": [MODEL]}))
        .await;
    let key = app.admin().create_key(&json!({"name": "k"})).await;
    let s = Setup { app, key };
    // Headers at once (vLLM starts its stream before prefill), then 2.5 s of silence.
    mock.push(MockReply::Stream {
        pieces: vec![
            ": prefill\n\n".to_owned(),
            format!(
                "data: {}\n\ndata: [DONE]\n\n",
                json!({"choices": [{"index": 0, "delta": {"content": "late"}, "finish_reason": "stop"}]})
            ),
        ],
        gap: Duration::from_millis(2500),
        abort: false,
    });
    let reply = s
        .anthropic(&json!({"model": MODEL, "max_tokens": 10, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    let events = event_names(&reply.text);
    let pings = events.iter().filter(|e| *e == "ping").count();
    assert!(pings >= 2, "{events:?}");
    assert_eq!(events[0], "message_start");
    assert_eq!(events.last().map(String::as_str), Some("message_stop"));
    let first_block = events
        .iter()
        .position(|e| e == "content_block_start")
        .unwrap();
    assert!(
        events[1..first_block].iter().all(|e| e == "ping"),
        "{events:?}"
    );
}
