//! Tests of the serving threads over real sockets: deadlines, the connection cap, the spread
//! over threads, drains, and the status line clients see.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, oneshot};

use super::*;
use crate::error::{ApiError, ErrorKind, Surface};

/// The longest any awaited event may take before a test gives up: generous, because the
/// machine may be busy; a passing test never waits for it.
const EVENT_DEADLINE: Duration = Duration::from_secs(20);

type Started = (
    std::net::SocketAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<io::Result<()>>,
);

/// Binds port 0 and serves `app` on `workers` threads until the returned sender fires.
async fn start(app: axum::Router, workers: usize) -> Started {
    start_with(app, workers, ConnectionLimits::generous()).await
}

/// [`start`] within `limits`.
async fn start_with(app: axum::Router, workers: usize, limits: ConnectionLimits) -> Started {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(serve(listener, app, workers, limits, async {
        let _ = stopped.await;
    }));
    (addr, stop, served)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Reads until the server closes the connection (end of stream or an error such as a
/// reset); returns what arrived before.
async fn read_until_closed(tcp: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(EVENT_DEADLINE, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the connection is still open after {EVENT_DEADLINE:?}"
    );
    String::from_utf8_lossy(&received).into_owned()
}

/// Sends `GET path` on a kept-alive connection and reads one whole response; returns it.
async fn round_trip(tcp: &mut TcpStream, path: &str) -> String {
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: relayd\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_response(tcp).await
}

/// Reads one response with a `content-length` body.
async fn read_response(tcp: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(EVENT_DEADLINE, async {
        loop {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before a whole response: {received:?}");
            received.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&received);
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if received.len() >= end + 4 + length {
                    break;
                }
            }
        }
    })
    .await
    .expect("no whole response in time");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let app = axum::Router::new().route("/", get(|| async { "ok" }));
    let limits = ConnectionLimits::of(ms(300), ms(60_000), ms(60_000), 100);
    let (addr, _stop, _served) = start_with(app, 1, limits).await;
    // Timings are taken from before the client acts, so the server's clock cannot have
    // started earlier.
    let since = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let received = read_until_closed(&mut tcp).await;
    assert_eq!(received, "", "closed without an answer");
    let took = since.elapsed();
    assert!(took >= ms(300), "closed after {took:?}");
}

#[tokio::test]
async fn a_header_trickled_after_an_idle_pause_is_cut_off_by_the_header_timeout() {
    let app = axum::Router::new().route("/", get(|| async { "ok" }));
    // A long idle allowance: only the header timeout can end this in time.
    let limits = ConnectionLimits::of(ms(400), ms(60_000), ms(60_000), 100);
    let (addr, _stop, _served) = start_with(app, 1, limits).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    assert!(round_trip(&mut tcp, "/").await.starts_with("HTTP/1.1 200"));
    let (mut reader, mut writer) = tcp.into_split();
    let head = format!(
        "GET / HTTP/1.1\r\nHost: relayd\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(200)
    );
    let sent = Arc::new(AtomicUsize::new(0));
    let since = Instant::now();
    let trickle = {
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            // One byte every 20 ms: the whole head would take about five seconds.
            for byte in head.bytes() {
                if writer.write_all(&[byte]).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(ms(20)).await;
            }
        })
    };
    let received = read_until_closed(&mut reader).await;
    let took = since.elapsed();
    let total = 200 + "GET / HTTP/1.1\r\nHost: relayd\r\nX-Padding: \r\n\r\n".len();
    assert_eq!(received, "", "no answer to a head that never completed");
    assert!(took >= ms(400), "closed after {took:?}");
    assert!(
        sent.load(Ordering::Relaxed) < total,
        "the head was completed before the connection was closed"
    );
    trickle.abort();
}

#[tokio::test]
async fn an_idle_keep_alive_is_closed_but_busy_and_active_connections_are_not() {
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let app = {
        let (started, release) = (Arc::clone(&started), Arc::clone(&release));
        axum::Router::new()
            .route("/", get(|| async { "ok" }))
            .route(
                "/slow",
                get(move || async move {
                    started.notify_one();
                    release.notified().await;
                    "done"
                }),
            )
    };
    // A long header allowance: only the idle timeout can close the idle connection in time.
    // The idle timeout is 10 pacing intervals, so that a loaded machine stretching the
    // client's 100 ms pauses cannot make the active connection look idle.
    let limits = ConnectionLimits::of(ms(60_000), ms(60_000), ms(1000), 100);
    let (addr, _stop, _served) = start_with(app, 2, limits).await;

    // A request that takes longer than the idle timeout to answer.
    let mut busy = TcpStream::connect(addr).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: relayd\r\n\r\n")
        .await
        .unwrap();
    started.notified().await;

    // A connection used every 100 ms outlives the 1 s idle timeout.
    let mut active = TcpStream::connect(addr).await.unwrap();
    for _ in 0..15 {
        assert!(
            round_trip(&mut active, "/")
                .await
                .starts_with("HTTP/1.1 200")
        );
        // Pacing of the client's own requests, not synchronisation.
        tokio::time::sleep(ms(100)).await;
    }

    let mut idle = TcpStream::connect(addr).await.unwrap();
    let since = Instant::now();
    assert!(round_trip(&mut idle, "/").await.starts_with("HTTP/1.1 200"));
    let received = read_until_closed(&mut idle).await;
    let took = since.elapsed();
    assert_eq!(received, "");
    assert!(took >= ms(1000), "closed after {took:?}");

    // The slow request has now been busy for longer than the idle timeout, and is answered.
    release.notify_one();
    let answer = read_response(&mut busy).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("done"), "{answer}");
}

#[tokio::test]
async fn a_slow_body_is_answered_408_in_the_callers_shape() {
    let app = axum::Router::new().route(
        "/v1/messages",
        post(|req: Request| async move {
            match crate::extract::read_body(req, &()).await {
                Ok(body) => format!("{} bytes", body.len()).into_response(),
                Err(e) => e.into_response_for(crate::error::Surface::Anthropic),
            }
        }),
    );
    let limits = ConnectionLimits::of(ms(60_000), ms(300), ms(60_000), 100);
    let (addr, _stop, _served) = start_with(app, 1, limits).await;

    // A body in time is read as usual.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        b"POST /v1/messages HTTP/1.1\r\nHost: relayd\r\nContent-Type: application/json\r\n\
          Content-Length: 2\r\n\r\n{}",
    )
    .await
    .unwrap();
    let answer = read_response(&mut tcp).await;
    assert!(answer.ends_with("2 bytes"), "{answer}");

    // Five of the hundred bytes promised, then nothing.
    let since = Instant::now();
    tcp.write_all(
        b"POST /v1/messages HTTP/1.1\r\nHost: relayd\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"a\":",
    )
    .await
    .unwrap();
    let answer = read_until_closed(&mut tcp).await;
    let took = since.elapsed();
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert!(answer.contains(r#""type":"timeout_error""#), "{answer}");
    assert!(answer.contains("body_read_timeout_secs"), "{answer}");
    assert!(took >= ms(300), "answered after {took:?}");
}

#[tokio::test]
async fn a_deadline_longer_than_the_shortest_timeout_is_kept_in_full() {
    // The connection's timer is never set more than the shortest timeout (here the header
    // one) ahead; it fires early, is set again, and the body still gets its whole 700 ms.
    let app = axum::Router::new().route(
        "/",
        post(|req: Request| async move {
            match crate::extract::read_body(req, &()).await {
                Ok(_) => "read".into_response(),
                Err(e) => e.into_response_for(crate::error::Surface::OpenAi),
            }
        }),
    );
    let limits = ConnectionLimits::of(ms(100), ms(700), ms(60_000), 100);
    let (addr, _stop, _served) = start_with(app, 1, limits).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let since = Instant::now();
    tcp.write_all(
        b"POST / HTTP/1.1\r\nHost: relayd\r\nContent-Type: application/json\r\n\
          Content-Length: 10\r\n\r\n{",
    )
    .await
    .unwrap();
    let answer = read_until_closed(&mut tcp).await;
    let took = since.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    assert!(took >= ms(700), "answered after {took:?}");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let app = axum::Router::new().route("/", get(|| async { "ok" }));
    let limits = ConnectionLimits::of(ms(60_000), ms(60_000), ms(60_000), 2);
    let (addr, _stop, _served) = start_with(app, 2, limits).await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert!(
        round_trip(&mut first, "/")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        round_trip(&mut second, "/")
            .await
            .starts_with("HTTP/1.1 200")
    );

    // The kernel completes the third handshake, but relayd does not take the connection.
    let mut third = TcpStream::connect(addr).await.unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: relayd\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(ms(300), third.read(&mut byte))
            .await
            .is_err(),
        "a third connection was served with two allowed"
    );
    drop(first);
    let answer = read_response(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        round_trip(&mut second, "/")
            .await
            .starts_with("HTTP/1.1 200")
    );
}

#[tokio::test]
async fn connections_are_spread_over_every_serving_thread() {
    let app = axum::Router::new().route(
        "/",
        get(|| async { crate::serving_thread::index().to_string() }),
    );
    let (addr, stop, served) = start(app, 3).await;
    let mut seen = BTreeSet::new();
    for _ in 0..3 {
        // A new client per request: a new connection each time.
        let body = reqwest::get(format!("http://{addr}/"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        seen.insert(body);
    }
    assert_eq!(seen, BTreeSet::from(["1".into(), "2".into(), "3".into()]));
    assert_eq!(
        crate::serving_thread::index(),
        0,
        "the test's own thread is no serving thread"
    );
    stop.send(()).unwrap();
    served.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_lets_an_open_request_finish_first() {
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let app = {
        let (started, release) = (Arc::clone(&started), Arc::clone(&release));
        axum::Router::new().route(
            "/",
            get(move || async move {
                started.notify_one();
                release.notified().await;
                "done"
            }),
        )
    };
    let (addr, stop, mut served) = start(app, 2).await;
    let request = tokio::spawn(reqwest::get(format!("http://{addr}/")));
    started.notified().await;
    stop.send(()).unwrap();
    // The drain waits for the open request...
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut served)
            .await
            .is_err(),
        "serve returned with a request still open"
    );
    // ...which then completes normally, and the server stops.
    release.notify_one();
    let response = request.await.unwrap().unwrap();
    assert_eq!(response.text().await.unwrap(), "done");
    served.await.unwrap().unwrap();
}

#[tokio::test]
async fn dropping_serve_closes_open_connections_at_once() {
    let started = Arc::new(Notify::new());
    let app = {
        let started = Arc::clone(&started);
        axum::Router::new().route(
            "/",
            get(move || async move {
                started.notify_one();
                std::future::pending::<()>().await;
            }),
        )
    };
    let (addr, _stop, served) = start(app, 2).await;
    let request = tokio::spawn(reqwest::get(format!("http://{addr}/")));
    started.notified().await;
    // What a drain cut off by its deadline does.
    served.abort();
    let outcome = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .expect("the client still waits after serve was dropped")
        .unwrap();
    assert!(outcome.is_err(), "{outcome:?}");
}

/// The status line as a client sees it: relayd's own serving path over a real socket.
async fn status_line(response: fn() -> Response) -> String {
    let app = axum::Router::new().route("/", axum::routing::get(move || async move { response() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(serve(
        listener,
        app,
        1,
        ConnectionLimits::generous(),
        async {
            let _ = stopped.await;
        },
    ));
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: relayd\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    stop.send(()).unwrap();
    served.await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&raw);
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn overloaded_has_a_reason_phrase_on_the_status_line() {
    let line = status_line(|| {
        ApiError::new(ErrorKind::Overloaded, "busy").into_response_for(Surface::Anthropic)
    })
    .await;
    assert_eq!(line, "HTTP/1.1 529 Overloaded");
    // OpenAI clients get a plain 429, with its standard phrase.
    let line = status_line(|| {
        ApiError::new(ErrorKind::Overloaded, "busy").into_response_for(Surface::OpenAi)
    })
    .await;
    assert_eq!(line, "HTTP/1.1 429 Too Many Requests");
}
