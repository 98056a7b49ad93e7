//! `POST /admin/v1/test-endpoint`: checks that an upstream works for relay traffic — a saved
//! account, or settings not saved yet — and says what to fix when it does not.
//!
//! The checks go through [`Upstreams`], the same pooled clients, proxy, URL shapes and auth
//! headers as real traffic, so a pass means the relay itself can use the upstream. They run one
//! after another (so the latency figures are not skewed by our own concurrent requests), each
//! bounded by its own timeout:
//!
//! 1. `reachable` — `GET /models` is answered at all (any HTTP status counts);
//! 2. `model_listed` — that answer lists the deployment. Azure: not applicable (its `/models`
//!    lists base models, not deployments; the chat check proves the deployment exists), reported
//!    as passed and skipped;
//! 3. `chat` — a tiny non-streaming chat returns a choice;
//! 4. `stream` — a streaming chat yields chunks and ends with `[DONE]` or a `finish_reason`;
//! 5. `tool_call` — a call forcing the `get_weather` function comes back as `tool_calls` with
//!    JSON-object arguments;
//! 6. `latency` — figures from the streaming chat: time to first body byte, total time, output
//!    tokens per second (usage when the upstream sends it, else one token per content chunk).
//!
//! When the endpoint is unreachable the later checks are reported as failed and skipped: they
//! would all fail with the same cause. The API key (and proxy credentials) never appear in the
//! report or the log: every text taken from the upstream is scrubbed of them.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use shared::account::{
    AccountId, AccountInput, AccountKind, link_local_errors, redact_url, validate_endpoint,
    validate_proxy,
};
use shared::admin::{
    CheckResult, LatencyFigures, TestEndpointReport, TestEndpointRequest, TestTarget,
};
use shared::error::FieldError;

use crate::accounts::LiveAccount;
use crate::error::{AdminApiError, ApiError};
use crate::extract::AdminJson;
use crate::proxy::upstream::{UpstreamError, Upstreams};
use crate::state::AppState;
use crate::translate::SseDecoder;

/// Default bound on each chat check.
const DEFAULT_CHAT_TIMEOUT_SECS: u64 = 60;
/// Default bound on the reachability check.
const DEFAULT_REACH_TIMEOUT_SECS: u64 = 10;
/// Largest timeout a request may ask for.
const MAX_TIMEOUT_SECS: u64 = 600;
/// Name used for unsaved settings given without one (validation needs a name).
const UNSAVED_NAME: &str = "unsaved settings";
/// The function the tool-call check forces.
const TOOL_NAME: &str = "get_weather";
/// Served model names shown in a hint, at most.
const MAX_LISTED: usize = 10;

/// The handler.
pub(super) async fn test_endpoint(
    State(state): State<AppState>,
    AdminJson(request): AdminJson<TestEndpointRequest>,
) -> Result<Json<TestEndpointReport>, AdminApiError> {
    let limits = Limits::of(&request)?;
    let (account, target) = resolve(&state, request)?;
    let report = Checker::new(&state.upstreams, &account, limits)
        .run(target)
        .await;
    let failed = report.failed_checks();
    tracing::info!(
        account = %account.settings.name,
        endpoint = %account.settings.endpoint,
        ok = report.ok,
        failed = ?failed,
        "endpoint tested"
    );
    Ok(Json(report))
}

/// The timeouts of one test.
#[derive(Debug, Clone, Copy)]
struct Limits {
    chat: Duration,
    reach: Duration,
}

impl Limits {
    fn of(request: &TestEndpointRequest) -> Result<Self, ApiError> {
        let mut errors = Vec::new();
        let mut secs = |value: Option<u64>, default: u64, field: &str| match value {
            None => Duration::from_secs(default),
            Some(s) if (1..=MAX_TIMEOUT_SECS).contains(&s) => Duration::from_secs(s),
            Some(s) => {
                errors.push(field_error(
                    field,
                    format!("must be between 1 and {MAX_TIMEOUT_SECS} seconds, got {s}"),
                ));
                Duration::from_secs(default)
            }
        };
        let limits = Self {
            chat: secs(
                request.timeout_secs,
                DEFAULT_CHAT_TIMEOUT_SECS,
                "timeoutSecs",
            ),
            reach: secs(
                request.reachability_timeout_secs,
                DEFAULT_REACH_TIMEOUT_SECS,
                "reachabilityTimeoutSecs",
            ),
        };
        if errors.is_empty() {
            Ok(limits)
        } else {
            Err(ApiError::fields(errors))
        }
    }
}

fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        row: None,
        name: None,
        field: Some(field.to_owned()),
        message: message.into(),
    }
}

/// The account to test: a saved one, or unsaved settings validated like a new account.
fn resolve(
    state: &AppState,
    request: TestEndpointRequest,
) -> Result<(std::sync::Arc<LiveAccount>, TestTarget), ApiError> {
    let settings_given = [
        ("name", request.name.is_some()),
        ("endpoint", request.endpoint.is_some()),
        ("deploymentName", request.deployment_name.is_some()),
        ("apiKey", request.api_key.is_some()),
        ("kind", request.kind.is_some()),
        ("apiVersion", request.api_version.is_some()),
        ("proxy", request.proxy.is_some()),
    ];
    if let Some(id) = &request.account {
        if let Some((field, _)) = settings_given.iter().find(|(_, given)| *given) {
            return Err(ApiError::fields(vec![field_error(
                field,
                "give either `account` (a saved account) or unsaved settings, not both",
            )]));
        }
        let snapshot = state.accounts.snapshot();
        let account = snapshot
            .find(id)
            .ok_or_else(|| ApiError::not_found(format!("no account with id or name {id:?}")))?;
        // Also for an account saved before the address policy existed: the report shows what
        // the upstream answered, which for a metadata address would be the host's credentials.
        refuse_link_local(state, account)?;
        let target = target_of(account, true);
        return Ok((std::sync::Arc::clone(account), target));
    }
    if request.endpoint.is_none() && request.deployment_name.is_none() {
        return Err(ApiError::fields(vec![
            field_error(
                "endpoint",
                "required unless `account` names a saved account",
            ),
            field_error(
                "deploymentName",
                "required unless `account` names a saved account",
            ),
        ]));
    }
    let named = request.name.is_some();
    let input = AccountInput {
        name: request.name.unwrap_or_else(|| UNSAVED_NAME.to_owned()),
        endpoint: request.endpoint.unwrap_or_default(),
        deployment_name: request.deployment_name.unwrap_or_default(),
        api_key: request.api_key,
        kind: request.kind,
        api_version: request.api_version,
        proxy: request.proxy,
        ..AccountInput::default()
    };
    let (settings, secrets) = input.validate().map_err(ApiError::fields)?;
    let account = LiveAccount {
        id: AccountId(String::new()),
        settings,
        secrets,
        created_at: 0,
        updated_at: 0,
    };
    refuse_link_local(state, &account)?;
    let target = target_of(&account, named);
    Ok((std::sync::Arc::new(account), target))
}

/// The address policy (`allow_link_local_endpoints`), checked before any request is sent.
fn refuse_link_local(state: &AppState, account: &LiveAccount) -> Result<(), ApiError> {
    if state.config.allow_link_local_endpoints {
        return Ok(());
    }
    let refused = link_local_errors(&account.settings, &account.secrets, None);
    if refused.is_empty() {
        Ok(())
    } else {
        Err(ApiError::fields(refused))
    }
}

fn target_of(account: &LiveAccount, named: bool) -> TestTarget {
    TestTarget {
        id: Some(account.id.clone()).filter(|id| !id.as_str().is_empty()),
        name: named.then(|| account.settings.name.clone()),
        kind: account.settings.kind,
        endpoint: account.settings.endpoint.clone(),
        deployment_name: account.settings.deployment_name.clone(),
        api_key_set: account.secrets.api_key.is_some(),
        proxy: account.secrets.proxy.as_deref().map(redact_url),
    }
}

/// Which request a failure came from; hints differ slightly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Models,
    Chat,
    Stream,
    Tool,
}

/// A failed check: what was seen and the likely fix.
#[derive(Debug)]
struct Failure {
    detail: String,
    hint: Option<String>,
}

impl Failure {
    fn new(detail: impl Into<String>, hint: Option<String>) -> Self {
        Self {
            detail: detail.into(),
            hint,
        }
    }
}

/// What the streaming chat measured.
#[derive(Debug)]
struct Streamed {
    detail: String,
    figures: LatencyFigures,
    usage_given: bool,
}

/// Runs the checks against one account.
struct Checker<'a> {
    upstreams: &'a Upstreams,
    account: &'a LiveAccount,
    limits: Limits,
    checks: Vec<CheckResult>,
    /// Model ids `GET /models` listed, for the "set deploymentName to one of them" hint.
    listed: Option<Vec<String>>,
}

impl<'a> Checker<'a> {
    fn new(upstreams: &'a Upstreams, account: &'a LiveAccount, limits: Limits) -> Self {
        Self {
            upstreams,
            account,
            limits,
            checks: Vec::with_capacity(6),
            listed: None,
        }
    }

    async fn run(mut self, target: TestTarget) -> TestEndpointReport {
        let reachable = self.reachable_and_listed().await;
        let mut latency = None;
        if reachable {
            let started = Instant::now();
            let chat = self.bounded(Stage::Chat, self.chat()).await;
            self.record("chat", started, chat);

            let started = Instant::now();
            let streamed = self.bounded(Stage::Stream, self.stream()).await;
            let (stream_result, figures) = match streamed {
                Ok(s) => (Ok(s.detail), Some((s.figures, s.usage_given))),
                Err(f) => (Err(f), None),
            };
            self.record("stream", started, stream_result);

            let started = Instant::now();
            let tool = self.bounded(Stage::Tool, self.tool_call()).await;
            self.record("tool_call", started, tool);

            match figures {
                Some((figures, usage_given)) => {
                    self.checks.push(CheckResult {
                        name: "latency".to_owned(),
                        ok: true,
                        detail: latency_text(&figures, usage_given),
                        hint: None,
                        skipped: false,
                        millis: figures.total_millis,
                    });
                    latency = Some(figures);
                }
                None => self.skip("latency", false, "no figures: the streaming check failed"),
            }
        } else {
            for name in ["chat", "stream", "tool_call", "latency"] {
                self.skip(name, false, "skipped: the endpoint is not reachable");
            }
        }
        let ok = self.checks.iter().all(|c| c.ok);
        TestEndpointReport {
            target,
            checks: self.checks,
            latency,
            ok,
        }
    }

    /// `reachable` and `model_listed`, from one `GET /models`. Returns whether the rest can run.
    async fn reachable_and_listed(&mut self) -> bool {
        let started = Instant::now();
        let answer = tokio::time::timeout(self.limits.reach, async {
            let response = self.upstreams.models(self.account).await?;
            // The list is small; read it under the same bound.
            let bytes = response
                .bytes()
                .await
                .map_err(|e| UpstreamError::Transport(e.to_string()))?;
            Ok::<_, UpstreamError>(bytes)
        })
        .await;
        let answer = match answer {
            Err(_) => {
                let failure = Failure::new(
                    format!(
                        "GET /models: no answer within {}s",
                        self.limits.reach.as_secs()
                    ),
                    Some(format!(
                        "{}; or raise the bound with reachabilityTimeoutSecs",
                        self.listening_hint()
                    )),
                );
                self.record("reachable", started, Err(failure));
                self.skip(
                    "model_listed",
                    false,
                    "skipped: the endpoint is not reachable",
                );
                return false;
            }
            Ok(answer) => answer,
        };
        let is_azure = self.account.settings.kind == AccountKind::Azure;
        match answer {
            Ok(bytes) => {
                self.record(
                    "reachable",
                    started,
                    Ok("GET /models answered HTTP 200".to_owned()),
                );
                if is_azure {
                    self.skip_azure_listing();
                } else {
                    let listed = self.model_listed(&bytes);
                    self.record("model_listed", started, listed);
                }
                true
            }
            Err(UpstreamError::Status { status, body, .. }) => {
                self.record(
                    "reachable",
                    started,
                    Ok(format!("GET /models answered HTTP {status}")),
                );
                if is_azure {
                    self.skip_azure_listing();
                } else {
                    let error = UpstreamError::Status {
                        status,
                        retry_after: None,
                        body,
                    };
                    let failure = self.failure(Stage::Models, &error);
                    self.record("model_listed", started, Err(failure));
                }
                true
            }
            Err(error) => {
                let failure = self.failure(Stage::Models, &error);
                self.record("reachable", started, Err(failure));
                self.skip(
                    "model_listed",
                    false,
                    "skipped: the endpoint is not reachable",
                );
                false
            }
        }
    }

    fn skip_azure_listing(&mut self) {
        self.skip(
            "model_listed",
            true,
            "not applicable to Azure: its /models lists base models, not deployments \
             (the chat check proves the deployment exists)",
        );
    }

    fn model_listed(&mut self, bytes: &[u8]) -> Result<String, Failure> {
        let deployment = &self.account.settings.deployment_name;
        let ids: Option<Vec<String>> = serde_json::from_slice::<Value>(bytes).ok().and_then(|v| {
            v.get("data")?.as_array().map(|data| {
                data.iter()
                    .filter_map(|m| m.get("id")?.as_str().map(str::to_owned))
                    .collect()
            })
        });
        let Some(ids) = ids else {
            return Err(Failure::new(
                format!(
                    "GET /models answered, but not with an OpenAI model list: {}",
                    self.scrub(&snippet(bytes))
                ),
                Some(self.v1_hint().unwrap_or_else(|| {
                    "the endpoint should be an OpenAI-compatible API base URL".to_owned()
                })),
            ));
        };
        self.listed = Some(ids.clone());
        if ids.iter().any(|id| id == deployment) {
            Ok(format!(
                "{deployment} is listed ({} model{} served)",
                ids.len(),
                if ids.len() == 1 { "" } else { "s" }
            ))
        } else {
            Err(Failure::new(
                format!("{deployment} is not among the served models"),
                Some(self.model_hint()),
            ))
        }
    }

    /// A tiny non-streaming chat.
    async fn chat(&self) -> Result<String, Failure> {
        let body = json!({
            "model": self.account.settings.deployment_name,
            "messages": [{"role": "user", "content": "Reply with the single word: pong"}],
            "max_tokens": 16,
            "temperature": 0,
            "stream": false,
        });
        let answer = self.post_json(Stage::Chat, &body).await?;
        let choice = answer
            .get("choices")
            .and_then(|c| c.get(0))
            .filter(|c| c.get("message").is_some())
            .ok_or_else(|| {
                Failure::new(
                    format!(
                        "the answer has no choices[0].message: {}",
                        self.scrub(&snippet(answer.to_string().as_bytes()))
                    ),
                    Some("the server is not OpenAI-compatible at this URL".to_owned()),
                )
            })?;
        let message = &choice["message"];
        let content = message["content"].as_str().unwrap_or_default().trim();
        let finish = choice["finish_reason"].as_str().unwrap_or("none");
        let tokens = answer["usage"]["completion_tokens"]
            .as_u64()
            .map(|n| format!(", {n} tokens"))
            .unwrap_or_default();
        let said = if content.is_empty() {
            if message.get("reasoning_content").is_some() || message.get("reasoning").is_some() {
                "answered with reasoning only".to_owned()
            } else {
                "answered with empty content".to_owned()
            }
        } else {
            format!("answered {:?}", truncate(content, 60))
        };
        Ok(format!("{said} (finish_reason {finish}{tokens})"))
    }

    /// A streaming chat: chunks arrive and the stream ends properly. Also measures latency.
    async fn stream(&self) -> Result<Streamed, Failure> {
        let body = json!({
            "model": self.account.settings.deployment_name,
            "messages": [{"role": "user", "content": "Count from 1 to 20, separated by spaces."}],
            "max_tokens": 64,
            "temperature": 0,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let started = Instant::now();
        let response = self
            .upstreams
            .chat(self.account, Bytes::from(body.to_string()))
            .await
            .map_err(|e| self.failure(Stage::Stream, &e))?;
        let content_type = response
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if !content_type.starts_with("text/event-stream") {
            return Err(Failure::new(
                format!(
                    "asked to stream, the server answered {}",
                    if content_type.is_empty() {
                        "without a content type"
                    } else {
                        content_type.as_str()
                    }
                ),
                Some(
                    "the server does not stream at this URL: use an OpenAI-compatible server \
                     (vLLM, SGLang, llama.cpp server) and check any proxy in between"
                        .to_owned(),
                ),
            ));
        }
        let mut decoder = SseDecoder::new();
        let mut first_byte = None;
        let mut chunks = 0_u64;
        let mut content_chunks = 0_u64;
        let mut done = false;
        let mut finish_reason: Option<String> = None;
        let mut usage_tokens: Option<u64> = None;
        let mut body = response.bytes_stream();
        let mut ended = false;
        while !ended {
            let next = body.next().await;
            match next {
                Some(Ok(bytes)) => {
                    first_byte.get_or_insert_with(|| started.elapsed());
                    decoder.push(&bytes);
                }
                Some(Err(e)) => {
                    return Err(Failure::new(
                        format!(
                            "the stream broke after {chunks} chunks: {}",
                            self.scrub(&e.to_string())
                        ),
                        Some(
                            "the server or a proxy in between cut the stream: check their \
                             timeouts and logs"
                                .to_owned(),
                        ),
                    ));
                }
                None => {
                    decoder.finish();
                    ended = true;
                }
            }
            while let Some(event) = decoder.next_event() {
                let data = event.data.trim();
                if data == "[DONE]" {
                    done = true;
                    continue;
                }
                let Ok(chunk) = serde_json::from_str::<Value>(data) else {
                    continue;
                };
                if let Some(error) = chunk.get("error") {
                    return Err(Failure::new(
                        format!(
                            "the stream carried an error: {}",
                            self.scrub(&truncate(&error.to_string(), 200))
                        ),
                        Some("see the server's log".to_owned()),
                    ));
                }
                chunks += 1;
                if let Some(n) = chunk["usage"]["completion_tokens"].as_u64() {
                    usage_tokens = Some(n);
                }
                let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else {
                    continue;
                };
                let delta = &choice["delta"];
                let has_text = ["content", "reasoning_content", "reasoning"]
                    .iter()
                    .any(|k| delta[*k].as_str().is_some_and(|s| !s.is_empty()));
                if has_text {
                    content_chunks += 1;
                }
                if let Some(reason) = choice["finish_reason"].as_str() {
                    finish_reason = Some(reason.to_owned());
                }
            }
        }
        let total = started.elapsed();
        if chunks == 0 {
            return Err(Failure::new(
                "the stream ended without any chunk",
                Some("see the server's log".to_owned()),
            ));
        }
        let ending = match (&finish_reason, done) {
            (_, true) => "[DONE]".to_owned(),
            (Some(reason), false) => format!("finish_reason {reason}"),
            (None, false) => {
                return Err(Failure::new(
                    format!(
                        "the stream stopped after {chunks} chunks without [DONE] or a finish_reason"
                    ),
                    Some(
                        "the server or a proxy in between cut the stream: check their timeouts"
                            .to_owned(),
                    ),
                ));
            }
        };
        let first_byte = first_byte.unwrap_or(total);
        let output_tokens = usage_tokens.unwrap_or(content_chunks);
        let window = total.saturating_sub(first_byte).as_secs_f64();
        let window = if window > 0.0 {
            window
        } else {
            total.as_secs_f64().max(0.001)
        };
        #[expect(
            clippy::cast_precision_loss,
            reason = "token counts are far below 2^52"
        )]
        let tokens_per_second = (output_tokens as f64 / window * 10.0).round() / 10.0;
        Ok(Streamed {
            detail: format!("{chunks} chunks, ended with {ending}"),
            figures: LatencyFigures {
                first_byte_millis: millis(first_byte),
                total_millis: millis(total),
                output_tokens,
                tokens_estimated: usage_tokens.is_none(),
                tokens_per_second,
            },
            usage_given: usage_tokens.is_some(),
        })
    }

    /// A chat forcing the `get_weather` function: it must come back as a tool call.
    async fn tool_call(&self) -> Result<String, Failure> {
        let body = json!({
            "model": self.account.settings.deployment_name,
            "messages": [{"role": "user", "content": "What is the weather in Paris right now? Use the get_weather tool."}],
            "tools": [{
                "type": "function",
                "function": {
                    "name": TOOL_NAME,
                    "description": "Get the current weather in a city.",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string", "description": "City name"}},
                        "required": ["city"],
                    },
                },
            }],
            "tool_choice": {"type": "function", "function": {"name": TOOL_NAME}},
            "max_tokens": 128,
            "temperature": 0,
            "stream": false,
        });
        let answer = self.post_json(Stage::Tool, &body).await?;
        let message = &answer["choices"][0]["message"];
        let Some(call) = message["tool_calls"].as_array().and_then(|c| c.first()) else {
            let content = message["content"].as_str().unwrap_or_default().trim();
            let detail = if content.is_empty() {
                "no tool_calls in the answer".to_owned()
            } else {
                format!(
                    "no tool_calls; the model answered with text: {:?}",
                    self.scrub(&truncate(content, 80))
                )
            };
            return Err(Failure::new(detail, Some(tool_parser_hint())));
        };
        let name = call["function"]["name"].as_str().unwrap_or_default();
        let arguments = call["function"]["arguments"].as_str().unwrap_or_default();
        match serde_json::from_str::<Value>(arguments) {
            Ok(Value::Object(_)) => Ok(format!("{name}({})", self.scrub(&truncate(arguments, 80)))),
            _ => Err(Failure::new(
                format!(
                    "{name} came back, but its arguments are not a JSON object: {:?}",
                    self.scrub(&truncate(arguments, 80))
                ),
                Some(format!(
                    "the tool-call parser does not fit the model: {}",
                    tool_parser_hint()
                )),
            )),
        }
    }

    /// POSTs a non-streaming chat and parses the JSON answer.
    async fn post_json(&self, stage: Stage, body: &Value) -> Result<Value, Failure> {
        let response = self
            .upstreams
            .chat(self.account, Bytes::from(body.to_string()))
            .await
            .map_err(|e| self.failure(stage, &e))?;
        let bytes = response.bytes().await.map_err(|e| {
            Failure::new(
                format!("the answer broke off: {}", self.scrub(&e.to_string())),
                Some("see the server's log".to_owned()),
            )
        })?;
        serde_json::from_slice(&bytes).map_err(|_| {
            Failure::new(
                format!("HTTP 200 but not JSON: {}", self.scrub(&snippet(&bytes))),
                Some(self.v1_hint().unwrap_or_else(|| {
                    "the endpoint should be an OpenAI-compatible API base URL".to_owned()
                })),
            )
        })
    }

    /// Runs a chat check under the chat timeout.
    async fn bounded<T>(
        &self,
        stage: Stage,
        check: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        let limit = self.limits.chat;
        tokio::time::timeout(limit, check)
            .await
            .unwrap_or_else(|_| {
                let what = if stage == Stage::Stream {
                    "the stream did not end"
                } else {
                    "no answer"
                };
                Err(Failure::new(
                    format!("{what} within {}s", limit.as_secs()),
                    Some(
                        "the model may still be loading or the server is overloaded; try again or \
                     raise the bound (timeoutSecs, relayctl --timeout)"
                            .to_owned(),
                    ),
                ))
            })
    }

    fn record(&mut self, name: &str, started: Instant, result: Result<String, Failure>) {
        let millis = millis(started.elapsed());
        let (ok, detail, hint) = match result {
            Ok(detail) => (true, detail, None),
            Err(f) => (false, f.detail, f.hint),
        };
        self.checks.push(CheckResult {
            name: name.to_owned(),
            ok,
            detail: self.scrub(&detail),
            hint: hint.map(|h| self.scrub(&h)),
            skipped: false,
            millis,
        });
    }

    fn skip(&mut self, name: &str, ok: bool, detail: &str) {
        self.checks.push(CheckResult {
            name: name.to_owned(),
            ok,
            detail: detail.to_owned(),
            hint: None,
            skipped: true,
            millis: 0,
        });
    }

    /// Detail and hint for an upstream failure.
    fn failure(&self, stage: Stage, error: &UpstreamError) -> Failure {
        let hint = match error {
            UpstreamError::BadProxy(_) => Some(
                "check the proxy URL: http://, https:// or socks5://[user:pass@]HOST:PORT"
                    .to_owned(),
            ),
            UpstreamError::ProxyConnect(_) => Some(
                "the proxy refused or could not be reached: check its host, port and credentials"
                    .to_owned(),
            ),
            UpstreamError::Connect(text) => Some(self.connect_hint(text)),
            UpstreamError::Dropped(_) => Some(
                "the server closed the connection without answering, twice: it may reject this \
                 request's body, or be restarting"
                    .to_owned(),
            ),
            UpstreamError::BadAnswer(_) => Some(
                "the server answered 200 with something that is not an OpenAI answer: check \
                 that the endpoint is the API base URL (usually ending in /v1)"
                    .to_owned(),
            ),
            UpstreamError::FirstByteTimeout(_) => Some(
                "the server accepted the connection but did not answer: it may be loading the \
                 model or overloaded"
                    .to_owned(),
            ),
            UpstreamError::Transport(_) => Some(
                "the connection broke: check http:// vs https:// in the endpoint and any proxy \
                 in between"
                    .to_owned(),
            ),
            UpstreamError::Status { status, body, .. } => self.status_hint(stage, *status, body),
        };
        let detail = match error {
            UpstreamError::Status { status, body, .. } => {
                let what = match stage {
                    Stage::Models => "GET /models answered",
                    Stage::Chat | Stage::Stream | Stage::Tool => "answered",
                };
                let body = snippet(body.as_bytes());
                if body.is_empty() {
                    format!("{what} HTTP {status}")
                } else {
                    format!("{what} HTTP {status}: {body}")
                }
            }
            other => other.to_string(),
        };
        Failure::new(self.scrub(&detail), hint)
    }

    fn status_hint(&self, stage: Stage, status: u16, body: &str) -> Option<String> {
        let lower = body.to_ascii_lowercase();
        let about_model = lower.contains("model")
            && (lower.contains("not exist")
                || lower.contains("not found")
                || lower.contains("does not serve")
                || lower.contains("unknown"));
        Some(match status {
            401 | 403 if self.account.secrets.api_key.is_none() => {
                "the server wants an API key: set the account's apiKey".to_owned()
            }
            401 | 403 => "check the account's apiKey".to_owned(),
            404 if about_model => self.model_hint(),
            404 => match self.v1_hint() {
                Some(hint) => hint,
                None if self.account.settings.kind == AccountKind::Azure => {
                    "check the endpoint (https://RESOURCE.openai.azure.com), deploymentName and \
                     apiVersion"
                        .to_owned()
                }
                None if stage == Stage::Models => {
                    "the server has no GET /models here; check the endpoint path".to_owned()
                }
                None => "check the endpoint path and deploymentName".to_owned(),
            },
            400 if about_model => self.model_hint(),
            400 if stage == Stage::Tool && lower.contains("tool") => tool_parser_hint(),
            400 => "the server refused the request; see the detail".to_owned(),
            408 | 504 => "the server timed out; it may be overloaded".to_owned(),
            429 => "the server is rate limiting or busy; try again later".to_owned(),
            s if s >= 500 => "the server failed; see its log".to_owned(),
            _ => return None,
        })
    }

    fn connect_hint(&self, text: &str) -> String {
        let lower = text.to_ascii_lowercase();
        if let Some(proxy) = &self.account.secrets.proxy
            && (lower.contains("proxy") || lower.contains("socks"))
        {
            return format!(
                "cannot get through the proxy {}: is it running, and can it reach the endpoint?",
                redact_url(proxy)
            );
        }
        if lower.contains("dns") || lower.contains("lookup") || lower.contains("resolve") {
            return format!(
                "cannot resolve {}: check the endpoint's host name",
                self.host_port().0
            );
        }
        self.listening_hint()
    }

    fn listening_hint(&self) -> String {
        let (host, port) = self.host_port();
        format!("is the server running and listening on {host}:{port}? (vLLM: --host 0.0.0.0)")
    }

    fn host_port(&self) -> (String, u16) {
        let url = validate_endpoint(&self.account.settings.endpoint).ok();
        let host = url
            .as_ref()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let port = url
            .as_ref()
            .and_then(|u| u.port_or_known_default())
            .unwrap_or(0);
        (host, port)
    }

    /// The "/v1 is missing" hint, when the endpoint of an OpenAI-compatible account lacks it.
    fn v1_hint(&self) -> Option<String> {
        let s = &self.account.settings;
        (s.kind == AccountKind::Openai && !s.endpoint.ends_with("/v1")).then(|| {
            format!(
                "endpoint should end with /v1 (e.g. {}/v1)",
                s.endpoint.trim_end_matches('/')
            )
        })
    }

    fn model_hint(&self) -> String {
        match &self.listed {
            Some(ids) if !ids.is_empty() => {
                let mut shown: Vec<&str> =
                    ids.iter().take(MAX_LISTED).map(String::as_str).collect();
                if ids.len() > MAX_LISTED {
                    shown.push("…");
                }
                format!(
                    "the server serves [{}]: set deploymentName to one of them",
                    shown.join(", ")
                )
            }
            _ => "set deploymentName to the model name the server serves (see its GET /models)"
                .to_owned(),
        }
    }

    /// Removes the API key and proxy credentials from text that came from the upstream or reqwest.
    fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        let secrets = &self.account.secrets;
        if let Some(key) = secrets.api_key.as_deref().filter(|k| !k.is_empty()) {
            text = text.replace(key, "****");
        }
        if let Some(proxy) = secrets.proxy.as_deref() {
            text = text.replace(proxy, &redact_url(proxy));
            if let Some(password) = validate_proxy(proxy)
                .ok()
                .and_then(|u| u.password().map(str::to_owned))
                .filter(|p| !p.is_empty())
            {
                text = text.replace(&password, "****");
            }
        }
        text
    }
}

fn tool_parser_hint() -> String {
    "start vLLM with --enable-auto-tool-choice --tool-call-parser <name> (hermes for Qwen, glm45 \
     for GLM, llama3_json for Llama…); SGLang: --tool-call-parser; llama.cpp: --jinja"
        .to_owned()
}

fn latency_text(f: &LatencyFigures, usage_given: bool) -> String {
    format!(
        "first byte {} ms, total {} ms, {} output tokens ({}), {} tokens/s",
        f.first_byte_millis,
        f.total_millis,
        f.output_tokens,
        if usage_given {
            "from usage"
        } else {
            "estimated: one per chunk"
        },
        f.tokens_per_second
    )
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The first 200 characters of a body, on one line.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    truncate(&text.split_whitespace().collect::<Vec<_>>().join(" "), 200)
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut out: String = text.chars().take(max).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("abc", 3), "abc");
    }

    #[test]
    fn snippet_is_one_line() {
        assert_eq!(snippet(b"a\n  b\tc"), "a b c");
    }
}
