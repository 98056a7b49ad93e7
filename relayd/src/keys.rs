//! The relay-key registry: admin operations on keys and the lock-free snapshot that
//! authenticates every client request with one hash-map lookup and a constant-time compare.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use shared::account::validate_models;
use shared::error::FieldError;
use shared::key::{
    CreateKeyRequest, CreatedKey, KeyId, RelayKey, UpdateKeyRequest, validate_key_name,
};
use shared::time::now_millis;

use crate::auth::{generate_relay_key, key_id_of, secret_matches};
use crate::error::{ApiError, ErrorKind};
use crate::store::{KeyRecord, Store, StoreError};

/// An authenticated client as the proxy sees it: the public record of the relay key it presented
/// (id, name, limits, allowed models, bound accounts), never the stored secret hash. Made only by
/// [`KeyRegistry::authenticate`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct Caller(Arc<RelayKey>);

impl std::ops::Deref for Caller {
    type Target = RelayKey;

    fn deref(&self) -> &RelayKey {
        &self.0
    }
}

/// A key in the authentication snapshot: the hash to check and the caller it authenticates.
struct Entry {
    secret_hash: String,
    caller: Caller,
}

/// Admin operations on relay keys plus the authentication snapshot.
pub struct KeyRegistry {
    store: Arc<dyn Store>,
    snapshot: ArcSwap<HashMap<KeyId, Entry>>,
    writes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for KeyRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRegistry")
            .field("keys", &self.snapshot.load().len())
            .finish_non_exhaustive()
    }
}

/// Why a presented credential was refused. The client sees one generic 401 message; operators
/// see the reason in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credential at all.
    Missing,
    /// Not a relay key, or no such key, or the secret does not match.
    Unknown,
    /// Revoked by an operator.
    Revoked,
    /// Disabled by an operator.
    Disabled,
    /// Past its expiry.
    Expired,
}

impl Refusal {
    /// The client-facing message.
    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => {
                "missing API key: send a relay key as `Authorization: Bearer`, `x-api-key` or `api-key`"
            }
            Self::Unknown => "invalid API key",
            Self::Revoked => "this API key has been revoked",
            Self::Disabled => "this API key is disabled",
            Self::Expired => "this API key has expired",
        }
    }
}

impl KeyRegistry {
    /// Loads every key from the store.
    pub async fn load(store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let snapshot = index(store.list_keys().await?);
        Ok(Self {
            store,
            snapshot: ArcSwap::from_pointee(snapshot),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    /// Re-reads every key from the store.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let snapshot = index(self.store.list_keys().await?);
        self.snapshot.store(Arc::new(snapshot));
        Ok(())
    }

    /// Checks a presented secret.
    pub fn authenticate(&self, presented: Option<&str>) -> Result<Caller, Refusal> {
        let presented = presented.ok_or(Refusal::Missing)?;
        let id = key_id_of(presented).ok_or(Refusal::Unknown)?;
        let snapshot = self.snapshot.load();
        let entry = snapshot.get(&id).ok_or(Refusal::Unknown)?;
        if !secret_matches(presented, &entry.secret_hash) {
            return Err(Refusal::Unknown);
        }
        match entry.caller.refusal(now_millis()) {
            None => Ok(entry.caller.clone()),
            Some("revoked") => Err(Refusal::Revoked),
            Some("disabled") => Err(Refusal::Disabled),
            Some(_) => Err(Refusal::Expired),
        }
    }

    /// Every key, oldest first.
    pub fn list(&self) -> Vec<RelayKey> {
        let mut keys: Vec<RelayKey> = self
            .snapshot
            .load()
            .values()
            .map(|e| RelayKey::clone(&e.caller))
            .collect();
        keys.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        keys
    }

    /// Keys usable right now.
    pub fn active_count(&self) -> usize {
        let now = now_millis();
        self.snapshot
            .load()
            .values()
            .filter(|e| e.caller.refusal(now).is_none())
            .count()
    }

    /// One key by id.
    pub fn get(&self, id: &str) -> Result<RelayKey, ApiError> {
        self.snapshot
            .load()
            .get(&KeyId(id.to_owned()))
            .map(|e| RelayKey::clone(&e.caller))
            .ok_or_else(|| not_found(id))
    }

    /// Creates a key; the answer carries the secret, which is never shown again.
    pub async fn create(&self, request: CreateKeyRequest) -> Result<CreatedKey, ApiError> {
        let mut errors = Vec::new();
        check(&mut errors, "name", validate_key_name(&request.name));
        let allowed_models = check_models(&mut errors, request.allowed_models);
        check_limits(&mut errors, &request.limits);
        if !errors.is_empty() {
            return Err(ApiError::fields(errors));
        }
        let generated = generate_relay_key();
        let now = now_millis();
        let key = RelayKey {
            id: generated.id,
            name: request.name.trim().to_owned(),
            enabled: request.enabled.unwrap_or(true),
            revoked_at: None,
            expires_at: request.expires_at,
            bound_accounts: request.bound_accounts,
            allowed_models,
            limits: request.limits,
            description: request.description.filter(|d| !d.is_empty()),
            created_at: now,
            updated_at: now,
        };
        let record = KeyRecord {
            key: key.clone(),
            secret_hash: generated.hash,
        };
        let _guard = self.writes.lock().await;
        self.store.put_key(&record).await?;
        self.reload().await?;
        Ok(CreatedKey {
            key,
            secret: generated.secret,
        })
    }

    /// Applies a partial update.
    pub async fn update(&self, id: &str, request: UpdateKeyRequest) -> Result<RelayKey, ApiError> {
        let _guard = self.writes.lock().await;
        let mut record = self.current(id).await?;
        let mut errors = Vec::new();
        let key = &mut record.key;
        if let Some(name) = request.name {
            check(&mut errors, "name", validate_key_name(&name));
            key.name = name.trim().to_owned();
        }
        if let Some(enabled) = request.enabled {
            key.enabled = enabled;
        }
        if let Some(accounts) = request.bound_accounts {
            key.bound_accounts = accounts;
        }
        if let Some(models) = request.allowed_models {
            key.allowed_models = check_models(&mut errors, models);
        }
        if let Some(limits) = request.limits {
            check_limits(&mut errors, &limits);
            key.limits = limits;
        }
        if let Some(expires_at) = request.expires_at {
            key.expires_at = expires_at;
        }
        if let Some(description) = request.description {
            key.description = description.filter(|d| !d.is_empty());
        }
        if !errors.is_empty() {
            return Err(ApiError::fields(errors));
        }
        key.updated_at = now_millis();
        self.store.put_key(&record).await?;
        self.reload().await?;
        Ok(record.key)
    }

    /// Revokes a key for good (the record stays, for usage history).
    pub async fn revoke(&self, id: &str) -> Result<RelayKey, ApiError> {
        let _guard = self.writes.lock().await;
        let mut record = self.current(id).await?;
        if record.key.revoked_at.is_none() {
            let now = now_millis();
            record.key.revoked_at = Some(now);
            record.key.updated_at = now;
            self.store.put_key(&record).await?;
            self.reload().await?;
        }
        Ok(record.key)
    }

    async fn current(&self, id: &str) -> Result<KeyRecord, ApiError> {
        self.store
            .get_key(&KeyId(id.to_owned()))
            .await?
            .ok_or_else(|| not_found(id))
    }
}

fn index(records: Vec<KeyRecord>) -> HashMap<KeyId, Entry> {
    records
        .into_iter()
        .map(|r| {
            let entry = Entry {
                secret_hash: r.secret_hash,
                caller: Caller(Arc::new(r.key)),
            };
            (entry.caller.id.clone(), entry)
        })
        .collect()
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(ErrorKind::NotFound, format!("no relay key with id {id:?}"))
}

fn check(errors: &mut Vec<FieldError>, field: &str, result: Result<(), String>) {
    if let Err(message) = result {
        errors.push(FieldError {
            row: None,
            name: None,
            field: Some(field.to_owned()),
            message,
        });
    }
}

fn check_models(errors: &mut Vec<FieldError>, models: Vec<String>) -> Vec<String> {
    if models.is_empty() {
        return models;
    }
    match validate_models(models) {
        Ok(models) => models,
        Err(message) => {
            check(errors, "allowedModels", Err(message));
            Vec::new()
        }
    }
}

fn check_limits(errors: &mut Vec<FieldError>, limits: &shared::key::KeyLimits) {
    if limits.requests_per_minute == Some(0) {
        check(
            errors,
            "limits.requestsPerMinute",
            Err("must be at least 1 (omit for no limit)".to_owned()),
        );
    }
    if limits.tokens_per_day == Some(0) {
        check(
            errors,
            "limits.tokensPerDay",
            Err("must be at least 1 (omit for no limit)".to_owned()),
        );
    }
    if limits.concurrency == Some(0) {
        check(
            errors,
            "limits.concurrency",
            Err("must be at least 1 (omit for no limit)".to_owned()),
        );
    }
}
