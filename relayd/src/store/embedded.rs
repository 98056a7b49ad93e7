//! The embedded backend: one redb file in the data directory, the default when no Redis is
//! configured.
//!
//! redb gives serialisable transactions over a copy-on-write B-tree with checksummed commits, so
//! a `kill -9` at any moment leaves either the previous or the next committed state. Every write
//! here is exactly one write transaction committed with [`Durability::Immediate`] (fsync before
//! `commit` returns), which is what makes an acknowledged write survive a crash.
//!
//! redb is a blocking API: every transaction runs on tokio's blocking pool, never on a runtime
//! worker. redb also takes an exclusive lock on the file, which doubles as the guard against two
//! relayd processes sharing one data directory.
//!
//! This file holds the tables, the store and its [`Store`] impl; `schema` opens the file (tables,
//! format version, migration) and `usage` holds the usage log and its hourly and daily cells.

mod schema;
mod usage;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{
    CommitError, Database, Durability, ReadableTable as _, StorageError, Table, TableDefinition,
    TableError, TransactionError, WriteTransaction,
};
use shared::account::AccountId;
use shared::key::KeyId;
use shared::profile::Profile;
use shared::time::UnixMillis;
use shared::usage::{UsageQuery, UsageRecord, UsageReport};

use super::codec::{
    decode_account, decode_key, decode_profile, encode_account, encode_key, encode_profile,
};
use super::usage::{Granularity, UsagePlan, UsageWrite, summarise};
use super::{
    AccountRecord, KeyRecord, Store, StoreError, StoreKind, StoreResult, plan_account_batch,
};
use schema::open_blocking;

/// Name of the table of accounts: id → record JSON.
pub const ACCOUNTS_TABLE: &str = "accounts";
/// Name of the account name index: name → id.
pub const ACCOUNT_NAMES_TABLE: &str = "account_names";
/// Name of the table of relay keys: id → record JSON.
pub const KEYS_TABLE: &str = "keys";
/// Name of the table of probe results: account id → profile JSON.
pub const PROFILES_TABLE: &str = "profiles";
/// Name of the metadata table: name → value.
pub const META_TABLE: &str = "meta";
/// Name of the raw usage table: `{at:020}|{request id}` → record JSON. Keyed by arrival time so
/// a batch appends to the right edge of the tree (a few pages per commit, where a table keyed by
/// random request ids dirtied one leaf per record), and pruning by age is a range. A retried
/// record carries the same `at` and id, so the key still finds duplicates.
pub const USAGE_LOG_TABLE: &str = "usage_log";
/// Raw usage of stores written before the time-keyed log: request id → record JSON. Moved into
/// [`USAGE_LOG_TABLE`] when the store is opened.
const LEGACY_USAGE_RECORDS_TABLE: &str = "usage_records";
/// The time index that went with [`LEGACY_USAGE_RECORDS_TABLE`]: `{at:020}|{request id}` → empty.
const LEGACY_USAGE_RECORD_TIMES_TABLE: &str = "usage_record_times";
/// Name of the hourly aggregates: `{hour start:020}|[key,account,model]` → counters JSON.
pub const USAGE_HOURLY_TABLE: &str = "usage_hourly";
/// Name of the daily aggregates: `{day start:020}|[key,account,model]` → counters JSON.
pub const USAGE_DAILY_TABLE: &str = "usage_daily";

const ACCOUNTS: TableDefinition<'_, &str, &str> = TableDefinition::new(ACCOUNTS_TABLE);
const ACCOUNT_NAMES: TableDefinition<'_, &str, &str> = TableDefinition::new(ACCOUNT_NAMES_TABLE);
const KEYS: TableDefinition<'_, &str, &str> = TableDefinition::new(KEYS_TABLE);
const META: TableDefinition<'_, &str, &str> = TableDefinition::new(META_TABLE);
const PROFILES: TableDefinition<'_, &str, &str> = TableDefinition::new(PROFILES_TABLE);
const USAGE_LOG: TableDefinition<'_, &str, &str> = TableDefinition::new(USAGE_LOG_TABLE);
const LEGACY_USAGE_RECORDS: TableDefinition<'_, &str, &str> =
    TableDefinition::new(LEGACY_USAGE_RECORDS_TABLE);
const LEGACY_USAGE_RECORD_TIMES: TableDefinition<'_, &str, &str> =
    TableDefinition::new(LEGACY_USAGE_RECORD_TIMES_TABLE);
const USAGE_HOURLY: TableDefinition<'_, &str, &str> = TableDefinition::new(USAGE_HOURLY_TABLE);
const USAGE_DAILY: TableDefinition<'_, &str, &str> = TableDefinition::new(USAGE_DAILY_TABLE);

/// The aggregate table of a granularity.
fn usage_table(granularity: Granularity) -> TableDefinition<'static, &'static str, &'static str> {
    match granularity {
        Granularity::Hour => USAGE_HOURLY,
        Granularity::Day => USAGE_DAILY,
    }
}

/// A [`Store`] over one redb file.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: Arc<PathBuf>,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens the store file at `path`, creating it (and its tables and format version) if it does
    /// not exist. Fails with [`StoreError::TooNew`] if a newer relayd wrote it, and with a clear
    /// message if another process holds it open.
    pub async fn open(path: impl Into<PathBuf>) -> StoreResult<Self> {
        let path = path.into();
        let opened = path.clone();
        let db = tokio::task::spawn_blocking(move || open_blocking(&opened))
            .await
            .map_err(|e| backend(format!("opening the store failed: {e}")))??;
        Ok(Self {
            db: Arc::new(db),
            path: Arc::new(path),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` against the database on the blocking pool.
    async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> StoreResult<T> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| backend(format!("storage task failed: {e}")))?
    }
}

fn begin_write(db: &Database) -> StoreResult<WriteTransaction> {
    let mut txn = db.begin_write().map_err(from_redb)?;
    // Immediate is redb's default; said explicitly because crash safety depends on it.
    txn.set_durability(Durability::Immediate);
    Ok(txn)
}

fn backend(detail: String) -> StoreError {
    StoreError::Backend {
        backend: "embedded",
        detail,
    }
}

/// Maps any redb error (they all convert into [`redb::Error`]) into a backend error.
fn from_redb(e: impl Into<redb::Error>) -> StoreError {
    backend(e.into().to_string())
}

// Assert at compile time that every error type used with `from_redb` converts.
const _: fn() = || {
    fn converts<E: Into<redb::Error>>() {}
    converts::<CommitError>();
    converts::<StorageError>();
    converts::<TableError>();
    converts::<TransactionError>();
};

/// The name an existing account record holds, read leniently: only the name is needed to free
/// the index entry, and a record damaged elsewhere must still be replaceable.
fn stored_name(json: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    value
        .pointer("/settings/name")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
}

/// Removes the name index entry of account `id`, if it still points at `id`.
fn free_name(
    accounts: &Table<'_, &str, &str>,
    names: &mut Table<'_, &str, &str>,
    id: &str,
) -> StoreResult<()> {
    let old = accounts
        .get(id)
        .map_err(from_redb)?
        .and_then(|v| stored_name(v.value()));
    if let Some(old) = old {
        let owner = names
            .get(old.as_str())
            .map_err(from_redb)?
            .map(|v| v.value().to_owned());
        if owner.as_deref() == Some(id) {
            names.remove(old.as_str()).map_err(from_redb)?;
        }
    }
    Ok(())
}

#[async_trait]
impl Store for EmbeddedStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Embedded
    }

    async fn ping(&self) -> StoreResult<()> {
        self.run(|db| {
            let txn = db.begin_read().map_err(from_redb)?;
            txn.open_table(META).map_err(from_redb)?;
            Ok(())
        })
        .await
    }

    async fn list_accounts(&self) -> StoreResult<Vec<AccountRecord>> {
        self.run(|db| {
            let txn = db.begin_read().map_err(from_redb)?;
            let table = txn.open_table(ACCOUNTS).map_err(from_redb)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(from_redb)? {
                let (id, json) = entry.map_err(from_redb)?;
                out.push(decode_account(id.value(), json.value())?);
            }
            out.sort_by(|a, b| {
                (a.settings.name.as_str(), &a.id).cmp(&(b.settings.name.as_str(), &b.id))
            });
            Ok(out)
        })
        .await
    }

    async fn get_account(&self, id: &AccountId) -> StoreResult<Option<AccountRecord>> {
        let id = id.as_str().to_owned();
        self.run(move |db| {
            let txn = db.begin_read().map_err(from_redb)?;
            let table = txn.open_table(ACCOUNTS).map_err(from_redb)?;
            let json = table.get(id.as_str()).map_err(from_redb)?;
            json.map(|json| decode_account(&id, json.value()))
                .transpose()
        })
        .await
    }

    async fn get_account_by_name(&self, name: &str) -> StoreResult<Option<AccountRecord>> {
        let name = name.to_owned();
        self.run(move |db| {
            // One read transaction: the index and the record are from the same snapshot.
            let txn = db.begin_read().map_err(from_redb)?;
            let names = txn.open_table(ACCOUNT_NAMES).map_err(from_redb)?;
            let Some(id) = names
                .get(name.as_str())
                .map_err(from_redb)?
                .map(|v| v.value().to_owned())
            else {
                return Ok(None);
            };
            let accounts = txn.open_table(ACCOUNTS).map_err(from_redb)?;
            let Some(json) = accounts.get(id.as_str()).map_err(from_redb)? else {
                return Ok(None);
            };
            let record = decode_account(&id, json.value())?;
            Ok((record.settings.name == name).then_some(record))
        })
        .await
    }

    async fn put_accounts(&self, records: &[AccountRecord]) -> StoreResult<()> {
        let batch = plan_account_batch(records)?;
        if batch.is_empty() {
            return Ok(());
        }
        let batch: Vec<(String, String, String)> = batch
            .into_iter()
            .map(|r| {
                Ok((
                    r.id.as_str().to_owned(),
                    r.settings.name.clone(),
                    encode_account(r)?,
                ))
            })
            .collect::<StoreResult<_>>()?;
        self.run(move |db| {
            let txn = begin_write(db)?;
            {
                let mut accounts = txn.open_table(ACCOUNTS).map_err(from_redb)?;
                let mut names = txn.open_table(ACCOUNT_NAMES).map_err(from_redb)?;
                // Check every name before writing anything; returning early drops the
                // transaction uncommitted, so a refused batch writes nothing.
                for (id, name, _) in &batch {
                    let owner = names
                        .get(name.as_str())
                        .map_err(from_redb)?
                        .map(|v| v.value().to_owned());
                    if let Some(owner) = owner
                        && owner != *id
                        && !batch.iter().any(|(other, _, _)| *other == owner)
                    {
                        return Err(StoreError::NameTaken { name: name.clone() });
                    }
                }
                // Free every old name first, so names swapped within one batch work.
                for (id, _, _) in &batch {
                    free_name(&accounts, &mut names, id)?;
                }
                for (id, name, json) in &batch {
                    names
                        .insert(name.as_str(), id.as_str())
                        .map_err(from_redb)?;
                    accounts
                        .insert(id.as_str(), json.as_str())
                        .map_err(from_redb)?;
                }
            }
            txn.commit().map_err(from_redb)
        })
        .await
    }

    async fn delete_account(&self, id: &AccountId) -> StoreResult<bool> {
        let id = id.as_str().to_owned();
        self.run(move |db| {
            let txn = begin_write(db)?;
            let existed = {
                let mut accounts = txn.open_table(ACCOUNTS).map_err(from_redb)?;
                let mut names = txn.open_table(ACCOUNT_NAMES).map_err(from_redb)?;
                free_name(&accounts, &mut names, &id)?;
                let removed = accounts.remove(id.as_str()).map_err(from_redb)?;
                let mut profiles = txn.open_table(PROFILES).map_err(from_redb)?;
                profiles.remove(id.as_str()).map_err(from_redb)?;
                removed.is_some()
            };
            if existed {
                txn.commit().map_err(from_redb)?;
            }
            Ok(existed)
        })
        .await
    }

    async fn put_profile(&self, id: &AccountId, profile: &Profile) -> StoreResult<bool> {
        let id = id.as_str().to_owned();
        let json = encode_profile(profile)?;
        self.run(move |db| {
            let txn = begin_write(db)?;
            let exists = {
                let accounts = txn.open_table(ACCOUNTS).map_err(from_redb)?;
                accounts.get(id.as_str()).map_err(from_redb)?.is_some()
            };
            if exists {
                let mut profiles = txn.open_table(PROFILES).map_err(from_redb)?;
                profiles
                    .insert(id.as_str(), json.as_str())
                    .map_err(from_redb)?;
                drop(profiles);
                txn.commit().map_err(from_redb)?;
            }
            Ok(exists)
        })
        .await
    }

    async fn list_profiles(&self) -> StoreResult<Vec<(AccountId, Profile)>> {
        self.run(|db| {
            let txn = db.begin_read().map_err(from_redb)?;
            let table = txn.open_table(PROFILES).map_err(from_redb)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(from_redb)? {
                let (id, json) = entry.map_err(from_redb)?;
                if let Some(profile) = decode_profile(id.value(), json.value()) {
                    out.push((AccountId(id.value().to_owned()), profile));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn list_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        self.run(|db| {
            let txn = db.begin_read().map_err(from_redb)?;
            let table = txn.open_table(KEYS).map_err(from_redb)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(from_redb)? {
                let (id, json) = entry.map_err(from_redb)?;
                out.push(decode_key(id.value(), json.value())?);
            }
            out.sort_by(|a, b| (a.key.created_at, &a.key.id).cmp(&(b.key.created_at, &b.key.id)));
            Ok(out)
        })
        .await
    }

    async fn get_key(&self, id: &KeyId) -> StoreResult<Option<KeyRecord>> {
        let id = id.as_str().to_owned();
        self.run(move |db| {
            let txn = db.begin_read().map_err(from_redb)?;
            let table = txn.open_table(KEYS).map_err(from_redb)?;
            let json = table.get(id.as_str()).map_err(from_redb)?;
            json.map(|json| decode_key(&id, json.value())).transpose()
        })
        .await
    }

    async fn put_key(&self, record: &KeyRecord) -> StoreResult<()> {
        let id = record.key.id.as_str().to_owned();
        let json = encode_key(record)?;
        self.run(move |db| {
            let txn = begin_write(db)?;
            txn.open_table(KEYS)
                .map_err(from_redb)?
                .insert(id.as_str(), json.as_str())
                .map_err(from_redb)?;
            txn.commit().map_err(from_redb)
        })
        .await
    }

    async fn get_meta(&self, name: &str) -> StoreResult<Option<String>> {
        let name = name.to_owned();
        self.run(move |db| {
            let txn = db.begin_read().map_err(from_redb)?;
            let table = txn.open_table(META).map_err(from_redb)?;
            let value = table.get(name.as_str()).map_err(from_redb)?;
            Ok(value.map(|v| v.value().to_owned()))
        })
        .await
    }

    async fn set_meta(&self, name: &str, value: &str) -> StoreResult<()> {
        let (name, value) = (name.to_owned(), value.to_owned());
        self.run(move |db| {
            let txn = begin_write(db)?;
            txn.open_table(META)
                .map_err(from_redb)?
                .insert(name.as_str(), value.as_str())
                .map_err(from_redb)?;
            txn.commit().map_err(from_redb)
        })
        .await
    }

    async fn record_usage(
        &self,
        records: &[UsageRecord],
        _keep_raw: std::time::Duration,
    ) -> StoreResult<UsageWrite> {
        if records.is_empty() {
            return Ok(UsageWrite::default());
        }
        // Encoded before the transaction so the blocking section only writes.
        let batch = records
            .iter()
            .map(|r| {
                let json = serde_json::to_string(r)
                    .map_err(|e| backend(format!("encoding usage record: {e}")))?;
                Ok((r.clone(), json))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        self.run(move |db| Self::record_usage_blocking(db, &batch))
            .await
    }

    async fn usage_totals(&self, query: &UsageQuery) -> StoreResult<UsageReport> {
        let plan = UsagePlan::for_query(query);
        let cells = self
            .run(move |db| Self::usage_cells_blocking(db, plan))
            .await?;
        Ok(summarise(query, cells))
    }

    async fn prune_usage(&self, before: UnixMillis) -> StoreResult<u64> {
        self.run(move |db| Self::prune_usage_blocking(db, before))
            .await
    }
}

#[cfg(test)]
mod tests;
