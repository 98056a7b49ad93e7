//! Tests of the embedded backend's own behaviour (the shared conformance suite is in
//! `tests/it/store_conformance.rs`): the file lock, the format version, duplicate records and
//! the legacy usage migration.

use redb::{ReadableTableMetadata as _, TableHandle as _};

use super::usage::record_time_key;
use super::*;
use crate::store::{FORMAT_VERSION, FORMAT_VERSION_META};

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
