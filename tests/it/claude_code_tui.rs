//! Claude Code's interactive TUI, driven in a tmux pane, through relayd to a vLLM-like upstream
//! with a 32k window (found by relayd's probe on vLLM's own surfaces; the upstream refuses
//! anything past it with vLLM's 400). With the environment `relayctl env` prints, a session
//! that reads big files compacts on its own before overflowing and carries on. Without it,
//! Claude Code plans for 200k and overflows: relayd refuses that turn with Anthropic's "prompt
//! is too long", and cuts the compaction request that follows down to the window — either the
//! one Claude Code sends by itself on that error (its default), or, with automatic compaction
//! off, the user's `/compact` after "Context limit reached". Either way the next question is
//! answered.
//!
//! Claude Code runs with `--tools Read`: its 27 default tools alone are ~24k tokens (measured
//! with a real tokenizer, llama.cpp's gemma-3, on 2.1.197's request: 24,269 tokens for 95 kB
//! of tool JSON; bytes / 4 gives 23,476), so with the system prompt its first request is ~32k
//! and no turn fits a 32k window. That is what relayd answers such a session (the first request
//! is refused as too long); a small model is run with a small tool set.
//!
//! Measured while writing this (Claude Code 2.1.197, files of ~6,400 tokens each, counts as
//! the mock makes them): with the printed environment it compacted twice, each time after a
//! request of ~20.2k tokens (the next file would have taken it past the 24.5k point the
//! environment sets); compaction requests of ~21.8k went through whole; 12 requests for the
//! session, none refused. Without it, the turn after a 26.7k request (~33k with the next
//! file) was refused by relayd and the compaction request arrived cut to 22.9k (24.0k after
//! a manual `/compact`).

use std::path::Path;
use std::time::{Duration, Instant};

use relayd_tests::app::TestApp;
use relayd_tests::python::claude_code;
use relayd_tests::tmux::Tmux;
use relayd_tests::vllm_window_mock::{
    ANSWER, DEPLOYMENT, Exchange, QUESTION_MARKER, Script, VllmWindowMock, write_files,
};
use serde_json::json;

use crate::relayctl::relayctl;

const MODEL: &str = "claude-sonnet-4-5-20250929";
const WINDOW: u64 = 32_768;
/// Files the session reads, one per turn.
const FILES: usize = 6;
/// The longest one screen state may take to appear (Claude Code's turns are several requests).
const STEP: Duration = Duration::from_secs(120);

/// relayd (probing on) in front of the mock, the account's window detected, a relay key.
struct Relay {
    app: TestApp,
    mock: VllmWindowMock,
    key: String,
    /// Chat requests the probe made, before the session's.
    probe_requests: usize,
}

async fn relay(work: &Path) -> Relay {
    let mock = VllmWindowMock::start(Script::new(work, FILES, WINDOW)).await;
    let app = TestApp::start_with(|c| c.upstream.probe_profiles = true).await;
    app.admin()
        .create_account(&json!({
            "name": "vllm", "endpoint": mock.endpoint(), "deploymentName": DEPLOYMENT,
            "supportedModels": [MODEL, "claude-*"],
        }))
        .await;
    // The probe runs in the background after the create; the window is what it found.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let account = app.admin().get("/accounts/vllm").await.json;
        if account["resolved"]["contextWindow"]["value"] == WINDOW {
            assert_eq!(
                account["resolved"]["contextWindow"]["source"], "detected",
                "{account}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the probe found no window: {account}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let key = app.admin().create_key(&json!({"name": "tui"})).await;
    let probe_requests = mock.exchanges().len();
    Relay {
        app,
        mock,
        key,
        probe_requests,
    }
}

/// A HOME in which Claude Code has been set up and trusts `work`: no first-run dialogs.
fn home_for(work: &Path) -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("home");
    let config = json!({
        "hasCompletedOnboarding": true,
        "bypassPermissionsModeAccepted": true,
        "projects": { work.to_str().expect("UTF-8"): {
            "hasTrustDialogAccepted": true,
            "hasCompletedProjectOnboarding": true,
        }},
    });
    std::fs::write(home.path().join(".claude.json"), config.to_string()).expect(".claude.json");
    home
}

/// Claude Code's environment: relayd, the relay key, no non-essential traffic, plus `extra`.
fn environment(home: &Path, relay: &Relay, extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("HOME", home.to_str().expect("UTF-8").to_owned()),
        ("TERM", "xterm-256color".to_owned()),
        ("LANG", "C.UTF-8".to_owned()),
        ("ANTHROPIC_BASE_URL", relay.app.url("")),
        ("ANTHROPIC_AUTH_TOKEN", relay.key.clone()),
        ("ANTHROPIC_SMALL_FAST_MODEL", MODEL.to_owned()),
        ("ANTHROPIC_DEFAULT_HAIKU_MODEL", MODEL.to_owned()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_owned()),
        ("DISABLE_AUTOUPDATER", "1".to_owned()),
        ("DISABLE_TELEMETRY", "1".to_owned()),
        ("DISABLE_ERROR_REPORTING", "1".to_owned()),
        ("NO_PROXY", "127.0.0.1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (name, value) in extra {
        env.retain(|(k, _)| k != name);
        env.push((name.clone(), value.clone()));
    }
    env
}

/// A running interactive session and what it talks to.
struct Session {
    tmux: Tmux,
    relay: Relay,
    _home: tempfile::TempDir,
    _work: tempfile::TempDir,
}

impl Session {
    /// Starts Claude Code in a 200×50 pane, `extra` added to its environment, and waits for its
    /// prompt box.
    async fn start(extra: impl FnOnce(&Relay) -> Vec<(String, String)>) -> Self {
        // Provisioned (npm on the first run) off the runtime that serves relayd and the mock.
        let program = tokio::task::spawn_blocking(claude_code)
            .await
            .expect("Claude Code");
        let work = tempfile::tempdir().expect("work");
        write_files(work.path(), FILES);
        let relay = relay(work.path()).await;
        let home = home_for(work.path());
        let env = environment(home.path(), &relay, &extra(&relay));
        let tmux = Tmux::start(
            &program,
            &[
                "--model",
                MODEL,
                "--tools",
                "Read",
                "--allowedTools",
                "Read",
            ],
            work.path(),
            &env,
            (200, 50),
        );
        let session = Self {
            tmux,
            relay,
            _home: home,
            _work: work,
        };
        session
            .wait("the prompt box", |s| s.contains("? for shortcuts"))
            .await;
        session
    }

    /// Waits until the screen satisfies `ready`; on timeout fails with the screen and the log.
    async fn wait(&self, what: &str, ready: impl FnMut(&str) -> bool) -> String {
        match self.tmux.wait_for(STEP, ready).await {
            Ok(screen) => screen,
            Err(screen) => panic!("{what} never showed\n{}", self.report(&screen)),
        }
    }

    /// Types `text` into the prompt box and submits it. Claude Code takes keys that arrive
    /// together for a paste and ignores an Enter in the middle of one, so Enter is pressed once
    /// the text shows, and again until the box is empty.
    async fn say(&self, text: &str) {
        self.tmux.type_text(text);
        self.wait("the typed text", |s| input_line(s).contains(text))
            .await;
        let deadline = Instant::now() + STEP;
        loop {
            self.tmux.press(&["Enter"]);
            let submitted = self
                .tmux
                .wait_for(Duration::from_secs(3), |s| !input_line(s).contains(text))
                .await;
            match submitted {
                Ok(_) => return,
                Err(screen) if Instant::now() >= deadline => {
                    panic!("{text:?} was never submitted\n{}", self.report(&screen))
                }
                Err(_) => {}
            }
        }
    }

    /// The screen and the upstream's request log, for failure messages.
    fn report(&self, screen: &str) -> String {
        format!(
            "--- screen ---\n{screen}\n--- upstream requests (probe's first {}) ---\n{}",
            self.relay.probe_requests,
            self.relay.mock.report()
        )
    }

    /// The session's upstream requests (the probe's left out).
    fn requests(&self) -> Vec<Exchange> {
        self.relay.mock.exchanges()[self.relay.probe_requests..].to_vec()
    }
}

/// The prompt box's line: the last one starting with Claude Code's prompt mark.
fn input_line(screen: &str) -> &str {
    screen
        .lines()
        .rev()
        .find(|line| line.starts_with('❯'))
        .unwrap_or_default()
}

const READ_ALL: &str =
    "Read f1.txt, then f2.txt, and so on up to f6.txt, one per turn, then say done.";

/// The environment `relayctl env` prints for the relay's model and key.
fn printed_environment(relay: &Relay) -> Vec<(String, String)> {
    let printed = relayctl(
        &relay.app,
        &[
            "--output", "json", "env", "--model", MODEL, "--key", &relay.key,
        ],
    )
    .ok();
    printed.json()["env"]
        .as_object()
        .expect("env")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// Asks for every file to be read, waits for the end of the reading, asks the question and
/// waits for its answer. Returns the final screen (with scrollback).
async fn read_all_then_ask(session: &Session) -> String {
    session.say(READ_ALL).await;
    session
        .wait("the end of the reading", |s| s.contains("All files read."))
        .await;
    ask(session).await
}

async fn ask(session: &Session) -> String {
    session
        .say(&format!("What is the {QUESTION_MARKER} answer?"))
        .await;
    session.wait("the answer", |s| s.contains(ANSWER)).await
}

/// Failure unless every upstream request fitted the window and was answered 200.
fn assert_all_fitted(requests: &[Exchange], report: &str) {
    assert!(
        requests
            .iter()
            .all(|r| r.status == 200 && r.prompt_tokens() + r.max_tokens() <= WINDOW),
        "a request did not fit the window\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_printed_environment_the_tui_compacts_on_its_own_and_carries_on() {
    let session = Session::start(printed_environment).await;
    let screen = read_all_then_ask(&session).await;
    let requests = session.requests();
    let report = session.report(&screen);
    println!("{report}");
    assert_all_fitted(&requests, &report);
    // Compacted before the window overflowed: nothing was refused, so nothing had to be cut.
    assert!(
        requests.iter().any(Exchange::is_compaction),
        "Claude Code never compacted\n{report}"
    );
    assert!(!requests.iter().any(Exchange::was_cut), "{report}");
    assert!(!screen.contains("Prompt is too long"), "{report}");
    assert!(screen.contains("Conversation compacted"), "{report}");
    assert_eq!(session.relay.mock.script().reads(), FILES, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_it_the_tui_compacts_when_relayd_says_the_prompt_is_too_long() {
    // Claude Code plans for 200k, so it overflows the 32k window; relayd refuses that request
    // with Anthropic's "prompt is too long", on which Claude Code compacts by itself (reactive
    // compaction), and relayd cuts the compaction request down to fit.
    let session = Session::start(|_| Vec::new()).await;
    let screen = read_all_then_ask(&session).await;
    let requests = session.requests();
    let report = session.report(&screen);
    println!("{report}");
    assert_all_fitted(&requests, &report);
    assert!(
        requests.iter().any(|r| r.is_compaction() && r.was_cut()),
        "no compaction request was cut to fit\n{report}"
    );
    assert_eq!(session.relay.mock.script().reads(), FILES, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_it_compact_after_the_context_limit_lets_the_session_go_on() {
    // With automatic compaction off, the refusal stops the session at "Context limit reached"
    // and the user compacts by hand.
    let session =
        Session::start(|_| vec![("DISABLE_AUTO_COMPACT".to_owned(), "1".to_owned())]).await;
    session.say(READ_ALL).await;
    session
        .wait("Context limit reached", |s| {
            s.contains("Context limit reached")
        })
        .await;
    let before = session.requests().len();
    session.say("/compact").await;
    session
        .wait("the compaction's end", |s| s.contains("Compacted"))
        .await;
    let screen = ask(&session).await;
    let requests = session.requests();
    let report = session.report(&screen);
    println!("{report}");
    assert_all_fitted(&requests, &report);
    assert!(
        requests[before..]
            .iter()
            .any(|r| r.is_compaction() && r.was_cut()),
        "no compaction request was cut to fit\n{report}"
    );
}
