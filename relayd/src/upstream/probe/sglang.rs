//! SGLang: `GET /server_info` (formerly `/get_server_info`) answers its server arguments with
//! `version`; `/v1/models` lists `max_model_len` like vLLM, and the `context_length` argument
//! is the fallback.

use serde_json::Value;

use super::family::tokens;
use super::vllm;
use super::wire::Probe;

/// Where current SGLang describes itself.
pub(super) const PATH: &str = "/server_info";
/// The same, before SGLang renamed it.
pub(super) const OLD_PATH: &str = "/get_server_info";

/// The version, when the answer is SGLang's: its server arguments with `version`.
pub(super) fn recognise(answer: &Value) -> Option<Option<String>> {
    let is_sglang = [
        "model_path",
        "tp_size",
        "max_total_num_tokens",
        "tokenizer_path",
    ]
    .iter()
    .any(|key| answer.get(key).is_some());
    if !is_sglang {
        return None;
    }
    Some(
        answer
            .get("version")
            .and_then(Value::as_str)
            .map(str::to_owned),
    )
}

/// `max_model_len` in `/v1/models`, else the `context_length` the server was started with.
pub(super) async fn window(probe: &Probe<'_>, info: &Value) -> Result<u32, String> {
    match vllm::window(probe).await {
        Ok(window) => Ok(window),
        Err(why) => tokens(info.get("context_length"))
            .ok_or_else(|| format!("{why}, and no context_length in the server info")),
    }
}
