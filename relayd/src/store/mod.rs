//! Persistence behind one domain-level async trait, [`Store`], with two backends:
//! [`embedded`] (a redb file in the data directory, the default) and [`redis`] (for several relayd
//! instances sharing one Redis).
//!
//! Backends only ever see ciphertext for secrets: encryption happens above this trait (see
//! `crate::crypto`), and records carry sealed blobs. Both backends run the same conformance suite
//! (`tests/it/store_conformance.rs`).

pub mod codec;
pub mod embedded;
pub mod redis;
pub mod usage;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use shared::account::{AccountId, AccountSettings};
use shared::key::{KeyId, RelayKey};
use shared::profile::Profile;
use shared::time::UnixMillis;
use shared::usage::{UsageQuery, UsageRecord, UsageReport};

use crate::crypto::Sealed;
use crate::error::{ApiError, ErrorKind};

/// Which backend a store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// redb file in the data directory.
    Embedded,
    /// Redis server.
    Redis,
}

impl StoreKind {
    /// Lower-case name for status output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Redis => "redis",
        }
    }
}

/// An account as stored: settings in clear, secrets sealed with the record id as associated data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountRecord {
    /// Stable id.
    pub id: AccountId,
    /// Non-secret settings.
    pub settings: AccountSettings,
    /// Sealed upstream API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Sealed>,
    /// Sealed proxy URL (it may carry credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Sealed>,
    /// Creation time.
    pub created_at: UnixMillis,
    /// Last change.
    pub updated_at: UnixMillis,
}

/// A relay key as stored: the public record plus a hash of its secret part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRecord {
    /// The public record.
    pub key: RelayKey,
    /// Hex SHA-256 of the secret part of the key.
    pub secret_hash: String,
}

/// Everything a backend can fail with. Every backend maps its own errors into this.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A write would give a second account an existing name.
    #[error("an account named {name:?} already exists")]
    NameTaken {
        /// The contested name.
        name: String,
    },
    /// A stored value could not be decoded.
    #[error("stored record {what} is damaged: {detail}")]
    Corrupt {
        /// Which record.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The store was written by a newer relayd.
    #[error(
        "the store has format version {found}, newer than this relayd understands ({supported}); upgrade relayd"
    )]
    TooNew {
        /// Version found in the store.
        found: u32,
        /// Highest version this build supports.
        supported: u32,
    },
    /// The backend failed (I/O, connection, transaction).
    #[error("{backend} store: {detail}")]
    Backend {
        /// `embedded` or `redis`.
        backend: &'static str,
        /// What failed, without secrets.
        detail: String,
    },
}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The store's format version. Bump it (and teach [`Store::open`]-style code to migrate) when the
/// record layout changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;

/// Name of the metadata entry holding the store's format version.
pub const FORMAT_VERSION_META: &str = "formatVersion";

/// Checks a stored format version against [`FORMAT_VERSION`].
fn check_format_version(found: &str) -> StoreResult<()> {
    let found: u32 = found.trim().parse().map_err(|_| StoreError::Corrupt {
        what: format!("meta {FORMAT_VERSION_META}"),
        detail: format!("{found:?} is not a version number"),
    })?;
    if found > FORMAT_VERSION {
        return Err(StoreError::TooNew {
            found,
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

/// Normalises a `put_accounts` batch for the backends: a record repeated by id counts once (the
/// last one wins, as if written in order), and two different ids claiming one name fail with
/// [`StoreError::NameTaken`] before anything touches the backend. What is left for a backend to
/// check is only the names held by accounts outside the batch.
fn plan_account_batch(records: &[AccountRecord]) -> StoreResult<Vec<&AccountRecord>> {
    let mut by_id: Vec<&AccountRecord> = Vec::with_capacity(records.len());
    let mut index = std::collections::HashMap::with_capacity(records.len());
    for record in records {
        match index.get(&record.id) {
            Some(&i) => by_id[i] = record,
            None => {
                index.insert(&record.id, by_id.len());
                by_id.push(record);
            }
        }
    }
    let mut names = std::collections::HashMap::with_capacity(by_id.len());
    for record in &by_id {
        if let Some(other) = names.insert(record.settings.name.as_str(), &record.id)
            && *other != record.id
        {
            return Err(StoreError::NameTaken {
                name: record.settings.name.clone(),
            });
        }
    }
    Ok(by_id)
}

/// Domain-level persistence. Every method is one atomic step: a reader never sees half of a write,
/// and an acknowledged write survives a crash.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is.
    fn kind(&self) -> StoreKind;

    /// Checks that the backend answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    /// All accounts, ordered by name.
    async fn list_accounts(&self) -> StoreResult<Vec<AccountRecord>>;

    /// One account by id.
    async fn get_account(&self, id: &AccountId) -> StoreResult<Option<AccountRecord>>;

    /// One account by exact name.
    async fn get_account_by_name(&self, name: &str) -> StoreResult<Option<AccountRecord>>;

    /// Inserts or replaces (by id) every record in one atomic step. Fails with
    /// [`StoreError::NameTaken`] — writing nothing — if any name would then belong to two ids.
    /// A renamed record frees its old name.
    async fn put_accounts(&self, records: &[AccountRecord]) -> StoreResult<()>;

    /// Deletes an account (and its profile); `false` when there was none.
    async fn delete_account(&self, id: &AccountId) -> StoreResult<bool>;

    /// Records what a probe of account `id` found, replacing the last profile; `false`, with
    /// nothing written, when there is no such account. Kept beside the account, never in its
    /// record: a probe never races an admin write or changes `updatedAt`.
    async fn put_profile(&self, id: &AccountId, profile: &Profile) -> StoreResult<bool>;

    /// Every stored profile, by account id. One that cannot be decoded (written by a newer
    /// relayd, or damaged) is left out with a warning: the next probe replaces it.
    async fn list_profiles(&self) -> StoreResult<Vec<(AccountId, Profile)>>;

    /// All relay keys, ordered by creation time.
    async fn list_keys(&self) -> StoreResult<Vec<KeyRecord>>;

    /// One relay key by id.
    async fn get_key(&self, id: &KeyId) -> StoreResult<Option<KeyRecord>>;

    /// Inserts or replaces a relay key.
    async fn put_key(&self, record: &KeyRecord) -> StoreResult<()>;

    /// Reads a small metadata value (format version, encryption-key check).
    async fn get_meta(&self, name: &str) -> StoreResult<Option<String>>;

    /// Writes a small metadata value.
    async fn set_meta(&self, name: &str, value: &str) -> StoreResult<()>;

    /// Records a batch of finished requests in one atomic step: each raw record is stored under
    /// its request id and added into the hourly and daily aggregates. A record whose request id
    /// is already stored is skipped, so re-sending a batch whose acknowledgement was lost never
    /// counts twice. `keep_raw` is how long raw records must be kept at least (backends with
    /// expiring keys use it as their time to live; [`Store::prune_usage`] removes older ones).
    async fn record_usage(
        &self,
        records: &[UsageRecord],
        keep_raw: std::time::Duration,
    ) -> StoreResult<usage::UsageWrite>;

    /// Usage totals from the aggregates, filtered and grouped as `query` asks (see
    /// [`usage::UsagePlan`] for how `since`/`until` are rounded).
    async fn usage_totals(&self, query: &UsageQuery) -> StoreResult<UsageReport>;

    /// Deletes raw usage records of requests that arrived before `before`; aggregates are kept.
    /// Returns how many were deleted.
    async fn prune_usage(&self, before: UnixMillis) -> StoreResult<u64>;
}

/// A store failure as an API error: the error layer sits below the store, so the mapping lives
/// here, next to the error it maps.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NameTaken { .. } => ApiError::new(ErrorKind::Conflict, e.to_string()),
            StoreError::Backend { .. } => {
                tracing::error!(error = %e, "store failure");
                ApiError::new(
                    ErrorKind::Unavailable,
                    "the store is unavailable; the change was not saved",
                )
                .with_retry_after(1)
            }
            StoreError::Corrupt { .. } | StoreError::TooNew { .. } => {
                ApiError::internal("the store holds a damaged record", &e)
            }
        }
    }
}
