//! Claude Code itself (the npm package, installed once under the target dir) against relayd: a
//! one-shot `claude -p` session whose model asks for one tool call (Read of a file in the working
//! directory), gets the real file contents back and answers with them. The mock upstream decides
//! by request content rather than order, because Claude Code sends side requests (title
//! generation, small-model calls) whose number and order change between releases.

use std::time::Duration;

use relayd_tests::app::TestApp;
use relayd_tests::mock_upstream::{MockReply, MockUpstream};
use relayd_tests::python::{claude_code, claude_print_command, run_with_timeout};
use serde_json::{Value, json};

const MODEL: &str = "claude-sonnet-4-5-20250929";
const DEPLOYMENT: &str = "upstream-deploy";
/// In the prompt: the request that should trigger the tool call.
const MARKER: &str = "relay-e2e-7731";
/// In the file only: reaching the final answer proves the tool really ran.
const SECRET: &str = "walrus-quartz-5524";

fn chunk(delta: &Value, finish_reason: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-cc", "object": "chat.completion.chunk", "created": 1, "model": DEPLOYMENT,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    })
}

fn usage_chunk() -> Value {
    json!({
        "id": "chatcmpl-cc", "object": "chat.completion.chunk", "created": 1, "model": DEPLOYMENT,
        "choices": [], "usage": {"prompt_tokens": 1200, "completion_tokens": 20, "total_tokens": 1220}
    })
}

/// A text answer, streamed or not as the request asks.
fn text_reply(request: &Value, text: &str) -> MockReply {
    if request["stream"] == true {
        MockReply::sse(&[
            chunk(&json!({"role": "assistant", "content": ""}), None),
            chunk(&json!({"content": text}), None),
            chunk(&json!({}), Some("stop")),
            usage_chunk(),
        ])
    } else {
        MockReply::text(text)
    }
}

/// A `Read` tool call, streamed in fragments or whole.
fn read_call(request: &Value, file_path: &str) -> MockReply {
    let arguments = json!({ "file_path": file_path }).to_string();
    if request["stream"] == true {
        let (head, tail) = arguments.split_at(arguments.len() / 2);
        MockReply::sse(&[
            chunk(&json!({"role": "assistant", "content": null}), None),
            chunk(
                &json!({"tool_calls": [{"index": 0, "id": "call_read_1", "type": "function",
                    "function": {"name": "Read", "arguments": ""}}]}),
                None,
            ),
            chunk(
                &json!({"tool_calls": [{"index": 0, "function": {"arguments": head}}]}),
                None,
            ),
            chunk(
                &json!({"tool_calls": [{"index": 0, "function": {"arguments": tail}}]}),
                None,
            ),
            chunk(&json!({}), Some("tool_calls")),
            usage_chunk(),
        ])
    } else {
        MockReply::Json {
            status: 200,
            body: json!({
                "id": "chatcmpl-cc", "object": "chat.completion", "created": 1, "model": DEPLOYMENT,
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                    "role": "assistant", "content": null,
                    "tool_calls": [{"id": "call_read_1", "type": "function",
                        "function": {"name": "Read", "arguments": arguments}}]}}],
                "usage": {"prompt_tokens": 1200, "completion_tokens": 20, "total_tokens": 1220}
            }),
            headers: Vec::new(),
        }
    }
}

/// The mock's model: after a tool result, report what the tool returned; on the marked prompt
/// with a `Read` tool offered, call it; anything else (side requests) gets a short text.
fn respond(request: &Value, file_path: &str) -> MockReply {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    if let Some(tool) = messages.iter().find(|m| m["role"] == "tool") {
        let answer = if tool["content"].to_string().contains(SECRET) {
            format!("The file says {SECRET}.")
        } else {
            format!(
                "The tool result did not contain the secret: {}",
                tool["content"]
            )
        };
        return text_reply(request, &answer);
    }
    let offers_read = request["tools"]
        .as_array()
        .is_some_and(|tools| tools.iter().any(|t| t["function"]["name"] == "Read"));
    let marked = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .is_some_and(|m| m["content"].to_string().contains(MARKER));
    if offers_read && marked {
        read_call(request, file_path)
    } else {
        text_reply(request, "ok")
    }
}

#[tokio::test]
async fn claude_code_with_auth_token_runs_a_tool_through_relayd() {
    print_mode_session("ANTHROPIC_AUTH_TOKEN").await;
}

#[tokio::test]
async fn claude_code_with_api_key_runs_a_tool_through_relayd() {
    print_mode_session("ANTHROPIC_API_KEY").await;
}

/// One `claude -p` session with the relay key in `key_var` (Bearer for `ANTHROPIC_AUTH_TOKEN`,
/// `x-api-key` for `ANTHROPIC_API_KEY`), asserting it ran the tool and answered with its result.
async fn print_mode_session(key_var: &str) {
    // Blocking (npm on the first run): off the runtime that will serve relayd and the mock.
    let command = tokio::task::spawn_blocking(claude_code)
        .await
        .expect("provision Claude Code");
    let home = tempfile::tempdir().expect("home dir");
    let work = tempfile::tempdir().expect("work dir");
    let note = work.path().join("note.txt");
    std::fs::write(&note, format!("The secret word is {SECRET}.\n")).expect("write note");
    let note_path = note.to_str().expect("UTF-8 temp path").to_owned();

    let mock = MockUpstream::start().await;
    mock.set_responder(move |request| respond(request, &note_path));
    let app = TestApp::start().await;
    app.admin()
        .create_account(&json!({
            "name": "mock", "endpoint": mock.endpoint(), "deploymentName": DEPLOYMENT,
            "supportedModels": [MODEL, "claude-*"]
        }))
        .await;
    let key = app
        .admin()
        .create_key(&json!({"name": "claude-code"}))
        .await;

    let version = run_with_timeout(
        {
            let mut c = tokio::process::Command::new(&command[0]);
            c.args(&command[1..])
                .arg("--version")
                .env("HOME", home.path());
            c
        },
        Duration::from_secs(30),
    )
    .await;
    println!("Claude Code version: {} ({key_var})", version.stdout.trim());

    let cc = claude_print_command(
        &format!("[{MARKER}] Read note.txt and tell me the secret word."),
        MODEL,
        home.path(),
        work.path(),
        &app.url(""),
        (key_var, &key),
    );
    let finished = run_with_timeout(cc, Duration::from_secs(120)).await;

    let requests = mock.requests();
    let bodies: Vec<Value> = requests
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .map(|r| r.json())
        .collect();
    for body in &bodies {
        let messages = body["messages"].as_array().map_or(0, Vec::len);
        let tools = body["tools"].as_array().map_or(0, Vec::len);
        println!(
            "upstream request: stream={} messages={messages} tools={tools}",
            body["stream"]
        );
    }
    let context = || {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}\nupstream requests: {}",
            finished.code,
            finished.stdout,
            finished.stderr,
            bodies.len()
        )
    };
    assert_eq!(finished.code, Some(0), "{}", context());
    let result: Value = serde_json::from_str(finished.stdout.trim())
        .unwrap_or_else(|e| panic!("output is not JSON ({e})\n{}", context()));
    assert_eq!(result["is_error"], false, "{}", context());
    assert!(
        result["result"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("The file says {SECRET}."))),
        "{}",
        context()
    );
    assert!(
        bodies.iter().all(|b| b["model"] == DEPLOYMENT),
        "{}",
        context()
    );
    for request in requests
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
    {
        let leaked: Vec<&str> = ["anthropic-beta", "anthropic-version", "x-api-key"]
            .into_iter()
            .filter(|h| request.headers.contains_key(*h))
            .collect();
        assert!(
            leaked.is_empty(),
            "client headers forwarded upstream: {leaked:?}"
        );
        let authorization = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            !authorization.contains(&key),
            "the relay key was forwarded upstream"
        );
    }
    let tool_message = bodies
        .iter()
        .flat_map(|b| b["messages"].as_array().cloned().unwrap_or_default())
        .find(|m| m["role"] == "tool")
        .unwrap_or_else(|| panic!("no role:tool message reached the upstream\n{}", context()));
    assert_eq!(
        tool_message["tool_call_id"], "call_read_1",
        "{tool_message}"
    );
}
