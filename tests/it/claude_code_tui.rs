//! Claude Code's interactive TUI, driven in a tmux pane, through relayd to a vLLM-like upstream
//! with a 32k window (found by relayd's probe on vLLM's own surfaces; the upstream refuses
//! anything past it with vLLM's 400). With the environment `relayctl env` prints, a session
//! that reads big files compacts on its own before overflowing and carries on; without it, the
//! session runs into "Context limit reached", `/compact` goes through (relayd shrinks the
//! compaction request to fit), and the next question is answered.

use std::path::Path;
use std::time::{Duration, Instant};

use relayd_tests::app::TestApp;
use relayd_tests::python::claude_code;
use relayd_tests::tmux::Tmux;
use relayd_tests::vllm_window_mock::{
    ANSWER, DEPLOYMENT, QUESTION_MARKER, Script, VllmWindowMock, write_files,
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
    fn requests(&self) -> Vec<relayd_tests::vllm_window_mock::Exchange> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_printed_environment_the_tui_compacts_on_its_own_and_carries_on() {
    let session = Session::start(|relay| {
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
    })
    .await;
    session.say(READ_ALL).await;
    session
        .wait("the end of the reading", |s| s.contains("All files read."))
        .await;
    session
        .say(&format!("What is the {QUESTION_MARKER} answer?"))
        .await;
    let screen = session.wait("the answer", |s| s.contains(ANSWER)).await;
    let requests = session.requests();
    let report = session.report(&screen);
    println!("{report}");
    assert!(
        requests
            .iter()
            .any(|r| r.is_compaction() && r.status == 200),
        "Claude Code never compacted\n{report}"
    );
    assert!(
        requests.iter().all(|r| r.status == 200),
        "the upstream refused a request\n{report}"
    );
    assert_eq!(session.relay.mock.script().reads(), FILES, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_it_compact_after_the_context_limit_lets_the_session_go_on() {
    let session = Session::start(|_| Vec::new()).await;
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
    session
        .say(&format!("What is the {QUESTION_MARKER} answer?"))
        .await;
    let screen = session.wait("the answer", |s| s.contains(ANSWER)).await;
    let requests = session.requests();
    let report = session.report(&screen);
    println!("{report}");
    assert!(
        requests[before..]
            .iter()
            .any(|r| r.is_compaction() && r.status == 200),
        "no compaction request went through\n{report}"
    );
    assert!(
        requests.iter().all(|r| r.status == 200),
        "the upstream refused a request\n{report}"
    );
}
