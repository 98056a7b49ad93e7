//! LM Studio: `GET /api/v0/models` lists every model with `max_context_length`, and the
//! `loaded_context_length` it was loaded with when loaded. It does not say its version there.

use serde_json::Value;

use super::family::tokens;
use super::vllm::model_entry;
use super::wire::Probe;

/// Where LM Studio lists its models.
pub(super) const PATH: &str = "/api/v0/models";

/// Recognised by its model list's own fields; no version.
pub(super) fn recognise(answer: &Value) -> Option<Option<String>> {
    let data = answer.get("data")?.as_array()?;
    data.iter()
        .any(|m| m.get("max_context_length").is_some() || m.get("compatibility_type").is_some())
        .then_some(None)
}

/// The loaded context length, else the model's maximum (what it will be loaded with at most).
pub(super) fn window(probe: &Probe<'_>, models: &Value) -> Result<u32, String> {
    let entry = model_entry(models, probe.deployment())?;
    tokens(entry.get("loaded_context_length"))
        .or_else(|| tokens(entry.get("max_context_length")))
        .ok_or_else(|| {
            format!(
                "{PATH} gives no context length for {:?}",
                probe.deployment()
            )
        })
}
