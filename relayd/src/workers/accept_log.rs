//! The acceptor's log of failing `accept` calls: one warning per episode of failures (out of
//! descriptors, say), not one line per attempt.

use std::io;
use std::time::{Duration, Instant};

use super::ACCEPT_BACKOFF;

/// Least time between two warnings that the connection cap was reached, or that accepting
/// failed: a server running at a limit reaches it again and again.
pub(super) const WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// How long accepting must have gone without a failure before an episode of failures is over.
const RECOVERY_QUIET: Duration = Duration::from_secs(2);

/// Logs failing `accept` calls once per episode rather than once per attempt. An episode
/// starts with a failure and ends at the first connection accepted [`RECOVERY_QUIET`] after its
/// last failure, so that a process hovering at its descriptor limit (a socket closes, one
/// connection is taken, the next attempt fails again) is one episode, not one per freed
/// descriptor. A warning starts an episode, an info line ends it; an episode starting within
/// [`WARNING_INTERVAL`] of the last warning is logged at debug level only. Every failed attempt
/// is a debug line.
#[derive(Debug, Default)]
pub(super) struct AcceptLog {
    episode: Option<AcceptEpisode>,
    last_warning: Option<Instant>,
}

#[derive(Debug)]
struct AcceptEpisode {
    failures: u64,
    since: Instant,
    last_failure: Instant,
    warned: bool,
}

impl AcceptLog {
    pub(super) fn failed(&mut self, e: &io::Error) {
        let now = Instant::now();
        if let Some(episode) = &mut self.episode {
            episode.failures += 1;
            episode.last_failure = now;
            tracing::debug!(
                error = %e,
                attempt = episode.failures,
                "accepting a connection failed again"
            );
            return;
        }
        let warned = self
            .last_warning
            .is_none_or(|at| at.elapsed() >= WARNING_INTERVAL);
        if warned {
            self.last_warning = Some(now);
            tracing::warn!(
                error = %e,
                "cannot accept connections: {e}; retrying every {} ms until it works (logged \
                 again when it does)",
                ACCEPT_BACKOFF.as_millis()
            );
        } else {
            tracing::debug!(error = %e, "cannot accept connections; retrying");
        }
        self.episode = Some(AcceptEpisode {
            failures: 1,
            since: now,
            last_failure: now,
            warned,
        });
    }

    /// A connection was accepted: the end of an episode, once failures have stopped. One
    /// branch when there is none, as on every accept of a healthy server.
    pub(super) fn accepted(&mut self) {
        let Some(episode) = &self.episode else {
            return;
        };
        if episode.last_failure.elapsed() < RECOVERY_QUIET {
            return;
        }
        let (failures, millis) = (episode.failures, episode.since.elapsed().as_millis());
        if episode.warned {
            tracing::info!(
                failed = failures,
                "accepting connections again; {failures} attempts failed over {millis} ms"
            );
        } else {
            tracing::debug!(failed = failures, "accepting connections again");
        }
        self.episode = None;
    }
}

/// Errors that concern one incoming connection (it was reset before we took it), not the
/// listener.
pub(super) fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
