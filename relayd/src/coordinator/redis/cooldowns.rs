//! Cooldowns other instances started before this one came up, read once at start and capped to
//! what this configuration allows.

use std::time::Duration;

use shared::time::UnixMillis;

use super::inner::{Inner, failed};
use super::scripts::CAP_COOLDOWN;
use crate::coordinator::CoordinationError;

impl Inner {
    /// Reads the cooldowns other instances started before this one came up. One that ends later
    /// than `longest` from now was not started under this configuration (an older build wrote
    /// cooldowns for as long as an upstream's `retry-after` asked, such as 31 years): it is
    /// loaded, and shortened in Redis, as ending `longest` from now.
    pub(super) async fn load_cooldowns(&self, longest: Duration) -> Result<(), CoordinationError> {
        let longest_ms = i64::try_from(longest.as_millis()).unwrap_or(i64::MAX / 2);
        let cap = shared::time::now_millis().saturating_add(longest_ms);
        let prefix = self.key("cooldown:");
        let mut conn = self.conn.clone();
        let mut cursor = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(500);
            // In a cluster, on the node holding the (hash-tagged) cooldown keys.
            let (next, keys): (u64, Vec<String>) = conn
                .query_beside(&scan, &prefix)
                .await
                .map_err(|e| failed(&e))?;
            if !keys.is_empty() {
                let values: Vec<Option<String>> = redis::cmd("MGET")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| failed(&e))?;
                for (key, value) in keys.iter().zip(values) {
                    let (Some(id), Some(value)) = (key.strip_prefix(&prefix), value) else {
                        continue;
                    };
                    let value = match capped_cooldown(&value, cap) {
                        Some(capped) => {
                            tracing::warn!(
                                account = id,
                                cooldown = %value,
                                "a stored cooldown runs longer than this configuration allows; shortened"
                            );
                            let shortened: Result<i64, _> =
                                CAP_COOLDOWN.key(key).arg(cap).invoke_async(&mut conn).await;
                            if let Err(e) = shortened {
                                tracing::warn!(error = %failed(&e), "cannot shorten a stored cooldown");
                            }
                            capped
                        }
                        None => value,
                    };
                    let payload = format!("{id} {value}");
                    let _ = self.on_message(&self.key("cooldowns"), &payload);
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

/// A stored cooldown value (`"{until} {reason}"`) ending after `cap`, rewritten to end at `cap`;
/// `None` when it ends by then (or is not a cooldown value, which the loader then ignores).
fn capped_cooldown(value: &str, cap: UnixMillis) -> Option<String> {
    let (until, reason) = value.split_once(' ').unwrap_or((value, ""));
    let until: UnixMillis = until.parse().ok()?;
    (until > cap).then(|| format!("{cap} {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_cooldown_past_the_cap_is_cut_to_it() {
        let cap = 1_000_000;
        assert_eq!(
            capped_cooldown("2783000000000 HTTP 429", cap).as_deref(),
            Some("1000000 HTTP 429"),
            "a 2058 cooldown of an older build"
        );
        assert_eq!(
            capped_cooldown("1000001 connect error", cap).as_deref(),
            Some("1000000 connect error")
        );
        assert_eq!(capped_cooldown("1000000 HTTP 503", cap), None, "at the cap");
        assert_eq!(capped_cooldown("999 HTTP 503", cap), None);
        assert_eq!(
            capped_cooldown("2783000000000", cap).as_deref(),
            Some("1000000 ")
        );
        assert_eq!(capped_cooldown("garbage", cap), None);
        assert_eq!(capped_cooldown("", cap), None);
    }
}
