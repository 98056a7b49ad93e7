//! Moved conversations shared between instances. Each instance keeps the map it routes by in
//! memory (no round trip on the request path); a change is written to `{p}affinity:{key}` with
//! the entry's time to live and announced on `{p}affinity`, where every instance (this one
//! included) applies it. An instance that starts, or subscribes again after losing Redis, reads
//! the stored entries.
//!
//! Announcements are `"{key} {account} {ttl ms}"`, or `"{key} -"` for a conversation back on its
//! home account.

use std::time::Duration;

use shared::account::AccountId;

use super::inner::{Inner, failed};
use crate::coordinator::CoordinationError;
use crate::coordinator::affinity::AffinityKey;

/// Stored entries read per SCAN step at start.
const SCAN_COUNT: usize = 500;

impl Inner {
    fn affinity_key(&self, key: AffinityKey) -> String {
        self.key(&format!("affinity:{}", key.to_hex()))
    }

    /// Stores and announces `account` for `key` (from the background writer).
    pub(super) async fn share_affinity(&self, key: AffinityKey, account: Option<AccountId>) {
        let stored = self.affinity_key(key);
        let channel = self.key("affinity");
        let mut pipe = redis::pipe();
        match &account {
            Some(account) => {
                let ttl = self.affinity.settings().ttl;
                let ttl_ms = u64::try_from(ttl.as_millis())
                    .unwrap_or(u64::MAX / 4)
                    .max(1);
                pipe.cmd("SET")
                    .arg(&stored)
                    .arg(account.as_str())
                    .arg("PX")
                    .arg(ttl_ms)
                    .ignore()
                    .publish(
                        &channel,
                        format!("{} {} {ttl_ms}", key.to_hex(), account.as_str()),
                    )
                    .ignore();
            }
            None => {
                pipe.del(&stored)
                    .ignore()
                    .publish(&channel, format!("{} -", key.to_hex()))
                    .ignore();
            }
        }
        let result: Result<(), _> = pipe.exec_async(&mut self.conn()).await;
        if let Err(e) = result {
            // This instance still routes by its own map; the others find the conversation's
            // home, which costs one cold prefill at worst.
            tracing::warn!(error = %failed(&e), "cannot share a conversation's account");
        }
    }

    /// Applies an announcement on `{p}affinity`.
    pub(super) fn on_affinity(&self, payload: &str) {
        let mut parts = payload.split(' ');
        let Some(key) = parts.next().and_then(AffinityKey::from_hex) else {
            return;
        };
        match (
            parts.next(),
            parts.next().and_then(|t| t.parse::<u64>().ok()),
        ) {
            (Some("-"), _) => self.affinity.apply(&key, None, Duration::ZERO),
            (Some(account), Some(ttl_ms)) if !account.is_empty() => self.affinity.apply(
                &key,
                Some(AccountId(account.to_owned())),
                Duration::from_millis(ttl_ms),
            ),
            _ => {}
        }
    }

    /// Reads the stored entries (at start, and after subscribing again), at most the map's
    /// size.
    pub(super) async fn load_affinities(&self) -> Result<(), CoordinationError> {
        let prefix = self.key("affinity:");
        let room = self.affinity.settings().max;
        let mut conn = self.conn.clone();
        let mut cursor = 0u64;
        let mut loaded = 0;
        while loaded < room {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(SCAN_COUNT);
            // In a cluster, on the node holding the (hash-tagged) affinity keys.
            let (next, keys): (u64, Vec<String>) = conn
                .query_beside(&scan, &prefix)
                .await
                .map_err(|e| failed(&e))?;
            if !keys.is_empty() {
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.get(key).pttl(key);
                }
                let values: Vec<(Option<String>, i64)> =
                    pipe.query_async(&mut conn).await.map_err(|e| failed(&e))?;
                for (key, (account, ttl_ms)) in keys.iter().zip(values) {
                    let parsed = key.strip_prefix(&prefix).and_then(AffinityKey::from_hex);
                    if let (Some(key), Some(account), Ok(ttl_ms)) =
                        (parsed, account, u64::try_from(ttl_ms))
                    {
                        self.affinity.apply(
                            &key,
                            Some(AccountId(account)),
                            Duration::from_millis(ttl_ms),
                        );
                        loaded += 1;
                    }
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        tracing::debug!(loaded, "conversation affinities read from Redis");
        Ok(())
    }
}
