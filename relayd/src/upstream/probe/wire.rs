//! The probe's requests: JSON questions to the server's root, chat completions to the account's
//! chat URL, and the SSE events of a streamed answer.

use std::time::Duration;

use tokio::time::Instant;

use axum::http::Method;
use serde_json::Value;

use crate::accounts::LiveAccount;
use crate::upstream::{UpstreamError, Upstreams, chat_url, exchange, server_root};

/// One probe's view of its account.
#[derive(Clone, Copy)]
pub(super) struct Probe<'a> {
    pub(super) upstreams: &'a Upstreams,
    pub(super) account: &'a LiveAccount,
    budgets: super::Budgets,
    deadline: Instant,
}

impl<'a> Probe<'a> {
    pub(super) fn new(
        upstreams: &'a Upstreams,
        account: &'a LiveAccount,
        budgets: super::Budgets,
    ) -> Self {
        Self {
            upstreams,
            account,
            budgets,
            deadline: Instant::now() + budgets.total,
        }
    }

    /// `budget`, cut short by the whole probe's deadline.
    fn within(&self, budget: Duration) -> Duration {
        budget.min(self.deadline.saturating_duration_since(Instant::now()))
    }

    /// The budget of a question about the server.
    pub(super) fn info(&self) -> Duration {
        self.within(self.budgets.info)
    }

    /// The budget of a tiny generation.
    pub(super) fn generation(&self) -> Duration {
        self.within(self.budgets.generation)
    }

    /// The model name the server knows.
    pub(super) fn deployment(&self) -> &'a str {
        &self.account.settings.deployment_name
    }

    /// `GET {root}{path}` as JSON, within the info budget.
    pub(super) async fn get(&self, path: &str) -> Result<Value, UpstreamError> {
        let url = format!("{}{path}", server_root(self.account));
        exchange::json(
            self.upstreams,
            self.account,
            Method::GET,
            url,
            None,
            self.info(),
        )
        .await
    }

    /// `POST {root}{path}` with `body`, the answer as JSON, within `budget`.
    pub(super) async fn post(
        &self,
        path: &str,
        body: &Value,
        budget: Duration,
    ) -> Result<Value, UpstreamError> {
        let url = format!("{}{path}", server_root(self.account));
        exchange::json(
            self.upstreams,
            self.account,
            Method::POST,
            url,
            Some(body),
            budget,
        )
        .await
    }

    /// `POST {root}{path}` with `body`, the answer's SSE events, within `budget`.
    pub(super) async fn post_stream(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<Vec<Value>, UpstreamError> {
        let url = format!("{}{path}", server_root(self.account));
        self.stream_at(url, body).await
    }

    /// A chat-completions request, not streamed.
    pub(super) async fn chat(&self, body: &Value) -> Result<Value, UpstreamError> {
        exchange::json(
            self.upstreams,
            self.account,
            Method::POST,
            chat_url(self.account),
            Some(body),
            self.generation(),
        )
        .await
    }

    /// A chat-completions request, streamed: its events.
    pub(super) async fn chat_stream(&self, body: &Value) -> Result<Vec<Value>, UpstreamError> {
        self.stream_at(chat_url(self.account), body).await
    }

    async fn stream_at(&self, url: String, body: &Value) -> Result<Vec<Value>, UpstreamError> {
        let bytes = exchange::raw(
            self.upstreams,
            self.account,
            Method::POST,
            url,
            Some(body),
            self.generation(),
        )
        .await?;
        let events = sse_events(&String::from_utf8_lossy(&bytes));
        if events.is_empty() {
            let start = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned();
            return Err(UpstreamError::BadAnswer(format!(
                "no SSE events in the stream: {start:?}"
            )));
        }
        Ok(events)
    }
}

/// The JSON `data:` payloads of an SSE body (`[DONE]` and anything unparsable skipped).
pub(super) fn sse_events(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str(data.trim()).ok())
        .collect()
}

/// A failure in one line for a note: the status and the start of the body, or the error.
pub(super) fn brief(e: &UpstreamError) -> String {
    match e {
        UpstreamError::Status { status, body, .. } => {
            let body: String = body.chars().take(120).collect();
            format!("HTTP {status}: {}", body.trim())
        }
        other => other.to_string(),
    }
}

/// Whether a failure says the server does not serve the path at all.
pub(super) fn not_served(e: &UpstreamError) -> bool {
    matches!(
        e,
        UpstreamError::Status {
            status: 404 | 405 | 501,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_payloads_are_read_and_done_is_skipped() {
        let text = "event: a\ndata: {\"x\":1}\n\ndata:{\"y\":2}\n\ndata: [DONE]\n\n";
        assert_eq!(
            sse_events(text),
            vec![serde_json::json!({"x":1}), serde_json::json!({"y":2})]
        );
    }
}
