//! What a 2xx upstream answer turns out to be, found out before anything reaches the client.
//!
//! Response headers are not the commit point: an upstream can answer 200 and then say nothing,
//! break off, send an HTML page, or ignore `stream: true` and send one JSON completion. Until a
//! byte went to the client each of these is an upstream failure like a refused connection —
//! failover to the next account, with a cooldown — so the answer is looked at first:
//! - a non-streamed answer is read whole (the first byte within the first-byte deadline, then no
//!   read gap over the idle timeout, at most `upstream.max_answer_bytes`) and must be a JSON
//!   completion;
//! - a streamed answer must start within the first-byte deadline and look like SSE; a JSON
//!   completion instead is replayed as the stream that would have carried it
//!   ([`crate::translate::completion_as_sse`]); anything else fails the attempt.
//!
//! Answers of the Messages API (native upstreams) are checked the same way, for a `content`
//! array; a native stream that is not SSE fails the attempt.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::time::Instant;

use super::dispatch::Call;
use crate::translate::completion_as_sse;
use crate::upstream::{BodyStream, UpstreamError, UpstreamResponse};

/// A usable upstream answer.
pub(super) enum Answer {
    /// The whole body of a non-streamed answer: a JSON completion.
    Complete(Bytes),
    /// A stream of SSE bytes, its first read already taken (and given back in front).
    Stream(BodyStream),
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Complete(body) => write!(f, "Complete({} bytes)", body.len()),
            Self::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// How long and how much an answer may take.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    /// When the first byte of the body must have arrived (the request's first-byte deadline).
    pub first_byte_deadline: Instant,
    /// The first-byte timeout, for the error message.
    pub first_byte: Duration,
    /// Longest gap between two reads once the body has started.
    pub idle: Duration,
    /// Largest body read whole.
    pub max_answer_bytes: usize,
    /// Longest stretch of a stream's start read while deciding whether it is SSE.
    pub max_line_bytes: usize,
}

/// Looks at `response` as the answer to a streaming (`stream`) or non-streaming request made
/// with `call`.
pub(super) async fn settle(
    response: UpstreamResponse,
    stream: bool,
    call: Call,
    bounds: Bounds,
) -> Result<Answer, UpstreamError> {
    let content_type = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    let mut body = response.bytes_stream();
    if !stream {
        let bytes = read_rest(&mut body, Vec::new(), bounds).await?;
        let usable = match call {
            Call::Chat => serde_json::from_slice::<CompletionShape>(&bytes).is_ok(),
            Call::Messages => serde_json::from_slice::<MessageShape>(&bytes).is_ok(),
        };
        if !usable {
            let wanted = match call {
                Call::Chat => "a chat completion",
                Call::Messages => "a message",
            };
            return Err(not_usable(wanted, &content_type, &bytes));
        }
        return Ok(Answer::Complete(bytes));
    }
    let mut head = Vec::new();
    loop {
        match sse_verdict(&head) {
            Verdict::Sse => {
                let first = futures_util::stream::iter(Some(Ok(Bytes::from(head))));
                return Ok(Answer::Stream(Box::pin(first.chain(body))));
            }
            Verdict::NotSse => break,
            Verdict::Undecided if head.len() > bounds.max_line_bytes => break,
            Verdict::Undecided => {}
        }
        match next_read(&mut body, head.is_empty(), bounds).await? {
            Some(bytes) => head.extend_from_slice(&bytes),
            None if head.is_empty() => {
                return Err(UpstreamError::BadAnswer(
                    "the upstream answered with an empty body".to_owned(),
                ));
            }
            None => break,
        }
    }
    // Not SSE: a server that ignored `stream: true` sends its completion as one JSON body.
    let bytes = read_rest(&mut body, head, bounds).await?;
    if call == Call::Messages {
        return Err(not_usable("an event stream", &content_type, &bytes));
    }
    match completion_as_sse(&bytes) {
        Ok(sse) => {
            tracing::debug!(
                content_type,
                "the upstream ignored stream: true; its JSON completion is streamed"
            );
            let replay = futures_util::stream::iter(Some(Ok(Bytes::from(sse))));
            Ok(Answer::Stream(Box::pin(replay)))
        }
        Err(_) => Err(not_usable("an event stream", &content_type, &bytes)),
    }
}

/// The one part of a completion checked before committing: a `choices` array.
#[derive(Deserialize)]
struct CompletionShape {
    #[expect(dead_code, reason = "only its presence and shape are checked")]
    choices: Vec<IgnoredAny>,
}

/// The one part of a Messages answer checked before committing: a `content` array.
#[derive(Deserialize)]
struct MessageShape {
    #[expect(dead_code, reason = "only its presence and shape are checked")]
    content: Vec<IgnoredAny>,
}

/// Reads the rest of `body` after `head`, within the bounds.
async fn read_rest(
    body: &mut BodyStream,
    mut head: Vec<u8>,
    bounds: Bounds,
) -> Result<Bytes, UpstreamError> {
    while let Some(bytes) = next_read(body, head.is_empty(), bounds).await? {
        if head.len() + bytes.len() > bounds.max_answer_bytes {
            return Err(UpstreamError::BadAnswer(format!(
                "the answer is larger than upstream.max_answer_bytes ({} bytes)",
                bounds.max_answer_bytes
            )));
        }
        head.extend_from_slice(&bytes);
    }
    Ok(Bytes::from(head))
}

/// The next read of `body`: the first one by the first-byte deadline, later ones within the idle
/// timeout.
async fn next_read(
    body: &mut BodyStream,
    first: bool,
    bounds: Bounds,
) -> Result<Option<Bytes>, UpstreamError> {
    let until = if first {
        bounds.first_byte_deadline
    } else {
        Instant::now() + bounds.idle
    };
    match tokio::time::timeout_at(until, body.next()).await {
        Err(_) if first => Err(UpstreamError::FirstByteTimeout(bounds.first_byte)),
        Err(_) => Err(UpstreamError::Transport(format!(
            "the answer stopped for {}s (idle timeout)",
            bounds.idle.as_secs()
        ))),
        Ok(Some(Err(e))) => Err(UpstreamError::Transport(format!(
            "the connection broke in the answer: {e}"
        ))),
        Ok(Some(Ok(bytes))) => Ok(Some(bytes)),
        Ok(None) => Ok(None),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Sse,
    NotSse,
    Undecided,
}

/// Whether the start of a body is an event stream: its first line is an SSE field or comment.
fn sse_verdict(head: &[u8]) -> Verdict {
    const FIELDS: [&[u8]; 5] = [b"data:", b"event:", b"id:", b"retry:", b":"];
    let start = head
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(head.len());
    let text = &head[start..];
    if text.is_empty() {
        Verdict::Undecided
    } else if FIELDS.iter().any(|f| text.starts_with(f)) {
        Verdict::Sse
    } else if FIELDS.iter().any(|f| f.starts_with(text)) {
        Verdict::Undecided
    } else {
        Verdict::NotSse
    }
}

/// The failure for a 2xx answer that is not what was asked for, with a glimpse of what it was.
fn not_usable(wanted: &str, content_type: &str, body: &[u8]) -> UpstreamError {
    let glimpse: String = String::from_utf8_lossy(&body[..body.len().min(120)])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    UpstreamError::BadAnswer(format!(
        "expected {wanted}, got {content_type} ({} bytes): {glimpse:?}",
        body.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_is_recognised_from_its_first_field() {
        assert_eq!(sse_verdict(b"data: {}"), Verdict::Sse);
        assert_eq!(sse_verdict(b"\r\n: keep-alive\n"), Verdict::Sse);
        assert_eq!(sse_verdict(b"event: x"), Verdict::Sse);
        assert_eq!(sse_verdict(b"da"), Verdict::Undecided);
        assert_eq!(sse_verdict(b"  "), Verdict::Undecided);
        assert_eq!(sse_verdict(b"{\"choices\":[]}"), Verdict::NotSse);
        assert_eq!(sse_verdict(b"<!DOCTYPE html>"), Verdict::NotSse);
    }
}
