//! An upstream's `retry-after` has a ceiling (`routing.max_retry_after_secs`): a `429` with
//! `retry-after: 999999999` cools its account for at most the cap and tells the client no more,
//! and an operator ends a cooldown at once with `relayctl accounts reset` or by enabling the
//! account — on the embedded store and across instances sharing a Redis.

use std::time::{Duration, Instant};

use relayd::config::Config;
use relayd_tests::app::TestApp;
use relayd_tests::http::{Admin, Reply, admin_error, send};
use relayd_tests::mock_upstream::{MockReply, MockUpstream};
use relayd_tests::redis_server::RedisServer;
use serde_json::{Value, json};
use shared::time::now_millis;

use crate::relayctl::relayctl;
use crate::store_conformance::redis_conn;

const MODEL: &str = "claude-sonnet-4-5-20250929";
/// The header: about 31 years.
const HUGE: &str = "999999999";
/// The default `routing.max_retry_after_secs`.
const DEFAULT_CAP_SECS: i64 = 600;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_retry_after_is_capped_and_reset_or_enable_ends_the_cooldown() {
    let mock = MockUpstream::start().await;
    mock.set_responder(|_| rate_limited());
    let app = TestApp::start().await;
    let key = one_account(&app, &mock).await;
    let http = reqwest::Client::new();
    let admin = app.admin();

    let asked_at = now_millis();
    let reply = ask(&http, &app, &key).await;
    assert_capped(&app, &reply, asked_at, DEFAULT_CAP_SECS).await;

    // `relayctl accounts reset` ends it at once, and routing uses the account again.
    let reset = relayctl(&app, &["accounts", "reset", "box"]).ok();
    assert!(
        reset
            .stdout
            .starts_with("account box: cooldown ended (it was cooling down until "),
        "{reset:#?}"
    );
    assert!(reset.stdout.contains("HTTP 429"), "{reset:#?}");
    assert_eq!(route_entry(&admin, "box").await["state"], "ok");
    mock.push(MockReply::text("back"));
    let served = ask(&http, &app, &key).await;
    assert_eq!(served.status, 200, "{}", served.text);
    assert_eq!(served.headers["x-relay-account"], "box");
    let again = relayctl(&app, &["--output", "json", "accounts", "reset", "box"])
        .ok()
        .json();
    assert_eq!(again["name"], "box");
    assert_eq!(again["state"], "ok");
    assert!(again.get("ended").is_none(), "nothing was cooling: {again}");

    // Cooled again, reset through the API: the answer says what ended.
    let asked_at = now_millis();
    let reply = ask(&http, &app, &key).await;
    assert_capped(&app, &reply, asked_at, DEFAULT_CAP_SECS).await;
    let json = relayctl(&app, &["--output", "json", "accounts", "reset", "box"])
        .ok()
        .json();
    assert_eq!(json["ended"]["reason"], "HTTP 429", "{json}");
    assert!(json["ended"]["until"].as_i64().unwrap() <= now_millis() + DEFAULT_CAP_SECS * 1000);
    assert_eq!(json["state"], "ok", "{json}");
    assert_eq!(route_entry(&admin, "box").await["state"], "ok");

    // Disable and enable ends it too.
    let asked_at = now_millis();
    let reply = ask(&http, &app, &key).await;
    assert_capped(&app, &reply, asked_at, DEFAULT_CAP_SECS).await;
    relayctl(&app, &["accounts", "disable", "box"]).ok();
    assert_eq!(route_entry(&admin, "box").await["state"], "disabled");
    relayctl(&app, &["accounts", "enable", "box"]).ok();
    assert_eq!(route_entry(&admin, "box").await["state"], "ok");
    // Enabling an enabled account that cools down ends its cooldown as well.
    let reply = ask(&http, &app, &key).await;
    assert_eq!(reply.status, 429);
    assert_eq!(route_entry(&admin, "box").await["state"], "coolingDown");
    let enabled = admin.post("/accounts/box/enable", &json!({})).await;
    assert_eq!(enabled.status, 200, "{}", enabled.text);
    assert_eq!(route_entry(&admin, "box").await["state"], "ok");

    // A reset ends the cooldown of a disabled account but leaves it disabled, and says so.
    assert_eq!(ask(&http, &app, &key).await.status, 429);
    relayctl(&app, &["accounts", "disable", "box"]).ok();
    let disabled = relayctl(&app, &["accounts", "reset", "box"]).ok();
    assert!(
        disabled.stdout.starts_with("account box: cooldown ended"),
        "{disabled:#?}"
    );
    assert!(
        disabled.stdout.contains("relayctl accounts enable box"),
        "{disabled:#?}"
    );
    assert_eq!(route_entry(&admin, "box").await["state"], "disabled");
    let reply = ask(&http, &app, &key).await;
    assert_eq!(reply.status, 404, "disabled: {}", reply.text);

    // Mistakes: an unknown account is a failure (1), a missing name a usage error (2).
    let unknown = relayctl(&app, &["accounts", "reset", "nope"]).failed(1);
    assert!(unknown.stderr.contains("nope"), "{unknown:#?}");
    let missing = relayctl(&app, &["accounts", "reset"]);
    assert_eq!(missing.code, Some(2), "{missing:#?}");
    let api = admin.post("/accounts/nope/reset", &json!({})).await;
    admin_error(&api, 404, "not_found");
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

/// A relayd on `redis_url` that shares `key_file`'s encryption key (if any).
async fn redis_app(
    redis_url: &str,
    key_file: Option<std::path::PathBuf>,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    let url = redis_url.to_owned();
    TestApp::start_with(move |c| {
        c.store = url;
        c.redis_prefix = "reset-test:".to_owned();
        c.encryption_key_file = key_file;
        configure(c);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_the_cooldown_is_capped_and_a_reset_or_enable_ends_it_everywhere() {
    let redis = RedisServer::start();
    let mock = MockUpstream::start().await;
    mock.set_responder(|_| rate_limited());
    let one = redis_app(&redis.url(), None, |_| {}).await;
    let key_file = one.data_dir.path().join("encryption.key");
    let two = redis_app(&redis.url(), Some(key_file.clone()), |_| {}).await;
    let key = one_account(&one, &mock).await;
    let id = one.state.accounts.snapshot().accounts[0].id.clone();
    let cooldown_key = format!("reset-test:cooldown:{}", id.as_str());
    let mut conn = redis_conn(&redis).await;
    let http = reqwest::Client::new();
    let state_at = async |app: &TestApp| route_entry(&app.admin(), "box").await["state"].clone();
    assert!(
        eventually(Duration::from_secs(2), async || {
            two.state.accounts.snapshot().accounts.len() == 1
        })
        .await
    );

    let asked_at = now_millis();
    let reply = ask(&http, &one, &key).await;
    assert_capped(&one, &reply, asked_at, DEFAULT_CAP_SECS).await;
    // The shared copy expires within the cap too, so no restart brings back a longer one.
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg(&cooldown_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        (1..=DEFAULT_CAP_SECS * 1000).contains(&ttl),
        "the shared cooldown expires in {ttl} ms"
    );
    assert!(
        eventually(Duration::from_secs(2), async || state_at(&two).await
            == "coolingDown")
        .await,
        "instance two did not hear of the cooldown"
    );

    // A reset through instance two ends it on both instances and in Redis.
    relayctl(&two, &["accounts", "reset", "box"]).ok();
    assert_eq!(state_at(&two).await, "ok");
    assert!(
        eventually(Duration::from_secs(2), async || state_at(&one).await
            == "ok")
        .await,
        "instance one still has the cooldown"
    );
    let exists: i64 = ::redis::cmd("EXISTS")
        .arg(&cooldown_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0, "the shared cooldown is gone");

    // Cooled again through one; disabling and enabling it through two ends it everywhere.
    assert_eq!(ask(&http, &one, &key).await.status, 429);
    assert!(
        eventually(Duration::from_secs(2), async || state_at(&two).await
            == "coolingDown")
        .await
    );
    relayctl(&two, &["accounts", "disable", "box"]).ok();
    relayctl(&two, &["accounts", "enable", "box"]).ok();
    assert!(
        eventually(Duration::from_secs(2), async || {
            state_at(&one).await == "ok" && state_at(&two).await == "ok"
        })
        .await,
        "the cooldown survived disable + enable"
    );
    let exists: i64 = ::redis::cmd("EXISTS")
        .arg(&cooldown_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0);

    // An instance started now (as after a restart) finds no cooldown to load.
    let three = redis_app(&redis.url(), Some(key_file), |_| {}).await;
    assert_eq!(state_at(&three).await, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_cooldown_of_an_older_build_is_loaded_capped() {
    let redis = RedisServer::start();
    let mock = MockUpstream::start().await;
    let one = redis_app(&redis.url(), None, |_| {}).await;
    let key_file = one.data_dir.path().join("encryption.key");
    one_account(&one, &mock).await;
    let id = one.state.accounts.snapshot().accounts[0].id.clone();
    // What an older build wrote for `retry-after: 999999999`: a cooldown until 2058.
    const YEAR_2058: i64 = 2_783_000_000_000;
    let cooldown_key = format!("reset-test:cooldown:{}", id.as_str());
    let mut conn = redis_conn(&redis).await;
    let () = ::redis::cmd("SET")
        .arg(&cooldown_key)
        .arg(format!("{YEAR_2058} HTTP 429"))
        .arg("PXAT")
        .arg(YEAR_2058)
        .query_async(&mut conn)
        .await
        .unwrap();

    let started_at = now_millis();
    let two = redis_app(&redis.url(), Some(key_file), |_| {}).await;
    let entry = route_entry(&two.admin(), "box").await;
    assert_eq!(entry["state"], "coolingDown", "{entry}");
    assert_eq!(entry["reason"], "HTTP 429", "{entry}");
    let until = entry["until"].as_i64().expect("until");
    assert!(
        (started_at + DEFAULT_CAP_SECS * 1000..=now_millis() + DEFAULT_CAP_SECS * 1000)
            .contains(&until),
        "loaded as cooling down until {until}, not within the cap of {DEFAULT_CAP_SECS} s"
    );
    // The shared copy is shortened too, so the next instance to start does not load 2058.
    let stored: String = ::redis::cmd("GET")
        .arg(&cooldown_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, format!("{until} HTTP 429"));
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg(&cooldown_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        (1..=DEFAULT_CAP_SECS * 1000).contains(&ttl),
        "the shared cooldown expires in {ttl} ms"
    );
}
