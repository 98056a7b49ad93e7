//! Upstream accounts: one deployment on one OpenAI-compatible or Azure endpoint.
//!
//! [`AccountInput`] is what users write (the admin API's create body and one row of a batch-import
//! file); [`AccountSettings`] is the same thing validated and with every default applied;
//! [`Account`] is what the admin API returns — settings plus identity, with secrets reduced to
//! "is one set, and its last four characters".

//!
//! The type lives here; its validation is in `validate`, endpoint and proxy URLs (and the
//! link-local policy) in `addresses`, and `supportedModels` lists and patterns in `models`.

mod addresses;
mod models;
mod patch;
mod validate;

pub use addresses::{
    is_link_local_host, link_local_errors, normalise_endpoint, redact_url, validate_endpoint,
    validate_proxy,
};
pub use models::{is_pattern, model_matches, validate_models};
pub use patch::AccountPatch;
pub use validate::validate_name;

use serde::{Deserialize, Serialize};

use crate::time::UnixMillis;

/// Default `priority` (1–100, lower is tried first).
pub const DEFAULT_PRIORITY: u8 = 50;
/// Default `concurrency` (max in-flight requests on one account).
pub const DEFAULT_CONCURRENCY: u32 = 50;
/// Upper bound for `concurrency`; beyond it a typo is likelier than a real setting.
pub const MAX_CONCURRENCY: u32 = 100_000;
/// Longest account `name`, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest `endpoint` or `proxy` URL, in bytes: far beyond any real base URL, and the common
/// limit of URLs that HTTP servers and proxies accept.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest `deploymentName`, in characters (model ids such as
/// `Qwen/Qwen3-VL-235B-A22B-Instruct-FP8` are a few dozen).
pub const MAX_DEPLOYMENT_CHARS: usize = 256;
/// Longest `apiKey`, in bytes (room for long JWT-style tokens).
pub const MAX_API_KEY_BYTES: usize = 8192;
/// Longest `apiVersion`, in characters (`2024-10-21`, `2025-04-01-preview`).
pub const MAX_API_VERSION_CHARS: usize = 64;
/// Longest `description`, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Most `supportedModels` entries (patterns cover families of names).
pub const MAX_MODELS: usize = 256;
/// Longest `supportedModels` entry, in characters.
pub const MAX_MODEL_CHARS: usize = 256;
/// Smallest `contextWindow` accepted: below it no Claude Code request fits anyway.
pub const MIN_CONTEXT_WINDOW: u32 = 512;
/// Default Azure `api-version`.
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

/// Client-facing model names an account serves when its `supportedModels` is not given.
pub const DEFAULT_SUPPORTED_MODELS: [&str; 14] = [
    "claude-sonnet-4-5-20250929",
    "claude-opus-4-1-20250805",
    "claude-sonnet-4-20250514",
    "claude-3-5-sonnet-20241022",
    "claude-3-5-haiku-20241022",
    "claude-3-opus-20240229",
    "claude-3-sonnet-20240229",
    "claude-3-haiku-20240307",
    "gpt-4",
    "gpt-4-turbo",
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-35-turbo",
    "gpt-35-turbo-16k",
];

/// Model names used for a *stored* account whose list cannot be parsed (a damaged or hand-edited
/// record). The store logs a warning naming the account whenever it falls back to these.
pub const FALLBACK_SUPPORTED_MODELS: [&str; 4] = [
    "claude-3-5-sonnet-20241022",
    "claude-3-opus-20240229",
    "gpt-4",
    "gpt-35-turbo",
];

/// The defaults as owned strings.
pub fn default_supported_models() -> Vec<String> {
    DEFAULT_SUPPORTED_MODELS
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// The fallback list as owned strings.
pub fn fallback_supported_models() -> Vec<String> {
    FALLBACK_SUPPORTED_MODELS
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// Stable identifier of an account (`acc_` + 16 hex digits). Names can change; ids cannot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(pub String);

impl AccountId {
    /// Prefix every account id starts with; lets `get by id or name` tell the two apart.
    pub const PREFIX: &'static str = "acc_";

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `s` has the shape of an account id.
    pub fn looks_like_id(s: &str) -> bool {
        s.strip_prefix(Self::PREFIX)
            .is_some_and(|rest| rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
    }
}

impl std::fmt::Display for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which URL shape and auth header an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountKind {
    /// Any OpenAI-compatible server: `{endpoint}/chat/completions`, `Authorization: Bearer`.
    Openai,
    /// Azure OpenAI: `/openai/deployments/{deployment}/chat/completions?api-version=…`, `api-key`.
    Azure,
    /// A server that speaks only the Anthropic Messages API (`{endpoint}/v1/messages`,
    /// `x-api-key`), such as a vendor's Anthropic-compatible base URL. Never a candidate for
    /// OpenAI-format clients.
    Anthropic,
}

impl AccountKind {
    /// The kind to assume when none is given: Azure for `*.openai.azure.com` hosts.
    pub fn infer(endpoint: &url::Url) -> Self {
        match endpoint.host_str() {
            Some(host) if host.to_ascii_lowercase().ends_with(".openai.azure.com") => Self::Azure,
            _ => Self::Openai,
        }
    }

    /// Lower-case name as used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Azure => "azure",
            Self::Anthropic => "anthropic",
        }
    }

    /// The credential header the kind uses unless the account says otherwise.
    pub fn default_auth(self) -> UpstreamAuth {
        match self {
            Self::Openai => UpstreamAuth::Bearer,
            Self::Azure => UpstreamAuth::ApiKey,
            Self::Anthropic => UpstreamAuth::XApiKey,
        }
    }
}

/// The header an upstream takes its credential in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamAuth {
    /// `Authorization: Bearer …` (OpenAI-compatible servers, most Anthropic-compatible vendors).
    Bearer,
    /// `x-api-key: …` (Anthropic's own header).
    XApiKey,
    /// `api-key: …` (Azure).
    ApiKey,
}

impl UpstreamAuth {
    /// The name used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bearer => "bearer",
            Self::XApiKey => "x-api-key",
            Self::ApiKey => "api-key",
        }
    }
}

/// How Anthropic-format clients reach an account that serves both protocols.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnthropicMode {
    /// Native when the probe saw the server's Messages API handle streamed tool calls, else
    /// translated to chat completions.
    #[default]
    Auto,
    /// Always the server's own `/v1/messages`.
    Native,
    /// Always translated to chat completions.
    Translate,
}

impl AnthropicMode {
    /// Whether this is the default, for `skip_serializing_if`.
    pub fn is_auto(&self) -> bool {
        *self == Self::Auto
    }

    /// The name used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Translate => "translate",
        }
    }
}

impl std::fmt::Display for AccountKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to a client's `thinking` setting on the way to an OpenAI-compatible upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ThinkingMapping {
    /// Dropped: the upstream decides (the default; safest for unknown servers).
    #[default]
    Drop,
    /// OpenAI's `reasoning_effort` (`low`/`medium`/`high`, from the budget or effort).
    ReasoningEffort,
    /// `chat_template_kwargs.enable_thinking` (Qwen3 and similar chat templates on vLLM/SGLang).
    EnableThinking,
}

impl ThinkingMapping {
    /// Whether this is the default, for `skip_serializing_if`.
    pub fn is_drop(&self) -> bool {
        *self == Self::Drop
    }
}

/// One account as a user writes it: the admin API's create body, and one row of a batch-import
/// file. Accepts exactly the keys of the format users already have (`name`, `azureEndpoint` or
/// `endpoint`, `deploymentName`, `apiKey`, `supportedModels`) plus relayd's own; anything else is an
/// error, never silently dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccountInput {
    /// Unique, human-chosen name; the key for upserts.
    pub name: String,
    /// Base URL of the upstream, e.g. `http://gpu-box-1:8000/v1`.
    #[serde(alias = "azureEndpoint")]
    pub endpoint: String,
    /// The model name sent upstream.
    pub deployment_name: String,
    /// Upstream credential; encrypted at rest and never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// URL shape; inferred from the endpoint when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<AccountKind>,
    /// Azure `api-version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Client-facing names served by this account (exact names or `*` patterns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_models: Option<Vec<String>>,
    /// 1–100; lower is tried first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// Max in-flight requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i64>,
    /// Outbound proxy URL (`http://`, `https://`, `socks5://`, credentials allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Excluded from routing when false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Free text for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Upper bound for the client's `max_tokens` (servers reject requests above their limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<i64>,
    /// How a client's `thinking` setting reaches the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<ThinkingMapping>,
    /// Send `max_completion_tokens` instead of `max_tokens` (newer OpenAI/Azure models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_max_completion_tokens: Option<bool>,
    /// Send earlier `thinking` blocks back as `reasoning_content` (upstreams that require it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_reasoning_content: Option<bool>,
    /// The header the upstream takes `apiKey` in; by kind when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_auth: Option<UpstreamAuth>,
    /// The upstream's context window in tokens, overriding what a probe detects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<i64>,
    /// How Anthropic-format clients reach the account (`auto`, `native`, `translate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic_mode: Option<AnthropicMode>,
}

/// Validated, defaults-applied, non-secret settings of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountSettings {
    /// Unique name.
    pub name: String,
    /// URL shape and auth header.
    pub kind: AccountKind,
    /// Base URL, normalised without a trailing slash.
    pub endpoint: String,
    /// The model name sent upstream.
    pub deployment_name: String,
    /// Azure `api-version` (kept for every kind so switching kind needs no re-entry).
    pub api_version: String,
    /// Client-facing names or `*` patterns.
    pub supported_models: Vec<String>,
    /// 1–100; lower is tried first.
    pub priority: u8,
    /// Max in-flight requests.
    pub concurrency: u32,
    /// Excluded from routing when false.
    pub enabled: bool,
    /// Free text for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Upper bound for the client's `max_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// How a client's `thinking` setting reaches the upstream.
    #[serde(default, skip_serializing_if = "ThinkingMapping::is_drop")]
    pub thinking: ThinkingMapping,
    /// Send `max_completion_tokens` instead of `max_tokens`; decided by the profile when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_max_completion_tokens: Option<bool>,
    /// Send earlier `thinking` blocks back as `reasoning_content`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub send_reasoning_content: bool,
    /// The header the upstream takes `apiKey` in, when not the kind's own (see
    /// [`AccountSettings::auth`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_auth: Option<UpstreamAuth>,
    /// The context window set by the operator (a probe's finding is in the profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u32>,
    /// How Anthropic-format clients reach the account.
    #[serde(default, skip_serializing_if = "AnthropicMode::is_auto")]
    pub anthropic_mode: AnthropicMode,
}

impl AccountSettings {
    /// The header the upstream takes its credential in: the account's choice, else its kind's.
    pub fn auth(&self) -> UpstreamAuth {
        self.upstream_auth.unwrap_or(self.kind.default_auth())
    }
}

/// The secret parts of an account, in clear. Only ever held in memory; the stores see ciphertext.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AccountSecrets {
    /// Upstream API key.
    pub api_key: Option<String>,
    /// Proxy URL, which may carry credentials.
    pub proxy: Option<String>,
}

impl std::fmt::Debug for AccountSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountSecrets")
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("proxy", &self.proxy.as_deref().map(redact_url))
            .finish()
    }
}

/// What the admin API shows about a secret: whether one is set, and its last four characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretInfo {
    /// Whether a value is stored.
    pub set: bool,
    /// Its last four characters, when it is long enough for that to reveal little (≥ 12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last4: Option<String>,
}

impl SecretInfo {
    /// Describes `secret` without revealing it.
    pub fn describe(secret: Option<&str>) -> Self {
        match secret {
            None => Self {
                set: false,
                last4: None,
            },
            Some(s) => {
                let n = s.chars().count();
                let last4 = (n >= 12).then(|| s.chars().skip(n - 4).collect());
                Self { set: true, last4 }
            }
        }
    }
}

/// An account as the admin API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// Stable id.
    pub id: AccountId,
    /// Validated settings.
    #[serde(flatten)]
    pub settings: AccountSettings,
    /// Whether an upstream key is set (never the key itself).
    pub api_key: SecretInfo,
    /// The proxy URL with any password replaced by `****`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Creation time.
    pub created_at: UnixMillis,
    /// Last change.
    pub updated_at: UnixMillis,
    /// What the last probe of the upstream found; absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<crate::profile::Profile>,
    /// The values requests use, and where each came from.
    pub resolved: crate::profile::Resolved,
}

#[cfg(test)]
mod tests;
