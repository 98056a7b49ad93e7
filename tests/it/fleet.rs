//! A fleet with real parts: two real llama.cpp servers as two accounts of one model, two relayd
//! instances on one Redis, and clients that alternate instances on every request. Four
//! conversations of five turns share a ~2k-token system prompt and open with distinct first
//! messages; two are Anthropic clients sending a session id, two OpenAI clients sending none.
//!
//! Most of each prompt is shared by every conversation, so both replicas soon hold it; what
//! affinity decides is whether a conversation's own part (its opening module, its turns) is
//! found in the cache of the replica the next turn reaches.
//!
//! Measured twice in the same run, on fresh servers each time: with conversation affinity (the
//! default) and without it (no session ids sent, `prefix_affinity = false`: requests take
//! turns). Each time the servers' own counters (`llamacpp:prompt_tokens_cached_total` and
//! `llamacpp:prompt_tokens_total`, which excludes cached tokens) give the share of prompt tokens
//! served from cache, printed for the record. With affinity, turns 2–5 of every conversation must
//! reach the replica of its turn 1 (the issue asks for ≥ 95%; with 16 such turns that is all of
//! them), and most prompt tokens must come from cache.

use std::collections::HashMap;
use std::time::Duration;

use relayd_tests::app::TestApp;
use relayd_tests::http::{Reply, send};
use relayd_tests::llama_server::{LlamaServer, MODEL as SERVED};
use relayd_tests::redis_server::RedisServer;
use serde_json::{Value, json};

const MODEL: &str = "claude-sonnet-4-5-20250929";
const TURNS: usize = 5;
const CONVERSATIONS: usize = 4;

/// About 2,000 tokens of house rules every conversation starts with.
fn system_prompt() -> String {
    let rule = "Rule: keep functions short, name things for what they mean, test what you change, \
                and explain why in comments rather than what. ";
    (0..60)
        .map(|n| format!("{n}. {rule}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first message of conversation `c`: a request about a module of its own, about 600
/// tokens that only this conversation's later turns can find in a cache.
fn opening(c: usize) -> String {
    let lines: Vec<String> = (0..40)
        .map(|n| {
            format!(
                "fn step_{c}_{n}(input: u32) -> u32 {{ input * {} + {n} }}",
                c + 2
            )
        })
        .collect();
    format!(
        "Conversation {c}: review module number {c} for naming.\n{}",
        lines.join("\n")
    )
}

/// One client conversation: its protocol, its opening, and the turns so far.
struct Conversation {
    anthropic: bool,
    session: Option<String>,
    first: String,
    /// (assistant answer, next question) pairs after the first message.
    history: Vec<(String, String)>,
}

impl Conversation {
    fn body(&self, system: &str) -> Value {
        let mut messages = vec![json!({"role": "user", "content": self.first})];
        for (answer, question) in &self.history {
            messages.push(json!({"role": "assistant", "content": answer}));
            messages.push(json!({"role": "user", "content": question}));
        }
        if self.anthropic {
            json!({"model": MODEL, "max_tokens": 8, "temperature": 0, "system": system,
                   "messages": messages})
        } else {
            messages.insert(0, json!({"role": "system", "content": system}));
            json!({"model": MODEL, "max_tokens": 8, "temperature": 0, "messages": messages})
        }
    }

    async fn send(&self, app: &TestApp, key: &str, system: &str) -> Reply {
        let client = reqwest::Client::new();
        let request = if self.anthropic {
            let mut r = client
                .post(app.url("/v1/messages"))
                .header("x-api-key", key)
                .json(&self.body(system));
            if let Some(session) = &self.session {
                r = r.header("x-claude-code-session-id", session);
            }
            r
        } else {
            client
                .post(app.url("/v1/chat/completions"))
                .bearer_auth(key)
                .json(&self.body(system))
        };
        send(request.timeout(Duration::from_secs(300))).await
    }

    fn answer_of(&self, reply: &Reply) -> String {
        let text = if self.anthropic {
            &reply.json["content"][0]["text"]
        } else {
            &reply.json["choices"][0]["message"]["content"]
        };
        text.as_str().unwrap_or_default().to_owned()
    }
}

/// A server's prompt counters: (cached, processed).
async fn counters(server: &LlamaServer) -> (f64, f64) {
    let text = reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let read = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    (
        read("llamacpp:prompt_tokens_cached_total"),
        read("llamacpp:prompt_tokens_total"),
    )
}

/// What one run measured.
struct Run {
    /// Share of prompt tokens served from the servers' caches.
    cached_share: f64,
    /// Turns 2–5 that reached the replica of their conversation's turn 1, and all of them.
    same_replica: (usize, usize),
}

async fn run(affinity: bool) -> Run {
    let servers = [
        LlamaServer::start_with(16_384, 4, &["--metrics"]),
        LlamaServer::start_with(16_384, 4, &["--metrics"]),
    ];
    let redis = RedisServer::start();
    let start = |key_file: Option<std::path::PathBuf>| {
        let url = redis.url();
        TestApp::start_with(move |c| {
            c.store = url;
            c.redis_prefix = "fleet-test:".to_owned();
            c.encryption_key_file = key_file;
            c.routing.prefix_affinity = affinity;
            // Room for every conversation at its home: this run is about affinity, the load
            // bound has its own test (`affinity.rs`).
            c.routing.affinity_load_bound = 1.0;
        })
    };
    let one = start(None).await;
    let two = start(Some(one.data_dir.path().join("encryption.key"))).await;
    for (i, server) in servers.iter().enumerate() {
        one.admin()
            .create_account(&json!({
                "name": format!("replica{i}"), "endpoint": format!("{}/v1", server.url()),
                // Twice the conversations: all four may share a home, and with Redis a turn's
                // slot is given back in the background, so the next turn (sent as soon as the
                // answer is read) can still find the previous lease there. A full home would
                // move the conversation, which is right for a full server and not what this
                // test is about.
                "deploymentName": SERVED, "concurrency": 8, "supportedModels": [MODEL]
            }))
            .await;
    }
    let key = one.admin().create_key(&json!({"name": "fleet"})).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while two.state.keys.authenticate(Some(&key)).is_err()
        || two.state.accounts.snapshot().accounts.len() < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "instance two never synced"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = [counters(&servers[0]).await, counters(&servers[1]).await];
    let system = system_prompt();
    let instances = [&one, &two];
    let replicas: Vec<Vec<String>> = futures_util::future::join_all((0..CONVERSATIONS).map(|c| {
        let (system, key) = (&system, &key);
        async move {
            let mut conversation = Conversation {
                anthropic: c % 2 == 0,
                session: (affinity && c % 2 == 0).then(|| format!("session-{c}")),
                first: opening(c),
                history: Vec::new(),
            };
            let mut served = Vec::new();
            for t in 0..TURNS {
                // Every request goes to the other instance than the one before.
                let app = instances[(c + t) % 2];
                let reply = conversation.send(app, key, system).await;
                assert_eq!(
                    reply.status, 200,
                    "conversation {c} turn {t}: {}",
                    reply.text
                );
                served.push(
                    reply.headers["x-relay-account"]
                        .to_str()
                        .unwrap()
                        .to_owned(),
                );
                let answer = conversation.answer_of(&reply);
                conversation
                    .history
                    .push((answer, format!("And what about part {}?", t + 2)));
            }
            served
        }
    }))
    .await;
    let after = [counters(&servers[0]).await, counters(&servers[1]).await];
    let (mut cached, mut processed) = (0.0, 0.0);
    for (b, a) in before.iter().zip(&after) {
        cached += a.0 - b.0;
        processed += a.1 - b.1;
    }
    let mut same = 0;
    let mut later = 0;
    let mut per_replica: HashMap<&str, usize> = HashMap::new();
    for served in &replicas {
        for account in served {
            *per_replica.entry(account).or_default() += 1;
        }
        later += served.len() - 1;
        same += served[1..].iter().filter(|a| **a == served[0]).count();
    }
    eprintln!(
        "fleet (affinity {}): cached {cached} of {} prompt tokens ({:.1}%); turns 2-5 on the replica of turn 1: {same}/{later}; requests per replica {per_replica:?}; conversations {replicas:?}",
        if affinity { "on" } else { "off" },
        cached + processed,
        100.0 * cached / (cached + processed)
    );
    Run {
        cached_share: cached / (cached + processed),
        same_replica: (same, later),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_stay_on_their_replica_across_instances_and_hit_its_cache() {
    let on = run(true).await;
    let off = run(false).await;
    let (same, all) = on.same_replica;
    assert!(
        same * 100 >= all * 95,
        "only {same} of {all} later turns reached the replica of turn 1"
    );
    // The shares are reported side by side; which is higher also depends on how llama.cpp
    // hands out its slots, which timing on a loaded machine changes (without affinity, turn
    // N+2 still extends turn N on the same replica). What affinity must give is a mostly
    // cached prompt: every later turn extends its previous one on the same server.
    eprintln!(
        "cached share of prompt tokens: {:.1}% with affinity, {:.1}% without",
        on.cached_share * 100.0,
        off.cached_share * 100.0
    );
    assert!(
        on.cached_share >= 0.5,
        "with affinity most prompt tokens should come from cache: {:.3} on, {:.3} off",
        on.cached_share,
        off.cached_share
    );
}
