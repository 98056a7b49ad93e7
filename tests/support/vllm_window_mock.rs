//! A vLLM-like upstream with a small `max_model_len`, scripted to drive Claude Code through a
//! session that reads big files: the Claude Code compaction tests share it.
//!
//! It behaves like vLLM where the window matters: a request whose prompt plus `max_tokens`
//! exceeds the window gets vLLM's 400 and wording; usage reports the prompt's size as the mock
//! counts it (bytes / 4 of the messages and tools), which is what Claude Code plans by; and
//! [`VllmWindowMock`] also serves vLLM's probe surfaces (`GET /version`, `GET /v1/models` with
//! `max_model_len`, `POST /tokenize` counting by the same rule), so relayd's probe finds the
//! window and its exact counts agree with the refusals.
//!
//! [`Script`] decides the answers: a compaction request (Claude Code's summary instruction) gets
//! a summary; a request offering the `Read` tool gets one more file read per turn until all are
//! read; a question containing [`QUESTION_MARKER`] gets [`ANSWER`]; anything else gets "ok".

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::mock_upstream::{MockReply, completion};

/// The start of Claude Code's summary instruction: the last user message of a compaction.
pub const SUMMARY: &str = "Your task is to create a detailed summary of the conversation so far";
/// The summary the mock gives a compaction request.
pub const SUMMARY_REPLY: &str =
    "Summary: the user asked to read the files one by one; some were read.";
/// A user message containing this is a question, answered with [`ANSWER`].
pub const QUESTION_MARKER: &str = "PINEAPPLE";
/// The mock's answer to a question.
pub const ANSWER: &str = "The answer is forty-two, said the mock.";
/// The model name the mock serves.
pub const DEPLOYMENT: &str = "vllm-model";

/// The mock's token count for a request: its bytes / 4 (what relayd's estimate also assumes).
pub fn prompt_tokens(request: &Value) -> u64 {
    request["messages"].to_string().len() as u64 / 4 + request["tools"].to_string().len() as u64 / 4
}

/// Writes `count` files `f1.txt`… into `dir`, each about 6,000 tokens, bracketed by
/// `FILE-i-START` and `FILE-i-END`.
pub fn write_files(dir: &Path, count: usize) {
    for i in 1..=count {
        let line = format!("line {i}: the quick brown fox jumps over the lazy dog again\n");
        std::fs::write(
            dir.join(format!("f{i}.txt")),
            format!("FILE-{i}-START\n{}FILE-{i}-END\n", line.repeat(400)),
        )
        .expect("write file");
    }
}

fn with_usage(mut body: Value, request: &Value) -> Value {
    let prompt = prompt_tokens(request);
    body["usage"] =
        json!({"prompt_tokens": prompt, "completion_tokens": 20, "total_tokens": prompt + 20});
    body
}

fn chunk(delta: &Value, finish: Option<&str>) -> Value {
    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": DEPLOYMENT,
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

fn usage_chunk(usage: &Value) -> Value {
    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": DEPLOYMENT,
           "choices": [], "usage": usage})
}

/// A text answer, streamed when the request asks for it.
pub fn text(request: &Value, text: &str) -> MockReply {
    let mut body = with_usage(completion(text), request);
    body["model"] = json!(DEPLOYMENT);
    if request["stream"] == true {
        MockReply::sse(&[
            chunk(&json!({"role": "assistant", "content": text}), None),
            chunk(&json!({}), Some("stop")),
            usage_chunk(&body["usage"]),
        ])
    } else {
        MockReply::Json {
            status: 200,
            body,
            headers: Vec::new(),
        }
    }
}

/// A call of the tool `name` with `arguments`, streamed when the request asks for it.
pub fn tool_call(request: &Value, name: &str, arguments: &Value, id: &str) -> MockReply {
    let arguments = arguments.to_string();
    let usage = with_usage(json!({}), request)["usage"].clone();
    let call = json!({"id": id, "type": "function",
                      "function": {"name": name, "arguments": arguments}});
    if request["stream"] == true {
        let mut streamed = call.clone();
        streamed["index"] = json!(0);
        MockReply::sse(&[
            chunk(
                &json!({"role": "assistant", "tool_calls": [streamed]}),
                None,
            ),
            chunk(&json!({}), Some("tool_calls")),
            usage_chunk(&usage),
        ])
    } else {
        MockReply::Json {
            status: 200,
            body: json!({"id": "c", "object": "chat.completion", "created": 1, "model": DEPLOYMENT,
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                    "role": "assistant", "content": null, "tool_calls": [call]}}],
                "usage": usage}),
            headers: Vec::new(),
        }
    }
}

/// vLLM's refusal of a request that does not fit `window`, `None` when it fits.
pub fn overflow(request: &Value, window: u64) -> Option<MockReply> {
    let max_tokens = request["max_tokens"]
        .as_u64()
        .or(request["max_completion_tokens"].as_u64())
        .unwrap_or(0);
    let prompt = prompt_tokens(request);
    (prompt + max_tokens > window).then(|| MockReply::Json {
        status: 400,
        body: json!({"object": "error", "type": "BadRequestError", "code": 400, "message": format!(
            "This model's maximum context length is {window} tokens. However, you requested {max_tokens} output tokens and your prompt contains at least {} input tokens, for a total of at least {} tokens. Please reduce the length of the input prompt or the number of requested output tokens.",
            prompt + 1, prompt + 1 + max_tokens)}),
        headers: Vec::new(),
    })
}

/// What the mock answers: which files the session reads, and how it counts them.
#[derive(Debug)]
pub struct Script {
    /// Directory of the files (absolute: the `Read` tool wants absolute paths).
    pub dir: String,
    /// Files read in all, `f1.txt` to `f{files}.txt`.
    pub files: usize,
    /// The window, in tokens.
    pub window: u64,
    served: AtomicUsize,
}

impl Script {
    /// A script reading `files` files in `dir` against a `window`-token upstream.
    pub fn new(dir: &Path, files: usize, window: u64) -> Self {
        Self {
            dir: dir.to_str().expect("UTF-8 path").to_owned(),
            files,
            window,
            served: AtomicUsize::new(0),
        }
    }

    /// Files the main loop has asked to read so far.
    pub fn reads(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// The answer to one chat request.
    pub fn respond(&self, request: &Value) -> MockReply {
        if let Some(refusal) = overflow(request, self.window) {
            return refusal;
        }
        // relayd's probe forces a tool call: answer it as vLLM's tool parser would.
        if let Some(name) = request["tool_choice"]["function"]["name"].as_str() {
            return tool_call(request, name, &json!({"city": "Paris"}), "call_probe");
        }
        let messages = request["messages"].as_array().cloned().unwrap_or_default();
        let last_user = messages
            .iter()
            .rev()
            .find(|m| m["role"] == "user" || m["role"] == "tool");
        let last_user = last_user.map(|m| m["content"].to_string());
        if last_user.as_ref().is_some_and(|m| m.contains(SUMMARY)) {
            return text(request, SUMMARY_REPLY);
        }
        let offers_read = request["tools"]
            .as_array()
            .is_some_and(|tools| tools.iter().any(|t| t["function"]["name"] == "Read"));
        if !offers_read {
            return text(request, "ok");
        }
        // A question is answered whatever the history (the session carries on after a compaction).
        let last_is_user = messages.last().is_some_and(|m| m["role"] == "user");
        if last_is_user && last_user.is_some_and(|m| m.contains(QUESTION_MARKER)) {
            return text(request, ANSWER);
        }
        // The main loop: one more file per turn, counted here (after a compaction the history
        // no longer shows what was read).
        let next = self.served.fetch_add(1, Ordering::SeqCst) + 1;
        if next <= self.files {
            let path = format!("{}/f{next}.txt", self.dir);
            tool_call(
                request,
                "Read",
                &json!({ "file_path": path }),
                &format!("call_read_{next}"),
            )
        } else {
            self.served.store(self.files, Ordering::SeqCst);
            text(request, "All files read.")
        }
    }
}

/// One chat request the mock answered, for assertions and failure reports.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The request body.
    pub request: Value,
    /// The status answered.
    pub status: u16,
}

impl Exchange {
    /// The prompt's tokens as the mock counts them.
    pub fn prompt_tokens(&self) -> u64 {
        prompt_tokens(&self.request)
    }

    /// The request's `max_tokens` (or `max_completion_tokens`).
    pub fn max_tokens(&self) -> u64 {
        self.request["max_tokens"]
            .as_u64()
            .or(self.request["max_completion_tokens"].as_u64())
            .unwrap_or(0)
    }

    /// Whether it is Claude Code's compaction request.
    pub fn is_compaction(&self) -> bool {
        self.request["messages"].to_string().contains(SUMMARY)
    }

    /// Whether relayd cut tool results out of it to make it fit (its marker is in the text).
    pub fn was_cut(&self) -> bool {
        self.request["messages"].to_string().contains("relayd cut")
    }

    /// One line describing it.
    pub fn describe(&self) -> String {
        let last = self.request["messages"]
            .as_array()
            .and_then(|m| m.last())
            .map(|m| m.to_string().chars().take(100).collect::<String>())
            .unwrap_or_default();
        format!(
            "{} messages, ~{} tokens, max_tokens {}, answered {}{}{}; last: {last}",
            self.request["messages"].as_array().map_or(0, Vec::len),
            self.prompt_tokens(),
            self.max_tokens(),
            self.status,
            if self.is_compaction() {
                " (compaction)"
            } else {
                ""
            },
            if self.was_cut() {
                " (cut by relayd)"
            } else {
                ""
            },
        )
    }
}

struct Shared {
    script: Script,
    log: Mutex<Vec<Exchange>>,
}

/// The mock as a server with vLLM's probe surfaces. Stops when dropped.
#[derive(Debug)]
pub struct VllmWindowMock {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("script", &self.script)
            .finish_non_exhaustive()
    }
}

impl VllmWindowMock {
    /// Serves `script` on 127.0.0.1, port 0.
    pub async fn start(script: Script) -> Self {
        let shared = Arc::new(Shared {
            script,
            log: Mutex::default(),
        });
        let served = Arc::clone(&shared);
        let app = Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| {
            let shared = Arc::clone(&served);
            async move { answer(&shared, &method, &uri, &body) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the vLLM mock");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// The account endpoint (`http://ADDR/v1`).
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every chat request answered so far.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.shared.log.lock().expect("lock").clone()
    }

    /// The script.
    pub fn script(&self) -> &Script {
        &self.shared.script
    }

    /// The request log, one line each, for failure reports.
    pub fn report(&self) -> String {
        self.exchanges()
            .iter()
            .enumerate()
            .map(|(i, e)| format!("  #{i}: {}\n", e.describe()))
            .collect()
    }
}

impl Drop for VllmWindowMock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(shared: &Shared, method: &Method, uri: &Uri, body: &[u8]) -> Response {
    let window = shared.script.window;
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match (method.as_str(), uri.path()) {
        ("GET", "/version") => axum::Json(json!({"version": "0.11.0"})).into_response(),
        ("GET", "/v1/models") => axum::Json(json!({"object": "list", "data": [{
            "id": DEPLOYMENT, "object": "model", "created": 1, "owned_by": "vllm",
            "root": DEPLOYMENT, "max_model_len": window}]}))
        .into_response(),
        ("POST", "/tokenize") => {
            let count = prompt_tokens(&request);
            axum::Json(json!({"count": count, "max_model_len": window,
                              "tokens": vec![0; usize::try_from(count).unwrap_or(0)]}))
            .into_response()
        }
        ("POST", "/v1/chat/completions") => {
            let reply = shared.script.respond(&request);
            let status = match &reply {
                MockReply::Json { status, .. } => *status,
                MockReply::Stream { .. } => 200,
            };
            shared
                .log
                .lock()
                .expect("lock")
                .push(Exchange { request, status });
            into_response(reply)
        }
        _ => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"detail": "Not Found"})),
        )
            .into_response(),
    }
}

fn into_response(reply: MockReply) -> Response {
    match reply {
        MockReply::Json { status, body, .. } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            axum::Json(body),
        )
            .into_response(),
        MockReply::Stream { pieces, .. } => (
            [(header::CONTENT_TYPE, "text/event-stream")],
            pieces.concat(),
        )
            .into_response(),
    }
}
