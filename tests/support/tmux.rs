//! A program in a tmux pane: started detached on a tmux server of its own (its socket in a
//! private temporary directory, so parallel tests never share a server), driven with
//! `send-keys` and read with `capture-pane`, the way a person at a terminal would see and type.
//! The server is killed when the value is dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A tmux server running one program in one pane.
#[derive(Debug)]
pub struct Tmux {
    socket: PathBuf,
    // The socket's directory (and the start script), removed when the server is gone.
    _dir: tempfile::TempDir,
}

/// Quotes `value` for a POSIX shell.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

impl Tmux {
    /// Starts `program args` in a `cols`×`rows` pane, in `cwd`, with exactly the environment
    /// `env` (nothing inherited from the test or the tmux server). The pane stays on screen
    /// after the program exits, so a crash can still be read.
    ///
    /// # Panics
    /// When tmux is missing or the session cannot start.
    pub fn start(
        program: &[PathBuf],
        args: &[&str],
        cwd: &Path,
        env: &[(String, String)],
        (cols, rows): (u16, u16),
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tmux-")
            .tempdir()
            .expect("tmux directory");
        let mut line = format!("cd {} && exec env -i", quote(cwd.to_str().expect("UTF-8")));
        for (name, value) in env {
            line.push_str(&format!(" {}", quote(&format!("{name}={value}"))));
        }
        for word in program
            .iter()
            .map(|p| p.to_str().expect("UTF-8 path"))
            .chain(args.iter().copied())
        {
            line.push(' ');
            line.push_str(&quote(word));
        }
        let start = dir.path().join("start.sh");
        std::fs::write(&start, format!("{line}\n")).expect("write the start script");
        let tmux = Self {
            socket: dir.path().join("socket"),
            _dir: dir,
        };
        let start = start.to_str().expect("UTF-8").to_owned();
        let output = tmux.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            "sh",
            &start,
        ]);
        assert!(
            output.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        tmux.run(&["set-option", "-g", "remain-on-exit", "on"]);
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("tmux is needed for the terminal tests")
    }

    /// The pane's visible text now.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p"]).stdout).into_owned()
    }

    /// The pane's text including what scrolled off the top.
    pub fn history(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-S", "-"]).stdout).into_owned()
    }

    /// Types `text` literally (no key names), then nothing else.
    pub fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "0", "-l", text]);
    }

    /// Presses the named keys (`Enter`, `Escape`, `C-c`…).
    pub fn press(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "0"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Polls the screen (and its scrollback) until `ready` holds for it, every 200 ms; the
    /// screen when it does, or `Err` with the last screen when `within` passes first.
    pub async fn wait_for(
        &self,
        within: Duration,
        mut ready: impl FnMut(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.history();
            if ready(&screen) {
                return Ok(screen);
            }
            if Instant::now() >= deadline {
                return Err(screen);
            }
            // Polling the screen: tmux has no event for "this text appeared".
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}
