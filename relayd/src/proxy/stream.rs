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
use futures_util::{Stream, StreamExt};

use super::trace::Trace;
use crate::limits::Admission;
use crate::translate::{OpenAiStreamTap, SseDecoder, StreamTranslator};

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, super::upstream::BodyError>> + Send>>;

/// Something that lives exactly as long as the response body (in-flight counters, slots).
pub(super) type Guard = Box<dyn Send + Sync>;

struct AnthropicState {
    upstream: ByteStream,
    decoder: SseDecoder,
    translator: StreamTranslator,
    idle: Duration,
    /// How often a `ping` is sent while the upstream says nothing (long prefill on big prompts).
    ping: Duration,
    /// Upstream silence so far; survives across emitted pings so the idle timeout still fires.
    silent: Duration,
    done: bool,
    /// relayd reported an upstream failure to the client (an `error` event).
    failed: bool,
    admission: Admission,
    trace: Trace,
    _guard: Guard,
}

impl Drop for AnthropicState {
    /// At the end of the stream, whether complete, failed or abandoned by the client: the
    /// tokens used so far count against the key, and the request is recorded.
    fn drop(&mut self) {
        let usage = self.translator.usage();
        self.admission.record(&usage);
        match (self.done, self.failed) {
            (false, _) => self.trace.abandoned(usage),
            (true, false) => self.trace.stream_ended(200, usage),
            (true, true) => self.trace.stream_ended(502, usage),
        }
    }
}

/// The Anthropic SSE body for an upstream OpenAI stream. `message_start` is sent at once (the
/// commit point: the upstream answered 2xx), then events as chunks arrive.
pub(super) fn anthropic_sse(
    response: super::upstream::UpstreamResponse,
    mut translator: StreamTranslator,
    idle: Duration,
    ping: Duration,
    admission: Admission,
    trace: Trace,
    guard: Guard,
) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    let mut first = Vec::with_capacity(512);
    translator.start(&mut first);
    let state = AnthropicState {
        upstream: Box::pin(response.bytes_stream()),
        decoder: SseDecoder::new(),
        translator,
        idle,
        ping,
        silent: Duration::ZERO,
        done: false,
        failed: false,
        admission,
        trace,
        _guard: guard,
    };
    let head = futures_util::stream::once(async move { Ok(Bytes::from(first)) });
    head.chain(futures_util::stream::unfold(state, next_anthropic))
}

async fn next_anthropic(
    mut state: AnthropicState,
) -> Option<(Result<Bytes, std::convert::Infallible>, AnthropicState)> {
    if state.done {
        return None;
    }
    let mut out = Vec::new();
    while out.is_empty() {
        let wait = state.ping.min(state.idle.saturating_sub(state.silent));
        match tokio::time::timeout(wait, state.upstream.next()).await {
            Err(_) => {
                state.silent += wait;
                if state.silent >= state.idle {
                    tracing::warn!(idle_secs = state.idle.as_secs(), "upstream stream stalled");
                    state.translator.fail(
                        "api_error",
                        "the upstream stopped sending data (idle timeout)",
                        &mut out,
                    );
                    state.done = true;
                    state.failed = true;
                } else {
                    StreamTranslator::ping(&mut out);
                }
            }
            Ok(Some(Ok(bytes))) => {
                state.silent = Duration::ZERO;
                state.decoder.push(&bytes);
                drain(&mut state, &mut out);
            }
            Ok(Some(Err(e))) => {
                tracing::warn!(error = %e, "upstream stream broke");
                state.translator.fail(
                    "api_error",
                    "the upstream connection broke in the middle of the answer",
                    &mut out,
                );
                state.done = true;
                state.failed = true;
            }
            Ok(None) => {
                state.decoder.finish();
                drain(&mut state, &mut out);
                state.translator.finish(&mut out);
                state.done = true;
            }
        }
        if state.translator.ended() {
            state.done = true;
        }
        if state.done && out.is_empty() {
            return None;
        }
    }
    Some((Ok(Bytes::from(out)), state))
}

fn drain(state: &mut AnthropicState, out: &mut Vec<u8>) {
    while let Some(event) = state.decoder.next_event() {
        if let Err(e) = state.translator.on_data(&event.data, out) {
            tracing::warn!(error = %e, "untranslatable upstream chunk");
            state
                .translator
                .fail("api_error", "the upstream sent a malformed chunk", out);
            state.done = true;
            state.failed = true;
            return;
        }
    }
}

struct OpenAiState {
    upstream: ByteStream,
    tap: OpenAiStreamTap,
    idle: Duration,
    done: bool,
    failed: bool,
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
    response: super::upstream::UpstreamResponse,
    tap: OpenAiStreamTap,
    idle: Duration,
    admission: Admission,
    trace: Trace,
    guard: Guard,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let state = OpenAiState {
        upstream: Box::pin(response.bytes_stream()),
        tap,
        idle,
        done: false,
        failed: false,
        admission,
        trace,
        _guard: guard,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        let mut out = Vec::new();
        while out.is_empty() {
            match tokio::time::timeout(state.idle, state.upstream.next()).await {
                Ok(Some(Ok(bytes))) => state.tap.push(&bytes, &mut out),
                Ok(None) => {
                    state.tap.finish(&mut out);
                    state.done = true;
                    if out.is_empty() {
                        return None;
                    }
                }
                // OpenAI's SSE has no error event; ending the body with an error makes hyper
                // abort the chunked response, which clients report as a broken stream.
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "upstream stream broke");
                    state.done = true;
                    state.failed = true;
                    return Some((Err(std::io::Error::other("upstream stream broke")), state));
                }
                Err(_) => {
                    tracing::warn!(idle_secs = state.idle.as_secs(), "upstream stream stalled");
                    state.done = true;
                    state.failed = true;
                    return Some((Err(std::io::Error::other("upstream stalled")), state));
                }
            }
        }
        Some((Ok(Bytes::from(out)), state))
    })
}
