//! The OpenAI chat-completions API, spoken by OpenAI-compatible servers (vLLM, SGLang,
//! llama.cpp, Ollama, TGI, hosted APIs) and by Azure: `POST …/chat/completions` and the
//! `GET …/models` health check. The URL shapes here are those of OpenAI servers, whose endpoint
//! is given with its `/v1`; [`super::azure`] and [`super::anthropic`] hold the other kinds'.

use axum::http::Method;
use bytes::Bytes;

use super::{UpstreamError, UpstreamResponse, Upstreams};
use crate::accounts::LiveAccount;

impl Upstreams {
    /// POSTs a chat-completions body to `account` and waits for the response headers (bounded
    /// by the first-byte timeout). The body is streamed by the caller.
    pub async fn chat(
        &self,
        account: &LiveAccount,
        body: Bytes,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.send(account, Method::POST, super::chat_url(account), body, &[])
            .await
    }

    /// GETs the account's model list (the health check of OpenAI-compatible servers).
    pub async fn models(&self, account: &LiveAccount) -> Result<UpstreamResponse, UpstreamError> {
        self.send(
            account,
            Method::GET,
            super::models_url(account),
            Bytes::new(),
            &[],
        )
        .await
    }
}

/// The chat-completions URL of an OpenAI server's endpoint (`…/v1`).
pub(super) fn chat_url(endpoint: &str) -> String {
    format!("{endpoint}/chat/completions")
}

/// The model list of an OpenAI server's endpoint.
pub(super) fn models_url(endpoint: &str) -> String {
    format!("{endpoint}/models")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_hang_off_the_endpoint() {
        assert_eq!(
            chat_url("http://127.0.0.1:9/v1"),
            "http://127.0.0.1:9/v1/chat/completions"
        );
        assert_eq!(
            models_url("http://127.0.0.1:9/v1"),
            "http://127.0.0.1:9/v1/models"
        );
    }
}
