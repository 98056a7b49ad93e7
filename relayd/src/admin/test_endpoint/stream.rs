//! The streaming check: a streamed chat must yield chunks and end with `[DONE]` or a
//! `finish_reason`; it also measures the latency figures of the report.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use shared::admin::LatencyFigures;

use super::checker::{Checker, Failure, Stage, millis};
use super::hints::truncate;
use crate::translate::SseDecoder;
use crate::upstream::UpstreamResponse;

/// What the streaming chat measured.
#[derive(Debug)]
pub(super) struct Streamed {
    pub(super) detail: String,
    pub(super) figures: LatencyFigures,
    pub(super) usage_given: bool,
}

/// What the stream's events said so far.
#[derive(Debug, Default)]
struct Tally {
    /// Chunks that parsed (not `[DONE]`, not an error).
    chunks: u64,
    /// Chunks with text (content or reasoning): the token estimate when there is no usage.
    content_chunks: u64,
    /// Whether `[DONE]` came.
    done: bool,
    finish_reason: Option<String>,
    usage_tokens: Option<u64>,
}

impl Checker<'_> {
    /// A streaming chat: chunks arrive and the stream ends properly. Also measures latency.
    pub(super) async fn stream(&self) -> Result<Streamed, Failure> {
        let body = json!({
            "model": self.account.settings.deployment_name,
            "messages": [{"role": "user", "content": "Count from 1 to 20, separated by spaces."}],
            "max_tokens": 64,
            "temperature": 0,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let started = Instant::now();
        let response = self
            .upstreams
            .chat(self.account, Bytes::from(body.to_string()))
            .await
            .map_err(|e| self.failure(Stage::Stream, &e))?;
        expect_event_stream(&response)?;
        let mut decoder = SseDecoder::new();
        let mut first_byte = None;
        let mut tally = Tally::default();
        let mut body = response.bytes_stream();
        let mut ended = false;
        while !ended {
            let next = body.next().await;
            match next {
                Some(Ok(bytes)) => {
                    first_byte.get_or_insert_with(|| started.elapsed());
                    decoder.push(&bytes);
                }
                Some(Err(e)) => {
                    return Err(Failure::new(
                        format!(
                            "the stream broke after {} chunks: {}",
                            tally.chunks,
                            self.scrub(&e.to_string())
                        ),
                        Some(
                            "the server or a proxy in between cut the stream: check their \
                             timeouts and logs"
                                .to_owned(),
                        ),
                    ));
                }
                None => {
                    decoder.finish();
                    ended = true;
                }
            }
            while let Some(event) = decoder.next_event() {
                self.read_event(event.data.trim(), &mut tally)?;
            }
        }
        streamed(&tally, first_byte, started.elapsed())
    }

    /// One event's data, added to `tally`; an error the stream carried fails the check.
    fn read_event(&self, data: &str, tally: &mut Tally) -> Result<(), Failure> {
        if data == "[DONE]" {
            tally.done = true;
            return Ok(());
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return Ok(());
        };
        if let Some(error) = chunk.get("error") {
            return Err(Failure::new(
                format!(
                    "the stream carried an error: {}",
                    self.scrub(&truncate(&error.to_string(), 200))
                ),
                Some("see the server's log".to_owned()),
            ));
        }
        tally.chunks += 1;
        if let Some(n) = chunk["usage"]["completion_tokens"].as_u64() {
            tally.usage_tokens = Some(n);
        }
        let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else {
            return Ok(());
        };
        let delta = &choice["delta"];
        let has_text = ["content", "reasoning_content", "reasoning"]
            .iter()
            .any(|k| delta[*k].as_str().is_some_and(|s| !s.is_empty()));
        if has_text {
            tally.content_chunks += 1;
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            tally.finish_reason = Some(reason.to_owned());
        }
        Ok(())
    }
}

/// Fails unless the answer is an event stream (a server that ignores `stream: true`).
fn expect_event_stream(response: &UpstreamResponse) -> Result<(), Failure> {
    let content_type = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if !content_type.starts_with("text/event-stream") {
        return Err(Failure::new(
            format!(
                "asked to stream, the server answered {}",
                if content_type.is_empty() {
                    "without a content type"
                } else {
                    content_type.as_str()
                }
            ),
            Some(
                "the server does not stream at this URL: use an OpenAI-compatible server \
                 (vLLM, SGLang, llama.cpp server) and check any proxy in between"
                    .to_owned(),
            ),
        ));
    }
    Ok(())
}

/// The check's result from a finished stream: it must have chunks and a proper ending; the
/// latency figures come from the first byte and the total time.
fn streamed(
    tally: &Tally,
    first_byte: Option<Duration>,
    total: Duration,
) -> Result<Streamed, Failure> {
    let chunks = tally.chunks;
    if chunks == 0 {
        return Err(Failure::new(
            "the stream ended without any chunk",
            Some("see the server's log".to_owned()),
        ));
    }
    let ending = match (&tally.finish_reason, tally.done) {
        (_, true) => "[DONE]".to_owned(),
        (Some(reason), false) => format!("finish_reason {reason}"),
        (None, false) => {
            return Err(Failure::new(
                format!(
                    "the stream stopped after {chunks} chunks without [DONE] or a finish_reason"
                ),
                Some(
                    "the server or a proxy in between cut the stream: check their timeouts"
                        .to_owned(),
                ),
            ));
        }
    };
    let usage_tokens = tally.usage_tokens;
    let first_byte = first_byte.unwrap_or(total);
    let output_tokens = usage_tokens.unwrap_or(tally.content_chunks);
    let window = total.saturating_sub(first_byte).as_secs_f64();
    let window = if window > 0.0 {
        window
    } else {
        total.as_secs_f64().max(0.001)
    };
    #[expect(
        clippy::cast_precision_loss,
        reason = "token counts are far below 2^52"
    )]
    let tokens_per_second = (output_tokens as f64 / window * 10.0).round() / 10.0;
    Ok(Streamed {
        detail: format!("{chunks} chunks, ended with {ending}"),
        figures: LatencyFigures {
            first_byte_millis: millis(first_byte),
            total_millis: millis(total),
            output_tokens,
            tokens_estimated: usage_tokens.is_none(),
            tokens_per_second,
        },
        usage_given: usage_tokens.is_some(),
    })
}
