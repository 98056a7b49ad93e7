//! Talking to upstreams: URL shapes per account kind, auth headers, one pooled HTTP client per
//! distinct proxy setting, and the connect / first-byte timeouts. Failures are classified so
//! the caller can decide between failing over and answering the client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use shared::account::AccountKind;

use crate::accounts::LiveAccount;
use crate::config::Timeouts;

/// Pooled clients keyed by proxy URL (`None`: direct). Accounts behind the same proxy share
/// connections; a proxy is never bypassed.
pub struct Upstreams {
    timeouts: Timeouts,
    clients: Mutex<HashMap<Option<String>, reqwest::Client>>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

/// Why an upstream attempt failed before any byte reached the client.
#[derive(Debug)]
pub enum UpstreamError {
    /// The proxy setting could not be used.
    BadProxy(String),
    /// TCP/TLS connect failed (or the proxy refused).
    Connect(String),
    /// No response headers within the first-byte timeout.
    FirstByteTimeout(Duration),
    /// Anything else on the way (reset, protocol error).
    Transport(String),
    /// The upstream answered with a non-2xx status.
    Status {
        /// HTTP status.
        status: u16,
        /// `retry-after` seconds, when given.
        retry_after: Option<u64>,
        /// The body (truncated), for error messages.
        body: String,
    },
}

impl UpstreamError {
    /// Whether another account should be tried: the failure says nothing about the request
    /// itself. A 400 (bad request, context too long) would fail everywhere, so it is not retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::BadProxy(_)
            | Self::Connect(_)
            | Self::FirstByteTimeout(_)
            | Self::Transport(_) => true,
            Self::Status { status, .. } => {
                matches!(status, 401 | 403 | 404 | 408 | 409 | 429) || *status >= 500
            }
        }
    }
}

impl UpstreamError {
    /// A short cause label for metrics.
    pub fn cause(&self) -> &'static str {
        match self {
            Self::BadProxy(_) => "proxy",
            Self::Connect(_) => "connect",
            Self::FirstByteTimeout(_) => "timeout",
            Self::Transport(_) => "transport",
            Self::Status {
                status: 401 | 403, ..
            } => "auth",
            Self::Status { status: 429, .. } => "rate_limited",
            Self::Status { status, .. } if *status >= 500 => "server_error",
            Self::Status { .. } => "client_error",
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadProxy(e) => write!(f, "unusable proxy setting: {e}"),
            Self::Connect(e) => write!(f, "cannot connect: {e}"),
            Self::FirstByteTimeout(d) => write!(f, "no response within {}s", d.as_secs()),
            Self::Transport(e) => write!(f, "transport error: {e}"),
            Self::Status { status, body, .. } => write!(f, "HTTP {status}: {body}"),
        }
    }
}

impl Upstreams {
    /// Clients are created lazily, one per proxy setting.
    pub fn new(timeouts: Timeouts) -> Self {
        Self {
            timeouts,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The idle timeout between streamed chunks.
    pub fn idle_timeout(&self) -> Duration {
        self.timeouts.idle()
    }

    /// The keep-alive interval of Anthropic streams.
    pub fn ping_interval(&self) -> Duration {
        self.timeouts.ping()
    }

    fn client(&self, proxy: Option<&str>) -> Result<reqwest::Client, UpstreamError> {
        // Short critical section, never held across an await: a std mutex is right here.
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = proxy.map(str::to_owned);
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(self.timeouts.connect())
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            // Upstream URLs are configured, not user-supplied; never follow redirects off them.
            .redirect(reqwest::redirect::Policy::none());
        builder = match proxy {
            None => builder.no_proxy(),
            Some(url) => builder.proxy(
                reqwest::Proxy::all(url)
                    .map_err(|e| UpstreamError::BadProxy(redact(&e.to_string(), url)))?,
            ),
        };
        let client = builder
            .build()
            .map_err(|e| UpstreamError::BadProxy(e.to_string()))?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// POSTs a chat-completions body to `account` and waits for the response headers (bounded
    /// by the first-byte timeout). The body is streamed by the caller.
    pub async fn chat(
        &self,
        account: &LiveAccount,
        body: Bytes,
    ) -> Result<reqwest::Response, UpstreamError> {
        let client = self.client(account.secrets.proxy.as_deref())?;
        let mut request = client
            .post(chat_url(account))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        request = auth(request, account);
        self.send(request).await
    }

    /// GETs `{endpoint}/models` (the health check of OpenAI-compatible servers).
    pub async fn models(&self, account: &LiveAccount) -> Result<reqwest::Response, UpstreamError> {
        let client = self.client(account.secrets.proxy.as_deref())?;
        let url = match account.settings.kind {
            AccountKind::Openai => format!("{}/models", account.settings.endpoint),
            AccountKind::Azure => format!(
                "{}/openai/models?api-version={}",
                azure_base(&account.settings.endpoint),
                account.settings.api_version
            ),
        };
        self.send(auth(client.get(url), account)).await
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, UpstreamError> {
        let first_byte = self.timeouts.first_byte();
        let response = match tokio::time::timeout(first_byte, request.send()).await {
            Err(_) => return Err(UpstreamError::FirstByteTimeout(first_byte)),
            Ok(Err(e)) if e.is_connect() => return Err(UpstreamError::Connect(describe(&e))),
            Ok(Err(e)) if e.is_timeout() => return Err(UpstreamError::Connect(describe(&e))),
            Ok(Err(e)) => return Err(UpstreamError::Transport(describe(&e))),
            Ok(Ok(response)) => response,
        };
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        // Error bodies are small; bound the read anyway so a misbehaving upstream cannot stall us.
        let body = match tokio::time::timeout(Duration::from_secs(10), response.bytes()).await {
            Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).into_owned(),
            _ => String::new(),
        };
        Err(UpstreamError::Status {
            status,
            retry_after,
            body,
        })
    }
}

/// The chat-completions URL of an account.
pub fn chat_url(account: &LiveAccount) -> String {
    let s = &account.settings;
    match s.kind {
        AccountKind::Openai => format!("{}/chat/completions", s.endpoint),
        // The v1 shape (`…/openai/v1`) takes the deployment as `model`, like any OpenAI server.
        AccountKind::Azure if s.endpoint.ends_with("/openai/v1") => {
            format!("{}/chat/completions", s.endpoint)
        }
        AccountKind::Azure => format!(
            "{}/openai/deployments/{}/chat/completions?api-version={}",
            azure_base(&s.endpoint),
            s.deployment_name,
            s.api_version
        ),
    }
}

/// An Azure endpoint without a trailing `/openai` that users sometimes paste.
fn azure_base(endpoint: &str) -> &str {
    endpoint.strip_suffix("/openai").unwrap_or(endpoint)
}

fn auth(request: reqwest::RequestBuilder, account: &LiveAccount) -> reqwest::RequestBuilder {
    match (&account.secrets.api_key, account.settings.kind) {
        (None, _) => request,
        (Some(key), AccountKind::Openai) => request.bearer_auth(key),
        (Some(key), AccountKind::Azure) => request.header("api-key", key),
    }
}

/// An error with its whole source chain. Endpoint URLs never carry credentials (validation
/// refuses them), so the URL reqwest includes is safe to show.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn redact(message: &str, url: &str) -> String {
    message.replace(url, &shared::account::redact_url(url))
}

/// Shared handle.
pub type SharedUpstreams = Arc<Upstreams>;
