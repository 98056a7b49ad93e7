//! Context windows: what relayctl tells Claude Code about them (`relayctl env`), and — with a
//! window known — output capped to what the window leaves, prompts that cannot fit refused
//! without an upstream call, and Claude Code's compaction request shrunk to fit.

use relayd_tests::app::TestApp;
use serde_json::json;

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
