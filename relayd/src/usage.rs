//! The usage recorder: takes one [`UsageRecord`] per finished request off the request path and
//! writes them to the store in batches.
//!
//! [`UsageRecorder::record`] never waits: it puts the record into a bounded queue, and when the
//! queue is full the record is dropped, counted, and a warning is logged at most once per
//! [`DROP_WARN_EVERY`]. A tracked background task (`usage_writer`) moves queued records into a
//! pending batch and writes it every `usage.flush_interval_ms`, or as soon as
//! `usage.batch_size` records are queued. The queue is a mutex-guarded vector rather than a
//! channel so that the writer is woken once per batch, not once per request: under load each
//! wake-up was a cross-thread futex call and a context switch on the request path. A failed
//! write keeps the batch in memory (bounded by `usage.max_pending`, the oldest dropped beyond
//! it) and is retried on the next tick; the
//! store skips request ids it already holds, so a retry after a lost acknowledgement never
//! counts twice. A crash therefore loses at most what arrived since the last successful flush.
//! [`UsageRecorder::flush_and_stop`] writes everything still queued before shutdown. The task
//! also prunes raw records older than `usage.retention_days`, at start and every hour.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use shared::time::{UnixMillis, hour_start, now_millis};
use shared::usage::UsageRecord;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::config::UsageConfig;
use crate::store::usage::UsageWrite;
use crate::store::{Store, StoreResult};

/// Longest silence between two warnings about dropped records.
pub const DROP_WARN_EVERY: Duration = Duration::from_secs(10);
/// How often raw records past their retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Attempts of the final flush at shutdown before giving up on a failing store.
const FINAL_FLUSH_ATTEMPTS: u32 = 5;
/// Pause between final flush attempts.
const FINAL_FLUSH_BACKOFF: Duration = Duration::from_millis(200);

/// Where batches of usage records go: the store, or a fake in tests.
#[async_trait]
pub trait UsageSink: Send + Sync + 'static {
    /// Writes a batch in one atomic, idempotent (by request id) step.
    async fn write(&self, records: &[UsageRecord]) -> StoreResult<UsageWrite>;
    /// Deletes raw records that arrived before `before`.
    async fn prune(&self, before: UnixMillis) -> StoreResult<u64>;
}

/// The store as a [`UsageSink`].
struct StoreSink {
    store: Arc<dyn Store>,
    keep_raw: Duration,
}

#[async_trait]
impl UsageSink for StoreSink {
    async fn write(&self, records: &[UsageRecord]) -> StoreResult<UsageWrite> {
        self.store.record_usage(records, self.keep_raw).await
    }

    async fn prune(&self, before: UnixMillis) -> StoreResult<u64> {
        self.store.prune_usage(before).await
    }
}

/// Counters of the recorder since start, for tests, logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageStats {
    /// Records accepted into the queue.
    pub accepted: u64,
    /// Records dropped: queue full, recorder stopped, or pending batch over `max_pending`.
    pub dropped: u64,
    /// Records the store counted.
    pub written: u64,
    /// Records the store had already (retried flushes).
    pub duplicates: u64,
    /// Records taken from the queue but not yet written.
    pub pending: u64,
    /// Failed store writes.
    pub failed_flushes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    dropped: AtomicU64,
    written: AtomicU64,
    duplicates: AtomicU64,
    pending: AtomicU64,
    failed_flushes: AtomicU64,
    /// Milliseconds after `epoch` of the last drop warning, plus one (0 = never warned).
    last_drop_warn: AtomicU64,
    /// When warnings about failed writes were last logged, likewise.
    last_failure_warn: AtomicU64,
}

impl Counters {
    /// Counts a dropped record and warns if the last warning is old enough.
    fn drop_record(&self, epoch: Instant, why: &str) {
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if rate_limit(&self.last_drop_warn, epoch) {
            tracing::warn!(
                dropped_total = dropped,
                "usage record dropped ({why}); {dropped} dropped since start"
            );
        }
    }
}

/// True at most once per [`DROP_WARN_EVERY`] for one `slot`.
fn rate_limit(slot: &AtomicU64, epoch: Instant) -> bool {
    let now = u64::try_from(epoch.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let last = slot.load(Ordering::Relaxed);
    let every = u64::try_from(DROP_WARN_EVERY.as_millis()).unwrap_or(u64::MAX);
    (last == 0 || now.saturating_sub(last) >= every)
        && slot
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// Records waiting for the writer, shared by the request path and the writer task.
#[derive(Debug)]
struct Queue {
    records: Mutex<QueueState>,
    /// Woken when `batch` records are waiting, when a flush is asked for, and at shutdown.
    wake: Notify,
    capacity: usize,
    batch: usize,
}

#[derive(Debug, Default)]
struct QueueState {
    records: Vec<UsageRecord>,
    /// Set when the writer stops: later records are refused.
    closed: bool,
}

/// Why the queue refused a record.
enum Refused {
    Full,
    Closed,
}

impl Queue {
    fn new(capacity: usize, batch: usize) -> Self {
        Self {
            records: Mutex::new(QueueState::default()),
            wake: Notify::new(),
            capacity: capacity.max(1),
            batch: batch.max(1),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // Pushing and swapping a vector cannot panic half-way; a poisoned lock is still sound.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, record: UsageRecord) -> Result<(), Refused> {
        let waiting = {
            let mut state = self.state();
            if state.closed {
                return Err(Refused::Closed);
            }
            if state.records.len() >= self.capacity {
                return Err(Refused::Full);
            }
            state.records.push(record);
            state.records.len()
        };
        // Exactly once per batch: the writer takes everything each time it wakes.
        if waiting == self.batch {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Everything queued, oldest first.
    fn take(&self) -> Vec<UsageRecord> {
        std::mem::take(&mut self.state().records)
    }

    /// Refuses further records and returns what was still queued.
    fn close(&self) -> Vec<UsageRecord> {
        let mut state = self.state();
        state.closed = true;
        std::mem::take(&mut state.records)
    }
}

/// Records usage without blocking requests; see the module documentation.
#[derive(Debug)]
pub struct UsageRecorder {
    queue: Arc<Queue>,
    flushes: mpsc::Sender<oneshot::Sender<bool>>,
    counters: Arc<Counters>,
    epoch: Instant,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl UsageRecorder {
    /// Starts the writer task over `store`. Must be called inside a tokio runtime.
    pub fn start(store: Arc<dyn Store>, config: &UsageConfig) -> Self {
        let sink = StoreSink {
            store,
            keep_raw: config.retention(),
        };
        Self::start_with_sink(Arc::new(sink), config)
    }

    /// Starts the writer task over any sink (tests use fakes).
    pub fn start_with_sink(sink: Arc<dyn UsageSink>, config: &UsageConfig) -> Self {
        let queue = Arc::new(Queue::new(config.queue_capacity, config.batch_size));
        let (flushes, flush_rx) = mpsc::channel(16);
        let counters = Arc::new(Counters::default());
        let epoch = Instant::now();
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let writer = Writer {
            queue: Arc::clone(&queue),
            flushes: flush_rx,
            sink,
            config: config.clone(),
            counters: Arc::clone(&counters),
            epoch,
            pending: VecDeque::new(),
            healthy: true,
            cancel: cancel.clone(),
        };
        tracker.spawn(writer.run().instrument(tracing::info_span!("usage_writer")));
        tracker.close();
        Self {
            queue,
            flushes,
            counters,
            epoch,
            cancel,
            tracker,
        }
    }

    /// Queues one finished request's usage. Never blocks: a full queue or a stopped recorder
    /// drops the record (counted in [`UsageStats::dropped`], warned about at most every
    /// [`DROP_WARN_EVERY`]).
    pub fn record(&self, record: UsageRecord) {
        match self.queue.push(record) {
            Ok(()) => {
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Err(Refused::Full) => {
                self.counters
                    .drop_record(self.epoch, "the usage queue is full");
            }
            Err(Refused::Closed) => {
                self.counters
                    .drop_record(self.epoch, "the usage recorder has stopped");
            }
        }
    }

    /// Writes everything queued so far now. True when nothing is left unwritten (false when the
    /// store failed or the recorder has stopped).
    pub async fn flush_now(&self) -> bool {
        let (reply, done) = oneshot::channel();
        if self.flushes.send(reply).await.is_err() {
            return false;
        }
        done.await.unwrap_or(false)
    }

    /// Stops the writer after writing everything queued (retrying a failing store a few times).
    /// Records recorded afterwards are dropped. Safe to call more than once.
    pub async fn flush_and_stop(&self) {
        self.cancel.cancel();
        self.tracker.wait().await;
    }

    /// Counters since start.
    pub fn stats(&self) -> UsageStats {
        let c = &self.counters;
        UsageStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            written: c.written.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            pending: c.pending.load(Ordering::Relaxed),
            failed_flushes: c.failed_flushes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for UsageRecorder {
    /// A recorder dropped without [`UsageRecorder::flush_and_stop`] still has its writer write
    /// what is queued and stop, rather than tick for the rest of the process.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The background task's state.
struct Writer {
    queue: Arc<Queue>,
    flushes: mpsc::Receiver<oneshot::Sender<bool>>,
    sink: Arc<dyn UsageSink>,
    config: UsageConfig,
    counters: Arc<Counters>,
    epoch: Instant,
    /// Taken from the queue, not yet written; oldest first.
    pending: VecDeque<UsageRecord>,
    /// Whether the last write succeeded; while it did not, only the timer retries, so a failing
    /// store is not hammered once per incoming record.
    healthy: bool,
    cancel: CancellationToken,
}

impl Writer {
    async fn run(mut self) {
        let batch = self.config.batch_size.max(1);
        let mut flush_tick = tokio::time::interval(self.config.flush_interval());
        flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune_tick = tokio::time::interval(PRUNE_EVERY);
        prune_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                reply = self.flushes.recv() => {
                    if let Some(reply) = reply {
                        self.drain_queue();
                        let done = self.flush().await;
                        // The caller may have given up waiting; nothing to do then.
                        let _ = reply.send(done);
                    }
                }
                () = self.queue.wake.notified() => {
                    self.drain_queue();
                    if self.healthy && self.pending.len() >= batch {
                        self.flush().await;
                    }
                }
                _ = flush_tick.tick() => {
                    self.drain_queue();
                    self.flush().await;
                }
                _ = prune_tick.tick() => self.prune().await,
            }
        }
        self.shutdown().await;
    }

    /// Final flush: everything still queued, retried a few times.
    async fn shutdown(mut self) {
        let left = self.queue.close();
        self.push(left.into_iter());
        for attempt in 1..=FINAL_FLUSH_ATTEMPTS {
            if self.flush().await {
                break;
            }
            if attempt < FINAL_FLUSH_ATTEMPTS {
                tokio::time::sleep(FINAL_FLUSH_BACKOFF).await;
            }
        }
        if self.pending.is_empty() {
            tracing::debug!("usage recorder stopped; everything written");
        } else {
            tracing::error!(
                lost = self.pending.len(),
                "usage recorder stopped with {} records the store would not take; they are lost",
                self.pending.len()
            );
        }
    }

    fn drain_queue(&mut self) {
        let taken = self.queue.take();
        if !taken.is_empty() {
            self.push(taken.into_iter());
        }
    }

    /// Adds records to the pending batch, dropping the oldest beyond `max_pending`.
    fn push(&mut self, records: impl Iterator<Item = UsageRecord>) {
        for record in records {
            if self.pending.len() >= self.config.max_pending.max(1) {
                self.pending.pop_front();
                self.counters.drop_record(
                    self.epoch,
                    "the store keeps failing and the pending batch is full",
                );
            }
            self.pending.push_back(record);
        }
        self.publish_pending();
    }

    fn publish_pending(&self) {
        let n = u64::try_from(self.pending.len()).unwrap_or(u64::MAX);
        self.counters.pending.store(n, Ordering::Relaxed);
    }

    /// Writes the pending records in batches. True when all were written.
    async fn flush(&mut self) -> bool {
        let batch = self.config.batch_size.max(1);
        while !self.pending.is_empty() {
            let n = batch.min(self.pending.len());
            let chunk = &self.pending.make_contiguous()[..n];
            match self.sink.write(chunk).await {
                Ok(write) => {
                    self.pending.drain(..n);
                    self.publish_pending();
                    self.counters
                        .written
                        .fetch_add(write.recorded, Ordering::Relaxed);
                    self.counters
                        .duplicates
                        .fetch_add(write.duplicates, Ordering::Relaxed);
                    if !self.healthy {
                        tracing::info!("usage writes succeed again");
                    }
                    self.healthy = true;
                }
                Err(e) => {
                    self.healthy = false;
                    self.counters.failed_flushes.fetch_add(1, Ordering::Relaxed);
                    if rate_limit(&self.counters.last_failure_warn, self.epoch) {
                        tracing::warn!(
                            error = %e,
                            pending = self.pending.len(),
                            "writing usage failed; keeping {} records in memory and retrying",
                            self.pending.len()
                        );
                    }
                    return false;
                }
            }
        }
        true
    }

    async fn prune(&self) {
        let before = prune_before(now_millis(), self.config.retention());
        match self.sink.prune(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "pruned {n} usage records past their retention"),
            Err(e) => tracing::warn!(error = %e, "pruning old usage records failed"),
        }
    }
}

/// Where pruning cuts at `now`: the start of the hour that holds `now - retention`, so every
/// record is kept at least its retention, and a store that keeps raw records by hour (Redis)
/// deletes whole hours instead of sorting the records of one hour at every pass.
fn prune_before(now: UnixMillis, retention: Duration) -> UnixMillis {
    let keep = UnixMillis::try_from(retention.as_millis()).unwrap_or(UnixMillis::MAX);
    hour_start(now.saturating_sub(keep))
}

#[cfg(test)]
mod tests;
