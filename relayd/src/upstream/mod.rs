//! Talking to upstreams: the transport every protocol shares (auth headers, pooled HTTP clients,
//! the connect / first-byte timeouts) and the choice of the protocol file by account kind. Failures are classified so the caller can decide between
//! failing over and answering the client.
//!
//! Accounts without a proxy share one hyper client used directly: on the hot path reqwest's
//! conveniences (a URL parsed three times per request, redirect and timeout layers) cost more
//! than the rest of the upstream call. Accounts behind a proxy use reqwest, one pooled client per
//! distinct proxy setting, for its HTTP and SOCKS5 proxy support. Either way the caller gets an
//! [`UpstreamResponse`].
//!
//! Each serving thread has clients of its own ([`crate::serving_thread::index`]): a pooled
//! connection is driven by the runtime that opened it, so sharing one pool across threads would
//! make every request wait for another thread to read its answer.
//!
//! Pooled connections die on the server's schedule: uvicorn (vLLM, SGLang) closes idle ones
//! after 5 s, llama.cpp's server after the `Keep-Alive: timeout=` it announces. A request sent on
//! a connection the server is closing fails before any response byte; it is sent once more on a
//! new connection (not a failover, no cooldown). Idle connections are kept `pool_idle_secs`, or
//! less when the server announces a shorter keep-alive: clients are kept per idle time.
//!
//! Files, one per protocol and the machinery they share:
//! - this one sends requests (auth, the retry on a new connection) and picks each kind's URLs;
//! - [`openai`]: the chat-completions API and model list of OpenAI-compatible servers;
//! - [`azure`]: Azure OpenAI's URL shapes (deployment path + `api-version`, or the v1 shape);
//! - [`anthropic`]: the Messages API of Anthropic-native upstreams;
//! - [`probe`]: what an account's server is and supports, learnt by asking it; [`tokenize`]:
//!   counting tokens with the server's own tokenizer;
//! - [`pool`] keeps the clients; [`response`] is the answer once its headers are read; [`error`]
//!   classifies failures; [`exchange`] is a bounded request/response used by the probe.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use axum::http::{HeaderName, HeaderValue, Method, Request, header};
use bytes::Bytes;
use http_body_util::Full;
use hyper_tls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use shared::account::{AccountKind, UpstreamAuth};

use crate::accounts::LiveAccount;
use crate::config::{Timeouts, UpstreamConfig};

mod anthropic;
mod azure;
mod error;
mod exchange;
mod openai;
mod pool;
pub mod probe;
mod response;
pub mod tokenize;

pub use anthropic::{ANTHROPIC_VERSION, anthropic_base, anthropic_headers};
pub use error::UpstreamError;
use pool::{Connection, ThreadClients};
pub use response::{BodyError, BodyStream, UpstreamResponse};

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
    /// Indexed by [`crate::serving_thread::index`]. Only its own thread locks an entry, so the
    /// lock is never contended; it is held for a lookup, never across an await.
    direct: Box<[Mutex<ThreadClients>]>,
    /// By serving thread, proxy URL and pool idle time.
    proxied: Mutex<HashMap<(usize, String, Duration), reqwest::Client>>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
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

    /// Sends one request (with `extra` headers besides the content type and the account's
    /// auth) and classifies the answer. A connection closed under the request before any
    /// response byte is retried once on a new connection, within the same first-byte deadline.
    async fn send(
        &self,
        account: &LiveAccount,
        method: Method,
        url: String,
        body: Bytes,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<UpstreamResponse, UpstreamError> {
        let deadline = Instant::now() + self.timeouts.first_byte();
        let first = self
            .attempt(
                account,
                Call {
                    method: &method,
                    url: &url,
                    extra,
                },
                body.clone(),
                Connection::Pooled,
                deadline,
            )
            .await;
        let response = match first {
            Err(Failure::ClosedEarly(e)) => {
                tracing::debug!(account = %account.settings.name, error = %e, "connection closed under the request; sending it once more on a new connection");
                match self
                    .attempt(
                        account,
                        Call {
                            method: &method,
                            url: &url,
                            extra,
                        },
                        body,
                        Connection::Fresh,
                        deadline,
                    )
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
            .and_then(|v| error::retry_after_secs(v, std::time::SystemTime::now()));
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
        call: Call<'_>,
        body: Bytes,
        connection: Connection,
        deadline: Instant,
    ) -> Result<UpstreamResponse, Failure> {
        let Call { method, url, extra } = call;
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
                for (name, value) in extra {
                    request = request.header(name.clone(), value.clone());
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
                for (name, value) in extra {
                    request = request.header(name.clone(), value.clone());
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

/// What one try sends besides its body: the method, the URL and headers of the caller's.
#[derive(Clone, Copy)]
struct Call<'a> {
    method: &'a Method,
    url: &'a str,
    extra: &'a [(HeaderName, HeaderValue)],
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

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// The chat-completions URL of an account, in its kind's shape.
pub fn chat_url(account: &LiveAccount) -> String {
    let s = &account.settings;
    match s.kind {
        AccountKind::Openai => openai::chat_url(&s.endpoint),
        AccountKind::Azure => azure::chat_url(s),
        // Never routed OpenAI-format requests; the URL is only ever used by a misdirected check.
        AccountKind::Anthropic => anthropic::chat_url(&s.endpoint),
    }
}

/// The model-list URL of an account (its health check), in its kind's shape.
fn models_url(account: &LiveAccount) -> String {
    let s = &account.settings;
    match s.kind {
        AccountKind::Openai => openai::models_url(&s.endpoint),
        AccountKind::Azure => azure::models_url(s),
        AccountKind::Anthropic => anthropic::models_url(&s.endpoint),
    }
}

/// The server's root (its endpoint without a trailing `/v1`), where the native surfaces of
/// self-hosted servers live (`/tokenize`, `/props`, `/api/show`, `/v1/messages`).
pub fn server_root(account: &LiveAccount) -> &str {
    anthropic_base(&account.settings.endpoint)
}

/// The account's credential header (`Authorization: Bearer`, `x-api-key` or Azure's `api-key`).
/// Marked sensitive so it never shows in debug output.
fn auth_header(account: &LiveAccount) -> Result<Option<(HeaderName, HeaderValue)>, UpstreamError> {
    let Some(key) = &account.secrets.api_key else {
        return Ok(None);
    };
    let (name, value) = match account.settings.auth() {
        UpstreamAuth::Bearer => (header::AUTHORIZATION, format!("Bearer {key}")),
        UpstreamAuth::XApiKey => (HeaderName::from_static("x-api-key"), key.clone()),
        UpstreamAuth::ApiKey => (HeaderName::from_static("api-key"), key.clone()),
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
