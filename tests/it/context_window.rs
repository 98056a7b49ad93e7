//! Context windows: what relayctl tells Claude Code about them (`relayctl env`), and — with a
//! window known — output capped to what the window leaves, prompts that cannot fit refused
//! without an upstream call, and Claude Code's compaction request shrunk to fit.

use relayd_tests::app::TestApp;
use relayd_tests::http::{Reply, send};
use relayd_tests::mock_upstream::MockUpstream;
use serde_json::{Value, json};

use crate::relayctl::relayctl;

async fn account(app: &TestApp, name: &str, window: Option<u32>, models: &[&str]) {
    let mut body = json!({
        "name": name, "endpoint": "http://127.0.0.1:9/v1", "deploymentName": "d",
        "supportedModels": models,
    });
    if let Some(window) = window {
        body["contextWindow"] = json!(window);
    }
    app.admin().create_account(&body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_gives_claude_code_the_smallest_window_serving_the_model() {
    let app = TestApp::start().await;
    account(&app, "big", Some(131_072), &["claude-sonnet-4-5-20250929"]).await;
    account(&app, "small", Some(32_768), &["claude-*"]).await;
    account(&app, "unknown", None, &["claude-sonnet-4-5-20250929"]).await;
    account(&app, "huge", Some(262_144), &["claude-opus-4-1-20250805"]).await;

    // The exact entry wins over the pattern (relayd's rule), so the 32k account is not among
    // the sonnet's: its smallest known window is the 128k one.
    let run = relayctl(
        &app,
        &[
            "env",
            "--model",
            "claude-sonnet-4-5-20250929",
            "--key",
            "rk_secret",
        ],
    )
    .ok();
    let server = app.url("");
    assert!(
        run.stdout
            .contains(&format!("export ANTHROPIC_BASE_URL={server}\n")),
        "{run:#?}"
    );
    assert!(
        run.stdout
            .contains("export ANTHROPIC_AUTH_TOKEN=rk_secret\n")
    );
    assert!(
        run.stdout
            .contains("export ANTHROPIC_MODEL=claude-sonnet-4-5-20250929\n")
    );
    assert!(
        run.stdout
            .contains("export CLAUDE_CODE_AUTO_COMPACT_WINDOW=131072\n")
    );
    assert!(!run.stdout.contains("PCT_OVERRIDE"));
    assert!(
        run.stderr
            .contains("window unknown (left out) for: unknown"),
        "{run:#?}"
    );

    // A 32k window is below Claude Code's 100k floor: the floor plus a percentage.
    let run = relayctl(
        &app,
        &[
            "--output",
            "json",
            "env",
            "--model",
            "claude-3-haiku-20240307",
        ],
    )
    .ok();
    let env = &run.json()["env"];
    assert_eq!(env["CLAUDE_CODE_AUTO_COMPACT_WINDOW"], "100000");
    // 26% of (100,000 − 8,192) is 23,870: about three quarters of 32,768.
    assert_eq!(env["CLAUDE_AUTOCOMPACT_PCT_OVERRIDE"], "26");
    assert_eq!(env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"], "8192");
    assert_eq!(env["ANTHROPIC_AUTH_TOKEN"], "<your relay key>");

    // No model, no environment.
    let run = relayctl(&app, &["env", "--model", "gpt-4o"]).failed(1);
    assert!(run.stderr.contains("not served by any account"), "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_create_prints_the_window_of_the_keys_models_for_claude_code() {
    let app = TestApp::start().await;
    account(&app, "big", Some(131_072), &["claude-sonnet-4-5-20250929"]).await;
    account(&app, "small", Some(32_768), &["claude-3-haiku-20240307"]).await;

    // A key for the sonnet only: its 128k window, passed as it is.
    let run = relayctl(
        &app,
        &[
            "keys",
            "create",
            "--name",
            "sonnet-only",
            "--allowed-models",
            "claude-sonnet-4-5-20250929",
        ],
    )
    .ok();
    let line = run
        .stdout
        .lines()
        .find(|l| l.contains("ANTHROPIC_BASE_URL="))
        .unwrap_or_else(|| panic!("{run:#?}"));
    assert!(
        line.contains(" CLAUDE_CODE_AUTO_COMPACT_WINDOW=131072 claude"),
        "{line}"
    );
    assert!(run.stdout.contains("compact at about"), "{run:#?}");

    // A key for every model: the smallest window any of them has, below Claude Code's floor.
    let json = relayctl(
        &app,
        &["--output", "json", "keys", "create", "--name", "all"],
    )
    .ok()
    .json();
    let env = &json["claudeCodeEnv"];
    assert_eq!(env["CLAUDE_CODE_AUTO_COMPACT_WINDOW"], "100000", "{json:#}");
    assert_eq!(env["CLAUDE_AUTOCOMPACT_PCT_OVERRIDE"], "26", "{json:#}");
    let usage = json["usage"]["anthropic"].as_str().unwrap();
    assert!(
        usage.contains("CLAUDE_AUTOCOMPACT_PCT_OVERRIDE=26"),
        "{usage}"
    );

    // No window known: the plain line and a hint.
    let bare = TestApp::start().await;
    account(&bare, "unknown", None, &["claude-sonnet-4-5-20250929"]).await;
    let run = relayctl(&bare, &["keys", "create", "--name", "k"]).ok();
    assert!(
        !run.stdout.contains("CLAUDE_CODE_AUTO_COMPACT_WINDOW"),
        "{run:#?}"
    );
    assert!(
        run.stdout.contains("no context window is known"),
        "{run:#?}"
    );
}

/// relayd in front of mock upstreams, one account per `(name, window, priority)`, and a key.
async fn relay(accounts: &[(&str, u32, u8)]) -> (TestApp, Vec<MockUpstream>, String) {
    let app = TestApp::start().await;
    let mut mocks = Vec::new();
    for (name, window, priority) in accounts {
        let mock = MockUpstream::start().await;
        app.admin()
            .create_account(&json!({
                "name": name, "endpoint": mock.endpoint(), "deploymentName": "d",
                "contextWindow": window, "priority": priority,
                "supportedModels": [MODEL, "gpt-4o"],
            }))
            .await;
        mocks.push(mock);
    }
    let key = app.admin().create_key(&json!({"name": "k"})).await;
    (app, mocks, key)
}

const MODEL: &str = "claude-sonnet-4-5-20250929";

async fn anthropic(app: &TestApp, key: &str, body: &Value) -> Reply {
    send(
        reqwest::Client::new()
            .post(app.url("/v1/messages"))
            .header("x-api-key", key)
            .json(body),
    )
    .await
}

async fn openai(app: &TestApp, key: &str, body: &Value) -> Reply {
    send(
        reqwest::Client::new()
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(body),
    )
    .await
}

/// About `tokens` tokens of ASCII text (the local estimate counts 4 bytes a token).
fn text(tokens: usize) -> String {
    "word ".repeat(tokens * 4 / 5)
}

#[tokio::test]
async fn output_is_capped_at_what_the_window_leaves() {
    let (app, mocks, key) = relay(&[("small", 8192, 50)]).await;
    let reply = anthropic(
        &app,
        &key,
        &json!({"model": MODEL, "max_tokens": 32000,
                "messages": [{"role": "user", "content": text(2000)}]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let sent = mocks[0].requests()[0].json();
    let max_tokens = sent["max_tokens"].as_u64().expect("max_tokens");
    // 8192 − 64 margin − a conservative ~2,500 tokens of prompt.
    assert!(
        (5_000..6_200).contains(&max_tokens),
        "max_tokens {max_tokens}"
    );

    // The same for OpenAI clients, whose limit is lowered only when above the cap.
    let reply = openai(
        &app,
        &key,
        &json!({"model": "gpt-4o", "max_tokens": 32000,
                "messages": [{"role": "user", "content": text(2000)}]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let max_tokens = mocks[0].requests()[1].json()["max_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        (5_000..6_200).contains(&max_tokens),
        "max_tokens {max_tokens}"
    );
    let reply = openai(
        &app,
        &key,
        &json!({"model": "gpt-4o", "max_tokens": 100,
                "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(mocks[0].requests()[2].json()["max_tokens"], 100);
}

#[tokio::test]
async fn a_prompt_that_cannot_fit_is_refused_without_an_upstream_call() {
    let (app, mocks, key) = relay(&[("small", 8192, 50)]).await;
    let body = json!({"model": MODEL, "max_tokens": 1000,
                      "messages": [{"role": "user", "content": text(9000)}]});
    let reply = anthropic(&app, &key, &body).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(reply.json["type"], "error");
    assert_eq!(reply.json["error"]["type"], "invalid_request_error");
    let message = reply.json["error"]["message"].as_str().unwrap();
    // Claude Code reads both numbers: the prompt's, then the most that fits.
    let numbers: Vec<u64> = message
        .trim_start_matches("prompt is too long: ")
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(message.starts_with("prompt is too long: "), "{message}");
    assert!(
        numbers[0] > 9_000 && numbers[1] == 8192 - 64 - 1024,
        "{message}"
    );

    let reply = openai(
        &app,
        &key,
        &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text(9000)}]}),
    )
    .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(reply.json["error"]["code"], "context_length_exceeded");
    assert!(
        mocks[0].requests().is_empty(),
        "nothing may reach the upstream"
    );
}

#[tokio::test]
async fn a_prompt_too_long_for_one_account_goes_to_a_larger_one() {
    let (app, mocks, key) = relay(&[("small", 8192, 10), ("large", 131_072, 20)]).await;
    let reply = anthropic(
        &app,
        &key,
        &json!({"model": MODEL, "max_tokens": 32000,
                "messages": [{"role": "user", "content": text(9000)}]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.headers["x-relay-account"], "large");
    assert!(mocks[0].requests().is_empty());
    assert_eq!(mocks[1].requests()[0].json()["max_tokens"], 32000);
    // Nothing was sent to the small one, so it is not cooling down.
    let table = app.admin().get("/models").await;
    let states: Vec<(String, String)> = table.json["models"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["accounts"].as_array().unwrap().iter())
        .map(|a| (a["name"].to_string(), a["state"].to_string()))
        .collect();
    assert!(
        states.iter().all(|(_, state)| state == "\"ok\""),
        "{states:?}"
    );
}

/// Claude Code's compaction request: a conversation of tool results, then its summary
/// instruction.
fn compaction(results: &[usize]) -> Value {
    let mut messages = vec![json!({"role": "user", "content": "read the big files"})];
    for (i, tokens) in results.iter().enumerate() {
        messages.push(json!({"role": "assistant", "content": [
            {"type": "tool_use", "id": format!("toolu_{i}"), "name": "Read", "input": {"file_path": format!("/f{i}")}}
        ]}));
        messages.push(json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": format!("toolu_{i}"),
             "content": format!("HEAD{i} {} TAIL{i}", text(*tokens))}
        ]}));
    }
    messages.push(json!({"role": "user", "content": [{"type": "text", "text":
        "Your task is to create a detailed summary of the conversation so far, paying close attention to the user's explicit requests and your previous actions."}]}));
    json!({"model": MODEL, "max_tokens": 20000,
           "system": [{"type": "text", "text": "You are a helpful AI assistant tasked with summarizing conversations."}],
           "messages": messages})
}

#[tokio::test]
async fn claude_codes_compaction_is_shrunk_to_fit_and_nothing_else_is() {
    let (app, mocks, key) = relay(&[("small", 8192, 50)]).await;
    let reply = anthropic(&app, &key, &compaction(&[4000, 300, 4000])).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let sent = mocks[0].requests()[0].json();
    let results: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(results.len(), 3, "{sent}");
    // The oldest large result is cut in its middle, head and tail kept, with a marker.
    assert!(results[0].starts_with("HEAD0 ") && results[0].ends_with(" TAIL0"));
    assert!(results[0].contains("relayd cut"), "{}", results[0]);
    assert!(!results[1].contains("relayd cut"));
    assert!(sent["max_tokens"].as_u64().unwrap() >= 1024);

    // The same conversation without the summary instruction is refused, not altered.
    let mut plain = compaction(&[4000, 300, 4000]);
    plain["messages"].as_array_mut().unwrap().pop();
    plain["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "user", "content": "go on"}));
    let reply = anthropic(&app, &key, &plain).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(mocks[0].requests().len(), 1);
}
