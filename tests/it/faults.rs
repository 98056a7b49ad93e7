//! The fault suite: one test per way an upstream misbehaves, each through both client protocols
//! (and streaming or not, where that changes the path). Each asserts what the client gets
//! (failover to the healthy account, an `error` event, or a status), whether the faulty account
//! cools down, and that every concurrency slot is given back.
//!
//! The faulty account (priority 10) is tried first; the healthy one (priority 20) is the
//! failover target. The faults that wait for a timeout configure it at its 1 s minimum so that
//! they end quickly.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use relayd_tests::app::TestApp;
use relayd_tests::fault_upstream::{Fault, FaultUpstream};
use relayd_tests::http::{Reply, send};
use serde_json::{Value, json};

const MODEL: &str = "claude-sonnet-4-5-20250929";
const OPENAI_MODEL: &str = "gpt-4o";

/// Which client protocol a request uses.
#[derive(Debug, Clone, Copy)]
enum Protocol {
    Anthropic,
    OpenAi,
}

const BOTH: [Protocol; 2] = [Protocol::Anthropic, Protocol::OpenAi];

struct Setup {
    app: TestApp,
    key: String,
    faulty: FaultUpstream,
    healthy: FaultUpstream,
    client: reqwest::Client,
}

/// relayd with a `faulty` account answering with `fault` and a `healthy` one behind it.
async fn setup(fault: Fault) -> Setup {
    setup_with(fault, |_| {}).await
}

async fn setup_with(fault: Fault, configure: impl FnOnce(&mut relayd::config::Config)) -> Setup {
    let faulty = FaultUpstream::start(fault).await;
    let healthy = FaultUpstream::start(Fault::None).await;
    let app = TestApp::start_with(|c| {
        // Generous by default, so that a loaded machine never turns a slow answer into a
        // failover; the tests of the timeouts themselves set them to their 1 s minimum.
        c.timeouts.first_byte_secs = 20;
        c.timeouts.idle_secs = 20;
        c.routing.max_attempts = 2;
        c.routing.cooldown_timeout_secs = 600;
        c.routing.cooldown_server_error_secs = 600;
        c.routing.cooldown_connect_secs = 600;
        configure(c);
    })
    .await;
    let admin = app.admin();
    for (name, endpoint, priority) in [
        ("faulty", faulty.endpoint(), 10),
        ("healthy", healthy.endpoint(), 20),
    ] {
        admin
            .create_account(&json!({
                "name": name, "endpoint": endpoint, "deploymentName": "d",
                "priority": priority, "supportedModels": [MODEL, OPENAI_MODEL]
            }))
            .await;
    }
    let key = admin.create_key(&json!({"name": "faults"})).await;
    Setup {
        app,
        key,
        faulty,
        healthy,
        client: reqwest::Client::new(),
    }
}

impl Setup {
    fn request(&self, protocol: Protocol, stream: bool) -> reqwest::RequestBuilder {
        match protocol {
            Protocol::Anthropic => self
                .client
                .post(self.app.url("/v1/messages"))
                .header("x-api-key", &self.key)
                .header("anthropic-version", "2023-06-01")
                .json(&json!({"model": MODEL, "max_tokens": 10, "stream": stream,
                              "messages": [{"role": "user", "content": "hi"}]})),
            Protocol::OpenAi => self
                .client
                .post(self.app.url("/v1/chat/completions"))
                .bearer_auth(&self.key)
                .json(&json!({"model": OPENAI_MODEL, "stream": stream,
                              "messages": [{"role": "user", "content": "hi"}]})),
        }
    }

    async fn send(&self, protocol: Protocol, stream: bool) -> Reply {
        send(self.request(protocol, stream)).await
    }

    /// The routing table's view of account `name` for the Anthropic model.
    async fn account(&self, name: &str) -> Value {
        let table = self.app.admin().get("/models").await;
        table.json["models"]
            .as_array()
            .expect("models")
            .iter()
            .find(|m| m["model"] == MODEL)
            .and_then(|m| m["accounts"].as_array())
            .and_then(|a| a.iter().find(|a| a["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no account {name} in {}", table.text))
    }

    /// Waits until no account has a request in flight (slots are given back as bodies end).
    async fn assert_slots_free(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let faulty = self.account("faulty").await["inFlight"].clone();
            let healthy = self.account("healthy").await["inFlight"].clone();
            if faulty == 0 && healthy == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "slots still held: faulty {faulty}, healthy {healthy}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn assert_cooling(&self, cooling: bool) {
        let state = self.account("faulty").await;
        let expected = if cooling { "coolingDown" } else { "ok" };
        assert_eq!(state["state"], expected, "{state}");
    }
}

/// The text a successful answer of `protocol` carries.
fn answer_text(protocol: Protocol, stream: bool, reply: &Reply) -> String {
    if !stream {
        return match protocol {
            Protocol::Anthropic => reply.json["content"][0]["text"].as_str(),
            Protocol::OpenAi => reply.json["choices"][0]["message"]["content"].as_str(),
        }
        .unwrap_or_default()
        .to_owned();
    }
    let mut text = String::new();
    for data in reply.text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let Ok(event) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        let piece = match protocol {
            Protocol::Anthropic => event.pointer("/delta/text"),
            Protocol::OpenAi => event.pointer("/choices/0/delta/content"),
        };
        text.push_str(piece.and_then(Value::as_str).unwrap_or_default());
    }
    text
}

/// Every fault that happens before a byte could reach the client fails over to the healthy
/// account, cools the faulty one down and leaves no slot held.
async fn fails_over(fault: Fault, stream_cases: &[bool], cooling: bool) {
    for protocol in BOTH {
        for &stream in stream_cases {
            let s = setup_with(fault.clone(), |c| {
                if matches!(fault, Fault::HangBeforeHeaders | Fault::HeadersThenSilence) {
                    c.timeouts.first_byte_secs = 1;
                    c.timeouts.idle_secs = 1;
                }
            })
            .await;
            let reply = s.send(protocol, stream).await;
            let case = format!("{fault:?} {protocol:?} stream={stream}");
            assert_eq!(reply.status, 200, "{case}: {}", reply.text);
            assert_eq!(reply.headers["x-relay-account"], "healthy", "{case}");
            assert_eq!(answer_text(protocol, stream, &reply), "ok", "{case}");
            assert!(
                s.faulty.requests() >= 1,
                "{case}: the faulty account was tried"
            );
            s.assert_cooling(cooling).await;
            s.assert_slots_free().await;
        }
    }
}

#[tokio::test]
async fn hang_before_headers_fails_over_after_the_first_byte_timeout() {
    fails_over(Fault::HangBeforeHeaders, &[false, true], true).await;
}

#[tokio::test]
async fn headers_then_silence_fails_over_after_the_first_byte_timeout() {
    let started = Instant::now();
    fails_over(Fault::HeadersThenSilence, &[false, true], true).await;
    // Four cases of about one first-byte timeout each, not four idle timeouts of 300 s.
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn an_html_page_fails_over_with_a_cooldown() {
    fails_over(Fault::Html, &[false, true], true).await;
}

#[tokio::test]
async fn a_body_dropped_before_the_client_saw_a_byte_fails_over() {
    fails_over(Fault::DropMidBody, &[false], true).await;
}

#[tokio::test]
async fn a_reset_or_a_close_without_answer_fails_over_without_a_cooldown() {
    // Closed without a byte of answer on a new connection too: the request may be the cause,
    // so the account is not cooled down (a client-caused failure must not cost it a minute).
    fails_over(Fault::Reset, &[false, true], false).await;
    fails_over(Fault::CloseWithoutAnswer, &[false, true], false).await;
}

#[tokio::test]
async fn a_json_answer_to_a_stream_request_becomes_a_proper_stream() {
    for protocol in BOTH {
        let s = setup(Fault::JsonToStream).await;
        let reply = s.send(protocol, true).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.headers["x-relay-account"], "faulty");
        assert_eq!(reply.headers["content-type"], "text/event-stream");
        assert_eq!(answer_text(protocol, true, &reply), "ok", "{}", reply.text);
        match protocol {
            Protocol::Anthropic => {
                assert!(reply.text.contains("event: message_stop"), "{}", reply.text);
                assert!(reply.text.contains("\"end_turn\""), "{}", reply.text);
                assert!(reply.text.contains("\"output_tokens\":3"), "{}", reply.text);
            }
            Protocol::OpenAi => {
                assert!(reply.text.ends_with("data: [DONE]\n\n"), "{}", reply.text);
                assert!(
                    reply.text.contains("\"model\":\"gpt-4o\""),
                    "{}",
                    reply.text
                );
            }
        }
        s.assert_cooling(false).await;
        s.assert_slots_free().await;
    }
}

#[tokio::test]
async fn a_stream_dropped_after_it_started_ends_with_an_error() {
    for protocol in BOTH {
        let s = setup(Fault::DropMidBody).await;
        let response = s.request(protocol, true).send().await.expect("sent");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-relay-account"], "faulty");
        let body = response.text().await;
        match protocol {
            // The client had `message_start` and the first text: an error event ends it.
            Protocol::Anthropic => {
                let body = body.expect("an Anthropic stream ends cleanly, with an error event");
                assert!(body.contains("partial"), "{body}");
                assert!(body.contains("event: error"), "{body}");
                assert!(!body.contains("message_stop"), "{body}");
            }
            // OpenAI SSE has no error event: the chunked body is broken off.
            Protocol::OpenAi => assert!(body.is_err(), "{body:?}"),
        }
        s.assert_slots_free().await;
    }
}

#[tokio::test]
async fn an_endless_line_is_cut_at_the_line_bound() {
    for protocol in BOTH {
        let s = setup_with(Fault::EndlessLine, |c| c.upstream.max_line_bytes = 1 << 20).await;
        let response = s.request(protocol, true).send().await.expect("sent");
        // The stream looked like SSE ("data: {…"), so it was committed; the line bound ends it.
        assert_eq!(response.status(), 200);
        let body = tokio::time::timeout(Duration::from_secs(30), response.text())
            .await
            .expect("the endless line was cut off");
        match protocol {
            Protocol::Anthropic => {
                let body = body.expect("stream");
                assert!(body.contains("event: error"), "{body}");
                assert!(body.contains("max_line_bytes"), "{body}");
            }
            Protocol::OpenAi => assert!(body.is_err(), "{body:?}"),
        }
        assert!(
            s.faulty
                .wait_for(Duration::from_secs(10), |f| f.client_closed() == 1)
                .await,
            "relayd closed the upstream connection"
        );
        s.assert_slots_free().await;
    }
}

#[tokio::test]
async fn an_endless_stream_ends_upstream_when_the_client_leaves() {
    for protocol in BOTH {
        let s = setup(Fault::EndlessStream).await;
        let response = s.request(protocol, true).send().await.expect("sent");
        assert_eq!(response.status(), 200);
        let mut body = response.bytes_stream();
        let mut seen = 0;
        while seen < 64 * 1024 {
            seen += body.next().await.expect("more").expect("bytes").len();
        }
        drop(body);
        assert!(
            s.faulty
                .wait_for(Duration::from_secs(10), |f| f.client_closed() == 1)
                .await,
            "the upstream connection was closed after the client left"
        );
        s.assert_slots_free().await;
    }
}

#[tokio::test]
async fn slow_but_steady_bytes_are_not_a_timeout() {
    // One byte every 5 ms: the whole answer takes longer than the 1 s idle timeout, but no gap
    // does.
    for protocol in BOTH {
        for stream in [false, true] {
            let s = setup_with(Fault::SlowBytes(Duration::from_millis(5)), |c| {
                c.timeouts.idle_secs = 1;
            })
            .await;
            let reply = s.send(protocol, stream).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            assert_eq!(reply.headers["x-relay-account"], "faulty");
            assert_eq!(answer_text(protocol, stream, &reply), "ok");
            s.assert_cooling(false).await;
        }
    }
}

#[tokio::test]
async fn a_pooled_connection_closed_under_a_request_is_retried_on_a_new_one() {
    // The server closes every connection at its second request without answering, as a server
    // does when its keep-alive timer fires just as the connection is reused.
    for protocol in BOTH {
        for stream in [false, true] {
            let s = setup(Fault::CloseReused { announce_secs: 0 }).await;
            for round in 0..4 {
                let reply = s.send(protocol, stream).await;
                assert_eq!(reply.status, 200, "round {round}: {}", reply.text);
                assert_eq!(
                    reply.headers["x-relay-account"], "faulty",
                    "round {round}: no failover"
                );
            }
            s.assert_cooling(false).await;
            assert_eq!(s.healthy.requests(), 0);
        }
    }
}

#[tokio::test]
async fn a_short_announced_keep_alive_is_honoured() {
    // `Keep-Alive: timeout=1`: an idle connection may be closed any moment, so relayd keeps none.
    let s = setup(Fault::CloseReused { announce_secs: 1 }).await;
    for _ in 0..3 {
        let reply = s.send(Protocol::OpenAi, false).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    // The first answer taught relayd the timeout; no later request met a closing connection.
    assert_eq!(s.faulty.requests(), 3, "no request needed a second try");
    assert_eq!(s.faulty.connections(), 3);
}

#[tokio::test]
async fn a_refused_proxy_is_named_as_the_proxy() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        addr
    };
    let upstream = FaultUpstream::start(Fault::None).await;
    let app = TestApp::start().await;
    let admin = app.admin();
    admin
        .create_account(&json!({
            "name": "proxied", "endpoint": upstream.endpoint(), "deploymentName": "d",
            "proxy": format!("http://{closed}"), "supportedModels": [MODEL, OPENAI_MODEL]
        }))
        .await;
    let key = admin.create_key(&json!({"name": "k"})).await;
    let reply = send(
        reqwest::Client::new()
            .post(app.url("/v1/messages"))
            .header("x-api-key", &key)
            .json(&json!({"model": MODEL, "max_tokens": 5,
                          "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert_eq!(reply.status, 502, "{}", reply.text);
    let message = reply.json["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("proxy"), "{message}");
    assert_eq!(upstream.requests(), 0);
}
