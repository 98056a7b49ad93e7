//! Probing an upstream for its [`Profile`]: server family and version, context window,
//! tokenizer, native Messages API, tool calls, reasoning field, usage in streams.
//!
//! The probe never fails: what it cannot learn stays `None` with a one-line note. Every request
//! is bounded ([`Budgets`]; generation asks for at most [`MAX_TOKENS`]), no request outlives
//! the whole probe's budget, and the three independent groups — what the server says about itself, the
//! native Messages checks and the chat-completions checks — run concurrently, each group in
//! sequence (a one-slot llama.cpp server would only queue them), so a probe takes at most about
//! 20 s by default. An endpoint that answers none of the family requests is not asked anything else.
//!
//! Files: this one runs the groups; [`family`] recognises the server, one file per family reads
//! its window; [`tokenizer`] finds the tokenizer that works; [`native`] and [`chat`] are the
//! generation checks; [`wire`] holds the request helpers they share.

use std::time::Duration;

use shared::account::AccountKind;
use shared::profile::{Profile, ServerFamily};
use shared::time::now_millis;

use super::Upstreams;
use crate::accounts::LiveAccount;

mod chat;
mod family;
mod llamacpp;
mod lmstudio;
mod native;
mod ollama;
mod sglang;
mod tgi;
mod tokenizer;
mod vllm;
mod wire;

use wire::Probe;

/// The output tokens a generation check asks for: enough for a short tool call.
pub const MAX_TOKENS: u32 = 16;

/// How long a probe's requests may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// One question about the server (version, window, a tiny count).
    pub info: Duration,
    /// One tiny generation.
    pub generation: Duration,
    /// The whole probe: a request never outlives it.
    pub total: Duration,
}

impl Default for Budgets {
    fn default() -> Self {
        Self {
            info: Duration::from_secs(4),
            generation: Duration::from_secs(8),
            total: Duration::from_secs(20),
        }
    }
}

/// Probes `account`'s upstream. Never fails: what could not be learnt is left out and noted.
pub async fn probe(upstreams: &Upstreams, account: &LiveAccount) -> Profile {
    probe_within(upstreams, account, Budgets::default()).await
}

/// [`probe`] with other time budgets (a slow server, a test on a busy machine).
pub async fn probe_within(
    upstreams: &Upstreams,
    account: &LiveAccount,
    budgets: Budgets,
) -> Profile {
    let probe = Probe::new(upstreams, account, budgets);
    let mut profile = Profile {
        probed_at: now_millis(),
        ..Profile::default()
    };
    let kind = account.settings.kind;
    let detected = match kind {
        // Azure names no server and serves none of the self-hosted surfaces.
        AccountKind::Azure => family::Detected::named(ServerFamily::Azure),
        AccountKind::Openai | AccountKind::Anthropic => family::detect(&probe).await,
    };
    if !detected.reachable {
        profile.family = detected.family;
        profile.notes.push(format!(
            "the server did not answer ({}); nothing else was asked",
            detected.why_unreachable.as_deref().unwrap_or("no answer")
        ));
        return profile;
    }
    profile.family = match (detected.family, kind) {
        (ServerFamily::Unknown, AccountKind::Anthropic) => ServerFamily::AnthropicCompatible,
        (family, _) => family,
    };
    profile.version = detected.version.clone();
    if profile.version.is_none() && profile.family != ServerFamily::Unknown {
        profile
            .notes
            .push(format!("{} does not say its version", profile.family));
    }
    profile.notes.extend(detected.notes.iter().cloned());
    let about = async {
        let window = family::window(&probe, &detected).await;
        let tokenizer = tokenizer::find(&probe, profile.family).await;
        (window, tokenizer)
    };
    let (about, native, chat) = tokio::join!(about, native::check(&probe), async {
        match kind {
            // An Anthropic-only endpoint has no chat completions to check.
            AccountKind::Anthropic => None,
            AccountKind::Openai | AccountKind::Azure => Some(chat::check(&probe).await),
        }
    });
    let (window, tokenizer) = about;
    let window = window.map(|(window, note)| {
        profile.notes.extend(note);
        window
    });
    settle(
        &mut profile.context_window,
        window,
        "context window",
        &mut profile.notes,
    );
    settle(
        &mut profile.tokenizer,
        tokenizer,
        "tokenizer",
        &mut profile.notes,
    );
    native.apply(&mut profile);
    if let Some(chat) = chat {
        chat.apply(&mut profile);
    }
    if profile.family == ServerFamily::Ollama {
        ollama::ignores_max_completion_tokens(&mut profile);
    }
    profile
}

/// Records a finding, or the note saying why there is none.
fn settle<T>(slot: &mut Option<T>, found: Result<T, String>, what: &str, notes: &mut Vec<String>) {
    match found {
        Ok(value) => *slot = Some(value),
        Err(why) => notes.push(format!("{what} unknown: {why}")),
    }
}
