//! Why an upstream attempt failed, classified so the caller can choose between failing over,
//! cooling the account down and answering the client.

use std::time::{Duration, SystemTime};

use crate::routing::Failure;

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

impl UpstreamError {
    /// What this failure says about the account's health, for the cooldown policy
    /// ([`crate::routing::cooldown_for`]).
    pub fn failure(&self) -> Failure {
        match self {
            Self::BadProxy(_) | Self::ProxyConnect(_) => Failure::Proxy,
            Self::Connect(_) => Failure::Connect,
            Self::FirstByteTimeout(_) => Failure::Timeout,
            Self::Transport(_) => Failure::Broken,
            Self::BadAnswer(_) => Failure::BadAnswer,
            Self::Dropped(_) => Failure::Dropped,
            Self::Status {
                status,
                retry_after,
                ..
            } => Failure::Status {
                status: *status,
                retry_after: *retry_after,
            },
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

/// Seconds an upstream's `retry-after` value asks for at `now`: delay-seconds, or an HTTP-date
/// (seconds until then, rounded up; 0 once past). A run of digits too large for `u64` saturates
/// rather than being ignored: it asks for a long wait, which the caller caps. `None` for
/// anything else (negative, fractional, garbage).
pub(super) fn retry_after_secs(value: &str, now: SystemTime) -> Option<u64> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(value.parse().unwrap_or(u64::MAX));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).map_or(0, |d| {
        d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_values_parse_as_seconds_or_http_dates() {
        // Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example date.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let parse = |v: &str| retry_after_secs(v, now);
        assert_eq!(parse("120"), Some(120));
        assert_eq!(parse(" 7 "), Some(7));
        assert_eq!(parse("0"), Some(0));
        assert_eq!(parse("18446744073709551615"), Some(u64::MAX));
        assert_eq!(
            parse("99999999999999999999999999"),
            Some(u64::MAX),
            "saturates"
        );
        assert_eq!(parse("Sun, 06 Nov 1994 08:50:37 GMT"), Some(60));
        assert_eq!(
            parse("Sunday, 06-Nov-94 08:49:47 GMT"),
            Some(10),
            "RFC 850 form"
        );
        assert_eq!(parse("Sun Nov  6 08:49:57 1994"), Some(20), "asctime form");
        assert_eq!(
            parse("Sat, 05 Nov 1994 08:49:37 GMT"),
            Some(0),
            "in the past"
        );
        assert_eq!(
            parse("Fri, 31 Dec 9999 23:59:59 GMT").map(|s| s > 0),
            Some(true)
        );
        for bad in ["", "-1", "1.5", "soon", "0x10", "Sun, 06 Nov 1994"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
