//! Buffered standard error for the log. Every request logs one line; written one `write(2)` per
//! line, that was a system call on the request path for each request (to journald's socket, a
//! pipe or a terminal). Lines are instead appended to one process-wide buffer and written out
//! together by a small flusher thread at most [`FLUSH_DELAY`] after the first of them, or at
//! once by the writer whose line fills [`FLUSH_AT`] bytes. Order is kept: one buffer, one lock.
//!
//! What this costs: a line reaches the log up to [`FLUSH_DELAY`] late, and a process killed with
//! SIGKILL loses at most that much of its log. [`flush`] writes everything out; relayd calls it
//! before it exits and before printing its own errors, and [`flush_on_panic`] before a panic
//! message.

use std::io::Write as _;
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How long the flusher lets lines gather after the first one arrives.
pub const FLUSH_DELAY: Duration = Duration::from_millis(50);
/// A buffer this full is written out by the writer that filled it.
pub const FLUSH_AT: usize = 64 * 1024;

/// The buffer and the flusher's wake-up.
#[derive(Debug)]
struct LineBuffer {
    lines: Mutex<Vec<u8>>,
    /// Signalled when the buffer stops being empty.
    arrived: Condvar,
    flush_at: usize,
}

impl LineBuffer {
    fn new(flush_at: usize) -> Self {
        Self {
            lines: Mutex::new(Vec::with_capacity(flush_at)),
            arrived: Condvar::new(),
            flush_at,
        }
    }

    fn lines(&self) -> MutexGuard<'_, Vec<u8>> {
        // Appending bytes cannot leave the buffer half-updated; a poisoned lock is still sound.
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `bytes`; returns the whole buffer when this filled it (the caller writes it out).
    fn append(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut lines = self.lines();
        let was_empty = lines.is_empty();
        lines.extend_from_slice(bytes);
        if lines.len() >= self.flush_at {
            return Some(std::mem::replace(
                &mut *lines,
                Vec::with_capacity(self.flush_at),
            ));
        }
        if was_empty {
            self.arrived.notify_one();
        }
        None
    }

    /// Everything buffered, if anything is.
    fn take(&self) -> Option<Vec<u8>> {
        let mut lines = self.lines();
        (!lines.is_empty())
            .then(|| std::mem::replace(&mut *lines, Vec::with_capacity(self.flush_at)))
    }

    /// Blocks until the buffer holds something.
    fn wait_for_lines(&self) {
        let mut lines = self.lines();
        while lines.is_empty() {
            lines = self
                .arrived
                .wait(lines)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

static STDERR: LazyLock<LineBuffer> = LazyLock::new(|| {
    // Best effort: without the thread, lines still go out when the buffer fills or on `flush`.
    let _ = std::thread::Builder::new()
        .name("relayd-log".into())
        .spawn(flusher);
    LineBuffer::new(FLUSH_AT)
});

fn flusher() {
    loop {
        STDERR.wait_for_lines();
        std::thread::sleep(FLUSH_DELAY);
        flush();
    }
}

/// Writes everything buffered to standard error now.
pub fn flush() {
    if let Some(pending) = STDERR.take() {
        write_out(&pending);
    }
}

fn write_out(bytes: &[u8]) {
    // Nowhere to report a failing standard error; the log is lost either way.
    let _ = std::io::stderr().lock().write_all(bytes);
}

/// Makes a panic write out the buffered log before its own message, so the lines that led up to
/// it come first.
pub fn flush_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush();
        report(info);
    }));
}

/// The log's writer: `tracing_subscriber::fmt::layer().with_writer(BufferedStderr)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BufferedStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BufferedStderr {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

impl std::io::Write for BufferedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(full) = STDERR.append(buf) {
            write_out(&full);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn lines_wait_in_order_until_the_buffer_fills() {
        let buffer = LineBuffer::new(16);
        assert_eq!(buffer.append(b"first\n"), None);
        assert_eq!(buffer.append(b"second\n"), None);
        assert_eq!(
            buffer.append(b"third\n").as_deref(),
            Some(&b"first\nsecond\nthird\n"[..])
        );
        assert_eq!(buffer.take(), None);
        assert_eq!(buffer.append(b"fourth\n"), None);
        assert_eq!(buffer.take().as_deref(), Some(&b"fourth\n"[..]));
    }

    #[test]
    fn the_flusher_is_woken_by_the_first_line() {
        let buffer = Arc::new(LineBuffer::new(1024));
        let waiter = {
            let buffer = Arc::clone(&buffer);
            std::thread::spawn(move || {
                buffer.wait_for_lines();
                buffer.take()
            })
        };
        assert_eq!(buffer.append(b"line\n"), None);
        assert_eq!(waiter.join().unwrap().as_deref(), Some(&b"line\n"[..]));
    }
}
