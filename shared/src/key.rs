//! Relay API keys: the credentials clients (Claude Code, OpenAI SDKs) present to relayd.
//!
//! A key's secret has the form `rk_<id>_<secret>`: the public id finds the record in one lookup,
//! and only a hash of the secret part is ever stored. The secret is shown once, at creation.

use serde::{Deserialize, Serialize};

use crate::time::UnixMillis;

/// Stable identifier of a relay key (`key_` + 16 hex digits); also embedded in the secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(pub String);

impl KeyId {
    /// Prefix every key id starts with.
    pub const PREFIX: &'static str = "key_";

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Optional limits on one key. `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyLimits {
    /// Requests per rolling minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Input + output tokens per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

/// A relay key as the admin API returns it (never with its secret, except once at creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayKey {
    /// Stable id.
    pub id: KeyId,
    /// Human-chosen label, used in logs and usage reports.
    pub name: String,
    /// Disabled keys are refused with 401 but kept.
    pub enabled: bool,
    /// When set, the key was revoked at that time and is refused forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<UnixMillis>,
    /// When set, the key is refused from that time on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<UnixMillis>,
    /// Account names this key may use; empty means all.
    #[serde(default)]
    pub bound_accounts: Vec<String>,
    /// Client-facing model names (or `*` patterns) this key may ask for; empty means all.
    #[serde(default)]
    pub allowed_models: Vec<String>,
    /// Rate and volume limits.
    #[serde(default)]
    pub limits: KeyLimits,
    /// Free text for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Creation time.
    pub created_at: UnixMillis,
    /// Last change.
    pub updated_at: UnixMillis,
}

impl RelayKey {
    /// Why the key cannot be used at `now`, if it cannot.
    pub fn refusal(&self, now: UnixMillis) -> Option<&'static str> {
        if self.revoked_at.is_some() {
            Some("revoked")
        } else if !self.enabled {
            Some("disabled")
        } else if self.expires_at.is_some_and(|at| at <= now) {
            Some("expired")
        } else {
            None
        }
    }
}

/// `POST /admin/v1/keys`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Label for the key.
    pub name: String,
    /// Account names the key may use (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bound_accounts: Vec<String>,
    /// Models the key may ask for (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_models: Vec<String>,
    /// Limits.
    #[serde(default)]
    pub limits: KeyLimits,
    /// Expiry time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<UnixMillis>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Starts enabled unless `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// The answer to a key creation: the only time the secret is ever shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    /// The stored key.
    pub key: RelayKey,
    /// The secret to give to clients (`rk_…`). Not retrievable later.
    pub secret: String,
}

/// `PATCH /admin/v1/keys/{id}`: absent fields stay; `null` clears `expiresAt` and `description`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateKeyRequest {
    /// New label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Enable or disable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// New bound accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_accounts: Option<Vec<String>>,
    /// New allowed models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_models: Option<Vec<String>>,
    /// New limits (replaces all three).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<KeyLimits>,
    /// New expiry (`null` removes it).
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<Option<UnixMillis>>,
    /// New description (`null` removes it).
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub description: Option<Option<String>>,
}

fn double_option<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// Checks a key name: non-empty, at most 128 characters, no control characters.
pub fn validate_key_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.chars().count() > 128 {
        return Err("must be at most 128 characters".to_owned());
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    Ok(())
}
