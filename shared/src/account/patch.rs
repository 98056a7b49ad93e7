//! Partial updates of an account (`PATCH /admin/v1/accounts/{id}`): what may change, and how a
//! patch is applied over the stored values and validated again as a whole.

use serde::{Deserialize, Serialize};

use super::{
    AccountInput, AccountKind, AccountSecrets, AccountSettings, AnthropicMode, ThinkingMapping,
    UpstreamAuth,
};
use crate::error::FieldError;

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
    /// New credential header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_auth: Option<UpstreamAuth>,
    /// New context window (`null` returns to the detected one).
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub context_window: Option<Option<i64>>,
    /// New Anthropic-client mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic_mode: Option<AnthropicMode>,
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
            use_max_completion_tokens: self
                .use_max_completion_tokens
                .or(settings.use_max_completion_tokens),
            send_reasoning_content: Some(
                self.send_reasoning_content
                    .unwrap_or(settings.send_reasoning_content),
            ),
            // A changed kind brings its own default header unless one is given.
            upstream_auth: self.upstream_auth.or(settings.upstream_auth),
            context_window: self
                .context_window
                .unwrap_or(settings.context_window.map(i64::from)),
            anthropic_mode: Some(self.anthropic_mode.unwrap_or(settings.anthropic_mode)),
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
