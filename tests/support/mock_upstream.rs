//! An in-process mock of an OpenAI-compatible upstream (vLLM-like) on a real socket, port 0.
//!
//! Tests queue the replies it should give ([`MockReply`]); without a queued reply it answers a
//! short text completion, or what the responder set with [`MockUpstream::set_responder`] makes of
//! the request body. It records every request it receives (path, headers, parsed body) and
//! counts requests in flight, so tests can assert what relayd sent and how many at once.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum MockReply {
    /// A JSON body with a status and extra headers.
    Json {
        /// HTTP status.
        status: u16,
        /// Body.
        body: Value,
        /// Extra headers.
        headers: Vec<(String, String)>,
    },
    /// An SSE stream: each string is written as one network write, verbatim (so tests control
    /// framing, split UTF-8, missing `[DONE]`…), optionally pausing between writes.
    Stream {
        /// Raw pieces written in order.
        pieces: Vec<String>,
        /// Pause before each piece after the first.
        gap: Duration,
        /// End with a connection error instead of a clean end.
        abort: bool,
    },
}

impl MockReply {
    /// A 200 chat completion with `text` and usage.
    pub fn text(text: &str) -> Self {
        Self::Json {
            status: 200,
            body: completion(text),
            headers: Vec::new(),
        }
    }

    /// An error status with an OpenAI-style error body.
    pub fn error(status: u16, message: &str) -> Self {
        Self::Json {
            status,
            body: json!({"error": {"message": message, "type": "error", "code": status}}),
            headers: Vec::new(),
        }
    }

    /// A 200 chat completion whose body takes `delay` to finish (sent in two halves): the
    /// upstream is busy, and the request holds its slot, that long.
    pub fn slow(text: &str, delay: Duration) -> Self {
        let body = completion(text).to_string();
        let (head, tail) = body.split_at(body.len() / 2);
        Self::Stream {
            pieces: vec![head.to_owned(), tail.to_owned()],
            gap: delay,
            abort: false,
        }
    }

    /// SSE `data:` payloads (JSON chunks), then `[DONE]`.
    pub fn sse(chunks: &[Value]) -> Self {
        let mut pieces: Vec<String> = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
        pieces.push("data: [DONE]\n\n".to_owned());
        Self::Stream {
            pieces,
            gap: Duration::ZERO,
            abort: false,
        }
    }
}

/// A non-streaming chat completion body.
pub fn completion(text: &str) -> Value {
    json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1,
        "model": "mock-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    })
}

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Path and query.
    pub path: String,
    /// Headers.
    pub headers: HeaderMap,
    /// Raw body.
    pub body: Bytes,
    /// The client's address: one per TCP connection, so requests on a reused connection share it.
    pub peer: SocketAddr,
}

impl Recorded {
    /// The body parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("upstream body is JSON")
    }
}

/// Computes a reply from the parsed request body (`Value::Null` when it is not JSON).
pub type Responder = Arc<dyn Fn(&Value) -> MockReply + Send + Sync>;

#[derive(Default)]
struct Shared {
    replies: Mutex<VecDeque<MockReply>>,
    responder: Mutex<Option<Responder>>,
    requests: Mutex<Vec<Recorded>>,
    models: Mutex<Option<Vec<String>>>,
    api_key: Mutex<Option<String>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    finished: tokio::sync::Notify,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("replies", &self.replies)
            .field("requests", &self.requests)
            .field("in_flight", &self.in_flight)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

/// A running mock upstream. Stops when dropped.
#[derive(Debug)]
pub struct MockUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl MockUpstream {
    /// Starts a mock on 127.0.0.1, port 0.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// The base URL to configure as an account endpoint (`http://ADDR/v1`).
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues a reply for the next request.
    pub fn push(&self, reply: MockReply) {
        self.shared.replies.lock().expect("lock").push_back(reply);
    }

    /// Answers every request that finds no queued reply with `responder(body)`: for clients
    /// (Claude Code) whose side requests make the order of requests unpredictable.
    pub fn set_responder(&self, responder: impl Fn(&Value) -> MockReply + Send + Sync + 'static) {
        *self.shared.responder.lock().expect("lock") = Some(Arc::new(responder));
    }

    /// The model ids `GET …/models` lists (default: `mock-model`).
    pub fn set_models(&self, ids: &[&str]) {
        *self.shared.models.lock().expect("lock") =
            Some(ids.iter().map(|id| (*id).to_owned()).collect());
    }

    /// Answers 401, as vLLM's `--api-key` does, to every request without
    /// `Authorization: Bearer KEY` (the request is still recorded).
    pub fn require_api_key(&self, key: &str) {
        *self.shared.api_key.lock().expect("lock") = Some(key.to_owned());
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().expect("lock").clone()
    }

    /// Requests in flight right now (a streamed answer counts until its body ends or the
    /// connection is closed).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until no request is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let finished = self.shared.finished.notified();
            if self.in_flight() == 0 {
                return;
            }
            finished.await;
        }
    }

    /// The highest number of requests that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Decrements the in-flight count when the request (or its streamed body) is finished or dropped.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.finished.notify_waiters();
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let guard = InFlight(Arc::clone(&shared));
    let path = request
        .uri()
        .path_and_query()
        .map(ToString::to_string)
        .unwrap_or_default();
    let headers = request.headers().clone();
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    shared.requests.lock().expect("lock").push(Recorded {
        path: path.clone(),
        headers,
        body: body.clone(),
        peer,
    });
    let required_key = shared.api_key.lock().expect("lock").clone();
    if let Some(key) = required_key {
        let expected = format!("Bearer {key}");
        if authorization.as_deref() != Some(expected.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(
                    json!({"error": {"message": "Unauthorized", "type": "error", "code": 401}}),
                ),
            )
                .into_response();
        }
    }
    if path.ends_with("/models") {
        let ids = shared
            .models
            .lock()
            .expect("lock")
            .clone()
            .unwrap_or_else(|| vec!["mock-model".to_owned()]);
        let data: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "object": "model"}))
            .collect();
        return axum::Json(json!({"object": "list", "data": data})).into_response();
    }
    let queued = shared.replies.lock().expect("lock").pop_front();
    let responder = shared.responder.lock().expect("lock").clone();
    let reply = match (queued, responder) {
        (Some(reply), _) => reply,
        (None, Some(responder)) => responder(&serde_json::from_slice(&body).unwrap_or(Value::Null)),
        (None, None) => MockReply::text("Hello from the mock upstream."),
    };
    match reply {
        MockReply::Json {
            status,
            body,
            headers,
        } => {
            let mut response = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                axum::Json(body),
            )
                .into_response();
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (
                    axum::http::HeaderName::from_bytes(k.as_bytes()),
                    axum::http::HeaderValue::from_str(&v),
                ) {
                    response.headers_mut().insert(k, v);
                }
            }
            drop(guard);
            response
        }
        MockReply::Stream { pieces, gap, abort } => {
            let stream = futures_util::stream::unfold(
                (pieces.into_iter(), true, guard),
                move |(mut pieces, first, guard)| async move {
                    match pieces.next() {
                        Some(piece) => {
                            if !first && !gap.is_zero() {
                                tokio::time::sleep(gap).await;
                            }
                            Some((
                                Ok::<_, std::io::Error>(Bytes::from(piece)),
                                (pieces, false, guard),
                            ))
                        }
                        None if abort => {
                            // Pause first so the pieces before reach the peer as sent.
                            if !gap.is_zero() {
                                tokio::time::sleep(gap).await;
                            }
                            Some((
                                Err(std::io::Error::other("mock upstream aborts the stream")),
                                (pieces, false, guard),
                            ))
                        }
                        None => None,
                    }
                },
            );
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .expect("response")
        }
    }
}
