//! Probing an upstream for its [`Profile`]: server family and version, context window,
//! tokenizer, native Messages API, tool calls, reasoning field, usage in streams.
//!
//! Interim: the probe records that nothing was learnt yet; the per-family probes replace this.

use shared::profile::Profile;
use shared::time::now_millis;

use super::Upstreams;
use crate::accounts::LiveAccount;

/// Probes `account`'s upstream. Never fails: what could not be learnt is left out and noted.
pub async fn probe(_upstreams: &Upstreams, _account: &LiveAccount) -> Profile {
    Profile {
        probed_at: now_millis(),
        notes: vec!["no probe ran".to_owned()],
        ..Profile::default()
    }
}
