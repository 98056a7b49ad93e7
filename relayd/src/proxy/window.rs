//! Keeping a request inside its upstream's context window.
//!
//! Claude Code assumes a 200k window and asks for 32k–64k output tokens; vLLM refuses any
//! request whose prompt plus `max_tokens` exceeds `max_model_len`, even when the prompt alone
//! fits, and small windows overflow without warning. With a known window W (the account's
//! `contextWindow`, set or detected), each attempt therefore sends
//! `max_tokens = min(client's, maxOutputTokens, W − prompt − margin)`, and a prompt that leaves
//! less than `min_output_tokens` is refused here, worded the way Anthropic words it, without
//! calling the upstream.
//!
//! Prompt tokens are the local estimate, made deliberately conservative (×5/4: it already
//! over-counts tool-heavy prompts), while that is far below W — no round trip for the common
//! case. Closer to W, the upstream's own tokenizer counts (it renders with the server's chat
//! template, which only the server knows); when it cannot, the conservative estimate decides.

use std::sync::OnceLock;

use bytes::Bytes;
use shared::profile::Tokenizer;

use crate::accounts::LiveAccount;
use crate::config::ContextConfig;
use crate::error::{ApiError, ErrorKind};
use crate::state::AppState;

/// What a request brings to the window check. The local estimate is made on first use: a
/// request to accounts without a known window never pays for it.
pub(super) struct Prompt<'a> {
    estimator: Box<dyn Fn() -> u64 + Send + Sync + 'a>,
    estimate: OnceLock<u64>,
    /// The Anthropic request body, which an upstream tokenizer can count; `None` for requests
    /// only the estimate judges.
    anthropic_body: Option<&'a [u8]>,
}

impl std::fmt::Debug for Prompt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prompt")
            .field("estimate", &self.estimate.get())
            .finish_non_exhaustive()
    }
}

impl<'a> Prompt<'a> {
    /// A prompt estimated by `estimator`, countable upstream when `anthropic_body` is given.
    pub(super) fn new(
        estimator: impl Fn() -> u64 + Send + Sync + 'a,
        anthropic_body: Option<&'a [u8]>,
    ) -> Self {
        Self {
            estimator: Box::new(estimator),
            estimate: OnceLock::new(),
            anthropic_body,
        }
    }

    /// The local estimate, made once.
    fn estimate(&self) -> u64 {
        *self.estimate.get_or_init(|| (self.estimator)())
    }
}

/// How an attempt on one account fits its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fit {
    /// Send it, with the output capped at this many tokens (`None`: the window is unknown, or
    /// the request cannot outgrow it).
    Send(Option<u32>),
    /// Refuse it: `tokens` of prompt leave too little room in `window`.
    TooLong {
        /// The prompt's tokens.
        tokens: u64,
        /// The largest prompt that still leaves `min_output_tokens` for the answer.
        maximum: u64,
    },
}

impl Fit {
    /// The client's error for a prompt that does not fit.
    pub(super) fn error(tokens: u64, maximum: u64) -> ApiError {
        ApiError::new(
            ErrorKind::ContextLengthExceeded,
            format!("prompt is too long: {tokens} tokens > {maximum} maximum"),
        )
    }
}

/// The fit of a prompt of `tokens` in `window`.
pub(super) fn fit(window: u32, tokens: u64, config: &ContextConfig) -> Fit {
    let room = u64::from(window)
        .saturating_sub(tokens)
        .saturating_sub(u64::from(config.margin_tokens));
    if room < u64::from(config.min_output_tokens) {
        return Fit::TooLong {
            tokens,
            maximum: u64::from(window)
                .saturating_sub(u64::from(config.margin_tokens))
                .saturating_sub(u64::from(config.min_output_tokens)),
        };
    }
    Fit::Send(Some(u32::try_from(room).unwrap_or(u32::MAX)))
}

/// The conservative form of a local estimate.
pub(super) fn conservative(estimate: u64) -> u64 {
    estimate.saturating_add(estimate / 4)
}

/// Whether the estimate is far enough below `window` that no upstream count is worth a round
/// trip: the cap it gives may be lower than an exact count would, never higher.
fn far_below(conservative: u64, window: u32) -> bool {
    conservative <= u64::from(window) / 2
}

/// Checks `prompt` against `account`'s window: the tokenizer is asked only near the limit.
pub(super) async fn check(state: &AppState, account: &LiveAccount, prompt: &Prompt<'_>) -> Fit {
    let Some(window) = account.resolved.context_window.value else {
        return Fit::Send(None);
    };
    let config = &state.live_config.load().context;
    let estimate = conservative(prompt.estimate());
    let tokens = match (account.resolved.tokenizer.value, prompt.anthropic_body) {
        (Some(tokenizer), Some(body)) if !far_below(estimate, window) => {
            exact(state, account, tokenizer, body)
                .await
                .unwrap_or(estimate)
        }
        _ => estimate,
    };
    let fit = fit(window, tokens, config);
    if let Fit::TooLong { tokens, maximum } = fit {
        tracing::info!(
            account = %account.settings.name,
            window,
            tokens,
            maximum,
            "prompt does not fit the account's context window; not sent"
        );
    }
    fit
}

/// Claude Code's compaction request, shrunk when it cannot fit the smallest known window among
/// `accounts` (see [`crate::translate::compaction`]); `None` for every other request, and when
/// no shrink is needed or possible.
pub(super) fn shrink_compaction(
    state: &AppState,
    accounts: &[std::sync::Arc<LiveAccount>],
    body: &[u8],
) -> Option<Bytes> {
    use crate::translate::compaction;
    let config = &state.live_config.load().context;
    if !config.shrink_compaction || !compaction::is_compaction_request(body) {
        return None;
    }
    let window = accounts
        .iter()
        .filter_map(|a| a.resolved.context_window.value)
        .min()?;
    let tokens = conservative(crate::translate::count_tokens(body).ok()?);
    let Fit::TooLong { maximum, .. } = fit(window, tokens, config) else {
        return None;
    };
    let excess = tokens - maximum;
    // The estimate removed is the raw one; the conservative count shrinks by 5/4 of it.
    match compaction::shrink_compaction(body, (excess * 4).div_ceil(5) + 64, window) {
        Ok(Some(shrunk)) => {
            tracing::info!(
                window,
                tokens,
                removed = shrunk.removed_tokens,
                cut_results = shrunk.cut_results,
                "Claude Code's compaction request did not fit; cut the middle of its largest tool results"
            );
            Some(Bytes::from(shrunk.body))
        }
        Ok(None) | Err(_) => {
            tracing::info!(
                window,
                tokens,
                "Claude Code's compaction request does not fit even with its tool results cut"
            );
            None
        }
    }
}

/// The upstream's count of the request relayd would forward to `account`, `None` (logged) when
/// it cannot give one.
///
/// What is counted is what the server will be sent, in the format it will be sent in: the
/// chat-completions translation for a translated account, the rewritten Messages body (the
/// deployment as `model`, Claude Code's billing line gone) for a native one. A native account
/// on llama.cpp is counted by the server's own `count_tokens`, which renders the Messages body
/// exactly as its `/v1/messages` will; the translation relayd would make instead renders a
/// token or two differently.
pub(super) async fn exact(
    state: &AppState,
    account: &LiveAccount,
    tokenizer: Tokenizer,
    body: &[u8],
) -> Option<u64> {
    let native = account.resolved.native_messages.value;
    let counted = match tokenizer {
        Tokenizer::LlamaCpp if native => {
            match upstream_count(state, account, Tokenizer::AnthropicCountTokens, body).await {
                Ok(n) => Ok(n),
                Err(e) => {
                    tracing::debug!(account = %account.settings.name, error = %e, "the server's count_tokens could not count the prompt; rendering its chat template instead");
                    upstream_count(state, account, tokenizer, body).await
                }
            }
        }
        _ => upstream_count(state, account, tokenizer, body).await,
    };
    match counted {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::debug!(account = %account.settings.name, error = %e, "the upstream could not count the prompt; using the local estimate");
            None
        }
    }
}

/// One count by `tokenizer` of what relayd would forward to `account` for `body`.
async fn upstream_count(
    state: &AppState,
    account: &LiveAccount,
    tokenizer: Tokenizer,
    body: &[u8],
) -> Result<u64, crate::upstream::UpstreamError> {
    // The upstream client knows no formats: the translation to chat completions (what
    // `/tokenize` and `/apply-template` take) is done here, and only when the tokenizer needs it.
    let to_chat = |body: &[u8]| {
        use crate::translate::{AnthropicRequest, ReasoningMode, UpstreamOptions};
        let options = UpstreamOptions {
            deployment: &account.settings.deployment_name,
            max_output_tokens: None,
            use_max_completion_tokens: false,
            reasoning: ReasoningMode::Drop,
            send_reasoning_content: account.settings.send_reasoning_content,
        };
        AnthropicRequest::parse(body)
            .and_then(|request| request.to_openai(&options))
            .map(|(chat, _)| chat)
            .map_err(|e| e.to_string())
    };
    // A Messages-format count sees the body as a native attempt sends it: both paths drop the
    // billing line, which would otherwise add some 30 tokens the server never gets.
    let prepared;
    let body = match tokenizer {
        Tokenizer::AnthropicCountTokens => {
            let deployment = &account.settings.deployment_name;
            prepared = crate::translate::prepare_native_request(body, deployment, None)
                .map_err(|e| {
                    crate::upstream::UpstreamError::BadAnswer(format!(
                        "the request cannot be counted upstream: {e}"
                    ))
                })?
                .0;
            prepared.as_slice()
        }
        Tokenizer::LlamaCpp | Tokenizer::ChatTokenize => body,
    };
    crate::upstream::tokenize::count_tokens(&state.upstreams, account, tokenizer, body, to_chat)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ContextConfig {
        ContextConfig {
            min_output_tokens: 1024,
            margin_tokens: 64,
            shrink_compaction: true,
        }
    }

    #[test]
    fn the_output_is_capped_at_what_the_window_leaves() {
        assert_eq!(fit(32_768, 20_000, &config()), Fit::Send(Some(12_704)));
    }

    #[test]
    fn a_prompt_leaving_less_than_the_minimum_output_is_too_long() {
        assert_eq!(
            fit(8192, 7_500, &config()),
            Fit::TooLong {
                tokens: 7_500,
                maximum: 7_104
            }
        );
        assert_eq!(
            fit(8192, 9_543, &config()),
            Fit::TooLong {
                tokens: 9_543,
                maximum: 7_104
            }
        );
        let error = Fit::error(9_543, 7_104);
        assert_eq!(
            error.message,
            "prompt is too long: 9543 tokens > 7104 maximum"
        );
    }

    #[test]
    fn the_estimate_is_trusted_only_far_below_the_window() {
        assert_eq!(conservative(8_000), 10_000);
        assert!(far_below(conservative(8_000), 32_768));
        assert!(!far_below(conservative(14_000), 32_768));
    }
}
