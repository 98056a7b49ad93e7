//! An upstream's answer once its headers are read: status, headers and the body still to come,
//! read whole, bounded, or as a stream.

use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _, TryStreamExt as _};
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;

use super::{BoxError, describe};

/// A 2xx upstream answer: status and headers read, the body still to come.
pub struct UpstreamResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: UnsyncBoxBody<Bytes, BoxError>,
}

impl std::fmt::Debug for UpstreamResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamResponse")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// The upstream body broke off (reset, truncated chunking, protocol error).
#[derive(Debug)]
pub struct BodyError(String);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BodyError {}

impl BodyError {
    fn of(e: &BoxError) -> Self {
        Self(describe(e.as_ref()))
    }
}

impl UpstreamResponse {
    pub(super) fn new<B>(response: axum::http::Response<B>) -> Self
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = response.into_parts();
        Self {
            status: parts.status,
            headers: parts.headers,
            body: body.map_err(Into::into).boxed_unsync(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The whole body (test-endpoint's small answers; the relay path bounds its reads in
    /// `proxy::answer`).
    pub async fn bytes(self) -> Result<Bytes, BodyError> {
        match self.body.collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) => Err(BodyError::of(&e)),
        }
    }

    /// At most `limit` bytes of the body; the rest is not read.
    pub async fn bytes_within(self, limit: usize) -> Result<Bytes, BodyError> {
        let mut stream = self.bytes_stream();
        let mut out = Vec::new();
        while out.len() < limit {
            match stream.next().await {
                Some(Ok(bytes)) => {
                    let room = limit - out.len();
                    out.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok(Bytes::from(out))
    }

    /// The body as it arrives.
    pub fn bytes_stream(self) -> BodyStream {
        Box::pin(self.body.into_data_stream().map_err(|e| BodyError::of(&e)))
    }
}

/// An upstream body as a stream of reads.
pub type BodyStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, BodyError>> + Send>>;
