//! When accounts are probed and what is kept: a probe after create runs in the background (the
//! admin call answers first), its profile shows in the admin API and `relayctl accounts show`
//! with each value's source, `accounts probe --all` re-probes, a failing probe leaves the
//! account enabled and routable, and the profile survives a restart.

use std::time::{Duration, Instant};

use relayd_tests::app::TestApp;
use relayd_tests::daemon::Daemon;
use relayd_tests::family_mock::FamilyMock;
use relayd_tests::mock_upstream::MockUpstream;
use serde_json::{Value, json};

use crate::relayctl::relayctl;

/// The encryption key both instances share.
const KEY: &str = "5d41402abc4b2a76b9719d911017c5925d41402abc4b2a76b9719d911017c592";

/// Polls the account until it carries a profile, failing after `within`.
async fn profile_of(app: &TestApp, name: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let reply = app.admin().get(&format!("/accounts/{name}")).await;
        if !reply.json["profile"].is_null() {
            return reply.json;
        }
        assert!(
            Instant::now() < deadline,
            "no profile for {name}: {reply:?}"
        );
        // Polling an admin read, not waiting for an event the test could miss.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn probing_app() -> TestApp {
    TestApp::start_with(|c| c.upstream.probe_profiles = true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_account_is_probed_in_the_background_and_shown_with_sources() {
    let vllm = FamilyMock::start("vllm").await;
    let app = probing_app().await;
    let started = Instant::now();
    let created = app
        .admin()
        .post(
            "/accounts",
            &json!({"name": "gpu", "endpoint": vllm.url(), "deploymentName": vllm.deployment(),
                    "supportedModels": ["claude-sonnet-4-5-20250929"]}),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert!(
        created.json["profile"].is_null(),
        "the create answered before any probe"
    );
    let account = profile_of(&app, "gpu", Duration::from_secs(60)).await;
    let expected = vllm.expected();
    assert_eq!(account["profile"]["family"], "vllm", "{account}");
    assert_eq!(
        account["profile"]["contextWindow"],
        expected["contextWindow"]
    );
    assert_eq!(account["resolved"]["contextWindow"]["source"], "detected");
    println!("probe after create took {:?}", started.elapsed());

    // relayctl shows the profile and where each value came from.
    let shown = relayctl(&app, &["accounts", "show", "gpu"]).ok();
    let window = expected["contextWindow"].as_u64().unwrap().to_string();
    assert!(
        shown.stdout.contains(&format!("{window} (detected)")),
        "{shown:#?}"
    );
    assert!(shown.stdout.contains("vllm"), "{shown:#?}");

    // An explicit window wins, and says so.
    let patched = app
        .admin()
        .patch("/accounts/gpu", &json!({"contextWindow": 8192}))
        .await;
    assert_eq!(patched.json["resolved"]["contextWindow"]["value"], 8192);
    assert_eq!(patched.json["resolved"]["contextWindow"]["source"], "set");
    // The routing table carries the window relayctl env reads.
    let table = app.admin().get("/models").await;
    assert!(
        table.text.contains("\"contextWindow\":8192"),
        "{}",
        table.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_probe_never_holds_up_the_admin_call() {
    // An upstream that never answers: the probe waits out its budgets, the create does not.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/v1", silent.local_addr().unwrap());
    let app = probing_app().await;
    let started = Instant::now();
    let created = app
        .admin()
        .post(
            "/accounts",
            &json!({"name": "slow", "endpoint": endpoint, "deploymentName": "m"}),
        )
        .await;
    assert_eq!(created.status, 201);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the create waited for the probe: {:?}",
        started.elapsed()
    );
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_probe_leaves_the_account_enabled_and_routable() {
    // A plain mock answers the relay but none of the probe's self-descriptions.
    let mock = MockUpstream::start().await;
    let app = probing_app().await;
    app.admin()
        .create_account(&json!({"name": "plain", "endpoint": mock.endpoint(),
            "deploymentName": "d", "supportedModels": ["gpt-4o"]}))
        .await;
    let account = profile_of(&app, "plain", Duration::from_secs(60)).await;
    assert_eq!(account["profile"]["family"], "unknown", "{account}");
    assert_eq!(account["enabled"], true);
    let key = app.admin().create_key(&json!({"name": "k"})).await;
    let reply = relayd_tests::http::send(
        reqwest::Client::new()
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_all_probes_every_account_with_progress() {
    let llama = FamilyMock::start("llamacpp").await;
    let tgi = FamilyMock::start("tgi").await;
    // Probing off: only the explicit probes run.
    let app = TestApp::start().await;
    for (name, mock) in [("llama", &llama), ("tgi", &tgi)] {
        app.admin()
            .create_account(&json!({"name": name, "endpoint": mock.url(),
                "deploymentName": mock.deployment()}))
            .await;
    }
    assert!(app.admin().get("/accounts/llama").await.json["profile"].is_null());
    let run = relayctl(&app, &["--output", "json", "accounts", "probe", "--all"]).ok();
    let probed = run.json();
    let families: Vec<&str> = probed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["profile"]["family"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(families, ["llama-cpp", "tgi"], "{probed}");
    assert!(run.stderr.contains("[1/2] llama: probing"), "{run:#?}");
    let one = relayctl(&app, &["accounts", "probe", "tgi"]).ok();
    assert!(one.stdout.contains("tgi"), "{one:#?}");
    let missing = relayctl(&app, &["accounts", "probe", "nope"]).failed(1);
    assert!(missing.stderr.contains("nope"), "{missing:#?}");
}

/// Polls `admin` until account `name` carries `profile`.
async fn until_profile(admin: &relayd_tests::http::Admin, name: &str, profile: &Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = admin.get(&format!("/accounts/{name}")).await;
        if reply.json["profile"] == *profile {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never showed {profile}: {reply:?}"
        );
        // Polling an admin read: the other instance reloads on its own schedule.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_is_seen_by_every_instance_and_kept_across_restarts() {
    let llama = FamilyMock::start("llamacpp").await;
    let redis = relayd_tests::redis_server::RedisServer::start();
    let url = redis.url();
    let args = ["--store", url.as_str()];
    let envs = [
        ("RELAYD_ENCRYPTION_KEY", KEY),
        ("RELAYD_REDIS_PREFIX", "profiles:"),
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Daemon::start(dir_a.path(), &args, &envs);
    let b = Daemon::start(dir_b.path(), &args, &envs);
    a.admin()
        .create_account(&json!({"name": "llama", "endpoint": llama.url(),
            "deploymentName": llama.deployment()}))
        .await;
    let probed = a.admin().post("/accounts/llama/probe", &json!({})).await;
    assert_eq!(probed.status, 200, "{probed:?}");
    let profile = probed.json["profile"].clone();
    assert_eq!(profile["family"], "llama-cpp", "{profile}");
    until_profile(&b.admin(), "llama", &profile).await;

    a.kill();
    let a = Daemon::start(dir_a.path(), &args, &envs);
    until_profile(&a.admin(), "llama", &profile).await;
}
