//! An upstream's `retry-after` has a ceiling (`routing.max_retry_after_secs`): a `429` with
//! `retry-after: 999999999` cools its account for at most the cap and tells the client no more.

use std::time::{Duration, Instant};

use relayd_tests::app::TestApp;
use relayd_tests::http::{Admin, Reply, send};
use relayd_tests::mock_upstream::{MockReply, MockUpstream};
use serde_json::{Value, json};
use shared::time::now_millis;

const MODEL: &str = "claude-sonnet-4-5-20250929";
/// The header: about 31 years.
const HUGE: &str = "999999999";

fn rate_limited() -> MockReply {
    MockReply::Json {
        status: 429,
        body: json!({"error": {"message": "slow down", "type": "error", "code": 429}}),
        headers: vec![("retry-after".to_owned(), HUGE.to_owned())],
    }
}

async fn ask(http: &reqwest::Client, app: &TestApp, key: &str) -> Reply {
    let body = json!({"model": MODEL, "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}]});
    let request = http.post(app.url("/v1/messages")).header("x-api-key", key);
    send(request.json(&body)).await
}

fn retry_after(reply: &Reply) -> i64 {
    let value = reply
        .headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("no retry-after: {:?}", reply.headers));
    value.to_str().unwrap().parse().unwrap()
}

/// The account's entry in the routing table (`GET /admin/v1/models`).
async fn route_entry(admin: &Admin, account: &str) -> Value {
    let table = admin.get("/models").await;
    assert_eq!(table.status, 200, "{}", table.text);
    table.json["models"]
        .as_array()
        .expect("models")
        .iter()
        .flat_map(|m| m["accounts"].as_array().expect("accounts"))
        .find(|a| a["name"] == account)
        .unwrap_or_else(|| panic!("{account} is not in the routing table: {}", table.text))
        .clone()
}

/// Polls `condition` until it holds or `within` passes (cooldowns reach other instances and end
/// by themselves asynchronously).
async fn eventually(within: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// An account `box` on `mock` serving [`MODEL`], and a relay key for it.
async fn one_account(app: &TestApp, mock: &MockUpstream) -> String {
    let admin = app.admin();
    admin
        .create_account(&json!({"name": "box", "endpoint": mock.endpoint(),
            "deploymentName": "qwen", "supportedModels": [MODEL]}))
        .await;
    admin.create_key(&json!({"name": "k"})).await
}

/// Asserts the 429 a client got for the upstream's huge `retry-after`, and that its account now
/// cools down for no more than `cap_secs` from `asked_at`.
async fn assert_capped(app: &TestApp, reply: &Reply, asked_at: i64, cap_secs: i64) {
    assert_eq!(reply.status, 429, "{}", reply.text);
    assert_eq!(reply.json["error"]["type"], "rate_limit_error");
    assert_eq!(retry_after(reply), cap_secs, "the client is told the cap");
    let entry = route_entry(&app.admin(), "box").await;
    assert_eq!(entry["state"], "coolingDown", "{entry}");
    assert_eq!(entry["reason"], "HTTP 429", "{entry}");
    let until = entry["until"].as_i64().expect("until");
    assert!(
        until <= now_millis() + cap_secs * 1000,
        "cooling down until {until}, beyond the cap of {cap_secs} s"
    );
    assert!(until >= asked_at + cap_secs * 1000, "{entry}");
}

#[tokio::test]
async fn a_capped_cooldown_ends_by_itself_within_the_cap() {
    let mock = MockUpstream::start().await;
    mock.push(rate_limited());
    let app = TestApp::start_with(|c| c.routing.max_retry_after_secs = 1).await;
    let key = one_account(&app, &mock).await;
    let admin = app.admin();

    let asked_at = now_millis();
    let reply = ask(&reqwest::Client::new(), &app, &key).await;
    assert_capped(&app, &reply, asked_at, 1).await;
    let cooled = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), async || {
            route_entry(&admin, "box").await["state"] == "ok"
        })
        .await,
        "the cooldown did not end by itself"
    );
    assert!(
        cooled.elapsed() < Duration::from_millis(1500),
        "ended after {:?}; the cap is 1 s",
        cooled.elapsed()
    );
}
