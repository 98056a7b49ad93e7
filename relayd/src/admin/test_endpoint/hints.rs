//! What a failure means and how to fix it: the detail and hint for each upstream error, and
//! the scrubbing that keeps the API key and proxy credentials out of every text.

use shared::account::{AccountKind, redact_url, validate_endpoint, validate_proxy};

use super::checker::{Checker, Failure, Stage};
use crate::upstream::UpstreamError;

/// Served model names shown in a hint, at most.
const MAX_LISTED: usize = 10;

impl Checker<'_> {
    /// Detail and hint for an upstream failure.
    pub(super) fn failure(&self, stage: Stage, error: &UpstreamError) -> Failure {
        let hint = match error {
            UpstreamError::BadProxy(_) => Some(
                "check the proxy URL: http://, https:// or socks5://[user:pass@]HOST:PORT"
                    .to_owned(),
            ),
            UpstreamError::ProxyConnect(_) => Some(
                "the proxy refused or could not be reached: check its host, port and credentials"
                    .to_owned(),
            ),
            UpstreamError::Connect(text) => Some(self.connect_hint(text)),
            UpstreamError::Dropped(_) => Some(
                "the server closed the connection without answering, twice: it may reject this \
                 request's body, or be restarting"
                    .to_owned(),
            ),
            UpstreamError::BadAnswer(_) => Some(
                "the server answered 200 with something that is not an OpenAI answer: check \
                 that the endpoint is the API base URL (usually ending in /v1)"
                    .to_owned(),
            ),
            UpstreamError::FirstByteTimeout(_) => Some(
                "the server accepted the connection but did not answer: it may be loading the \
                 model or overloaded"
                    .to_owned(),
            ),
            UpstreamError::Transport(_) => Some(
                "the connection broke: check http:// vs https:// in the endpoint and any proxy \
                 in between"
                    .to_owned(),
            ),
            UpstreamError::Status { status, body, .. } => self.status_hint(stage, *status, body),
        };
        let detail = match error {
            UpstreamError::Status { status, body, .. } => {
                let what = match stage {
                    Stage::Models => "GET /models answered",
                    Stage::Chat | Stage::Stream | Stage::Tool => "answered",
                };
                let body = snippet(body.as_bytes());
                if body.is_empty() {
                    format!("{what} HTTP {status}")
                } else {
                    format!("{what} HTTP {status}: {body}")
                }
            }
            other => other.to_string(),
        };
        Failure::new(self.scrub(&detail), hint)
    }

    fn status_hint(&self, stage: Stage, status: u16, body: &str) -> Option<String> {
        let lower = body.to_ascii_lowercase();
        let about_model = lower.contains("model")
            && (lower.contains("not exist")
                || lower.contains("not found")
                || lower.contains("does not serve")
                || lower.contains("unknown"));
        Some(match status {
            401 | 403 if self.account.secrets.api_key.is_none() => {
                "the server wants an API key: set the account's apiKey".to_owned()
            }
            401 | 403 => "check the account's apiKey".to_owned(),
            404 if about_model => self.model_hint(),
            404 => match self.v1_hint() {
                Some(hint) => hint,
                None if self.account.settings.kind == AccountKind::Azure => {
                    "check the endpoint (https://RESOURCE.openai.azure.com), deploymentName and \
                     apiVersion"
                        .to_owned()
                }
                None if stage == Stage::Models => {
                    "the server has no GET /models here; check the endpoint path".to_owned()
                }
                None => "check the endpoint path and deploymentName".to_owned(),
            },
            400 if about_model => self.model_hint(),
            400 if stage == Stage::Tool && lower.contains("tool") => tool_parser_hint(),
            400 => "the server refused the request; see the detail".to_owned(),
            408 | 504 => "the server timed out; it may be overloaded".to_owned(),
            429 => "the server is rate limiting or busy; try again later".to_owned(),
            s if s >= 500 => "the server failed; see its log".to_owned(),
            _ => return None,
        })
    }

    fn connect_hint(&self, text: &str) -> String {
        let lower = text.to_ascii_lowercase();
        if let Some(proxy) = &self.account.secrets.proxy
            && (lower.contains("proxy") || lower.contains("socks"))
        {
            return format!(
                "cannot get through the proxy {}: is it running, and can it reach the endpoint?",
                redact_url(proxy)
            );
        }
        if lower.contains("dns") || lower.contains("lookup") || lower.contains("resolve") {
            return format!(
                "cannot resolve {}: check the endpoint's host name",
                self.host_port().0
            );
        }
        self.listening_hint()
    }

    pub(super) fn listening_hint(&self) -> String {
        let (host, port) = self.host_port();
        format!("is the server running and listening on {host}:{port}? (vLLM: --host 0.0.0.0)")
    }

    fn host_port(&self) -> (String, u16) {
        let url = validate_endpoint(&self.account.settings.endpoint).ok();
        let host = url
            .as_ref()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let port = url
            .as_ref()
            .and_then(|u| u.port_or_known_default())
            .unwrap_or(0);
        (host, port)
    }

    /// The "/v1 is missing" hint, when the endpoint of an OpenAI-compatible account lacks it.
    pub(super) fn v1_hint(&self) -> Option<String> {
        let s = &self.account.settings;
        (s.kind == AccountKind::Openai && !s.endpoint.ends_with("/v1")).then(|| {
            format!(
                "endpoint should end with /v1 (e.g. {}/v1)",
                s.endpoint.trim_end_matches('/')
            )
        })
    }

    pub(super) fn model_hint(&self) -> String {
        match &self.listed {
            Some(ids) if !ids.is_empty() => {
                let mut shown: Vec<&str> =
                    ids.iter().take(MAX_LISTED).map(String::as_str).collect();
                if ids.len() > MAX_LISTED {
                    shown.push("…");
                }
                format!(
                    "the server serves [{}]: set deploymentName to one of them",
                    shown.join(", ")
                )
            }
            _ => "set deploymentName to the model name the server serves (see its GET /models)"
                .to_owned(),
        }
    }

    /// Removes the API key and proxy credentials from text that came from the upstream or reqwest.
    pub(super) fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        let secrets = &self.account.secrets;
        if let Some(key) = secrets.api_key.as_deref().filter(|k| !k.is_empty()) {
            text = text.replace(key, "****");
        }
        if let Some(proxy) = secrets.proxy.as_deref() {
            text = text.replace(proxy, &redact_url(proxy));
            if let Some(password) = validate_proxy(proxy)
                .ok()
                .and_then(|u| u.password().map(str::to_owned))
                .filter(|p| !p.is_empty())
            {
                text = text.replace(&password, "****");
            }
        }
        text
    }
}

pub(super) fn tool_parser_hint() -> String {
    "start vLLM with --enable-auto-tool-choice --tool-call-parser <name> (hermes for Qwen, glm45 \
     for GLM, llama3_json for Llama…); SGLang: --tool-call-parser; llama.cpp: --jinja"
        .to_owned()
}

/// The first 200 characters of a body, on one line.
pub(super) fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    truncate(&text.split_whitespace().collect::<Vec<_>>().join(" "), 200)
}

pub(super) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut out: String = text.chars().take(max).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("abc", 3), "abc");
    }

    #[test]
    fn snippet_is_one_line() {
        assert_eq!(snippet(b"a\n  b\tc"), "a b c");
    }
}
