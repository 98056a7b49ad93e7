//! Finding the tokenizer that works: the family's candidates, each verified with one tiny count.

use serde_json::{Map, json};
use shared::profile::{ServerFamily, Tokenizer};

use super::wire::{Probe, brief};
use crate::upstream::tokenize::{count_chat_tokenize, count_llama_cpp, count_messages};

/// The tokenizers a family may have, likeliest first.
fn candidates(family: ServerFamily) -> &'static [Tokenizer] {
    match family {
        ServerFamily::LlamaCpp => &[Tokenizer::LlamaCpp, Tokenizer::AnthropicCountTokens],
        ServerFamily::Vllm => &[Tokenizer::ChatTokenize],
        // SGLang's `/tokenize` takes a bare `prompt`, no `messages`: the chat template that turns
        // a request into a prompt is the server's, so only its native `count_tokens` (when it
        // serves the Messages API) counts a request as the server renders it.
        ServerFamily::Sglang => &[Tokenizer::AnthropicCountTokens],
        ServerFamily::Azure => &[],
        ServerFamily::Ollama
        | ServerFamily::Tgi
        | ServerFamily::LmStudio
        | ServerFamily::AnthropicCompatible => &[Tokenizer::AnthropicCountTokens],
        ServerFamily::Unknown => &[
            Tokenizer::ChatTokenize,
            Tokenizer::LlamaCpp,
            Tokenizer::AnthropicCountTokens,
        ],
    }
}

/// The first candidate that counts a one-line request as some tokens.
pub(super) async fn find(probe: &Probe<'_>, family: ServerFamily) -> Result<Tokenizer, String> {
    let mut tried = Vec::new();
    for &tokenizer in candidates(family) {
        match count(probe, tokenizer).await {
            Ok(n) if n > 0 => return Ok(tokenizer),
            Ok(_) => tried.push(format!("{tokenizer:?} counted nothing")),
            Err(e) => tried.push(format!("{tokenizer:?}: {}", brief(&e))),
        }
    }
    if tried.is_empty() {
        return Err(format!("{family} has no tokenizer endpoint"));
    }
    Err(tried.join("; "))
}

async fn count(
    probe: &Probe<'_>,
    tokenizer: Tokenizer,
) -> Result<u64, crate::upstream::UpstreamError> {
    let budget = probe.info();
    tokio::time::timeout(budget, count_unbounded(probe, tokenizer))
        .await
        .unwrap_or(Err(crate::upstream::UpstreamError::FirstByteTimeout(
            budget,
        )))
}

async fn count_unbounded(
    probe: &Probe<'_>,
    tokenizer: Tokenizer,
) -> Result<u64, crate::upstream::UpstreamError> {
    let message = json!([{ "role": "user", "content": "Hello" }]);
    let mut chat = Map::new();
    chat.insert("messages".to_owned(), message.clone());
    match tokenizer {
        Tokenizer::LlamaCpp => count_llama_cpp(probe.upstreams, probe.account, chat).await,
        Tokenizer::ChatTokenize => count_chat_tokenize(probe.upstreams, probe.account, chat).await,
        Tokenizer::AnthropicCountTokens => {
            let body = json!({ "model": probe.deployment(), "messages": message });
            let body = serde_json::to_vec(&body).unwrap_or_default();
            count_messages(probe.upstreams, probe.account, &body).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sglang_is_never_asked_for_a_chat_tokenize() {
        assert_eq!(
            candidates(ServerFamily::Sglang),
            &[Tokenizer::AnthropicCountTokens]
        );
    }

    #[test]
    fn every_self_hosted_family_but_azure_has_a_candidate() {
        assert!(candidates(ServerFamily::Azure).is_empty());
        assert_eq!(candidates(ServerFamily::LlamaCpp)[0], Tokenizer::LlamaCpp);
    }
}
