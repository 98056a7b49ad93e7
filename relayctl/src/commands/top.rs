//! `relayctl top`: a live full-screen view of one relayd, refreshed every `--interval` from
//! `GET /admin/v1/snapshot` — per account its state (with a cooldown's countdown), requests in
//! flight against its concurrency, requests/s, errors/s, median time to first byte and output
//! tokens/s; per key requests/s and tokens today against `tokensPerDay`; the queue depth.
//!
//! A fetcher thread asks for a snapshot, hands it over and waits an interval, so a slow or gone
//! relayd never freezes the keys: `q` quits at once, and a failed refresh shows a banner while
//! the last data stays on screen and the fetcher keeps trying. Without a terminal it refuses
//! (exit 2) and points at `--once`, which prints one snapshot through the output module, as
//! tables or (`--output json`) as the endpoint's JSON.
//!
//! Module map: [`model`] (rows, rates, sorting, filtering, keys pressed — pure and unit-tested),
//! [`screen`] (one ratatui frame), [`terminal`] (raw mode and the alternate screen, restored on
//! every way out).

mod model;
mod screen;
mod terminal;

use std::io::IsTerminal as _;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ratatui::crossterm::event::{self, Event, KeyEventKind};
use shared::admin::Snapshot;

use self::model::{Flow, Top};
use self::terminal::{Screen, Signals};
use super::Context;
use crate::UsageError;
use crate::cli::TopArgs;
use crate::client::AdminClient;

/// How often the screen is redrawn and keys are looked for: countdowns tick and a key press is
/// answered within this, whatever the refresh interval.
const TICK: Duration = Duration::from_millis(200);

/// How long `--once` waits for its snapshot.
const ONCE_TIMEOUT: Duration = Duration::from_secs(30);

/// Shows the live view until a quit key or signal, or prints one snapshot with `--once`.
pub(super) fn run(ctx: &Context<'_>, args: &TopArgs) -> anyhow::Result<()> {
    if args.once {
        // A script can wait longer than a person watching: the interval plays no part here.
        let snapshot = ctx.client()?.snapshot(ONCE_TIMEOUT)?;
        ctx.printer.snapshot(&snapshot)?;
        return Ok(());
    }
    if ctx.printer.is_json() {
        return Err(UsageError(
            "`relayctl top` draws a live screen; for one JSON snapshot use `relayctl --output json top --once`".to_owned(),
        )
        .into());
    }
    if !(std::io::stdout().is_terminal() && std::io::stdin().is_terminal()) {
        return Err(UsageError(
            "`relayctl top` needs a terminal; in scripts use `relayctl top --once` (tables) or `relayctl --output json top --once`".to_owned(),
        )
        .into());
    }
    let client = ctx.client()?;
    live(client, args)
}

/// Each refresh is given up after this long: the banner should appear within seconds of a
/// relayd that stops answering, and a slow one still gets a little more than an interval.
fn fetch_timeout(interval: Duration) -> Duration {
    interval.clamp(Duration::from_secs(2), Duration::from_secs(10))
}

fn live(client: AdminClient, args: &TopArgs) -> anyhow::Result<()> {
    let mut top = Top::new(args, client.server());
    let signals = Signals::register().context("cannot watch for termination signals")?;
    // Dropping `_stop` when this returns ends the fetcher at its next wait. It is not joined: a
    // request in progress can take up to its timeout, and quitting must not wait for it.
    let (updates, _stop) = spawn_fetcher(client, args.interval)?;
    let mut screen = Screen::enter().context("cannot set up the terminal")?;
    loop {
        loop {
            match updates.try_recv() {
                Ok(update) => top.update(update, Instant::now()),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => anyhow::bail!("the refresh thread stopped"),
            }
        }
        let now = Instant::now();
        screen.draw(|frame| screen::draw(frame, &mut top, now))?;
        if signals.received() {
            return Ok(());
        }
        if event::poll(TICK)?
            && let Event::Key(key) = event::read()?
            && key.kind == KeyEventKind::Press
            && top.on_key(key) == Flow::Quit
        {
            return Ok(());
        }
    }
}

/// One refresh: a snapshot, or why there is none.
type Update = Result<Snapshot, String>;

/// Starts the thread that fetches a snapshot every `interval` and sends it (or why it failed)
/// over the returned receiver; it stops when the returned sender is dropped.
fn spawn_fetcher(
    client: AdminClient,
    interval: Duration,
) -> anyhow::Result<(Receiver<Update>, Sender<()>)> {
    let (updates, received) = mpsc::channel();
    let (stop, stopped) = mpsc::channel::<()>();
    let timeout = fetch_timeout(interval);
    std::thread::Builder::new()
        .name("top-refresh".to_owned())
        .spawn(move || {
            loop {
                let update = client.snapshot(timeout).map_err(|e| e.to_string());
                if updates.send(update).is_err() {
                    return;
                }
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        })
        .context("cannot start the refresh thread")?;
    Ok((received, stop))
}
