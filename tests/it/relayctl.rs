//! The real `relayctl` binary against a real relayd (in-process, on a port-0 socket): every
//! command in text and `--output json` form, the batch-import scenario from the issue, and the
//! failure modes (no TTY, unreachable server, wrong token), asserting on output and exit code.
//!
//! Tests use a multi-threaded runtime because relayctl runs as a blocking child process while
//! relayd serves it from the runtime's worker threads.

use std::path::Path;
use std::process::{Command, Stdio};

use relayd_tests::app::TestApp;
use relayd_tests::daemon::binary;
use serde_json::Value;

const EXAMPLE_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/custom-models.json"
);

/// The outcome of one relayctl run.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self:?}"))
    }

    #[track_caller]
    pub(crate) fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "{self:#?}");
        self
    }

    #[track_caller]
    pub(crate) fn failed(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "{self:#?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "error should be one line: {self:#?}");
        assert!(lines[0].starts_with("relayctl: error: "), "{self:#?}");
        self
    }
}

/// relayctl with no terminal and a clean environment, so nothing leaks in from the developer's.
fn relayctl_raw(args: &[&str], envs: &[(&str, &Path)]) -> Run {
    let mut command = Command::new(binary("relayctl"));
    command
        .args(args)
        .env_remove("RELAYCTL_SERVER")
        .env_remove("RELAYCTL_TOKEN")
        .env_remove("RELAYD_DATA_DIR")
        .stdin(Stdio::null());
    for (k, v) in envs {
        command.env(k, v);
    }
    let out = command.output().expect("run relayctl");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// relayctl pointed at `app` with its admin token.
pub(crate) fn relayctl(app: &TestApp, args: &[&str]) -> Run {
    let server = app.url("");
    let mut all = vec!["--server", &server, "--token", &app.admin_token];
    all.extend_from_slice(args);
    relayctl_raw(&all, &[])
}

fn write_file(app: &TestApp, name: &str, body: &str) -> String {
    let path = app.data_dir.path().join(name);
    std::fs::write(&path, body).expect("write file");
    path.display().to_string()
}

/// The account names `models --output json` lists for `model`, in routing order.
fn routed(table: &Value, model: &str) -> Vec<String> {
    table["models"]
        .as_array()
        .expect("models")
        .iter()
        .find(|m| m["model"] == model)
        .map(|m| {
            m["accounts"]
                .as_array()
                .expect("accounts")
                .iter()
                .map(|a| a["name"].as_str().expect("name").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_example_file_then_models_shows_the_mapping() {
    let app = TestApp::start().await;

    let dry = relayctl(&app, &["import", "--batch", EXAMPLE_FILE, "--dry-run"]).ok();
    assert!(dry.stdout.contains("dry run"), "{dry:#?}");
    assert!(app.state.accounts.snapshot().accounts.is_empty());

    let first = relayctl(&app, &["import", "--batch", EXAMPLE_FILE]).ok();
    assert!(
        first
            .stdout
            .contains("3 created, 0 updated, 0 unchanged, 0 failed"),
        "{first:#?}"
    );
    for name in ["Qwen3-VL-235B", "Qwen3-32B", "GLM-4.6-FP8"] {
        assert!(first.stdout.contains(name), "{first:#?}");
    }

    let expected = [
        ("claude-sonnet-4-5-20250929", "Qwen3-VL-235B"),
        ("claude-opus-4-1-20250805", "Qwen3-VL-235B"),
        ("claude-3-5-sonnet-20241022", "Qwen3-32B"),
        ("gpt-4o", "Qwen3-32B"),
        ("claude-3-opus-20240229", "GLM-4.6-FP8"),
        ("gpt-4-turbo", "GLM-4.6-FP8"),
    ];
    let text = relayctl(&app, &["models"]).ok();
    for (model, account) in expected {
        let line = text
            .stdout
            .lines()
            .find(|l| l.contains(model))
            .unwrap_or_else(|| panic!("{model} missing: {text:#?}"));
        assert!(line.contains(account), "{model} -> {account}: {line}");
    }
    let json = relayctl(&app, &["models", "--output", "json"]).ok().json();
    assert_eq!(json["models"].as_array().expect("models").len(), 6);
    for (model, account) in expected {
        assert_eq!(routed(&json, model), [account], "{model}");
    }

    let again = relayctl(
        &app,
        &["--output", "json", "import", "--batch", EXAMPLE_FILE],
    )
    .ok();
    let report = again.json();
    assert_eq!(report["summary"]["unchanged"], 3, "{again:#?}");
    assert_eq!(report["summary"]["created"], 0);
    let again_text = relayctl(&app, &["import", "--batch", EXAMPLE_FILE]).ok();
    assert!(
        again_text
            .stdout
            .contains("0 created, 0 updated, 3 unchanged, 0 failed"),
        "{again_text:#?}"
    );

    let check = relayctl(&app, &["models", "--check", "gpt-4o"]).ok();
    assert!(check.stdout.contains("Qwen3-32B"), "{check:#?}");
    assert!(!check.stdout.contains("GLM-4.6-FP8"), "{check:#?}");
    // The affinity rule, with the server's settings (defaults here).
    assert!(
        check.stdout.contains("rendezvous hash")
            && check.stdout.contains("more than 25% of its concurrency")
            && check.stdout.contains("for 3600 s after its last request"),
        "{check:#?}"
    );
    let json = relayctl(&app, &["models", "--check", "gpt-4o", "--output", "json"]).ok();
    let json: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["affinity"]["prefixAffinity"], true, "{json:#}");
    assert_eq!(json["affinity"]["loadBound"], 0.25, "{json:#}");
    let unknown = relayctl(&app, &["models", "--check", "no-such-model"]).failed(1);
    assert!(unknown.stderr.contains("not served"), "{unknown:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_with_one_bad_row_writes_nothing_and_names_row_and_field() {
    let app = TestApp::start().await;
    let bad = write_file(
        &app,
        "bad.json",
        r#"[{"name":"good","endpoint":"http://127.0.0.1:9/v1","deploymentName":"d"},
            {"name":"broken","endpoint":"http://127.0.0.1:9/v1","deploymentName":"d","priority":"high"}]"#,
    );

    let text = relayctl(&app, &["import", "--batch", &bad]).failed(1);
    let row = text
        .stdout
        .lines()
        .find(|l| l.contains("broken"))
        .unwrap_or_else(|| panic!("no row for the bad account: {text:#?}"));
    assert!(row.contains(" 1 ") && row.contains("priority"), "{row}");
    assert!(text.stderr.contains("nothing was sent"), "{text:#?}");

    let json = relayctl(&app, &["import", "--batch", &bad, "--output", "json"])
        .failed(1)
        .json();
    assert_eq!(json["errors"][0]["row"], 1);
    assert_eq!(json["errors"][0]["name"], "broken");
    assert_eq!(json["errors"][0]["field"], "priority");

    assert!(app.state.accounts.snapshot().accounts.is_empty());
    let missing = relayctl(&app, &["import", "--batch", "/nonexistent/file.json"]).failed(1);
    assert!(
        missing.stderr.contains("cannot read batch file"),
        "{missing:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_model_and_every_accounts_command() {
    let app = TestApp::start().await;
    let added = relayctl(
        &app,
        &[
            "add-model",
            "--name",
            "qwen-a",
            "--endpoint",
            "http://127.0.0.1:9/v1",
            "--deployment",
            "qwen3-32b",
            "--api-key",
            "sk-relayctl-test-SECRET-1234",
            "--models",
            "gpt-4o,claude-3-5-sonnet-20241022",
            "--priority",
            "10",
        ],
    )
    .ok();
    assert!(added.stdout.contains("qwen-a"), "{added:#?}");
    assert!(!added.stdout.contains("SECRET"), "{added:#?}");

    let json_add = relayctl(
        &app,
        &[
            "--output",
            "json",
            "add-model",
            "--name",
            "glm-b",
            "--endpoint",
            "http://127.0.0.1:9/v1",
            "--deployment",
            "glm",
        ],
    )
    .ok()
    .json();
    assert_eq!(json_add["concurrency"], 50);
    assert_eq!(
        json_add["supportedModels"]
            .as_array()
            .expect("models")
            .len(),
        14
    );

    let list = relayctl(&app, &["accounts", "list"]).ok();
    assert!(
        list.stdout.contains("qwen-a") && list.stdout.contains("glm-b"),
        "{list:#?}"
    );
    assert!(list.stdout.contains("…1234"), "{list:#?}");
    let list = relayctl(&app, &["accounts", "list", "--output", "json"])
        .ok()
        .json();
    assert_eq!(list["accounts"].as_array().expect("accounts").len(), 2);

    let show = relayctl(&app, &["accounts", "show", "qwen-a"]).ok();
    assert!(show.stdout.contains("qwen3-32b"), "{show:#?}");
    let show = relayctl(&app, &["accounts", "show", "qwen-a", "--output", "json"])
        .ok()
        .json();
    assert_eq!(show["priority"], 10);

    let updated = relayctl(
        &app,
        &[
            "accounts",
            "update",
            "qwen-a",
            "--priority",
            "3",
            "--api-key",
            "",
            "--output",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(updated["priority"], 3);
    assert_eq!(updated["apiKey"]["set"], false);
    let updated = relayctl(
        &app,
        &[
            "accounts",
            "update",
            "glm-b",
            "--api-key",
            "sk-glm-key-00001",
        ],
    )
    .ok();
    assert!(updated.stdout.contains("…0001"), "{updated:#?}");
    let cleared = relayctl(
        &app,
        &[
            "accounts",
            "update",
            "glm-b",
            "--clear-api-key",
            "--output",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(cleared["apiKey"]["set"], false);
    relayctl(&app, &["accounts", "update", "glm-b"]).failed(2);
    let bad = relayctl(&app, &["accounts", "update", "glm-b", "--priority", "500"]).failed(1);
    assert!(bad.stderr.contains("priority"), "{bad:#?}");

    let disabled = relayctl(&app, &["accounts", "disable", "qwen-a", "--output", "json"])
        .ok()
        .json();
    assert_eq!(disabled["enabled"], false);
    let models = relayctl(&app, &["models"]).ok();
    assert!(
        models.stdout.contains("disabled") || !models.stdout.contains("qwen-a"),
        "{models:#?}"
    );
    let enabled = relayctl(&app, &["accounts", "enable", "qwen-a"]).ok();
    assert!(enabled.stdout.contains("yes"), "{enabled:#?}");

    let refused = relayctl(&app, &["accounts", "remove", "qwen-a"]).failed(2);
    assert!(refused.stderr.contains("--yes"), "{refused:#?}");
    let removed = relayctl(&app, &["accounts", "remove", "qwen-a", "--yes"]).ok();
    assert!(
        removed.stdout.contains("removed account qwen-a"),
        "{removed:#?}"
    );
    let removed = relayctl(
        &app,
        &["accounts", "remove", "glm-b", "--yes", "--output", "json"],
    )
    .ok()
    .json();
    assert_eq!(removed["removed"], "glm-b");
    let gone = relayctl(&app, &["accounts", "show", "qwen-a"]).failed(1);
    assert!(
        gone.stderr.contains("qwen-a") && gone.stderr.contains("404"),
        "{gone:#?}"
    );
    assert!(app.state.accounts.snapshot().accounts.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_model_without_a_terminal_names_every_missing_flag() {
    let app = TestApp::start().await;
    let run = relayctl(&app, &["add-model", "--endpoint", "http://127.0.0.1:9/v1"]).failed(2);
    assert!(
        run.stderr.contains("--name") && run.stderr.contains("--deployment"),
        "{run:#?}"
    );
    assert!(!run.stderr.contains("--endpoint"), "{run:#?}");

    let run = relayctl(
        &app,
        &[
            "add-model",
            "--name",
            "x",
            "--endpoint",
            "ftp://h",
            "--deployment",
            "d",
        ],
    )
    .failed(2);
    assert!(run.stderr.contains("--endpoint"), "{run:#?}");
    assert!(app.state.accounts.snapshot().accounts.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_create_list_update_revoke() {
    let app = TestApp::start().await;
    let server = app.url("");
    let created = relayctl(
        &app,
        &[
            "keys",
            "create",
            "--name",
            "alice",
            "--allowed-models",
            "gpt-4o,claude-*",
            "--rpm",
            "60",
            "--expires-in-days",
            "30",
        ],
    )
    .ok();
    let secret = created
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("rk_"))
        .unwrap_or_else(|| panic!("no secret: {created:#?}"))
        .to_owned();
    assert!(
        created.stdout.contains(&format!(
            "ANTHROPIC_BASE_URL={server} ANTHROPIC_AUTH_TOKEN={secret} claude"
        )),
        "{created:#?}"
    );
    assert!(
        created.stdout.contains(&format!(
            "OPENAI_BASE_URL={server}/v1 OPENAI_API_KEY={secret}"
        )),
        "{created:#?}"
    );

    // The secret works against the client API.
    let models = reqwest::Client::new()
        .get(app.url("/v1/models"))
        .bearer_auth(&secret)
        .send()
        .await
        .expect("request");
    assert_eq!(models.status(), 200);

    let json = relayctl(
        &app,
        &["keys", "create", "--name", "bob", "--output", "json"],
    )
    .ok()
    .json();
    assert!(json["secret"].as_str().expect("secret").starts_with("rk_"));
    let bob = json["key"]["id"].as_str().expect("id").to_owned();

    let list = relayctl(&app, &["keys", "list"]).ok();
    assert!(
        list.stdout.contains("alice") && list.stdout.contains("bob"),
        "{list:#?}"
    );
    assert!(list.stdout.contains("60 rpm"), "{list:#?}");
    assert!(!list.stdout.contains(&secret), "{list:#?}");
    let list = relayctl(&app, &["keys", "list", "--output", "json"])
        .ok()
        .json();
    let alice = list["keys"][0]["id"].as_str().expect("id").to_owned();
    assert_eq!(list["keys"][0]["limits"]["requestsPerMinute"], 60);

    let updated = relayctl(
        &app,
        &[
            "keys",
            "update",
            &alice,
            "--tokens-per-day",
            "1000",
            "--disable",
            "--output",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(updated["enabled"], false);
    assert_eq!(
        updated["limits"]["requestsPerMinute"], 60,
        "other limits kept"
    );
    assert_eq!(updated["limits"]["tokensPerDay"], 1000);
    let updated = relayctl(&app, &["keys", "update", &alice, "--enable", "--no-expiry"]).ok();
    assert!(
        updated.stdout.contains("active") && updated.stdout.contains("never"),
        "{updated:#?}"
    );
    relayctl(&app, &["keys", "update", &alice]).failed(2);

    let revoked = relayctl(&app, &["keys", "revoke", &bob]).ok();
    assert!(revoked.stdout.contains("revoked"), "{revoked:#?}");
    let revoked = relayctl(&app, &["keys", "revoke", &alice, "--output", "json"])
        .ok()
        .json();
    assert!(revoked["revokedAt"].is_i64(), "{revoked}");
    let unknown = relayctl(&app, &["keys", "revoke", "key_0000000000000000"]).failed(1);
    assert!(unknown.stderr.contains("404"), "{unknown:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_text_json_and_token_file() {
    let app = TestApp::start().await;
    relayctl(&app, &["import", "--batch", EXAMPLE_FILE]).ok();
    let text = relayctl(&app, &["status"]).ok();
    assert!(text.stdout.contains(env!("CARGO_PKG_VERSION")), "{text:#?}");
    assert!(text.stdout.contains("embedded"), "{text:#?}");
    assert!(text.stdout.contains("3 total: 3 up"), "{text:#?}");
    let json = relayctl(&app, &["status", "--output", "json"]).ok().json();
    assert_eq!(json["accounts"]["up"], 3);
    assert_eq!(json["activeKeys"], 0);

    // No --token: the admin.token file in RELAYD_DATA_DIR is used.
    let server = app.url("");
    let run = relayctl_raw(
        &["--server", &server, "status", "--output", "json"],
        &[("RELAYD_DATA_DIR", app.data_dir.path())],
    )
    .ok();
    assert_eq!(run.json()["accounts"]["total"], 3);
    let run = relayctl_raw(
        &["--server", &server, "status"],
        &[("RELAYD_DATA_DIR", Path::new("/nonexistent"))],
    )
    .failed(1);
    assert!(run.stderr.contains("no admin token"), "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_and_wrong_token_are_one_line_failures() {
    let app = TestApp::start().await;
    // A port that was just free: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let server = format!("http://127.0.0.1:{port}");
    let run = relayctl_raw(&["--server", &server, "--token", "t", "status"], &[]).failed(1);
    assert!(
        run.stderr
            .contains(&format!("cannot reach relayd at {server}")),
        "{run:#?}"
    );
    assert!(run.stderr.contains("(is it running?)"), "{run:#?}");

    let run = relayctl_raw(
        &[
            "--server",
            &app.url(""),
            "--token",
            "wrong",
            "accounts",
            "list",
        ],
        &[],
    )
    .failed(1);
    assert!(run.stderr.contains("invalid admin token"), "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
}

#[test]
fn completions_help_and_usage_errors() {
    for shell in ["bash", "zsh", "fish"] {
        let run = relayctl_raw(&["completions", shell], &[]).ok();
        assert!(run.stdout.contains("relayctl"), "{shell}: {run:#?}");
        assert!(run.stdout.contains("add-model"), "{shell}: {run:#?}");
    }
    let help = relayctl_raw(&["--help"], &[]).ok();
    assert!(help.stdout.contains("Examples:"), "{help:#?}");
    assert!(help.stdout.contains("relayctl import --batch"), "{help:#?}");
    let bad = relayctl_raw(&["no-such-command"], &[]);
    assert_eq!(bad.code, Some(2), "{bad:#?}");
    let bad = relayctl_raw(&["completions", "tcsh"], &[]);
    assert_eq!(bad.code, Some(2), "{bad:#?}");
}

/// relayctl under a pseudo-terminal (util-linux `script`), driven like a person would: wait for a
/// prompt to appear, then type. Waiting is on output, never on time; the timeout only bounds a hang.
#[cfg(target_os = "linux")]
struct Pty {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    chunks: std::sync::mpsc::Receiver<Vec<u8>>,
    seen: String,
}

#[cfg(target_os = "linux")]
impl Pty {
    fn spawn(app: &TestApp, args: &[&str]) -> Self {
        let mut line = format!(
            "{} --server {} --token {}",
            binary("relayctl").display(),
            app.url(""),
            app.admin_token
        );
        for arg in args {
            line.push(' ');
            line.push_str(arg);
        }
        let (mut child, chunks) = relayd_tests::terminal::script(&line, |command| {
            command
                .env_remove("RELAYCTL_SERVER")
                .env_remove("RELAYCTL_TOKEN")
                .env("TERM", "dumb");
        });
        Self {
            stdin: child.stdin.take(),
            child,
            chunks,
            seen: String::new(),
        }
    }

    /// Reads until `needle` shows up in the output after everything consumed so far.
    #[track_caller]
    fn expect(&mut self, needle: &str) {
        loop {
            if let Some(at) = self.seen.find(needle) {
                self.seen.drain(..at + needle.len());
                return;
            }
            match self.chunks.recv_timeout(std::time::Duration::from_secs(30)) {
                Ok(chunk) => self.seen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(e) => panic!(
                    "waiting for {needle:?} ({e}); output so far:\n{}",
                    self.seen
                ),
            }
        }
    }

    /// Reads until one of `needles` shows up; returns its index.
    #[track_caller]
    fn expect_any(&mut self, needles: &[&str]) -> usize {
        loop {
            let found = needles
                .iter()
                .enumerate()
                .filter_map(|(i, n)| self.seen.find(n).map(|at| (at, i, n.len())))
                .min();
            if let Some((at, i, len)) = found {
                self.seen.drain(..at + len);
                return i;
            }
            match self.chunks.recv_timeout(std::time::Duration::from_secs(30)) {
                Ok(chunk) => self.seen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(e) => panic!(
                    "waiting for one of {needles:?} ({e}); output so far:\n{}",
                    self.seen
                ),
            }
        }
    }

    fn send(&mut self, keys: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(keys.as_bytes()).expect("type");
        stdin.flush().expect("flush");
    }

    /// Everything still to come, and the exit status.
    fn finish(mut self) -> (String, std::process::ExitStatus) {
        let status = self.child.wait().expect("wait");
        while let Ok(chunk) = self.chunks.recv() {
            self.seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        drop(self.stdin.take());
        (self.seen, status)
    }
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_model_prompts_on_a_terminal_and_ctrl_c_saves_nothing() {
    let app = TestApp::start().await;

    let mut pty = Pty::spawn(&app, &["add-model", "--name", "pty-a"]);
    pty.expect("Endpoint base URL");
    pty.send("ftp://bad\r");
    pty.expect("must start with http:// or https://");
    pty.send("http://127.0.0.1:9/v1\r");
    // The kind is offered with the endpoint, the inferred one first: two down for anthropic.
    pty.expect("Kind of server");
    pty.expect("anthropic: the Anthropic Messages API only");
    pty.send("\u{1b}[B\u{1b}[B\r");
    pty.expect("Deployment");
    pty.send("qwen3-32b\r");
    pty.expect("Upstream API key");
    // The hidden prompt turns echo off with TCSAFLUSH, discarding keys typed a moment too early;
    // such keys were echoed (echo was still on), so seeing them means: type again.
    loop {
        pty.send("sk-typed-hidden-9876\r");
        if pty.expect_any(&["Supported models", "sk-typed-hidden-9876"]) == 0 {
            break;
        }
    }
    pty.send("gpt-4o, claude-3-opus-20240229\r");
    pty.expect("Priority");
    pty.send("\r");
    pty.expect("Concurrency");
    pty.send("7\r");
    pty.expect("Test the endpoint before saving?");
    pty.send("n");
    pty.expect("Save this account?");
    pty.send("y");
    let (rest, status) = pty.finish();
    assert!(status.success(), "{status}: {rest}");
    assert!(!rest.contains("sk-typed-hidden"), "secret echoed: {rest}");
    let account = relayctl(&app, &["accounts", "show", "pty-a", "--output", "json"])
        .ok()
        .json();
    assert_eq!(account["endpoint"], "http://127.0.0.1:9/v1");
    assert_eq!(account["kind"], "anthropic");
    assert_eq!(account["deploymentName"], "qwen3-32b");
    assert_eq!(account["priority"], 50);
    assert_eq!(account["concurrency"], 7);
    assert_eq!(
        account["supportedModels"],
        serde_json::json!(["gpt-4o", "claude-3-opus-20240229"])
    );
    assert_eq!(account["apiKey"]["last4"], "9876");

    // Testing first against a closed port: the failure and its hint are shown, and declining
    // to save anyway saves nothing.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}/v1", listener.local_addr().expect("addr"))
    };
    let mut pty = Pty::spawn(
        &app,
        &[
            "add-model",
            "--name",
            "pty-t",
            "--endpoint",
            &closed,
            "--deployment",
            "d",
            "--api-key",
            "sk-unused-000",
            "--models",
            "gpt-4o",
            "--priority",
            "5",
            "--concurrency",
            "2",
        ],
    );
    pty.expect("Test the endpoint before saving?");
    pty.send("y");
    pty.expect("✗ reachable");
    pty.expect("hint: is the server running and listening on");
    pty.expect("Some checks failed. Save anyway?");
    pty.send("n");
    let (rest, status) = pty.finish();
    assert!(status.success(), "{status}: {rest}");
    assert!(rest.contains("nothing saved"), "{rest}");
    assert!(app.state.accounts.snapshot().find("pty-t").is_none());

    // Ctrl-C in the middle of the questions: nothing is sent.
    let mut pty = Pty::spawn(&app, &["add-model"]);
    pty.expect("Account name");
    pty.send("pty-b\r");
    pty.expect("Endpoint base URL");
    pty.send("\u{3}");
    let (rest, status) = pty.finish();
    assert!(!status.success(), "{status}: {rest}");
    let list = relayctl(&app, &["accounts", "list", "--output", "json"])
        .ok()
        .json();
    let names: Vec<&str> = list["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .map(|a| a["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["pty-a"]);
}

#[test]
fn a_closed_stdout_is_a_quiet_exit() {
    // The reader goes away at once, as `relayctl … | head -0` would. Whether relayctl writes
    // before or after that, it must neither panic nor report an error.
    let mut child = Command::new(binary("relayctl"))
        .args(["completions", "zsh"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn relayctl");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fails if relayctl wrote a control character other than a line break: a terminal would act
/// on it (clear the screen, set the title, move the cursor, ring the bell).
#[track_caller]
fn assert_no_control_characters(run: &Run) {
    for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        let bad: Vec<char> = text
            .chars()
            .filter(|c| c.is_control() && *c != '\n')
            .collect();
        assert!(bad.is_empty(), "{stream} carries {bad:?}: {run:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_from_files_and_relayd_are_escaped_in_text_output() {
    let app = TestApp::start().await;
    // Clear the screen, set the window title, ring the bell, return to the line start, and a
    // C1 control sequence introducer (U+009B) that some terminals take as ESC [.
    let evil = "evil\u{1b}[2J\u{1b}]0;pwned\u{7}\r\u{9b}31m";
    let file = write_file(
        &app,
        "evil.json",
        &serde_json::json!([{
            "name": evil, "endpoint": "http://127.0.0.1:9/v1", "deploymentName": "d"
        }])
        .to_string(),
    );
    let text = relayctl(&app, &["import", "--batch", &file]).failed(1);
    assert_no_control_characters(&text);
    assert!(text.stdout.contains(r"evil\u{1b}[2J"), "{text:#?}");
    assert!(
        text.stdout.contains("name"),
        "the field is named: {text:#?}"
    );
    // JSON output stays exact: a script gets the name as it is in the file.
    let json = relayctl(&app, &["--output", "json", "import", "--batch", &file])
        .failed(1)
        .json();
    assert_eq!(json["errors"][0]["name"], evil);

    // relayd's answers: an account stored with control characters in its settings (by a
    // relayd from before names and descriptions were checked, or another writer of the store).
    let (mut settings, _) = shared::account::AccountInput {
        name: "plain".into(),
        endpoint: "http://127.0.0.1:9/v1".into(),
        deployment_name: "d".into(),
        ..Default::default()
    }
    .validate()
    .unwrap();
    settings.name = evil.to_owned();
    settings.description = Some(format!("about {evil}"));
    let id = shared::account::AccountId("acc_00000000000000aa".into());
    app.state
        .store
        .put_accounts(&[relayd::store::AccountRecord {
            id: id.clone(),
            settings,
            api_key: None,
            proxy: None,
            created_at: 0,
            updated_at: 0,
        }])
        .await
        .unwrap();
    app.state.accounts.reload().await.unwrap();
    for args in [
        &["accounts", "list"][..],
        &["accounts", "show", id.as_str()],
        &["models"],
    ] {
        let run = relayctl(&app, args).ok();
        assert_no_control_characters(&run);
        assert!(run.stdout.contains(r"evil\u{1b}[2J"), "{run:#?}");
    }
    let json = relayctl(&app, &["--output", "json", "accounts", "show", id.as_str()])
        .ok()
        .json();
    assert_eq!(json["name"], evil);
    assert_eq!(json["description"], format!("about {evil}"));
}
