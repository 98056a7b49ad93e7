//! Client connections end to end: the real relayd binary at its open-file limit (started under
//! `prlimit`), and a request body that does not arrive in time, answered 408 in the protocol of
//! the route called. The read deadlines themselves are unit-tested in relayd's `workers`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use relayd_tests::app::TestApp;
use relayd_tests::daemon::Daemon;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest wait for any awaited event; a passing test never reaches it.
const EVENT_DEADLINE: Duration = Duration::from_secs(30);

/// Waits until `condition` holds, polling every 10 ms; false after `EVENT_DEADLINE`.
fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + EVENT_DEADLINE;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    condition()
}

/// `GET /healthz` on a fresh connection; the whole raw answer.
fn healthz(daemon: &Daemon) -> std::io::Result<String> {
    let mut tcp = TcpStream::connect(daemon.addr)?;
    tcp.set_read_timeout(Some(EVENT_DEADLINE))?;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: relayd\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer)?;
    Ok(answer)
}

#[test]
fn at_the_open_file_limit_relayd_backs_off_logs_once_and_serves_again() {
    let dir = tempfile::tempdir().unwrap();
    // 64 descriptors: relayd itself needs a few dozen, so a few dozen connections exhaust them.
    // The connection cap is set above that on purpose (by default it would be derived from the
    // limit and keep relayd from ever reaching it); debug logging of the acceptor shows each
    // retry, so that the test can wait for several of them.
    let daemon = Daemon::start_under(
        &["prlimit", "--nofile=64:64", "--"],
        dir.path(),
        &[],
        &[
            ("RELAYD_WORKERS", "1"),
            ("RELAYD_SERVER__MAX_CONNECTIONS", "1000"),
            ("RELAYD_LOG", "info,relayd::workers=debug"),
        ],
    );
    assert!(healthz(&daemon).unwrap().starts_with("HTTP/1.1 200"));

    // Silent connections, held open: relayd accepts them until it has no descriptor left, and
    // the rest wait in the listen queue.
    let held: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(daemon.addr).unwrap())
        .collect();
    assert!(
        daemon.wait_for_log("cannot accept connections", EVENT_DEADLINE),
        "{}",
        daemon.log()
    );
    assert!(
        wait_until(|| daemon
            .log()
            .matches("accepting a connection failed again")
            .count()
            >= 3),
        "{}",
        daemon.log()
    );

    // Descriptors come back as the clients leave, and relayd accepts again by itself; it says
    // so once accepting has worked for a while without failing.
    drop(held);
    let mut answer = String::new();
    assert!(
        wait_until(|| {
            answer = healthz(&daemon).unwrap_or_default();
            answer.starts_with("HTTP/1.1 200")
                && daemon.log().contains("accepting connections again")
        }),
        "{answer}\n{}",
        daemon.log()
    );
    assert!(answer.ends_with("ok\n"), "{answer}");

    // One warning and one all-clear for the whole episode, however many attempts failed; no
    // other warning or error since start-up.
    let log = daemon.log();
    let since_start = &log[log.find("listening on").unwrap()..];
    let warnings: Vec<&str> = since_start
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("cannot accept connections"), "{log}");
    assert_eq!(
        log.matches("accepting connections again").count(),
        1,
        "{log}"
    );
}

#[tokio::test]
async fn a_request_body_that_does_not_arrive_in_time_is_answered_408_in_the_callers_shape() {
    let app = TestApp::start_with(|c| c.server.body_read_timeout_secs = 1).await;
    let key = app.admin().create_key(&json!({"name": "slow"})).await;
    let routes = [
        (
            "/v1/messages",
            format!("x-api-key: {key}\r\nanthropic-version: 2023-06-01"),
        ),
        (
            "/v1/chat/completions",
            format!("Authorization: Bearer {key}"),
        ),
    ];
    for (path, auth) in routes {
        let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        // 12 of the 1000 bytes promised, then nothing.
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: relayd\r\n{auth}\r\nContent-Type: application/json\r\n\
             Content-Length: 1000\r\n\r\n{{\"model\": \"x"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(EVENT_DEADLINE, tcp.read_to_end(&mut answer))
            .await
            .expect("no answer and no close in time")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{path}: {answer}"
        );
        let body: serde_json::Value =
            serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..]).unwrap();
        if path == "/v1/messages" {
            assert_eq!(body["type"], "error", "{body}");
            assert_eq!(body["error"]["type"], "timeout_error", "{body}");
        } else {
            assert_eq!(body["error"]["code"], "request_timeout", "{body}");
            assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        }
    }
}
