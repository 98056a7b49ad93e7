//! Choosing an account and sending the request: model resolution for the calling key, then one
//! attempt per candidate in routing order until one answers 2xx. A failure before the first
//! byte reaches the client moves on to the next candidate invisibly; the last failure becomes
//! the client's error, in its protocol.

use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue};
use bytes::Bytes;
use shared::time::now_millis;

use super::answer::{Answer, Bounds, settle};
use super::trace::Trace;
use super::window::{self, Fit, Prompt};
use crate::accounts::LiveAccount;
use crate::coordinator::AffinityKey;
use crate::error::{ApiError, ErrorKind, Surface};
use crate::keys::Caller;
use crate::routing::{Acquired, Slot, key_may_request};
use crate::state::AppState;
use crate::upstream::UpstreamError;

/// What one account's attempt sends: the upstream call and body, whether a stream is asked
/// for, and what the handler needs to read the answer.
#[derive(Debug)]
pub(super) struct Attempt<T> {
    /// Which of the upstream's APIs the body is for.
    pub call: Call,
    /// The upstream request body.
    pub body: Bytes,
    /// Whether the request asks for a stream.
    pub stream: bool,
    /// Handed back with the answer.
    pub extra: T,
}

/// The upstream API an attempt calls. Decided per account, so one candidate list may mix them
/// and failover crosses from one to the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Call {
    /// OpenAI chat completions (`/chat/completions`).
    Chat,
    /// The Anthropic Messages API (`/v1/messages`), for Anthropic clients sent natively.
    Messages,
}

/// A successful upstream attempt: the account that answered and its answer (a complete body,
/// or a stream whose start has been seen).
#[derive(Debug)]
pub(super) struct Dispatched<T> {
    /// The account that answered.
    pub account: Arc<LiveAccount>,
    /// The upstream's usable answer.
    pub answer: Answer,
    /// What `build` returned alongside the body for this account.
    pub extra: T,
    /// The account's concurrency slot, held until the answer's last byte.
    pub slot: Slot,
}

/// The request as routing sees it: the client's protocol, the model asked for, the
/// conversation it belongs to (for affinity), the prompt (for the accounts' context windows), and the
/// client headers a native upstream gets.
pub(super) struct Ask<'a> {
    /// The client's protocol: OpenAI clients never reach Anthropic-only accounts.
    pub surface: Surface,
    /// Client headers forwarded on [`Call::Messages`].
    pub forward: &'a [(HeaderName, HeaderValue)],
    /// The model name asked for.
    pub model: &'a str,
    /// The conversation: from the client's session id, or the request's stable prefix.
    pub affinity: Option<AffinityKey>,
    /// The prompt, measured against each account's window.
    pub prompt: &'a Prompt<'a>,
}

/// Resolves the model for `caller` and sends the body `build` makes for each chosen account in
/// turn, with the output cap the account's context window leaves (see [`super::window`]).
/// Each attempt is noted in `trace`, so a failed request is recorded against the account that
/// failed it.
pub(super) async fn dispatch<T>(
    state: &AppState,
    trace: &mut Trace,
    caller: &Caller,
    ask: Ask<'_>,
    build: impl Fn(&LiveAccount, Option<u32>) -> Result<Attempt<T>, ApiError>,
) -> Result<Dispatched<T>, ApiError> {
    let Ask {
        surface,
        forward,
        model,
        affinity,
        prompt,
    } = ask;
    let list = candidates(state, trace, caller, surface, model)?;
    let router = &state.routing;
    let deadline = tokio::time::Instant::now()
        + std::time::Duration::from_secs(router.config().queue_timeout_secs);
    let mut tried = vec![false; list.len()];
    let mut last_error = None;
    let mut too_long = None;
    for _ in 0..router.config().max_attempts {
        let Some(Acquired {
            index,
            slot,
            placement,
        }) = router
            .acquire(&list, &tried, affinity.as_ref(), deadline)
            .await?
        else {
            break;
        };
        tried[index] = true;
        let account = Arc::clone(&list[index]);
        let cap = match window::check(state, &account, prompt).await {
            Fit::Send(cap) => cap,
            Fit::TooLong { tokens, maximum } => {
                // Another candidate may have a larger window; nothing was sent, so no cooldown.
                drop(slot);
                too_long = Some(Fit::error(tokens, maximum));
                continue;
            }
        };
        trace.account(&account.settings.name, &account.settings.deployment_name);
        let attempt = build(&account, cap)?;
        let upstreams = &state.upstreams;
        let sent = match attempt.call {
            Call::Chat => upstreams.chat(&account, attempt.body).await,
            Call::Messages => upstreams.messages(&account, attempt.body, forward).await,
        };
        let outcome = match sent {
            Ok(response) => settle(response, attempt.stream, attempt.call, bounds(upstreams)).await,
            Err(error) => Err(error),
        };
        match outcome {
            Ok(answer) => {
                if let Some(key) = &affinity {
                    router.remember(key, &account.id, placement);
                }
                return Ok(Dispatched {
                    account,
                    answer,
                    extra: attempt.extra,
                    slot,
                });
            }
            Err(error) => {
                failed(state, &account, &error, slot).await;
                let retry = error.is_retryable();
                last_error = Some((account, error));
                if !retry {
                    break;
                }
            }
        }
    }
    Err(match (last_error, too_long) {
        (Some((account, error)), _) => {
            client_error(&account, error, router.config().max_retry_after_secs)
        }
        (None, Some(too_long)) => too_long,
        (None, None) => ApiError::internal("no upstream attempt was made", &"empty candidate list"),
    })
}

/// The accounts that may serve `model` for `caller` calling in `surface`, in routing order;
/// the route is noted in `trace`. Accounts that speak only the Messages API serve Anthropic
/// clients only.
fn candidates(
    state: &AppState,
    trace: &mut Trace,
    caller: &Caller,
    surface: Surface,
    model: &str,
) -> Result<Vec<Arc<LiveAccount>>, ApiError> {
    if !key_may_request(caller, model) {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            format!("this API key may not use model {model:?}"),
        ));
    }
    let table = state.routing.table_for(state.accounts.snapshot());
    let mut route = table.candidates(caller, model);
    if route.accounts.is_empty() {
        return Err(ApiError::not_found(format!(
            "model {model:?} is not served by any account"
        )));
    }
    if surface == Surface::OpenAi {
        let (usable, anthropic_only): (Vec<_>, Vec<_>) = route
            .accounts
            .into_iter()
            .partition(|a| a.resolved.serves_openai_clients);
        if usable.is_empty() {
            let names: Vec<&str> = anthropic_only
                .iter()
                .map(|a| a.settings.name.as_str())
                .collect();
            return Err(ApiError::not_found(format!(
                "model {model:?} is served only by accounts that speak only the Anthropic Messages API ({}); call it through /v1/messages",
                names.join(", ")
            )));
        }
        route.accounts = usable;
    }
    // Recorded under the entry that routed it, never the client's string (bounded labels).
    trace.route(route.label);
    Ok(route.accounts)
}

/// The time bounds of one attempt, starting now.
fn bounds(upstreams: &crate::upstream::Upstreams) -> Bounds {
    Bounds {
        first_byte_deadline: tokio::time::Instant::now() + upstreams.first_byte_timeout(),
        first_byte: upstreams.first_byte_timeout(),
        idle: upstreams.idle_timeout(),
        max_answer_bytes: upstreams.limits().max_answer_bytes,
        max_line_bytes: upstreams.limits().max_line_bytes,
    }
}

/// Records a failed attempt (log, metrics, the account's cooldown) and gives its slot back.
async fn failed(state: &AppState, account: &LiveAccount, error: &UpstreamError, slot: Slot) {
    tracing::warn!(
        account = %account.settings.name,
        error = %error,
        "upstream attempt failed"
    );
    state
        .metrics
        .observe_upstream_error(&account.settings.name, error.cause());
    // Cool down before giving the slot back, so a waiting request woken by the release does
    // not pick this account again.
    let router = &state.routing;
    if let Some(cooldown) = router.cooldown_for(&error.failure(), now_millis()) {
        tracing::warn!(
            account = %account.settings.name,
            until = cooldown.until,
            reason = %cooldown.reason,
            "account cooling down"
        );
        router.coordinator().cool_down(&account.id, cooldown).await;
    }
    drop(slot);
}

/// The client's view of an upstream failure; a relayed `retry-after` is at most
/// `max_retry_after` seconds.
pub(super) fn client_error(
    account: &LiveAccount,
    error: UpstreamError,
    max_retry_after: u64,
) -> ApiError {
    let name = &account.settings.name;
    match error {
        UpstreamError::BadProxy(e) => ApiError::new(
            ErrorKind::BadGateway,
            format!("account {name:?} has an unusable proxy setting: {e}"),
        ),
        UpstreamError::ProxyConnect(_) => ApiError::new(
            ErrorKind::BadGateway,
            format!("cannot connect to the proxy of account {name:?}"),
        ),
        UpstreamError::Connect(_) => ApiError::new(
            ErrorKind::BadGateway,
            format!("cannot reach the upstream of account {name:?}"),
        ),
        UpstreamError::Transport(_) => ApiError::new(
            ErrorKind::BadGateway,
            format!(
                "the connection to the upstream of account {name:?} broke before the answer was complete"
            ),
        ),
        UpstreamError::Dropped(_) => ApiError::new(
            ErrorKind::BadGateway,
            format!("the upstream of account {name:?} closed the connection without answering"),
        ),
        UpstreamError::BadAnswer(_) => ApiError::new(
            ErrorKind::BadGateway,
            format!("the upstream of account {name:?} answered with something relayd cannot use"),
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
        } => status_error(name, status, retry_after, &body, max_retry_after),
    }
}

/// The client's view of an upstream's error status.
fn status_error(
    name: &str,
    status: u16,
    retry_after: Option<u64>,
    body: &str,
    max_retry_after: u64,
) -> ApiError {
    match status {
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
        .with_retry_after(retry_after.unwrap_or(5).min(max_retry_after)),
        400..=499 => {
            let message = upstream_message(body);
            match context_overflow(&message) {
                Some(anthropic_wording) => {
                    ApiError::new(ErrorKind::ContextLengthExceeded, anthropic_wording)
                }
                None => ApiError::invalid(format!("the upstream rejected the request: {message}")),
            }
        }
        _ => ApiError::new(
            ErrorKind::BadGateway,
            format!("the upstream of account {name:?} failed (HTTP {status})"),
        ),
    }
}

/// The `error.message` of an OpenAI-style error body (or the `message`, `detail` or `error` text
/// other servers use), else the body itself (truncated).
fn upstream_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("message"))
                .or_else(|| v.get("detail"))
                // TGI: `{"error": "…", "error_type": "validation"}`.
                .or_else(|| v.get("error"))
                .and_then(|m| m.as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| body.chars().take(500).collect())
}

/// Recognises context-length errors of vLLM, SGLang, llama.cpp, TGI and OpenAI and rewords them
/// the way Anthropic does (`prompt is too long: X tokens > Y maximum`), which Claude Code matches
/// on to compact the conversation. X is what the request needs (prompt plus the output it asked
/// room for, where the server counts both against the window), Y the window: X > Y always, so
/// the excess Claude Code sheds is never negative.
pub(super) fn context_overflow(message: &str) -> Option<String> {
    let (requested, maximum) = match worded(message) {
        Some(found) => (Some(found.0), Some(found.1)),
        None => guessed(message)?,
    };
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

/// (tokens the request needs, the window) from the wordings that name more numbers than the two,
/// read by what each number is.
fn worded(message: &str) -> Option<(u64, u64)> {
    // TGI: "Input validation error: `inputs` tokens + `max_new_tokens` must be <= {max_total}.
    // Given: {inputs} `inputs` tokens and {max_new} `max_new_tokens`".
    if let Some(maximum) = number_after(message, "`inputs` tokens + `max_new_tokens` must be <= ") {
        let inputs = number_after(message, "Given: ")?;
        let new = number_after(message, "`inputs` tokens and ").unwrap_or(0);
        return Some((inputs + new, maximum));
    }
    // TGI: "Input validation error: `inputs` must have less than {max_input} tokens. Given: {n}".
    if let Some(maximum) = number_after(message, "`inputs` must have less than ") {
        return Some((number_after(message, "Given: ")?, maximum));
    }
    // vLLM: "You passed {prompt} input tokens and requested {output} output tokens. However, the
    // model's context length is only {window} tokens, resulting in a maximum input length of …".
    if let Some(window) = number_after(message, "context length is only ") {
        let prompt = number_after(message, "You passed ")?;
        let output = number_after(message, "input tokens and requested ").unwrap_or(0);
        return Some((prompt + output, window));
    }
    // vLLM's renderer: "This model's maximum context length is {window} tokens. However, you
    // requested {output} output tokens and your prompt contains at least {prompt} input tokens,
    // for a total of at least {total} tokens." (the total, or the prompt, may be left out).
    if let Some(window) = number_after(message, "maximum context length is ")
        && let Some(output) = number_after(message, "you requested ")
        && message.contains(" output tokens")
    {
        let total = number_after(message, "for a total of at least ").or_else(|| {
            number_after(message, "your prompt contains at least ").map(|p| p + output)
        })?;
        return Some((total, window));
    }
    None
}

/// The digits right after `phrase` (matched case-insensitively), as a number.
fn number_after(message: &str, phrase: &str) -> Option<u64> {
    let at = message
        .to_ascii_lowercase()
        .find(&phrase.to_ascii_lowercase())?;
    let rest = &message[at + phrase.len()..];
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

/// The other wordings (OpenAI, older vLLM, SGLang, llama.cpp): the request is the largest
/// number, the window the first number below it. `None` when the message is not about the
/// context at all.
fn guessed(message: &str) -> Option<(Option<u64>, Option<u64>)> {
    let lower = message.to_ascii_lowercase();
    let about_context = lower.contains("context length")
        || lower.contains("context_length")
        || lower.contains("context window")
        || lower.contains("maximum context")
        || lower.contains("too many tokens")
        || lower.contains("exceeds the available context")
        || lower.contains("prompt is too long");
    if !about_context {
        return None;
    }
    let numbers: Vec<u64> = message
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .filter(|&n| n >= 16)
        .collect();
    // Servers word it in either order: vLLM and SGLang name the maximum first, llama.cpp
    // "request (9543 tokens) exceeds the available context size (8192 tokens)".
    let requested = numbers.iter().copied().max();
    let maximum = numbers
        .iter()
        .copied()
        .find(|&n| requested.is_some_and(|r| n < r))
        .or(requested);
    Some((requested, maximum))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vllm_overflow_is_reworded() {
        let anthropic = "prompt is too long: 210000 tokens > 200000 maximum";
        assert_eq!(context_overflow(anthropic).unwrap(), anthropic);
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
        // Window last, request first: the numbers must not swap.
        let llama = "request (9543 tokens) exceeds the available context size (8192 tokens), try increasing it";
        assert_eq!(
            context_overflow(llama).unwrap(),
            "prompt is too long: 9543 tokens > 8192 maximum"
        );
        let vllm_new = "This model's maximum context length is 32768 tokens. However, you requested 1000 output tokens and your prompt contains at least 32769 input tokens, for a total of at least 33769 tokens.";
        assert_eq!(
            context_overflow(vllm_new).unwrap(),
            "prompt is too long: 33769 tokens > 32768 maximum"
        );
        // The same without its total: the prompt plus the output asked for.
        let vllm_no_total = "This model's maximum context length is 262144 tokens. However, you requested 4096 output tokens and your prompt contains at least 258049 input tokens.";
        assert_eq!(
            context_overflow(vllm_no_total).unwrap(),
            "prompt is too long: 262145 tokens > 262144 maximum"
        );
        let vllm_passed = "You passed 31745 input tokens and requested 1024 output tokens. However, the model's context length is only 32768 tokens, resulting in a maximum input length of 31744 tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value=31745)";
        assert_eq!(
            context_overflow(vllm_passed).unwrap(),
            "prompt is too long: 32769 tokens > 32768 maximum"
        );
        let vllm_passed_no_output = "You passed 131073 input tokens and requested 0 output tokens. However, the model's context length is only 131072 tokens, resulting in a maximum input length of 131072 tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value=131073)";
        assert_eq!(
            context_overflow(vllm_passed_no_output).unwrap(),
            "prompt is too long: 131073 tokens > 131072 maximum"
        );
    }

    #[test]
    fn tgi_overflow_is_reworded_from_its_error_body() {
        let total = r#"{"error":"Input validation error: `inputs` tokens + `max_new_tokens` must be <= 8192. Given: 7000 `inputs` tokens and 2000 `max_new_tokens`","error_type":"validation"}"#;
        assert_eq!(
            context_overflow(&upstream_message(total)).unwrap(),
            "prompt is too long: 9000 tokens > 8192 maximum"
        );
        // The prompt alone fits; with the output asked for it does not. Still request > window.
        let small_prompt = "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 1512. Given: 30 `inputs` tokens and 3984 `max_new_tokens`";
        assert_eq!(
            context_overflow(small_prompt).unwrap(),
            "prompt is too long: 4014 tokens > 1512 maximum"
        );
        let input = r#"{"error":"Input validation error: `inputs` must have less than 4095 tokens. Given: 5000","error_type":"validation"}"#;
        assert_eq!(
            context_overflow(&upstream_message(input)).unwrap(),
            "prompt is too long: 5000 tokens > 4095 maximum"
        );
        // TGI's other validation errors are the client's to fix, not a compaction.
        assert_eq!(
            context_overflow(
                "Input validation error: `max_new_tokens` must be <= 4096. Given: 5000"
            ),
            None
        );
    }
}
