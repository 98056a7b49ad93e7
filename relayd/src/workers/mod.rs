//! The serving threads. Client and admin connections are answered on `workers` threads, each
//! running its own single-threaded tokio runtime; one acceptor on the main runtime hands each
//! new connection to the next thread in turn, and the connection stays there for its life.
//!
//! Why not tokio's work-stealing runtime: relaying one request is two sockets and some tens of
//! microseconds of CPU, and on a multi-thread runtime its wake-ups bounced between worker threads
//! (futex calls, context switches, cold caches). Measured at 64 connections on two cores, that
//! scheduling cost relayd about a fifth of its CPU per request and cost the upstream and client
//! as much again in lost batching. A thread also keeps its own pool of upstream connections
//! ([`crate::upstream::Upstreams`] picks it by [`crate::serving_thread::index`]), so a request never
//! waits for another thread to drive its upstream socket. Background work (usage writer, Redis,
//! signals, probes, the metrics listener) stays on the main runtime.
//!
//! The trade-off: an unlucky spread of busy connections is not rebalanced. For a relay whose
//! requests wait on GPUs for seconds, the CPU per request is too small for that to matter.
//!
//! The acceptor also guards the process's descriptors. At most `max_connections` client
//! connections are served at once; beyond that the acceptor stops accepting until one closes,
//! so further clients wait in the kernel's listen queue (and past that their connection attempts
//! are retried by their TCP stack) rather than being refused. If accepting fails anyway (out of
//! descriptors: EMFILE, ENFILE), it pauses briefly and tries again for as long as that lasts,
//! logging the episode once when it starts and once when it ends. Each connection's read
//! deadlines are in [`crate::connection`].

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::{GuardedService, GuardedStream, Phase, ReadTimeouts};

mod accept_log;
#[cfg(test)]
mod tests;

use accept_log::{AcceptLog, WARNING_INTERVAL, is_connection_error};

/// How long the acceptor pauses after an error that is not about one connection (out of file
/// descriptors, say): short, so that service resumes soon after descriptors free up, and long
/// enough not to spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How client connections are limited: their read deadlines and how many are served at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionLimits {
    /// Per-connection read deadlines.
    pub(crate) timeouts: ReadTimeouts,
    /// Most connections served at once.
    pub(crate) max_connections: usize,
}

#[cfg(test)]
impl ConnectionLimits {
    /// Limits no test runs into unless it means to.
    pub(crate) fn generous() -> Self {
        Self::of(
            Duration::from_secs(60),
            Duration::from_secs(60),
            Duration::from_secs(60),
            10_000,
        )
    }

    /// Header, body and idle timeouts and a connection cap.
    pub(crate) fn of(header: Duration, body: Duration, idle: Duration, max: usize) -> Self {
        Self {
            timeouts: ReadTimeouts {
                header,
                body,
                keep_alive_idle: idle,
            },
            max_connections: max,
        }
    }
}

/// A connection on its way to a serving thread, with the handle that lets a drain reach it and
/// its place under the connection cap (given back when the connection ends).
type Handoff = (std::net::TcpStream, Watcher, OwnedSemaphorePermit);

/// The running serving threads.
#[derive(Debug)]
struct Workers {
    inboxes: Vec<mpsc::UnboundedSender<Handoff>>,
    threads: Vec<JoinHandle<()>>,
    next: usize,
}

impl Workers {
    /// Starts `count` threads answering with `app`. `abort` stops them at once, dropping open
    /// connections; otherwise they stop when their inboxes close and their connections end.
    fn start(
        count: usize,
        app: &axum::Router,
        timeouts: ReadTimeouts,
        abort: &CancellationToken,
    ) -> io::Result<Self> {
        let mut workers = Self {
            inboxes: Vec::with_capacity(count),
            threads: Vec::with_capacity(count),
            next: 0,
        };
        for i in 0..count.max(1) {
            // Built here so that a failure is an error of `serve`, not a dead thread.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (inbox, connections) = mpsc::unbounded_channel();
            let app = app.clone();
            let abort = abort.clone();
            let thread = std::thread::Builder::new()
                .name(format!("relayd-worker-{i}"))
                .spawn(move || {
                    crate::serving_thread::enter(i);
                    runtime.block_on(serve_connections(connections, app, timeouts, abort));
                    // Dropping the runtime here, on this thread, ends whatever the connections
                    // spawned (finished requests record their usage as they are dropped) before
                    // `join` reports the thread done.
                    drop(runtime);
                })?;
            workers.inboxes.push(inbox);
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// Hands a new connection to the next thread.
    fn dispatch(&mut self, tcp: TcpStream, watcher: Watcher, slot: OwnedSemaphorePermit) {
        // Each event-driven socket belongs to one runtime's reactor: move it out of this one.
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a client connection to a serving thread");
                return;
            }
        };
        let inbox = &self.inboxes[self.next];
        self.next = (self.next + 1) % self.inboxes.len();
        if inbox.send((tcp, watcher, slot)).is_err() {
            // Only after an abort; the connection is closed as it is dropped.
            tracing::warn!("a serving thread has stopped; connection closed");
        }
    }

    /// Stops handing out connections and waits until every thread has finished its own.
    async fn join(self) {
        drop(self.inboxes);
        let threads = self.threads;
        let joined = tokio::task::spawn_blocking(move || {
            threads.into_iter().filter_map(|t| t.join().err()).count()
        })
        .await;
        match joined {
            Ok(0) => {}
            Ok(n) => tracing::error!(panicked = n, "{n} serving threads panicked"),
            Err(e) => tracing::error!(error = %e, "waiting for the serving threads failed"),
        }
    }
}

/// One serving thread: serves each connection it is handed until the inbox closes, then waits
/// for its connections to end (a drain tells them to close after their current request).
async fn serve_connections(
    mut inbox: mpsc::UnboundedReceiver<Handoff>,
    app: axum::Router,
    timeouts: ReadTimeouts,
    abort: CancellationToken,
) {
    let connections = TaskTracker::new();
    let serving = async {
        while let Some((tcp, watcher, slot)) = inbox.recv().await {
            let tcp = match TcpStream::from_std(tcp) {
                Ok(tcp) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot serve a client connection");
                    continue;
                }
            };
            let phase = Phase::new();
            let io = TokioIo::new(GuardedStream::new(tcp, timeouts, Arc::clone(&phase)));
            let connection = hyper::server::conn::http1::Builder::new()
                // The read deadlines are `GuardedStream`'s (see `crate::connection` for why not
                // hyper's); hyper's would need a timer and default to 30 s if given one.
                .header_read_timeout(None)
                .serve_connection(io, GuardedService::new(app.clone(), phase));
            let served = watcher.watch(connection);
            connections.spawn(async move {
                // Held for the connection's life: its place under `max_connections`.
                let _slot = slot;
                if let Err(e) = served.await {
                    // Clients that leave mid-request are routine, not worth more than debug.
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
            });
        }
        connections.close();
        connections.wait().await;
    };
    tokio::select! {
        () = serving => {}
        () = abort.cancelled() => {}
    }
}

/// Accepts on `listener` until `shutdown` completes, serving on `workers` threads within
/// `limits`; then stops accepting, lets open requests finish, and returns once every serving
/// thread has stopped. Dropping the returned future (a drain cut off by its deadline) stops the
/// threads at once.
pub(crate) async fn serve(
    listener: TcpListener,
    app: axum::Router,
    workers: usize,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let abort = CancellationToken::new();
    let _abort_when_dropped = abort.clone().drop_guard();
    let mut workers = Workers::start(workers, &app, limits.timeouts, &abort)?;
    let graceful = GracefulShutdown::new();
    let max_connections = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut last_cap_warning: Option<Instant> = None;
    let mut accept_log = AcceptLog::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if last_cap_warning.is_none_or(|at| at.elapsed() >= WARNING_INTERVAL) {
                    last_cap_warning = Some(Instant::now());
                    tracing::warn!(
                        max_connections,
                        "{max_connections} client connections open (server.max_connections); \
                         new ones wait until one closes"
                    );
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        // Only if the semaphore were closed, which nothing does.
                        Err(_) => break,
                    },
                }
            }
        };
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, _peer)) => {
                accept_log.accepted();
                // TCP_NODELAY: a streamed answer is many small writes (one SSE event each);
                // with Nagle's algorithm each one after the first waits for the client's
                // delayed ACK, 40 ms per event.
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::warn!(error = %e, "cannot set TCP_NODELAY on a client connection");
                }
                workers.dispatch(tcp, graceful.watcher(), slot);
            }
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                // Out of descriptors, most likely: the connection stays queued in the kernel and
                // the next attempt after a pause takes it, once another socket has closed.
                accept_log.failed(&e);
                drop(slot);
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    drop(listener);
    // Tells every open connection to close after its current request, and waits for them.
    graceful.shutdown().await;
    workers.join().await;
    Ok(())
}
