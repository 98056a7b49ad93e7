//! Counting a request's tokens the way the upstream will render it: only the server knows its
//! chat template, and Claude Code's tool-heavy requests render to a fraction of what a local
//! estimate says (or more, for templates that spell tools out).
//!
//! The upstream client does not know request formats (`tests/layers.rs`), so the caller hands
//! in the translation: [`count_tokens`] takes the Anthropic request and a function giving the
//! same request as an OpenAI chat-completions body, called only by the tokenizers that need it.

use std::time::Duration;

use axum::http::Method;
use serde_json::{Map, Value, json};
use shared::profile::Tokenizer;

use super::{UpstreamError, Upstreams, exchange, server_root};
use crate::accounts::LiveAccount;

/// How long one count may take, all round trips included: it sits in front of a request.
pub const COUNT_BUDGET: Duration = Duration::from_secs(5);

/// The tokens of `anthropic_body` as `account`'s server counts them with `tokenizer`.
/// `to_chat` turns the Anthropic body into an OpenAI chat-completions body (messages, tools);
/// its error is the reason it could not.
pub async fn count_tokens(
    upstreams: &Upstreams,
    account: &LiveAccount,
    tokenizer: Tokenizer,
    anthropic_body: &[u8],
    to_chat: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<u64, UpstreamError> {
    let counting = async {
        match tokenizer {
            Tokenizer::AnthropicCountTokens => {
                count_messages(upstreams, account, anthropic_body).await
            }
            Tokenizer::LlamaCpp => {
                let chat = chat_parts(anthropic_body, to_chat)?;
                count_llama_cpp(upstreams, account, chat).await
            }
            Tokenizer::ChatTokenize => {
                let chat = chat_parts(anthropic_body, to_chat)?;
                count_chat_tokenize(upstreams, account, chat).await
            }
        }
    };
    tokio::time::timeout(COUNT_BUDGET, counting)
        .await
        .unwrap_or(Err(UpstreamError::FirstByteTimeout(COUNT_BUDGET)))
}

/// The parts of a chat-completions body that shape the rendered prompt.
fn chat_parts(
    anthropic_body: &[u8],
    to_chat: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<Map<String, Value>, UpstreamError> {
    let chat = to_chat(anthropic_body).map_err(|e| {
        UpstreamError::BadAnswer(format!("the request cannot be counted upstream: {e}"))
    })?;
    let Ok(Value::Object(mut chat)) = serde_json::from_slice::<Value>(&chat) else {
        return Err(UpstreamError::BadAnswer(
            "the translated request is not a JSON object".to_owned(),
        ));
    };
    let mut parts = Map::new();
    for key in ["messages", "tools", "chat_template_kwargs"] {
        if let Some(value) = chat.remove(key) {
            parts.insert(key.to_owned(), value);
        }
    }
    Ok(parts)
}

/// llama.cpp: `/apply-template` renders the messages (and tools) with the server's template,
/// `/tokenize` counts the prompt with the BOS token the server adds when it generates.
pub(crate) async fn count_llama_cpp(
    upstreams: &Upstreams,
    account: &LiveAccount,
    chat: Map<String, Value>,
) -> Result<u64, UpstreamError> {
    let root = server_root(account);
    let rendered = exchange::json(
        upstreams,
        account,
        Method::POST,
        format!("{root}/apply-template"),
        Some(&Value::Object(chat)),
        COUNT_BUDGET,
    )
    .await?;
    let Some(prompt) = rendered.get("prompt").and_then(Value::as_str) else {
        return Err(UpstreamError::BadAnswer(
            "/apply-template answered no \"prompt\"".to_owned(),
        ));
    };
    let tokens = exchange::json(
        upstreams,
        account,
        Method::POST,
        format!("{root}/tokenize"),
        Some(&json!({ "content": prompt, "add_special": true })),
        COUNT_BUDGET,
    )
    .await?;
    match tokens.get("tokens").and_then(Value::as_array) {
        Some(tokens) => Ok(tokens.len() as u64),
        None => Err(UpstreamError::BadAnswer(
            "/tokenize answered no \"tokens\" list".to_owned(),
        )),
    }
}

/// vLLM: `/tokenize` takes the chat request itself and answers its `count`. (SGLang's takes
/// only a `prompt`, so it is never asked this way.)
pub(crate) async fn count_chat_tokenize(
    upstreams: &Upstreams,
    account: &LiveAccount,
    mut chat: Map<String, Value>,
) -> Result<u64, UpstreamError> {
    chat.insert(
        "model".to_owned(),
        Value::from(account.settings.deployment_name.as_str()),
    );
    chat.insert("add_generation_prompt".to_owned(), Value::Bool(true));
    let answer = exchange::json(
        upstreams,
        account,
        Method::POST,
        format!("{}/tokenize", server_root(account)),
        Some(&Value::Object(chat)),
        COUNT_BUDGET,
    )
    .await?;
    answer
        .get("count")
        .and_then(Value::as_u64)
        .ok_or_else(|| UpstreamError::BadAnswer("/tokenize answered no \"count\"".to_owned()))
}

/// Native Anthropic servers: `/v1/messages/count_tokens` with the deployment as `model`.
pub(crate) async fn count_messages(
    upstreams: &Upstreams,
    account: &LiveAccount,
    anthropic_body: &[u8],
) -> Result<u64, UpstreamError> {
    let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(anthropic_body) else {
        return Err(UpstreamError::BadAnswer(
            "the request to count is not a JSON object".to_owned(),
        ));
    };
    body.insert(
        "model".to_owned(),
        Value::from(account.settings.deployment_name.as_str()),
    );
    // count_tokens takes no generation settings; strict servers refuse them.
    for key in [
        "max_tokens",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "metadata",
    ] {
        body.remove(key);
    }
    let answer = exchange::json(
        upstreams,
        account,
        Method::POST,
        format!("{}/v1/messages/count_tokens", server_root(account)),
        Some(&Value::Object(body)),
        COUNT_BUDGET,
    )
    .await?;
    answer
        .get("input_tokens")
        .and_then(Value::as_u64)
        .ok_or_else(|| {
            UpstreamError::BadAnswer("count_tokens answered no \"input_tokens\"".to_owned())
        })
}
