//! The Anthropic Messages API of native upstreams: `POST {base}/v1/messages`, with the client's
//! `anthropic-version` (a default when it sent none) and `anthropic-beta` forwarded, so the
//! server sees the protocol revision and features the client asked for. Also the kind's other
//! URL shapes: its model list and the base of an endpoint given with or without `/v1`.

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use bytes::Bytes;

use super::{UpstreamError, UpstreamResponse, Upstreams};
use crate::accounts::LiveAccount;

/// The `anthropic-version` sent when the client sent none.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

const VERSION: HeaderName = HeaderName::from_static("anthropic-version");
const BETA: HeaderName = HeaderName::from_static("anthropic-beta");

/// The headers of a client's request that a native upstream gets too: `anthropic-version`
/// (defaulted) and every `anthropic-beta`.
pub fn anthropic_headers(client: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let version = client
        .get(&VERSION)
        .cloned()
        .unwrap_or(HeaderValue::from_static(ANTHROPIC_VERSION));
    let mut headers = vec![(VERSION, version)];
    headers.extend(client.get_all(&BETA).iter().map(|v| (BETA, v.clone())));
    headers
}

impl Upstreams {
    /// POSTs a Messages API body to `account`'s `/v1/messages` with `headers` (see
    /// [`anthropic_headers`]) and waits for the response headers (bounded by the first-byte
    /// timeout). The body is streamed by the caller.
    pub async fn messages(
        &self,
        account: &LiveAccount,
        body: Bytes,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<UpstreamResponse, UpstreamError> {
        let url = messages_url(&account.settings.endpoint);
        self.send(account, Method::POST, url, body, headers).await
    }
}

/// The Messages URL of an endpoint given with or without its trailing `/v1`.
fn messages_url(endpoint: &str) -> String {
    format!("{}/v1/messages", anthropic_base(endpoint))
}

/// The model list of an Anthropic-native endpoint.
pub(super) fn models_url(endpoint: &str) -> String {
    format!("{}/v1/models", anthropic_base(endpoint))
}

/// A chat-completions URL next to the Messages API; relayd never routes OpenAI-format requests
/// to this kind, so only a misdirected check uses it.
pub(super) fn chat_url(endpoint: &str) -> String {
    format!("{}/v1/chat/completions", anthropic_base(endpoint))
}

/// The base of an Anthropic-native endpoint, given with or without its trailing `/v1`.
pub fn anthropic_base(endpoint: &str) -> &str {
    endpoint.strip_suffix("/v1").unwrap_or(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_url_accepts_a_trailing_v1() {
        assert_eq!(
            messages_url("http://127.0.0.1:9/v1"),
            "http://127.0.0.1:9/v1/messages"
        );
        assert_eq!(
            messages_url("http://127.0.0.1:9"),
            "http://127.0.0.1:9/v1/messages"
        );
    }

    #[test]
    fn version_is_defaulted_and_betas_forwarded() {
        let mut client = HeaderMap::new();
        client.append(BETA, HeaderValue::from_static("a"));
        client.append(BETA, HeaderValue::from_static("b"));
        let headers = anthropic_headers(&client);
        assert_eq!(headers[0].1, ANTHROPIC_VERSION);
        assert_eq!(headers.len(), 3);
        client.insert(VERSION, HeaderValue::from_static("2024-01-01"));
        assert_eq!(anthropic_headers(&client)[0].1, "2024-01-01");
    }
}
