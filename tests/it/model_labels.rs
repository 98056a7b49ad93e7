//! Client-chosen model names never become labels: a flood of distinct 16 KB names — refused
//! (404 not served, 403 not allowed, 429 over a key limit, 400 bad body) or served by a pattern
//! or the default route — leaves `/metrics`, the usage totals and the store the size a handful of
//! requests would, with every request counted under its configured entry or `other`.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};

use relayd_tests::app::TestApp;
use relayd_tests::http::{Reply, send};
use relayd_tests::mock_upstream::MockUpstream;
use serde_json::{Value, json};

const EXACT: &str = "claude-sonnet-4-5-20250929";
const PATTERN: &str = "claude-*opus*";
/// Length of each flood name: the issue's 16 KB.
const NAME_LEN: usize = 16 * 1024;

/// A random lowercase-hex string of `len` characters.
fn random_hex(len: usize) -> String {
    let state = std::collections::hash_map::RandomState::new();
    let mut out = String::with_capacity(len + 16);
    let mut counter = 0u64;
    while out.len() < len {
        let mut hasher = state.build_hasher();
        hasher.write_u64(counter);
        counter += 1;
        out.push_str(&format!("{:016x}", hasher.finish()));
    }
    out.truncate(len);
    out
}

/// A distinct long name; `unique` is its random head, used to look for it in the output.
struct FloodName {
    name: String,
    unique: String,
}

fn flood_name(prefix: &str, middle: &str) -> FloodName {
    let unique = random_hex(32);
    let name = format!("{prefix}{unique}{middle}");
    let name = format!("{name}{}", random_hex(NAME_LEN.saturating_sub(name.len())));
    FloodName { name, unique }
}

fn ask(model: &str) -> Value {
    json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
}

/// relayd under test and one HTTP client for every request (building a client loads the TLS
/// roots: a tenth of a second each in a debug build).
struct Client<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
}

impl Client<'_> {
    async fn anthropic(&self, key: &str, body: &Value) -> Reply {
        let request = self.http.post(self.app.url("/v1/messages"));
        send(request.header("x-api-key", key).json(body)).await
    }

    async fn openai(&self, key: &str, model: &str) -> Reply {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        self.openai_body(key, &body).await
    }

    async fn openai_body(&self, key: &str, body: &Value) -> Reply {
        let request = self.http.post(self.app.url("/v1/chat/completions"));
        send(request.bearer_auth(key).json(body)).await
    }

    async fn metrics(&self) -> String {
        let request = self.http.get(self.app.url("/metrics"));
        let reply = send(request.bearer_auth(&self.app.admin_token)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.text
    }
}

fn groups(report: &Value) -> BTreeSet<String> {
    report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g["group"].as_str().expect("group name").to_owned())
        .collect()
}

fn store_bytes(app: &TestApp) -> u64 {
    std::fs::metadata(app.data_dir.path().join("relayd.redb"))
        .expect("embedded store file")
        .len()
}

#[tokio::test]
async fn a_flood_of_long_random_model_names_leaves_labels_usage_and_store_bounded() {
    let mock = MockUpstream::start().await;
    let app = TestApp::start_with(|c| c.routing.default_route = vec!["fallback".to_owned()]).await;
    let admin = app.admin();
    let client = Client {
        app: &app,
        http: reqwest::Client::new(),
    };
    admin
        .create_account(&json!({"name": "box", "endpoint": mock.endpoint(),
            "deploymentName": "qwen", "supportedModels": [EXACT, PATTERN]}))
        .await;
    admin
        .create_account(&json!({"name": "fallback", "endpoint": mock.endpoint(),
            "deploymentName": "glm", "supportedModels": ["fallback-only"]}))
        .await;
    let open = admin.create_key(&json!({"name": "open"})).await;
    // Bound to `box`, so the default route is not this key's: unknown names are 404.
    let bound = admin
        .create_key(&json!({"name": "bound", "boundAccounts": ["box"]}))
        .await;
    let limited = admin
        .create_key(&json!({"name": "limited", "allowedModels": [EXACT]}))
        .await;
    let one_a_minute = admin
        .create_key(&json!({"name": "slow", "limits": {"requestsPerMinute": 1}}))
        .await;

    // Warm-up with configured names only: what a well-behaved day looks like.
    assert_eq!(client.anthropic(&open, &ask(EXACT)).await.status, 200);
    assert_eq!(
        client.anthropic(&one_a_minute, &ask(EXACT)).await.status,
        200
    );
    assert!(app.state.usage.flush_now().await);
    let metrics_before = client.metrics().await.len();
    let store_before = store_bytes(&app);

    let mut names = Vec::new();
    let mut expect = |reply: Reply, status: u16, name: FloodName| {
        assert_eq!(
            reply.status,
            status,
            "{}",
            &reply.text[..reply.text.len().min(300)]
        );
        names.push(name.unique);
    };
    const EACH: usize = 30;
    for _ in 0..EACH {
        let name = flood_name("nope-", "");
        let reply = client.anthropic(&bound, &ask(&name.name)).await;
        expect(reply, 404, name);
        let name = flood_name("fallback-", "");
        let reply = client.anthropic(&open, &ask(&name.name)).await;
        expect(reply, 200, name);
        let name = flood_name("gpt-", "");
        let reply = client.openai(&open, &name.name).await;
        expect(reply, 200, name);
        let name = flood_name("claude-", "-opus-");
        let reply = client.anthropic(&open, &ask(&name.name)).await;
        assert_eq!(reply.headers["x-relay-account"], "box");
        expect(reply, 200, name);
        let name = flood_name("claude-", "");
        let reply = client.anthropic(&limited, &ask(&name.name)).await;
        expect(reply, 403, name);
        let name = flood_name("claude-", "");
        let reply = client.anthropic(&one_a_minute, &ask(&name.name)).await;
        expect(reply, 429, name);
        // Bodies that name a model but are not valid requests: the OpenAI one is refused
        // before routing, the Anthropic one when it is translated for the chosen account.
        let name = flood_name("gpt-", "");
        let bad = json!({"model": name.name, "stream": "yes", "messages": []});
        let reply = client.openai_body(&open, &bad).await;
        expect(reply, 400, name);
        let name = flood_name("claude-", "");
        let bad = json!({"model": name.name, "max_tokens": 10, "messages": "not a list"});
        let reply = client.anthropic(&open, &bad).await;
        expect(reply, 400, name);
    }
    let requests = 2 + 8 * EACH;

    // /metrics: none of the names, one series per outcome (6.4 MB of names before the fix).
    let text = client.metrics().await;
    for unique in &names {
        assert!(
            !text.contains(unique.as_str()),
            "a client's model name became a label"
        );
    }
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("relayd_requests_total{"))
        .collect();
    let expected = [
        ("anthropic", EXACT, "box", 200, 2),
        ("anthropic", PATTERN, "box", 200, EACH),
        ("anthropic", "other", "fallback", 200, EACH),
        ("openai", "other", "fallback", 200, EACH),
        ("anthropic", "other", "", 404, EACH),
        ("anthropic", "other", "", 403, EACH),
        ("anthropic", "other", "", 429, EACH),
        ("openai", "other", "", 400, EACH),
        ("anthropic", "other", "fallback", 400, EACH),
    ];
    assert_eq!(
        series.len(),
        expected.len(),
        "request series:\n{}",
        series.join("\n")
    );
    for (protocol, model, account, status, n) in expected {
        let expected = format!(
            r#"relayd_requests_total{{protocol="{protocol}",model="{model}",account="{account}",status="{status}"}} {n}"#
        );
        assert!(
            series.contains(&expected.as_str()),
            "missing {expected}:\n{}",
            series.join("\n")
        );
    }
    let growth = text.len().saturating_sub(metrics_before);
    assert!(
        growth < 8 * 1024,
        "/metrics grew by {growth} bytes (from {metrics_before}) over {requests} requests"
    );

    // Usage: every request counted, under configured names, `other` and `(none)` only.
    assert!(app.state.usage.flush_now().await, "usage flush failed");
    let by_model = admin.get("/usage?since=1h&group_by=model").await;
    assert_eq!(by_model.status, 200);
    assert!(
        by_model.text.len() < 4096,
        "{} bytes of usage report",
        by_model.text.len()
    );
    assert_eq!(
        groups(&by_model.json),
        BTreeSet::from([EXACT.to_owned(), PATTERN.to_owned(), "other".to_owned()]),
        "{}",
        by_model.text
    );
    assert_eq!(by_model.json["total"]["requests"], requests);
    let by_account = admin.get("/usage?since=1h&group_by=account").await;
    assert_eq!(
        groups(&by_account.json),
        BTreeSet::from(["(none)".to_owned(), "box".to_owned(), "fallback".to_owned()]),
    );

    // The store holds a small record per request, not the names: 240 × 16 KB would be 3.9 MB
    // per copy (raw record, hourly and daily totals; the file grew by 66 MB before the fix).
    let store_after = store_bytes(&app);
    let store_growth = store_after.saturating_sub(store_before);
    assert!(
        store_growth < 1024 * 1024,
        "the store grew by {store_growth} bytes (from {store_before}) over {requests} requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_log_lines_cut_a_long_model_name_too() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = relayd_tests::daemon::Daemon::start(
        dir.path(),
        &[],
        &[
            ("RELAYD_LOG", "relayd=debug"),
            ("RELAYD_LOG_FORMAT", "json"),
        ],
    );
    let admin = daemon.admin();
    admin
        .create_account(&json!({"name": "box", "endpoint": mock.endpoint(),
            "deploymentName": "qwen", "supportedModels": [PATTERN]}))
        .await;
    let key = admin.create_key(&json!({"name": "k"})).await;
    let name = flood_name("claude-", "-opus-");
    let http = reqwest::Client::new();
    for (path, body) in [
        ("/v1/messages", ask(&name.name)),
        (
            "/v1/chat/completions",
            json!({"model": name.name, "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ] {
        let request = http.post(daemon.url(path)).bearer_auth(&key).json(&body);
        let reply = send(request).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
    }
    // The request line is written after the dispatch line of the same request.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lines = loop {
        let log = daemon.log();
        let lines: Vec<Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l.to_string().contains(&name.unique))
            .collect();
        if lines.len() >= 4 || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let messages: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    assert_eq!(
        messages.iter().filter(|m| **m == "dispatched").count(),
        2,
        "{messages:?}"
    );
    for line in &lines {
        let model = line["fields"]["model"].as_str().expect("model field");
        assert_eq!(model.chars().count(), 200, "{line}");
        assert!(name.name.starts_with(model));
    }
}
