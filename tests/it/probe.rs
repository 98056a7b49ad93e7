//! The capability probe against each server family's documented surfaces (one fixture per
//! family, `tests/fixtures/families/`), against endpoints that are dead, hang or answer garbage,
//! and against a real llama.cpp server, where the upstream tokenizer must count exactly what
//! the server itself counts for Claude Code's requests.

use std::time::{Duration, Instant};

use relayd::accounts::LiveAccount;
use relayd::config::{Timeouts, UpstreamConfig};
use relayd::upstream::Upstreams;
use relayd::upstream::probe::{Budgets, probe, probe_within};
use relayd_tests::family_mock::{FAMILIES, FamilyMock, fixture_path};
use relayd_tests::llama_server::{LlamaServer, MODEL};
use serde_json::{Value, json};
use shared::account::{AccountId, AccountInput, AccountKind};
use shared::profile::{Profile, ServerFamily, Tokenizer};

/// The longest a probe may take against an endpoint that never answers, with slack for a
/// machine busy with parallel builds.
const PROBE_DEADLINE: Duration = Duration::from_secs(30);

fn upstreams() -> Upstreams {
    Upstreams::new(Timeouts::default(), UpstreamConfig::default(), 0)
}

fn account(endpoint: &str, deployment: &str, kind: Option<AccountKind>) -> LiveAccount {
    let input = AccountInput {
        name: "probed".to_owned(),
        endpoint: endpoint.to_owned(),
        deployment_name: deployment.to_owned(),
        api_key: Some("unused".to_owned()),
        kind,
        ..AccountInput::default()
    };
    let (settings, secrets) = input.validate().expect("valid account");
    LiveAccount::new(AccountId("a1".to_owned()), settings, secrets, (0, 0), None)
}

/// Probes, failing the test when the probe outlives [`PROBE_DEADLINE`].
async fn probed(account: &LiveAccount) -> (Profile, Duration) {
    let upstreams = upstreams();
    let started = Instant::now();
    let profile = tokio::time::timeout(PROBE_DEADLINE, probe(&upstreams, account))
        .await
        .expect("the probe finishes within its bound");
    (profile, started.elapsed())
}

#[tokio::test]
async fn every_family_is_recognised_from_its_own_surfaces() {
    for family in FAMILIES {
        let mock = FamilyMock::start(family).await;
        let account = account(&format!("{}/v1", mock.url()), &mock.deployment(), None);
        let (profile, _) = probed(&account).await;
        let found = serde_json::to_value(&profile).expect("profile as JSON");
        let expected = mock.expected().as_object().expect("expect block");
        for (key, want) in expected {
            assert_eq!(&found[key], want, "{family}: {key}\nprofile: {found:#}");
        }
    }
}

#[tokio::test]
async fn the_probe_reaches_the_root_with_or_without_v1() {
    let mock = FamilyMock::start("vllm").await;
    let (profile, _) = probed(&account(&mock.url(), &mock.deployment(), None)).await;
    assert_eq!(profile.family, ServerFamily::Vllm);
    assert_eq!(profile.context_window, Some(32768));
}

#[tokio::test]
async fn an_anthropic_only_account_is_asked_no_chat_completions() {
    let mock = FamilyMock::serve(json!({
        "deployment": "glm-4.6",
        "routes": {
            "POST /v1/messages": {"status": 200, "body": {"type": "message", "content": [{"type": "text", "text": "OK"}]}},
            "POST /v1/messages stream": {"status": 200, "sse": [
                {"type": "message_start", "message": {"type": "message", "content": []}},
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                {"type": "message_stop"}
            ]},
            "POST /v1/messages/count_tokens": {"status": 200, "body": {"input_tokens": 12}},
        }
    }))
    .await;
    let (profile, _) = probed(&account(
        &mock.url(),
        "glm-4.6",
        Some(AccountKind::Anthropic),
    ))
    .await;
    assert_eq!(profile.family, ServerFamily::AnthropicCompatible);
    assert_eq!(profile.tokenizer, Some(Tokenizer::AnthropicCountTokens));
    assert_eq!(profile.native_messages, Some(true));
    // The stream ignored the forced tool: no tool_use came back.
    assert_eq!(profile.native_streamed_tool_calls, Some(false));
    assert_eq!(profile.tool_calls, None);
    assert_eq!(profile.context_window, None);
    assert!(
        profile
            .notes
            .iter()
            .any(|n| n.starts_with("context window unknown")),
        "{:#?}",
        profile.notes
    );
}

/// SGLang's fixture, optionally serving the native Messages API with `count_tokens`.
fn sglang_fixture(native: bool) -> Value {
    let text = std::fs::read_to_string(fixture_path("sglang")).expect("sglang fixture");
    let mut fixture: Value = serde_json::from_str(&text).expect("sglang fixture is JSON");
    if native {
        let routes = fixture["routes"].as_object_mut().expect("routes");
        routes.insert(
            "POST /v1/messages".to_owned(),
            json!({"status": 200, "body":
            {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "OK"}]}}),
        );
        routes.insert(
            "POST /v1/messages/count_tokens".to_owned(),
            json!({"status": 200, "body": {"input_tokens": 9}}),
        );
    }
    fixture
}

#[tokio::test]
async fn sglang_counts_with_count_tokens_where_served_and_never_with_a_chat_tokenize() {
    // The fixture's /tokenize answers like SGLang's: a prompt is counted, a chat request is a
    // validation error.
    let mock = FamilyMock::serve(sglang_fixture(false)).await;
    let client = reqwest::Client::new();
    let tokenize = format!("{}/tokenize", mock.url());
    let chat = client
        .post(&tokenize)
        .json(&json!({"model": mock.deployment(), "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .expect("tokenize answers");
    assert_eq!(chat.status(), 400);
    let prompt = client
        .post(&tokenize)
        .json(&json!({"model": mock.deployment(), "prompt": "Hi"}))
        .send()
        .await
        .expect("tokenize answers");
    assert_eq!(prompt.status(), 200);

    let endpoint = format!("{}/v1", mock.url());
    let (profile, _) = probed(&account(&endpoint, &mock.deployment(), None)).await;
    assert_eq!(profile.family, ServerFamily::Sglang);
    assert_eq!(profile.native_messages, Some(false), "{profile:#?}");
    assert_eq!(profile.tokenizer, None, "{profile:#?}");

    let native = FamilyMock::serve(sglang_fixture(true)).await;
    let endpoint = format!("{}/v1", native.url());
    let (profile, _) = probed(&account(&endpoint, &native.deployment(), None)).await;
    assert_eq!(profile.family, ServerFamily::Sglang);
    assert_eq!(profile.native_messages, Some(true), "{profile:#?}");
    assert_eq!(
        profile.tokenizer,
        Some(Tokenizer::AnthropicCountTokens),
        "{profile:#?}"
    );
}

#[tokio::test]
async fn a_dead_endpoint_gives_a_note_at_once() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let (profile, took) = probed(&account(&format!("http://127.0.0.1:{port}/v1"), "m", None)).await;
    assert_eq!(profile.family, ServerFamily::Unknown);
    assert_eq!(profile.context_window, None);
    assert_eq!(profile.native_messages, None);
    assert_eq!(profile.tool_calls, None);
    assert_eq!(profile.notes.len(), 1, "{:#?}", profile.notes);
    assert!(
        profile.notes[0].contains("did not answer"),
        "{:#?}",
        profile.notes
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test]
async fn an_endpoint_that_never_answers_is_given_up_on_after_the_family_questions() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Accepts and holds every connection, answering nothing.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let (profile, took) = probed(&account(&format!("http://127.0.0.1:{port}/v1"), "m", None)).await;
    holder.abort();
    assert_eq!(profile.family, ServerFamily::Unknown);
    assert!(
        profile.notes[0].contains("did not answer"),
        "{:#?}",
        profile.notes
    );
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}: only the family questions should have waited"
    );
}

#[tokio::test]
async fn garbage_answers_give_notes_and_nothing_detected() {
    let mock = FamilyMock::serve(json!({
        "routes": {"*": {"status": 200, "text": "<html><body>It works!</body></html>"}}
    }))
    .await;
    let (profile, _) = probed(&account(&format!("{}/v1", mock.url()), "m", None)).await;
    assert_eq!(profile.family, ServerFamily::Unknown);
    assert_eq!(profile.version, None);
    assert_eq!(profile.context_window, None);
    assert_eq!(profile.tokenizer, None);
    assert_eq!(profile.tool_calls, None);
    assert_eq!(profile.streamed_tool_calls, None);
    for expected in [
        "no server family",
        "context window unknown",
        "tokenizer unknown",
    ] {
        assert!(
            profile.notes.iter().any(|n| n.contains(expected)),
            "no note with {expected:?}: {:#?}",
            profile.notes
        );
    }
}

#[tokio::test]
async fn error_statuses_are_refusals_with_notes() {
    let mock = FamilyMock::serve(json!({
        "routes": {
            "GET /version": {"status": 200, "body": {"version": "0.8.5"}},
            "GET /v1/models": {"status": 200, "body": {"object": "list", "data": []}},
            "*": {"status": 400, "body": {"object": "error", "message": "unsupported", "type": "BadRequestError", "code": 400}}
        }
    }))
    .await;
    let (profile, _) = probed(&account(&format!("{}/v1", mock.url()), "m", None)).await;
    assert_eq!(profile.family, ServerFamily::Vllm);
    assert_eq!(profile.version.as_deref(), Some("0.8.5"));
    assert_eq!(profile.context_window, None);
    assert_eq!(profile.tool_calls, Some(false));
    assert_eq!(profile.max_completion_tokens, Some(false));
    assert!(
        profile
            .notes
            .iter()
            .any(|n| n.contains("a forced tool call was refused: HTTP 400")),
        "{:#?}",
        profile.notes
    );
}

async fn start_llama(ctx: u32) -> LlamaServer {
    tokio::task::spawn_blocking(move || LlamaServer::start(ctx))
        .await
        .expect("llama-server start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_llama_server_is_probed_as_it_is() {
    let server = start_llama(4096).await;
    let account = account(&format!("{}/v1", server.url()), MODEL, None);
    // Generous budgets: a 270M model on two cores busy with parallel builds is slow, and
    // slowness is not what this test is about.
    let budgets = Budgets {
        info: Duration::from_secs(60),
        generation: Duration::from_secs(120),
        total: Duration::from_secs(600),
    };
    let profile = probe_within(&upstreams(), &account, budgets).await;
    let log = || server.log();
    assert_eq!(profile.family, ServerFamily::LlamaCpp, "{profile:#?}");
    assert!(profile.version.is_some(), "{profile:#?}");
    assert_eq!(profile.context_window, Some(4096), "{profile:#?}");
    assert_eq!(profile.tokenizer, Some(Tokenizer::LlamaCpp), "{profile:#?}");
    assert_eq!(
        profile.native_messages,
        Some(true),
        "{profile:#?}\n{}",
        log()
    );
    // gemma-3 270M under its template makes no tool calls, natively or not.
    assert_eq!(
        profile.native_streamed_tool_calls,
        Some(false),
        "{profile:#?}"
    );
    assert_eq!(profile.tool_calls, Some(false), "{profile:#?}");
    assert_eq!(profile.streamed_tool_calls, Some(false), "{profile:#?}");
    assert_eq!(profile.stream_usage, Some(true), "{profile:#?}");
    assert_eq!(profile.max_completion_tokens, Some(true), "{profile:#?}");
}

/// The request of each Claude Code fixture (under `body`), as bytes.
fn claude_code_requests() -> Vec<(String, Vec<u8>)> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/claude-code");
    let mut requests: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("fixture");
            let fixture: Value = serde_json::from_str(&text).expect("fixture JSON");
            let body = serde_json::to_vec(&fixture["body"]).expect("body");
            (path.display().to_string(), body)
        })
        .collect();
    requests.sort();
    requests
}

/// The translation relayd's window check hands the tokenizer.
fn to_chat(account: &LiveAccount) -> impl Fn(&[u8]) -> Result<Vec<u8>, String> + '_ {
    use relayd::translate::{AnthropicRequest, ReasoningMode, UpstreamOptions};
    move |body: &[u8]| {
        let options = UpstreamOptions {
            deployment: &account.settings.deployment_name,
            max_output_tokens: None,
            use_max_completion_tokens: false,
            reasoning: ReasoningMode::Drop,
            send_reasoning_content: account.settings.send_reasoning_content,
        };
        AnthropicRequest::parse(body)
            .and_then(|request| request.to_openai(&options))
            .map(|(chat, _)| chat)
            .map_err(|e| e.to_string())
    }
}

/// The server's own count, by hand: its template renders the messages and tools, its tokenizer
/// counts the prompt with the BOS token it adds when generating.
async fn counted_by_hand(server: &LlamaServer, chat: &[u8]) -> u64 {
    let chat: Value = serde_json::from_slice(chat).expect("chat body");
    let client = reqwest::Client::new();
    let rendered: Value = client
        .post(format!("{}/apply-template", server.url()))
        .json(&json!({"messages": chat["messages"], "tools": chat["tools"]}))
        .send()
        .await
        .expect("apply-template")
        .json()
        .await
        .expect("apply-template JSON");
    let prompt = rendered["prompt"].as_str().expect("prompt");
    assert!(!prompt.is_empty());
    let tokens: Value = client
        .post(format!("{}/tokenize", server.url()))
        .json(&json!({"content": prompt, "add_special": true}))
        .send()
        .await
        .expect("tokenize")
        .json()
        .await
        .expect("tokenize JSON");
    tokens["tokens"].as_array().expect("tokens").len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_equals_the_llama_servers_own_count_on_claude_codes_requests() {
    use relayd::upstream::tokenize::count_tokens;
    let server = start_llama(4096).await;
    let account = account(&format!("{}/v1", server.url()), MODEL, None);
    let upstreams = upstreams();
    let requests = claude_code_requests();
    assert!(requests.len() >= 6, "{} fixtures", requests.len());
    for (name, body) in &requests {
        let counted = count_tokens(
            &upstreams,
            &account,
            Tokenizer::LlamaCpp,
            body,
            to_chat(&account),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}\n{}", server.log()));
        let chat = to_chat(&account)(body).expect("translated");
        let by_hand = counted_by_hand(&server, &chat).await;
        assert_eq!(counted, by_hand, "{name}");
        // The server's native count of the Anthropic request renders the same prompt but for
        // Claude Code's billing-header line, which the translation drops (about 30 tokens).
        let native = count_tokens(
            &upstreams,
            &account,
            Tokenizer::AnthropicCountTokens,
            body,
            to_chat(&account),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            native >= counted && native - counted <= 40,
            "{name}: native {native}, translated {counted}"
        );
        // Far beyond this 4k window, and far below the local estimate of tool-heavy requests.
        assert!(counted > 100, "{name}: {counted}");
    }
}
