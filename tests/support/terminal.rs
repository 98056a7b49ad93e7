//! A program under a real pseudo-terminal of a fixed size (util-linux `script`), its output fed
//! to a vt100 parser, so a test reads the screen a person would see — full-screen programs
//! redraw parts of it with cursor moves, which a plain text search of the output cannot follow —
//! and types keys. Waiting is on the screen reaching an expected state; the deadline only bounds
//! a hang.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// A running program on a pseudo-terminal.
pub struct Terminal {
    child: Child,
    stdin: Option<ChildStdin>,
    chunks: Receiver<Vec<u8>>,
    parser: vt100::Parser,
    output: Vec<u8>,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal")
            .field("screen", &self.screen())
            .finish_non_exhaustive()
    }
}

/// Runs the shell command `line` under util-linux `script` (a pseudo-terminal; quiet, flushing
/// every write, exiting with the command's status, no typescript file), with `configure` adding
/// environment. Returns the child, its stdin piped, and its output as it arrives, read on a
/// thread of its own.
///
/// # Panics
/// When util-linux `script` is missing.
pub fn script(line: &str, configure: impl FnOnce(&mut Command)) -> (Child, Receiver<Vec<u8>>) {
    let mut command = Command::new("script");
    command
        .args(["-qfec", line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    configure(&mut command);
    let mut child = command
        .spawn()
        .expect("util-linux `script` is needed for the pseudo-terminal tests");
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, chunks) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0_u8; 8192];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    (child, chunks)
}

/// `value` quoted for `sh`.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

impl Terminal {
    /// Starts `program` with `args` on a `rows` × `cols` terminal (TERM=xterm-256color).
    ///
    /// # Panics
    /// When util-linux `script` is missing.
    pub fn spawn(program: &Path, args: &[&str], rows: u16, cols: u16) -> Self {
        let mut line = format!(
            "stty rows {rows} cols {cols} && exec {}",
            quote(&program.display().to_string())
        );
        for arg in args {
            line.push(' ');
            line.push_str(&quote(arg));
        }
        let (mut child, chunks) = script(&line, |command| {
            command
                .env("TERM", "xterm-256color")
                .env("SHELL", "/bin/sh");
        });
        Self {
            stdin: child.stdin.take(),
            child,
            chunks,
            parser: vt100::Parser::new(
                std::num::NonZeroU16::new(rows).expect("rows > 0"),
                std::num::NonZeroU16::new(cols).expect("cols > 0"),
                0,
            ),
            output: Vec::new(),
        }
    }

    /// The screen as text, one line per row (trailing blanks trimmed).
    pub fn screen(&self) -> String {
        self.parser.screen().contents()
    }

    /// The parsed terminal state (cursor, alternate screen, modes).
    pub fn state(&self) -> &vt100::Screen {
        self.parser.screen()
    }

    /// Everything the program wrote so far, escape sequences included.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    fn feed(&mut self, chunk: &[u8]) {
        self.parser.process(chunk);
        self.output.extend_from_slice(chunk);
    }

    /// Reads output until the screen satisfies `condition` and returns that screen.
    ///
    /// # Panics
    /// After `within`, or when the program ends first, with `what` and the screen.
    #[track_caller]
    pub fn wait_for(
        &mut self,
        within: Duration,
        what: &str,
        condition: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.screen();
            if condition(&screen) {
                return screen;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.feed(&chunk),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("waited {within:?} for {what}; the screen:\n{screen}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the program ended before {what}; the screen:\n{screen}")
                }
            }
        }
    }

    /// Types `keys`.
    pub fn send(&mut self, keys: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(keys.as_bytes()).expect("type");
        stdin.flush().expect("flush");
    }

    /// Waits up to `within` for the program to exit, reading the rest of its output.
    ///
    /// # Panics
    /// When it is still running then (it is killed first).
    pub fn finish(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "still running after {within:?}; the screen:\n{}",
                    self.screen()
                );
            }
            // Output keeps the wait short; without any, look again soon.
            match self
                .chunks
                .recv_timeout(left.min(Duration::from_millis(50)))
            {
                Ok(chunk) => self.feed(&chunk),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            }
        };
        while let Ok(chunk) = self.chunks.recv_timeout(Duration::from_secs(5)) {
            self.feed(&chunk);
        }
        drop(self.stdin.take());
        status
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
