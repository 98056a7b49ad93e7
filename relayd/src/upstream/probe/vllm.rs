//! vLLM: `GET /version` answers `{"version": …}`; `GET /v1/models` lists each model's
//! `max_model_len`, the prompt-plus-output limit it enforces.

use serde_json::Value;

use super::family::tokens;
use super::wire::{Probe, brief};

/// Where vLLM says its version.
pub(super) const PATH: &str = "/version";

/// The version, when the answer is vLLM's.
pub(super) fn recognise(answer: &Value) -> Option<Option<String>> {
    let version = answer.get("version")?.as_str()?;
    Some(Some(version.to_owned()))
}

/// The deployment's `max_model_len` in `/v1/models` (SGLang lists it too).
pub(super) async fn window(probe: &Probe<'_>) -> Result<u32, String> {
    let models = probe.get("/v1/models").await.map_err(|e| brief(&e))?;
    let entry = model_entry(&models, probe.deployment())?;
    tokens(entry.get("max_model_len")).ok_or_else(|| {
        format!(
            "/v1/models gives no max_model_len for {:?}",
            probe.deployment()
        )
    })
}

/// The `data[]` entry of `deployment` in an OpenAI model list.
pub(super) fn model_entry<'v>(models: &'v Value, deployment: &str) -> Result<&'v Value, String> {
    models
        .get("data")
        .and_then(Value::as_array)
        .and_then(|data| {
            data.iter()
                .find(|m| m.get("id").and_then(Value::as_str) == Some(deployment))
        })
        .ok_or_else(|| format!("the model list has no {deployment:?}"))
}
