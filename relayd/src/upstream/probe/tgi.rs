//! Hugging Face Text Generation Inference: `GET /info` answers `version`, `max_input_tokens`
//! and `max_total_tokens` (prompt plus output).

use serde_json::Value;

use super::family::tokens;

/// Where TGI describes itself.
pub(super) const PATH: &str = "/info";

/// The version, when the answer is TGI's.
pub(super) fn recognise(answer: &Value) -> Option<Option<String>> {
    answer.get("model_id")?;
    if answer.get("max_total_tokens").is_none() && answer.get("max_input_tokens").is_none() {
        return None;
    }
    Some(
        answer
            .get("version")
            .and_then(Value::as_str)
            .map(str::to_owned),
    )
}

/// `max_total_tokens`; a smaller `max_input_tokens` caps the prompt alone, which the window
/// check's minimum output already leaves room for in the usual set-up (input = total − 1).
pub(super) fn window(info: &Value) -> Result<u32, String> {
    tokens(info.get("max_total_tokens"))
        .or_else(|| tokens(info.get("max_input_tokens")).map(|n| n.saturating_add(1)))
        .ok_or_else(|| "/info gives neither max_total_tokens nor max_input_tokens".to_owned())
}
