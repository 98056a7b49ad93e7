//! Usage in the embedded store: raw records in a time-keyed log, rolled up in the same write
//! transaction into hourly and daily counter cells, read back by plan and pruned by age.

use std::collections::HashMap;

use redb::{Database, ReadableTable as _, Table};
use shared::time::UnixMillis;
use shared::usage::UsageRecord;

use super::{EmbeddedStore, USAGE_LOG, backend, begin_write, from_redb, usage_table};
use crate::store::usage::{
    CellDims, Granularity, UsageCell, UsageCounters, UsagePlan, UsageWrite, cell_key,
    parse_cell_key, period_prefix,
};
use crate::store::{StoreError, StoreResult};

/// Both aggregate granularities, in the order batches are rolled up.
const GRANULARITIES: [Granularity; 2] = [Granularity::Hour, Granularity::Day];

/// The time index key of a raw usage record.
pub(super) fn record_time_key(at: UnixMillis, request_id: &str) -> String {
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
    pub(super) fn record_usage_blocking(
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

    pub(super) fn usage_cells_blocking(
        db: &Database,
        plan: UsagePlan,
    ) -> StoreResult<Vec<UsageCell>> {
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

    pub(super) fn prune_usage_blocking(db: &Database, before: UnixMillis) -> StoreResult<u64> {
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
