//! Usage accounting end to end: records go through `state.usage` (the recorder the proxy calls)
//! into the store, and come out of `GET /admin/v1/usage` and `relayctl usage`, text and JSON, on
//! both backends; bad queries are 400s naming the parameter.

use relayd_tests::app::TestApp;
use relayd_tests::http::admin_error;
use relayd_tests::redis_server::RedisServer;
use serde_json::{Value, json};
use shared::time::now_millis;
use shared::usage::{TokenCounts, UsageRecord};

use crate::relayctl::relayctl;

fn record(
    id: &str,
    key: &str,
    account: Option<&str>,
    model: &str,
    status: u16,
    tokens: (u64, u64, u64),
) -> UsageRecord {
    UsageRecord {
        request_id: id.to_owned(),
        at: now_millis(),
        key: key.to_owned(),
        account: account.map(str::to_owned),
        model: model.to_owned(),
        upstream_model: Some("qwen3-32b".to_owned()),
        tokens: TokenCounts {
            input_tokens: tokens.0,
            output_tokens: tokens.1,
            cache_read_tokens: tokens.2,
        },
        estimated: tokens.1 == 0,
        status,
        streamed: true,
        latency_ms: 1200,
        ttfb_ms: Some(300),
    }
}

/// Three requests through the recorder, flushed: alice twice (one failed), bob once.
async fn fill(app: &TestApp) {
    app.state.usage.record(record(
        "u1",
        "alice",
        Some("qwen"),
        "gpt-4o",
        200,
        (1000, 200, 50),
    ));
    app.state.usage.record(record(
        "u2",
        "alice",
        Some("glm"),
        "claude-x",
        502,
        (300, 0, 0),
    ));
    app.state
        .usage
        .record(record("u3", "bob", Some("qwen"), "gpt-4o", 200, (10, 5, 0)));
    assert!(app.state.usage.flush_now().await, "flush failed");
    assert_eq!(app.state.usage.stats().written, 3);
}

/// `(group, requests, errors, input, output, cache, estimated)` of each group, then the total.
fn rows(report: &Value) -> Vec<Value> {
    report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .chain(std::iter::once(&report["total"]))
        .map(|g| {
            json!([
                g["group"],
                g["requests"],
                g["errors"],
                g["tokens"]["inputTokens"],
                g["tokens"]["outputTokens"],
                g["tokens"]["cacheReadTokens"],
                g["estimated"]
            ])
        })
        .collect()
}

async fn admin_report_groups_and_filters(app: &TestApp) {
    fill(app).await;
    let admin = app.admin();
    let by_model = admin.get("/usage?since=24h&group_by=model").await;
    assert_eq!(by_model.status, 200, "{}", by_model.text);
    assert_eq!(
        rows(&by_model.json),
        vec![
            json!(["claude-x", 1, 1, 300, 0, 0, 1]),
            json!(["gpt-4o", 2, 0, 1010, 205, 50, 0]),
            json!(["total", 3, 1, 1310, 205, 50, 1]),
        ]
    );
    assert_eq!(by_model.json["query"]["groupBy"], "model");
    assert!(by_model.json["query"]["since"].as_i64().unwrap() < now_millis());

    let filtered = admin.get("/usage?key=alice&account=qwen").await;
    assert_eq!(filtered.status, 200, "{}", filtered.text);
    assert_eq!(
        rows(&filtered.json),
        vec![json!(["total", 1, 0, 1000, 200, 50, 0])]
    );

    let by_day = admin.get("/usage?group_by=day").await;
    assert_eq!(by_day.json["groups"].as_array().unwrap().len(), 1);
    assert_eq!(by_day.json["total"]["requests"], 3);

    // A window in the past holds nothing.
    let old = admin
        .get("/usage?since=2020-01-01&until=2020-01-02T00:00:00Z")
        .await;
    assert_eq!(rows(&old.json), vec![json!(["total", 0, 0, 0, 0, 0, 0])]);
}

#[tokio::test]
async fn admin_usage_report_embedded() {
    let app = TestApp::start().await;
    admin_report_groups_and_filters(&app).await;
}

#[tokio::test]
async fn admin_usage_report_redis() {
    let redis = RedisServer::start();
    let url = redis.url();
    let app = TestApp::start_with(|c| c.store = url).await;
    admin_report_groups_and_filters(&app).await;
}

#[tokio::test]
async fn admin_usage_bad_query_is_400_naming_the_parameter() {
    let app = TestApp::start().await;
    let admin = app.admin();
    for (query, parameter) in [
        ("since=yesterday", "since"),
        ("until=2025-13-01", "until"),
        ("group_by=week", "group_by"),
        ("limit=5", "limit"),
        ("since=2000&until=1000", "until"),
    ] {
        let reply = admin.get(&format!("/usage?{query}")).await;
        let message = admin_error(&reply, 400, "invalid_request");
        assert!(
            message.contains(&format!("parameter `{parameter}`")),
            "{query}: {message}"
        );
        assert_eq!(
            reply.json["error"]["details"][0]["field"], parameter,
            "{query}"
        );
    }
    let reply = reqwest::Client::new()
        .get(app.url("/admin/v1/usage"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayctl_usage_text_and_json() {
    let app = TestApp::start().await;
    fill(&app).await;

    let text = relayctl(&app, &["usage", "--since", "24h"]).ok();
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert!(lines[0].starts_with("usage: since "), "{text:#?}");
    let header = lines
        .iter()
        .find(|l| l.contains("REQUESTS"))
        .expect("header");
    for column in [
        "KEY",
        "ERRORS",
        "INPUT",
        "OUTPUT",
        "CACHE READ",
        "ESTIMATED",
    ] {
        assert!(header.contains(column), "{column}: {text:#?}");
    }
    let split = |line: &str| -> Vec<String> {
        line.split(['│', '┆'])
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect()
    };
    let cells = |name: &str| -> Vec<String> {
        let line = lines
            .iter()
            .find(|l| split(l).first().is_some_and(|c| c == name))
            .unwrap_or_else(|| panic!("no row {name}: {text:#?}"));
        split(line)
    };
    assert_eq!(
        cells("alice"),
        ["alice", "2", "1", "1300", "200", "50", "1"]
    );
    assert_eq!(cells("bob"), ["bob", "1", "0", "10", "5", "0", "0"]);
    assert_eq!(
        cells("TOTAL"),
        ["TOTAL", "3", "1", "1310", "205", "50", "1"]
    );

    let by_account = relayctl(&app, &["usage", "--by", "account", "--model", "gpt-4o"]).ok();
    assert!(by_account.stdout.contains("ACCOUNT"), "{by_account:#?}");
    assert!(
        by_account.stdout.contains("model gpt-4o"),
        "{by_account:#?}"
    );
    assert!(!by_account.stdout.contains("glm"), "{by_account:#?}");

    let json = relayctl(
        &app,
        &[
            "--output", "json", "usage", "--by", "model", "--key", "alice",
        ],
    )
    .ok()
    .json();
    assert_eq!(
        rows(&json),
        vec![
            json!(["claude-x", 1, 1, 300, 0, 0, 1]),
            json!(["gpt-4o", 1, 0, 1000, 200, 50, 0]),
            json!(["total", 2, 1, 1300, 200, 50, 1]),
        ]
    );
    assert_eq!(json["query"]["key"], "alice");

    // A bad time is a usage error (exit 2) before anything is sent.
    let bad = relayctl(&app, &["usage", "--since", "yesterday"]);
    assert_eq!(bad.code, Some(2), "{bad:#?}");
    assert!(bad.stderr.contains("yesterday"), "{bad:#?}");
}
