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

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{
    CommitError, Database, DatabaseError, Durability, ReadableTable as _, StorageError, Table,
    TableDefinition, TableError, TableHandle as _, TransactionError, WriteTransaction,
};
use shared::account::AccountId;
use shared::key::KeyId;
use shared::time::UnixMillis;
use shared::usage::{UsageQuery, UsageRecord, UsageReport};

use super::codec::{decode_account, decode_key, encode_account, encode_key};
use super::usage::{
    CellDims, Granularity, UsageCell, UsageCounters, UsagePlan, UsageWrite, cell_key,
    parse_cell_key, period_prefix, summarise,
};
use super::{
    AccountRecord, FORMAT_VERSION, FORMAT_VERSION_META, KeyRecord, Store, StoreError, StoreKind,
    StoreResult, check_format_version, plan_account_batch,
};

/// Name of the table of accounts: id → record JSON.
pub const ACCOUNTS_TABLE: &str = "accounts";
/// Name of the account name index: name → id.
pub const ACCOUNT_NAMES_TABLE: &str = "account_names";
/// Name of the table of relay keys: id → record JSON.
pub const KEYS_TABLE: &str = "keys";
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

/// Both aggregate granularities, in the order batches are rolled up.
const GRANULARITIES: [Granularity; 2] = [Granularity::Hour, Granularity::Day];

/// The page cache of the embedded store.
const CACHE_BYTES: usize = 8 * 1024 * 1024;

fn open_blocking(path: &Path) -> StoreResult<Database> {
    // redb's page cache grows to 1 GiB by default; relayd's working set (accounts, keys, the
    // usage aggregates of recent hours) is a few MiB, and it shares the machine with GPUs' hosts.
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => backend(format!(
                "{} is locked by another process (data directory in use by another relayd?)",
                path.display()
            )),
            other => backend(format!("cannot open {}: {other}", path.display())),
        })?;
    let txn = begin_write(&db)?;
    {
        // Opening a table in a write transaction creates it, so readers never meet a missing one.
        txn.open_table(ACCOUNTS).map_err(from_redb)?;
        txn.open_table(ACCOUNT_NAMES).map_err(from_redb)?;
        txn.open_table(KEYS).map_err(from_redb)?;
        // Usage tables arrived after format 1; creating them here is what lets a newer relayd
        // open an older store without a migration.
        txn.open_table(USAGE_LOG).map_err(from_redb)?;
        txn.open_table(USAGE_HOURLY).map_err(from_redb)?;
        txn.open_table(USAGE_DAILY).map_err(from_redb)?;
        let mut meta = txn.open_table(META).map_err(from_redb)?;
        let found = meta
            .get(FORMAT_VERSION_META)
            .map_err(from_redb)?
            .map(|v| v.value().to_owned());
        match found {
            // Returning drops `txn` uncommitted: a refused store is left exactly as it was.
            Some(found) => check_format_version(&found)?,
            None => {
                meta.insert(FORMAT_VERSION_META, FORMAT_VERSION.to_string().as_str())
                    .map_err(from_redb)?;
            }
        }
    }
    migrate_legacy_usage(&txn)?;
    txn.commit().map_err(from_redb)?;
    Ok(db)
}

/// Moves raw usage records of the older two-table layout into the time-keyed log and drops the
/// old tables. Runs in the opening transaction, so a crash leaves one layout or the other. An
/// older relayd that opens the store afterwards writes into recreated old tables, which the next
/// open moves again.
fn migrate_legacy_usage(txn: &WriteTransaction) -> StoreResult<()> {
    let legacy = txn
        .list_tables()
        .map_err(from_redb)?
        .any(|t| t.name() == LEGACY_USAGE_RECORD_TIMES_TABLE);
    if !legacy {
        return Ok(());
    }
    let mut moved = 0u64;
    {
        let records = txn.open_table(LEGACY_USAGE_RECORDS).map_err(from_redb)?;
        let times = txn
            .open_table(LEGACY_USAGE_RECORD_TIMES)
            .map_err(from_redb)?;
        let mut log = txn.open_table(USAGE_LOG).map_err(from_redb)?;
        for entry in times.iter().map_err(from_redb)? {
            let (time_key, _) = entry.map_err(from_redb)?;
            let time_key = time_key.value();
            let Some((_, id)) = time_key.split_once('|') else {
                continue;
            };
            if let Some(json) = records.get(id).map_err(from_redb)? {
                log.insert(time_key, json.value()).map_err(from_redb)?;
                moved += 1;
            }
        }
    }
    txn.delete_table(LEGACY_USAGE_RECORDS).map_err(from_redb)?;
    txn.delete_table(LEGACY_USAGE_RECORD_TIMES)
        .map_err(from_redb)?;
    tracing::info!(
        records = moved,
        "moved raw usage records into the time-keyed usage log"
    );
    Ok(())
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
                removed.is_some()
            };
            if existed {
                txn.commit().map_err(from_redb)?;
            }
            Ok(existed)
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

/// The time index key of a raw usage record.
fn record_time_key(at: UnixMillis, request_id: &str) -> String {
    format!("{}{request_id}", period_prefix(at))
}

fn encode_counters(counters: &UsageCounters) -> StoreResult<String> {
    serde_json::to_string(counters).map_err(|e| backend(format!("encoding usage counters: {e}")))
}

fn decode_counters(key: &str, json: &str) -> StoreResult<UsageCounters> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        what: format!("usage cell {key}"),
        detail: e.to_string(),
    })
}

/// The cell a record counts in, borrowed from the record while a batch is summed.
#[derive(PartialEq, Eq, Hash)]
struct CellRef<'a> {
    period: UnixMillis,
    key: &'a str,
    account: &'a str,
    model: &'a str,
}

impl CellRef<'_> {
    /// The cell's key in an aggregate table.
    fn key(&self) -> String {
        let dims = CellDims {
            key: self.key.to_owned(),
            account: self.account.to_owned(),
            model: self.model.to_owned(),
        };
        cell_key(self.period, &dims)
    }
}

/// Adds `counters` into the cell at `key` of `table`.
fn add_to_cell(
    table: &mut Table<'_, &str, &str>,
    key: &str,
    counters: &UsageCounters,
) -> StoreResult<()> {
    let mut cell = match table.get(key).map_err(from_redb)? {
        Some(json) => decode_counters(key, json.value())?,
        None => UsageCounters::default(),
    };
    cell.add(counters);
    table
        .insert(key, encode_counters(&cell)?.as_str())
        .map_err(from_redb)?;
    Ok(())
}

impl EmbeddedStore {
    fn record_usage_blocking(
        db: &Database,
        batch: &[(UsageRecord, String)],
    ) -> StoreResult<UsageWrite> {
        let txn = begin_write(db)?;
        let mut write = UsageWrite::default();
        {
            let mut log = txn.open_table(USAGE_LOG).map_err(from_redb)?;
            // A batch mostly repeats a few (key, account, model) cells: add them up first and
            // touch each cell once, not once per record.
            let mut cells: [HashMap<CellRef<'_>, UsageCounters>; 2] = Default::default();
            for (record, json) in batch {
                let key = record_time_key(record.at, &record.request_id);
                // Inserting first and looking at what it replaced is one tree walk where a
                // lookup before the insert was two; duplicates are rare. Inside the transaction,
                // so a duplicate within the batch is caught too.
                let replaced = log
                    .insert(key.as_str(), json.as_str())
                    .map_err(from_redb)?
                    .map(|old| old.value().to_owned());
                if let Some(old) = replaced {
                    // The first record stays as it was written.
                    log.insert(key.as_str(), old.as_str()).map_err(from_redb)?;
                    write.duplicates += 1;
                    continue;
                }
                let counters = UsageCounters::of(record);
                for (sums, granularity) in cells.iter_mut().zip(GRANULARITIES) {
                    let cell = CellRef {
                        period: granularity.start(record.at),
                        key: &record.key,
                        account: record.account.as_deref().unwrap_or_default(),
                        model: &record.model,
                    };
                    sums.entry(cell).or_default().add(&counters);
                }
                write.recorded += 1;
            }
            for (sums, granularity) in cells.iter().zip(GRANULARITIES) {
                let mut table = txn
                    .open_table(usage_table(granularity))
                    .map_err(from_redb)?;
                for (cell, counters) in sums {
                    add_to_cell(&mut table, &cell.key(), counters)?;
                }
            }
        }
        if write.recorded > 0 {
            txn.commit().map_err(from_redb)?;
        }
        Ok(write)
    }

    fn usage_cells_blocking(db: &Database, plan: UsagePlan) -> StoreResult<Vec<UsageCell>> {
        let txn = db.begin_read().map_err(from_redb)?;
        let table = txn
            .open_table(usage_table(plan.granularity))
            .map_err(from_redb)?;
        let from = period_prefix(plan.from.unwrap_or(0));
        let range = match plan.to {
            Some(to) => table.range(from.as_str()..period_prefix(to).as_str()),
            None => table.range(from.as_str()..),
        }
        .map_err(from_redb)?;
        let mut cells = Vec::new();
        for entry in range {
            let (key, json) = entry.map_err(from_redb)?;
            let (period, dims) = parse_cell_key(key.value())?;
            cells.push(UsageCell {
                period,
                dims,
                counters: decode_counters(key.value(), json.value())?,
            });
        }
        Ok(cells)
    }

    fn prune_usage_blocking(db: &Database, before: UnixMillis) -> StoreResult<u64> {
        let txn = begin_write(db)?;
        let pruned = {
            let mut log = txn.open_table(USAGE_LOG).map_err(from_redb)?;
            let end = period_prefix(before);
            let mut old = Vec::new();
            for entry in log.range(..end.as_str()).map_err(from_redb)? {
                let (key, _) = entry.map_err(from_redb)?;
                old.push(key.value().to_owned());
            }
            for key in &old {
                log.remove(key.as_str()).map_err(from_redb)?;
            }
            old.len()
        };
        if pruned > 0 {
            txn.commit().map_err(from_redb)?;
        }
        Ok(u64::try_from(pruned).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use redb::ReadableTableMetadata as _;

    use super::*;

    #[tokio::test]
    async fn second_open_of_one_file_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relayd.redb");
        let first = EmbeddedStore::open(&path).await.unwrap();
        let err = EmbeddedStore::open(&path).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("in use by another relayd"), "{msg}");
        assert!(msg.contains("relayd.redb"), "{msg}");
        drop(first);
        EmbeddedStore::open(&path).await.unwrap();
    }

    #[tokio::test]
    async fn new_store_records_its_format_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("s.redb"))
            .await
            .unwrap();
        assert_eq!(
            store.get_meta(FORMAT_VERSION_META).await.unwrap(),
            Some(FORMAT_VERSION.to_string())
        );
    }

    fn record(id: &str, at: UnixMillis) -> UsageRecord {
        UsageRecord {
            request_id: id.to_owned(),
            at,
            key: "k".to_owned(),
            account: Some("a".to_owned()),
            model: "m".to_owned(),
            upstream_model: None,
            tokens: shared::usage::TokenCounts {
                input_tokens: 10,
                output_tokens: 2,
                cache_read_tokens: 0,
            },
            estimated: false,
            status: 200,
            streamed: false,
            latency_ms: 1,
            ttfb_ms: Some(1),
        }
    }

    /// A request id seen before is skipped, and the record first written is the one kept.
    #[tokio::test]
    async fn a_duplicate_record_leaves_the_first_one_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("s.redb"))
            .await
            .unwrap();
        let keep = std::time::Duration::from_secs(60);
        let first = record("req_1", 5_000);
        let mut again = first.clone();
        again.tokens.input_tokens = 999;
        let write = store.record_usage(&[first], keep).await.unwrap();
        assert_eq!((write.recorded, write.duplicates), (1, 0));
        let write = store.record_usage(&[again], keep).await.unwrap();
        assert_eq!((write.recorded, write.duplicates), (0, 1));
        let stored = store
            .run(|db| {
                let txn = db.begin_read().map_err(from_redb)?;
                let log = txn.open_table(USAGE_LOG).map_err(from_redb)?;
                let json = log
                    .get(record_time_key(5_000, "req_1").as_str())
                    .map_err(from_redb)?
                    .map(|v| v.value().to_owned());
                Ok(json)
            })
            .await
            .unwrap()
            .expect("the record is stored");
        let stored: UsageRecord = serde_json::from_str(&stored).unwrap();
        assert_eq!(stored.tokens.input_tokens, 10);
        let totals = store
            .usage_totals(&shared::usage::UsageQuery::default())
            .await
            .unwrap();
        assert_eq!(totals.total.tokens.input_tokens, 10);
    }

    /// A store written with the two-table raw usage layout opens with its records moved into the
    /// time-keyed log: still found as duplicates, still pruned by age, old tables gone.
    #[tokio::test]
    async fn legacy_raw_usage_tables_are_moved_into_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let old = record("req_old", 1_000);
        let recent = record("req_recent", 9_000_000);
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut records = txn.open_table(LEGACY_USAGE_RECORDS).unwrap();
                let mut times = txn.open_table(LEGACY_USAGE_RECORD_TIMES).unwrap();
                for r in [&old, &recent] {
                    let json = serde_json::to_string(r).unwrap();
                    records
                        .insert(r.request_id.as_str(), json.as_str())
                        .unwrap();
                    let key = record_time_key(r.at, &r.request_id);
                    times.insert(key.as_str(), "").unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let store = EmbeddedStore::open(&path).await.unwrap();
        let write = store
            .record_usage(
                &[recent.clone(), record("req_new", 9_000_001)],
                std::time::Duration::from_secs(60),
            )
            .await
            .unwrap();
        assert_eq!((write.recorded, write.duplicates), (1, 1));
        assert_eq!(store.prune_usage(2_000).await.unwrap(), 1);
        let names = store
            .run(|db| {
                let txn = db.begin_read().map_err(from_redb)?;
                let names: Vec<String> = txn
                    .list_tables()
                    .map_err(from_redb)?
                    .map(|t| t.name().to_owned())
                    .collect();
                let log = txn.open_table(USAGE_LOG).map_err(from_redb)?;
                let count = log.len().map_err(from_redb)?;
                Ok((names, count))
            })
            .await
            .unwrap();
        assert!(
            !names.0.iter().any(|n| n.starts_with("usage_record")),
            "{names:?}"
        );
        assert_eq!(names.1, 2, "req_recent and req_new remain");
    }
}
