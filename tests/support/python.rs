//! Real client tooling for the end-to-end tests: a Python venv with the official `anthropic` and
//! `openai` SDKs, and an npm install of Claude Code, each provisioned once under the workspace
//! target directory and shared by every test process.
//!
//! Provisioning is race-safe without locks: each process builds in its own temporary directory
//! and `rename`s it into place; a process that loses the race throws its copy away and uses the
//! winner's. A directory only ever appears at its final path complete, so "the path exists" means
//! "it is ready". Within one process a mutex keeps parallel tests from building twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;

/// The workspace target directory (`<target>/debug/deps/it-HASH` → `<target>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("test executable lives in <target>/<profile>/deps")
        .to_owned()
}

/// Returns `<target>/<name>`, building it with `build` (given an empty directory) unless some
/// process already did. `build` runs in a private temporary directory that is renamed into place
/// only when it succeeded, so a failed or interrupted build leaves nothing behind at the final path.
pub fn provision(name: &str, build: impl FnOnce(&Path) -> Result<(), String>) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let target = target_dir();
    let final_path = target.join(name);
    if !final_path.exists() {
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}.building-"))
            .tempdir_in(&target)
            .expect("temporary build directory in the target dir");
        if let Err(e) = build(temp.path()) {
            panic!("provisioning {name} failed: {e}");
        }
        let temp = temp.keep();
        if std::fs::rename(&temp, &final_path).is_err() {
            // Lost the race (the destination exists and is not empty): use the winner's copy.
            assert!(
                final_path.exists(),
                "cannot move {} to {}",
                temp.display(),
                final_path.display()
            );
            let _ = std::fs::remove_dir_all(&temp);
        }
    }
    built.insert(name.to_owned(), final_path.clone());
    final_path
}

/// Runs `command` to completion, turning a non-zero exit into an error carrying its output.
pub fn run_checked(command: &mut Command) -> Result<String, String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{command:?} exited with {}\nstdout:\n{stdout}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The venv's interpreter, with the official `anthropic` and `openai` SDKs and the Prometheus
/// client (whose text-format parser checks `/metrics`) installed.
/// Blocking (the first call in the target dir takes a while): call it before starting servers on
/// the test's runtime, or from `spawn_blocking`.
pub fn sdk_python() -> PathBuf {
    // The name carries the package set: a venv cached by an older checkout is not reused.
    let venv = provision("sdk-venv-2", |dir| {
        run_checked(Command::new("python3").args(["-m", "venv"]).arg(dir))?;
        run_checked(
            Command::new(dir.join("bin/python"))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(["anthropic", "openai", "prometheus_client"]),
        )?;
        Ok(())
    });
    venv.join("bin/python")
}

/// The installed SDK versions, e.g. `anthropic 0.75.0, openai 2.8.1`.
pub fn sdk_versions(python: &Path) -> String {
    run_checked(Command::new(python).args([
        "-c",
        "import anthropic, openai; print(f'anthropic {anthropic.__version__}, openai {openai.__version__}')",
    ]))
    .expect("SDKs importable")
    .trim()
    .to_owned()
}

/// Directory of the Python scripts the SDK tests run (`tests/sdk/`).
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk")
}

/// What a child process did.
#[derive(Debug)]
pub struct Finished {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Finished {
    /// Standard output parsed as JSON; panics with the whole output otherwise.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "output is not JSON ({e}); exit {:?}\nstdout:\n{}\nstderr:\n{}",
                self.code, self.stdout, self.stderr
            )
        })
    }

    /// Panics with the whole output unless the process exited 0.
    pub fn assert_success(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "child failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `command` asynchronously (so in-process servers on the same runtime keep serving), killing
/// it when `timeout` passes.
pub async fn run_with_timeout(mut command: tokio::process::Command, timeout: Duration) -> Finished {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("spawn child process");
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(output) => {
            let output = output.expect("child output");
            Finished {
                code: output.status.code(),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            }
        }
        // Dropping the future drops the child, which kill_on_drop kills.
        Err(_) => panic!("{command:?} did not finish within {timeout:?}"),
    }
}

/// Runs `tests/sdk/<script>` with the SDK venv's `python`, `args` and `envs`; 60 s at most.
pub async fn run_script(
    python: &Path,
    script: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Finished {
    let mut command = tokio::process::Command::new(python);
    command.arg(scripts_dir().join(script)).args(args);
    // The SDKs honour these; none may point the test elsewhere than 127.0.0.1.
    for var in [
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        command.env_remove(var);
    }
    command
        .env("NO_PROXY", "127.0.0.1")
        .env("PYTHONUNBUFFERED", "1");
    for (k, v) in envs {
        command.env(k, v);
    }
    run_with_timeout(command, Duration::from_secs(60)).await
}

/// The Claude Code executable from an npm install of `@anthropic-ai/claude-code` under the target
/// dir, as a command prefix: the package's `bin.claude` entry is a native binary in 2.x releases
/// and was a `cli.js` script before, which needs `node` in front.
pub fn claude_code() -> Vec<PathBuf> {
    let dir = provision("claude-code", |dir| {
        run_checked(
            Command::new("npm")
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    "--prefix",
                ])
                .arg(dir)
                .arg("@anthropic-ai/claude-code"),
        )?;
        Ok(())
    });
    let package = dir.join("node_modules/@anthropic-ai/claude-code");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(package.join("package.json")).expect("claude-code package.json"),
    )
    .expect("package.json is JSON");
    let bin = manifest["bin"]["claude"]
        .as_str()
        .or_else(|| manifest["bin"].as_str())
        .expect("package.json names a `claude` bin");
    let bin = package.join(bin);
    let is_script = matches!(
        bin.extension().and_then(|e| e.to_str()),
        Some("js" | "cjs" | "mjs")
    );
    if is_script {
        vec![PathBuf::from("node"), bin]
    } else {
        vec![bin]
    }
}

/// `claude -p PROMPT --output-format json --model MODEL --allowedTools Read` in `work`, with a
/// clean environment: `HOME`, relayd at `base_url`, the relay key in `key_var`, `model` for the
/// small model too, and no non-essential traffic. Callers add their own variables.
pub fn claude_print_command(
    prompt: &str,
    model: &str,
    home: &Path,
    work: &Path,
    base_url: &str,
    (key_var, key): (&str, &str),
) -> tokio::process::Command {
    let command = claude_code();
    let mut cc = tokio::process::Command::new(&command[0]);
    cc.args(&command[1..])
        .args(["-p", prompt])
        .args(["--output-format", "json", "--model", model])
        .args(["--allowedTools", "Read"])
        .current_dir(work)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("ANTHROPIC_BASE_URL", base_url)
        .env(key_var, key)
        .env("ANTHROPIC_SMALL_FAST_MODEL", model)
        .env("ANTHROPIC_DEFAULT_HAIKU_MODEL", model)
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("NO_PROXY", "127.0.0.1");
    cc
}
