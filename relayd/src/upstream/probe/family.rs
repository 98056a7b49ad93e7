//! Recognising the server: every family's self-description is asked at once, and the first
//! family (in a fixed order, most specific first) whose answer has its shape wins. Then the
//! family's own surface gives the deployment's context window.

use serde_json::Value;
use shared::profile::ServerFamily;

use super::wire::{Probe, brief};
use super::{llamacpp, lmstudio, ollama, sglang, tgi, vllm};
use crate::upstream::UpstreamError;

/// What the self-descriptions said.
#[derive(Debug, Default)]
pub(super) struct Detected {
    pub(super) family: ServerFamily,
    pub(super) version: Option<String>,
    /// The recognised family's answer (its window may be in it).
    pub(super) answer: Value,
    /// Whether anything answered at all, even with an error status.
    pub(super) reachable: bool,
    /// Why nothing answered, when nothing did.
    pub(super) why_unreachable: Option<String>,
    pub(super) notes: Vec<String>,
}

impl Detected {
    /// A family known from the account's kind, without asking.
    pub(super) fn named(family: ServerFamily) -> Self {
        Self {
            family,
            reachable: true,
            ..Self::default()
        }
    }
}

/// How a family is recognised: the path it describes itself at, and the version when the
/// answer has the family's shape (`Some(None)`: recognised, no version said).
type Recogniser = (
    ServerFamily,
    &'static str,
    fn(&Value) -> Option<Option<String>>,
);

/// Most specific first: vLLM's bare `{"version"}` is the least telling shape.
const RECOGNISERS: &[Recogniser] = &[
    (ServerFamily::LlamaCpp, llamacpp::PATH, llamacpp::recognise),
    (ServerFamily::Ollama, ollama::PATH, ollama::recognise),
    (ServerFamily::LmStudio, lmstudio::PATH, lmstudio::recognise),
    (ServerFamily::Tgi, tgi::PATH, tgi::recognise),
    (ServerFamily::Sglang, sglang::PATH, sglang::recognise),
    (ServerFamily::Sglang, sglang::OLD_PATH, sglang::recognise),
    (ServerFamily::Vllm, vllm::PATH, vllm::recognise),
];

/// Asks every family's self-description at once.
pub(super) async fn detect(probe: &Probe<'_>) -> Detected {
    let answers: Vec<Result<Value, UpstreamError>> =
        futures_util::future::join_all(RECOGNISERS.iter().map(|(_, path, _)| probe.get(path)))
            .await;
    let mut detected = Detected::default();
    for (answer, (family, _, recognise)) in answers.iter().zip(RECOGNISERS) {
        if let Ok(value) = answer
            && let Some(version) = recognise(value)
        {
            detected.family = *family;
            detected.version = version;
            detected.answer = value.clone();
            detected.reachable = true;
            return detected;
        }
    }
    detected.reachable = answers.iter().any(|a| match a {
        Ok(_) | Err(UpstreamError::Status { .. } | UpstreamError::BadAnswer(_)) => true,
        Err(_) => false,
    });
    if detected.reachable {
        detected
            .notes
            .push("no server family recognised from its self-description".to_owned());
    } else if let Some(Err(e)) = answers.first() {
        detected.why_unreachable = Some(brief(e));
    }
    detected
}

/// A window found, with a note when it is an assumption rather than what the server said.
pub(super) type Window = Result<(u32, Option<String>), String>;

/// The deployment's context window, from the family's own surface.
pub(super) async fn window(probe: &Probe<'_>, detected: &Detected) -> Window {
    let said = match detected.family {
        ServerFamily::Ollama => return ollama::window(probe).await,
        ServerFamily::Vllm => vllm::window(probe).await,
        ServerFamily::Sglang => sglang::window(probe, &detected.answer).await,
        ServerFamily::LlamaCpp => llamacpp::window(&detected.answer),
        ServerFamily::Tgi => tgi::window(&detected.answer),
        ServerFamily::LmStudio => lmstudio::window(probe, &detected.answer),
        ServerFamily::Azure => Err("Azure does not say; set contextWindow".to_owned()),
        // vLLM forks and other OpenAI-compatible servers often list `max_model_len`.
        ServerFamily::AnthropicCompatible | ServerFamily::Unknown => vllm::window(probe)
            .await
            .map_err(|e| format!("the server does not say ({e}); set contextWindow")),
    };
    said.map(|window| (window, None))
}

/// A positive token count that fits a `u32`.
pub(super) fn tokens(value: Option<&Value>) -> Option<u32> {
    value
        .and_then(Value::as_u64)
        .filter(|n| *n > 0)
        .and_then(|n| u32::try_from(n).ok())
}
