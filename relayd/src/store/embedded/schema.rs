//! Opening the embedded store: the page cache, creating every table, the format version check,
//! and the migration of the older raw-usage layout, all in the opening transaction.

use std::path::Path;

use redb::{Database, DatabaseError, ReadableTable as _, TableHandle as _, WriteTransaction};

use super::{
    ACCOUNT_NAMES, ACCOUNTS, KEYS, LEGACY_USAGE_RECORD_TIMES, LEGACY_USAGE_RECORD_TIMES_TABLE,
    LEGACY_USAGE_RECORDS, META, PROFILES, USAGE_DAILY, USAGE_HOURLY, USAGE_LOG, backend,
    begin_write, from_redb,
};
use crate::store::{FORMAT_VERSION, FORMAT_VERSION_META, StoreResult, check_format_version};

/// The page cache of the embedded store.
const CACHE_BYTES: usize = 8 * 1024 * 1024;

pub(super) fn open_blocking(path: &Path) -> StoreResult<Database> {
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
        txn.open_table(PROFILES).map_err(from_redb)?;
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
