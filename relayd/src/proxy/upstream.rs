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
//!
//! Pooled connections die on the server's schedule: uvicorn (vLLM, SGLang) closes idle ones
//! after 5 s, llama.cpp's server after the `Keep-Alive: timeout=` it announces. A request sent on
//! a connection the server is closing fails before any response byte; it is sent once more on a
//! new connection (not a failover, no cooldown). Idle connections are kept `pool_idle_secs`, or
//! less when the server announces a shorter keep-alive: clients are kept per idle time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _, TryStreamExt as _};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper_tls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use shared::account::AccountKind;

use crate::accounts::LiveAccount;
use crate::config::{Timeouts, UpstreamConfig};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client of accounts without a proxy.
type DirectClient = HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Pooled upstream clients, per serving thread: for direct connections one per pool idle time,
/// and one per proxy URL and idle time. Accounts behind the same proxy share connections; a
/// proxy is never bypassed.
pub struct Upstreams {
    timeouts: Timeouts,
    limits: UpstreamConfig,
    /// The system's CA certificates, loaded once on first use (tens of milliseconds) and shared
    /// by every client.
    tls: OnceLock<native_tls::TlsConnector>,
    /// Indexed by [`crate::workers::worker_index`]. Only its own thread locks an entry, so the
    /// lock is never contended; it is held for a lookup, never across an await.
    direct: Box<[Mutex<ThreadClients>]>,
    /// By serving thread, proxy URL and pool idle time.
    proxied: Mutex<HashMap<(usize, String, Duration), reqwest::Client>>,
}

/// One serving thread's direct clients and what servers told it about their keep-alive.
#[derive(Default)]
struct ThreadClients {
    /// By pool idle time; `Duration::ZERO` keeps no idle connection (a new one per request).
    clients: Vec<(Duration, DirectClient)>,
    /// The pool idle time to use per endpoint, where a server announced a keep-alive timeout
    /// shorter than the configured idle time.
    keep_alive: HashMap<Box<str>, Duration>,
}

/// Which connections a request may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connection {
    /// A pooled one, if there is one.
    Pooled,
    /// A new one (the retry after a pooled connection closed under the request).
    Fresh,
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

    /// The whole body (test-endpoint's small answers; the relay path bounds its reads in
    /// `proxy::answer`).
    pub async fn bytes(self) -> Result<Bytes, BodyError> {
        match self.body.collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) => Err(BodyError::of(&e)),
        }
    }

    /// At most `limit` bytes of the body; the rest is not read.
    pub async fn bytes_within(self, limit: usize) -> Result<Bytes, BodyError> {
        let mut stream = self.bytes_stream();
        let mut out = Vec::new();
        while out.len() < limit {
            match stream.next().await {
                Some(Ok(bytes)) => {
                    let room = limit - out.len();
                    out.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok(Bytes::from(out))
    }

    /// The body as it arrives.
    pub fn bytes_stream(self) -> BodyStream {
        Box::pin(self.body.into_data_stream().map_err(|e| BodyError::of(&e)))
    }
}

/// An upstream body as a stream of reads.
pub type BodyStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, BodyError>> + Send>>;

/// Why an upstream attempt failed before any byte reached the client.
#[derive(Debug)]
pub enum UpstreamError {
    /// The proxy setting could not be used.
    BadProxy(String),
    /// The account's proxy could not be reached or refused the connection.
    ProxyConnect(String),
    /// TCP/TLS connect failed.
    Connect(String),
    /// No answer (headers, or the first byte of the body) within the first-byte timeout.
    FirstByteTimeout(Duration),
    /// The connection broke while the answer was read (reset, truncated body, protocol error).
    Transport(String),
    /// The server closed a new connection without answering, after the same happened on a
    /// pooled one: the request itself is the likely cause (some servers drop a body they
    /// cannot parse), so the account is not cooled down.
    Dropped(String),
    /// A 2xx answer relayd cannot use: not the format asked for (an HTML page, JSON that is no
    /// completion), empty, or beyond the configured size bounds.
    BadAnswer(String),
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
            | Self::ProxyConnect(_)
            | Self::Connect(_)
            | Self::FirstByteTimeout(_)
            | Self::Transport(_)
            | Self::Dropped(_)
            | Self::BadAnswer(_) => true,
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
            Self::BadProxy(_) | Self::ProxyConnect(_) => "proxy",
            Self::Connect(_) => "connect",
            Self::FirstByteTimeout(_) => "timeout",
            Self::Transport(_) => "transport",
            Self::Dropped(_) => "dropped",
            Self::BadAnswer(_) => "bad_answer",
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
            Self::ProxyConnect(e) => write!(f, "cannot connect through the proxy: {e}"),
            Self::Connect(e) => write!(f, "cannot connect: {e}"),
            Self::FirstByteTimeout(d) => write!(f, "no response within {}s", d.as_secs()),
            Self::Transport(e) => write!(f, "transport error: {e}"),
            Self::Dropped(e) => write!(f, "connection closed without an answer: {e}"),
            Self::BadAnswer(e) => write!(f, "unusable answer: {e}"),
            Self::Status { status, body, .. } => write!(f, "HTTP {status}: {body}"),
        }
    }
}

impl Upstreams {
    /// Clients for `workers` serving threads and the main runtime, each created lazily: the
    /// direct ones on first use, one per proxy setting.
    pub fn new(timeouts: Timeouts, limits: UpstreamConfig, workers: usize) -> Self {
        Self {
            timeouts,
            limits,
            tls: OnceLock::new(),
            direct: (0..=workers).map(|_| Mutex::default()).collect(),
            proxied: Mutex::new(HashMap::new()),
        }
    }

    /// The idle timeout between streamed chunks.
    pub fn idle_timeout(&self) -> Duration {
        self.timeouts.idle()
    }

    /// The first-byte timeout.
    pub fn first_byte_timeout(&self) -> Duration {
        self.timeouts.first_byte()
    }

    /// The keep-alive interval of Anthropic streams.
    pub fn ping_interval(&self) -> Duration {
        self.timeouts.ping()
    }

    /// Bounds on what upstreams may send.
    pub fn limits(&self) -> &UpstreamConfig {
        &self.limits
    }

    /// The pool idle time for `endpoint` on this thread, and the client that keeps it.
    fn direct(
        &self,
        endpoint: &str,
        connection: Connection,
    ) -> Result<DirectClient, UpstreamError> {
        let slot = &self.direct[crate::workers::worker_index() % self.direct.len()];
        // Only this thread locks its slot; a poisoned lock still holds usable clients.
        let mut clients = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let idle = match connection {
            Connection::Fresh => Duration::ZERO,
            Connection::Pooled => clients
                .keep_alive
                .get(endpoint)
                .copied()
                .unwrap_or(self.limits.pool_idle()),
        };
        if let Some((_, client)) = clients.clients.iter().find(|(d, _)| *d == idle) {
            return Ok(client.clone());
        }
        let tls = self.tls()?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.timeouts.connect()));
        let mut builder = HyperClient::builder(TokioExecutor::new());
        builder.pool_timer(TokioTimer::new());
        if idle.is_zero() {
            builder.pool_max_idle_per_host(0);
        } else {
            builder.pool_idle_timeout(idle);
        }
        let client = builder.build(HttpsConnector::from((http, tls.into())));
        clients.clients.push((idle, client.clone()));
        Ok(client)
    }

    /// Notes the keep-alive timeout a server announced (`Keep-Alive: timeout=N`): its idle
    /// connections are then kept at most a second less, so relayd never reuses one the server
    /// is about to close.
    fn learn_keep_alive(&self, account: &LiveAccount, headers: &HeaderMap) {
        let Some(announced) = headers
            .get("keep-alive")
            .and_then(|v| v.to_str().ok())
            .and_then(keep_alive_timeout)
        else {
            return;
        };
        let idle = announced
            .saturating_sub(Duration::from_secs(1))
            .min(self.limits.pool_idle());
        let slot = &self.direct[crate::workers::worker_index() % self.direct.len()];
        let mut clients = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let endpoint = account.settings.endpoint.as_str();
        if clients.keep_alive.get(endpoint) != Some(&idle) {
            tracing::debug!(account = %account.settings.name, idle_ms = idle.as_millis() as u64, "upstream announced its keep-alive timeout");
            clients.keep_alive.insert(endpoint.into(), idle);
        }
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

    fn proxied(
        &self,
        proxy: &str,
        connection: Connection,
    ) -> Result<reqwest::Client, UpstreamError> {
        let idle = match connection {
            Connection::Fresh => Duration::ZERO,
            Connection::Pooled => self.limits.pool_idle(),
        };
        // Short critical section, never held across an await: a std mutex is right here.
        let mut clients = self
            .proxied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = (crate::workers::worker_index(), proxy.to_owned(), idle);
        if let Some(client) = clients.get(&slot) {
            return Ok(client.clone());
        }
        let proxy_setting = reqwest::Proxy::all(proxy)
            .map_err(|e| UpstreamError::BadProxy(redact(&e.to_string(), proxy)))?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(self.timeouts.connect())
            .tcp_nodelay(true)
            // Upstream URLs are configured, not user-supplied; never follow redirects off them.
            .redirect(reqwest::redirect::Policy::none())
            .use_preconfigured_tls(self.tls()?)
            .proxy(proxy_setting);
        builder = if idle.is_zero() {
            builder.pool_max_idle_per_host(0)
        } else {
            builder.pool_idle_timeout(idle)
        };
        let client = builder
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

    /// Sends one request and classifies the answer. A connection closed under the request
    /// before any response byte is retried once on a new connection, within the same
    /// first-byte deadline.
    async fn send(
        &self,
        account: &LiveAccount,
        method: Method,
        url: String,
        body: Bytes,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let deadline = Instant::now() + self.timeouts.first_byte();
        let first = self
            .attempt(
                account,
                &method,
                &url,
                body.clone(),
                Connection::Pooled,
                deadline,
            )
            .await;
        let response = match first {
            Err(Failure::ClosedEarly(e)) => {
                tracing::debug!(account = %account.settings.name, error = %e, "connection closed under the request; sending it once more on a new connection");
                match self
                    .attempt(account, &method, &url, body, Connection::Fresh, deadline)
                    .await
                {
                    Ok(response) => response,
                    Err(Failure::ClosedEarly(e)) => return Err(UpstreamError::Dropped(e)),
                    Err(Failure::Error(e)) => return Err(e),
                }
            }
            Err(Failure::Error(e)) => return Err(e),
            Ok(response) => response,
        };
        if account.secrets.proxy.is_none() {
            self.learn_keep_alive(account, response.headers());
        }
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
        let body = match tokio::time::timeout(Duration::from_secs(10), response.bytes_within(4096))
            .await
        {
            Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            _ => String::new(),
        };
        Err(UpstreamError::Status {
            status,
            retry_after,
            body,
        })
    }

    /// One try on one connection, until the response headers or `deadline`.
    async fn attempt(
        &self,
        account: &LiveAccount,
        method: &Method,
        url: &str,
        body: Bytes,
        connection: Connection,
        deadline: Instant,
    ) -> Result<UpstreamResponse, Failure> {
        let auth = auth_header(account)?;
        let timeout = self.timeouts.first_byte();
        match account.secrets.proxy.as_deref() {
            None => {
                let client = self.direct(&account.settings.endpoint, connection)?;
                let mut request = Request::builder()
                    .method(method.clone())
                    .uri(url)
                    .header(header::CONTENT_TYPE, JSON);
                if let Some((name, value)) = auth {
                    request = request.header(name, value);
                }
                let request = request.body(Full::new(body)).map_err(|e| {
                    UpstreamError::Transport(format!("bad upstream URL {url}: {e}"))
                })?;
                match tokio::time::timeout_at(deadline, client.request(request)).await {
                    Err(_) => Err(UpstreamError::FirstByteTimeout(timeout).into()),
                    Ok(Err(e)) if e.is_connect() => {
                        Err(UpstreamError::Connect(describe(&e)).into())
                    }
                    Ok(Err(e)) if closed_early(&e) => Err(Failure::ClosedEarly(describe(&e))),
                    Ok(Err(e)) => Err(UpstreamError::Transport(describe(&e)).into()),
                    Ok(Ok(response)) => Ok(UpstreamResponse::new(response)),
                }
            }
            Some(proxy) => {
                let client = self.proxied(proxy, connection)?;
                let mut request = client
                    .request(method.clone(), url)
                    .header(header::CONTENT_TYPE, JSON)
                    .body(body);
                if let Some((name, value)) = auth {
                    request = request.header(name, value);
                }
                match tokio::time::timeout_at(deadline, request.send()).await {
                    Err(_) => Err(UpstreamError::FirstByteTimeout(timeout).into()),
                    Ok(Err(e)) if e.is_connect() || e.is_timeout() => {
                        let text = redact(&describe(&e), proxy);
                        // relayd connects to the proxy, which connects on: a refused or
                        // failed tunnel is the proxy reporting the upstream, anything else
                        // at connect time is the proxy itself.
                        Err(if text.contains("tunnel") {
                            UpstreamError::Connect(text)
                        } else {
                            UpstreamError::ProxyConnect(text)
                        }
                        .into())
                    }
                    Ok(Err(e)) if closed_early(&e) => {
                        Err(Failure::ClosedEarly(redact(&describe(&e), proxy)))
                    }
                    Ok(Err(e)) => {
                        Err(UpstreamError::Transport(redact(&describe(&e), proxy)).into())
                    }
                    Ok(Ok(response)) => {
                        Ok(UpstreamResponse::new(
                            axum::http::Response::<reqwest::Body>::from(response),
                        ))
                    }
                }
            }
        }
    }
}

/// How one try on one connection failed.
enum Failure {
    /// The connection closed before any response byte: worth one more try on a new one.
    ClosedEarly(String),
    /// Anything else, final for this account.
    Error(UpstreamError),
}

impl From<UpstreamError> for Failure {
    fn from(e: UpstreamError) -> Self {
        Self::Error(e)
    }
}

/// Whether a request failed because its connection closed before any response byte arrived
/// (the server closed an idle connection as relayd reused it, or dropped the request).
fn closed_early(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = source {
        if let Some(hyper) = error.downcast_ref::<hyper::Error>()
            && (hyper.is_incomplete_message() || hyper.is_canceled())
        {
            return true;
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        {
            return true;
        }
        source = error.source();
    }
    false
}

/// The `timeout=N` of a `Keep-Alive` header value (`timeout=5, max=100`).
fn keep_alive_timeout(value: &str) -> Option<Duration> {
    value.split(',').find_map(|part| {
        let (name, secs) = part.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("timeout") {
            return None;
        }
        secs.trim().parse::<u64>().ok().map(Duration::from_secs)
    })
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
