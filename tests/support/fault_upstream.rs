//! A programmable misbehaving upstream on a real socket (127.0.0.1, port 0), speaking just
//! enough HTTP/1.1 by hand to break it in the ways real servers and networks do: hang before
//! the headers, send headers then nothing, drop the connection in the middle of a body, reset,
//! answer a stream with JSON or HTML, send one endless line or an endless stream, trickle bytes,
//! and close keep-alive connections under the client (as llama.cpp's server and uvicorn do).
//!
//! [`MockUpstream`](crate::mock_upstream::MockUpstream) is an axum server and behaves; this one
//! writes raw bytes so each fault is exactly what the test names. It counts connections and
//! requests, and tells when a connection it served was closed by the client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the upstream answers each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A correct answer: a JSON completion, or an SSE stream when the request asks for one.
    None,
    /// Reads the request and never answers.
    HangBeforeHeaders,
    /// Sends `200` headers (SSE or JSON, as asked), then nothing, keeping the connection open.
    HeadersThenSilence,
    /// Sends `200` headers and the first part of the body, then closes the connection.
    DropMidBody,
    /// Resets the connection (RST) after reading the request.
    Reset,
    /// Closes the connection after reading the request, without a byte of answer.
    CloseWithoutAnswer,
    /// Answers every request, streaming or not, with a JSON completion.
    JsonToStream,
    /// Answers `200` with an HTML page.
    Html,
    /// Answers a stream whose first line never ends (`data: aaaa…` forever).
    EndlessLine,
    /// Answers a stream that never ends (one text chunk after another).
    EndlessStream,
    /// Answers correctly, one byte every `gap`.
    SlowBytes(Duration),
    /// Answers the first request on each connection correctly (announcing `Keep-Alive:
    /// timeout=N`), and closes the connection without answering any later request on it: what
    /// a client sees when it reuses a connection the server is closing.
    CloseReused {
        /// The keep-alive timeout announced, in seconds (none when 0).
        announce_secs: u64,
    },
}

#[derive(Debug)]
struct Shared {
    fault: Mutex<Fault>,
    connections: AtomicUsize,
    requests: AtomicUsize,
    /// Connections the client closed while the upstream was still writing (or waiting).
    client_closed: AtomicUsize,
    changed: tokio::sync::Notify,
}

/// A running fault upstream. Stops accepting when dropped.
#[derive(Debug)]
pub struct FaultUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultUpstream {
    /// Starts one answering with `fault`.
    pub async fn start(fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            fault: Mutex::new(fault),
            connections: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            client_closed: AtomicUsize::new(0),
            changed: tokio::sync::Notify::new(),
        });
        let accepting = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                accepting.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(tcp, Arc::clone(&accepting)));
            }
        });
        Self { addr, shared, task }
    }

    /// The base URL to configure as an account endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Changes how later requests are answered.
    pub fn set(&self, fault: Fault) {
        *self.shared.fault.lock().expect("lock") = fault;
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Requests read so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Connections the client closed while this upstream was still answering.
    pub fn client_closed(&self) -> usize {
        self.shared.client_closed.load(Ordering::SeqCst)
    }

    /// Waits until `condition` holds on this upstream's counters, or `within` passes.
    pub async fn wait_for(&self, within: Duration, condition: impl Fn(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.shared.changed.notified();
            if condition(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return condition(self);
            }
        }
    }
}

/// One request's head, as much as the faults need.
struct Head {
    stream: bool,
}

/// Serves requests on one connection until it closes or a fault ends it.
async fn serve(mut tcp: TcpStream, shared: Arc<Shared>) {
    let mut buffer = Vec::new();
    let mut served_on_connection = 0usize;
    while let Some(head) = read_request(&mut tcp, &mut buffer).await {
        shared.requests.fetch_add(1, Ordering::SeqCst);
        shared.changed.notify_waiters();
        served_on_connection += 1;
        let fault = shared.fault.lock().expect("lock").clone();
        let keep_going = answer(&mut tcp, &head, &fault, served_on_connection).await;
        match keep_going {
            Ok(true) => {}
            Ok(false) => break,
            Err(_) => {
                shared.client_closed.fetch_add(1, Ordering::SeqCst);
                shared.changed.notify_waiters();
                break;
            }
        }
    }
}

/// Answers one request; `Ok(false)` when the connection is to be closed now.
async fn answer(
    tcp: &mut TcpStream,
    head: &Head,
    fault: &Fault,
    nth_on_connection: usize,
) -> std::io::Result<bool> {
    match fault {
        Fault::None => {
            write_answer(tcp, head.stream, None, "").await?;
            Ok(true)
        }
        Fault::HangBeforeHeaders => {
            wait_for_close(tcp).await;
            Err(std::io::ErrorKind::ConnectionAborted.into())
        }
        Fault::HeadersThenSilence => {
            let content_type = if head.stream {
                "text/event-stream"
            } else {
                "application/json"
            };
            tcp.write_all(chunked_head(content_type, "").as_bytes())
                .await?;
            wait_for_close(tcp).await;
            Err(std::io::ErrorKind::ConnectionAborted.into())
        }
        Fault::DropMidBody => {
            if head.stream {
                tcp.write_all(chunked_head("text/event-stream", "").as_bytes())
                    .await?;
                let chunk = format!("data: {}\n\n", text_chunk("partial"));
                tcp.write_all(as_chunk(&chunk).as_bytes()).await?;
            } else {
                let body = completion("a complete answer that never arrives");
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                tcp.write_all(head.as_bytes()).await?;
                tcp.write_all(&body.as_bytes()[..body.len() / 2]).await?;
            }
            tcp.flush().await?;
            Ok(false)
        }
        Fault::Reset => {
            tcp.set_zero_linger()?;
            Ok(false)
        }
        Fault::CloseWithoutAnswer => Ok(false),
        Fault::JsonToStream => {
            write_answer(tcp, false, None, "").await?;
            Ok(true)
        }
        Fault::Html => {
            let page = "<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>";
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n",
                page.len()
            );
            tcp.write_all(head.as_bytes()).await?;
            tcp.write_all(page.as_bytes()).await?;
            Ok(true)
        }
        Fault::EndlessLine => {
            tcp.write_all(chunked_head("text/event-stream", "").as_bytes())
                .await?;
            tcp.write_all(as_chunk("data: {\"x\":\"").as_bytes())
                .await?;
            let filler = as_chunk(&"a".repeat(64 * 1024));
            loop {
                tcp.write_all(filler.as_bytes()).await?;
            }
        }
        Fault::EndlessStream => {
            tcp.write_all(chunked_head("text/event-stream", "").as_bytes())
                .await?;
            let chunk = as_chunk(&format!("data: {}\n\n", text_chunk("more ")));
            loop {
                tcp.write_all(chunk.as_bytes()).await?;
            }
        }
        Fault::SlowBytes(gap) => {
            write_answer(tcp, head.stream, Some(*gap), "").await?;
            Ok(true)
        }
        Fault::CloseReused { announce_secs } => {
            if nth_on_connection > 1 {
                return Ok(false);
            }
            let extra = if *announce_secs > 0 {
                format!("keep-alive: timeout={announce_secs}, max=100\r\n")
            } else {
                String::new()
            };
            write_answer(tcp, head.stream, None, &extra).await?;
            Ok(true)
        }
    }
}

/// Reads one request (head and `content-length` body); `None` when the connection closed.
async fn read_request(tcp: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Head> {
    let mut read = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(end) = find(buffer, b"\r\n\r\n") {
            break end + 4;
        }
        let n = tcp.read(&mut read).await.ok().filter(|&n| n > 0)?;
        buffer.extend_from_slice(&read[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let n = tcp.read(&mut read).await.ok().filter(|&n| n > 0)?;
        buffer.extend_from_slice(&read[..n]);
    }
    let body: Vec<u8> = buffer.drain(..head_end + length).skip(head_end).collect();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    Some(Head {
        stream: body["stream"] == true,
    })
}

/// Waits until the client closes the connection (reads and discards anything it sends).
async fn wait_for_close(tcp: &mut TcpStream) {
    let mut sink = [0u8; 1024];
    while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Response head of a chunked `200` with `extra` header lines.
fn chunked_head(content_type: &str, extra: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n{extra}\r\n"
    )
}

/// `piece` as one chunk of a chunked body.
fn as_chunk(piece: &str) -> String {
    format!("{:x}\r\n{piece}\r\n", piece.len())
}

/// The JSON completion every correct non-streamed answer carries.
pub fn completion(text: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-fault", "object": "chat.completion", "created": 1, "model": "fault-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    })
    .to_string()
}

fn text_chunk(text: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 1,
        "model": "fault-model",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]
    })
    .to_string()
}

/// The correct answer: "ok" as JSON or as a short stream, optionally one byte per `gap`.
async fn write_answer(
    tcp: &mut TcpStream,
    stream: bool,
    gap: Option<Duration>,
    extra_headers: &str,
) -> std::io::Result<()> {
    let bytes = if stream {
        let finish = serde_json::json!({
            "id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 1,
            "model": "fault-model",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        });
        let body = format!(
            "data: {}\n\ndata: {finish}\n\ndata: [DONE]\n\n",
            text_chunk("ok")
        );
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n{extra_headers}\r\n{body}",
            body.len()
        )
    } else {
        let body = completion("ok");
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra_headers}\r\n{body}",
            body.len()
        )
    };
    match gap {
        None => tcp.write_all(bytes.as_bytes()).await?,
        Some(gap) => {
            for byte in bytes.as_bytes() {
                tcp.write_all(std::slice::from_ref(byte)).await?;
                tcp.flush().await?;
                tokio::time::sleep(gap).await;
            }
        }
    }
    tcp.flush().await
}
