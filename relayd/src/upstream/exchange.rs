//! Small bounded request/answer exchanges with an upstream, for the probe and the tokenizer:
//! one JSON (or SSE) body out, the whole answer back within a time budget and a size bound.
//! The relay path streams its answers and never uses these.

use std::time::Duration;

use axum::http::Method;
use bytes::Bytes;
use serde_json::Value;

use super::{UpstreamError, Upstreams};
use crate::accounts::LiveAccount;

/// The most an exchange reads of an answer: the probe's answers are tiny, a tokenizer's list
/// of token ids for a long prompt is not (about 8 bytes a token).
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// Sends `body` (JSON, or nothing for a GET) to `url` with the account's auth and returns the
/// whole 2xx answer, all within `budget`.
pub(crate) async fn raw(
    upstreams: &Upstreams,
    account: &LiveAccount,
    method: Method,
    url: String,
    body: Option<&Value>,
    budget: Duration,
) -> Result<Bytes, UpstreamError> {
    let body = match body {
        Some(v) => Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
        None => Bytes::new(),
    };
    // The Messages API (the native checks, native count_tokens) wants its version header;
    // hosted Anthropic-compatible vendors refuse requests without it.
    let headers = if url.contains("/v1/messages") {
        super::anthropic::anthropic_headers(&axum::http::HeaderMap::new())
    } else {
        Vec::new()
    };
    let exchange = async {
        let response = upstreams.send(account, method, url, body, &headers).await?;
        response
            .bytes_within(MAX_ANSWER_BYTES)
            .await
            .map_err(|e| UpstreamError::Transport(e.to_string()))
    };
    tokio::time::timeout(budget, exchange)
        .await
        .unwrap_or(Err(UpstreamError::FirstByteTimeout(budget)))
}

/// As [`raw`], with the answer parsed as JSON.
pub(crate) async fn json(
    upstreams: &Upstreams,
    account: &LiveAccount,
    method: Method,
    url: String,
    body: Option<&Value>,
    budget: Duration,
) -> Result<Value, UpstreamError> {
    let bytes = raw(upstreams, account, method, url, body, budget).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let start = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned();
        UpstreamError::BadAnswer(format!("not JSON ({e}): {start:?}"))
    })
}
