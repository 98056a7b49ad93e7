//! Why an upstream attempt failed, classified so the caller can choose between failing over,
//! cooling the account down and answering the client.

use std::time::Duration;

/// Why an upstream attempt failed before any byte reached the client.
#[derive(Debug)]
pub enum UpstreamError {
    /// The proxy setting could not be used.
    BadProxy(String),
    /// The account's proxy could not be reached or refused the connection.
    ProxyConnect(String),
    /// TCP/TLS connect failed.
    Connect(String),
    /// No answer (headers, or the first byte of the body) within the first-byte timeout.
    FirstByteTimeout(Duration),
    /// The connection broke while the answer was read (reset, truncated body, protocol error).
    Transport(String),
    /// The server closed a new connection without answering, after the same happened on a
    /// pooled one: the request itself is the likely cause (some servers drop a body they
    /// cannot parse), so the account is not cooled down.
    Dropped(String),
    /// A 2xx answer relayd cannot use: not the format asked for (an HTML page, JSON that is no
    /// completion), empty, or beyond the configured size bounds.
    BadAnswer(String),
    /// The upstream answered with a non-2xx status.
    Status {
        /// HTTP status.
        status: u16,
        /// `retry-after` seconds, when given.
        retry_after: Option<u64>,
        /// The body (truncated), for error messages.
        body: String,
    },
}

impl UpstreamError {
    /// Whether another account should be tried: the failure says nothing about the request
    /// itself. A 400 (bad request, context too long) would fail everywhere, so it is not retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::BadProxy(_)
            | Self::ProxyConnect(_)
            | Self::Connect(_)
            | Self::FirstByteTimeout(_)
            | Self::Transport(_)
            | Self::Dropped(_)
            | Self::BadAnswer(_) => true,
            Self::Status { status, .. } => {
                matches!(status, 401 | 403 | 404 | 408 | 409 | 429) || *status >= 500
            }
        }
    }
}

impl UpstreamError {
    /// A short cause label for metrics.
    pub fn cause(&self) -> &'static str {
        match self {
            Self::BadProxy(_) | Self::ProxyConnect(_) => "proxy",
            Self::Connect(_) => "connect",
            Self::FirstByteTimeout(_) => "timeout",
            Self::Transport(_) => "transport",
            Self::Dropped(_) => "dropped",
            Self::BadAnswer(_) => "bad_answer",
            Self::Status {
                status: 401 | 403, ..
            } => "auth",
            Self::Status { status: 429, .. } => "rate_limited",
            Self::Status { status, .. } if *status >= 500 => "server_error",
            Self::Status { .. } => "client_error",
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadProxy(e) => write!(f, "unusable proxy setting: {e}"),
            Self::ProxyConnect(e) => write!(f, "cannot connect through the proxy: {e}"),
            Self::Connect(e) => write!(f, "cannot connect: {e}"),
            Self::FirstByteTimeout(d) => write!(f, "no response within {}s", d.as_secs()),
            Self::Transport(e) => write!(f, "transport error: {e}"),
            Self::Dropped(e) => write!(f, "connection closed without an answer: {e}"),
            Self::BadAnswer(e) => write!(f, "unusable answer: {e}"),
            Self::Status { status, body, .. } => write!(f, "HTTP {status}: {body}"),
        }
    }
}
