//! What relayd has learnt about an upstream by probing it: the server family, its context
//! window, how it tokenizes, whether it serves the Anthropic Messages API natively, and how it
//! handles tool calls, reasoning and usage. A [`Profile`] is plain observation; [`Resolved`]
//! combines it with the account's explicit fields (which always win) and the defaults, and says
//! where each value came from, for `relayctl accounts show` and `test-endpoint`.

use serde::{Deserialize, Serialize};

use crate::account::{AccountKind, AccountSettings, AnthropicMode};
use crate::time::UnixMillis;

/// The server software behind an endpoint, as far as it tells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerFamily {
    /// vLLM (`/version`, `max_model_len` in `/v1/models`).
    Vllm,
    /// SGLang (`/get_server_info` or `/server_info`).
    Sglang,
    /// llama.cpp's `llama-server` (`/props`).
    LlamaCpp,
    /// Ollama (`/api/version`, `/api/show`).
    Ollama,
    /// Hugging Face Text Generation Inference (`/info`).
    Tgi,
    /// LM Studio (`/api/v0/models`).
    LmStudio,
    /// Azure OpenAI.
    Azure,
    /// A hosted Anthropic-compatible endpoint that names no server.
    AnthropicCompatible,
    /// Nothing recognisable answered.
    #[default]
    Unknown,
}

impl ServerFamily {
    /// The name shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vllm => "vllm",
            Self::Sglang => "sglang",
            Self::LlamaCpp => "llama.cpp",
            Self::Ollama => "ollama",
            Self::Tgi => "tgi",
            Self::LmStudio => "lm-studio",
            Self::Azure => "azure",
            Self::AnthropicCompatible => "anthropic-compatible",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ServerFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an upstream counts the tokens of a request the way it will render it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tokenizer {
    /// `POST {root}/tokenize` with `model` and `messages` (chat template applied), answering
    /// `count` (vLLM; SGLang's `/tokenize` takes only a `prompt`).
    ChatTokenize,
    /// llama.cpp: `POST {root}/apply-template` renders the messages with the server's template,
    /// then `POST {root}/tokenize` counts the prompt.
    LlamaCpp,
    /// `POST {endpoint}/v1/messages/count_tokens` (native Anthropic servers).
    AnthropicCountTokens,
}

/// The field an upstream puts its reasoning text in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningField {
    /// `reasoning_content` (vLLM before 0.10, SGLang, llama.cpp, DeepSeek).
    ReasoningContent,
    /// `reasoning` (newer vLLM, Ollama, OpenRouter).
    Reasoning,
}

/// What a probe found. Every field is optional: a server that does not say is not guessed at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// When the probe ran.
    pub probed_at: UnixMillis,
    /// The server software.
    pub family: ServerFamily,
    /// Its version, where it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Tokens of prompt plus output one request may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u32>,
    /// How to count a request's tokens on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<Tokenizer>,
    /// Whether `POST /v1/messages` is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_messages: Option<bool>,
    /// Whether a streamed tool call through the native Messages API came back as `tool_use`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_streamed_tool_calls: Option<bool>,
    /// Whether a forced tool call came back as `tool_calls` (chat completions, not streamed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<bool>,
    /// The same, streamed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streamed_tool_calls: Option<bool>,
    /// The field reasoning text arrives in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_field: Option<ReasoningField>,
    /// Whether streams end with a usage chunk when asked (`stream_options.include_usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_usage: Option<bool>,
    /// Whether `max_completion_tokens` is taken: accepted, and not a server known to ignore it
    /// (Ollama accepts it and reads only `max_tokens`, so it is `false` there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<bool>,
    /// What the probe could not learn, and why (one line each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Where a resolved value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The account's own field.
    Set,
    /// The probe.
    Detected,
    /// Neither: relayd's default.
    Default,
}

/// One resolved value and its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sourced<T> {
    /// The value used.
    pub value: T,
    /// Where it came from.
    pub source: Source,
}

impl<T> Sourced<T> {
    fn new(value: T, source: Source) -> Self {
        Self { value, source }
    }
}

/// The per-request choices for an account: its explicit fields first, then the profile, then
/// the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resolved {
    /// The context window, when known.
    pub context_window: Sourced<Option<u32>>,
    /// Whether Anthropic-format clients are forwarded natively (untranslated).
    pub native_messages: Sourced<bool>,
    /// Whether OpenAI-format clients may be routed to the account.
    pub serves_openai_clients: bool,
    /// How request tokens are counted on the upstream, when it can.
    pub tokenizer: Sourced<Option<Tokenizer>>,
    /// Whether `max_completion_tokens` is sent instead of `max_tokens`.
    pub use_max_completion_tokens: Sourced<bool>,
}

impl Resolved {
    /// Resolves `settings` over `profile` (absent before the first probe).
    pub fn of(settings: &AccountSettings, profile: Option<&Profile>) -> Self {
        let context_window = match (
            settings.context_window,
            profile.and_then(|p| p.context_window),
        ) {
            (Some(w), _) => Sourced::new(Some(w), Source::Set),
            (None, Some(w)) => Sourced::new(Some(w), Source::Detected),
            (None, None) => Sourced::new(None, Source::Default),
        };
        let native_messages = match (settings.kind, settings.anthropic_mode) {
            (AccountKind::Anthropic, _) | (_, AnthropicMode::Native) => {
                Sourced::new(true, Source::Set)
            }
            (_, AnthropicMode::Translate) => Sourced::new(false, Source::Set),
            (_, AnthropicMode::Auto) => match profile {
                // Native only where the probe saw tool calls survive a native stream: that is
                // what Claude Code depends on.
                Some(p) if p.native_messages == Some(true) => {
                    Sourced::new(p.native_streamed_tool_calls == Some(true), Source::Detected)
                }
                Some(p) if p.native_messages == Some(false) => {
                    Sourced::new(false, Source::Detected)
                }
                _ => Sourced::new(false, Source::Default),
            },
        };
        let tokenizer = match profile.map(|p| (p.family, p.tokenizer)) {
            // A profile from before relayd knew that SGLang's `/tokenize` takes no `messages`:
            // every count would fail, so the local estimate it falls back to is used at once.
            Some((ServerFamily::Sglang, Some(Tokenizer::ChatTokenize)))
            | None
            | Some((_, None)) => Sourced::new(None, Source::Default),
            Some((_, Some(t))) => Sourced::new(Some(t), Source::Detected),
        };
        let use_max_completion_tokens = match settings.use_max_completion_tokens {
            Some(v) => Sourced::new(v, Source::Set),
            None => match profile.and_then(|p| p.max_completion_tokens) {
                // Preferred only where the server takes it and plain `max_tokens` is the
                // deprecated form (Azure and OpenAI's newer models). Never for OpenAI-kind
                // accounts, so never on Ollama, which accepts it and ignores it.
                Some(true) if settings.kind == AccountKind::Azure => {
                    Sourced::new(true, Source::Detected)
                }
                _ => Sourced::new(false, Source::Default),
            },
        };
        Self {
            context_window,
            native_messages,
            serves_openai_clients: settings.kind != AccountKind::Anthropic,
            tokenizer,
            use_max_completion_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::AccountInput;

    fn settings(kind: AccountKind) -> AccountSettings {
        let input = AccountInput {
            name: "a".to_owned(),
            endpoint: "http://127.0.0.1:9/v1".to_owned(),
            deployment_name: "m".to_owned(),
            api_key: Some("k".to_owned()),
            kind: Some(kind),
            ..AccountInput::default()
        };
        input.validate().expect("valid account").0
    }

    #[test]
    fn ollama_never_gets_max_completion_tokens() {
        let profile = Profile {
            family: ServerFamily::Ollama,
            max_completion_tokens: Some(true),
            ..Profile::default()
        };
        let resolved = Resolved::of(&settings(AccountKind::Openai), Some(&profile));
        assert!(!resolved.use_max_completion_tokens.value);
        let azure = Profile {
            family: ServerFamily::Azure,
            ..profile
        };
        let resolved = Resolved::of(&settings(AccountKind::Azure), Some(&azure));
        assert!(resolved.use_max_completion_tokens.value);
    }

    #[test]
    fn an_sglang_chat_tokenize_from_an_older_probe_is_not_used() {
        let stale = Profile {
            family: ServerFamily::Sglang,
            tokenizer: Some(Tokenizer::ChatTokenize),
            ..Profile::default()
        };
        let resolved = Resolved::of(&settings(AccountKind::Openai), Some(&stale));
        assert_eq!(resolved.tokenizer.value, None);
        let native = Profile {
            tokenizer: Some(Tokenizer::AnthropicCountTokens),
            ..stale
        };
        let resolved = Resolved::of(&settings(AccountKind::Openai), Some(&native));
        assert_eq!(
            resolved.tokenizer.value,
            Some(Tokenizer::AnthropicCountTokens)
        );
        let vllm = Profile {
            family: ServerFamily::Vllm,
            tokenizer: Some(Tokenizer::ChatTokenize),
            ..Profile::default()
        };
        let resolved = Resolved::of(&settings(AccountKind::Openai), Some(&vllm));
        assert_eq!(resolved.tokenizer.value, Some(Tokenizer::ChatTokenize));
    }
}
