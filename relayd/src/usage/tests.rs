//! Tests of the usage recorder: queueing, batching, drops, retries and the final flush.

use std::sync::Mutex;
use std::sync::atomic::AtomicU32;

use shared::usage::{TokenCounts, UsageQuery};
use tokio::sync::Semaphore;

use super::*;
use crate::store::StoreError;
use crate::store::embedded::EmbeddedStore;

fn record(n: u64) -> UsageRecord {
    UsageRecord {
        request_id: format!("req-{n}"),
        at: now_millis(),
        key: "ci".into(),
        account: Some("acc".into()),
        model: "gpt-4o".into(),
        upstream_model: None,
        tokens: TokenCounts {
            input_tokens: 10,
            output_tokens: 2,
            cache_read_tokens: 0,
        },
        estimated: false,
        status: 200,
        streamed: false,
        latency_ms: 5,
        ttfb_ms: None,
    }
}

fn config(flush_interval_ms: u64, batch_size: usize, queue_capacity: usize) -> UsageConfig {
    UsageConfig {
        flush_interval_ms,
        batch_size,
        queue_capacity,
        ..UsageConfig::default()
    }
}

/// Remembers what it was given; can fail the next few writes, or hold writes at a gate.
#[derive(Default)]
struct FakeSink {
    written: Mutex<Vec<String>>,
    writes: AtomicU32,
    fail_next: AtomicU32,
    gate: Option<Semaphore>,
}

impl FakeSink {
    fn ids(&self) -> Vec<String> {
        self.written.lock().unwrap().clone()
    }
}

#[async_trait]
impl UsageSink for FakeSink {
    async fn write(&self, records: &[UsageRecord]) -> StoreResult<UsageWrite> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Backend {
                backend: "fake",
                detail: "down".into(),
            });
        }
        let mut written = self.written.lock().unwrap();
        written.extend(records.iter().map(|r| r.request_id.clone()));
        Ok(UsageWrite {
            recorded: records.len() as u64,
            duplicates: 0,
        })
    }

    async fn prune(&self, _before: UnixMillis) -> StoreResult<u64> {
        Ok(0)
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn records_are_flushed_within_the_interval() {
    let sink = Arc::new(FakeSink::default());
    let recorder = UsageRecorder::start_with_sink(sink.clone(), &config(50, 1000, 100));
    let start = Instant::now();
    for n in 0..3 {
        recorder.record(record(n));
    }
    wait_for("the interval flush", || sink.ids().len() == 3).await;
    // One interval plus scheduling slack; far below the 10 s deadline of `wait_for`.
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(sink.ids(), ["req-0", "req-1", "req-2"]);
    assert_eq!(recorder.stats().written, 3);
    recorder.flush_and_stop().await;
}

#[tokio::test]
async fn a_full_batch_is_written_without_waiting_for_the_interval() {
    let sink = Arc::new(FakeSink::default());
    let recorder = UsageRecorder::start_with_sink(sink.clone(), &config(3_600_000, 4, 100));
    for n in 0..4 {
        recorder.record(record(n));
    }
    wait_for("the batch flush", || sink.ids().len() == 4).await;
    recorder.flush_and_stop().await;
}

#[tokio::test]
async fn shutdown_writes_everything_pending() {
    let sink = Arc::new(FakeSink::default());
    let recorder = UsageRecorder::start_with_sink(sink.clone(), &config(3_600_000, 1000, 100));
    for n in 0..7 {
        recorder.record(record(n));
    }
    assert!(sink.ids().is_empty());
    recorder.flush_and_stop().await;
    assert_eq!(sink.ids().len(), 7);
    // After stop, records are refused without blocking and counted.
    recorder.record(record(99));
    assert_eq!(recorder.stats().dropped, 1);
    recorder.flush_and_stop().await;
    assert_eq!(sink.ids().len(), 7);
}

#[tokio::test]
async fn a_full_queue_drops_without_blocking() {
    // Writes wait at a closed gate, so the writer is stuck and the queue (2) fills up.
    let sink = Arc::new(FakeSink {
        gate: Some(Semaphore::new(0)),
        ..FakeSink::default()
    });
    let recorder = UsageRecorder::start_with_sink(sink.clone(), &config(3_600_000, 1, 2));
    recorder.record(record(0));
    wait_for("the first write to start", || {
        sink.writes.load(Ordering::SeqCst) == 1
    })
    .await;
    let start = Instant::now();
    for n in 1..=10 {
        recorder.record(record(n));
    }
    assert!(start.elapsed() < Duration::from_secs(1));
    let stats = recorder.stats();
    assert_eq!(stats.accepted, 3, "{stats:?}");
    assert_eq!(stats.dropped, 8, "{stats:?}");
    sink.gate.as_ref().unwrap().add_permits(100);
    recorder.flush_and_stop().await;
    assert_eq!(sink.ids(), ["req-0", "req-1", "req-2"]);
}

#[tokio::test]
async fn failed_writes_are_retried_with_the_batch_kept() {
    let sink = Arc::new(FakeSink {
        fail_next: AtomicU32::new(3),
        ..FakeSink::default()
    });
    let recorder = UsageRecorder::start_with_sink(sink.clone(), &config(20, 1000, 100));
    for n in 0..5 {
        recorder.record(record(n));
    }
    wait_for("the retried write", || sink.ids().len() == 5).await;
    let stats = recorder.stats();
    assert_eq!(stats.failed_flushes, 3, "{stats:?}");
    assert_eq!((stats.written, stats.pending), (5, 0), "{stats:?}");
    recorder.flush_and_stop().await;
    assert_eq!(sink.ids().len(), 5);
}

#[tokio::test]
async fn flush_now_and_totals_through_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        EmbeddedStore::open(dir.path().join("s.redb"))
            .await
            .unwrap(),
    );
    let recorder = UsageRecorder::start(Arc::clone(&store), &config(3_600_000, 1000, 100));
    let first = record(0);
    recorder.record(first.clone());
    for n in 1..4 {
        recorder.record(record(n));
    }
    // The same request twice (a proxy bug or a retry: the same record, its time included) is
    // counted once, whether or not the writer flushed in between (its first tick is at once).
    recorder.record(first);
    assert!(recorder.flush_now().await);
    let report = store.usage_totals(&UsageQuery::default()).await.unwrap();
    assert_eq!(report.total.requests, 4);
    assert_eq!(report.total.tokens.input_tokens, 40);
    assert_eq!(recorder.stats().duplicates, 1);
    recorder.flush_and_stop().await;
    assert!(!recorder.flush_now().await);
}

#[test]
fn pruning_cuts_at_the_hour_before_the_retention_ends() {
    use shared::time::parse_rfc3339;
    let now = parse_rfc3339("2025-03-10T14:37:12.345Z").unwrap();
    let day = Duration::from_secs(86_400);
    // Records of 13:00–14:00 the day before are kept until the next pass after 15:00.
    assert_eq!(
        prune_before(now, day),
        parse_rfc3339("2025-03-09T14:00:00Z").unwrap()
    );
    // On the hour, the hour that just ended goes.
    let on_the_hour = parse_rfc3339("2025-03-10T15:00:00Z").unwrap();
    assert_eq!(
        prune_before(on_the_hour, day),
        parse_rfc3339("2025-03-09T15:00:00Z").unwrap()
    );
    // A retention longer than all of time prunes nothing rather than overflowing.
    assert!(prune_before(now, Duration::MAX) <= 0);
}
