//! The cooldown policy: how long an account is skipped after an upstream failure. It reads a
//! [`Failure`], routing's own account of what went wrong, so the policy does not depend on the
//! upstream client; the client converts its errors into one.

use shared::time::UnixMillis;

use crate::config::Routing;
use crate::coordinator::Cooldown;

/// What went wrong with an upstream attempt, as far as the account's health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The account's proxy setting is unusable, or its proxy refused the connection.
    Proxy,
    /// TCP/TLS connect failed.
    Connect,
    /// No answer within the first-byte timeout.
    Timeout,
    /// The connection broke while the answer was read.
    Broken,
    /// A 2xx answer relayd cannot use.
    BadAnswer,
    /// Closed without an answer on a new connection as well: the request is the likely cause.
    Dropped,
    /// A non-2xx status.
    Status {
        /// HTTP status.
        status: u16,
        /// The `retry-after` seconds, when given.
        retry_after: Option<u64>,
    },
}

/// The cooldown `failure` earns under `config`: connect errors, first-byte timeouts, broken
/// transports, 5xx, 429 (for its `retry-after` when given, at most `max_retry_after_secs`) and
/// 401/403.
pub fn cooldown_for(config: &Routing, failure: &Failure, now: UnixMillis) -> Option<Cooldown> {
    let (secs, reason) = match *failure {
        Failure::Proxy => (config.cooldown_connect_secs, "proxy unusable".to_owned()),
        Failure::Connect => (config.cooldown_connect_secs, "connect error".to_owned()),
        Failure::Timeout => (config.cooldown_timeout_secs, "no answer in time".to_owned()),
        Failure::Broken => (
            config.cooldown_server_error_secs,
            "connection broke".to_owned(),
        ),
        Failure::BadAnswer => (
            config.cooldown_server_error_secs,
            "unusable answer".to_owned(),
        ),
        // A client-caused failure must not cool the account down.
        Failure::Dropped => return None,
        Failure::Status {
            status,
            retry_after,
        } => match status {
            429 => (
                retry_after.map_or(config.cooldown_rate_limit_secs, |secs| {
                    secs.min(config.max_retry_after_secs)
                }),
                "HTTP 429".to_owned(),
            ),
            401 | 403 => (config.cooldown_auth_secs, format!("HTTP {status}")),
            500..=599 => (config.cooldown_server_error_secs, format!("HTTP {status}")),
            _ => return None,
        },
    };
    if secs == 0 {
        return None;
    }
    let millis = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX / 2);
    Some(Cooldown {
        until: now.saturating_add(millis),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, retry_after: Option<u64>) -> Failure {
        Failure::Status {
            status,
            retry_after,
        }
    }

    #[test]
    fn cooldowns_per_cause() {
        let config = Routing::default();
        let at = |e: &Failure| cooldown_for(&config, e, 0).map(|c| c.until);
        assert_eq!(
            at(&status(429, Some(7))),
            Some(7_000),
            "retry-after honoured"
        );
        assert_eq!(
            at(&status(429, None)),
            Some(1000 * i64::try_from(config.cooldown_rate_limit_secs).unwrap())
        );
        assert_eq!(
            at(&status(503, None)),
            Some(1000 * i64::try_from(config.cooldown_server_error_secs).unwrap())
        );
        assert_eq!(
            at(&status(401, None)),
            Some(1000 * i64::try_from(config.cooldown_auth_secs).unwrap())
        );
        assert_eq!(
            at(&Failure::Connect),
            Some(1000 * i64::try_from(config.cooldown_connect_secs).unwrap())
        );
        assert_eq!(
            at(&Failure::Timeout),
            Some(1000 * i64::try_from(config.cooldown_timeout_secs).unwrap())
        );
        assert_eq!(
            at(&status(400, None)),
            None,
            "the request's fault, not the account's"
        );
        assert_eq!(at(&status(404, None)), None);
    }

    #[test]
    fn a_retry_after_is_capped_and_never_overflows() {
        let config = Routing {
            max_retry_after_secs: 600,
            ..Routing::default()
        };
        let until = |secs: u64, now: UnixMillis| {
            cooldown_for(&config, &status(429, Some(secs)), now).map(|c| c.until)
        };
        assert_eq!(until(7, 1_000), Some(8_000), "under the cap: as asked");
        assert_eq!(until(600, 1_000), Some(601_000));
        assert_eq!(
            until(999_999_999, 1_000),
            Some(601_000),
            "the issue's header"
        );
        assert_eq!(until(u64::MAX, 1_000), Some(601_000));
        assert_eq!(
            until(u64::MAX, i64::MAX - 5),
            Some(i64::MAX),
            "saturates at the end of time"
        );
        assert_eq!(until(0, 1_000), None, "retry-after: 0 means no wait");
        // The ceiling is for what an upstream says; configured durations stay as configured.
        let long = Routing {
            max_retry_after_secs: 1,
            cooldown_rate_limit_secs: 30,
            cooldown_auth_secs: 300,
            ..Routing::default()
        };
        let at = |e: &Failure| cooldown_for(&long, e, 0).map(|c| c.until);
        assert_eq!(at(&status(429, Some(u64::MAX))), Some(1_000));
        assert_eq!(at(&status(429, None)), Some(30_000));
        assert_eq!(at(&status(401, None)), Some(300_000));
        // Configured durations near u64::MAX do not overflow either.
        let huge = Routing {
            cooldown_auth_secs: u64::MAX,
            ..Routing::default()
        };
        assert!(cooldown_for(&huge, &status(403, None), 0).is_some_and(|c| c.until > 0));
    }
}
