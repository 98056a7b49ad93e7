//! Upstream accounts: one deployment on one OpenAI-compatible or Azure endpoint.
//!
//! [`AccountInput`] is what users write (the admin API's create body and one row of a batch-import
//! file); [`AccountSettings`] is the same thing validated and with every default applied;
//! [`Account`] is what the admin API returns — settings plus identity, with secrets reduced to
//! "is one set, and its last four characters".

use serde::{Deserialize, Serialize};

use crate::error::FieldError;
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
    /// Send `max_completion_tokens` instead of `max_tokens`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub use_max_completion_tokens: bool,
    /// Send earlier `thinking` blocks back as `reasoning_content`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub send_reasoning_content: bool,
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

impl AccountInput {
    /// Validates every field and applies defaults. Every problem is reported, not just the first.
    pub fn validate(self) -> Result<(AccountSettings, AccountSecrets), Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut fail = |field: &str, message: String| {
            errors.push(FieldError {
                row: None,
                name: None,
                field: Some(field.to_owned()),
                message,
            });
        };

        let name = self.name.trim().to_owned();
        if let Err(e) = validate_name(&name) {
            fail("name", e);
        }
        let endpoint = match validate_endpoint(&self.endpoint) {
            Ok(url) => Some(url),
            Err(e) => {
                fail("endpoint", e);
                None
            }
        };
        let deployment_name = self.deployment_name.trim().to_owned();
        if deployment_name.is_empty() {
            fail("deploymentName", "must not be empty".to_owned());
        } else if deployment_name.chars().count() > MAX_DEPLOYMENT_CHARS {
            fail(
                "deploymentName",
                format!("must be at most {MAX_DEPLOYMENT_CHARS} characters"),
            );
        } else if deployment_name.chars().any(char::is_control) {
            fail(
                "deploymentName",
                "must not contain control characters".to_owned(),
            );
        }
        let api_key = self.api_key.filter(|k| !k.is_empty());
        if let Some(key) = &api_key {
            if key.len() > MAX_API_KEY_BYTES {
                fail(
                    "apiKey",
                    format!("must be at most {MAX_API_KEY_BYTES} bytes"),
                );
            } else if key.chars().any(char::is_control) {
                fail("apiKey", "must not contain control characters".to_owned());
            }
        }
        let supported_models = match self.supported_models {
            None => default_supported_models(),
            Some(list) => match validate_models(list) {
                Ok(list) => list,
                Err(e) => {
                    fail("supportedModels", e);
                    Vec::new()
                }
            },
        };
        let priority = match self.priority {
            None => DEFAULT_PRIORITY,
            Some(p) if (1..=100).contains(&p) => u8::try_from(p).unwrap_or(DEFAULT_PRIORITY),
            Some(p) => {
                fail("priority", format!("must be between 1 and 100, got {p}"));
                DEFAULT_PRIORITY
            }
        };
        let concurrency = match self.concurrency {
            None => DEFAULT_CONCURRENCY,
            Some(c) if c >= 1 && c <= i64::from(MAX_CONCURRENCY) => {
                u32::try_from(c).unwrap_or(DEFAULT_CONCURRENCY)
            }
            Some(c) => {
                fail(
                    "concurrency",
                    format!("must be between 1 and {MAX_CONCURRENCY}, got {c}"),
                );
                DEFAULT_CONCURRENCY
            }
        };
        let proxy = self.proxy.filter(|p| !p.trim().is_empty());
        if let Some(p) = &proxy
            && let Err(e) = validate_proxy(p)
        {
            fail("proxy", e);
        }
        let api_version = self
            .api_version
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| DEFAULT_API_VERSION.to_owned());
        if api_version.is_empty() {
            fail("apiVersion", "must not be empty".to_owned());
        } else if api_version.chars().count() > MAX_API_VERSION_CHARS {
            fail(
                "apiVersion",
                format!("must be at most {MAX_API_VERSION_CHARS} characters"),
            );
        } else if api_version.chars().any(char::is_control) {
            fail(
                "apiVersion",
                "must not contain control characters".to_owned(),
            );
        }
        let description = self.description.filter(|d| !d.is_empty());
        // Line breaks and tabs are fair in free text; other control characters only ever act on
        // the terminal or log viewer that shows them.
        if let Some(d) = &description {
            if d.chars().count() > MAX_DESCRIPTION_CHARS {
                fail(
                    "description",
                    format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
                );
            } else if d
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\t'))
            {
                fail(
                    "description",
                    "must not contain control characters other than line breaks and tabs"
                        .to_owned(),
                );
            }
        }

        let max_output_tokens = match self.max_output_tokens {
            None => None,
            Some(n) if (1..=i64::from(u32::MAX)).contains(&n) => u32::try_from(n).ok(),
            Some(n) => {
                fail(
                    "maxOutputTokens",
                    format!("must be a positive number of tokens, got {n}"),
                );
                None
            }
        };

        let Some(endpoint) = endpoint.filter(|_| errors.is_empty()) else {
            return Err(errors);
        };
        let kind = self.kind.unwrap_or_else(|| AccountKind::infer(&endpoint));
        let settings = AccountSettings {
            name,
            kind,
            endpoint: normalise_endpoint(&endpoint),
            deployment_name,
            api_version,
            supported_models,
            priority,
            concurrency,
            enabled: self.enabled.unwrap_or(true),
            description,
            max_output_tokens,
            thinking: self.thinking.unwrap_or_default(),
            use_max_completion_tokens: self.use_max_completion_tokens.unwrap_or(false),
            send_reasoning_content: self.send_reasoning_content.unwrap_or(false),
        };
        Ok((settings, AccountSecrets { api_key, proxy }))
    }
}

/// Checks an account name: non-empty, at most [`MAX_NAME_CHARS`] characters, no control
/// characters, and not shaped like an account id (so "get by id or name" is never ambiguous).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("must be at most {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    if AccountId::looks_like_id(name) {
        return Err(format!(
            "{name:?} looks like an account id; choose another name"
        ));
    }
    Ok(())
}

/// Parses an endpoint base URL: `http` or `https`, with a host, no query or fragment, at most
/// [`MAX_URL_BYTES`] long.
pub fn validate_endpoint(raw: &str) -> Result<url::Url, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if raw.len() > MAX_URL_BYTES {
        return Err(format!("must be at most {MAX_URL_BYTES} bytes"));
    }
    let url = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{raw:?} must start with http:// or https://, not {}://",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{raw:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{raw:?} must be a base URL without query or fragment (relayd adds the path and api-version itself)"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; use apiKey".to_owned());
    }
    Ok(url)
}

/// Parses a proxy URL: `http`, `https`, `socks5` or `socks5h`, with a host, at most
/// [`MAX_URL_BYTES`] long.
pub fn validate_proxy(raw: &str) -> Result<url::Url, String> {
    if raw.trim().len() > MAX_URL_BYTES {
        return Err(format!("must be at most {MAX_URL_BYTES} bytes"));
    }
    let url = url::Url::parse(raw.trim())
        .map_err(|e| format!("{} is not a valid URL: {e}", redact_url(raw)))?;
    if !matches!(url.scheme(), "http" | "https" | "socks5" | "socks5h") {
        return Err(format!(
            "scheme must be http, https, socks5 or socks5h, not {}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".to_owned());
    }
    Ok(url)
}

/// Checks a `supportedModels` list: non-empty, at most [`MAX_MODELS`] entries of at most
/// [`MAX_MODEL_CHARS`] characters, no blank entries, duplicates removed (first kept).
pub fn validate_models(list: Vec<String>) -> Result<Vec<String>, String> {
    if list.is_empty() {
        return Err("must not be empty (omit the field to get the default model names)".to_owned());
    }
    if list.len() > MAX_MODELS {
        return Err(format!(
            "must list at most {MAX_MODELS} names or patterns, got {}",
            list.len()
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for (i, model) in list.into_iter().enumerate() {
        let model = model.trim().to_owned();
        if model.is_empty() {
            return Err(format!("entry {i} is empty"));
        }
        if model.chars().count() > MAX_MODEL_CHARS {
            return Err(format!(
                "entry {i} must be at most {MAX_MODEL_CHARS} characters"
            ));
        }
        if model.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("entry {i} ({model:?}) contains whitespace"));
        }
        if !out.contains(&model) {
            out.push(model);
        }
    }
    Ok(out)
}

/// The endpoint as stored: the parsed URL without a trailing slash, so `…/v1` and `…/v1/` are one
/// endpoint and path joining never doubles a slash.
pub fn normalise_endpoint(url: &url::Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

/// Whether `url`'s host is a literal link-local or cloud-metadata address: IPv4 169.254.0.0/16
/// (AWS, GCP and Azure instance metadata at 169.254.169.254, ECS task credentials at
/// 169.254.170.2), IPv6 link-local fe80::/10, AWS's IPv6 metadata address fd00:ec2::254, and
/// those IPv4 addresses written as IPv4-mapped or -compatible IPv6 (`[::ffff:169.254.169.254]`).
///
/// Only literal addresses can be told without resolving the name; the URL parser has already
/// normalised the other spellings of an IPv4 address (`2852039166`, `0xa9.0xfe.0xa9.0xfe`,
/// a trailing dot) to the dotted form.
pub fn is_link_local_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_link_local(),
        Some(url::Host::Ipv6(ip)) => {
            const AWS_METADATA_V6: std::net::Ipv6Addr =
                std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
            (ip.segments()[0] & 0xffc0) == 0xfe80
                || ip == AWS_METADATA_V6
                || ip.to_ipv4().is_some_and(|v4| v4.is_link_local())
        }
        Some(url::Host::Domain(_)) | None => false,
    }
}

/// The refusals for an account whose `endpoint` or `proxy` is at a link-local or metadata
/// address ([`is_link_local_host`]), unless the deployment allows them (relayd's
/// `allow_link_local_endpoints`): a relay that an admin can point anywhere must not become a way
/// to read the host's cloud credentials. Only addresses being set are checked: pass the values
/// stored before (`previous`) so that an existing account can still be edited in other ways.
pub fn link_local_errors(
    settings: &AccountSettings,
    secrets: &AccountSecrets,
    previous: Option<(&AccountSettings, &AccountSecrets)>,
) -> Vec<FieldError> {
    let refuse = |field: &str, what: &str| FieldError {
        row: None,
        name: None,
        field: Some(field.to_owned()),
        message: format!(
            "{what} is a link-local or cloud-metadata address (169.254.0.0/16, fe80::/10, \
             fd00:ec2::254); relayd refuses those unless `allow_link_local_endpoints = true`"
        ),
    };
    let mut errors = Vec::new();
    let endpoint_is_new = previous.is_none_or(|(s, _)| s.endpoint != settings.endpoint);
    if endpoint_is_new
        && url::Url::parse(&settings.endpoint).is_ok_and(|url| is_link_local_host(&url))
    {
        errors.push(refuse("endpoint", "the endpoint's host"));
    }
    let proxy_is_new = previous.is_none_or(|(_, p)| p.proxy != secrets.proxy);
    if proxy_is_new
        && let Some(proxy) = &secrets.proxy
        && url::Url::parse(proxy.trim()).is_ok_and(|url| is_link_local_host(&url))
    {
        errors.push(refuse("proxy", "the proxy's host"));
    }
    errors
}

/// A URL with its password replaced by `****`, for display and logs.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                // set_password only fails for URLs that cannot have credentials, which this one has.
                let _ = url.set_password(Some("****"));
            }
            url.to_string()
        }
        Err(_) => "[unparseable URL]".to_owned(),
    }
}

/// Whether a client-facing model name matches one `supportedModels` entry: an exact name, or a
/// pattern in which `*` stands for any run of characters (`claude-*opus*`).
pub fn model_matches(pattern: &str, model: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == model;
    }
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = model.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return true;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether a `supportedModels` entry is a pattern rather than an exact name.
pub fn is_pattern(entry: &str) -> bool {
    entry.contains('*')
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
}

/// A partial update of an account (`PATCH /admin/v1/accounts/{id}`). Absent fields stay as they
/// are; `null` clears the optional ones (`apiKey`, `proxy`, `description`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccountPatch {
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New endpoint.
    #[serde(
        default,
        alias = "azureEndpoint",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint: Option<String>,
    /// New deployment name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_name: Option<String>,
    /// New key (`null` removes it).
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub api_key: Option<Option<String>>,
    /// New kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<AccountKind>,
    /// New Azure api-version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// New model list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_models: Option<Vec<String>>,
    /// New priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// New concurrency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i64>,
    /// New proxy (`null` removes it).
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub proxy: Option<Option<String>>,
    /// Enable or disable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// New description (`null` removes it).
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub description: Option<Option<String>>,
    /// New output-token clamp (`null` removes it).
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_output_tokens: Option<Option<i64>>,
    /// New thinking mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<ThinkingMapping>,
    /// Send `max_completion_tokens` instead of `max_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_max_completion_tokens: Option<bool>,
    /// Send earlier `thinking` blocks back as `reasoning_content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_reasoning_content: Option<bool>,
}

impl AccountPatch {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Applies the patch on top of current values and re-validates the result as a whole.
    pub fn apply(
        self,
        settings: &AccountSettings,
        secrets: &AccountSecrets,
    ) -> Result<(AccountSettings, AccountSecrets), Vec<FieldError>> {
        let kind_explicit = self.kind.or_else(|| {
            // Keep the stored kind unless the endpoint changes; then infer it afresh.
            self.endpoint.is_none().then_some(settings.kind)
        });
        let input = AccountInput {
            name: self.name.unwrap_or_else(|| settings.name.clone()),
            endpoint: self.endpoint.unwrap_or_else(|| settings.endpoint.clone()),
            deployment_name: self
                .deployment_name
                .unwrap_or_else(|| settings.deployment_name.clone()),
            api_key: self.api_key.unwrap_or_else(|| secrets.api_key.clone()),
            kind: kind_explicit,
            api_version: Some(
                self.api_version
                    .unwrap_or_else(|| settings.api_version.clone()),
            ),
            supported_models: Some(
                self.supported_models
                    .unwrap_or_else(|| settings.supported_models.clone()),
            ),
            priority: Some(self.priority.unwrap_or(i64::from(settings.priority))),
            concurrency: Some(self.concurrency.unwrap_or(i64::from(settings.concurrency))),
            proxy: self.proxy.unwrap_or_else(|| secrets.proxy.clone()),
            enabled: Some(self.enabled.unwrap_or(settings.enabled)),
            description: self
                .description
                .unwrap_or_else(|| settings.description.clone()),
            max_output_tokens: self
                .max_output_tokens
                .unwrap_or(settings.max_output_tokens.map(i64::from)),
            thinking: Some(self.thinking.unwrap_or(settings.thinking)),
            use_max_completion_tokens: Some(
                self.use_max_completion_tokens
                    .unwrap_or(settings.use_max_completion_tokens),
            ),
            send_reasoning_content: Some(
                self.send_reasoning_content
                    .unwrap_or(settings.send_reasoning_content),
            ),
        };
        input.validate()
    }
}

/// Deserializes a field that distinguishes "absent" (outer `None`, via `#[serde(default)]`) from
/// `null` (`Some(None)`).
fn double_option<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> AccountInput {
        AccountInput {
            name: "qwen".into(),
            endpoint: "http://127.0.0.1:8000/v1/".into(),
            deployment_name: "qwen3".into(),
            ..AccountInput::default()
        }
    }

    #[test]
    fn defaults_are_applied() {
        let (s, secrets) = input().validate().unwrap();
        assert_eq!(s.priority, 50);
        assert_eq!(s.concurrency, 50);
        assert_eq!(s.supported_models.len(), 14);
        assert_eq!(s.endpoint, "http://127.0.0.1:8000/v1");
        assert_eq!(s.kind, AccountKind::Openai);
        assert_eq!(s.api_version, "2024-10-21");
        assert!(s.enabled);
        assert_eq!(secrets, AccountSecrets::default());
    }

    #[test]
    fn azure_host_infers_azure_kind() {
        let mut i = input();
        i.endpoint = "https://res.openai.azure.com".into();
        assert_eq!(i.validate().unwrap().0.kind, AccountKind::Azure);
    }

    #[test]
    fn every_bad_field_is_reported() {
        let mut i = input();
        i.endpoint = "ftp://x".into();
        i.priority = Some(0);
        i.concurrency = Some(-1);
        i.supported_models = Some(vec![]);
        let errs = i.validate().unwrap_err();
        let fields: Vec<_> = errs.iter().filter_map(|e| e.field.as_deref()).collect();
        assert_eq!(
            fields,
            ["endpoint", "supportedModels", "priority", "concurrency"]
        );
    }

    #[test]
    fn control_characters_are_refused_naming_the_field() {
        let mut i = input();
        i.name = "evil\u{1b}[2J".into();
        i.deployment_name = "qwen\u{7}".into();
        i.api_version = Some("2024\u{7}-10-21".into());
        i.description = Some("title\u{1b}]0;x\u{7}".into());
        let errs = i.validate().unwrap_err();
        let fields: Vec<_> = errs.iter().filter_map(|e| e.field.as_deref()).collect();
        assert_eq!(
            fields,
            ["name", "deploymentName", "apiVersion", "description"]
        );
        assert!(
            errs.iter()
                .all(|e| e.message.contains("control characters"))
        );
        let mut i = input();
        i.description = Some("two\nlines\tand a tab".into());
        assert!(i.validate().is_ok());
    }

    #[test]
    fn lengths_are_bounded_naming_the_field() {
        let long = |n: usize| "a".repeat(n);
        let mut i = input();
        i.name = long(MAX_NAME_CHARS + 1);
        i.endpoint = format!("http://h/{}", long(MAX_URL_BYTES));
        i.deployment_name = long(MAX_DEPLOYMENT_CHARS + 1);
        i.api_key = Some(long(MAX_API_KEY_BYTES + 1));
        i.api_version = Some(long(MAX_API_VERSION_CHARS + 1));
        i.proxy = Some(format!("http://p/{}", long(MAX_URL_BYTES)));
        i.description = Some(long(MAX_DESCRIPTION_CHARS + 1));
        let errs = i.validate().unwrap_err();
        let fields: Vec<_> = errs.iter().filter_map(|e| e.field.as_deref()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "endpoint",
                "deploymentName",
                "apiKey",
                "proxy",
                "apiVersion",
                "description"
            ]
        );
        assert!(
            errs.iter().all(|e| e.message.contains("at most")),
            "{errs:?}"
        );

        let mut i = input();
        i.supported_models = Some((0..=MAX_MODELS).map(|n| format!("m{n}")).collect());
        let errs = i.validate().unwrap_err();
        assert_eq!(errs[0].field.as_deref(), Some("supportedModels"));
        assert!(errs[0].message.contains("at most"), "{errs:?}");
        let mut i = input();
        i.supported_models = Some(vec![long(MAX_MODEL_CHARS + 1)]);
        let errs = i.validate().unwrap_err();
        assert_eq!(errs[0].field.as_deref(), Some("supportedModels"));

        // Exactly at every limit is fine.
        let mut i = input();
        i.name = long(MAX_NAME_CHARS);
        let endpoint = "http://h/";
        i.endpoint = format!("{endpoint}{}", long(MAX_URL_BYTES - endpoint.len()));
        i.deployment_name = long(MAX_DEPLOYMENT_CHARS);
        i.api_key = Some(long(MAX_API_KEY_BYTES));
        i.api_version = Some(long(MAX_API_VERSION_CHARS));
        i.description = Some(long(MAX_DESCRIPTION_CHARS));
        i.supported_models = Some(
            (0..MAX_MODELS)
                .map(|n| format!("{n}{}", long(MAX_MODEL_CHARS - n.to_string().len())))
                .collect(),
        );
        assert!(i.validate().is_ok());
    }

    #[test]
    fn link_local_and_metadata_hosts_are_recognised() {
        let link_local = [
            "http://169.254.169.254/v1",
            "http://169.254.170.2",
            "http://169.254.0.1:8000/v1",
            "http://169.254.169.254./v1",
            "http://2852039166/v1",
            "http://0xa9.0xfe.0xa9.0xfe/v1",
            "http://[fe80::1]:8000/v1",
            "http://[febf::1]/v1",
            "http://[fd00:ec2::254]/latest",
            "http://[::ffff:169.254.169.254]/v1",
            "socks5://[::ffff:a9fe:a9fe]:1080",
        ];
        for raw in link_local {
            assert!(is_link_local_host(&url::Url::parse(raw).unwrap()), "{raw}");
        }
        let ordinary = [
            "http://127.0.0.1:8000/v1",
            "http://198.51.100.5:8000/v1",
            "http://169.253.255.255/v1",
            "http://169.255.0.1/v1",
            "http://[fec0::1]/v1",
            "http://[fd00:ec2::253]/v1",
            "http://[::1]:8000/v1",
            "https://res.openai.azure.com",
            "http://metadata.google.internal/v1",
        ];
        for raw in ordinary {
            assert!(!is_link_local_host(&url::Url::parse(raw).unwrap()), "{raw}");
        }
    }

    #[test]
    fn link_local_errors_name_the_field_and_spare_unchanged_values() {
        let (settings, secrets) = AccountInput {
            endpoint: "http://169.254.169.254/v1".into(),
            proxy: Some("http://[fe80::1]:3128".into()),
            ..input()
        }
        .validate()
        .unwrap();
        let errors = link_local_errors(&settings, &secrets, None);
        let fields: Vec<_> = errors.iter().filter_map(|e| e.field.as_deref()).collect();
        assert_eq!(fields, ["endpoint", "proxy"]);
        assert!(errors[0].message.contains("allow_link_local_endpoints"));
        // Stored like this already (before the rule existed): other edits stay possible.
        let mut renamed = settings.clone();
        renamed.name = "renamed".into();
        assert!(link_local_errors(&renamed, &secrets, Some((&settings, &secrets))).is_empty());
        let (ordinary, plain) = input().validate().unwrap();
        assert!(link_local_errors(&ordinary, &plain, None).is_empty());
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let err = serde_json::from_str::<AccountInput>(
            r#"{"name":"a","endpoint":"http://h","deploymentName":"d","colour":"red"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn azure_endpoint_alias_is_accepted() {
        let i: AccountInput = serde_json::from_str(
            r#"{"name":"a","azureEndpoint":"http://h/v1","deploymentName":"d"}"#,
        )
        .unwrap();
        assert_eq!(i.endpoint, "http://h/v1");
    }

    #[test]
    fn patterns_match() {
        assert!(model_matches("claude-*opus*", "claude-opus-4-8"));
        assert!(model_matches("claude-*opus*", "claude-3-opus-20240229"));
        assert!(!model_matches("claude-*opus*", "claude-sonnet-4-5"));
        assert!(model_matches("*", "anything"));
        assert!(model_matches("gpt-4o", "gpt-4o"));
        assert!(!model_matches("gpt-4o", "gpt-4o-mini"));
        assert!(model_matches("gpt-*-mini", "gpt-4o-mini"));
        assert!(!model_matches("a*b*b", "ab"));
    }

    #[test]
    fn secret_info_hides_short_keys() {
        assert_eq!(SecretInfo::describe(Some("sk-1")).last4, None);
        assert_eq!(
            SecretInfo::describe(Some("sk-abcdefgh1234"))
                .last4
                .as_deref(),
            Some("1234")
        );
    }

    #[test]
    fn patch_null_clears_and_absent_keeps() {
        let (s, secrets) = AccountInput {
            api_key: Some("sk-secret-value".into()),
            description: Some("d".into()),
            ..input()
        }
        .validate()
        .unwrap();
        let patch: AccountPatch = serde_json::from_str(r#"{"apiKey":null,"priority":7}"#).unwrap();
        let (s2, sec2) = patch.apply(&s, &secrets).unwrap();
        assert_eq!(sec2.api_key, None);
        assert_eq!(s2.priority, 7);
        assert_eq!(s2.description.as_deref(), Some("d"));
    }

    #[test]
    fn redact_hides_password() {
        assert_eq!(
            redact_url("socks5://u:pw@127.0.0.1:1080"),
            "socks5://u:****@127.0.0.1:1080"
        );
    }
}
