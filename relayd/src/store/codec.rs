//! JSON encoding of stored records, shared by both backends so a record written by one reads the
//! same in the other (and an export/import between them is a byte copy).
//!
//! Decoding is strict except for one deliberate leniency: an account whose
//! `settings.supportedModels` is damaged (not a non-empty array of strings — typically a
//! hand-edited record) still loads, with [`shared::account::fallback_supported_models`] and a
//! warning naming the account, because refusing to start over one model list would take every
//! other account down with it. Any other damage is [`StoreError::Corrupt`].

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use shared::account::fallback_supported_models;

use super::{AccountRecord, KeyRecord, StoreError, StoreResult};

/// Encodes an account record as JSON.
pub fn encode_account(record: &AccountRecord) -> StoreResult<String> {
    encode(&format!("account {}", record.id), record)
}

/// Encodes a relay-key record as JSON.
pub fn encode_key(record: &KeyRecord) -> StoreResult<String> {
    encode(&format!("key {}", record.key.id), record)
}

/// Decodes an account stored under `id`, falling back to the default model list (with a warning)
/// when only `settings.supportedModels` is damaged. A record whose own id differs from the one it
/// is stored under is corrupt.
pub fn decode_account(id: &str, json: &str) -> StoreResult<AccountRecord> {
    let what = || format!("account {id}");
    let mut value: Value = serde_json::from_str(json).map_err(|e| corrupt(what(), &e))?;
    if let Some(settings) = value.get_mut("settings").and_then(Value::as_object_mut) {
        let models = settings.get("supportedModels");
        if !models.is_some_and(is_model_list) {
            let problem = match models {
                None => "missing".to_owned(),
                Some(Value::Array(list)) if list.is_empty() => "an empty list".to_owned(),
                Some(Value::Array(_)) => "a list with non-string entries".to_owned(),
                Some(other) => format!("{} instead of a list", json_type(other)),
            };
            let name = settings
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("<unnamed>");
            tracing::warn!(
                account_id = id,
                account = name,
                problem = %problem,
                "stored supportedModels of account {name:?} ({id}) is {problem}; \
                 serving the fallback model list until the account is updated"
            );
            settings.insert(
                "supportedModels".to_owned(),
                Value::from(fallback_supported_models()),
            );
        }
    }
    let record: AccountRecord = serde_json::from_value(value).map_err(|e| corrupt(what(), &e))?;
    if record.id.as_str() != id {
        return Err(StoreError::Corrupt {
            what: what(),
            detail: format!("the record carries id {}", record.id),
        });
    }
    Ok(record)
}

/// Decodes a relay key stored under `id`.
pub fn decode_key(id: &str, json: &str) -> StoreResult<KeyRecord> {
    let what = || format!("key {id}");
    let record: KeyRecord = decode(json).map_err(|e| corrupt(what(), &e))?;
    if record.key.id.as_str() != id {
        return Err(StoreError::Corrupt {
            what: what(),
            detail: format!("the record carries id {}", record.key.id),
        });
    }
    Ok(record)
}

/// Encodes a probe result as JSON.
pub fn encode_profile(profile: &shared::profile::Profile) -> StoreResult<String> {
    encode("profile", profile)
}

/// Decodes the profile stored for account `id`; `None`, with a warning, when it cannot be read
/// (a newer relayd's, or damaged): profiles are observations, and the next probe writes a new
/// one, so no profile is ever a reason to refuse a start.
pub fn decode_profile(id: &str, json: &str) -> Option<shared::profile::Profile> {
    match decode(json) {
        Ok(profile) => Some(profile),
        Err(e) => {
            tracing::warn!(account = id, error = %e, "ignoring a stored profile that cannot be read");
            None
        }
    }
}

fn is_model_list(value: &Value) -> bool {
    value
        .as_array()
        .is_some_and(|list| !list.is_empty() && list.iter().all(Value::is_string))
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn encode<T: Serialize>(what: &str, record: &T) -> StoreResult<String> {
    // Serialising these plain-data types cannot fail; mapping instead of panicking keeps a future
    // non-string map key from taking the process down.
    serde_json::to_string(record).map_err(|e| corrupt(what.to_owned(), &e))
}

fn decode<T: DeserializeOwned>(json: &str) -> Result<T, serde_json::Error> {
    serde_json::from_str(json)
}

fn corrupt(what: String, err: &serde_json::Error) -> StoreError {
    // serde_json's messages name the field and position, never the whole value, so sealed
    // blobs and settings stay out of logs.
    StoreError::Corrupt {
        what,
        detail: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use shared::account::{AccountId, AccountKind, AccountSettings, ThinkingMapping};
    use shared::key::{KeyId, KeyLimits, RelayKey};

    use super::*;
    use crate::crypto::Sealed;

    fn account() -> AccountRecord {
        AccountRecord {
            id: AccountId("acc_0123456789abcdef".into()),
            settings: AccountSettings {
                name: "qwen".into(),
                kind: AccountKind::Openai,
                endpoint: "http://127.0.0.1:8000/v1".into(),
                deployment_name: "qwen3".into(),
                api_version: "2024-10-21".into(),
                supported_models: vec!["gpt-4o".into()],
                priority: 50,
                concurrency: 5,
                enabled: true,
                description: None,
                max_output_tokens: None,
                thinking: ThinkingMapping::Drop,
                use_max_completion_tokens: None,
                send_reasoning_content: false,
                upstream_auth: None,
                context_window: None,
                anthropic_mode: shared::account::AnthropicMode::Auto,
            },
            api_key: Some(Sealed {
                nonce: "bm9uY2U=".into(),
                ct: "Y3Q=".into(),
            }),
            proxy: None,
            created_at: 1,
            updated_at: 2,
        }
    }

    /// Captures formatted log output of `f`, which runs twice: once before the capture, so that
    /// its callsites are registered by this thread. A callsite registered by another thread
    /// (another test) may compute its interest before the capture's subscriber exists and store
    /// it after the rebuild below, which would then miss it and leave it switched off.
    fn capture_logs(mut f: impl FnMut()) -> String {
        f();
        #[derive(Clone)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf(Arc::default());
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            // A callsite first hit by another test thread without a subscriber is cached as
            // "never interested"; recomputing the cache with ours in place makes the capture
            // independent of test order.
            tracing::callsite::rebuild_interest_cache();
            f();
        });
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn account_roundtrip() {
        let rec = account();
        let json = encode_account(&rec).unwrap();
        assert_eq!(decode_account(rec.id.as_str(), &json).unwrap(), rec);
    }

    #[test]
    fn key_roundtrip() {
        let rec = KeyRecord {
            key: RelayKey {
                id: KeyId("key_0123456789abcdef".into()),
                name: "ci".into(),
                enabled: true,
                revoked_at: None,
                expires_at: Some(5),
                bound_accounts: vec![],
                allowed_models: vec!["gpt-*".into()],
                limits: KeyLimits::default(),
                description: None,
                created_at: 1,
                updated_at: 1,
            },
            secret_hash: "ab".repeat(32),
        };
        let json = encode_key(&rec).unwrap();
        assert_eq!(decode_key(rec.key.id.as_str(), &json).unwrap(), rec);
        assert!(matches!(
            decode_key("key_ffffffffffffffff", &json),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn damaged_model_list_falls_back_with_a_warning_naming_the_account() {
        for damaged in [
            serde_json::json!("gpt-4o"),
            serde_json::json!([]),
            serde_json::json!([1, 2]),
            Value::Null,
        ] {
            let mut value = serde_json::to_value(account()).unwrap();
            value["settings"]["supportedModels"] = damaged.clone();
            let json = value.to_string();
            let mut decoded = None;
            let logs = capture_logs(|| {
                decoded = Some(decode_account("acc_0123456789abcdef", &json).unwrap());
            });
            let decoded = decoded.unwrap();
            assert_eq!(
                decoded.settings.supported_models,
                fallback_supported_models(),
                "{damaged}"
            );
            assert!(logs.contains("WARN"), "{logs}");
            assert!(logs.contains("qwen"), "{logs}");
            assert!(logs.contains("acc_0123456789abcdef"), "{logs}");
        }
    }

    #[test]
    fn missing_model_list_falls_back_too() {
        let mut value = serde_json::to_value(account()).unwrap();
        value["settings"]
            .as_object_mut()
            .unwrap()
            .remove("supportedModels");
        let decoded = decode_account("acc_0123456789abcdef", &value.to_string()).unwrap();
        assert_eq!(
            decoded.settings.supported_models,
            fallback_supported_models()
        );
    }

    #[test]
    fn other_damage_is_corrupt() {
        let mut value = serde_json::to_value(account()).unwrap();
        value["settings"]["priority"] = serde_json::json!("high");
        let err = decode_account("acc_0123456789abcdef", &value.to_string()).unwrap_err();
        match err {
            StoreError::Corrupt { what, detail } => {
                assert_eq!(what, "account acc_0123456789abcdef");
                assert!(detail.contains("invalid type"), "{detail}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            decode_account("acc_0123456789abcdef", "{not json"),
            Err(StoreError::Corrupt { .. })
        ));
        let json = encode_account(&account()).unwrap();
        assert!(matches!(
            decode_account("acc_ffffffffffffffff", &json),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
