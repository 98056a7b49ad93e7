//! Talking to upstreams: URL shapes per account kind, auth headers, pooled HTTP clients and the
//! connect / first-byte timeouts. Failures are classified so the caller can decide between
//! failing over and answering the client.
//!
//! Accounts without a proxy share one hyper client used directly: on the hot path reqwest's
//! conveniences (a URL parsed three times per request, redirect and timeout layers) cost more
//! than the rest of the upstream call. Accounts behind a proxy use reqwest, one pooled client per
//! distinct proxy setting, for its HTTP and SOCKS5 proxy support. Either way the caller gets an
//! [`UpstreamResponse`].
//!
//! Each serving thread has clients of its own ([`crate::workers::worker_index`]): a pooled
//! connection is driven by the runtime that opened it, so sharing one pool across threads would
//! make every request wait for another thread to read its answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use bytes::Bytes;
use futures_util::{Stream, TryStreamExt as _};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper_tls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use shared::account::AccountKind;

use crate::accounts::LiveAccount;
use crate::config::Timeouts;

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client of accounts without a proxy.
type DirectClient = HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Pooled upstream clients, per serving thread: one for direct connections, one per proxy URL.
/// Accounts behind the same proxy share connections; a proxy is never bypassed.
pub struct Upstreams {
    timeouts: Timeouts,
    /// The system's CA certificates, loaded once on first use (tens of milliseconds) and shared
    /// by every client.
    tls: OnceLock<native_tls::TlsConnector>,
    /// Indexed by [`crate::workers::worker_index`], each built on first use.
    direct: Box<[OnceLock<DirectClient>]>,
    /// By serving thread and proxy URL.
    proxied: Mutex<HashMap<(usize, String), reqwest::Client>>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

/// A 2xx upstream answer: status and headers read, the body still to come.
pub struct UpstreamResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: UnsyncBoxBody<Bytes, BoxError>,
}

impl std::fmt::Debug for UpstreamResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamResponse")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// The upstream body broke off (reset, truncated chunking, protocol error).
#[derive(Debug)]
pub struct BodyError(String);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BodyError {}

impl BodyError {
    fn of(e: &BoxError) -> Self {
        Self(describe(e.as_ref()))
    }
}

impl UpstreamResponse {
    fn new<B>(response: axum::http::Response<B>) -> Self
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = response.into_parts();
        Self {
            status: parts.status,
            headers: parts.headers,
            body: body.map_err(Into::into).boxed_unsync(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The whole body.
    pub async fn bytes(self) -> Result<Bytes, BodyError> {
        match self.body.collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) => Err(BodyError::of(&e)),
        }
    }

    /// The body as it arrives.
    pub fn bytes_stream(self) -> impl Stream<Item = Result<Bytes, BodyError>> + Send + 'static {
        self.body.into_data_stream().map_err(|e| BodyError::of(&e))
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
    /// Clients for `workers` serving threads and the main runtime, each created lazily: the
    /// direct one on first use, one per proxy setting.
    pub fn new(timeouts: Timeouts, workers: usize) -> Self {
        Self {
            timeouts,
            tls: OnceLock::new(),
            direct: (0..=workers).map(|_| OnceLock::new()).collect(),
            proxied: Mutex::new(HashMap::new()),
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

    fn direct(&self) -> Result<&DirectClient, UpstreamError> {
        let slot = &self.direct[crate::workers::worker_index() % self.direct.len()];
        if let Some(client) = slot.get() {
            return Ok(client);
        }
        let tls = self.tls()?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.timeouts.connect()));
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .build(HttpsConnector::from((http, tls.into())));
        // Two first requests may race to build it; either client is as good.
        Ok(slot.get_or_init(|| client))
    }

    fn tls(&self) -> Result<native_tls::TlsConnector, UpstreamError> {
        if let Some(tls) = self.tls.get() {
            return Ok(tls.clone());
        }
        let tls = native_tls::TlsConnector::new()
            .map_err(|e| UpstreamError::Connect(format!("cannot set up TLS: {e}")))?;
        // Two first requests may race to build it; either is as good.
        Ok(self.tls.get_or_init(|| tls).clone())
    }

    fn proxied(&self, proxy: &str) -> Result<reqwest::Client, UpstreamError> {
        // Short critical section, never held across an await: a std mutex is right here.
        let mut clients = self
            .proxied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = (crate::workers::worker_index(), proxy.to_owned());
        if let Some(client) = clients.get(&slot) {
            return Ok(client.clone());
        }
        let proxy_setting = reqwest::Proxy::all(proxy)
            .map_err(|e| UpstreamError::BadProxy(redact(&e.to_string(), proxy)))?;
        let client = reqwest::Client::builder()
            .connect_timeout(self.timeouts.connect())
            .pool_idle_timeout(POOL_IDLE)
            .tcp_nodelay(true)
            // Upstream URLs are configured, not user-supplied; never follow redirects off them.
            .redirect(reqwest::redirect::Policy::none())
            .use_preconfigured_tls(self.tls()?)
            .proxy(proxy_setting)
            .build()
            .map_err(|e| UpstreamError::BadProxy(e.to_string()))?;
        clients.insert(slot, client.clone());
        Ok(client)
    }

    /// POSTs a chat-completions body to `account` and waits for the response headers (bounded
    /// by the first-byte timeout). The body is streamed by the caller.
    pub async fn chat(
        &self,
        account: &LiveAccount,
        body: Bytes,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.send(account, Method::POST, chat_url(account), body)
            .await
    }

    /// GETs `{endpoint}/models` (the health check of OpenAI-compatible servers).
    pub async fn models(&self, account: &LiveAccount) -> Result<UpstreamResponse, UpstreamError> {
        let url = match account.settings.kind {
            AccountKind::Openai => format!("{}/models", account.settings.endpoint),
            AccountKind::Azure => format!(
                "{}/openai/models?api-version={}",
                azure_base(&account.settings.endpoint),
                account.settings.api_version
            ),
        };
        self.send(account, Method::GET, url, Bytes::new()).await
    }

    async fn send(
        &self,
        account: &LiveAccount,
        method: Method,
        url: String,
        body: Bytes,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let auth = auth_header(account)?;
        let first_byte = self.timeouts.first_byte();
        let response = match account.secrets.proxy.as_deref() {
            None => {
                let client = self.direct()?;
                let mut request = Request::builder()
                    .method(method)
                    .uri(&url)
                    .header(header::CONTENT_TYPE, JSON);
                if let Some((name, value)) = auth {
                    request = request.header(name, value);
                }
                let request = request.body(Full::new(body)).map_err(|e| {
                    UpstreamError::Transport(format!("bad upstream URL {url}: {e}"))
                })?;
                match tokio::time::timeout(first_byte, client.request(request)).await {
                    Err(_) => return Err(UpstreamError::FirstByteTimeout(first_byte)),
                    Ok(Err(e)) if e.is_connect() => {
                        return Err(UpstreamError::Connect(describe(&e)));
                    }
                    Ok(Err(e)) => return Err(UpstreamError::Transport(describe(&e))),
                    Ok(Ok(response)) => UpstreamResponse::new(response),
                }
            }
            Some(proxy) => {
                let client = self.proxied(proxy)?;
                let mut request = client
                    .request(method, url)
                    .header(header::CONTENT_TYPE, JSON)
                    .body(body);
                if let Some((name, value)) = auth {
                    request = request.header(name, value);
                }
                match tokio::time::timeout(first_byte, request.send()).await {
                    Err(_) => return Err(UpstreamError::FirstByteTimeout(first_byte)),
                    Ok(Err(e)) if e.is_connect() || e.is_timeout() => {
                        return Err(UpstreamError::Connect(describe(&e)));
                    }
                    Ok(Err(e)) => return Err(UpstreamError::Transport(describe(&e))),
                    Ok(Ok(response)) => {
                        UpstreamResponse::new(axum::http::Response::<reqwest::Body>::from(response))
                    }
                }
            }
        };
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::routing::retry_after_secs(v, std::time::SystemTime::now()));
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

const JSON: HeaderValue = HeaderValue::from_static("application/json");

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

/// The account's credential header: `Authorization: Bearer` for OpenAI-compatible servers,
/// `api-key` for Azure. Marked sensitive so it never shows in debug output.
fn auth_header(account: &LiveAccount) -> Result<Option<(HeaderName, HeaderValue)>, UpstreamError> {
    let Some(key) = &account.secrets.api_key else {
        return Ok(None);
    };
    let (name, value) = match account.settings.kind {
        AccountKind::Openai => (header::AUTHORIZATION, format!("Bearer {key}")),
        AccountKind::Azure => (HeaderName::from_static("api-key"), key.clone()),
    };
    let mut value = HeaderValue::try_from(value).map_err(|_| {
        UpstreamError::Transport(format!(
            "the apiKey of account {:?} holds characters an HTTP header cannot carry",
            account.settings.name
        ))
    })?;
    value.set_sensitive(true);
    Ok(Some((name, value)))
}

/// An error with its whole source chain. Endpoint URLs never carry credentials (validation
/// refuses them), so the URL reqwest includes is safe to show.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
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
