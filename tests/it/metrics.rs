//! `/metrics`: access control and the Prometheus text format, checked with the official Python
//! client's parser.

use std::io::Write;
use std::process::{Command, Stdio};

use relayd_tests::app::TestApp;
use relayd_tests::http::send;
use relayd_tests::mock_upstream::MockUpstream;
use serde_json::{Value, json};

fn parse_with_prometheus_client(text: &str) -> Value {
    let python = relayd_tests::python::sdk_python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/sdk/parse_metrics.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write metrics");
    let out = child.wait_with_output().expect("parser output");
    assert!(
        out.status.success(),
        "the Prometheus parser rejected the text:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("parser JSON")
}

#[tokio::test]
async fn metrics_need_a_token_and_parse_as_prometheus_text() {
    let python = tokio::task::spawn_blocking(relayd_tests::python::sdk_python);
    let mock = MockUpstream::start().await;
    let app = TestApp::start_with(|c| c.metrics.token = Some("scrape-token".to_owned())).await;
    app.admin()
        .create_account(&json!({"name": "box", "endpoint": mock.endpoint(), "deploymentName": "d"}))
        .await;
    let client = reqwest::Client::new();

    let anonymous = send(client.get(app.url("/metrics"))).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json["error"]["code"], "unauthenticated");
    let wrong = send(client.get(app.url("/metrics")).bearer_auth("nope")).await;
    assert_eq!(wrong.status, 401);

    let scraped = send(client.get(app.url("/metrics")).bearer_auth("scrape-token")).await;
    assert_eq!(scraped.status, 200);
    assert!(
        scraped.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    python.await.unwrap();
    let families = parse_with_prometheus_client(&scraped.text);
    for family in [
        "relayd_requests",
        "relayd_request_duration_seconds",
        "relayd_time_to_first_byte_seconds",
        "relayd_tokens",
        "relayd_upstream_errors",
        "relayd_account_enabled",
        "relayd_account_in_flight",
        "relayd_account_cooling_down",
        "relayd_queue_depth",
        "relayd_requests_in_flight",
    ] {
        assert!(
            families.get(family).is_some(),
            "{family} missing: {}",
            scraped.text
        );
    }
    assert_eq!(
        families["relayd_account_enabled"]["samples"][0][1]["account"],
        "box"
    );
}

#[tokio::test]
async fn a_separate_metrics_listener_serves_only_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = relayd_tests::daemon::Daemon::start(
        dir.path(),
        &[],
        &[("RELAYD_METRICS__LISTEN", "127.0.0.1:0")],
    );
    // The metrics line is logged right after the listening line that `start` waited for.
    assert!(daemon.wait_for_log("metrics on http://", std::time::Duration::from_secs(10)));
    let log = daemon.log();
    let url = log
        .split("metrics on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("metrics address in the log")
        .to_owned();
    let client = reqwest::Client::new();
    let open = send(client.get(&url)).await;
    assert_eq!(open.status, 200, "{}", open.text);
    assert!(open.text.contains("# TYPE relayd_requests_total counter"));
    let other = send(client.get(url.replace("/metrics", "/admin/v1/status"))).await;
    assert_eq!(other.status, 404);
    // The main listener still requires a token.
    assert_eq!(send(client.get(daemon.url("/metrics"))).await.status, 401);
}
