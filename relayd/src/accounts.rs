//! The account registry: admin operations on accounts (create, update, delete, import) on top of
//! the store, with secrets sealed on the way in, and an immutable in-memory snapshot of every
//! account — secrets decrypted — that request handling reads without taking a lock.
//!
//! Writes are serialised inside one process by an async mutex (read-modify-write of a handful of
//! records; admin traffic is rare) and the snapshot is rebuilt from the store after each write, so
//! it always equals what was acknowledged.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use shared::account::{
    Account, AccountId, AccountInput, AccountPatch, AccountSecrets, AccountSettings, SecretInfo,
    link_local_errors, redact_url,
};
use shared::error::FieldError;
use shared::import::{ImportOutcome, ImportReport, ImportRow, ImportRowResult, ImportSummary};
use shared::profile::{Profile, Resolved};
use shared::time::{UnixMillis, now_millis};

use crate::auth::random_hex;
use crate::crypto::Cipher;
use crate::error::{ApiError, ErrorKind};
use crate::store::{AccountRecord, Store, StoreError};

mod changes;
mod profiles;

use changes::changed_fields;
pub use profiles::{ProfileRecorded, same_upstream};

/// One account as request handling sees it: settings and decrypted secrets.
#[derive(Debug)]
pub struct LiveAccount {
    /// Stable id.
    pub id: AccountId,
    /// Validated settings.
    pub settings: AccountSettings,
    /// Secrets in clear (memory only).
    pub secrets: AccountSecrets,
    /// Creation time.
    pub created_at: UnixMillis,
    /// Last change.
    pub updated_at: UnixMillis,
    /// What the last probe found; absent before the first.
    pub profile: Option<Arc<Profile>>,
    /// The values requests use (explicit fields over the profile over defaults).
    pub resolved: Resolved,
}

impl LiveAccount {
    /// An account with its values resolved over `profile`.
    pub fn new(
        id: AccountId,
        settings: AccountSettings,
        secrets: AccountSecrets,
        (created_at, updated_at): (UnixMillis, UnixMillis),
        profile: Option<Arc<Profile>>,
    ) -> Self {
        let resolved = Resolved::of(&settings, profile.as_deref());
        Self {
            id,
            settings,
            secrets,
            created_at,
            updated_at,
            profile,
            resolved,
        }
    }

    /// The admin API's view: no secret, only whether one is set.
    pub fn view(&self) -> Account {
        Account {
            id: self.id.clone(),
            settings: self.settings.clone(),
            api_key: SecretInfo::describe(self.secrets.api_key.as_deref()),
            proxy: self.secrets.proxy.as_deref().map(redact_url),
            created_at: self.created_at,
            updated_at: self.updated_at,
            profile: self.profile.as_deref().cloned(),
            resolved: self.resolved,
        }
    }
}

/// An immutable view of every account, swapped whole on change.
#[derive(Debug, Default)]
pub struct AccountSnapshot {
    /// Accounts ordered by name.
    pub accounts: Vec<Arc<LiveAccount>>,
    by_id: HashMap<AccountId, usize>,
    by_name: HashMap<String, usize>,
}

impl AccountSnapshot {
    pub(crate) fn new(mut accounts: Vec<Arc<LiveAccount>>) -> Self {
        accounts.sort_by(|a, b| a.settings.name.cmp(&b.settings.name));
        let by_id = accounts
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect();
        let by_name = accounts
            .iter()
            .enumerate()
            .map(|(i, a)| (a.settings.name.clone(), i))
            .collect();
        Self {
            accounts,
            by_id,
            by_name,
        }
    }

    /// Finds an account by id (`acc_…`) or by exact name.
    pub fn find(&self, id_or_name: &str) -> Option<&Arc<LiveAccount>> {
        let index = if AccountId::looks_like_id(id_or_name) {
            self.by_id.get(&AccountId(id_or_name.to_owned()))
        } else {
            self.by_name.get(id_or_name)
        };
        index.map(|&i| &self.accounts[i])
    }

    /// Finds an account by id.
    pub fn get(&self, id: &AccountId) -> Option<&Arc<LiveAccount>> {
        self.by_id.get(id).map(|&i| &self.accounts[i])
    }
}

/// Records whose secrets could not be decrypted at start-up: almost always the wrong key.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot decrypt the secrets of {} account(s) ({}) with this encryption key; start relayd with \
     the key these accounts were saved with (RELAYD_ENCRYPTION_KEY or the key file). Nothing was \
     changed or deleted.",
    names.len(),
    names.join(", ")
)]
pub struct UndecryptableAccounts {
    /// Names of the affected accounts.
    pub names: Vec<String>,
}

/// Start-up failure of the registry.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key does not fit the records.
    #[error(transparent)]
    Undecryptable(#[from] UndecryptableAccounts),
}

/// Admin operations on accounts plus the live snapshot.
pub struct AccountRegistry {
    store: Arc<dyn Store>,
    cipher: Arc<Cipher>,
    snapshot: ArcSwap<AccountSnapshot>,
    writes: tokio::sync::Mutex<()>,
    /// Held for the whole of a [`AccountRegistry::reload`], read to swap.
    reloads: tokio::sync::Mutex<()>,
    /// `allow_link_local_endpoints`: whether endpoints and proxies may be set to link-local or
    /// metadata addresses.
    allow_link_local: bool,
}

impl std::fmt::Debug for AccountRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRegistry")
            .field("accounts", &self.snapshot.load().accounts.len())
            .finish_non_exhaustive()
    }
}

impl AccountRegistry {
    /// Loads every account and decrypts its secrets; fails, naming the accounts, if any cannot be
    /// decrypted — and changes nothing in the store.
    pub async fn load(store: Arc<dyn Store>, cipher: Arc<Cipher>) -> Result<Self, LoadError> {
        let records = store.list_accounts().await?;
        let profiles = profiles_by_id(store.list_profiles().await?);
        let snapshot = decrypt_all(&cipher, records, &profiles)?;
        Ok(Self {
            store,
            cipher,
            snapshot: ArcSwap::from_pointee(snapshot),
            writes: tokio::sync::Mutex::new(()),
            reloads: tokio::sync::Mutex::new(()),
            allow_link_local: false,
        })
    }

    /// Sets `allow_link_local_endpoints` (refused by default). When refused, stored accounts
    /// that already point at such an address (saved before the rule existed) keep working and
    /// stay editable; each is named in a warning so that an operator can decide.
    #[must_use]
    pub fn with_link_local_endpoints(mut self, allowed: bool) -> Self {
        self.allow_link_local = allowed;
        if !allowed {
            for account in &self.snapshot.load().accounts {
                for error in link_local_errors(&account.settings, &account.secrets, None) {
                    tracing::warn!(
                        account = %account.settings.name,
                        field = error.field.as_deref().unwrap_or_default(),
                        "account {} has a link-local or metadata address in `{}`; new addresses \
                         like it are refused unless allow_link_local_endpoints = true",
                        account.settings.name,
                        error.field.as_deref().unwrap_or_default(),
                    );
                }
            }
        }
        self
    }

    /// The address-policy refusals for new values (`previous` = what is stored now, if any).
    fn address_errors(
        &self,
        settings: &AccountSettings,
        secrets: &AccountSecrets,
        previous: Option<(&AccountSettings, &AccountSecrets)>,
    ) -> Vec<FieldError> {
        if self.allow_link_local {
            Vec::new()
        } else {
            link_local_errors(settings, secrets, previous)
        }
    }

    /// The current snapshot (cheap: one atomic load and a reference-count increment).
    pub fn snapshot(&self) -> Arc<AccountSnapshot> {
        self.snapshot.load_full()
    }

    /// Re-reads every account and profile from the store (after a write, a probe, or a change
    /// by another instance).
    ///
    /// Reloads run one at a time: two overlapping ones (a probe's and an admin write's, or a
    /// change announced by another instance) could otherwise swap in their snapshots in the
    /// opposite order of their reads, leaving the older one live.
    pub async fn reload(&self) -> Result<(), ApiError> {
        let _reloading = self.reloads.lock().await;
        let records = self.store.list_accounts().await?;
        let profiles = profiles_by_id(self.store.list_profiles().await?);
        let snapshot = decrypt_all(&self.cipher, records, &profiles)
            .map_err(|e| ApiError::internal("cannot decrypt a stored account", &e))?;
        self.snapshot.store(Arc::new(snapshot));
        Ok(())
    }

    /// Creates an account; 409 if the name is taken.
    pub async fn create(&self, input: AccountInput) -> Result<Account, ApiError> {
        let (settings, secrets) = input.validate().map_err(ApiError::fields)?;
        let refused = self.address_errors(&settings, &secrets, None);
        if !refused.is_empty() {
            return Err(ApiError::fields(refused));
        }
        let _guard = self.writes.lock().await;
        let now = now_millis();
        let id = AccountId(format!("{}{}", AccountId::PREFIX, random_hex(8)));
        let record = self.seal(id.clone(), settings, &secrets, now, now);
        self.store
            .put_accounts(std::slice::from_ref(&record))
            .await?;
        self.reload().await?;
        self.view(&id)
    }

    /// Applies a partial update; 404 if there is no such account, 409 on a name clash.
    pub async fn update(&self, id_or_name: &str, patch: AccountPatch) -> Result<Account, ApiError> {
        let _guard = self.writes.lock().await;
        let current = self.current(id_or_name).await?;
        let (settings, secrets) = patch
            .apply(&current.settings, &current.secrets)
            .map_err(ApiError::fields)?;
        let refused = self.address_errors(
            &settings,
            &secrets,
            Some((&current.settings, &current.secrets)),
        );
        if !refused.is_empty() {
            return Err(ApiError::fields(refused));
        }
        if settings != current.settings || secrets != current.secrets {
            let record = self.seal(
                current.id.clone(),
                settings,
                &secrets,
                current.created_at,
                now_millis(),
            );
            self.store
                .put_accounts(std::slice::from_ref(&record))
                .await?;
            self.reload().await?;
        }
        self.view(&current.id)
    }

    /// Deletes an account; 404 if there is none.
    pub async fn delete(&self, id_or_name: &str) -> Result<Account, ApiError> {
        let _guard = self.writes.lock().await;
        let current = self.current(id_or_name).await?;
        if !self.store.delete_account(&current.id).await? {
            return Err(not_found(id_or_name));
        }
        self.reload().await?;
        Ok(current.view())
    }

    /// Upserts validated rows by name in one atomic store write (nothing when `dry_run`).
    pub async fn import(
        &self,
        rows: Vec<ImportRow>,
        dry_run: bool,
    ) -> Result<ImportReport, ApiError> {
        let _guard = self.writes.lock().await;
        let existing = decrypt_all(
            &self.cipher,
            self.store.list_accounts().await?,
            &HashMap::new(),
        )
        .map_err(|e| ApiError::internal("cannot decrypt a stored account", &e))?;
        // The whole file passes the address policy or nothing is written, like its validation.
        let refused: Vec<FieldError> = rows
            .iter()
            .flat_map(|row| {
                let previous = existing
                    .find(&row.settings.name)
                    .map(|a| (&a.settings, &a.secrets));
                self.address_errors(&row.settings, &row.secrets, previous)
                    .into_iter()
                    .map(|e| FieldError {
                        row: Some(row.index),
                        name: Some(row.settings.name.clone()),
                        ..e
                    })
            })
            .collect();
        if !refused.is_empty() {
            return Err(ApiError::fields(refused));
        }
        let now = now_millis();
        let mut results = Vec::with_capacity(rows.len());
        let mut writes = Vec::new();
        for row in rows {
            let name = row.settings.name.clone();
            let (result, detail) = match existing.find(&name) {
                None => {
                    let id = AccountId(format!("{}{}", AccountId::PREFIX, random_hex(8)));
                    writes.push(self.seal(id, row.settings, &row.secrets, now, now));
                    (ImportOutcome::Created, String::new())
                }
                Some(current) => {
                    let changed = changed_fields(current, &row.settings, &row.secrets);
                    if changed.is_empty() {
                        (ImportOutcome::Unchanged, String::new())
                    } else {
                        writes.push(self.seal(
                            current.id.clone(),
                            row.settings,
                            &row.secrets,
                            current.created_at,
                            now,
                        ));
                        (
                            ImportOutcome::Updated,
                            format!("changed: {}", changed.join(", ")),
                        )
                    }
                }
            };
            results.push(ImportRowResult {
                row: row.index,
                name,
                result,
                detail,
            });
        }
        if !dry_run && !writes.is_empty() {
            self.store.put_accounts(&writes).await?;
            self.reload().await?;
        }
        Ok(ImportReport {
            dry_run,
            summary: ImportSummary::of(&results),
            rows: results,
        })
    }

    /// The admin view of one account from the snapshot.
    pub fn view(&self, id: &AccountId) -> Result<Account, ApiError> {
        self.snapshot
            .load()
            .get(id)
            .map(|a| a.view())
            .ok_or_else(|| not_found(id.as_str()))
    }

    /// The freshest state of one account, read from the store rather than the snapshot so that a
    /// read-modify-write never starts from a stale copy.
    async fn current(&self, id_or_name: &str) -> Result<LiveAccount, ApiError> {
        let record = if AccountId::looks_like_id(id_or_name) {
            self.store
                .get_account(&AccountId(id_or_name.to_owned()))
                .await?
        } else {
            self.store.get_account_by_name(id_or_name).await?
        };
        let record = record.ok_or_else(|| not_found(id_or_name))?;
        let profile = self
            .snapshot
            .load()
            .get(&record.id)
            .and_then(|a| a.profile.clone());
        decrypt(&self.cipher, record, profile).map_err(undecryptable)
    }

    fn seal(
        &self,
        id: AccountId,
        settings: AccountSettings,
        secrets: &AccountSecrets,
        created_at: UnixMillis,
        updated_at: UnixMillis,
    ) -> AccountRecord {
        let api_key = secrets
            .api_key
            .as_deref()
            .map(|k| self.cipher.seal(&aad(&id, "apiKey"), k));
        let proxy = secrets
            .proxy
            .as_deref()
            .map(|p| self.cipher.seal(&aad(&id, "proxy"), p));
        AccountRecord {
            id,
            settings,
            api_key,
            proxy,
            created_at,
            updated_at,
        }
    }
}

/// Associated data binding a sealed secret to its record and field, so a ciphertext copied to
/// another record (or field) does not decrypt.
fn aad(id: &AccountId, field: &str) -> String {
    format!("account:{id}:{field}")
}

fn not_found(id_or_name: &str) -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        format!("no account with id or name {id_or_name:?}"),
    )
}

/// The error of a stored account that [`decrypt`] could not open (`name` is the account's).
#[expect(
    clippy::needless_pass_by_value,
    reason = "used as `map_err(undecryptable)`, which passes the name by value"
)]
fn undecryptable(name: String) -> ApiError {
    ApiError::internal(
        "cannot decrypt a stored account",
        &format!("account {name}: wrong encryption key or damaged record"),
    )
}

/// Decrypts one record; on failure returns the account's name.
fn decrypt(
    cipher: &Cipher,
    record: AccountRecord,
    profile: Option<Arc<Profile>>,
) -> Result<LiveAccount, String> {
    let open = |field: &str, sealed: Option<&crate::crypto::Sealed>| {
        sealed
            .map(|s| cipher.open(&aad(&record.id, field), s))
            .transpose()
    };
    let (Ok(api_key), Ok(proxy)) = (
        open("apiKey", record.api_key.as_ref()),
        open("proxy", record.proxy.as_ref()),
    ) else {
        return Err(record.settings.name.clone());
    };
    Ok(LiveAccount::new(
        record.id,
        record.settings,
        AccountSecrets { api_key, proxy },
        (record.created_at, record.updated_at),
        profile,
    ))
}

fn profiles_by_id(profiles: Vec<(AccountId, Profile)>) -> HashMap<AccountId, Arc<Profile>> {
    profiles
        .into_iter()
        .map(|(id, profile)| (id, Arc::new(profile)))
        .collect()
}

fn decrypt_all(
    cipher: &Cipher,
    records: Vec<AccountRecord>,
    profiles: &HashMap<AccountId, Arc<Profile>>,
) -> Result<AccountSnapshot, UndecryptableAccounts> {
    let mut accounts = Vec::with_capacity(records.len());
    let mut names = Vec::new();
    for record in records {
        let profile = profiles.get(&record.id).cloned();
        match decrypt(cipher, record, profile) {
            Ok(account) => accounts.push(Arc::new(account)),
            Err(name) => names.push(name),
        }
    }
    if names.is_empty() {
        Ok(AccountSnapshot::new(accounts))
    } else {
        Err(UndecryptableAccounts { names })
    }
}
