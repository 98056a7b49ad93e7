//! Choosing an account and sending the request: model resolution for the calling key, then one
//! attempt per candidate in routing order until one answers 2xx. A failure before the first
//! byte reaches the client moves on to the next candidate invisibly; the last failure becomes
//! the client's error, in its protocol.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use super::upstream::UpstreamError;
use crate::accounts::LiveAccount;
use crate::error::{ApiError, ErrorKind};
use crate::routing::{Candidate, candidates, key_may_request};
use crate::state::AppState;
use crate::store::KeyRecord;

/// Most accounts tried for one request.
const MAX_ATTEMPTS: usize = 3;

/// A successful upstream attempt: the account that answered and its response (headers read,
/// body not yet).
#[derive(Debug)]
pub(super) struct Dispatched<T> {
    /// The account that answered.
    pub account: Arc<LiveAccount>,
    /// The upstream response, status 2xx.
    pub response: reqwest::Response,
    /// What `build` returned alongside the body for this account.
    pub extra: T,
}

/// Rotates the starting point among accounts of equal priority so load spreads across them.
static ROUND_ROBIN: AtomicUsize = AtomicUsize::new(0);

/// Orders candidates for one request: priority tiers as given, rotated inside each tier.
fn attempt_order(mut list: Vec<Candidate>) -> Vec<Candidate> {
    let turn = ROUND_ROBIN.fetch_add(1, Ordering::Relaxed);
    let mut start = 0;
    while start < list.len() {
        let priority = list[start].account.settings.priority;
        let end = list[start..]
            .iter()
            .position(|c| c.account.settings.priority != priority)
            .map_or(list.len(), |n| start + n);
        let tier = &mut list[start..end];
        let len = tier.len();
        tier.rotate_left(turn % len);
        start = end;
    }
    list
}

/// Resolves `model` for `caller` and sends the body `build` makes for each account in turn.
pub(super) async fn dispatch<T>(
    state: &AppState,
    caller: &KeyRecord,
    model: &str,
    build: impl Fn(&LiveAccount) -> Result<(Bytes, T), ApiError>,
) -> Result<Dispatched<T>, ApiError> {
    if !key_may_request(&caller.key, model) {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            format!("this API key may not use model {model:?}"),
        ));
    }
    let snapshot = state.accounts.snapshot();
    let list = candidates(&snapshot, &caller.key, model);
    if list.is_empty() {
        return Err(ApiError::not_found(format!(
            "model {model:?} is not served by any account"
        )));
    }
    let mut last_error = None;
    for candidate in attempt_order(list).into_iter().take(MAX_ATTEMPTS) {
        let account = candidate.account;
        let (body, extra) = build(&account)?;
        match state.upstreams.chat(&account, body).await {
            Ok(response) => {
                return Ok(Dispatched {
                    account,
                    response,
                    extra,
                });
            }
            Err(error) => {
                tracing::warn!(
                    account = %account.settings.name,
                    error = %error,
                    "upstream attempt failed"
                );
                let retry = error.is_retryable();
                last_error = Some((account, error));
                if !retry {
                    break;
                }
            }
        }
    }
    let Some((account, error)) = last_error else {
        return Err(ApiError::internal(
            "no upstream attempt was made",
            &"empty candidate list",
        ));
    };
    Err(client_error(&account, error))
}

/// The client's view of an upstream failure.
pub(super) fn client_error(account: &LiveAccount, error: UpstreamError) -> ApiError {
    let name = &account.settings.name;
    match error {
        UpstreamError::BadProxy(e) => ApiError::new(
            ErrorKind::BadGateway,
            format!("account {name:?} has an unusable proxy setting: {e}"),
        ),
        UpstreamError::Connect(_) | UpstreamError::Transport(_) => ApiError::new(
            ErrorKind::BadGateway,
            format!("cannot reach the upstream of account {name:?}"),
        ),
        UpstreamError::FirstByteTimeout(d) => ApiError::new(
            ErrorKind::GatewayTimeout,
            format!(
                "the upstream of account {name:?} did not answer within {}s",
                d.as_secs()
            ),
        ),
        UpstreamError::Status {
            status,
            retry_after,
            body,
        } => match status {
            // Our credential is wrong, not the client's: a 401 would tell Claude Code to log in.
            401 | 403 => ApiError::new(
                ErrorKind::BadGateway,
                format!(
                    "the upstream of account {name:?} rejected relayd's credentials (HTTP {status}); check the account's apiKey"
                ),
            ),
            404 => ApiError::new(
                ErrorKind::BadGateway,
                format!(
                    "the upstream of account {name:?} answered 404: check its endpoint and deploymentName"
                ),
            ),
            429 => ApiError::new(
                ErrorKind::RateLimited,
                format!("the upstream of account {name:?} is rate limiting; retry later"),
            )
            .with_retry_after(retry_after.unwrap_or(5)),
            400..=499 => {
                let message = upstream_message(&body);
                match context_overflow(&message) {
                    Some(anthropic_wording) => ApiError::invalid(anthropic_wording),
                    None => {
                        ApiError::invalid(format!("the upstream rejected the request: {message}"))
                    }
                }
            }
            _ => ApiError::new(
                ErrorKind::BadGateway,
                format!("the upstream of account {name:?} failed (HTTP {status})"),
            ),
        },
    }
}

/// The `error.message` of an OpenAI-style error body, else the body itself (truncated).
fn upstream_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("message"))
                .or_else(|| v.get("detail"))
                .and_then(|m| m.as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| body.chars().take(500).collect())
}

/// Recognises context-length errors of vLLM, SGLang, llama.cpp and OpenAI and rewords them the
/// way Anthropic does (`prompt is too long: X tokens > Y maximum`), which Claude Code matches on
/// to compact the conversation.
pub(super) fn context_overflow(message: &str) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    let about_context = lower.contains("context length")
        || lower.contains("context_length")
        || lower.contains("context window")
        || lower.contains("maximum context")
        || lower.contains("too many tokens")
        || lower.contains("exceeds the available context");
    if !about_context {
        return None;
    }
    let numbers: Vec<u64> = message
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .filter(|&n| n >= 16)
        .collect();
    let maximum = numbers.first().copied();
    let requested = numbers
        .iter()
        .copied()
        .filter(|&n| Some(n) != maximum)
        .max();
    Some(match (requested, maximum) {
        (Some(requested), Some(maximum)) if requested > maximum => {
            format!("prompt is too long: {requested} tokens > {maximum} maximum")
        }
        (_, Some(maximum)) => format!(
            "prompt is too long: {} tokens > {maximum} maximum",
            maximum + 1
        ),
        _ => "prompt is too long: the request exceeds the model's context window".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vllm_overflow_is_reworded() {
        let vllm = "This model's maximum context length is 32768 tokens. However, you requested 40000 tokens (39000 in the messages, 1000 in the completion).";
        assert_eq!(
            context_overflow(vllm).unwrap(),
            "prompt is too long: 40000 tokens > 32768 maximum"
        );
        let llama =
            "the request exceeds the available context size (8192 tokens), try increasing it";
        assert!(
            context_overflow(llama)
                .unwrap()
                .starts_with("prompt is too long: ")
        );
        assert_eq!(context_overflow("invalid temperature"), None);
    }
}
