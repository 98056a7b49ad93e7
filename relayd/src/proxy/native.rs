//! Anthropic clients on Anthropic-native upstreams: the attempt that sends the request
//! untranslated ([`crate::translate::native`] rewrites it), and the streamed answer passed
//! through event by event with the stream machinery of [`super::stream`]: `ping`s while the
//! upstream is silent, the idle timeout, the line bound, an `error` event on a mid-stream
//! failure, usage recorded even when the client hangs up.

use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

use super::dispatch::{Attempt, Call};
use super::stream::{Guard, StreamLimits, next_within, read_to_end, ready_before};
use super::trace::Trace;
use super::translate_error;
use crate::accounts::LiveAccount;
use crate::error::ApiError;
use crate::limits::Admission;
use crate::translate::{
    NativeRequestInfo, NativeStreamTap, StreamTranslator, native_error_event,
    prepare_native_request,
};
use crate::upstream::{BodyError, BodyStream};

/// How long a streamed answer waits for more upstream events before writing what it has
/// (see [`ready_before`]).
const LINGER: Duration = Duration::from_millis(1);

/// The native attempt for `account`: the client's body with its model, billing line and output
/// cap rewritten.
pub(super) fn attempt(
    body: &Bytes,
    account: &LiveAccount,
    max_output_tokens: Option<u32>,
) -> Result<Attempt<NativeRequestInfo>, ApiError> {
    let (upstream, info) =
        prepare_native_request(body, &account.settings.deployment_name, max_output_tokens)
            .map_err(translate_error)?;
    Ok(Attempt {
        call: Call::Messages,
        body: Bytes::from(upstream),
        stream: info.stream,
        extra: info,
    })
}

struct NativeState {
    upstream: BodyStream,
    tap: NativeStreamTap,
    limits: StreamLimits,
    /// Upstream silence so far; survives across emitted pings so the idle timeout still fires.
    silent: Duration,
    done: bool,
    /// relayd reported an upstream failure to the client (an `error` event).
    failed: bool,
    upstream_ended: bool,
    admission: Admission,
    trace: Trace,
    _guard: Guard,
}

impl Drop for NativeState {
    /// At the end of the stream, whether complete, failed or abandoned by the client: the
    /// tokens used so far count against the key, and the request is recorded.
    fn drop(&mut self) {
        let usage = self.tap.usage().unwrap_or_default();
        self.admission.record(&usage);
        match (self.done, self.failed || self.tap.errored()) {
            (false, _) => self.trace.abandoned(usage),
            (true, false) => self.trace.stream_ended(200, usage),
            (true, true) => self.trace.stream_ended(502, usage),
        }
    }
}

/// The client's SSE body for a native upstream stream.
pub(super) fn native_sse(
    upstream: BodyStream,
    tap: NativeStreamTap,
    limits: StreamLimits,
    admission: Admission,
    trace: Trace,
    guard: Guard,
) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    let state = NativeState {
        upstream,
        tap,
        limits,
        silent: Duration::ZERO,
        done: false,
        failed: false,
        upstream_ended: false,
        admission,
        trace,
        _guard: guard,
    };
    futures_util::stream::unfold(state, next_event)
}

async fn next_event(
    mut state: NativeState,
) -> Option<(Result<Bytes, std::convert::Infallible>, NativeState)> {
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
                    fail(
                        &mut state,
                        "the upstream stopped sending data (idle timeout)",
                        &mut out,
                    );
                } else {
                    StreamTranslator::ping(&mut out);
                }
            }
            Ok(item) => take(&mut state, item, &mut out),
        }
        if state.done && out.is_empty() {
            return None;
        }
    }
    // What else already arrived goes into the same write.
    let mut linger = std::pin::pin!(tokio::time::sleep(LINGER));
    while !state.done {
        match ready_before(&mut state.upstream, linger.as_mut()).await {
            Some(item) => take(&mut state, item, &mut out),
            None => break,
        }
    }
    Some((Ok(Bytes::from(out)), state))
}

/// Passes one upstream item (a chunk, the end, or a failure) through the tap into `out`.
fn take(state: &mut NativeState, item: Option<Result<Bytes, BodyError>>, out: &mut Vec<u8>) {
    match item {
        Some(Ok(bytes)) => {
            state.silent = Duration::ZERO;
            state.tap.push(&bytes, out);
            if state.tap.pending_bytes() > state.limits.max_line {
                tracing::warn!(
                    max_line_bytes = state.limits.max_line,
                    "upstream stream event too long"
                );
                fail(
                    state,
                    "the upstream sent an event longer than relayd accepts (upstream.max_line_bytes)",
                    out,
                );
            }
        }
        Some(Err(e)) => {
            tracing::warn!(error = %e, "upstream stream broke");
            fail(
                state,
                "the upstream connection broke in the middle of the answer",
                out,
            );
        }
        None => {
            state.upstream_ended = true;
            state.tap.finish(out);
            if !state.tap.ended() && !state.tap.errored() {
                fail(
                    state,
                    "the upstream ended the stream before the answer was complete",
                    out,
                );
            }
            state.done = true;
        }
    }
    if state.tap.ended() || state.tap.errored() {
        state.done = true;
    }
}

/// Ends the stream with an `error` event.
fn fail(state: &mut NativeState, message: &str, out: &mut Vec<u8>) {
    native_error_event("api_error", message, out);
    state.done = true;
    state.failed = true;
}
