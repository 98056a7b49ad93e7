//! A private `redis-server` child process for tests: its own free port on 127.0.0.1, no
//! persistence, killed when the handle is dropped. Tests never touch a Redis they did not start.
//!
//! A missing `redis-server` binary is a test failure with instructions, never a silent skip: a
//! skipped backend would let the Redis store rot unnoticed.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long one start attempt may take before it is abandoned.
const STARTUP_DEADLINE: Duration = Duration::from_secs(10);
/// Start attempts, each on a fresh port, before giving up.
const ATTEMPTS: usize = 5;
/// Pause between readiness probes; the probe itself is the synchronisation, this only avoids
/// spinning.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A running `redis-server` owned by the test; killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    // Holds the working directory (and log) for as long as the server runs.
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers.
    ///
    /// # Panics
    /// When `redis-server` is not installed, or when it cannot be started after several attempts,
    /// with a message saying why.
    pub fn start() -> Self {
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            match Self::try_start() {
                Ok(server) => return server,
                // The usual cause is a port taken between choosing and binding it: try another.
                Err(e) => failures.push(e),
            }
        }
        panic!(
            "redis-server did not start after {ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    /// The port the server listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A `redis://` URL for the server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn try_start() -> Result<Self, String> {
        let port = free_port()?;
        let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let log = dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "`redis-server` was not found on PATH; the Redis store tests need it. \
                 Install Redis (for example `apt-get install redis-server` or `brew install redis`) \
                 and run the tests again."
            ),
            Err(e) => return Err(format!("cannot run redis-server: {e}")),
        };
        // From here on, dropping `server` kills the child, whatever goes wrong.
        let mut server = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!(
                    "redis-server on port {port} exited with {status}; log:\n{log}"
                ));
            }
            match server_pid(port) {
                // Another server grabbed the port between our choosing and its binding.
                Some(pid) if pid != server.child.id() => {
                    return Err(format!(
                        "port {port} is served by another process (pid {pid})"
                    ));
                }
                Some(_) => return Ok(server),
                None if Instant::now() >= deadline => {
                    return Err(format!(
                        "redis-server on port {port} did not answer within {STARTUP_DEADLINE:?}"
                    ));
                }
                None => std::thread::sleep(POLL_INTERVAL),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Errors mean the process is already gone, which is the goal.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (the OS picks it; we release it for the server).
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("cannot read the bound port: {e}"))
}

/// The process id of the Redis answering on `port`, or `None` while nothing answers yet.
/// Checking the pid, not just that something answers, proves the server is ours.
fn server_pid(port: u16) -> Option<u32> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"INFO server\r\n").ok()?;
    let mut reader = BufReader::new(stream);
    let mut header = String::new();
    reader.read_line(&mut header).ok()?;
    // A bulk reply `$<len>\r\n<body>\r\n`; anything else (`-LOADING …`) means not ready yet.
    let len: usize = header.strip_prefix('$')?.trim().parse().ok()?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}
