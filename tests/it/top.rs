//! The live view: `GET /admin/v1/snapshot` (states, slots, counters, tokens today, and how long
//! it takes with many accounts and keys) and `relayctl top` — driven under a real
//! pseudo-terminal against a running relayd with a slow and a failing upstream, and without a
//! terminal, where it refuses or prints one snapshot.

use std::time::{Duration, Instant};

use relayd_tests::app::TestApp;
use relayd_tests::daemon::binary;
use relayd_tests::family_mock::FamilyMock;
use relayd_tests::http::{Admin, Reply, send};
use relayd_tests::mock_upstream::{MockReply, MockUpstream};
use relayd_tests::redis_server::RedisServer;
use relayd_tests::terminal::Terminal;
use serde_json::{Value, json};

use crate::relayctl::relayctl;

async fn ask(app: &TestApp, key: &str, model: &str) -> Reply {
    let body = json!({"model": model, "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}]});
    let request = reqwest::Client::new()
        .post(app.url("/v1/messages"))
        .header("x-api-key", key);
    send(request.json(&body)).await
}

async fn add_account(admin: &Admin, name: &str, endpoint: &str, model: &str, concurrency: u32) {
    admin
        .create_account(
            &json!({"name": name, "endpoint": endpoint, "deploymentName": "d",
            "supportedModels": [model], "concurrency": concurrency}),
        )
        .await;
}

async fn snapshot(admin: &Admin) -> Value {
    let reply = admin.get("/snapshot").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json
}

fn entry<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .expect("a list")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing from {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_reports_states_slots_counters_and_tokens_today() {
    let fast = MockUpstream::start().await;
    let slow = MockUpstream::start().await;
    slow.set_responder(|_| MockReply::slow("slow answer", Duration::from_secs(3)));
    let failing = MockUpstream::start().await;
    failing.set_responder(|_| MockReply::error(500, "boom"));
    let app = TestApp::start().await;
    let admin = app.admin();
    add_account(&admin, "fast", &fast.endpoint(), "m-fast", 4).await;
    add_account(&admin, "slow", &slow.endpoint(), "m-slow", 1).await;
    add_account(&admin, "failing", &failing.endpoint(), "m-fail", 4).await;
    add_account(&admin, "off", &fast.endpoint(), "m-off", 4).await;
    assert_eq!(
        admin.post("/accounts/off/disable", &json!({})).await.status,
        200
    );
    let limited = admin
        .create_key(&json!({"name": "limited", "limits": {"tokensPerDay": 1000}}))
        .await;
    let open = admin.create_key(&json!({"name": "open"})).await;
    let gone = admin.post("/keys", &json!({"name": "gone"})).await;
    let gone_id = gone.json["key"]["id"].as_str().expect("key id").to_owned();
    let revoked = admin
        .post(&format!("/keys/{gone_id}/revoke"), &json!({}))
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);

    let empty = snapshot(&admin).await;
    assert_eq!(entry(&empty["accounts"], "fast")["requests"], 0);
    assert_eq!(entry(&empty["accounts"], "off")["state"], "disabled");

    assert_eq!(ask(&app, &limited, "m-fast").await.status, 200);
    assert_eq!(ask(&app, &open, "m-fast").await.status, 200);
    assert_eq!(ask(&app, &open, "m-fail").await.status, 502);
    // While a request holds the only slot of `slow`, it is full.
    let held = {
        let (app_url, key) = (app.url("/v1/messages"), open.clone());
        tokio::spawn(async move {
            let body = json!({"model": "m-slow", "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}]});
            send(
                reqwest::Client::new()
                    .post(app_url)
                    .header("x-api-key", key)
                    .json(&body),
            )
            .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let during = loop {
        let now = snapshot(&admin).await;
        if entry(&now["accounts"], "slow")["inFlight"] == 1 || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let busy = entry(&during["accounts"], "slow");
    assert_eq!(busy["inFlight"], 1, "{busy}");
    assert_eq!(busy["state"], "full", "{busy}");
    assert_eq!(during["server"]["inFlight"], 1, "{during}");
    assert_eq!(held.await.expect("request task").status, 200);
    assert!(app.state.usage.flush_now().await);

    let s = snapshot(&admin).await;
    assert_eq!(s["server"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["server"]["store"], "embedded");
    assert_eq!(s["server"]["inFlight"], 0);
    assert_eq!(s["server"]["queueDepth"], 0);
    assert!(s["at"].as_i64().expect("at") >= during["at"].as_i64().expect("at"));
    let bounds = s["ttfbBounds"].as_array().expect("bounds").len();
    assert_eq!(bounds, 14);
    let names: Vec<&str> = s["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .map(|a| a["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["failing", "fast", "off", "slow"], "ordered by name");

    let fast_entry = entry(&s["accounts"], "fast");
    assert_eq!(fast_entry["state"], "ok");
    assert_eq!(fast_entry["inFlight"], 0);
    assert_eq!(fast_entry["concurrency"], 4);
    assert_eq!(fast_entry["requests"], 2);
    assert_eq!(fast_entry["errors"], 0);
    assert_eq!(fast_entry["tokens"]["inputTokens"], 22);
    assert_eq!(fast_entry["tokens"]["outputTokens"], 14);
    assert_eq!(fast_entry["ttfb"]["count"], 2);
    assert_eq!(
        fast_entry["ttfb"]["buckets"]
            .as_array()
            .expect("buckets")
            .len(),
        bounds
    );
    assert!(fast_entry["latencySecondsTotal"].as_f64().expect("latency") > 0.0);

    let failing_entry = entry(&s["accounts"], "failing");
    assert_eq!(failing_entry["state"], "coolingDown", "{failing_entry}");
    assert_eq!(failing_entry["reason"], "HTTP 500");
    assert!(failing_entry["until"].as_i64().expect("until") > s["at"].as_i64().expect("at"));
    assert_eq!(failing_entry["requests"], 1);
    assert_eq!(failing_entry["errors"], 1);
    assert_eq!(failing_entry["failedAttempts"], 1);
    assert_eq!(failing_entry["ttfb"]["count"], 0, "no 2xx answer");

    let slow_entry = entry(&s["accounts"], "slow");
    assert_eq!(
        (
            slow_entry["state"].as_str(),
            slow_entry["inFlight"].as_u64()
        ),
        (Some("ok"), Some(0))
    );
    assert!(slow_entry["latencySecondsTotal"].as_f64().expect("latency") >= 3.0);

    let keys: Vec<&str> = s["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        keys,
        ["limited", "open"],
        "oldest first, the revoked key left out"
    );
    let limited_entry = entry(&s["keys"], "limited");
    assert_eq!(limited_entry["state"], "active");
    assert_eq!(limited_entry["requests"], 1);
    assert_eq!(limited_entry["tokensToday"], 18, "the tokensPerDay counter");
    assert_eq!(limited_entry["tokensPerDay"], 1000);
    let open_entry = entry(&s["keys"], "open");
    assert_eq!(
        (
            open_entry["requests"].as_u64(),
            open_entry["errors"].as_u64()
        ),
        (Some(3), Some(1))
    );
    assert_eq!(open_entry["tokensToday"], 36, "the usage totals");
    assert!(open_entry.get("tokensPerDay").is_none(), "{open_entry}");

    let anonymous = send(reqwest::Client::new().get(app.url("/admin/v1/snapshot"))).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text);
    assert_eq!(
        anonymous.json["error"]["code"], "unauthenticated",
        "{}",
        anonymous.text
    );
}

/// Sequential snapshot calls against `app`, after it served a few requests: (p50, p99).
async fn snapshot_latency(app: &TestApp, calls: usize) -> (Duration, Duration) {
    let admin = app.admin();
    snapshot(&admin).await;
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        let reply = admin.get("/snapshot").await;
        times.push(started.elapsed());
        assert_eq!(reply.status, 200);
    }
    times.sort();
    (times[calls / 2], times[calls * 99 / 100])
}

/// 20 accounts and 20 keys (half of them with `tokensPerDay`, which the snapshot reads from the
/// coordinator; the others from the usage totals), each key used once.
async fn populate(app: &TestApp, mock: &MockUpstream) {
    let admin = app.admin();
    for i in 0..20 {
        add_account(
            &admin,
            &format!("box{i:02}"),
            &mock.endpoint(),
            &format!("m{i}"),
            8,
        )
        .await;
    }
    for i in 0..20 {
        let limits = if i % 2 == 0 {
            json!({"tokensPerDay": 100_000})
        } else {
            json!({})
        };
        let key = admin
            .create_key(&json!({"name": format!("key{i:02}"), "limits": limits}))
            .await;
        assert_eq!(ask(app, &key, &format!("m{i}")).await.status, 200);
    }
    assert!(app.state.usage.flush_now().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_latency_with_20_accounts_and_20_keys() {
    let mock = MockUpstream::start().await;
    let embedded = TestApp::start().await;
    populate(&embedded, &mock).await;
    let (p50, p99) = snapshot_latency(&embedded, 100).await;
    eprintln!("snapshot latency, embedded store, 100 calls: p50 {p50:?}, p99 {p99:?}");
    let redis = RedisServer::start();
    let url = redis.url();
    let shared = TestApp::start_with(move |c| {
        c.store = url;
        c.redis_prefix = "top-test:".to_owned();
    })
    .await;
    populate(&shared, &mock).await;
    let (redis_p50, redis_p99) = snapshot_latency(&shared, 100).await;
    eprintln!("snapshot latency, Redis store, 100 calls: p50 {redis_p50:?}, p99 {redis_p99:?}");
    // Generous bounds for a debug build on a shared machine: this guards against a snapshot
    // that grew a per-account or per-key store round trip each, not against noise.
    for (store, p50) in [("embedded", p50), ("redis", redis_p50)] {
        assert!(p50 < Duration::from_millis(100), "{store}: p50 {p50:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_without_a_terminal_refuses_or_prints_one_snapshot() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    add_account(&app.admin(), "box", &mock.endpoint(), "m", 3).await;
    // A vLLM, probed: its server family and context window are shown beside the counters.
    let vllm = FamilyMock::start("vllm").await;
    app.admin()
        .create_account(&json!({"name": "gpu", "endpoint": vllm.url(),
            "deploymentName": vllm.deployment(), "supportedModels": ["g"]}))
        .await;
    let probed = app.admin().post("/accounts/gpu/probe", &json!({})).await;
    assert_eq!(probed.status, 200, "{}", probed.text);
    let key = app
        .admin()
        .create_key(&json!({"name": "alice", "limits": {"tokensPerDay": 500}}))
        .await;
    assert_eq!(ask(&app, &key, "m").await.status, 200);

    let refused = relayctl(&app, &["top"]).failed(2);
    assert!(refused.stderr.contains("needs a terminal"), "{refused:#?}");
    assert!(refused.stderr.contains("--once"), "{refused:#?}");
    assert!(refused.stdout.is_empty(), "{refused:#?}");
    let json_live = relayctl(&app, &["--output", "json", "top"]).failed(2);
    assert!(json_live.stderr.contains("--once"), "{json_live:#?}");
    let bad = relayctl(&app, &["top", "--interval", "0"]);
    assert_eq!(bad.code, Some(2), "{bad:#?}");

    let text = relayctl(&app, &["top", "--once"]).ok();
    let row = text
        .stdout
        .lines()
        .find(|l| l.contains(" box "))
        .unwrap_or_else(|| panic!("no account row: {text:#?}"));
    assert!(row.contains(" ok "), "{row}");
    assert!(row.contains("0/3"), "{row}");
    assert!(row.contains(" - "), "not probed: {row}");
    let gpu_row = text
        .stdout
        .lines()
        .find(|l| l.contains(" gpu "))
        .unwrap_or_else(|| panic!("no gpu row: {text:#?}"));
    assert!(gpu_row.contains("vllm 32768"), "{gpu_row}");
    let key_row = text
        .stdout
        .lines()
        .find(|l| l.contains(" alice "))
        .unwrap_or_else(|| panic!("no key row: {text:#?}"));
    assert!(key_row.contains("18 / 500 (4%)"), "{key_row}");

    let json = relayctl(&app, &["--output", "json", "top", "--once"])
        .ok()
        .json();
    assert_eq!(entry(&json["accounts"], "box")["requests"], 1, "{json}");
    assert_eq!(entry(&json["keys"], "alice")["tokensToday"], 18, "{json}");
    let gpu = entry(&json["accounts"], "gpu");
    assert_eq!(
        (&gpu["family"], &gpu["contextWindow"]),
        (&json!("vllm"), &json!(32768))
    );
    assert!(
        entry(&json["accounts"], "box").get("family").is_none(),
        "{json}"
    );
}

/// The line of the account table whose first word is `name`.
fn row<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
}

/// The seconds left in `cooling 12s (…)` on `name`'s row, when it shows one.
fn countdown(screen: &str, name: &str) -> Option<u64> {
    let rest = row(screen, name)?.split("cooling ").nth(1)?;
    rest.split('s').next()?.parse().ok()
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_on_a_terminal_follows_slots_and_cooldowns_and_q_restores_the_terminal() {
    let slow = MockUpstream::start().await;
    slow.set_responder(|_| MockReply::slow("slow answer", Duration::from_secs(3)));
    let failing = MockUpstream::start().await;
    failing.set_responder(|_| MockReply::error(500, "boom"));
    let app = TestApp::start_with(|c| c.routing.cooldown_server_error_secs = 30).await;
    let admin = app.admin();
    add_account(&admin, "slow", &slow.endpoint(), "m-slow", 4).await;
    add_account(&admin, "failing", &failing.endpoint(), "m-fail", 2).await;
    let key = admin.create_key(&json!({"name": "alice"})).await;
    let server = app.url("");
    let mut term = Terminal::spawn(
        &binary("relayctl"),
        &[
            "--server",
            &server,
            "--token",
            &app.admin_token,
            "top",
            "--interval",
            "0.2",
        ],
        30,
        120,
    );
    let wait = Duration::from_secs(15);

    // The key row is part of the condition: the terminal may be read between the
    // account panel and the key panel of one frame.
    term.wait_for(wait, "both accounts, idle, and the key", |s| {
        row(s, "slow").is_some_and(|r| r.contains(" ok ") && r.contains("0/4"))
            && row(s, "failing").is_some_and(|r| r.contains(" ok ") && r.contains("0/2"))
            && s.contains("alice")
    });
    assert!(
        term.state().alternate_screen(),
        "drawn on the alternate screen"
    );
    assert!(term.state().hide_cursor());

    // A request against the slow upstream holds a slot while it runs, then gives it back.
    let running = {
        let (url, key) = (app.url("/v1/messages"), key.clone());
        tokio::spawn(async move {
            let body = json!({"model": "m-slow", "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}]});
            send(
                reqwest::Client::new()
                    .post(url)
                    .header("x-api-key", key)
                    .json(&body),
            )
            .await
        })
    };
    term.wait_for(wait, "one request in flight on slow", |s| {
        row(s, "slow").is_some_and(|r| r.contains("1/4"))
    });
    assert_eq!(running.await.expect("request task").status, 200);
    term.wait_for(wait, "slow back to 0 in flight", |s| {
        row(s, "slow").is_some_and(|r| r.contains("0/4"))
    });

    // A 500 cools `failing` down: its row counts the seconds left.
    assert_eq!(ask(&app, &key, "m-fail").await.status, 502);
    let screen = term.wait_for(wait, "failing cooling down after HTTP 500", |s| {
        countdown(s, "failing").is_some()
            && row(s, "failing").is_some_and(|r| r.contains("(HTTP 500)"))
    });
    let first = countdown(&screen, "failing").expect("countdown");
    assert!((1..=30).contains(&first), "{screen}");
    term.wait_for(wait, "the countdown going down", |s| {
        countdown(s, "failing").is_some_and(|left| left < first)
    });

    // `q` quits with status 0 and leaves the terminal as it found it.
    term.send("q");
    let status = term.finish(wait);
    assert!(status.success(), "{status}; screen:\n{}", term.screen());
    let output = String::from_utf8_lossy(term.output()).into_owned();
    let entered = output
        .rfind("\u{1b}[?1049h")
        .expect("entered the alternate screen");
    let left = output
        .rfind("\u{1b}[?1049l")
        .expect("left the alternate screen");
    assert!(left > entered, "left after entering");
    assert!(
        output[left..].contains("\u{1b}[?25h") || output[entered..left].contains("\u{1b}[?25h")
    );
    assert!(
        !term.state().alternate_screen(),
        "back on the normal screen"
    );
    assert!(!term.state().hide_cursor(), "the cursor is shown again");
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_keeps_retrying_through_a_lost_connection_and_ctrl_c_restores_the_terminal() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start().await;
    add_account(&app.admin(), "box", &mock.endpoint(), "m", 2).await;
    let (addr, state) = (app.addr, app.state.clone());
    let server = app.url("");
    let mut term = Terminal::spawn(
        &binary("relayctl"),
        &[
            "--server",
            &server,
            "--token",
            &app.admin_token,
            "top",
            "--interval",
            "0.2",
        ],
        24,
        120,
    );
    let wait = Duration::from_secs(15);
    term.wait_for(wait, "the account", |s| row(s, "box").is_some());

    // relayd goes away: a banner over the last figures.
    drop(app);
    // Both in one condition: a frame may be read half drawn.
    term.wait_for(
        wait,
        "the connection-lost banner over the last figures",
        |s| s.contains("connection lost, retrying every 0.2s") && row(s, "box").is_some(),
    );

    // It comes back on the same address: the banner goes, the figures are live again.
    let deadline = Instant::now() + wait;
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(e) if Instant::now() < deadline => {
                eprintln!("rebinding {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot listen on {addr} again: {e}"),
        }
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(relayd::server::serve(listener, state, async {
        let _ = stopped.await;
    }));
    term.wait_for(wait, "the banner gone", |s| {
        !s.contains("connection lost") && row(s, "box").is_some()
    });

    // Ctrl-C (a key in raw mode) quits like `q`.
    term.send("\u{3}");
    let status = term.finish(wait);
    assert!(status.success(), "{status}; screen:\n{}", term.screen());
    assert!(
        !term.state().alternate_screen(),
        "back on the normal screen"
    );
    assert!(!term.state().hide_cursor(), "the cursor is shown again");
    let _ = stop.send(());
}
