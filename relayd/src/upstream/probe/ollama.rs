//! Ollama: `GET /api/version` answers `{"version"}`; `POST /api/show {"model"}` answers the
//! model's trained window in `model_info["<arch>.context_length"]` and, when the model file
//! sets one, the `num_ctx` it runs with in `parameters`. Without `num_ctx` Ollama runs with its
//! default, whatever the model could take.

use serde_json::{Value, json};
use shared::profile::Profile;

use super::family::tokens;
use super::wire::{Probe, brief};

/// Where Ollama says its version.
pub(super) const PATH: &str = "/api/version";

/// Ollama's default `num_ctx` when neither the model file nor the server sets one.
pub(super) const DEFAULT_NUM_CTX: u32 = 4096;

/// The version, when the answer is Ollama's.
pub(super) fn recognise(answer: &Value) -> Option<Option<String>> {
    let version = answer.get("version")?.as_str()?;
    Some(Some(version.to_owned()))
}

/// The `num_ctx` the model runs with, else Ollama's default capped by the trained window.
pub(super) async fn window(probe: &Probe<'_>) -> super::family::Window {
    let show = probe
        .post(
            "/api/show",
            &json!({ "model": probe.deployment() }),
            probe.info(),
        )
        .await
        .map_err(|e| format!("/api/show: {}", brief(&e)))?;
    if let Some(num_ctx) = num_ctx(&show) {
        return Ok((num_ctx, None));
    }
    let trained = trained_window(&show);
    let window = trained.map_or(DEFAULT_NUM_CTX, |t| t.min(DEFAULT_NUM_CTX));
    let note = format!(
        "the model sets no num_ctx: Ollama's default {DEFAULT_NUM_CTX} assumed (the server's \
         OLLAMA_CONTEXT_LENGTH may differ; the model was trained for {})",
        trained.map_or_else(|| "an unknown window".to_owned(), |t| t.to_string())
    );
    Ok((window, Some(note)))
}

/// Ollama's OpenAI layer accepts `max_completion_tokens` and ignores it (it reads `max_tokens`
/// only), so the chat check's "accepted" is no "honoured": recorded as not taken, with why.
pub(super) fn ignores_max_completion_tokens(profile: &mut Profile) {
    if profile.max_completion_tokens == Some(true) {
        profile.max_completion_tokens = Some(false);
        profile.notes.push(
            "max_completion_tokens is accepted but ignored by Ollama, which reads max_tokens"
                .to_owned(),
        );
    }
}

/// `num_ctx N` in the `parameters` text.
fn num_ctx(show: &Value) -> Option<u32> {
    let parameters = show.get("parameters")?.as_str()?;
    parameters.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("num_ctx")).then(|| words.next()?.parse().ok())?
    })
}

/// `model_info["<general.architecture>.context_length"]`.
fn trained_window(show: &Value) -> Option<u32> {
    let info = show.get("model_info")?;
    let arch = info.get("general.architecture")?.as_str()?;
    tokens(info.get(format!("{arch}.context_length")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn num_ctx_is_read_from_the_parameters() {
        let show =
            json!({"parameters": "stop \"<|eot|>\"\nnum_ctx                        16384\n"});
        assert_eq!(num_ctx(&show), Some(16384));
        assert_eq!(num_ctx(&json!({"parameters": "temperature 0.7"})), None);
    }

    #[test]
    fn an_accepted_max_completion_tokens_is_recorded_as_not_taken() {
        let mut profile = Profile {
            max_completion_tokens: Some(true),
            ..Profile::default()
        };
        ignores_max_completion_tokens(&mut profile);
        assert_eq!(profile.max_completion_tokens, Some(false));
        assert_eq!(profile.notes.len(), 1);
        let mut unknown = Profile::default();
        ignores_max_completion_tokens(&mut unknown);
        assert_eq!(unknown.max_completion_tokens, None);
        assert!(unknown.notes.is_empty());
    }

    #[test]
    fn the_trained_window_is_under_the_architecture() {
        let show =
            json!({"model_info": {"general.architecture": "qwen3", "qwen3.context_length": 40960}});
        assert_eq!(trained_window(&show), Some(40960));
    }
}
