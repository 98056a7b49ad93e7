//! The end of every client request, in one place: a [`Trace`] is created when the handler starts
//! and, when it is dropped — after the last byte of a streamed answer, after a non-streamed
//! answer, on an error, or when the client goes away — writes the request's log line, its
//! metrics and its usage record. Exactly once, whatever path the request took.
//!
//! The log line carries ids, names, status, tokens and timings; never a prompt or a secret.
//!
//! Metrics and usage record the request's *label* — the configured exact name or pattern that
//! routed it, or `other` (default route, or refused before routing) — not the name the client
//! sent: every distinct client string would otherwise be a Prometheus series and a usage total
//! kept for good. Only the log line carries the requested name, cut to [`MAX_LOGGED_MODEL`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::time::{UnixMillis, now_millis};
use shared::usage::{TokenCounts, UsageRecord};

use crate::error::{ApiError, Surface};
use crate::keys::Caller;
use crate::metrics::RequestObservation;
use crate::routing::table::OTHER_LABEL;
use crate::state::AppState;
use crate::translate::Usage;

/// Status recorded when the client left before the answer was complete (nginx's convention).
pub(super) const CLIENT_CLOSED: u16 = 499;

/// Longest requested model name written to the log line, in characters: real names are well
/// under 100, and a client sending 16 KB names must not get them into every line.
const MAX_LOGGED_MODEL: usize = 200;

/// What is known about one client request so far.
pub(super) struct Trace {
    state: AppState,
    request_id: String,
    protocol: &'static str,
    /// The relay key: its name for the log and usage, its id for the per-key totals.
    caller: Caller,
    /// The requested name, for the log line only (cut to [`MAX_LOGGED_MODEL`]).
    model: String,
    /// The configured entry that routed the request; `None` until routed (recorded as `other`).
    label: Option<Arc<str>>,
    at: UnixMillis,
    started: Instant,
    account: Option<String>,
    upstream_model: Option<String>,
    streamed: bool,
    status: u16,
    ttfb: Option<Duration>,
    usage: Option<Usage>,
    /// False once handed over to a streamed body (which then owns the record).
    armed: bool,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace")
            .field("request_id", &self.request_id)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Trace {
    /// Starts the record of a request by `caller` on the `protocol` surface.
    pub(super) fn start(
        state: &AppState,
        request_id: &str,
        protocol: Surface,
        caller: &Caller,
    ) -> Self {
        Self {
            state: state.clone(),
            request_id: request_id.to_owned(),
            protocol: match protocol {
                Surface::OpenAi => "openai",
                Surface::Anthropic | Surface::Admin => "anthropic",
            },
            caller: caller.clone(),
            model: String::new(),
            label: None,
            at: now_millis(),
            started: Instant::now(),
            account: None,
            upstream_model: None,
            streamed: false,
            // Until something else is known, a request that ends is one the client abandoned.
            status: CLIENT_CLOSED,
            ttfb: None,
            usage: None,
            armed: true,
        }
    }

    /// The model the client asked for (kept for the log line only, shortened).
    pub(super) fn model(&mut self, model: &str) {
        logged_model(model).clone_into(&mut self.model);
    }

    /// The configured entry (exact name, pattern or `other`) that routed the request: the model
    /// label of its metrics and usage.
    pub(super) fn route(&mut self, label: Arc<str>) {
        self.label = Some(label);
    }

    /// The account (and deployment) the request went to.
    pub(super) fn account(&mut self, name: &str, deployment: &str) {
        self.account = Some(name.to_owned());
        self.upstream_model = Some(deployment.to_owned());
    }

    /// The request failed with `error`, answered in `surface`'s shape.
    pub(super) fn failed(&mut self, error: &ApiError, surface: Surface) {
        self.status = error.status_for(surface).as_u16();
        self.first_byte();
    }

    /// A complete non-streamed answer with `status` is on its way.
    pub(super) fn answered(&mut self, status: u16, usage: Option<Usage>) {
        self.status = status;
        self.usage = usage;
        self.first_byte();
    }

    /// The first byte is on its way to the client (kept if already set).
    pub(super) fn first_byte(&mut self) {
        if self.ttfb.is_none() {
            self.ttfb = Some(self.started.elapsed());
        }
    }

    /// Moves the record into a streamed body, which finishes it at its end.
    pub(super) fn hand_over(&mut self) -> Self {
        let mut owned = Self {
            state: self.state.clone(),
            request_id: std::mem::take(&mut self.request_id),
            protocol: self.protocol,
            caller: self.caller.clone(),
            model: std::mem::take(&mut self.model),
            label: self.label.take(),
            at: self.at,
            started: self.started,
            account: self.account.take(),
            upstream_model: self.upstream_model.take(),
            streamed: true,
            status: CLIENT_CLOSED,
            ttfb: self.ttfb,
            usage: None,
            armed: true,
        };
        self.armed = false;
        owned.first_byte();
        owned
    }

    /// How a stream ended: `status` (200 complete, 502 upstream failure) and its usage.
    pub(super) fn stream_ended(&mut self, status: u16, usage: Usage) {
        self.status = status;
        self.usage = Some(usage);
    }

    /// Usage of a stream the client abandoned (status stays 499).
    pub(super) fn abandoned(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let latency = self.started.elapsed();
        let tokens = self.usage.map_or_else(TokenCounts::default, |u| u.tokens);
        let estimated = self.usage.is_some_and(|u| !u.from_upstream);
        let account = self.account.as_deref().unwrap_or("");
        let label = self.label.as_deref().unwrap_or(OTHER_LABEL);
        tracing::info!(
            request_id = %self.request_id,
            key = %self.caller.name,
            model = %self.model,
            account,
            status = self.status,
            streamed = self.streamed,
            input_tokens = tokens.input_tokens,
            output_tokens = tokens.output_tokens,
            cache_read_tokens = tokens.cache_read_tokens,
            latency_ms = latency.as_millis() as u64,
            ttfb_ms = self.ttfb.map(|t| t.as_millis() as u64),
            "request"
        );
        self.state.metrics.observe_request(&RequestObservation {
            protocol: self.protocol,
            model: label,
            account,
            key: &self.caller.id,
            status: self.status,
            latency,
            ttfb: self.ttfb,
            tokens,
        });
        self.state.usage.record(UsageRecord {
            request_id: std::mem::take(&mut self.request_id),
            at: self.at,
            key: self.caller.name.clone(),
            account: self.account.take(),
            model: label.to_owned(),
            upstream_model: self.upstream_model.take(),
            tokens,
            estimated,
            status: self.status,
            streamed: self.streamed,
            latency_ms: latency.as_millis() as u64,
            ttfb_ms: self.ttfb.map(|t| t.as_millis() as u64),
        });
    }
}

/// The requested model name as any log line may carry it: cut to [`MAX_LOGGED_MODEL`] characters.
pub(super) fn logged_model(model: &str) -> &str {
    truncate_chars(model, MAX_LOGGED_MODEL)
}

/// The first `max` characters of `s` (a prefix ending on a character boundary).
fn truncate_chars(s: &str, max: usize) -> &str {
    s.char_indices().nth(max).map_or(s, |(end, _)| &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_names_are_cut_on_a_character_boundary() {
        assert_eq!(truncate_chars("claude-opus", 200), "claude-opus");
        assert_eq!(truncate_chars("abcdef", 3), "abc");
        assert_eq!(truncate_chars("", 3), "");
        // Multi-byte characters are kept whole: 3 characters, 9 bytes.
        assert_eq!(truncate_chars("模型名称", 3), "模型名");
        let long = "é".repeat(16 * 1024);
        let cut = logged_model(&long);
        assert_eq!(cut.chars().count(), MAX_LOGGED_MODEL);
        assert_eq!(cut.len(), 2 * MAX_LOGGED_MODEL);
    }
}
