//! The terminal while `top` runs: raw mode (keys arrive one by one, unechoed) on the alternate
//! screen with the cursor hidden — and the way back, on every way out: [`Screen`]'s `Drop` (quit,
//! an error, an unwinding panic), a panic hook that restores before the message is printed (so
//! it lands on the normal screen, readable), and SIGTERM, SIGHUP or SIGINT, which [`Signals`]
//! turns into a quit the loop sees within a tick. (In raw mode Ctrl-C is a key, not a signal.)

use std::io::{self, Stdout};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::cursor::{Hide, Show};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};

/// Whether the terminal is in `top`'s mode, so it is restored exactly once whichever way out
/// comes first.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The terminal in `top`'s mode until dropped.
#[derive(Debug)]
pub(super) struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    /// Enters raw mode and the alternate screen.
    pub(super) fn enter() -> io::Result<Self> {
        install_panic_hook();
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        // Anything failing from here on still restores: `restore` runs on the error path too.
        let entered = execute!(io::stdout(), EnterAlternateScreen, Hide)
            .and_then(|()| Terminal::new(CrosstermBackend::new(io::stdout())));
        match entered {
            Ok(terminal) => Ok(Self { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }

    /// Draws one frame (ratatui writes only what changed since the last one).
    pub(super) fn draw(&mut self, frame: impl FnOnce(&mut ratatui::Frame<'_>)) -> io::Result<()> {
        self.terminal.draw(frame).map(|_| ())
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves `top`'s mode if it is on: the normal screen with its old contents, the cursor shown,
/// line editing and echo back.
fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        // Best effort: there is nowhere to report a terminal that cannot be written to.
        let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
        let _ = disable_raw_mode();
    }
}

/// Restores the terminal before the default hook prints a panic message (installed once).
fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// SIGTERM, SIGHUP and SIGINT, noted instead of ending the process on the spot, so the loop can
/// restore the terminal first.
#[derive(Debug)]
pub(super) struct Signals(Arc<AtomicBool>);

impl Signals {
    /// Starts noting the signals.
    pub(super) fn register() -> io::Result<Self> {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGHUP,
            signal_hook::consts::SIGINT,
        ] {
            signal_hook::flag::register(signal, Arc::clone(&flag))?;
        }
        Ok(Self(flag))
    }

    /// Whether one arrived.
    pub(super) fn received(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
