//! Read deadlines of one client connection: how long a client may take to send a request head
//! (`header_read_timeout_secs`), then its body (`body_read_timeout_secs`), and how long a
//! keep-alive connection may sit idle between requests (`keep_alive_idle_secs`). Without them a
//! silent connection, an idle keep-alive or a request trickled in a byte at a time held its
//! socket forever.
//!
//! Why not hyper's own `header_read_timeout`: in hyper 1.x its timer starts when the connection
//! opens and again each time it goes idle after an answer, so it bounds the idle time between
//! requests by the header timeout (one knob for two things), does nothing for bodies, and
//! allocates and registers a new timer for every request. Here each connection has one timer,
//! and a request moving through its phases only records each phase's deadline (a clock read);
//! the timer itself is touched once per shortest timeout on a connection, not per request (see
//! [`GuardedStream`]).
//!
//! Three pieces share one [`Phase`]: [`GuardedStream`] wraps the socket and enforces the deadline
//! of the current phase whenever a read has to wait; [`GuardedService`] marks where a request's
//! head was read (hyper calls it then); the request body marks where the body ended and the
//! response body where the answer went out (when hyper is done with it; the idle deadline then
//! starts with the answer's last write, as hyper does not read again by itself). While a request
//! is being answered there is no read deadline: the answer may take minutes of GPU time, and the
//! upstream timeouts bound that.
//!
//! A head or idle timeout closes the connection without an answer (what hyper does, and all a
//! client that sends nothing can be told). A body timeout fails the body read, which
//! [`crate::extract::read_body`] answers with a 408 in the caller's protocol; hyper then closes
//! the connection, since the rest of the body cannot be told from a next request.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use axum::routing::future::RouteFuture;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// The read deadlines of client connections (`[server]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadTimeouts {
    /// From a connection's opening, or the first byte of a request, to the end of its head.
    pub(crate) header: Duration,
    /// From the end of a request's head to the end of its body.
    pub(crate) body: Duration,
    /// From the end of an answer to the first byte of the next request.
    pub(crate) keep_alive_idle: Duration,
}

/// What a client was too slow to send. Carried inside the `io::Error` of the read that gave up,
/// so that [`is_body_read_timeout`] can tell it from other failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReadTimedOut {
    /// No next request on a keep-alive connection.
    #[error("no new request within keep_alive_idle_secs; idle connection closed")]
    Idle,
    /// The request line and headers did not arrive in time.
    #[error("the request head did not arrive within header_read_timeout_secs")]
    Head,
    /// The request body did not arrive in time.
    #[error("the request body did not arrive within body_read_timeout_secs")]
    Body,
}

/// Whether `error` (or any error in its chain) is a request body that did not arrive within
/// `body_read_timeout_secs`.
pub(crate) fn is_body_read_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        let timed_out = e.downcast_ref::<ReadTimedOut>().or_else(|| {
            // `io::Error::source` skips the error it wraps; look inside.
            e.downcast_ref::<io::Error>()
                .and_then(io::Error::get_ref)
                .and_then(|inner| inner.downcast_ref::<ReadTimedOut>())
        });
        if timed_out == Some(&ReadTimedOut::Body) {
            return true;
        }
        next = e.source();
    }
    false
}

/// Between requests: the keep-alive idle deadline applies.
const IDLE: u32 = 0;
/// A new connection, or the first bytes of a request: the header deadline applies.
const HEAD: u32 = 1;
/// Head read, body still arriving: the body deadline applies.
const BODY: u32 = 2;
/// Request read, answer being made or sent: no read deadline.
const BUSY: u32 = 3;
const PHASE_BITS: u32 = 0b11;
/// Added on every change of phase, so that re-entering the same phase (idle after each answer)
/// is seen as new and gets a fresh deadline.
const EPOCH: u32 = 0b100;

/// Where a connection is in its request cycle: a phase plus an epoch counter in one word.
///
/// Every piece that touches it runs inside the connection's one task, one after the other, so
/// plain loads and stores suffice; it is atomic only because the task must be `Send`.
#[derive(Debug)]
pub(crate) struct Phase(AtomicU32);

impl Phase {
    /// A new connection: waiting for its first request head.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self(AtomicU32::new(HEAD)))
    }

    fn word(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    fn enter(&self, phase: u32) {
        let epoch = (self.word() & !PHASE_BITS).wrapping_add(EPOCH);
        self.0.store(epoch | phase, Ordering::Relaxed);
    }
}

/// A client socket that fails a read with [`ReadTimedOut`] once the deadline of the connection's
/// phase has passed. Reads that return data at once never look at the clock.
///
/// The timer is never set more than the shortest of the three timeouts ahead. Any later phase's
/// deadline is then no earlier than the timer, so a new phase only records its deadline and
/// leaves the timer alone: moving a tokio timer earlier takes the timer wheel's lock (and may
/// wake the runtime's driver), and a request changes phase three or four times. When the timer
/// fires before the phase's deadline it is simply set again; that happens once per
/// shortest-timeout on a connection that is idle or slow, never per request.
#[derive(Debug)]
pub(crate) struct GuardedStream {
    tcp: TcpStream,
    phase: Arc<Phase>,
    timeouts: ReadTimeouts,
    /// The shortest of `timeouts`: the furthest ahead `timer` is ever set.
    shortest: Duration,
    /// The connection's one timer.
    timer: Pin<Box<Sleep>>,
    /// Whether `timer` is set (and was pending when last looked at).
    armed: bool,
    /// The phase word `due` belongs to; a different word means a new phase.
    seen: u32,
    /// When the current phase's allowance runs out; `None` while a request is being answered.
    due: Option<Instant>,
}

impl GuardedStream {
    /// Wraps `tcp`; the head deadline starts with the first read that has to wait.
    pub(crate) fn new(tcp: TcpStream, timeouts: ReadTimeouts, phase: Arc<Phase>) -> Self {
        let shortest = timeouts
            .header
            .min(timeouts.body)
            .min(timeouts.keep_alive_idle);
        Self {
            tcp,
            phase,
            timeouts,
            shortest,
            // Not registered with the timer wheel until first polled.
            timer: Box::pin(tokio::time::sleep(shortest)),
            armed: false,
            seen: u32::MAX,
            due: None,
        }
    }

    /// Called after every write: when the answer is complete the connection is idle, and the
    /// idle deadline must start now. hyper does not read again on its own once an answer is
    /// out (it waits for the socket to wake it), so a deadline left for the next read to start
    /// might never start. The last write of an answer comes after hyper is done with its body
    /// (the head of an empty answer, the data of a whole one, the end of a chunked one).
    fn start_idle_deadline(&mut self, cx: &mut Context<'_>) {
        let word = self.phase.word();
        if word & PHASE_BITS == IDLE && word != self.seen {
            // The deadline has just been set into the future: this only records it and makes
            // sure the timer will wake this task.
            let _ = self.poll_deadline(cx);
        }
    }

    /// Called when a read has to wait: notes the deadline of a new phase, and fails the read
    /// once the current phase's deadline has passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let word = self.phase.word();
        if word != self.seen {
            self.seen = word;
            let limit = match word & PHASE_BITS {
                IDLE => Some(self.timeouts.keep_alive_idle),
                HEAD => Some(self.timeouts.header),
                BODY => Some(self.timeouts.body),
                _ => None,
            };
            self.due = limit.map(|limit| Instant::now() + limit);
        }
        let Some(due) = self.due else {
            return Poll::Pending;
        };
        if self.armed && !self.timer.is_elapsed() {
            return Poll::Pending;
        }
        // The timer is not set, or it has fired: the deadline has passed, or the timer fired
        // ahead of it and is set again.
        loop {
            let now = Instant::now();
            if now >= due {
                self.armed = false;
                let what = match word & PHASE_BITS {
                    IDLE => ReadTimedOut::Idle,
                    HEAD => ReadTimedOut::Head,
                    _ => ReadTimedOut::Body,
                };
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
            }
            self.timer.as_mut().reset(due.min(now + self.shortest));
            if self.timer.as_mut().poll(cx).is_pending() {
                self.armed = true;
                return Poll::Pending;
            }
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Pending => this.poll_deadline(cx),
            Poll::Ready(Ok(())) => {
                // The first bytes after an answer start the next request: from here the client
                // has the header timeout, not the (usually longer) idle one, to finish its head.
                if buf.filled().len() > before && this.phase.word() & PHASE_BITS == IDLE {
                    this.phase.enter(HEAD);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.tcp).poll_write(cx, buf);
        this.start_idle_deadline(cx);
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // hyper writes a response head and body chunks in one `writev` when the socket says it
        // can; keep saying so.
        let this = self.get_mut();
        let written = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.start_idle_deadline(cx);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// The app as hyper's service for one connection, marking each request's phases.
#[derive(Debug, Clone)]
pub(crate) struct GuardedService {
    app: axum::Router,
    phase: Arc<Phase>,
}

impl GuardedService {
    /// Serves `app` on the connection whose phase is `phase`.
    pub(crate) fn new(app: axum::Router, phase: Arc<Phase>) -> Self {
        Self { app, phase }
    }
}

impl hyper::service::Service<Request<Incoming>> for GuardedService {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        // hyper calls this once the head is read. A body still to come gets the body deadline;
        // without one (GET, HEAD, an empty POST) the request is read.
        let body_expected = !req.body().is_end_stream();
        let req = if body_expected {
            self.phase.enter(BODY);
            let phase = Some(Arc::clone(&self.phase));
            req.map(|body| RequestBody { body, phase })
        } else {
            self.phase.enter(BUSY);
            req.map(|body| RequestBody { body, phase: None })
        };
        // A `Router` is always ready (its `poll_ready` returns `Ready` at once), so calling it
        // without asking is what `oneshot` would do too; the clone is a reference count.
        let mut app = self.app.clone();
        ResponseFuture {
            inner: tower::Service::call(&mut app, req),
            phase: Some(Arc::clone(&self.phase)),
        }
    }
}

/// The app's answer, with its body wrapped so that the connection turns idle when it is sent.
pub(crate) struct ResponseFuture {
    inner: RouteFuture<Infallible>,
    phase: Option<Arc<Phase>>,
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let response = ready!(Pin::new(&mut this.inner).poll(cx))?;
        let phase = this.phase.take();
        Poll::Ready(Ok(response.map(|body| ResponseBody { body, phase })))
    }
}

/// A request body that moves the connection from reading to answering when it ends.
#[derive(Debug)]
pub(crate) struct RequestBody {
    body: Incoming,
    /// Present until the body has ended.
    phase: Option<Arc<Phase>>,
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        let ended = match &frame {
            None => true,
            Some(Ok(_)) => this.body.is_end_stream(),
            Some(Err(_)) => false,
        };
        if ended && let Some(phase) = this.phase.take() {
            // Only from BODY: an answer already sent (the handler did not wait for the body)
            // has made the connection idle, and that stays.
            if phase.word() & PHASE_BITS == BODY {
                phase.enter(BUSY);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A response body that makes the connection idle when hyper is done with it (sent, or given up).
#[derive(Debug)]
pub(crate) struct ResponseBody {
    body: Body,
    phase: Option<Arc<Phase>>,
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        if frame.is_none()
            && let Some(phase) = this.phase.take()
        {
            // A body that ends only after its last data went out (a stream with a known
            // length) may leave nothing more to write, so the write path would not start the
            // idle deadline: have hyper come back and read, which starts it.
            phase.enter(IDLE);
            cx.waker().wake_by_ref();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(phase) = &self.phase {
            phase.enter(IDLE);
        }
    }
}
