//! The Redis coordinator's background tasks: the writer (releases and token counts handed over
//! by `Drop`s), lease renewal, and the subscriber that keeps the local cache current and passes
//! admin changes on as [`Change`]s.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use shared::account::AccountId;
use shared::time::UnixMillis;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::inner::{Deferred, Inner, failed, lock};
use crate::coordinator::{Change, Cooldown};

/// Most deferred jobs sent at once.
const WRITE_BATCH: usize = 256;

/// Runs the deferred jobs until `stop`. Everything waiting is sent at once (the multiplexed
/// connection pipelines it): one round trip at a time would let releases fall behind under load,
/// filling the slot sets with finished requests' leases.
pub(super) async fn write_deferred(
    writer: Arc<Inner>,
    mut jobs: mpsc::UnboundedReceiver<Deferred>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        let n = tokio::select! {
            () = stop.cancelled() => break,
            n = jobs.recv_many(&mut batch, WRITE_BATCH) => n,
        };
        if n == 0 {
            break;
        }
        futures_util::future::join_all(batch.drain(..).map(|job| writer.run_deferred(job))).await;
    }
    // Give back what is already handed over before stopping.
    while let Ok(job) = jobs.try_recv() {
        writer.run_deferred(job).await;
    }
}

/// Renews this instance's leases, measures Redis's clock and refreshes the cached slot counts
/// every lease/3 until `stop`.
pub(super) async fn renew_leases(renewer: Arc<Inner>, stop: CancellationToken) {
    let mut tick = tokio::time::interval((renewer.lease / 3).max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {
                renewer.renew().await;
                // Clocks drift apart; the fast take scores leases with this offset.
                renewer.measure_clock().await;
                renewer.refresh_in_flight().await;
            }
        }
    }
}

/// Listens on the coordinator's channels until `stop`, reconnecting. `ready` fires on the first
/// subscription; every later one announces both registries as changed, since messages sent while
/// it was away are lost.
pub(super) async fn subscribe(
    subscriber: Arc<Inner>,
    changes: mpsc::Sender<Change>,
    ready: oneshot::Sender<()>,
    stop: CancellationToken,
) {
    let mut ready = Some(ready);
    let channels = ["changes", "slots", "cooldowns", "affinity"].map(|c| subscriber.key(c));
    // Counts connection attempts: in a cluster each one goes to the next seed node, so a node
    // that is down is not tried again and again.
    let mut attempt = 0usize;
    while !stop.is_cancelled() {
        attempt = attempt.wrapping_add(1);
        let connected = async {
            let mut pubsub = subscriber.endpoint.pubsub(attempt).await?;
            pubsub.subscribe(&channels).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = match tokio::time::timeout(Duration::from_secs(5), connected).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => {
                tracing::warn!(error = %failed(&e), "cannot subscribe to changes");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
            Err(_) => continue,
        };
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        } else {
            for change in [Change::Accounts, Change::Keys] {
                announce(&changes, change, &stop).await;
            }
            if let Err(e) = subscriber.load_affinities().await {
                tracing::warn!(error = %e, "cannot read shared conversation affinities");
            }
        }
        let mut messages = pubsub.into_on_message();
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return,
                m = messages.next() => m,
            };
            let Some(message) = message else { break };
            let Ok(payload) = message.get_payload::<String>() else {
                continue;
            };
            if let Some(change) = subscriber.on_message(message.get_channel_name(), &payload) {
                announce(&changes, change, &stop).await;
            }
        }
    }
}

/// Hands `change` on, waiting while the receiver is behind (changes are rare; the wait keeps them
/// all) but not past `stop`. Nobody listening is fine: a process without registries to reload.
async fn announce(changes: &mpsc::Sender<Change>, change: Change, stop: &CancellationToken) {
    tokio::select! {
        () = stop.cancelled() => {}
        _ = changes.send(change) => {}
    }
}

impl Inner {
    pub(super) fn on_message(&self, channel: &str, payload: &str) -> Option<Change> {
        let rest = channel.strip_prefix(&self.prefix)?;
        match rest {
            "changes" => match payload {
                "accounts" => Some(Change::Accounts),
                "keys" => Some(Change::Keys),
                _ => None,
            },
            "slots" => {
                // `{account}`: a lease on it was given back somewhere. The cached count is a
                // hint for picking accounts; the next take on it returns the real one.
                if let Some(live) = lock(&self.in_flight).get_mut(&AccountId(payload.to_owned())) {
                    *live = live.saturating_sub(1);
                }
                self.freed.notify_waiters();
                None
            }
            "affinity" => {
                self.on_affinity(payload);
                None
            }
            "cooldowns" => {
                let mut parts = payload.splitn(3, ' ');
                let id = parts.next()?;
                let until: UnixMillis = parts.next()?.parse().ok()?;
                let reason = parts.next().unwrap_or_default().to_owned();
                let mut cooldowns = lock(&self.cooldowns);
                if until == 0 {
                    // Ended early by a probe or an operator.
                    cooldowns.remove(&AccountId(id.to_owned()));
                    self.freed.notify_waiters();
                    return None;
                }
                let entry = cooldowns
                    .entry(AccountId(id.to_owned()))
                    .or_insert(Cooldown {
                        until,
                        reason: reason.clone(),
                    });
                if entry.until < until {
                    *entry = Cooldown { until, reason };
                }
                None
            }
            _ => None,
        }
    }
}
