//! llama.cpp's `llama-server`: `GET /props` answers `default_generation_settings` (whose `n_ctx`
//! is one slot's window: `-c` divided among the `-np` slots) and `build_info`.

use serde_json::Value;

use super::family::tokens;

/// Where llama-server describes itself.
pub(super) const PATH: &str = "/props";

/// The build, when the answer is llama-server's.
pub(super) fn recognise(answer: &Value) -> Option<Option<String>> {
    answer.get("default_generation_settings")?;
    Some(
        answer
            .get("build_info")
            .and_then(Value::as_str)
            .map(str::to_owned),
    )
}

/// A slot's `n_ctx`: what one request may use.
pub(super) fn window(props: &Value) -> Result<u32, String> {
    tokens(props.pointer("/default_generation_settings/n_ctx"))
        .ok_or_else(|| "/props gives no default_generation_settings.n_ctx".to_owned())
}
