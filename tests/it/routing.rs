//! Routing under load and faults, end to end: load spread over equal accounts, per-account
//! concurrency caps and the wait queue, failover with cooldowns, conversation affinity (session
//! ids, prefixes, bounded load), relay-key limits, and several relayd instances sharing one
//! Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use relayd::config::Config;
use relayd_tests::app::TestApp;
use relayd_tests::http::{Reply, send};
use relayd_tests::mock_upstream::{MockReply, MockUpstream};
use serde_json::{Value, json};

const MODEL: &str = "claude-sonnet-4-5-20250929";

struct Setup {
    app: TestApp,
    key: String,
    client: reqwest::Client,
}

/// One account per `(name, endpoint, priority, concurrency)`, and a key with `limits`.
async fn setup(
    accounts: &[(&str, &str, u8, u32)],
    limits: Value,
    configure: impl FnOnce(&mut Config),
) -> Setup {
    let app = TestApp::start_with(configure).await;
    let admin = app.admin();
    for (name, endpoint, priority, concurrency) in accounts {
        admin
            .create_account(&json!({
                "name": name, "endpoint": endpoint, "deploymentName": "d",
                "priority": priority, "concurrency": concurrency,
                "supportedModels": [MODEL, "gpt-4o"]
            }))
            .await;
    }
    let key = admin
        .create_key(&json!({"name": "tester", "limits": limits}))
        .await;
    Setup {
        app,
        key,
        client: reqwest::Client::new(),
    }
}

fn anthropic_body() -> Value {
    anthropic_saying("hi")
}

/// An Anthropic request opening a conversation with `text`.
fn anthropic_saying(text: &str) -> Value {
    json!({"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": text}]})
}

fn served_by(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.headers["x-relay-account"]
        .to_str()
        .unwrap()
        .to_owned()
}

impl Setup {
    async fn anthropic(&self) -> Reply {
        self.anthropic_with(&anthropic_body(), None).await
    }

    async fn anthropic_with(&self, body: &Value, session: Option<&str>) -> Reply {
        let mut request = self
            .client
            .post(self.app.url("/v1/messages"))
            .header("x-api-key", &self.key)
            .header("anthropic-version", "2023-06-01")
            .json(body);
        if let Some(session) = session {
            request = request.header("x-claude-code-session-id", session);
        }
        send(request).await
    }

    async fn openai(&self) -> Reply {
        self.openai_with(
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await
    }

    async fn openai_with(&self, body: &Value) -> Reply {
        send(
            self.client
                .post(self.app.url("/v1/chat/completions"))
                .bearer_auth(&self.key)
                .json(body),
        )
        .await
    }
}

fn retry_after(reply: &Reply) -> u64 {
    reply
        .headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("no retry-after: {:?}", reply.headers))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Polls `condition` until it holds or `within` passes.
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

#[tokio::test]
async fn twelve_equal_accounts_share_1200_requests() {
    let mut mocks = Vec::new();
    for _ in 0..12 {
        mocks.push(MockUpstream::start().await);
    }
    let names: Vec<String> = (0..12).map(|i| format!("box{i:02}")).collect();
    let endpoints: Vec<String> = mocks.iter().map(MockUpstream::endpoint).collect();
    let accounts: Vec<(&str, &str, u8, u32)> = names
        .iter()
        .zip(&endpoints)
        .map(|(n, e)| (n.as_str(), e.as_str(), 50, 50))
        .collect();
    let s = setup(&accounts, json!({}), |_| {}).await;
    // 1,200 conversations: each request opens its own.
    let statuses: Vec<u16> = futures_util::stream::iter(0..1200)
        .map(|n| {
            let s = &s;
            async move {
                s.anthropic_with(&anthropic_saying(&format!("task {n}")), None)
                    .await
                    .status
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let counts: Vec<usize> = mocks.iter().map(|m| m.requests().len()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 1200);
    assert!(
        counts.iter().all(|&c| (50..=150).contains(&c)),
        "uneven spread: {counts:?}"
    );
}

#[tokio::test]
async fn a_concurrency_cap_queues_the_rest_then_serves_or_rejects_them() {
    let mock = MockUpstream::start().await;
    mock.set_responder(|_| MockReply::slow("slow answer", Duration::from_millis(300)));
    let s = setup(&[("slow", &mock.endpoint(), 50, 2)], json!({}), |_| {}).await;
    let replies: Vec<Reply> = futures_util::future::join_all((0..10).map(|_| s.anthropic())).await;
    assert!(
        replies.iter().all(|r| r.status == 200),
        "queued, then served"
    );
    assert_eq!(mock.requests().len(), 10);
    assert_eq!(mock.max_in_flight(), 2, "the cap holds at the upstream");

    // A small queue: two in flight, three waiting, the other five refused at once.
    let mock = MockUpstream::start().await;
    mock.set_responder(|_| MockReply::slow("slow answer", Duration::from_millis(800)));
    let s = setup(&[("slow", &mock.endpoint(), 50, 2)], json!({}), |c| {
        c.routing.queue_size = 3;
        c.routing.queue_timeout_secs = 20;
    })
    .await;
    let started = Instant::now();
    let anthropic = futures_util::future::join_all((0..5).map(|_| s.anthropic()));
    let openai = futures_util::future::join_all((0..5).map(|_| s.openai()));
    let (anthropic, openai) = tokio::join!(anthropic, openai);
    let served = anthropic
        .iter()
        .chain(&openai)
        .filter(|r| r.status == 200)
        .count();
    assert_eq!(served, 5, "2 in flight + 3 queued are served");
    assert_eq!(mock.max_in_flight(), 2);
    for r in anthropic.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 529, "{}", r.text);
        assert_eq!(r.json["error"]["type"], "overloaded_error");
        assert_eq!(retry_after(r), 20);
    }
    for r in openai.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 429, "{}", r.text);
        assert_eq!(r.json["error"]["code"], "overloaded");
        assert_eq!(retry_after(r), 20);
    }
    assert!(started.elapsed() >= Duration::from_millis(1600), "3 waves");

    // A queue wait that outlasts its timeout is refused after the timeout.
    let mock = MockUpstream::start().await;
    mock.set_responder(|_| MockReply::slow("slow answer", Duration::from_secs(3)));
    let s = setup(&[("slow", &mock.endpoint(), 50, 1)], json!({}), |c| {
        c.routing.queue_timeout_secs = 1;
    })
    .await;
    let first = s.anthropic();
    let second = async {
        // Only once the first holds the slot.
        assert!(eventually(Duration::from_secs(5), async || mock.in_flight() == 1).await);
        let t = Instant::now();
        (s.anthropic().await, t.elapsed())
    };
    let (first, (second, waited)) = tokio::join!(first, second);
    assert_eq!(first.status, 200);
    assert_eq!(second.status, 529, "{}", second.text);
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2500),
        "{waited:?}"
    );
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn failing_accounts_cool_down_and_a_429_account_returns_after_its_retry_after() {
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}/v1")
    };
    let broken = MockUpstream::start().await;
    let limited = MockUpstream::start().await;
    let healthy = MockUpstream::start().await;
    broken.set_responder(|_| MockReply::error(500, "boom"));
    limited.push(MockReply::Json {
        status: 429,
        body: json!({"error": {"message": "slow down"}}),
        headers: vec![("retry-after".into(), "7".into())],
    });
    let s = setup(
        &[
            ("refused", &refused, 10, 50),
            ("broken", &broken.endpoint(), 10, 50),
            ("limited", &limited.endpoint(), 10, 50),
            ("healthy", &healthy.endpoint(), 20, 50),
        ],
        json!({}),
        |c| {
            c.routing.max_attempts = 4;
            c.routing.cooldown_connect_secs = 600;
            c.routing.cooldown_server_error_secs = 600;
        },
    )
    .await;
    // The cooldowns start during this request, so no earlier than now.
    let cooled_at = Instant::now();
    let first = s.anthropic().await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.headers["x-relay-account"], "healthy");
    assert_eq!(broken.requests().len(), 1);
    assert_eq!(limited.requests().len(), 1);

    let table = s.app.admin().get("/models").await;
    let route = table.json["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == MODEL)
        .unwrap()
        .clone();
    // Read well within its retry-after (measured from before the cooldown could start).
    let read_within_retry_after = cooled_at.elapsed() < Duration::from_millis(6900);
    for account in route["accounts"].as_array().unwrap() {
        match account["name"].as_str().unwrap() {
            "healthy" => assert_eq!(account["state"], "ok", "{account}"),
            // Its 7 s could only be over on a machine stalled for seconds.
            "limited" if !read_within_retry_after => {}
            _ => assert_eq!(account["state"], "coolingDown", "{account}"),
        }
    }
    let status = s.app.admin().get("/status").await;
    let cooling = status.json["accounts"]["coolingDown"].as_u64().unwrap();
    assert!((2..=3).contains(&cooling), "{}", status.text);

    // Served by the healthy account until the 429 account's retry-after is over; then the
    // limited account (fewer in flight is a tie; it has the better priority) is used again.
    let back = eventually(Duration::from_secs(12), async || {
        let reply = s.anthropic().await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.headers["x-relay-account"] == "limited"
    })
    .await;
    let elapsed = cooled_at.elapsed();
    assert!(back, "the 429 account was never used again");
    assert!(
        elapsed >= Duration::from_millis(6990),
        "used again after {elapsed:?}, before its retry-after"
    );
    assert_eq!(limited.requests().len(), 2);
    assert_eq!(
        broken.requests().len(),
        1,
        "the 500 account stays cooled down"
    );
    assert!(healthy.requests().len() >= 2);
}

#[tokio::test]
async fn sticky_sessions_return_to_their_account_until_it_cools_down() {
    let a = MockUpstream::start().await;
    let b = MockUpstream::start().await;
    let c = MockUpstream::start().await;
    let s = setup(
        &[
            ("a", &a.endpoint(), 50, 50),
            ("b", &b.endpoint(), 50, 50),
            ("c", &c.endpoint(), 50, 50),
        ],
        json!({}),
        |_| {},
    )
    .await;
    let first = s.anthropic_with(&anthropic_body(), Some("session-1")).await;
    let bound = first.headers["x-relay-account"]
        .to_str()
        .unwrap()
        .to_owned();
    for _ in 0..6 {
        let reply = s.anthropic_with(&anthropic_body(), Some("session-1")).await;
        assert_eq!(reply.headers["x-relay-account"].to_str().unwrap(), bound);
    }
    // Without a session, conversations spread: 30 of them, by their prefixes, reach all three
    // accounts (each misses one with probability (2/3)^30).
    let mut seen = std::collections::BTreeSet::new();
    for n in 0..30 {
        let reply = s
            .anthropic_with(&anthropic_saying(&format!("task {n}")), None)
            .await;
        seen.insert(served_by(&reply));
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    // `metadata.user_id` is the fallback session id.
    let mut body = anthropic_body();
    body["metadata"] = json!({"user_id": "user_abc_session_42"});
    let first = s.anthropic_with(&body, None).await;
    let by_user = first.headers["x-relay-account"]
        .to_str()
        .unwrap()
        .to_owned();
    for _ in 0..4 {
        let reply = s.anthropic_with(&body, None).await;
        assert_eq!(reply.headers["x-relay-account"].to_str().unwrap(), by_user);
    }
    // A bound account that fails cools down; the session moves on and stays moved.
    let mock = match bound.as_str() {
        "a" => &a,
        "b" => &b,
        _ => &c,
    };
    mock.push(MockReply::error(503, "down"));
    let moved = s.anthropic_with(&anthropic_body(), Some("session-1")).await;
    assert_eq!(moved.status, 200);
    let now_bound = moved.headers["x-relay-account"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(now_bound, bound);
    let again = s.anthropic_with(&anthropic_body(), Some("session-1")).await;
    assert_eq!(
        again.headers["x-relay-account"].to_str().unwrap(),
        now_bound
    );
}

#[tokio::test]
async fn in_flight_counts_show_in_the_routing_table_and_status() {
    let mock = MockUpstream::start().await;
    mock.set_responder(|_| MockReply::slow("slow answer", Duration::from_millis(1500)));
    let s = setup(&[("slow", &mock.endpoint(), 50, 4)], json!({}), |_| {}).await;
    let admin = s.app.admin();
    let request = s.anthropic();
    let check = async {
        assert!(eventually(Duration::from_secs(5), async || mock.in_flight() == 1).await);
        let table = admin.get("/models").await;
        let route = &table.json["models"][0]["accounts"][0];
        assert_eq!(route["inFlight"], 1, "{}", table.text);
        assert_eq!(route["concurrency"], 4);
        let status = admin.get("/status").await;
        assert_eq!(status.json["inFlight"], 1, "{}", status.text);
    };
    let (reply, ()) = tokio::join!(request, check);
    assert_eq!(reply.status, 200);
    let table = admin.get("/models").await;
    assert_eq!(table.json["models"][0]["accounts"][0]["inFlight"], 0);
}

#[tokio::test]
async fn requests_per_minute_limit_is_429_with_retry_after() {
    let mock = MockUpstream::start().await;
    let s = setup(
        &[("box", &mock.endpoint(), 50, 50)],
        json!({"requestsPerMinute": 2}),
        |_| {},
    )
    .await;
    assert_eq!(s.anthropic().await.status, 200);
    assert_eq!(s.openai().await.status, 200);
    let refused = s.anthropic().await;
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert_eq!(refused.json["type"], "error");
    assert_eq!(refused.json["error"]["type"], "rate_limit_error");
    assert!(
        refused.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 requests per minute")
    );
    let wait = retry_after(&refused);
    assert!((55..=60).contains(&wait), "{wait}");
    let refused = s.openai().await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json["error"]["code"], "rate_limit_exceeded");
    assert!(retry_after(&refused) <= 60);
    assert_eq!(
        mock.requests().len(),
        2,
        "refused requests never reach upstream"
    );
}

#[tokio::test]
async fn tokens_per_day_limit_is_429_until_utc_midnight() {
    let mock = MockUpstream::start().await;
    let s = setup(
        &[("box", &mock.endpoint(), 50, 50)],
        json!({"tokensPerDay": 30}),
        |_| {},
    )
    .await;
    // The mock reports 11 + 7 tokens per answer: the second request passes (18 < 30) and
    // brings the day to 36, so the third is refused.
    assert_eq!(s.anthropic().await.status, 200);
    assert_eq!(s.openai().await.status, 200);
    let refused = s.anthropic().await;
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert_eq!(refused.json["error"]["type"], "rate_limit_error");
    assert!(
        refused.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("30 tokens")
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let to_midnight = 86_400 - now % 86_400;
    let wait = retry_after(&refused);
    assert!(wait.abs_diff(to_midnight) <= 2, "{wait} vs {to_midnight}");
    assert_eq!(mock.requests().len(), 2);
}

#[tokio::test]
async fn streamed_tokens_count_against_the_daily_limit() {
    let mock = MockUpstream::start().await;
    let s = setup(
        &[("box", &mock.endpoint(), 50, 50)],
        json!({"tokensPerDay": 15}),
        |_| {},
    )
    .await;
    mock.push(MockReply::sse(&[
        json!({"choices": [{"index": 0, "delta": {"content": "hello"}}]}),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        json!({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 6}}),
    ]));
    let mut body = anthropic_body();
    body["stream"] = json!(true);
    let streamed = s.anthropic_with(&body, None).await;
    assert_eq!(streamed.status, 200);
    let refused = s.anthropic().await;
    assert_eq!(refused.status, 429, "{}", refused.text);
}

#[tokio::test]
async fn concurrency_limit_of_a_key_is_429_with_retry_after() {
    let mock = MockUpstream::start().await;
    mock.set_responder(|_| MockReply::slow("slow answer", Duration::from_millis(1000)));
    let s = setup(
        &[("box", &mock.endpoint(), 50, 50)],
        json!({"concurrency": 1}),
        |_| {},
    )
    .await;
    let first = s.anthropic();
    let second = async {
        assert!(eventually(Duration::from_secs(5), async || mock.in_flight() == 1).await);
        (s.anthropic().await, s.openai().await)
    };
    let (first, (second, third)) = tokio::join!(first, second);
    assert_eq!(first.status, 200);
    assert_eq!(second.status, 429, "{}", second.text);
    assert_eq!(second.json["error"]["type"], "rate_limit_error");
    assert!(
        second.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 concurrent")
    );
    assert_eq!(retry_after(&second), 1);
    assert_eq!(third.status, 429);
    assert_eq!(third.json["error"]["type"], "rate_limit_exceeded");
    // The place is given back at the end of the answer.
    assert_eq!(s.anthropic().await.status, 200);
}

/// A relayd on the Redis at `redis_url`, sharing the encryption key at `key_file` (if any).
async fn redis_app(
    redis_url: &str,
    key_file: Option<std::path::PathBuf>,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    let url = redis_url.to_owned();
    TestApp::start_with(move |c| {
        c.store = url;
        c.redis_prefix = "routing-test:".to_owned();
        c.encryption_key_file = key_file;
        configure(c);
    })
    .await
}

async fn anthropic_at(base: &str, key: &str) -> Reply {
    send(
        reqwest::Client::new()
            .post(format!("{base}/v1/messages"))
            .header("x-api-key", key)
            .json(&anthropic_body()),
    )
    .await
}

#[tokio::test]
async fn two_instances_on_one_redis_share_the_concurrency_cap_and_admin_changes() {
    let redis = relayd_tests::redis_server::RedisServer::start();
    let mock = MockUpstream::start().await;
    mock.set_responder(|_| MockReply::slow("slow answer", Duration::from_millis(400)));
    let one = redis_app(&redis.url(), None, |_| {}).await;
    let two = redis_app(
        &redis.url(),
        Some(one.data_dir.path().join("encryption.key")),
        |_| {},
    )
    .await;

    // Changes made through one instance reach the other's snapshots within a second.
    let changed = Instant::now();
    one.admin()
        .create_account(&json!({
            "name": "shared", "endpoint": mock.endpoint(), "deploymentName": "d",
            "concurrency": 3, "supportedModels": [MODEL]
        }))
        .await;
    let key = one.admin().create_key(&json!({"name": "k"})).await;
    assert!(
        eventually(Duration::from_secs(1), async || {
            two.state.accounts.snapshot().accounts.len() == 1
                && two.state.keys.authenticate(Some(&key)).is_ok()
        })
        .await,
        "instance two did not see the new account and key within a second"
    );
    assert!(changed.elapsed() < Duration::from_secs(2));

    let (one_url, two_url) = (one.url(""), two.url(""));
    let requests = (0..8).flat_map(|_| [one_url.clone(), two_url.clone()]);
    let replies: Vec<Reply> = futures_util::future::join_all(requests.map(|base| {
        let key = key.clone();
        async move { anthropic_at(&base, &key).await }
    }))
    .await;
    assert!(
        replies.iter().all(|r| r.status == 200),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(mock.requests().len(), 16);
    assert_eq!(
        mock.max_in_flight(),
        3,
        "the cap holds across both instances"
    );

    // Two round trips per request (take a slot, give it back), released after the answer
    // (given back in the background: a machine loaded by parallel tests may take seconds).
    let coordinator = Arc::clone(one.state.routing.coordinator());
    assert!(
        eventually(Duration::from_secs(15), async || coordinator
            .in_flight(&account_id(&one))
            == 0)
        .await
    );
    let before = coordinator.round_trips();
    assert_eq!(anthropic_at(&one_url, &key).await.status, 200);
    assert!(
        eventually(Duration::from_secs(2), async || coordinator.round_trips()
            - before
            >= 2)
        .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        coordinator.round_trips() - before,
        2,
        "Redis round trips per request"
    );
}

/// An instance's count of an account's slots in use (its hint for picking accounts) catches up
/// with releases on other instances that nobody announces (the account was not full) within a
/// renewal period, instead of staying at what its own last release saw.
#[tokio::test]
async fn slot_counts_catch_up_with_quiet_releases_on_other_instances() {
    let redis = relayd_tests::redis_server::RedisServer::start();
    let mock = MockUpstream::start().await;
    // The first request holds its slot long enough for the second to come and go.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    mock.set_responder(move |_| {
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            MockReply::slow("slow answer", Duration::from_secs(10))
        } else {
            MockReply::text("quick answer")
        }
    });
    // Renewals (and the count refresh) every second.
    let one = redis_app(&redis.url(), None, |c| c.routing.lease_secs = 3).await;
    let two = redis_app(
        &redis.url(),
        Some(one.data_dir.path().join("encryption.key")),
        |c| c.routing.lease_secs = 3,
    )
    .await;
    one.admin()
        .create_account(&json!({
            "name": "shared", "endpoint": mock.endpoint(), "deploymentName": "d",
            "concurrency": 3, "supportedModels": [MODEL]
        }))
        .await;
    let key = one.admin().create_key(&json!({"name": "k"})).await;
    assert!(
        eventually(Duration::from_secs(5), async || {
            two.state.accounts.snapshot().accounts.len() == 1
                && two.state.keys.authenticate(Some(&key)).is_ok()
        })
        .await
    );

    let (two_url, key_two) = (two.url(""), key.clone());
    let held = tokio::spawn(async move { anthropic_at(&two_url, &key_two).await });
    assert!(eventually(Duration::from_secs(10), async || mock.requests().len() == 1).await);
    assert_eq!(anthropic_at(&one.url(""), &key).await.status, 200);
    assert_eq!(
        mock.in_flight(),
        1,
        "the first request still holds its slot"
    );
    let coordinator = Arc::clone(one.state.routing.coordinator());
    let account = account_id(&one);
    // Instance one gave its slot back while two still held one; two gives it back quietly.
    assert_eq!(held.await.unwrap().status, 200);
    assert!(
        eventually(Duration::from_secs(10), async || coordinator
            .in_flight(&account)
            == 0)
        .await,
        "instance one still counts {} slots in use",
        coordinator.in_flight(&account)
    );
}

fn account_id(app: &TestApp) -> shared::account::AccountId {
    app.state.accounts.snapshot().accounts[0].id.clone()
}

#[tokio::test]
async fn a_killed_instance_gives_its_slot_back_within_the_lease_time() {
    let redis = relayd_tests::redis_server::RedisServer::start();
    let mock = MockUpstream::start().await;
    // Long enough that only the lease expiry can free the slot.
    mock.set_responder(|_| MockReply::slow("slow answer", Duration::from_secs(30)));
    let survivor = redis_app(&redis.url(), None, |c| c.routing.lease_secs = 2).await;
    survivor
        .admin()
        .create_account(&json!({
            "name": "single", "endpoint": mock.endpoint(), "deploymentName": "d",
            "concurrency": 1, "supportedModels": [MODEL]
        }))
        .await;
    let key = survivor.admin().create_key(&json!({"name": "k"})).await;
    let victim_dir = tempfile::tempdir().unwrap();
    let key_file = survivor.data_dir.path().join("encryption.key");
    let victim = relayd_tests::daemon::Daemon::start(
        victim_dir.path(),
        &[],
        &[
            ("RELAYD_STORE", &redis.url()),
            ("RELAYD_REDIS_PREFIX", "routing-test:"),
            ("RELAYD_ENCRYPTION_KEY_FILE", key_file.to_str().unwrap()),
            ("RELAYD_ROUTING__LEASE_SECS", "2"),
        ],
    );
    let victim_url = victim.url("");
    let key_for_victim = key.clone();
    let stuck = tokio::spawn(async move { anthropic_at(&victim_url, &key_for_victim).await });
    assert!(eventually(Duration::from_secs(5), async || mock.in_flight() == 1).await);
    // Held long enough to have been renewed: a live instance keeps its slot past the lease.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(mock.requests().len(), 1);
    let survivor_url = survivor.url("");
    mock.set_responder(|_| MockReply::text("after the crash"));
    let waiting = {
        let key = key.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            (anthropic_at(&survivor_url, &key).await, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        mock.requests().len(),
        1,
        "the survivor must wait: the victim's slot is live"
    );
    let killed = Instant::now();
    victim.kill();
    stuck.abort();
    let (reply, _) = waiting.await.unwrap();
    let freed_after = killed.elapsed();
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        freed_after < Duration::from_millis(3500),
        "slot came back {freed_after:?} after the kill (lease 2 s)"
    );
}

#[tokio::test]
async fn key_limits_and_cooldowns_are_shared_through_redis() {
    let redis = relayd_tests::redis_server::RedisServer::start();
    let broken = MockUpstream::start().await;
    let healthy = MockUpstream::start().await;
    broken.set_responder(|_| MockReply::error(503, "down"));
    let one = redis_app(&redis.url(), None, |_| {}).await;
    let two = redis_app(
        &redis.url(),
        Some(one.data_dir.path().join("encryption.key")),
        |_| {},
    )
    .await;
    for (name, endpoint, priority) in [
        ("broken", broken.endpoint(), 10),
        ("healthy", healthy.endpoint(), 20),
    ] {
        one.admin()
            .create_account(&json!({
                "name": name, "endpoint": endpoint, "deploymentName": "d",
                "priority": priority, "supportedModels": [MODEL]
            }))
            .await;
    }
    let key = one
        .admin()
        .create_key(&json!({"name": "k", "limits": {"requestsPerMinute": 3}}))
        .await;
    assert!(
        eventually(Duration::from_secs(1), async || {
            two.state.accounts.snapshot().accounts.len() == 2
                && two.state.keys.authenticate(Some(&key)).is_ok()
        })
        .await
    );
    // Instance one meets the broken account and cools it down; instance two skips it.
    let reply = anthropic_at(&one.url(""), &key).await;
    assert_eq!(reply.headers["x-relay-account"], "healthy");
    assert_eq!(broken.requests().len(), 1);
    assert!(
        eventually(Duration::from_secs(1), async || {
            let status = two.admin().get("/status").await;
            status.json["accounts"]["coolingDown"] == 1
        })
        .await,
        "the cooldown did not reach instance two"
    );
    let reply = anthropic_at(&two.url(""), &key).await;
    assert_eq!(reply.headers["x-relay-account"], "healthy");
    assert_eq!(
        broken.requests().len(),
        1,
        "instance two skipped the cooling account"
    );
    // Three requests per minute across both instances: the fourth is refused by either.
    assert_eq!(anthropic_at(&one.url(""), &key).await.status, 200);
    let refused = anthropic_at(&two.url(""), &key).await;
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert_eq!(refused.json["error"]["type"], "rate_limit_error");
    assert!(retry_after(&refused) <= 60);
}

#[tokio::test]
async fn an_active_probe_ends_a_cooldown_early() {
    let flaky = MockUpstream::start().await;
    let backup = MockUpstream::start().await;
    flaky.push(MockReply::error(500, "restarting"));
    let s = setup(
        &[
            ("flaky", &flaky.endpoint(), 10, 50),
            ("backup", &backup.endpoint(), 20, 50),
        ],
        json!({}),
        |c| {
            c.routing.cooldown_server_error_secs = 600;
            c.routing.probe_interval_secs = 1;
        },
    )
    .await;
    let reply = s.anthropic().await;
    assert_eq!(reply.headers["x-relay-account"], "backup");
    // The probe's `GET /models` answers, so the flaky account is back well before 600 s.
    assert!(
        eventually(Duration::from_secs(5), async || {
            flaky.requests().iter().any(|r| r.path.ends_with("/models"))
        })
        .await,
        "no probe reached the cooled-down account"
    );
    assert!(
        eventually(Duration::from_secs(3), async || {
            s.anthropic().await.headers["x-relay-account"] == "flaky"
        })
        .await
    );
    // Without probing (the default), healthy accounts are never probed.
    assert!(
        !backup
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/models"))
    );
}
