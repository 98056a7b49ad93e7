//! Claude Code (2.1.x, `-p`) compacting on its own before a small upstream window overflows,
//! with the environment `relayctl env` prints, and a window smaller than Claude Code's own
//! prompt answered with relayd's "prompt is too long", which Claude Code shows. The mock
//! upstream behaves like vLLM with a `max_model_len`: it refuses any request whose prompt plus
//! `max_tokens` exceeds the window, with vLLM's wording, and reports usage the size of what it
//! was sent (bytes / 4), which is what Claude Code counts by.
//!
//! Measured while writing this (same mock, 128k window, 12 files): without the environment
//! Claude Code did not compact up to 106k tokens; with `CLAUDE_AUTOCOMPACT_PCT_OVERRIDE=90` it
//! compacted at 69k, with `30` at 36k — the percentage is what moves the compaction point.

use std::sync::Arc;
use std::time::Duration;

use relayd_tests::app::TestApp;
use relayd_tests::mock_upstream::{MockReply, MockUpstream};
use relayd_tests::python::{claude_code, claude_print_command, run_with_timeout};
use relayd_tests::vllm_window_mock::{SUMMARY, Script, prompt_tokens, write_files};
use serde_json::{Value, json};

use crate::relayctl::relayctl;

const MODEL: &str = "claude-sonnet-4-5-20250929";
const WINDOW: u64 = 65_536;
/// Smaller than Claude Code's own prompt.
const SMALL_WINDOW: u64 = 32_768;
/// Files the session reads, one per turn, each about 6,000 tokens.
const FILES: usize = 8;

/// One `claude -p` session reading the files through relayd, with `env` added to the basics.
async fn session(
    window: u64,
    env: &[(String, String)],
) -> (MockUpstream, relayd_tests::python::Finished, TestApp) {
    // Provisioned (npm on the first run) off the runtime that serves relayd and the mock.
    tokio::task::spawn_blocking(claude_code)
        .await
        .expect("Claude Code");
    let home = tempfile::tempdir().expect("home");
    let work = tempfile::tempdir().expect("work");
    write_files(work.path(), FILES);
    let mock = MockUpstream::start().await;
    let script = Arc::new(Script::new(work.path(), FILES, window));
    mock.set_responder(move |request| {
        let reply = script.respond(request);
        let last = request["messages"]
            .as_array()
            .and_then(|m| m.last())
            .map(|m| m.to_string().chars().take(120).collect::<String>())
            .unwrap_or_default();
        let status = match &reply {
            MockReply::Json { status, .. } => *status,
            MockReply::Stream { .. } => 200,
        };
        println!(
            "upstream: {} messages, ~{} tokens, max_tokens {}, answered {status}; last: {last}",
            request["messages"].as_array().map_or(0, Vec::len),
            prompt_tokens(request),
            request["max_tokens"]
        );
        reply
    });
    let app = TestApp::start().await;
    app.admin()
        .create_account(&json!({
            "name": "vllm", "endpoint": mock.endpoint(), "deploymentName": "vllm-model",
            "contextWindow": window, "supportedModels": [MODEL, "claude-*"],
        }))
        .await;
    let key = app.admin().create_key(&json!({"name": "cc"})).await;
    let mut cc = claude_print_command(
        "Read f1.txt, then f2.txt, and so on up to f8.txt, one per turn, then say done.",
        MODEL,
        home.path(),
        work.path(),
        &app.url(""),
        ("ANTHROPIC_AUTH_TOKEN", &key),
    );
    for (name, value) in env {
        if !name.starts_with("ANTHROPIC_") {
            cc.env(name, value);
        }
    }
    let finished = run_with_timeout(cc, Duration::from_secs(150)).await;
    (mock, finished, app)
}

/// Each upstream request's (prompt tokens, `max_tokens`).
fn sizes(mock: &MockUpstream) -> Vec<(u64, u64)> {
    mock.requests()
        .iter()
        .map(|r| {
            let body = r.json();
            (
                prompt_tokens(&body),
                body["max_tokens"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn summary_requests(mock: &MockUpstream) -> usize {
    mock.requests()
        .iter()
        .filter(|r| {
            r.body
                .windows(SUMMARY.len())
                .any(|w| w == SUMMARY.as_bytes())
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_printed_environment_claude_code_compacts_before_the_window_overflows() {
    // The environment relayctl prints for a 64k window.
    let probe = TestApp::start().await;
    probe
        .admin()
        .create_account(&json!({"name": "w", "endpoint": "http://127.0.0.1:9/v1",
            "deploymentName": "d", "contextWindow": WINDOW, "supportedModels": [MODEL]}))
        .await;
    let printed = relayctl(&probe, &["--output", "json", "env", "--model", MODEL]).ok();
    let env: Vec<(String, String)> = printed.json()["env"]
        .as_object()
        .expect("env")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();

    let (mock, finished, _app) = session(WINDOW, &env).await;
    let sizes = sizes(&mock);
    let context = format!("{finished:#?}\nrequests (prompt, max_tokens): {sizes:?}");
    assert!(
        summary_requests(&mock) >= 1,
        "Claude Code never compacted\n{context}"
    );
    assert!(
        sizes.iter().all(|(prompt, max)| prompt + max <= WINDOW),
        "a request overflowed the window\n{context}"
    );
    assert_eq!(finished.code, Some(0), "{context}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_smaller_than_claude_codes_prompt_is_reported_as_prompt_too_long() {
    // Claude Code's own system prompt and tools are ~29k tokens here: a 32k window leaves less
    // than `min_output_tokens` (relayd's estimate is ×5/4), so relayd answers before any call.
    let (mock, finished, _app) = session(SMALL_WINDOW, &[]).await;
    let sizes = sizes(&mock);
    let context = format!("{finished:#?}\nrequests (prompt, max_tokens): {sizes:?}");
    // relayd refused the turn that would not fit, so the upstream never saw it.
    assert!(
        sizes
            .iter()
            .all(|(prompt, max)| prompt + max <= SMALL_WINDOW),
        "a request overflowed the window\n{context}"
    );
    let result: Value = serde_json::from_str(finished.stdout.trim()).expect("JSON result");
    assert_eq!(result["is_error"], true, "{context}");
    assert!(
        result["result"]
            .as_str()
            .is_some_and(|r| r.contains("Prompt is too long")),
        "{context}"
    );
}
