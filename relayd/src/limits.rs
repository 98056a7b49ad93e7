//! Relay-key limits checked before a request is routed: tokens per UTC day, requests in flight,
//! requests per rolling minute. Each refusal is a 429 `rate_limit_error` with `retry-after`.
//! (Bound accounts and allowed models are routing rules, expiry is authentication.)
//!
//! The counters live in the [`Coordinator`], so with Redis they are shared by every instance.

use std::sync::Arc;

use shared::key::{KeyId, RelayKey};
use shared::time::now_millis;

use crate::coordinator::{Coordinator, KeyRefusal, secs_to_midnight};
use crate::error::{ApiError, ErrorKind};
use crate::translate::Usage;

/// A request let through by the key's limits. Holds the key's concurrency place until dropped
/// and adds the tokens the answer used to the key's daily count.
#[derive(Debug)]
pub struct Admission {
    coordinator: Arc<dyn Coordinator>,
    key: KeyId,
    counts_concurrency: bool,
    counts_tokens: bool,
}

impl Admission {
    /// Adds the tokens of an answer (input, output and cache reads) to the key's day.
    pub fn record(&self, usage: &Usage) {
        if !self.counts_tokens {
            return;
        }
        let t = &usage.tokens;
        let total = t
            .input_tokens
            .saturating_add(t.output_tokens)
            .saturating_add(t.cache_read_tokens);
        if total > 0 {
            self.coordinator.add_tokens(&self.key, total, now_millis());
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.counts_concurrency {
            self.coordinator.leave_key(&self.key);
        }
    }
}

/// The client's answer for a refusal.
pub fn refusal_error(refusal: KeyRefusal, key: &RelayKey) -> ApiError {
    let (message, retry_after) = match refusal {
        KeyRefusal::RequestsPerMinute { retry_after } => (
            format!(
                "this API key is limited to {} requests per minute",
                key.limits.requests_per_minute.unwrap_or(0)
            ),
            retry_after,
        ),
        KeyRefusal::TokensPerDay { retry_after } => (
            format!(
                "this API key has used its {} tokens for today (UTC)",
                key.limits.tokens_per_day.unwrap_or(0)
            ),
            retry_after,
        ),
        KeyRefusal::Concurrency => (
            format!(
                "this API key is limited to {} concurrent requests",
                key.limits.concurrency.unwrap_or(0)
            ),
            1,
        ),
    };
    ApiError::new(ErrorKind::RateLimited, message).with_retry_after(retry_after)
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorKind::Unavailable, e.to_string())
}

/// Checks `key`'s limits and counts this request.
pub async fn admit(
    coordinator: &Arc<dyn Coordinator>,
    key: &RelayKey,
) -> Result<Admission, ApiError> {
    let now = now_millis();
    let limits = &key.limits;
    if let Some(per_day) = limits.tokens_per_day {
        let used = coordinator
            .tokens_today(&key.id, now)
            .await
            .map_err(unavailable)?;
        if used >= per_day {
            return Err(refusal_error(
                KeyRefusal::TokensPerDay {
                    retry_after: secs_to_midnight(now),
                },
                key,
            ));
        }
    }
    let mut admission = Admission {
        coordinator: Arc::clone(coordinator),
        key: key.id.clone(),
        counts_concurrency: false,
        counts_tokens: limits.tokens_per_day.is_some(),
    };
    if let Some(limit) = limits.concurrency {
        if !coordinator
            .enter_key(&key.id, limit)
            .await
            .map_err(unavailable)?
        {
            return Err(refusal_error(KeyRefusal::Concurrency, key));
        }
        admission.counts_concurrency = true;
    }
    if let Some(per_minute) = limits.requests_per_minute {
        // Dropping `admission` on refusal gives the concurrency place back.
        if let Err(retry_after) = coordinator
            .take_request(&key.id, per_minute, now)
            .await
            .map_err(unavailable)?
        {
            return Err(refusal_error(
                KeyRefusal::RequestsPerMinute { retry_after },
                key,
            ));
        }
    }
    Ok(admission)
}
