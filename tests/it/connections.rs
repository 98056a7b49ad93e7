//! Client connections end to end: a request body that does not arrive in time, answered 408 in
//! the protocol of the route called. The read deadlines themselves are unit-tested in relayd's
//! `workers`.

use std::time::Duration;

use relayd_tests::app::TestApp;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest wait for any awaited event; a passing test never reaches it.
const EVENT_DEADLINE: Duration = Duration::from_secs(30);

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
