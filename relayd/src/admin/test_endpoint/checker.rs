//! The checker: runs the checks in order against one account, records each result (scrubbed of
//! secrets), skips what an earlier failure made pointless, and assembles the report.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use shared::account::AccountKind;
use shared::admin::{CheckResult, LatencyFigures, TestEndpointReport, TestTarget};

use super::Limits;
use super::hints::snippet;
use crate::accounts::LiveAccount;
use crate::upstream::{UpstreamError, Upstreams};

/// Which request a failure came from; hints differ slightly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    Models,
    Chat,
    Stream,
    Tool,
}

/// A failed check: what was seen and the likely fix.
#[derive(Debug)]
pub(super) struct Failure {
    detail: String,
    hint: Option<String>,
}

impl Failure {
    pub(super) fn new(detail: impl Into<String>, hint: Option<String>) -> Self {
        Self {
            detail: detail.into(),
            hint,
        }
    }
}

/// Runs the checks against one account.
pub(super) struct Checker<'a> {
    pub(super) upstreams: &'a Upstreams,
    pub(super) account: &'a LiveAccount,
    pub(super) limits: Limits,
    pub(super) checks: Vec<CheckResult>,
    /// Model ids `GET /models` listed, for the "set deploymentName to one of them" hint.
    pub(super) listed: Option<Vec<String>>,
}

impl<'a> Checker<'a> {
    pub(super) fn new(upstreams: &'a Upstreams, account: &'a LiveAccount, limits: Limits) -> Self {
        Self {
            upstreams,
            account,
            limits,
            checks: Vec::with_capacity(6),
            listed: None,
        }
    }

    pub(super) async fn run(mut self, target: TestTarget) -> TestEndpointReport {
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
        // After the checks, not beside them: a one-slot server would only queue both.
        let profile = if reachable {
            Some(crate::upstream::probe::probe(self.upstreams, self.account).await)
        } else {
            None
        };
        let ok = self.checks.iter().all(|c| c.ok);
        TestEndpointReport {
            target,
            checks: self.checks,
            latency,
            profile,
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
        self.judge_models_answer(answer, started)
    }

    /// `reachable` and `model_listed` from what `GET /models` answered in time. Any HTTP status
    /// counts as reachable. Returns whether the rest can run.
    fn judge_models_answer(
        &mut self,
        answer: Result<Bytes, UpstreamError>,
        started: Instant,
    ) -> bool {
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

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
