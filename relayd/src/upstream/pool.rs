//! Pooled upstream clients per serving thread, by idle time.
//!
//! A pooled connection is driven by the runtime that opened it, so each serving thread keeps its
//! own clients ([`crate::serving_thread::index`]). Idle connections are kept
//! `upstream.pool_idle_secs`, or a second less than a server's announced `Keep-Alive: timeout=`:
//! a connection reused just as the server closes it fails, so relayd never keeps one that long.
//! A client with an idle time of zero keeps no connection: it serves the retry on a new
//! connection after a pooled one was closed under a request.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::HeaderMap;
use hyper_tls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::{DirectClient, UpstreamError, Upstreams, redact};
use crate::accounts::LiveAccount;

/// One serving thread's direct clients and what servers told it about their keep-alive.
#[derive(Default)]
pub(super) struct ThreadClients {
    /// By pool idle time; `Duration::ZERO` keeps no idle connection (a new one per request).
    clients: Vec<(Duration, DirectClient)>,
    /// The pool idle time to use per endpoint, where a server announced a keep-alive timeout
    /// shorter than the configured idle time.
    keep_alive: HashMap<Box<str>, Duration>,
}

/// Which connections a request may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Connection {
    /// A pooled one, if there is one.
    Pooled,
    /// A new one (the retry after a pooled connection closed under the request).
    Fresh,
}

impl Upstreams {
    /// The pool idle time for `endpoint` on this thread, and the client that keeps it.
    pub(super) fn direct(
        &self,
        endpoint: &str,
        connection: Connection,
    ) -> Result<DirectClient, UpstreamError> {
        let slot = &self.direct[crate::serving_thread::index() % self.direct.len()];
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
    pub(super) fn learn_keep_alive(&self, account: &LiveAccount, headers: &HeaderMap) {
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
        let slot = &self.direct[crate::serving_thread::index() % self.direct.len()];
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

    pub(super) fn proxied(
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
        let slot = (crate::serving_thread::index(), proxy.to_owned(), idle);
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
