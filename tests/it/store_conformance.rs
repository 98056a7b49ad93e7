//! The store conformance suite: one set of test functions, each run against every backend
//! (embedded redb file, a private `redis-server`, and a private three-node Redis Cluster), so
//! they cannot drift apart.
//!
//! Each function takes a [`Fixture`], which can open the store any number of times over the same
//! data (a reopened file, or a new connection with the same prefix) and can write raw backend
//! values behind the store's back to simulate damage.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use relayd::store::embedded::{ACCOUNTS_TABLE, EmbeddedStore};
use relayd::store::redis::RedisStore;
use relayd::store::{
    AccountRecord, FORMAT_VERSION, FORMAT_VERSION_META, KeyRecord, Store, StoreError, StoreKind,
    StoreResult,
};
use relayd_tests::redis_cluster::RedisCluster;
use relayd_tests::redis_server::RedisServer;
use shared::account::{
    AccountId, AccountKind, AccountSettings, ThinkingMapping, fallback_supported_models,
};
use shared::key::{KeyId, KeyLimits, RelayKey};
use shared::profile::{Profile, ServerFamily, Tokenizer};

/// Where a test's store lives; opening it again reaches the same data.
pub(crate) enum Fixture {
    Embedded {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Redis {
        server: RedisServer,
        prefix: String,
    },
    /// The prefix is the one configured; the store hash-tags it (see [`Fixture::key_prefix`]).
    Cluster {
        cluster: RedisCluster,
        prefix: String,
    },
}

impl Fixture {
    pub(crate) fn embedded() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relayd.redb");
        Self::Embedded { _dir: dir, path }
    }

    pub(crate) fn redis() -> Self {
        Self::Redis {
            server: RedisServer::start(),
            prefix: unique_prefix(),
        }
    }

    pub(crate) fn cluster() -> Self {
        Self::Cluster {
            cluster: RedisCluster::start(),
            prefix: unique_prefix(),
        }
    }

    pub(crate) fn kind(&self) -> StoreKind {
        match self {
            Self::Embedded { .. } => StoreKind::Embedded,
            Self::Redis { .. } | Self::Cluster { .. } => StoreKind::Redis,
        }
    }

    /// The prefix the store's keys really have: the configured one, hash-tagged in a cluster.
    async fn key_prefix(&self) -> String {
        match self {
            Self::Embedded { .. } => String::new(),
            Self::Redis { prefix, .. } => prefix.clone(),
            Self::Cluster { cluster, prefix } => RedisStore::connect(&cluster.url(), prefix)
                .await
                .unwrap()
                .prefix()
                .to_owned(),
        }
    }

    /// Opens (or reopens) the store. For the embedded store the previous handle must have been
    /// dropped: the file is locked while open.
    pub(crate) async fn try_open(&self) -> StoreResult<Arc<dyn Store>> {
        Ok(match self {
            Self::Embedded { path, .. } => Arc::new(EmbeddedStore::open(path).await?),
            Self::Redis { server, prefix } => {
                Arc::new(RedisStore::connect(&server.url(), prefix).await?)
            }
            Self::Cluster { cluster, prefix } => {
                Arc::new(RedisStore::connect(&cluster.url(), prefix).await?)
            }
        })
    }

    pub(crate) async fn open(&self) -> Arc<dyn Store> {
        self.try_open().await.unwrap()
    }

    /// Overwrites an account's stored JSON directly in the backend (store handles closed).
    pub(crate) async fn write_raw_account(&self, id: &str, json: &str) {
        match self {
            Self::Embedded { path, .. } => {
                let table: redb::TableDefinition<'_, &str, &str> =
                    redb::TableDefinition::new(ACCOUNTS_TABLE);
                let db = redb::Database::create(path).unwrap();
                let txn = db.begin_write().unwrap();
                txn.open_table(table).unwrap().insert(id, json).unwrap();
                txn.commit().unwrap();
            }
            Self::Redis { server, prefix } => {
                let mut conn = redis_conn(server).await;
                ::redis::cmd("SET")
                    .arg(format!("{prefix}account:{id}"))
                    .arg(json)
                    .exec_async(&mut conn)
                    .await
                    .unwrap();
            }
            Self::Cluster { cluster, .. } => {
                let prefix = self.key_prefix().await;
                let mut conn = ::redis::cluster::ClusterClient::new(
                    (0..cluster.len()).map(|i| cluster.node_url(i)),
                )
                .unwrap()
                .get_async_connection()
                .await
                .unwrap();
                ::redis::cmd("SET")
                    .arg(format!("{prefix}account:{id}"))
                    .arg(json)
                    .exec_async(&mut conn)
                    .await
                    .unwrap();
            }
        }
    }

    /// Every byte the backend holds for this fixture: the whole redb file, or every Redis key
    /// under the prefix with its value.
    pub(crate) async fn raw_bytes(&self) -> Vec<u8> {
        match self {
            Self::Embedded { path, .. } => std::fs::read(path).unwrap(),
            Self::Redis { server, .. } => {
                dump_keys(vec![redis_conn(server).await], &self.key_prefix().await).await
            }
            Self::Cluster { cluster, .. } => {
                // Every node's keys: the suite checks what is stored, wherever it landed.
                let mut conns = Vec::new();
                for i in 0..cluster.len() {
                    let client = ::redis::Client::open(cluster.node_url(i)).unwrap();
                    conns.push(client.get_multiplexed_async_connection().await.unwrap());
                }
                dump_keys(conns, &self.key_prefix().await).await
            }
        }
    }
}

/// A fresh prefix per fixture, so the suite stays correct even if servers are ever shared.
fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "test{}-{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Every key under `prefix` on each of `conns` with its value, as bytes.
async fn dump_keys(conns: Vec<::redis::aio::MultiplexedConnection>, prefix: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut found = false;
    for mut conn in conns {
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        found |= !keys.is_empty();
        for key in keys {
            let kind: String = ::redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            let values: Vec<Vec<u8>> = match kind.as_str() {
                "string" => vec![
                    ::redis::cmd("GET")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .unwrap(),
                ],
                "set" => ::redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap(),
                "hash" => ::redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap(),
                other => panic!("unexpected Redis type {other} for {key}"),
            };
            out.extend_from_slice(key.as_bytes());
            out.push(b'\n');
            for value in values {
                out.extend_from_slice(&value);
                out.push(b'\n');
            }
        }
    }
    assert!(found, "nothing stored under {prefix}");
    out
}

/// A plain connection for raw reads and writes behind the store's back.
pub(crate) async fn redis_conn(server: &RedisServer) -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

pub(crate) fn account(n: u64, name: &str) -> AccountRecord {
    AccountRecord {
        id: AccountId(format!("acc_{n:016x}")),
        settings: AccountSettings {
            name: name.to_owned(),
            kind: AccountKind::Openai,
            endpoint: format!("http://127.0.0.1:9/v{n}"),
            deployment_name: format!("model-{n}"),
            api_version: "2024-10-21".to_owned(),
            supported_models: vec!["gpt-4o".to_owned(), "claude-*".to_owned()],
            priority: 50,
            concurrency: 10,
            enabled: true,
            description: None,
            max_output_tokens: None,
            thinking: ThinkingMapping::Drop,
            use_max_completion_tokens: None,
            upstream_auth: None,
            context_window: None,
            anthropic_mode: shared::account::AnthropicMode::Auto,
            send_reasoning_content: false,
        },
        api_key: None,
        proxy: None,
        created_at: 1_700_000_000_000,
        updated_at: 1_700_000_000_000,
    }
}

fn key(n: u64, created_at: i64) -> KeyRecord {
    KeyRecord {
        key: RelayKey {
            id: KeyId(format!("key_{n:016x}")),
            name: format!("key {n}"),
            enabled: true,
            revoked_at: None,
            expires_at: None,
            bound_accounts: vec![],
            allowed_models: vec![],
            limits: KeyLimits::default(),
            description: None,
            created_at,
            updated_at: created_at,
        },
        secret_hash: format!("{n:064x}"),
    }
}

fn names(records: &[AccountRecord]) -> Vec<&str> {
    records.iter().map(|r| r.settings.name.as_str()).collect()
}

/// Generates one `#[tokio::test]` per backend for every listed suite function. (The generated
/// `mod redis` shadows the `redis` crate in this file, hence `::redis::` above.)
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Fixture::embedded()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Fixture::redis()).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Fixture::cluster()).await;
                }
            )*
        }
    };
}

// Lets other suites (`usage_store`) generate their cases the same way.
pub(crate) use conformance;

conformance!(
    ping_and_kind,
    accounts_create_list_get,
    account_replace_by_id,
    rename_frees_old_name,
    duplicate_name_is_refused_and_batch_writes_nothing,
    batch_may_swap_names,
    batch_put_is_all_or_nothing_on_reopen,
    delete_account_reports_whether_it_existed,
    keys_put_get_list_in_creation_order,
    meta_get_set,
    reopen_finds_everything,
    newer_format_is_refused,
    damaged_supported_models_fall_back,
    other_damage_is_reported_as_corrupt,
    profiles_live_beside_their_account,
);

async fn ping_and_kind(f: Fixture) {
    let store = f.open().await;
    store.ping().await.unwrap();
    assert_eq!(store.kind(), f.kind());
    assert_eq!(
        store.get_meta(FORMAT_VERSION_META).await.unwrap(),
        Some(FORMAT_VERSION.to_string())
    );
}

async fn accounts_create_list_get(f: Fixture) {
    let store = f.open().await;
    assert!(store.list_accounts().await.unwrap().is_empty());
    let (c, a, b) = (
        account(1, "charlie"),
        account(2, "alpha"),
        account(3, "bravo"),
    );
    store
        .put_accounts(&[c.clone(), a.clone(), b.clone()])
        .await
        .unwrap();

    let listed = store.list_accounts().await.unwrap();
    assert_eq!(names(&listed), ["alpha", "bravo", "charlie"]);
    assert_eq!(listed, [a.clone(), b, c]);
    assert_eq!(store.get_account(&a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_account_by_name("alpha").await.unwrap(), Some(a));
    assert_eq!(
        store
            .get_account(&AccountId("acc_ffffffffffffffff".into()))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.get_account_by_name("zulu").await.unwrap(), None);
    // Names are exact, not case-folded.
    assert_eq!(store.get_account_by_name("Alpha").await.unwrap(), None);
    store.put_accounts(&[]).await.unwrap();
}

async fn account_replace_by_id(f: Fixture) {
    let store = f.open().await;
    let mut rec = account(1, "one");
    store
        .put_accounts(std::slice::from_ref(&rec))
        .await
        .unwrap();
    rec.settings.priority = 7;
    rec.settings.enabled = false;
    rec.updated_at += 1;
    store
        .put_accounts(std::slice::from_ref(&rec))
        .await
        .unwrap();
    assert_eq!(store.list_accounts().await.unwrap(), [rec.clone()]);
    assert_eq!(store.get_account_by_name("one").await.unwrap(), Some(rec));
}

async fn rename_frees_old_name(f: Fixture) {
    let store = f.open().await;
    let mut rec = account(1, "old-name");
    store
        .put_accounts(std::slice::from_ref(&rec))
        .await
        .unwrap();
    rec.settings.name = "new-name".to_owned();
    store
        .put_accounts(std::slice::from_ref(&rec))
        .await
        .unwrap();

    assert_eq!(store.get_account_by_name("old-name").await.unwrap(), None);
    assert_eq!(
        store.get_account_by_name("new-name").await.unwrap(),
        Some(rec)
    );
    // The old name is free for another account.
    let other = account(2, "old-name");
    store
        .put_accounts(std::slice::from_ref(&other))
        .await
        .unwrap();
    assert_eq!(
        store.get_account_by_name("old-name").await.unwrap(),
        Some(other)
    );
    assert_eq!(
        names(&store.list_accounts().await.unwrap()),
        ["new-name", "old-name"]
    );
}

async fn duplicate_name_is_refused_and_batch_writes_nothing(f: Fixture) {
    let store = f.open().await;
    let x = account(1, "x");
    store.put_accounts(std::slice::from_ref(&x)).await.unwrap();

    // Clash with a stored account: the innocent first record is not written either.
    let err = store
        .put_accounts(&[account(2, "y"), account(3, "x")])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NameTaken { name } if name == "x"),
        "{err:?}"
    );
    // Clash inside the batch.
    let err = store
        .put_accounts(&[account(4, "z"), account(5, "z")])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NameTaken { name } if name == "z"),
        "{err:?}"
    );

    assert_eq!(
        store.list_accounts().await.unwrap(),
        std::slice::from_ref(&x)
    );
    assert_eq!(store.get_account_by_name("x").await.unwrap(), Some(x));
    assert_eq!(store.get_account_by_name("y").await.unwrap(), None);
    assert_eq!(store.get_account_by_name("z").await.unwrap(), None);
    assert_eq!(store.get_account(&account(2, "y").id).await.unwrap(), None);
}

async fn batch_may_swap_names(f: Fixture) {
    let store = f.open().await;
    store
        .put_accounts(&[account(1, "p"), account(2, "q")])
        .await
        .unwrap();
    let (one, two) = (account(1, "q"), account(2, "p"));
    store
        .put_accounts(&[one.clone(), two.clone()])
        .await
        .unwrap();
    assert_eq!(store.get_account_by_name("q").await.unwrap(), Some(one));
    assert_eq!(store.get_account_by_name("p").await.unwrap(), Some(two));
    // The same id twice in one batch: the later record wins.
    let (first, last) = (account(3, "r1"), account(3, "r2"));
    store.put_accounts(&[first, last.clone()]).await.unwrap();
    assert_eq!(store.get_account(&last.id).await.unwrap(), Some(last));
    assert_eq!(store.get_account_by_name("r1").await.unwrap(), None);
    assert_eq!(store.list_accounts().await.unwrap().len(), 3);
}

async fn batch_put_is_all_or_nothing_on_reopen(f: Fixture) {
    let batch: Vec<_> = (1..=50)
        .map(|n| account(n, &format!("acc-{n:02}")))
        .collect();
    {
        let store = f.open().await;
        store.put_accounts(&batch).await.unwrap();
        let mut bad = batch.clone();
        bad.push(account(99, "acc-01"));
        assert!(store.put_accounts(&bad[25..]).await.is_err());
    }
    let store = f.open().await;
    assert_eq!(store.list_accounts().await.unwrap(), batch);
    assert_eq!(store.get_account(&account(99, "").id).await.unwrap(), None);
}

async fn delete_account_reports_whether_it_existed(f: Fixture) {
    let store = f.open().await;
    let (a, b) = (account(1, "a"), account(2, "b"));
    store.put_accounts(&[a.clone(), b.clone()]).await.unwrap();
    assert!(store.delete_account(&a.id).await.unwrap());
    assert!(!store.delete_account(&a.id).await.unwrap());
    assert_eq!(store.get_account(&a.id).await.unwrap(), None);
    assert_eq!(store.get_account_by_name("a").await.unwrap(), None);
    assert_eq!(store.list_accounts().await.unwrap(), [b]);
    // Its name is free again.
    store.put_accounts(&[account(3, "a")]).await.unwrap();
}

async fn keys_put_get_list_in_creation_order(f: Fixture) {
    let store = f.open().await;
    assert!(store.list_keys().await.unwrap().is_empty());
    let (k1, k2, k3) = (key(3, 100), key(1, 300), key(2, 200));
    for k in [&k1, &k2, &k3] {
        store.put_key(k).await.unwrap();
    }
    assert_eq!(
        store.list_keys().await.unwrap(),
        [k1.clone(), k3, k2.clone()]
    );
    assert_eq!(store.get_key(&k2.key.id).await.unwrap(), Some(k2.clone()));
    assert_eq!(
        store
            .get_key(&KeyId("key_ffffffffffffffff".into()))
            .await
            .unwrap(),
        None
    );
    let mut revoked = k1;
    revoked.key.revoked_at = Some(400);
    store.put_key(&revoked).await.unwrap();
    assert_eq!(store.get_key(&revoked.key.id).await.unwrap(), Some(revoked));
    assert_eq!(store.list_keys().await.unwrap().len(), 3);
}

async fn meta_get_set(f: Fixture) {
    let store = f.open().await;
    assert_eq!(store.get_meta("keyCheck").await.unwrap(), None);
    store.set_meta("keyCheck", "abc").await.unwrap();
    assert_eq!(
        store.get_meta("keyCheck").await.unwrap().as_deref(),
        Some("abc")
    );
    store.set_meta("keyCheck", "def").await.unwrap();
    assert_eq!(
        store.get_meta("keyCheck").await.unwrap().as_deref(),
        Some("def")
    );
}

async fn reopen_finds_everything(f: Fixture) {
    let accounts = vec![account(1, "a"), account(2, "b")];
    let keys = vec![key(1, 1), key(2, 2)];
    {
        let store = f.open().await;
        store.put_accounts(&accounts).await.unwrap();
        for k in &keys {
            store.put_key(k).await.unwrap();
        }
        store.set_meta("keyCheck", "v").await.unwrap();
        store.delete_account(&accounts[1].id).await.unwrap();
    }
    let store = f.open().await;
    assert_eq!(store.list_accounts().await.unwrap(), accounts[..1]);
    assert_eq!(
        store.get_account_by_name("a").await.unwrap().as_ref(),
        Some(&accounts[0])
    );
    assert_eq!(store.get_account_by_name("b").await.unwrap(), None);
    assert_eq!(store.list_keys().await.unwrap(), keys);
    assert_eq!(
        store.get_meta("keyCheck").await.unwrap().as_deref(),
        Some("v")
    );
}

async fn newer_format_is_refused(f: Fixture) {
    let newer = FORMAT_VERSION + 1;
    {
        let store = f.open().await;
        store.put_accounts(&[account(1, "a")]).await.unwrap();
        store
            .set_meta(FORMAT_VERSION_META, &newer.to_string())
            .await
            .unwrap();
    }
    let Err(err) = f.try_open().await else {
        panic!("a store with format version {newer} was opened");
    };
    assert!(
        matches!(err, StoreError::TooNew { found, supported } if found == newer && supported == FORMAT_VERSION),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade relayd"), "{err}");
}

async fn damaged_supported_models_fall_back(f: Fixture) {
    let rec = account(1, "damaged");
    let healthy = account(2, "healthy");
    {
        let store = f.open().await;
        store
            .put_accounts(&[rec.clone(), healthy.clone()])
            .await
            .unwrap();
    }
    let mut value = serde_json::to_value(&rec).unwrap();
    value["settings"]["supportedModels"] = serde_json::json!("gpt-4o, gpt-4");
    f.write_raw_account(rec.id.as_str(), &value.to_string())
        .await;

    let store = f.open().await;
    let loaded = store.get_account(&rec.id).await.unwrap().unwrap();
    assert_eq!(
        loaded.settings.supported_models,
        fallback_supported_models()
    );
    assert_eq!(loaded.settings.name, "damaged");
    let listed = store.list_accounts().await.unwrap();
    assert_eq!(
        listed[0].settings.supported_models,
        fallback_supported_models()
    );
    assert_eq!(listed[1], healthy);

    // An empty list is damage too.
    drop(store);
    value["settings"]["supportedModels"] = serde_json::json!([]);
    f.write_raw_account(rec.id.as_str(), &value.to_string())
        .await;
    let store = f.open().await;
    let loaded = store.get_account_by_name("damaged").await.unwrap().unwrap();
    assert_eq!(
        loaded.settings.supported_models,
        fallback_supported_models()
    );
}

async fn other_damage_is_reported_as_corrupt(f: Fixture) {
    let rec = account(1, "broken");
    {
        let store = f.open().await;
        store
            .put_accounts(std::slice::from_ref(&rec))
            .await
            .unwrap();
    }
    f.write_raw_account(rec.id.as_str(), "{\"id\": \"acc_0000000000000001\"")
        .await;
    let store = f.open().await;
    let err = store.get_account(&rec.id).await.unwrap_err();
    match &err {
        StoreError::Corrupt { what, .. } => assert_eq!(what, "account acc_0000000000000001"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(
        store.list_accounts().await,
        Err(StoreError::Corrupt { .. })
    ));
    // A damaged record can still be replaced.
    store
        .put_accounts(std::slice::from_ref(&rec))
        .await
        .unwrap();
    assert_eq!(store.get_account(&rec.id).await.unwrap(), Some(rec));
}

/// Set in the child process of [`embedded_acknowledged_writes_survive_sigkill`] to the store path.
const CRASH_CHILD_ENV: &str = "RELAYD_TEST_CRASH_CHILD_STORE";

/// The product promise behind `Durability::Immediate`: a write acknowledged before `kill -9` is
/// there afterwards, and the file opens cleanly. The test re-runs its own binary as a writer that
/// prints `ack N` after each acknowledged put, SIGKILLs it mid-stream, and reopens the file.
#[test]
fn embedded_acknowledged_writes_survive_sigkill() {
    use std::io::BufRead as _;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    if let Some(path) = std::env::var_os(CRASH_CHILD_ENV) {
        // Writer: never returns; the parent kills it.
        runtime.block_on(async {
            let store = EmbeddedStore::open(PathBuf::from(path)).await.unwrap();
            for n in 0.. {
                store
                    .put_accounts(&[account(n, &format!("crash-{n}"))])
                    .await
                    .unwrap();
                println!("ack {n}");
            }
        });
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relayd.redb");
    let test_name = concat!(
        module_path!(),
        "::embedded_acknowledged_writes_survive_sigkill"
    );
    let test_name = test_name
        .split_once("::")
        .map_or(test_name, |(_, rest)| rest);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD_ENV, &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut acked = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("ack ") {
            acked.push(n.parse::<u64>().unwrap());
            if acked.len() == 25 {
                break;
            }
        }
    }
    // Kill while the writer is in the middle of its next writes.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(acked.len(), 25, "the writer stopped early");

    runtime.block_on(async {
        let store = EmbeddedStore::open(&path).await.unwrap();
        for n in acked {
            let want = account(n, &format!("crash-{n}"));
            assert_eq!(store.get_account(&want.id).await.unwrap(), Some(want));
        }
        store.list_accounts().await.unwrap();
    });
}

fn profile(window: u32) -> Profile {
    Profile {
        probed_at: 1_700_000_000_000,
        family: ServerFamily::Vllm,
        version: Some("0.11.0".into()),
        context_window: Some(window),
        tokenizer: Some(Tokenizer::ChatTokenize),
        native_messages: Some(true),
        notes: vec!["tool calls: not checked".into()],
        ..Profile::default()
    }
}

async fn profiles_live_beside_their_account(f: Fixture) {
    let (a, b) = (account(1, "a"), account(2, "b"));
    {
        let store = f.open().await;
        // No account, no profile.
        assert!(!store.put_profile(&a.id, &profile(8192)).await.unwrap());
        assert!(store.list_profiles().await.unwrap().is_empty());
        store.put_accounts(&[a.clone(), b.clone()]).await.unwrap();
        assert!(store.put_profile(&a.id, &profile(8192)).await.unwrap());
        assert!(store.put_profile(&a.id, &profile(32768)).await.unwrap());
        assert!(store.put_profile(&b.id, &profile(4096)).await.unwrap());
        // The account record itself is untouched (no `updatedAt` change, no race with PATCH).
        assert_eq!(store.get_account(&a.id).await.unwrap().as_ref(), Some(&a));
        assert!(store.delete_account(&b.id).await.unwrap());
    }
    // The latest profile survives a reopen; a deleted account's went with it.
    let store = f.open().await;
    assert_eq!(
        store.list_profiles().await.unwrap(),
        [(a.id.clone(), profile(32768))]
    );
    // Recreating an account under the deleted id starts without a profile.
    store.put_accounts(std::slice::from_ref(&b)).await.unwrap();
    assert_eq!(store.list_profiles().await.unwrap().len(), 1);
}
