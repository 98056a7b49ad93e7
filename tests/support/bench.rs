//! Pieces the benchmarks (`benches/load.rs`, `benches/soak.rs`) share: the release relayd built
//! into the bench's own target directory, child processes that announce their address, and
//! relayd's memory read from `/proc`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

/// A number from the environment variable `name`, or `default` when unset.
pub fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// Builds the release relayd into the target directory this bench runs from and returns its path.
/// `cargo bench` only builds this package; relayd's binary belongs to another one. Cargo releases
/// its build lock before running benches, so the nested build does not deadlock.
///
/// `BENCH_RELAYD_BIN` names a relayd binary to measure instead (nothing is built): an earlier
/// build kept aside, so that runs alternating it with the current one compare two versions. (Not
/// `RELAYD_…`: relayd reads those as settings and refuses unknown ones.)
pub fn build_relayd() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("BENCH_RELAYD_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("BENCH_RELAYD_BIN={} is not a file", path.display());
        }
        eprintln!("bench: measuring {} (BENCH_RELAYD_BIN)", path.display());
        return Ok(path);
    }
    let exe = std::env::current_exe()?;
    // …/target/release/deps/BENCH-HASH → …/target/release
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("unexpected bench path {}", exe.display()))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| anyhow!("unexpected bench path {}", exe.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    eprintln!("bench: cargo build --release -p relayd --bin relayd");
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "relayd", "--bin", "relayd"])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .context("run cargo")?;
    if !status.success() {
        bail!("cargo build --release -p relayd failed ({status})");
    }
    let path = profile_dir.join("relayd");
    if !path.exists() {
        bail!("{} missing after the build", path.display());
    }
    Ok(path)
}

/// Which output carries the `listening on ADDR` line.
#[derive(Debug, Clone, Copy)]
pub enum Pipe {
    /// The process's standard output.
    Stdout,
    /// Its standard error.
    Stderr,
}

/// A child process that announced its address. Killed when dropped.
#[derive(Debug)]
pub struct Process {
    /// The child.
    pub child: Child,
    /// The address it announced.
    pub addr: SocketAddr,
}

impl Process {
    /// Spawns `command` and waits (up to 60 s) for its `listening on ADDR` line on `pipe`.
    pub fn start(command: &mut Command, pipe: Pipe) -> Result<Self> {
        command.stdin(Stdio::null());
        match pipe {
            Pipe::Stdout => command.stdout(Stdio::piped()).stderr(Stdio::inherit()),
            Pipe::Stderr => command.stdout(Stdio::null()).stderr(Stdio::piped()),
        };
        let mut child = command.spawn().context("spawn")?;
        let out: Box<dyn std::io::Read + Send> = match pipe {
            Pipe::Stdout => Box::new(child.stdout.take().context("stdout")?),
            Pipe::Stderr => Box::new(child.stderr.take().context("stderr")?),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the address, then keeps draining (and discarding) the log so the child never
        // blocks on a full pipe. Ends at EOF, when the child is killed.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut head = String::new();
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let Some(sender) = tx.as_ref() else { continue };
                let addr = line
                    .split("listening on ")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|a| a.parse::<SocketAddr>().ok());
                match addr {
                    Some(addr) => {
                        let _ = sender.send(Ok(addr));
                        tx = None;
                    }
                    None => {
                        head.push_str(&line);
                        head.push('\n');
                    }
                }
            }
            if let Some(tx) = tx {
                let _ = tx.send(Err(head));
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(addr)) => Ok(Self { child, addr }),
            Ok(Err(log)) => {
                let _ = child.kill();
                bail!("process exited before listening:\n{log}")
            }
            Err(_) => {
                let _ = child.kill();
                bail!("process did not start listening within 60 s")
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `kB` field of `/proc/PID/status`.
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Samples relayd's VmRSS every 50 ms while a run lasts; keeps the maximum.
#[derive(Debug)]
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    max_kb: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    /// Starts sampling process `pid`.
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let max_kb = Arc::new(AtomicU64::new(0));
        let (s, m) = (Arc::clone(&stop), Arc::clone(&max_kb));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(kb) = proc_status_kb(pid, "VmRSS:") {
                    m.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self {
            stop,
            max_kb,
            thread,
        }
    }

    /// Stops and returns the largest VmRSS seen, in kB.
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.max_kb.load(Ordering::Relaxed)
    }
}
