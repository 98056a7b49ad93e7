//! Streamed answers. The response body is a stream that owns the upstream response: when the
//! client goes away, hyper drops the body, which drops the upstream connection at once — no
//! background task to forget, nothing left holding a slot.
//!
//! Two shapes: OpenAI chunks translated to Anthropic SSE (with `ping` keep-alives while the
//! upstream is silent, an idle timeout, and an `error` event on mid-stream failure), and
//! same-format passthrough for OpenAI clients (bytes forwarded as they come through a usage tap).

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt as _, Stream, StreamExt};

use super::trace::Trace;
use crate::limits::Admission;
use crate::translate::{OpenAiStreamTap, SseDecoder, StreamTranslator, Usage};

/// How long the end of an upstream body is waited for once the answer is complete.
const END_OF_BODY_GRACE: Duration = Duration::from_millis(200);

/// How long a streamed answer waits for more upstream chunks before writing what it has.
const LINGER: Duration = Duration::from_millis(1);

/// One item of an upstream body.
type UpstreamItem = Result<Bytes, crate::upstream::BodyError>;

type ByteStream = crate::upstream::BodyStream;

/// Time and size bounds of a streamed answer.
#[derive(Debug, Clone, Copy)]
pub(super) struct StreamLimits {
    /// Longest upstream silence before the stream is given up.
    pub idle: Duration,
    /// How often an Anthropic stream gets a `ping` while the upstream is silent.
    pub ping: Duration,
    /// Longest upstream line (or event) held while it is incomplete: one endless line must not
    /// take all memory.
    pub max_line: usize,
}

/// The configured stream bounds.
pub(super) fn stream_limits(state: &crate::state::AppState) -> StreamLimits {
    StreamLimits {
        idle: state.upstreams.idle_timeout(),
        ping: state.upstreams.ping_interval(),
        max_line: state.upstreams.limits().max_line_bytes,
    }
}

/// Something that lives exactly as long as the response body (in-flight counters, slots).
pub(super) type Guard = Box<dyn Send + Sync>;

/// What turns upstream bytes into the client's Anthropic SSE events: the translator of an
/// OpenAI stream, or the tap of a native Messages stream. The pump around it
/// ([`anthropic_sse`]) owns everything else — pings, the idle timeout, the line bound, when to
/// write — so both paths make the same writes for the same upstream timing.
pub(super) trait AnthropicEvents: Send + 'static {
    /// Events written before the first upstream byte (`message_start` when relayd makes it).
    fn start(&mut self, out: &mut Vec<u8>);
    /// Upstream bytes in, complete events out. `Err`: the upstream sent something that cannot
    /// be passed on; the message is for the client's `error` event.
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str>;
    /// The upstream body ended. `Err`: the answer is incomplete and cannot be completed.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), &'static str>;
    /// Writes an `error` event; nothing is written after it.
    fn fail(&mut self, message: &str, out: &mut Vec<u8>);
    /// No more events will come: the answer is complete, or the upstream reported an error.
    fn complete(&self) -> bool;
    /// The upstream itself reported an error in the stream (recorded as a failed request).
    fn upstream_errored(&self) -> bool;
    /// Bytes held back (an unfinished line or event), for the pump to bound.
    fn pending_bytes(&self) -> usize;
    /// The usage to record: the upstream's, else an estimate.
    fn usage(&self) -> Usage;
}

/// An OpenAI stream translated to Anthropic events.
pub(super) struct Translated {
    decoder: SseDecoder,
    translator: StreamTranslator,
}

impl Translated {
    pub(super) fn new(translator: StreamTranslator) -> Self {
        Self {
            decoder: SseDecoder::new(),
            translator,
        }
    }

    fn drain(&mut self, out: &mut Vec<u8>) -> Result<(), &'static str> {
        while let Some(event) = self.decoder.next_event() {
            if let Err(e) = self.translator.on_data(&event.data, out) {
                tracing::warn!(error = %e, "untranslatable upstream chunk");
                return Err("the upstream sent a malformed chunk");
            }
        }
        Ok(())
    }
}

impl AnthropicEvents for Translated {
    fn start(&mut self, out: &mut Vec<u8>) {
        self.translator.start(out);
    }

    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
        self.decoder.push(bytes);
        self.drain(out)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), &'static str> {
        self.decoder.finish();
        self.drain(out)?;
        // An upstream that ends without `[DONE]` still gets a well-formed end.
        self.translator.finish(out);
        Ok(())
    }

    fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        self.translator.fail("api_error", message, out);
    }

    fn complete(&self) -> bool {
        self.translator.ended()
    }

    fn upstream_errored(&self) -> bool {
        false
    }

    fn pending_bytes(&self) -> usize {
        self.decoder.pending_bytes()
    }

    fn usage(&self) -> Usage {
        self.translator.usage()
    }
}

struct AnthropicState<E: AnthropicEvents> {
    upstream: ByteStream,
    /// The first write (`message_start` and what came with it), until it goes out.
    head: Option<Vec<u8>>,
    events: E,
    limits: StreamLimits,
    /// Upstream silence so far; survives across emitted pings so the idle timeout still fires.
    silent: Duration,
    done: bool,
    /// relayd reported an upstream failure to the client (an `error` event).
    failed: bool,
    /// The upstream body was read to its end.
    upstream_ended: bool,
    admission: Admission,
    trace: Trace,
    _guard: Guard,
}

impl<E: AnthropicEvents> Drop for AnthropicState<E> {
    /// At the end of the stream, whether complete, failed or abandoned by the client: the
    /// tokens used so far count against the key, and the request is recorded.
    fn drop(&mut self) {
        let usage = self.events.usage();
        self.admission.record(&usage);
        match (self.done, self.failed || self.events.upstream_errored()) {
            (false, _) => self.trace.abandoned(usage),
            (true, false) => self.trace.stream_ended(200, usage),
            (true, true) => self.trace.stream_ended(502, usage),
        }
    }
}

impl<E: AnthropicEvents> AnthropicState<E> {
    /// Ends the stream with an `error` event.
    fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        self.events.fail(message, out);
        self.done = true;
        self.failed = true;
    }
}

/// The Anthropic SSE body for an upstream stream. The commit point is here (the upstream answered
/// 2xx): the first write is whatever the events start with plus whatever upstream chunks arrive
/// within [`LINGER`] — waited for before the response head goes out, so that head, `message_start`
/// and the first events leave in one write — then events as chunks arrive.
pub(super) async fn anthropic_sse<E: AnthropicEvents>(
    upstream: ByteStream,
    mut events: E,
    limits: StreamLimits,
    admission: Admission,
    trace: Trace,
    guard: Guard,
) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    let mut first = Vec::with_capacity(512);
    events.start(&mut first);
    let mut state = AnthropicState {
        upstream,
        head: None,
        events,
        limits,
        silent: Duration::ZERO,
        done: false,
        failed: false,
        upstream_ended: false,
        admission,
        trace,
        _guard: guard,
    };
    linger_anthropic(&mut state, &mut first).await;
    // Nothing yet (a native stream before its first event): the first write waits in the pump,
    // with pings and the idle timeout.
    state.head = Some(first).filter(|head| !head.is_empty());
    futures_util::stream::unfold(state, next_anthropic)
}

async fn next_anthropic<E: AnthropicEvents>(
    mut state: AnthropicState<E>,
) -> Option<(Result<Bytes, std::convert::Infallible>, AnthropicState<E>)> {
    if let Some(head) = state.head.take() {
        return Some((Ok(Bytes::from(head)), state));
    }
    if state.done {
        if !state.failed && !state.upstream_ended {
            read_to_end(&mut state.upstream).await;
        }
        return None;
    }
    let mut out = Vec::new();
    while out.is_empty() {
        let idle = state.limits.idle;
        let wait = state.limits.ping.min(idle.saturating_sub(state.silent));
        match next_within(wait, &mut state.upstream).await {
            Err(_) => {
                state.silent += wait;
                if state.silent >= idle {
                    tracing::warn!(idle_secs = idle.as_secs(), "upstream stream stalled");
                    state.fail("the upstream stopped sending data (idle timeout)", &mut out);
                } else {
                    StreamTranslator::ping(&mut out);
                }
            }
            Ok(item) => take_anthropic(&mut state, item, &mut out),
        }
        if state.done && out.is_empty() {
            return None;
        }
    }
    linger_anthropic(&mut state, &mut out).await;
    Some((Ok(Bytes::from(out)), state))
}

/// Passes into `out` what else arrives within [`LINGER`] (see [`ready_before`]). Once the
/// answer is complete, the end of the upstream body (it usually follows the last event at once)
/// is waited for within the same time: the stream can then end right after this write, and
/// hyper sends the end of the chunked body in the same system call instead of one of its own.
async fn linger_anthropic<E: AnthropicEvents>(state: &mut AnthropicState<E>, out: &mut Vec<u8>) {
    let mut linger = std::pin::pin!(tokio::time::sleep(LINGER));
    while !state.upstream_ended && !state.failed {
        let Some(item) = ready_before(&mut state.upstream, linger.as_mut()).await else {
            break;
        };
        if state.done {
            // After the answer: only the end of the body is still of interest.
            if !matches!(item, Some(Ok(_))) {
                state.upstream_ended = true;
            }
        } else {
            take_anthropic(state, item, out);
        }
    }
}

/// After `[DONE]` (and after the client has the last event), reads the rest of the upstream
/// body, as a rule just the chunked encoding's terminator. A body read to its end puts its
/// connection back in the pool; one dropped early takes the connection with it, and the next
/// request pays for a new one. An upstream that does not end its body soon is left.
pub(super) async fn read_to_end(upstream: &mut ByteStream) {
    let rest = async { while let Some(Ok(_)) = upstream.next().await {} };
    let _ = tokio::time::timeout(END_OF_BODY_GRACE, rest).await;
}

/// Passes one upstream item (a chunk, the end, or a failure) through the events into `out`.
fn take_anthropic<E: AnthropicEvents>(
    state: &mut AnthropicState<E>,
    item: Option<UpstreamItem>,
    out: &mut Vec<u8>,
) {
    match item {
        Some(Ok(bytes)) => {
            state.silent = Duration::ZERO;
            if let Err(message) = state.events.push(&bytes, out) {
                state.fail(message, out);
            } else if state.events.pending_bytes() > state.limits.max_line {
                tracing::warn!(
                    max_line_bytes = state.limits.max_line,
                    "upstream stream line too long"
                );
                state.fail(
                    "the upstream sent a line or event longer than relayd accepts (upstream.max_line_bytes)",
                    out,
                );
            }
        }
        Some(Err(e)) => {
            tracing::warn!(error = %e, "upstream stream broke");
            state.fail(
                "the upstream connection broke in the middle of the answer",
                out,
            );
        }
        None => {
            state.upstream_ended = true;
            if let Err(message) = state.events.finish(out) {
                state.fail(message, out);
            }
            state.done = true;
        }
    }
    if state.events.complete() {
        state.done = true;
    }
}

/// The next upstream item if it comes before `linger` (one timer for a whole burst) fires.
///
/// Chunks that arrive together still reach this stream one at a time: hyper's client hands a
/// body over chunk by chunk from its connection task. Each item the client body yields becomes
/// one write (and one system call) to the client, so waiting a moment for the rest of a burst
/// lets one write carry it. A millisecond is nothing next to the tens of milliseconds between
/// a model's tokens, and the wait is only taken right after a chunk came. One timer per burst,
/// not per chunk: registering a timer that is due before the runtime's next wake-up costs a
/// system call to wake it.
pub(super) async fn ready_before(
    upstream: &mut ByteStream,
    linger: Pin<&mut tokio::time::Sleep>,
) -> Option<Option<UpstreamItem>> {
    tokio::select! {
        biased;
        item = upstream.next() => Some(item),
        () = linger => None,
    }
}

/// The next upstream item, or `Elapsed` after `wait`. A timer costs a timer-wheel insertion and
/// removal; in a burst the next item is usually there already, so it is asked for once without
/// one first.
pub(super) async fn next_within(
    wait: Duration,
    upstream: &mut ByteStream,
) -> Result<Option<UpstreamItem>, tokio::time::error::Elapsed> {
    if let Some(item) = upstream.next().now_or_never() {
        return Ok(item);
    }
    tokio::time::timeout(wait, upstream.next()).await
}

struct OpenAiState {
    upstream: ByteStream,
    tap: OpenAiStreamTap,
    limits: StreamLimits,
    done: bool,
    failed: bool,
    /// A failure still to be reported to the client (as a broken body) after the bytes before it.
    broken: Option<&'static str>,
    admission: Admission,
    trace: Trace,
    _guard: Guard,
}

impl Drop for OpenAiState {
    fn drop(&mut self) {
        // relayd always asks for usage upstream; a server that ignores it leaves zeros, marked
        // as not coming from the upstream.
        let usage = self.tap.usage().unwrap_or_default();
        self.admission.record(&usage);
        match (self.done, self.failed) {
            (false, _) => self.trace.abandoned(usage),
            (true, false) => self.trace.stream_ended(200, usage),
            (true, true) => self.trace.stream_ended(502, usage),
        }
    }
}

/// The OpenAI SSE body for an OpenAI client: upstream bytes forwarded as they arrive, with the
/// model name rewritten and the usage chunk relayd asked for removed again.
pub(super) fn openai_passthrough(
    upstream: ByteStream,
    tap: OpenAiStreamTap,
    limits: StreamLimits,
    admission: Admission,
    trace: Trace,
    guard: Guard,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let state = OpenAiState {
        upstream,
        tap,
        limits,
        done: false,
        failed: false,
        broken: None,
        admission,
        trace,
        _guard: guard,
    };
    futures_util::stream::unfold(state, next_openai)
}

async fn next_openai(
    mut state: OpenAiState,
) -> Option<(Result<Bytes, std::io::Error>, OpenAiState)> {
    if let Some(broken) = state.broken.take() {
        return Some((Err(std::io::Error::other(broken)), state));
    }
    if state.done {
        return None;
    }
    let mut out = Vec::new();
    while out.is_empty() {
        match next_within(state.limits.idle, &mut state.upstream).await {
            Ok(item) => take_openai(&mut state, item, &mut out),
            Err(_) => {
                tracing::warn!(
                    idle_secs = state.limits.idle.as_secs(),
                    "upstream stream stalled"
                );
                state.done = true;
                state.failed = true;
                state.broken = Some("upstream stalled");
            }
        }
        if state.done && out.is_empty() {
            let broken = state.broken.take()?;
            return Some((Err(std::io::Error::other(broken)), state));
        }
    }
    // What else already arrived goes into the same write (see `ready_before`).
    let mut linger = std::pin::pin!(tokio::time::sleep(LINGER));
    while !state.done {
        match ready_before(&mut state.upstream, linger.as_mut()).await {
            Some(item) => take_openai(&mut state, item, &mut out),
            None => break,
        }
    }
    // A failure after these bytes is reported on the next call, once they are sent.
    Some((Ok(Bytes::from(out)), state))
}

/// Passes one upstream item (a chunk, the end, or a failure) through the tap into `out`.
fn take_openai(state: &mut OpenAiState, item: Option<UpstreamItem>, out: &mut Vec<u8>) {
    match item {
        Some(Ok(bytes)) => {
            state.tap.push(&bytes, out);
            if state.tap.pending_bytes() > state.limits.max_line {
                tracing::warn!(
                    max_line_bytes = state.limits.max_line,
                    "upstream stream line too long"
                );
                state.done = true;
                state.failed = true;
                state.broken = Some("upstream line too long");
            }
        }
        None => {
            state.tap.finish(out);
            state.done = true;
        }
        // OpenAI's SSE has no error event; ending the body with an error makes hyper abort the
        // chunked response, which clients report as a broken stream.
        Some(Err(e)) => {
            tracing::warn!(error = %e, "upstream stream broke");
            state.done = true;
            state.failed = true;
            state.broken = Some("upstream stream broke");
        }
    }
}
