//! Conversation affinity end to end: OpenAI clients without session ids kept together by their
//! prefix (and not when `prefix_affinity` is off), the load bound that stops one account from
//! taking every conversation, and moved conversations followed by every instance on one Redis —
//! including one started after the move.

use std::time::{Duration, Instant};

use relayd::config::Config;
use relayd::coordinator::AffinityKey;
use relayd_tests::app::TestApp;
use relayd_tests::http::{Reply, send};
use relayd_tests::mock_upstream::{MockReply, MockUpstream};
use serde_json::{Value, json};
use shared::account::AccountId;
use shared::key::KeyId;

const MODEL: &str = "gpt-4o";

/// Turn `turn` (from 1) of the OpenAI conversation that opened with `first`, as a client
/// without session ids resends it: everything so far.
fn turn(first: &str, turn: usize) -> Value {
    let mut messages = vec![
        json!({"role": "system", "content": "You are a careful assistant."}),
        json!({"role": "user", "content": first}),
    ];
    for n in 1..turn {
        messages.push(json!({"role": "assistant", "content": format!("answer {n}")}));
        messages.push(json!({"role": "user", "content": format!("question {}", n + 1)}));
    }
    json!({"model": MODEL, "messages": messages})
}

struct Fleet {
    app: TestApp,
    key: String,
    mocks: Vec<MockUpstream>,
}

/// One relayd with `n` equal accounts (`concurrency` each), one mock upstream per account.
async fn fleet(n: usize, concurrency: u32, configure: impl FnOnce(&mut Config)) -> Fleet {
    let app = TestApp::start_with(configure).await;
    let mut mocks = Vec::new();
    for i in 0..n {
        let mock = MockUpstream::start().await;
        app.admin()
            .create_account(&json!({
                "name": format!("replica{i}"), "endpoint": mock.endpoint(),
                "deploymentName": "d", "concurrency": concurrency,
                "supportedModels": [MODEL, "claude-sonnet-4-5-20250929"]
            }))
            .await;
        mocks.push(mock);
    }
    let key = app.admin().create_key(&json!({"name": "k"})).await;
    Fleet { app, key, mocks }
}

impl Fleet {
    async fn openai(&self, body: &Value) -> Reply {
        openai_at(&self.app, &self.key, body).await
    }

    fn key_id(&self) -> KeyId {
        key_id(&self.app, &self.key)
    }

    /// The account the rendezvous hash makes home for the conversation `body` opens.
    fn home_of(&self, body: &Value) -> String {
        let prefix = relayd::translate::prefix::openai(body.to_string().as_bytes()).unwrap();
        let conversation = AffinityKey::prefix(&self.key_id(), prefix);
        let snapshot = self.app.state.accounts.snapshot();
        snapshot
            .accounts
            .iter()
            .max_by_key(|a| conversation.rank(&a.id))
            .map(|a| a.settings.name.clone())
            .unwrap()
    }
}

async fn openai_at(app: &TestApp, key: &str, body: &Value) -> Reply {
    send(
        reqwest::Client::new()
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(body),
    )
    .await
}

fn key_id(app: &TestApp, secret: &str) -> KeyId {
    app.state
        .keys
        .authenticate(Some(secret))
        .unwrap()
        .id
        .clone()
}

fn account_id(app: &TestApp, name: &str) -> AccountId {
    let snapshot = app.state.accounts.snapshot();
    let account = snapshot.accounts.iter().find(|a| a.settings.name == name);
    account.unwrap().id.clone()
}

fn served_by(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.headers["x-relay-account"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn openai_conversations_without_session_ids_stay_on_one_account() {
    let f = fleet(3, 50, |_| {}).await;
    let mut used = std::collections::BTreeSet::new();
    for c in 0..12 {
        let first = format!("conversation {c}: plan the refactor");
        let mut accounts = Vec::new();
        for t in 1..=4 {
            accounts.push(served_by(&f.openai(&turn(&first, t)).await));
        }
        assert!(
            accounts.iter().all(|a| a == &accounts[0]),
            "conversation {c} moved between turns: {accounts:?}"
        );
        assert_eq!(accounts[0], f.home_of(&turn(&first, 1)), "its home");
        used.insert(accounts[0].clone());
    }
    // Twelve conversations over three accounts: all on one would be a 3^-11 chance.
    assert!(used.len() >= 2, "every conversation on {used:?}");
}

#[tokio::test]
async fn without_prefix_affinity_turns_spread_round_robin() {
    let f = fleet(3, 50, |c| c.routing.prefix_affinity = false).await;
    let first = "plan the refactor";
    let mut accounts = std::collections::BTreeSet::new();
    for t in 1..=6 {
        accounts.insert(served_by(&f.openai(&turn(first, t)).await));
    }
    assert_eq!(
        accounts.len(),
        3,
        "idle equal accounts take turns: {accounts:?}"
    );
}

/// Eight conversations whose home is the same account, run at once, three turns each: the
/// most any replica holds in flight, per replica.
async fn eight_at_one_home(bound: f64) -> (String, Vec<usize>) {
    let f = fleet(2, 16, |c| c.routing.affinity_load_bound = bound).await;
    for mock in &f.mocks {
        mock.set_responder(|_| MockReply::slow("ok", Duration::from_millis(400)));
    }
    let home = f.home_of(&turn("conversation 0", 1));
    let firsts: Vec<String> = (0..)
        .map(|n| format!("conversation {n}"))
        .filter(|first| f.home_of(&turn(first, 1)) == home)
        .take(8)
        .collect();
    futures_util::future::join_all(firsts.iter().map(|first| {
        let f = &f;
        async move {
            for t in 1..=3 {
                served_by(&f.openai(&turn(first, t)).await);
            }
        }
    }))
    .await;
    (
        home,
        f.mocks.iter().map(MockUpstream::max_in_flight).collect(),
    )
}

#[tokio::test]
async fn a_load_bound_keeps_one_home_from_taking_every_conversation() {
    // Concurrency 16 and a bound of a quarter: 4 above the least loaded replica.
    let (home, bounded) = eight_at_one_home(0.25).await;
    let home_index: usize = home.trim_start_matches("replica").parse().unwrap();
    assert!(
        bounded.iter().all(|&n| n <= 4 + 4),
        "share (4) + bound (4) exceeded on {home}: {bounded:?}"
    );
    assert!(bounded[1 - home_index] >= 1, "nothing spilled: {bounded:?}");
    // The same eight without a meaningful bound all stay home: the test above can fail.
    let (home, unbounded) = eight_at_one_home(100.0).await;
    let home_index: usize = home.trim_start_matches("replica").parse().unwrap();
    assert_eq!(unbounded[home_index], 8, "{unbounded:?}");
    assert_eq!(unbounded[1 - home_index], 0, "{unbounded:?}");
}

/// A relayd on the Redis at `url` with prefix `prefix`, sharing the encryption key at `key_file`.
async fn on_redis(url: &str, prefix: &str, key_file: Option<std::path::PathBuf>) -> TestApp {
    let (url, prefix) = (url.to_owned(), prefix.to_owned());
    TestApp::start_with(move |c| {
        c.store = url;
        c.redis_prefix = prefix;
        c.encryption_key_file = key_file;
    })
    .await
}

async fn with_session(app: &TestApp, key: &str, session: &str) -> Reply {
    send(
        reqwest::Client::new()
            .post(app.url("/v1/messages"))
            .header("x-api-key", key)
            .header("x-claude-code-session-id", session)
            .json(
                &json!({"model": "claude-sonnet-4-5-20250929", "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}]}),
            ),
    )
    .await
}

/// Polls `condition` until it holds or `within` passes.
async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn every_instance_on_one_redis_follows_a_moved_conversation() {
    let redis = relayd_tests::redis_server::RedisServer::start();
    let prefix = "affinity-test:";
    let one = on_redis(&redis.url(), prefix, None).await;
    let key_file = one.data_dir.path().join("encryption.key");
    let two = on_redis(&redis.url(), prefix, Some(key_file.clone())).await;
    let mut mocks = Vec::new();
    for name in ["a", "b"] {
        let mock = MockUpstream::start().await;
        one.admin()
            .create_account(&json!({
                "name": name, "endpoint": mock.endpoint(), "deploymentName": "d",
                "concurrency": 10, "supportedModels": ["claude-sonnet-4-5-20250929"]
            }))
            .await;
        mocks.push(mock);
    }
    let key = one.admin().create_key(&json!({"name": "k"})).await;
    assert!(
        eventually(Duration::from_secs(5), || {
            two.state.accounts.snapshot().accounts.len() == 2
                && two.state.keys.authenticate(Some(&key)).is_ok()
        })
        .await
    );

    // Both instances find the session's home without sharing anything.
    let home = served_by(&with_session(&one, &key, "s-1").await);
    assert_eq!(served_by(&with_session(&two, &key, "s-1").await), home);

    // Its home fails once: the session moves to the other account...
    let (home_mock, other) = if home == "a" {
        (&mocks[0], "b")
    } else {
        (&mocks[1], "a")
    };
    home_mock.push(MockReply::error(503, "down"));
    assert_eq!(served_by(&with_session(&one, &key, "s-1").await), other);
    // ...and stays there after an operator ends the home's cooldown, on either instance.
    let reset = one
        .admin()
        .post(&format!("/accounts/{home}/reset"), &json!({}))
        .await;
    assert_eq!(reset.status, 200, "{}", reset.text);
    let conversation = AffinityKey::session(&key_id(&one, &key), "s-1");
    let moved_to = |app: &TestApp| {
        let id = app.state.routing.coordinator().affinity(&conversation);
        let snapshot = app.state.accounts.snapshot();
        id.and_then(|id: AccountId| {
            snapshot
                .accounts
                .iter()
                .find(|a| a.id == id)
                .map(|a| a.settings.name.clone())
        })
    };
    assert!(
        eventually(Duration::from_secs(5), || moved_to(&two).as_deref()
            == Some(other))
        .await,
        "instance two never heard of the move"
    );
    let home_id = account_id(&two, &home);
    let coordinator = two.state.routing.coordinator();
    assert!(
        eventually(Duration::from_secs(5), || coordinator
            .cooldown(&home_id, shared::time::now_millis())
            .is_none())
        .await,
        "instance two never heard of the reset"
    );
    for _ in 0..3 {
        assert_eq!(served_by(&with_session(&two, &key, "s-1").await), other);
        assert_eq!(served_by(&with_session(&one, &key, "s-1").await), other);
    }
    // An instance started after the move reads it from Redis.
    let three = on_redis(&redis.url(), prefix, Some(key_file)).await;
    assert_eq!(moved_to(&three).as_deref(), Some(other));
    assert!(
        eventually(Duration::from_secs(5), || three
            .state
            .keys
            .authenticate(Some(&key))
            .is_ok())
        .await
    );
    assert_eq!(served_by(&with_session(&three, &key, "s-1").await), other);
    // Each request reached one upstream once; the failed one was the only retry.
    assert_eq!(mocks[0].requests().len() + mocks[1].requests().len(), 11);
}
