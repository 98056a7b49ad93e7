//! The real `relayd` binary as a child process: started on port 0 with its own data directory,
//! its address read from the "listening on" log line, its stderr kept for assertions.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// Path of a binary built by this workspace (`relayd`, `relayctl`), found next to the test
/// executable's `deps/` directory.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built; run the tests with `cargo test --workspace` (it builds the binaries first)",
        path.display()
    );
    path
}

/// A running relayd process. Killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    /// The child.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    log: Arc<Mutex<String>>,
}

/// The outcome of a start attempt.
#[derive(Debug)]
pub enum Started {
    /// It is listening.
    Running(Daemon),
    /// It exited first, with this code and stderr.
    Exited(Option<i32>, String),
}

impl Daemon {
    /// Starts relayd with `data_dir`, listening on an ephemeral port, plus `args` and `envs`.
    /// Panics unless it comes up.
    pub fn start(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        match Self::try_start(data_dir, args, envs) {
            Started::Running(d) => d,
            Started::Exited(code, log) => panic!("relayd exited with {code:?}:\n{log}"),
        }
    }

    /// Starts relayd and reports whether it came up or exited.
    pub fn try_start(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Started {
        Self::try_start_without(data_dir, args, envs, &[])
    }

    /// Like [`Daemon::try_start`], and removes the variables in `removed` from relayd's
    /// environment (including the `RELAYD_LOG=info` set by default).
    pub fn try_start_without(
        data_dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        removed: &[&str],
    ) -> Started {
        Self::try_start_under(&[], data_dir, args, envs, removed)
    }

    /// Starts relayd through `wrapper`, a command that runs the program given after it (e.g.
    /// `["prlimit", "--nofile=64:64", "--"]`). Panics unless it comes up.
    pub fn start_under(
        wrapper: &[&str],
        data_dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        match Self::try_start_under(wrapper, data_dir, args, envs, &[]) {
            Started::Running(d) => d,
            Started::Exited(code, log) => panic!("relayd exited with {code:?}:\n{log}"),
        }
    }

    fn try_start_under(
        wrapper: &[&str],
        data_dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        removed: &[&str],
    ) -> Started {
        let mut command = match wrapper {
            [] => Command::new(binary("relayd")),
            [program, wrapper_args @ ..] => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(binary("relayd"));
                command
            }
        };
        if !args.contains(&"--listen") {
            command.arg("--listen").arg("127.0.0.1:0");
        }
        command
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env_remove("RELAYD_ENCRYPTION_KEY")
            .env_remove("RELAYD_ADMIN_TOKEN")
            .env_remove("RELAYD_STORE")
            .env("RELAYD_LOG", "info")
            // Probes would add requests to every mock upstream; the tests of probing turn
            // them on.
            .env("RELAYD_UPSTREAM__PROBE_PROFILES", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            command.env(k, v);
        }
        for k in removed {
            command.env_remove(k);
        }
        let mut child = command.spawn().expect("spawn relayd");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<SocketAddr>();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line
                    .split("listening on ")
                    .nth(1)
                    // Text logs end the address with a space, JSON logs with a quote.
                    .and_then(|rest| rest.split([' ', '"']).next())
                    .and_then(|a| a.parse::<SocketAddr>().ok())
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr);
                }
                let mut log = sink.lock().expect("log lock");
                log.push_str(&line);
                log.push('\n');
            }
        });
        // The reader thread drops the sender at EOF, so this returns as soon as relayd is
        // listening or has exited; the timeout only bounds a hung start.
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => Started::Running(Self {
                child,
                addr,
                data_dir: data_dir.to_owned(),
                log,
            }),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().expect("wait");
                let text = log.lock().expect("log lock").clone();
                Started::Exited(status.code(), text)
            }
        }
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The admin token relayd generated in its data directory.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token"))
            .expect("admin.token")
            .trim()
            .to_owned()
    }

    /// An admin API client.
    pub fn admin(&self) -> crate::http::Admin {
        crate::http::Admin::new(&self.url(""), &self.admin_token())
    }

    /// Everything relayd logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Sends a signal (`TERM`, `HUP`, `INT`…) with kill(1); this workspace forbids the unsafe
    /// code a direct `kill(2)` would need.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits up to `timeout` until the log contains `needle`; returns whether it did.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
