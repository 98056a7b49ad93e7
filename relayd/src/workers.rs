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

/// How long the acceptor pauses after an error that is not about one connection (out of file
/// descriptors, say): short, so that service resumes soon after descriptors free up, and long
/// enough not to spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Least time between two warnings that the connection cap was reached, or that accepting
/// failed: a server running at a limit reaches it again and again.
const WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// How long accepting must have gone without a failure before an episode of failures is over.
const RECOVERY_QUIET: Duration = Duration::from_secs(2);

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

/// Logs failing `accept` calls once per episode rather than once per attempt. An episode
/// starts with a failure and ends at the first connection accepted [`RECOVERY_QUIET`] after its
/// last failure, so that a process hovering at its descriptor limit (a socket closes, one
/// connection is taken, the next attempt fails again) is one episode, not one per freed
/// descriptor. A warning starts an episode, an info line ends it; an episode starting within
/// [`WARNING_INTERVAL`] of the last warning is logged at debug level only. Every failed attempt
/// is a debug line.
#[derive(Debug, Default)]
struct AcceptLog {
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
    fn failed(&mut self, e: &io::Error) {
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
    fn accepted(&mut self) {
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
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use axum::extract::Request;
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{Notify, oneshot};

    use super::*;

    /// The longest any awaited event may take before a test gives up: generous, because the
    /// machine may be busy; a passing test never waits for it.
    const EVENT_DEADLINE: Duration = Duration::from_secs(20);

    type Started = (
        std::net::SocketAddr,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<io::Result<()>>,
    );

    /// Binds port 0 and serves `app` on `workers` threads until the returned sender fires.
    async fn start(app: axum::Router, workers: usize) -> Started {
        start_with(app, workers, ConnectionLimits::generous()).await
    }

    /// [`start`] within `limits`.
    async fn start_with(app: axum::Router, workers: usize, limits: ConnectionLimits) -> Started {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(serve(listener, app, workers, limits, async {
            let _ = stopped.await;
        }));
        (addr, stop, served)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Reads until the server closes the connection (end of stream or an error such as a
    /// reset); returns what arrived before.
    async fn read_until_closed(tcp: &mut (impl AsyncReadExt + Unpin)) -> String {
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        let closed = tokio::time::timeout(EVENT_DEADLINE, async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "the connection is still open after {EVENT_DEADLINE:?}"
        );
        String::from_utf8_lossy(&received).into_owned()
    }

    /// Sends `GET path` on a kept-alive connection and reads one whole response; returns it.
    async fn round_trip(tcp: &mut TcpStream, path: &str) -> String {
        tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: relayd\r\n\r\n").as_bytes())
            .await
            .unwrap();
        read_response(tcp).await
    }

    /// Reads one response with a `content-length` body.
    async fn read_response(tcp: &mut TcpStream) -> String {
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        tokio::time::timeout(EVENT_DEADLINE, async {
            loop {
                let n = tcp.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed before a whole response: {received:?}");
                received.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&received);
                if let Some(end) = text.find("\r\n\r\n") {
                    let length: usize = text[..end]
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if received.len() >= end + 4 + length {
                        break;
                    }
                }
            }
        })
        .await
        .expect("no whole response in time");
        String::from_utf8_lossy(&received).into_owned()
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_header_timeout() {
        let app = axum::Router::new().route("/", get(|| async { "ok" }));
        let limits = ConnectionLimits::of(ms(300), ms(60_000), ms(60_000), 100);
        let (addr, _stop, _served) = start_with(app, 1, limits).await;
        // Timings are taken from before the client acts, so the server's clock cannot have
        // started earlier.
        let since = Instant::now();
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let received = read_until_closed(&mut tcp).await;
        assert_eq!(received, "", "closed without an answer");
        let took = since.elapsed();
        assert!(took >= ms(300), "closed after {took:?}");
    }

    #[tokio::test]
    async fn a_header_trickled_after_an_idle_pause_is_cut_off_by_the_header_timeout() {
        let app = axum::Router::new().route("/", get(|| async { "ok" }));
        // A long idle allowance: only the header timeout can end this in time.
        let limits = ConnectionLimits::of(ms(400), ms(60_000), ms(60_000), 100);
        let (addr, _stop, _served) = start_with(app, 1, limits).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        assert!(round_trip(&mut tcp, "/").await.starts_with("HTTP/1.1 200"));
        let (mut reader, mut writer) = tcp.into_split();
        let head = format!(
            "GET / HTTP/1.1\r\nHost: relayd\r\nX-Padding: {}\r\n\r\n",
            "a".repeat(200)
        );
        let sent = Arc::new(AtomicUsize::new(0));
        let since = Instant::now();
        let trickle = {
            let sent = Arc::clone(&sent);
            tokio::spawn(async move {
                // One byte every 20 ms: the whole head would take about five seconds.
                for byte in head.bytes() {
                    if writer.write_all(&[byte]).await.is_err() {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(ms(20)).await;
                }
            })
        };
        let received = read_until_closed(&mut reader).await;
        let took = since.elapsed();
        let total = 200 + "GET / HTTP/1.1\r\nHost: relayd\r\nX-Padding: \r\n\r\n".len();
        assert_eq!(received, "", "no answer to a head that never completed");
        assert!(took >= ms(400), "closed after {took:?}");
        assert!(
            sent.load(Ordering::Relaxed) < total,
            "the head was completed before the connection was closed"
        );
        trickle.abort();
    }

    #[tokio::test]
    async fn an_idle_keep_alive_is_closed_but_busy_and_active_connections_are_not() {
        let started = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let app = {
            let (started, release) = (Arc::clone(&started), Arc::clone(&release));
            axum::Router::new()
                .route("/", get(|| async { "ok" }))
                .route(
                    "/slow",
                    get(move || async move {
                        started.notify_one();
                        release.notified().await;
                        "done"
                    }),
                )
        };
        // A long header allowance: only the idle timeout can close the idle connection in time.
        // The idle timeout is 10 pacing intervals, so that a loaded machine stretching the
        // client's 100 ms pauses cannot make the active connection look idle.
        let limits = ConnectionLimits::of(ms(60_000), ms(60_000), ms(1000), 100);
        let (addr, _stop, _served) = start_with(app, 2, limits).await;

        // A request that takes longer than the idle timeout to answer.
        let mut busy = TcpStream::connect(addr).await.unwrap();
        busy.write_all(b"GET /slow HTTP/1.1\r\nHost: relayd\r\n\r\n")
            .await
            .unwrap();
        started.notified().await;

        // A connection used every 100 ms outlives the 1 s idle timeout.
        let mut active = TcpStream::connect(addr).await.unwrap();
        for _ in 0..15 {
            assert!(
                round_trip(&mut active, "/")
                    .await
                    .starts_with("HTTP/1.1 200")
            );
            // Pacing of the client's own requests, not synchronisation.
            tokio::time::sleep(ms(100)).await;
        }

        let mut idle = TcpStream::connect(addr).await.unwrap();
        let since = Instant::now();
        assert!(round_trip(&mut idle, "/").await.starts_with("HTTP/1.1 200"));
        let received = read_until_closed(&mut idle).await;
        let took = since.elapsed();
        assert_eq!(received, "");
        assert!(took >= ms(1000), "closed after {took:?}");

        // The slow request has now been busy for longer than the idle timeout, and is answered.
        release.notify_one();
        let answer = read_response(&mut busy).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("done"), "{answer}");
    }

    #[tokio::test]
    async fn a_slow_body_is_answered_408_in_the_callers_shape() {
        let app = axum::Router::new().route(
            "/v1/messages",
            post(|req: Request| async move {
                match crate::extract::read_body(req, &()).await {
                    Ok(body) => format!("{} bytes", body.len()).into_response(),
                    Err(e) => e.into_response_for(crate::error::Surface::Anthropic),
                }
            }),
        );
        let limits = ConnectionLimits::of(ms(60_000), ms(300), ms(60_000), 100);
        let (addr, _stop, _served) = start_with(app, 1, limits).await;

        // A body in time is read as usual.
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(
            b"POST /v1/messages HTTP/1.1\r\nHost: relayd\r\nContent-Type: application/json\r\n\
              Content-Length: 2\r\n\r\n{}",
        )
        .await
        .unwrap();
        let answer = read_response(&mut tcp).await;
        assert!(answer.ends_with("2 bytes"), "{answer}");

        // Five of the hundred bytes promised, then nothing.
        let since = Instant::now();
        tcp.write_all(
            b"POST /v1/messages HTTP/1.1\r\nHost: relayd\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"a\":",
        )
        .await
        .unwrap();
        let answer = read_until_closed(&mut tcp).await;
        let took = since.elapsed();
        assert!(
            answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{answer}"
        );
        assert!(answer.contains(r#""type":"timeout_error""#), "{answer}");
        assert!(answer.contains("body_read_timeout_secs"), "{answer}");
        assert!(took >= ms(300), "answered after {took:?}");
    }

    #[tokio::test]
    async fn a_deadline_longer_than_the_shortest_timeout_is_kept_in_full() {
        // The connection's timer is never set more than the shortest timeout (here the header
        // one) ahead; it fires early, is set again, and the body still gets its whole 700 ms.
        let app = axum::Router::new().route(
            "/",
            post(|req: Request| async move {
                match crate::extract::read_body(req, &()).await {
                    Ok(_) => "read".into_response(),
                    Err(e) => e.into_response_for(crate::error::Surface::OpenAi),
                }
            }),
        );
        let limits = ConnectionLimits::of(ms(100), ms(700), ms(60_000), 100);
        let (addr, _stop, _served) = start_with(app, 1, limits).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let since = Instant::now();
        tcp.write_all(
            b"POST / HTTP/1.1\r\nHost: relayd\r\nContent-Type: application/json\r\n\
              Content-Length: 10\r\n\r\n{",
        )
        .await
        .unwrap();
        let answer = read_until_closed(&mut tcp).await;
        let took = since.elapsed();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
        assert!(took >= ms(700), "answered after {took:?}");
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_until_one_closes() {
        let app = axum::Router::new().route("/", get(|| async { "ok" }));
        let limits = ConnectionLimits::of(ms(60_000), ms(60_000), ms(60_000), 2);
        let (addr, _stop, _served) = start_with(app, 2, limits).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert!(
            round_trip(&mut first, "/")
                .await
                .starts_with("HTTP/1.1 200")
        );
        assert!(
            round_trip(&mut second, "/")
                .await
                .starts_with("HTTP/1.1 200")
        );

        // The kernel completes the third handshake, but relayd does not take the connection.
        let mut third = TcpStream::connect(addr).await.unwrap();
        third
            .write_all(b"GET / HTTP/1.1\r\nHost: relayd\r\n\r\n")
            .await
            .unwrap();
        let mut byte = [0u8; 1];
        assert!(
            tokio::time::timeout(ms(300), third.read(&mut byte))
                .await
                .is_err(),
            "a third connection was served with two allowed"
        );
        drop(first);
        let answer = read_response(&mut third).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            round_trip(&mut second, "/")
                .await
                .starts_with("HTTP/1.1 200")
        );
    }

    #[tokio::test]
    async fn connections_are_spread_over_every_serving_thread() {
        let app = axum::Router::new().route(
            "/",
            get(|| async { crate::serving_thread::index().to_string() }),
        );
        let (addr, stop, served) = start(app, 3).await;
        let mut seen = BTreeSet::new();
        for _ in 0..3 {
            // A new client per request: a new connection each time.
            let body = reqwest::get(format!("http://{addr}/"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            seen.insert(body);
        }
        assert_eq!(seen, BTreeSet::from(["1".into(), "2".into(), "3".into()]));
        assert_eq!(
            crate::serving_thread::index(),
            0,
            "the test's own thread is no serving thread"
        );
        stop.send(()).unwrap();
        served.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn shutdown_lets_an_open_request_finish_first() {
        let started = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let app = {
            let (started, release) = (Arc::clone(&started), Arc::clone(&release));
            axum::Router::new().route(
                "/",
                get(move || async move {
                    started.notify_one();
                    release.notified().await;
                    "done"
                }),
            )
        };
        let (addr, stop, mut served) = start(app, 2).await;
        let request = tokio::spawn(reqwest::get(format!("http://{addr}/")));
        started.notified().await;
        stop.send(()).unwrap();
        // The drain waits for the open request...
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut served)
                .await
                .is_err(),
            "serve returned with a request still open"
        );
        // ...which then completes normally, and the server stops.
        release.notify_one();
        let response = request.await.unwrap().unwrap();
        assert_eq!(response.text().await.unwrap(), "done");
        served.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn dropping_serve_closes_open_connections_at_once() {
        let started = Arc::new(Notify::new());
        let app = {
            let started = Arc::clone(&started);
            axum::Router::new().route(
                "/",
                get(move || async move {
                    started.notify_one();
                    std::future::pending::<()>().await;
                }),
            )
        };
        let (addr, _stop, served) = start(app, 2).await;
        let request = tokio::spawn(reqwest::get(format!("http://{addr}/")));
        started.notified().await;
        // What a drain cut off by its deadline does.
        served.abort();
        let outcome = tokio::time::timeout(Duration::from_secs(5), request)
            .await
            .expect("the client still waits after serve was dropped")
            .unwrap();
        assert!(outcome.is_err(), "{outcome:?}");
    }
}
