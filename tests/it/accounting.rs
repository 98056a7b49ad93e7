//! Usage accounting and metrics of real traffic: after a mixed run (non-streamed, streamed,
//! failed, cancelled by the client) the recorded totals equal what the mock upstream reported,
//! on both stores; a SIGKILL after the flush never double-counts.

use std::time::{Duration, Instant};

use relayd_tests::app::TestApp;
use relayd_tests::daemon::Daemon;
use relayd_tests::http::{Admin, Reply, send};
use relayd_tests::mock_upstream::{MockReply, MockUpstream};
use relayd_tests::redis_server::RedisServer;
use serde_json::{Value, json};

const MODEL: &str = "claude-sonnet-4-5-20250929";

fn ask(stream: bool) -> Value {
    json!({"model": MODEL, "max_tokens": 50, "stream": stream,
        "messages": [{"role": "user", "content": "hello there"}]})
}

async fn anthropic(base: &str, key: &str, body: &Value) -> Reply {
    send(
        reqwest::Client::new()
            .post(format!("{base}/v1/messages"))
            .header("x-api-key", key)
            .json(body),
    )
    .await
}

/// Polls the usage report until `done` holds (records reach the store asynchronously).
async fn usage_until(admin: &Admin, query: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = admin.get(&format!("/usage?{query}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        if done(&reply.json) {
            return reply.json;
        }
        assert!(
            Instant::now() < deadline,
            "usage never reached the expected state: {}",
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn mixed_run(app: &TestApp) {
    let mock = MockUpstream::start().await;
    let admin = app.admin();
    admin
        .create_account(&json!({"name": "box", "endpoint": mock.endpoint(),
            "deploymentName": "qwen", "supportedModels": [MODEL]}))
        .await;
    let key = admin.create_key(&json!({"name": "alice"})).await;
    let base = app.url("");

    // 1. Non-streamed: the mock's default answer reports 11 prompt / 7 completion tokens.
    assert_eq!(anthropic(&base, &key, &ask(false)).await.status, 200);
    // 2. Streamed, with cached tokens: 100 prompt (30 cached) / 20 completion.
    mock.push(MockReply::sse(&[
        json!({"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]}),
        json!({"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 20,
            "prompt_tokens_details": {"cached_tokens": 30}}}),
    ]));
    let streamed = anthropic(&base, &key, &ask(true)).await;
    assert!(streamed.text.contains("message_stop"), "{}", streamed.text);
    // 3. Failed upstream: a 502 for the client, no tokens.
    mock.push(MockReply::error(500, "boom"));
    assert_eq!(anthropic(&base, &key, &ask(false)).await.status, 502);
    // 4. Cancelled by the client mid-stream.
    let chunk = |t: &str| {
        format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": {"content": t}}]})
        )
    };
    mock.push(MockReply::Stream {
        pieces: (0..500).map(|i| chunk(&format!("w{i} "))).collect(),
        gap: Duration::from_millis(20),
        abort: false,
    });
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", &key)
        .json(&ask(true))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    use futures_util::StreamExt;
    let mut seen = String::new();
    while !seen.contains("w1 ") {
        seen.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
    }
    drop(body);

    let report = usage_until(&admin, "since=1d&group_by=key", |r| {
        r["total"]["requests"] == 4
    })
    .await;
    let total = &report["total"];
    assert_eq!(
        total["errors"], 2,
        "the 502 and the cancelled request: {report}"
    );
    // Tokens the mock reported, exactly; the cancelled stream adds only relayd's estimate of its
    // input (marked estimated) and the output it had counted so far.
    let estimated = total["estimated"].as_u64().unwrap();
    assert!(estimated >= 1, "{report}");
    assert_eq!(total["tokens"]["cacheReadTokens"], 30, "{report}");
    let input = total["tokens"]["inputTokens"].as_u64().unwrap();
    let output = total["tokens"]["outputTokens"].as_u64().unwrap();
    assert!(input > 11 + 70, "{report}");
    assert!(output >= 7 + 20, "{report}");
    assert_eq!(report["groups"][0]["group"], "alice");

    // The same run in /metrics.
    let metrics = send(
        reqwest::Client::new()
            .get(app.url("/metrics"))
            .bearer_auth(&app.admin_token),
    )
    .await;
    let line = |status: u16| {
        format!(
            "relayd_requests_total{{protocol=\"anthropic\",model=\"{MODEL}\",account=\"box\",status=\"{status}\"}}"
        )
    };
    for (status, n) in [(200, 2), (502, 1), (499, 1)] {
        assert!(
            metrics.text.contains(&format!("{} {n}", line(status))),
            "{status}: {}",
            metrics.text
        );
    }
    assert!(
        metrics
            .text
            .contains("relayd_upstream_errors_total{account=\"box\",cause=\"server_error\"} 1")
    );
}

#[tokio::test]
async fn a_mixed_run_is_accounted_exactly_on_the_embedded_store() {
    let app = TestApp::start_with(|c| c.usage.flush_interval_ms = 50).await;
    mixed_run(&app).await;
}

#[tokio::test]
async fn a_mixed_run_is_accounted_exactly_on_the_redis_store() {
    let redis = RedisServer::start();
    let url = redis.url();
    let app = TestApp::start_with(|c| {
        c.usage.flush_interval_ms = 50;
        c.store = url;
    })
    .await;
    mixed_run(&app).await;
}

#[tokio::test]
async fn sigkill_after_a_flush_never_double_counts() {
    let dir = tempfile::tempdir().unwrap();
    let envs = [
        (
            "RELAYD_ENCRYPTION_KEY",
            "0303030303030303030303030303030303030303030303030303030303030303",
        ),
        ("RELAYD_USAGE__FLUSH_INTERVAL_MS", "50"),
    ];
    let mock = MockUpstream::start().await;
    let daemon = Daemon::start(dir.path(), &[], &envs);
    let admin = daemon.admin();
    admin
        .create_account(&json!({"name": "box", "endpoint": mock.endpoint(),
            "deploymentName": "qwen", "supportedModels": [MODEL]}))
        .await;
    let key = admin.create_key(&json!({"name": "bob"})).await;
    for _ in 0..5 {
        assert_eq!(
            anthropic(&daemon.url(""), &key, &ask(false)).await.status,
            200
        );
    }
    let before = usage_until(&admin, "since=1d", |r| r["total"]["requests"] == 5).await;
    daemon.kill();

    let restarted = Daemon::start(dir.path(), &[], &envs);
    let after = restarted.admin().get("/usage?since=1d").await;
    assert_eq!(
        after.json["total"], before["total"],
        "counts changed across a SIGKILL"
    );
    assert_eq!(after.json["total"]["tokens"]["inputTokens"], 55);
    assert_eq!(after.json["total"]["tokens"]["outputTokens"], 35);
}

#[tokio::test]
async fn one_json_log_line_per_request_without_prompt_or_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockUpstream::start().await;
    let daemon = Daemon::start(dir.path(), &["--log-format", "json"], &[]);
    let admin = daemon.admin();
    admin
        .create_account(
            &json!({"name": "box", "endpoint": mock.endpoint(), "deploymentName": "qwen",
            "apiKey": "sk-upstream-LOGCHECK-9999", "supportedModels": [MODEL]}),
        )
        .await;
    let key = admin.create_key(&json!({"name": "carol"})).await;
    let body = json!({"model": MODEL, "max_tokens": 20,
        "messages": [{"role": "user", "content": "PROMPT-TEXT-MUST-NOT-BE-LOGGED"}]});
    let reply = anthropic(&daemon.url(""), &key, &body).await;
    assert_eq!(reply.status, 200);
    let request_id = reply.headers["x-request-id"].to_str().unwrap().to_owned();
    assert!(daemon.wait_for_log(&request_id, Duration::from_secs(10)));
    let log = daemon.log();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| l.contains(&request_id))
        .map(|l| serde_json::from_str(l).expect("a JSON log line"))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one line per request: {log}");
    let fields = &lines[0]["fields"];
    assert_eq!(fields["message"], "request");
    assert_eq!(fields["key"], "carol");
    assert_eq!(fields["model"], MODEL);
    assert_eq!(fields["account"], "box");
    assert_eq!(fields["status"], 200);
    assert_eq!(fields["input_tokens"], 11);
    assert_eq!(fields["output_tokens"], 7);
    assert!(fields["latency_ms"].is_u64());
    for secret in [
        "PROMPT-TEXT-MUST-NOT-BE-LOGGED",
        "sk-upstream-LOGCHECK-9999",
        key.as_str(),
    ] {
        assert!(!log.contains(secret), "{secret} leaked into the log");
    }
}
