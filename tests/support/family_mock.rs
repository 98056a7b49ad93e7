//! An in-process mock of one server family's probe surfaces, served from one fixture file per
//! family (`tests/fixtures/families/{family}.json`): the answers its documentation gives for
//! each `METHOD /path` (a `… stream` variant answers requests with `"stream": true` as SSE), the
//! family's context-overflow error, and what the probe is expected to find.
//!
//! A request whose body contains [`OVERFLOW_MARKER`] is answered with the overflow error, so
//! relay tests can see each family's wording. Anything not in the fixture is answered by its
//! `*` route, else a 404. A route with `requires` (a list of fields) answers its `refused`
//! reply to a JSON body lacking any of them, as a server validating its request model does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// A request body containing this is answered with the family's overflow error.
pub const OVERFLOW_MARKER: &str = "__overflow__";

/// The families with a fixture.
pub const FAMILIES: &[&str] = &["vllm", "sglang", "llamacpp", "ollama", "tgi", "lmstudio"];

/// A running mock of one family.
#[derive(Debug)]
pub struct FamilyMock {
    fixture: Arc<Value>,
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

/// The fixture file of `family`.
pub fn fixture_path(family: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/families")
        .join(format!("{family}.json"))
}

impl FamilyMock {
    /// Serves `family`'s fixture on a port of its own.
    ///
    /// # Panics
    /// When the fixture is missing or not JSON, or no port can be bound.
    pub async fn start(family: &str) -> Self {
        let path = fixture_path(family);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let fixture: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        Self::serve(fixture).await
    }

    /// Serves an arbitrary fixture (tests of garbage answers).
    pub async fn serve(fixture: Value) -> Self {
        let fixture = Arc::new(fixture);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the family mock");
        let port = listener.local_addr().expect("local addr").port();
        let served = Arc::clone(&fixture);
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| {
            let fixture = Arc::clone(&served);
            async move { answer(&fixture, &method, &uri, &body) }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            fixture,
            port,
            task,
        }
    }

    /// The server's root URL (no `/v1`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The fixture's `deployment`: the model name the mock serves.
    pub fn deployment(&self) -> String {
        self.fixture["deployment"]
            .as_str()
            .unwrap_or("model")
            .to_owned()
    }

    /// The fixture's `expect` block: what a probe must find.
    pub fn expected(&self) -> &Value {
        &self.fixture["expect"]
    }

    /// The family's overflow error body, as the server words it.
    pub fn overflow_body(&self) -> &Value {
        &self.fixture["overflow"]["body"]
    }
}

impl Drop for FamilyMock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(fixture: &Value, method: &Method, uri: &Uri, body: &[u8]) -> Response {
    if String::from_utf8_lossy(body).contains(OVERFLOW_MARKER) {
        return reply(&fixture["overflow"]);
    }
    let streamed = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|b| b.get("stream").and_then(Value::as_bool))
        .unwrap_or(false);
    let key = format!("{method} {}", uri.path());
    let routes = &fixture["routes"];
    let route = if streamed {
        routes
            .get(format!("{key} stream"))
            .or_else(|| routes.get(&key))
    } else {
        routes.get(&key)
    };
    // `*` answers whatever else is asked (garbage servers).
    match route.or_else(|| routes.get("*")) {
        Some(route) if lacks_required(route, body) => reply(&route["refused"]),
        Some(route) => reply(route),
        None => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

/// Whether `body` lacks a field the route `requires`.
fn lacks_required(route: &Value, body: &[u8]) -> bool {
    let Some(required) = route["requires"].as_array() else {
        return false;
    };
    let body = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    required
        .iter()
        .filter_map(Value::as_str)
        .any(|field| body.get(field).is_none())
}

/// A route's answer: `status` with a JSON `body`, an `sse` list of events, or a `text` body.
fn reply(route: &Value) -> Response {
    let status = route["status"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    if let Some(events) = route["sse"].as_array() {
        let mut text = String::new();
        for event in events {
            let data = match event {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let Some(kind) = event.get("type").and_then(Value::as_str) {
                text.push_str(&format!("event: {kind}\n"));
            }
            text.push_str(&format!("data: {data}\n\n"));
        }
        return (status, [(header::CONTENT_TYPE, "text/event-stream")], text).into_response();
    }
    if let Some(text) = route["text"].as_str() {
        return (status, text.to_owned()).into_response();
    }
    (status, axum::Json(route["body"].clone())).into_response()
}
