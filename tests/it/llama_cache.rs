//! Prompt-cache reads from a real llama.cpp server (gemma-3 270M) are counted: the same long
//! prompt sent twice is prefilled once, and the second answer's cached prompt tokens reach the
//! client's usage, the usage store (`relayctl usage`) and `/metrics`, per account.
//!
//! llama.cpp reports the reuse as `prompt_tokens_details.cached_tokens` (and `timings.cache_n`)
//! in chat completions, and as `cache_read_input_tokens` from its own Messages API. An OpenAI
//! client sees the answer as the server wrote it; an Anthropic client, translated or native, sees
//! `cache_read_input_tokens` with `input_tokens` the rest of the prompt. The totals recorded must
//! be exactly the sum of what the clients were told. One server slot (`-np 1`) and a different
//! prompt per client make each client's first request the only cold one.

use std::time::{Duration, Instant};

use relayd_tests::app::TestApp;
use relayd_tests::http::send;
use relayd_tests::llama_server::{LlamaServer, MODEL};
use serde_json::{Value, json};

use crate::relayctl::relayctl;

/// Short answers keep a 270M model on two cores quick; the prompt is what this test is about.
const MAX_TOKENS: u32 = 4;
/// How long the recorded totals may take to show a finished request (flushes are asked for).
const RECORD_DEADLINE: Duration = Duration::from_secs(30);

/// A prompt of about 1,200 tokens, distinct per `client`.
fn long_prompt(client: &str) -> String {
    let mut text = format!("This is a note for the {client} client. ");
    for i in 0..100 {
        text.push_str(&format!(
            "Line {i}: the quick brown fox jumps over the lazy dog. "
        ));
    }
    text.push_str("Say OK.");
    text
}

/// `(input, cache read, output)` as a client was told them.
type Told = (u64, u64, u64);

fn number(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// The Anthropic usage of a whole answer or, streamed, of `message_start` updated by
/// `message_delta` (whose counts are cumulative; llama.cpp's native stream gives only the output
/// count there).
fn anthropic_usage(reply_text: &str, stream: bool) -> Told {
    let usage = if stream {
        let mut usage = serde_json::Map::new();
        for event in reply_text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        {
            let counts = match event["type"].as_str() {
                Some("message_start") => &event["message"]["usage"],
                Some("message_delta") => &event["usage"],
                _ => continue,
            };
            if let Some(counts) = counts.as_object() {
                usage.extend(counts.clone());
            }
        }
        Value::Object(usage)
    } else {
        serde_json::from_str::<Value>(reply_text).expect("JSON answer")["usage"].clone()
    };
    (
        number(&usage["input_tokens"]),
        number(&usage["cache_read_input_tokens"]),
        number(&usage["output_tokens"]),
    )
}

/// The OpenAI usage of a whole answer or, streamed, of its usage chunk, checked against
/// llama.cpp's `timings` in the same object; counted as relayd counts it (input without the
/// cached part).
fn openai_usage(reply_text: &str, stream: bool) -> Told {
    let answer = if stream {
        reply_text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find(|d| d["usage"].is_object())
            .unwrap_or_else(|| panic!("no usage chunk in {reply_text}"))
    } else {
        serde_json::from_str::<Value>(reply_text).expect("JSON answer")
    };
    let usage = &answer["usage"];
    let prompt = number(&usage["prompt_tokens"]);
    let cached = number(&usage["prompt_tokens_details"]["cached_tokens"]);
    assert_eq!(
        cached,
        number(&answer["timings"]["cache_n"]),
        "cached_tokens and timings.cache_n disagree: {answer}"
    );
    (prompt - cached, cached, number(&usage["completion_tokens"]))
}

fn sum(told: &[Told]) -> Told {
    told.iter()
        .fold((0, 0, 0), |a, t| (a.0 + t.0, a.1 + t.1, a.2 + t.2))
}

/// The `relayd_tokens_total` counters of `account`, as `(input, cache_read, output)`.
fn metric_tokens(metrics: &str, account: &str) -> Told {
    let mut told = (0, 0, 0);
    let label = format!("account=\"{account}\"");
    for line in metrics.lines() {
        if !line.starts_with("relayd_tokens_total{") || !line.contains(&label) {
            continue;
        }
        let n: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad metric line {line}"));
        if line.contains("direction=\"input\"") {
            told.0 += n;
        } else if line.contains("direction=\"cache_read\"") {
            told.1 += n;
        } else if line.contains("direction=\"output\"") {
            told.2 += n;
        }
    }
    told
}

/// `relayctl usage --by account --output json`, as account → `(input, cache read, output)`.
fn relayctl_tokens(app: &TestApp) -> Vec<(String, Told)> {
    let report = relayctl(
        app,
        &[
            "--output", "json", "usage", "--by", "account", "--since", "1h",
        ],
    )
    .ok()
    .json();
    report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            let t = &g["tokens"];
            (
                g["group"].as_str().expect("group").to_owned(),
                (
                    number(&t["inputTokens"]),
                    number(&t["cacheReadTokens"]),
                    number(&t["outputTokens"]),
                ),
            )
        })
        .collect()
}

/// Three Anthropic requests for `model` with one prompt: cold, then whole and streamed; the
/// repeats must have been served (all but the last token or so) from the cache.
async fn anthropic_turns(app: &TestApp, key: &str, model: &str) -> Vec<Told> {
    let prompt = long_prompt(model);
    let client = reqwest::Client::new();
    let mut told = Vec::new();
    for (turn, stream) in [false, false, true].into_iter().enumerate() {
        let request = client
            .post(app.url("/v1/messages"))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({
                "model": model, "max_tokens": MAX_TOKENS, "stream": stream,
                "messages": [{"role": "user", "content": prompt}],
            }));
        let reply = send(request).await;
        assert_eq!(reply.status, 200, "{model} {turn}: {}", reply.text);
        told.push(anthropic_usage(&reply.text, stream));
    }
    // Anthropic's rule: input excludes the cache reads, so the prompt is their sum, the same on
    // every turn.
    let prompt_size = told[0].0 + told[0].1;
    assert!(prompt_size > 800, "{model}: prompt too short: {told:?}");
    for (turn, t) in told.iter().enumerate().skip(1) {
        assert_eq!(t.0 + t.1, prompt_size, "{model} turn {turn}: {told:?}");
        assert!(
            t.1 > prompt_size / 2,
            "{model} turn {turn} read little from the cache: {told:?}"
        );
    }
    told
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_prompt_tokens_reach_usage_relayctl_and_metrics() {
    let server = tokio::task::spawn_blocking(|| LlamaServer::start(4096))
        .await
        .expect("llama-server start");
    let app = TestApp::start_with(|c| {
        // A 270M model on two busy cores is slow at prefilling a long prompt.
        c.timeouts.first_byte_secs = 600;
        c.timeouts.idle_secs = 600;
    })
    .await;
    let admin = app.admin();
    // Anthropic clients: one account translating to chat completions, one sent to llama.cpp's
    // own Messages API (which reports `cache_read_input_tokens` itself).
    for (name, model, mode) in [
        (
            "llama-translated",
            "claude-sonnet-4-5-20250929",
            "translate",
        ),
        ("llama-native", "claude-haiku-4-5", "native"),
        ("llama-openai", "gpt-4o", "translate"),
    ] {
        admin
            .create_account(&json!({
                "name": name, "endpoint": format!("{}/v1", server.url()), "deploymentName": MODEL,
                "apiKey": "unused", "supportedModels": [model], "anthropicMode": mode,
            }))
            .await;
    }
    let key = admin.create_key(&json!({"name": "dev"})).await;
    let client = reqwest::Client::new();

    let mut anthropic = Vec::new();
    for model in ["claude-sonnet-4-5-20250929", "claude-haiku-4-5"] {
        anthropic.push(anthropic_turns(&app, &key, model).await);
    }

    // OpenAI client: the answers pass through as llama.cpp wrote them.
    let prompt = long_prompt("OpenAI");
    let mut openai = Vec::new();
    for (turn, stream) in [false, false, true].into_iter().enumerate() {
        let mut body = json!({
            "model": "gpt-4o", "max_tokens": MAX_TOKENS, "stream": stream,
            "messages": [{"role": "user", "content": prompt}],
        });
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        let request = client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body);
        let reply = send(request).await;
        assert_eq!(reply.status, 200, "openai {turn}: {}", reply.text);
        openai.push(openai_usage(&reply.text, stream));
    }
    for (turn, told) in openai.iter().enumerate().skip(1) {
        assert!(
            told.1 > told.0 && told.1 > 800,
            "turn {turn} read little from the cache: {openai:?}"
        );
    }

    // The store and the metrics count exactly what the clients were told, per account.
    let expected = vec![
        ("llama-native".to_owned(), sum(&anthropic[1])),
        ("llama-openai".to_owned(), sum(&openai)),
        ("llama-translated".to_owned(), sum(&anthropic[0])),
    ];
    let deadline = Instant::now() + RECORD_DEADLINE;
    loop {
        assert!(app.state.usage.flush_now().await, "flush failed");
        let recorded = relayctl_tokens(&app);
        if recorded == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "recorded {recorded:?}, told {expected:?}"
        );
        tokio::task::yield_now().await;
    }
    let reply = send(
        client
            .get(app.url("/metrics"))
            .bearer_auth(&app.admin_token),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    for (account, told) in &expected {
        assert_eq!(metric_tokens(&reply.text, account), *told, "{account}");
    }
}
