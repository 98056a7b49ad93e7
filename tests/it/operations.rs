//! Running relayd for real, with the real binary: the SIGTERM drain (streams finish, new
//! connections are refused, the deadline cuts what does not finish), SIGHUP reload, systemd
//! readiness and watchdog through a fake `NOTIFY_SOCKET`, and refusing a store from a newer relayd.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use relayd::store::Store as _;
use relayd::store::embedded::EmbeddedStore;
use relayd::store::{FORMAT_VERSION, FORMAT_VERSION_META};
use relayd_tests::daemon::{Daemon, Started};
use relayd_tests::mock_upstream::{MockReply, MockUpstream};
use serde_json::json;

const MODEL: &str = "claude-sonnet-4-5-20250929";

fn chunk(text: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"content": text}}]})
    )
}

/// `count` content pieces `t0 ` … then a finish chunk and `[DONE]`, `gap` apart.
fn slow_stream(count: usize, gap: Duration) -> MockReply {
    let mut pieces: Vec<String> = (0..count).map(|i| chunk(&format!("t{i} "))).collect();
    pieces.push(format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    ));
    pieces.push("data: [DONE]\n\n".to_owned());
    MockReply::Stream {
        pieces,
        gap,
        abort: false,
    }
}

/// One account on `mock` and a relay key; returns the key.
async fn account_and_key(daemon: &Daemon, mock: &MockUpstream) -> String {
    let admin = daemon.admin();
    admin
        .create_account(&json!({
            "name": "box1", "endpoint": mock.endpoint(), "deploymentName": "d",
            "apiKey": "sk-upstream-secret-0000", "supportedModels": [MODEL]
        }))
        .await;
    admin.create_key(&json!({"name": "ops"})).await
}

/// Starts a streamed Anthropic request and returns its body stream once `t0 ` has arrived.
async fn open_stream(
    daemon: &Daemon,
    key: &str,
) -> (
    impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send + Unpin + 'static,
    String,
) {
    let response = reqwest::Client::new()
        .post(daemon.url("/v1/messages"))
        .header("x-api-key", key)
        .json(&json!({"model": MODEL, "max_tokens": 100, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = Box::pin(response.bytes_stream());
    let mut seen = String::new();
    while !seen.contains("t0 ") {
        let piece = stream.next().await.expect("stream ended early").unwrap();
        seen.push_str(&String::from_utf8_lossy(&piece));
    }
    (stream, seen)
}

/// Reads the rest of a stream; `Err` text appended when it breaks.
async fn read_rest(
    mut stream: impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
    mut seen: String,
) -> String {
    while let Some(piece) = stream.next().await {
        match piece {
            Ok(piece) => seen.push_str(&String::from_utf8_lossy(&piece)),
            Err(e) => {
                seen.push_str(&format!("\n<stream broke: {e}>"));
                break;
            }
        }
    }
    seen
}

/// Waits (with a deadline) until connecting to `addr` is refused.
async fn wait_until_refused(addr: std::net::SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return true,
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_open_streams_finish_refuses_new_connections_and_exits_0() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let grace = Duration::from_secs(20);
    let mut daemon = Daemon::start(dir.path(), &[], &[("RELAYD_SHUTDOWN_GRACE_SECS", "20")]);
    let key = account_and_key(&daemon, &mock).await;
    mock.push(slow_stream(20, Duration::from_millis(150)));
    let (stream, seen) = open_stream(&daemon, &key).await;

    daemon.signal("TERM");
    let signalled = Instant::now();
    let reader = tokio::spawn(read_rest(stream, seen));
    assert!(
        wait_until_refused(daemon.addr, Duration::from_secs(5)).await,
        "relayd still accepts connections after SIGTERM"
    );
    assert!(
        !reader.is_finished(),
        "the listener must close while the stream is still running, not after it"
    );

    let text = reader.await.unwrap();
    for i in 0..20 {
        assert!(text.contains(&format!("t{i} ")), "t{i} missing:\n{text}");
    }
    assert!(text.contains("event: message_stop"), "{text}");
    assert!(!text.contains("stream broke"), "{text}");

    let status = tokio::task::block_in_place(|| daemon.wait_exit(grace))
        .expect("relayd did not exit within the grace period");
    assert_eq!(status.code(), Some(0));
    assert!(signalled.elapsed() < grace);
    assert!(daemon.wait_for_log("stopped", Duration::from_secs(5)));
    let log = daemon.log();
    assert!(log.contains("SIGTERM: shutting down"), "{log}");
    assert!(!log.contains("cut off"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_deadline_cuts_an_endless_stream_and_still_exits_0() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &[], &[("RELAYD_SHUTDOWN_GRACE_SECS", "1")]);
    let key = account_and_key(&daemon, &mock).await;
    // 10 000 pieces, 100 ms apart: 17 minutes, "never" for this test.
    mock.push(slow_stream(10_000, Duration::from_millis(100)));
    let (stream, seen) = open_stream(&daemon, &key).await;

    daemon.signal("TERM");
    let signalled = Instant::now();
    let reader = tokio::spawn(read_rest(stream, seen));
    let status = tokio::task::block_in_place(|| daemon.wait_exit(Duration::from_secs(10)))
        .expect("relayd did not exit after the grace period");
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= Duration::from_millis(900),
        "exited before the deadline: {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} for a 1 s grace"
    );

    // The client sees its stream end (cut), not hang.
    let text = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("client stream still open after relayd exited")
        .unwrap();
    assert!(!text.contains("t9999 "));
    assert!(daemon.wait_for_log("cut off", Duration::from_secs(5)));
    let log = daemon.log();
    assert!(log.contains("1 client request(s) still open"), "{log}");
    // The upstream request is not left running either.
    tokio::time::timeout(Duration::from_secs(5), mock.wait_idle())
        .await
        .expect("upstream still streaming after relayd exited");
}

#[test]
fn sighup_reloads_the_config_file_and_says_what_took_effect() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relayd.toml");
    std::fs::write(
        &config,
        "log = \"info\"\nshutdown_grace_secs = 30\n[timeouts]\nidle_secs = 300\n",
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let mut daemon = match Daemon::try_start_without(
        dir.path(),
        &["--config", config_arg],
        &[],
        &["RELAYD_LOG", "RELAYD_CONFIG", "RELAYD_SHUTDOWN_GRACE_SECS"],
    ) {
        Started::Running(d) => d,
        Started::Exited(code, log) => panic!("relayd exited with {code:?}:\n{log}"),
    };

    // An unchanged file changes nothing.
    daemon.signal("HUP");
    assert!(
        daemon.wait_for_log("0 changed", Duration::from_secs(10)),
        "{}",
        daemon.log()
    );

    std::fs::write(
        &config,
        "log = \"warn\"\nshutdown_grace_secs = 5\n[timeouts]\nidle_secs = 120\n",
    )
    .unwrap();
    daemon.signal("HUP");
    assert!(
        daemon.wait_for_log("3 changed, 1 need a restart", Duration::from_secs(10)),
        "{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(
        log.contains(r#"config log: "info" -> "warn" (takes effect now)"#),
        "{log}"
    );
    assert!(
        log.contains("config shutdown_grace_secs: 30 -> 5 (takes effect now)"),
        "{log}"
    );
    assert!(
        log.contains("config timeouts.idle_secs: 300 -> 120 (needs a restart)"),
        "{log}"
    );

    // A broken file keeps the running configuration and names the key.
    std::fs::write(&config, "log = \"info\"\nshutdown_grace_sec = 1\n").unwrap();
    daemon.signal("HUP");
    assert!(
        daemon.wait_for_log("reload failed", Duration::from_secs(10)),
        "{}",
        daemon.log()
    );
    let log = daemon.log();
    let failure = log
        .lines()
        .find(|l| l.contains("reload failed"))
        .unwrap()
        .to_owned();
    assert!(failure.contains("shutdown_grace_sec"), "{failure}");
    assert!(failure.contains("relayd.toml"), "{failure}");
    // The new filter (`warn`) is live: the info line announcing this third SIGHUP, logged before
    // the error above, was filtered out.
    assert_eq!(
        log.matches("SIGHUP: reloading").count(),
        2,
        "the `warn` filter did not take effect:\n{log}"
    );
    // And the server still serves.
    assert!(healthz(daemon.addr).starts_with("HTTP/1.0 200"));

    daemon.signal("TERM");
    let status = daemon
        .wait_exit(Duration::from_secs(10))
        .expect("relayd did not stop");
    assert_eq!(status.code(), Some(0));
}

/// `GET /healthz` over a plain blocking socket; the raw response.
fn healthz(addr: std::net::SocketAddr) -> String {
    use std::io::{Read as _, Write as _};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"GET /healthz HTTP/1.0\r\nHost: relayd\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    response
}

/// Datagrams received on a fake `NOTIFY_SOCKET` until `done` says enough (or 10 s pass).
fn receive_until(socket: &UnixDatagram, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut messages = Vec::new();
    let mut buf = [0u8; 1024];
    while !done(&messages) && Instant::now() < deadline {
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    messages
}

#[test]
fn systemd_notify_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let data = dir.path().join("data");
    let mut daemon = Daemon::start(
        &data,
        &[],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let messages = receive_until(&socket, |m| {
        m.iter().filter(|s| s.as_str() == "WATCHDOG=1\n").count() >= 3
    });
    let ready = messages
        .iter()
        .position(|m| m.starts_with("READY=1\n"))
        .unwrap_or_else(|| panic!("no READY=1 in {messages:?}"));
    assert_eq!(
        messages[ready],
        format!(
            "READY=1\nSTATUS=serving on {}, store embedded\n",
            daemon.addr
        )
    );
    assert!(
        daemon.log().contains("listening on"),
        "READY=1 before the listening line"
    );
    // READY comes first; the watchdog pings (every 100 ms) only after it.
    assert_eq!(ready, 0, "{messages:?}");
    assert!(
        messages[1..]
            .iter()
            .filter(|m| *m == "WATCHDOG=1\n")
            .count()
            >= 3,
        "{messages:?}"
    );

    daemon.signal("TERM");
    let messages = receive_until(&socket, |m| m.iter().any(|s| s.starts_with("STOPPING=1")));
    assert!(
        messages
            .iter()
            .any(|m| m == "STOPPING=1\nSTATUS=draining open requests\n"),
        "{messages:?}"
    );
    let status = daemon.wait_exit(Duration::from_secs(10)).expect("stopped");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn without_notify_socket_nothing_is_sent_and_the_watchdog_stays_off() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[], &[("WATCHDOG_USEC", "200000")]);
    assert!(!daemon.log().contains("watchdog"), "{}", daemon.log());
}

#[tokio::test]
async fn a_store_from_a_newer_relayd_is_refused_with_one_line_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relayd.redb");
    {
        let store = EmbeddedStore::open(&path).await.unwrap();
        store.set_meta(FORMAT_VERSION_META, "999").await.unwrap();
    }
    let before = std::fs::read(&path).unwrap();

    match Daemon::try_start(dir.path(), &[], &[]) {
        Started::Running(_) => panic!("relayd opened a store from a newer version"),
        Started::Exited(code, log) => {
            assert_eq!(code, Some(1), "{log}");
            assert_eq!(log.trim().lines().count(), 1, "{log}");
            assert!(log.contains("format version 999"), "{log}");
            assert!(log.contains(&format!("({FORMAT_VERSION})")), "{log}");
            assert!(log.contains("upgrade relayd"), "{log}");
            assert!(log.contains(path.to_str().unwrap()), "{log}");
        }
    }
    assert!(
        std::fs::read(&path).unwrap() == before,
        "the store file changed"
    );
    // Refused before anything else was created next to it.
    assert!(!dir.path().join("admin.token").exists());
    assert!(!dir.path().join("encryption.key").exists());
}
