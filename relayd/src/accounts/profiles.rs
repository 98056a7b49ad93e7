//! Probe results in the registry: recording one — only while it still describes the account as
//! it is reached now — and telling whether two versions of an account reach the same upstream.

use shared::profile::Profile;

use super::{AccountRegistry, LiveAccount, decrypt, undecryptable};
use crate::error::ApiError;

/// What became of a probe result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileRecorded {
    /// Stored, and live in the snapshot.
    Kept,
    /// The account was deleted while it was probed: nothing was written.
    Deleted,
    /// How the account is reached changed while it was probed (another endpoint, key, …): the
    /// result describes the old settings and was dropped. The change brings its own probe.
    Superseded,
}

impl AccountRegistry {
    /// Records what a probe of `probed` (the account as it was when the probe began) found, and
    /// makes it live.
    ///
    /// Taken under the admin writes' lock, so that a result never lands between an update's
    /// write and its snapshot: it is checked against the stored account, written beside it
    /// (never into it: `updatedAt` does not move) and the snapshot rebuilt. Other instances
    /// learn of it the way they learn of account writes (with Redis, the store announces it).
    pub async fn record_profile(
        &self,
        probed: &LiveAccount,
        profile: &Profile,
    ) -> Result<ProfileRecorded, ApiError> {
        let _guard = self.writes.lock().await;
        let Some(record) = self.store.get_account(&probed.id).await? else {
            return Ok(ProfileRecorded::Deleted);
        };
        let current = decrypt(&self.cipher, record, None).map_err(undecryptable)?;
        if !same_upstream(probed, &current) {
            return Ok(ProfileRecorded::Superseded);
        }
        if !self.store.put_profile(&probed.id, profile).await? {
            return Ok(ProfileRecorded::Deleted);
        }
        self.reload().await?;
        Ok(ProfileRecorded::Kept)
    }
}

/// Whether `a` and `b` (two versions of one account) reach their upstream the same way, so that
/// a probe of one describes the other: the same kind, endpoint, deployment, Azure api-version,
/// credential and header, and proxy. Priority, models, limits and the like do not matter.
pub fn same_upstream(a: &LiveAccount, b: &LiveAccount) -> bool {
    let (x, y) = (&a.settings, &b.settings);
    x.kind == y.kind
        && x.endpoint == y.endpoint
        && x.deployment_name == y.deployment_name
        && x.api_version == y.api_version
        && x.auth() == y.auth()
        && a.secrets == b.secrets
}

#[cfg(test)]
mod tests {
    use shared::account::{AccountId, AccountInput, AccountPatch, UpstreamAuth};

    use super::*;

    fn account(patch: AccountPatch) -> LiveAccount {
        let (settings, secrets) = AccountInput {
            name: "a".into(),
            endpoint: "http://127.0.0.1:8000/v1".into(),
            deployment_name: "qwen3".into(),
            api_key: Some("sk-one".into()),
            ..AccountInput::default()
        }
        .validate()
        .unwrap();
        let (settings, secrets) = patch.apply(&settings, &secrets).unwrap();
        LiveAccount::new(
            AccountId("acc_0000000000000001".into()),
            settings,
            secrets,
            (0, 0),
            None,
        )
    }

    #[test]
    fn only_how_the_upstream_is_reached_matters() {
        let base = account(AccountPatch::default());
        let same = [
            AccountPatch {
                priority: Some(1),
                ..AccountPatch::default()
            },
            AccountPatch {
                supported_models: Some(vec!["gpt-4o".into()]),
                context_window: Some(Some(4096)),
                enabled: Some(false),
                ..AccountPatch::default()
            },
            // The kind's own header, named explicitly, is the same header.
            AccountPatch {
                upstream_auth: Some(UpstreamAuth::Bearer),
                ..AccountPatch::default()
            },
        ];
        for patch in same {
            assert!(same_upstream(&base, &account(patch.clone())), "{patch:?}");
        }
        let different = [
            AccountPatch {
                endpoint: Some("http://127.0.0.1:8001/v1".into()),
                ..AccountPatch::default()
            },
            AccountPatch {
                deployment_name: Some("other".into()),
                ..AccountPatch::default()
            },
            AccountPatch {
                api_key: Some(Some("sk-two".into())),
                ..AccountPatch::default()
            },
            AccountPatch {
                api_key: Some(None),
                ..AccountPatch::default()
            },
            AccountPatch {
                proxy: Some(Some("http://127.0.0.1:3128".into())),
                ..AccountPatch::default()
            },
            AccountPatch {
                upstream_auth: Some(UpstreamAuth::XApiKey),
                ..AccountPatch::default()
            },
            AccountPatch {
                kind: Some(shared::account::AccountKind::Anthropic),
                ..AccountPatch::default()
            },
        ];
        for patch in different {
            assert!(!same_upstream(&base, &account(patch.clone())), "{patch:?}");
        }
    }
}
