//! The coordinator conformance suite: one set of cases, each run against every backend — the
//! in-process [`LocalCoordinator`], and the [`RedisCoordinator`] on a private `redis-server` and
//! on a private three-node Redis Cluster — so slots, cooldowns and key counters behave the same
//! whichever the store is. A missing `redis-server` fails the Redis halves; they are never
//! skipped.
//!
//! A [`Fixture`] opens handles over one shared state: for the local backend every handle is the
//! same coordinator (one process, one state); for Redis each is a new instance on the same server
//! and prefix, as two relayd processes would be. The few cases about what only a shared store
//! has (leases of a crashed instance, stored cooldowns, change announcements) run on Redis and
//! the cluster only and say so; the rolling-minute case is local-only because Redis keeps time by its own clock.
//!
//! Writes that the Redis coordinator hands to its background writer (releases, token counts) are
//! awaited through the coordinator's own wake-up or by polling the observable result with a
//! deadline; nothing waits on a fixed sleep.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use relayd::coordinator::{
    AffinityKey, AffinitySettings, Change, Cooldown, Coordinator, LocalCoordinator,
    RedisCoordinator, RedisSettings,
};
use relayd::store::redis::RedisStore;
use relayd_tests::redis_cluster::RedisCluster;
use relayd_tests::redis_server::RedisServer;
use shared::account::AccountId;
use shared::key::KeyId;
use shared::time::now_millis;
use tokio::sync::mpsc;

/// Longest wait for a background write or an announcement to show.
const EVENTUALLY: Duration = Duration::from_secs(5);

/// The lease of Redis handles unless a case asks for another.
const LEASE: Duration = Duration::from_secs(30);

/// One UTC day in milliseconds.
const DAY: i64 = 86_400_000;

/// Where a case's shared state lives.
enum Fixture {
    Local(Arc<LocalCoordinator>),
    Redis {
        server: RedisServer,
        prefix: String,
    },
    Cluster {
        cluster: RedisCluster,
        prefix: String,
    },
}

impl Fixture {
    fn local() -> Self {
        Self::Local(Arc::new(LocalCoordinator::new()))
    }

    fn redis() -> Self {
        Self::Redis {
            server: RedisServer::start(),
            prefix: unique_prefix(),
        }
    }

    fn cluster() -> Self {
        Self::Cluster {
            cluster: RedisCluster::start(),
            prefix: unique_prefix(),
        }
    }

    fn is_redis(&self) -> bool {
        !matches!(self, Self::Local(_))
    }

    /// The Redis URL and configured prefix.
    fn url_and_prefix(&self) -> (String, &str) {
        match self {
            Self::Local(_) => panic!("Redis settings of a local fixture"),
            Self::Redis { server, prefix } => (server.url(), prefix),
            Self::Cluster { cluster, prefix } => (cluster.url(), prefix),
        }
    }

    /// The prefix channels and keys really have (hash-tagged in a cluster), as the store
    /// sharing them names it.
    async fn key_prefix(&self) -> String {
        let (url, prefix) = self.url_and_prefix();
        RedisStore::connect(&url, prefix)
            .await
            .unwrap()
            .prefix()
            .to_owned()
    }

    /// A plain connection to one server: the Redis server, or the cluster's last node (where
    /// the subscriber does not start listening, so an announcement crosses the cluster bus).
    async fn plain_conn(&self) -> ::redis::aio::MultiplexedConnection {
        let url = match self {
            Self::Local(_) => panic!("no Redis behind a local fixture"),
            Self::Redis { server, .. } => server.url(),
            Self::Cluster { cluster, .. } => cluster.node_url(cluster.len() - 1),
        };
        ::redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    fn settings(&self, lease: Duration, longest_cooldown: Duration) -> RedisSettings {
        let (url, prefix) = self.url_and_prefix();
        RedisSettings {
            url,
            prefix: prefix.to_owned(),
            lease,
            longest_cooldown,
            serving_threads: 2,
            affinity: AffinitySettings::default(),
        }
    }

    /// A handle over the fixture's shared state.
    async fn open(&self) -> Arc<dyn Coordinator> {
        self.open_with(LEASE, Duration::from_secs(3600)).await
    }

    async fn open_with(&self, lease: Duration, longest_cooldown: Duration) -> Arc<dyn Coordinator> {
        match self {
            Self::Local(local) => Arc::clone(local) as Arc<dyn Coordinator>,
            Self::Redis { .. } | Self::Cluster { .. } => {
                let (changes, _) = mpsc::channel(16);
                let settings = self.settings(lease, longest_cooldown);
                Arc::new(RedisCoordinator::start(&settings, changes).await.unwrap())
            }
        }
    }
}

/// A fresh prefix per fixture, so cases stay apart even if servers are ever shared.
fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "coord{}-{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `check` until it holds, failing after [`EVENTUALLY`] with `what`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {EVENTUALLY:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Releases `account` on `c` and waits for the release to have taken effect (the coordinator
/// wakes its waiters once it has).
async fn release_and_wait(c: &dyn Coordinator, account: &AccountId) {
    let freed = c.slot_freed().notified();
    tokio::pin!(freed);
    freed.as_mut().enable();
    c.release(account);
    tokio::time::timeout(EVENTUALLY, freed)
        .await
        .expect("a release wakes the slot waiters");
}

fn account(n: u32) -> AccountId {
    AccountId(format!("acc_{n}"))
}

fn key(n: u32) -> KeyId {
    KeyId(format!("key_{n}"))
}

fn cooldown(until: i64, reason: &str) -> Cooldown {
    Cooldown {
        until,
        reason: reason.to_owned(),
    }
}

/// Generates one `#[tokio::test]` per backend for every listed case. (The generated `mod redis`
/// would shadow the `redis` crate here, hence `::redis::` in this file.)
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Fixture::local()).await;
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

conformance!(
    slots_are_taken_up_to_the_capacity_and_given_back,
    slots_are_counted_per_account,
    concurrent_takes_on_several_handles_fill_the_capacity_exactly,
    a_second_handle_shares_the_slots_and_is_woken_by_a_release,
    a_cooldown_is_read_until_it_ends,
    a_longer_cooldown_is_not_shortened_but_a_shorter_one_is_extended,
    clearing_ends_a_cooldown_on_every_handle,
    the_requests_per_minute_limit_refuses_with_a_wait,
    tokens_are_counted_per_utc_day,
    key_concurrency_is_capped_and_given_back,
    round_trips_are_counted_only_with_shared_storage,
    a_moved_conversation_is_known_to_every_handle_until_it_comes_home,
);

async fn a_moved_conversation_is_known_to_every_handle_until_it_comes_home(f: Fixture) {
    let c = f.open().await;
    let other = f.open().await;
    let moved = AffinityKey::session(&key(1), "session-1");
    let untouched = AffinityKey::session(&key(2), "session-1");
    assert_eq!(c.affinity(&moved), None);
    c.set_affinity(&moved, Some(&account(2)));
    assert_eq!(
        c.affinity(&moved),
        Some(account(2)),
        "at once on its own handle"
    );
    eventually("the other handle hears of the move", || async {
        other.affinity(&moved) == Some(account(2))
    })
    .await;
    assert_eq!(other.affinity(&untouched), None, "per relay key");
    // Moved again, then home: both follow.
    other.set_affinity(&moved, Some(&account(3)));
    eventually("the first handle hears of the second move", || async {
        c.affinity(&moved) == Some(account(3))
    })
    .await;
    c.set_affinity(&moved, None);
    assert_eq!(c.affinity(&moved), None);
    eventually("the other handle hears it came home", || async {
        other.affinity(&moved).is_none()
    })
    .await;
}

async fn slots_are_taken_up_to_the_capacity_and_given_back(f: Fixture) {
    let c = f.open().await;
    let a = account(1);
    assert_eq!(c.in_flight(&a), 0);
    assert!(c.try_acquire(&a, 2).await.unwrap());
    assert!(c.try_acquire(&a, 2).await.unwrap());
    assert_eq!(c.in_flight(&a), 2);
    assert!(!c.try_acquire(&a, 2).await.unwrap(), "full at 2");
    assert_eq!(c.in_flight(&a), 2, "a refused take holds nothing");
    release_and_wait(c.as_ref(), &a).await;
    assert_eq!(c.in_flight(&a), 1);
    assert!(c.try_acquire(&a, 2).await.unwrap(), "the freed slot");
    assert!(!c.try_acquire(&a, 2).await.unwrap());
    // A larger capacity (the account was reconfigured) admits more at once.
    assert!(c.try_acquire(&a, 3).await.unwrap());
    assert_eq!(c.in_flight(&a), 3);
}

async fn slots_are_counted_per_account(f: Fixture) {
    let c = f.open().await;
    assert!(c.try_acquire(&account(1), 1).await.unwrap());
    assert!(!c.try_acquire(&account(1), 1).await.unwrap());
    assert!(
        c.try_acquire(&account(2), 1).await.unwrap(),
        "another account"
    );
    assert_eq!(c.in_flight(&account(1)), 1);
    assert_eq!(c.in_flight(&account(2)), 1);
    assert_eq!(c.in_flight(&account(3)), 0);
}

async fn concurrent_takes_on_several_handles_fill_the_capacity_exactly(f: Fixture) {
    // With Redis the takes race: each adds its lease and counts, and those over the cap go to
    // the exact script. However they interleave, the cap holds and none is refused while a
    // slot is free.
    let handles = [f.open().await, f.open().await, f.open().await];
    let a = account(1);
    let takes = handles
        .iter()
        .flat_map(|c| (0..8).map(|_| c.try_acquire(&a, 5)));
    let taken = futures_util::future::join_all(takes)
        .await
        .into_iter()
        .map(Result::unwrap)
        .filter(|taken| *taken)
        .count();
    assert_eq!(taken, 5);
    for c in &handles {
        assert!(!c.try_acquire(&a, 5).await.unwrap(), "full at 5");
    }
}

async fn a_second_handle_shares_the_slots_and_is_woken_by_a_release(f: Fixture) {
    let first = f.open().await;
    let second = f.open().await;
    let a = account(1);
    assert!(first.try_acquire(&a, 1).await.unwrap());
    assert!(
        !second.try_acquire(&a, 1).await.unwrap(),
        "the cap holds across handles"
    );
    // The second handle saw the account full; the first's release must wake it.
    let freed = second.slot_freed().notified();
    tokio::pin!(freed);
    freed.as_mut().enable();
    first.release(&a);
    tokio::time::timeout(EVENTUALLY, freed)
        .await
        .expect("a release on one handle wakes waiters on the other");
    assert!(second.try_acquire(&a, 1).await.unwrap());
}

async fn a_cooldown_is_read_until_it_ends(f: Fixture) {
    let c = f.open().await;
    let a = account(1);
    let now = now_millis();
    assert_eq!(c.cooldown(&a, now), None);
    let until = now + 60_000;
    c.cool_down(&a, cooldown(until, "HTTP 429")).await;
    assert_eq!(c.cooldown(&a, now), Some(cooldown(until, "HTTP 429")));
    assert_eq!(c.cooldown(&a, until - 1), Some(cooldown(until, "HTTP 429")));
    assert_eq!(c.cooldown(&a, until), None, "over at `until`");
    assert_eq!(c.cooldown(&account(2), now), None, "per account");
}

async fn a_longer_cooldown_is_not_shortened_but_a_shorter_one_is_extended(f: Fixture) {
    let c = f.open().await;
    let other = f.open().await;
    let a = account(1);
    let now = now_millis();
    let long = cooldown(now + 50_000, "connect error");
    c.cool_down(&a, long.clone()).await;
    c.cool_down(&a, cooldown(now + 20_000, "HTTP 503")).await;
    assert_eq!(c.cooldown(&a, now), Some(long.clone()), "not shortened");
    let longer = cooldown(now + 90_000, "HTTP 401");
    c.cool_down(&a, longer.clone()).await;
    assert_eq!(c.cooldown(&a, now), Some(longer.clone()), "extended");
    eventually("the other handle sees the longest cooldown", || {
        let seen = other.cooldown(&a, now);
        let want = longer.clone();
        async move { seen == Some(want) }
    })
    .await;
}

async fn clearing_ends_a_cooldown_on_every_handle(f: Fixture) {
    let c = f.open().await;
    let other = f.open().await;
    let a = account(1);
    let now = now_millis();
    c.cool_down(&a, cooldown(now + 365 * DAY, "HTTP 429")).await;
    eventually("the other handle sees the cooldown", || {
        let seen = other.cooldown(&a, now).is_some();
        async move { seen }
    })
    .await;
    // Clearing wakes requests queued while every candidate was cooling.
    let woken = other.slot_freed().notified();
    tokio::pin!(woken);
    woken.as_mut().enable();
    c.clear_cooldown(&a).await.unwrap();
    assert_eq!(c.cooldown(&a, now), None);
    tokio::time::timeout(EVENTUALLY, woken)
        .await
        .expect("clearing wakes waiters on every handle");
    assert_eq!(other.cooldown(&a, now), None);
    // Clearing an account that never cooled down is fine too.
    c.clear_cooldown(&account(2)).await.unwrap();
    if f.is_redis() {
        // A handle opened now does not load the cleared cooldown.
        let late = f.open().await;
        assert_eq!(late.cooldown(&a, now), None);
    }
}

async fn the_requests_per_minute_limit_refuses_with_a_wait(f: Fixture) {
    let c = f.open().await;
    let k = key(1);
    let now = now_millis();
    assert_eq!(c.take_request(&k, 2, now).await.unwrap(), Ok(()));
    assert_eq!(c.take_request(&k, 2, now + 1).await.unwrap(), Ok(()));
    let refused = c.take_request(&k, 2, now + 2).await.unwrap();
    let Err(wait) = refused else {
        panic!("the third request in a minute passed a limit of 2");
    };
    assert!((1..=60).contains(&wait), "wait {wait} s");
    assert_eq!(
        c.take_request(&key(2), 2, now + 2).await.unwrap(),
        Ok(()),
        "per key"
    );
    // A refused request is not counted: raising the limit admits exactly one more.
    assert_eq!(c.take_request(&k, 3, now + 3).await.unwrap(), Ok(()));
    assert!(c.take_request(&k, 3, now + 4).await.unwrap().is_err());
}

async fn tokens_are_counted_per_utc_day(f: Fixture) {
    let c = f.open().await;
    let k = key(1);
    // A day far from today, so the Redis keys are this case's alone.
    let day = 20_000 * DAY;
    assert_eq!(c.tokens_today(&k, day + 5).await.unwrap(), 0);
    c.add_tokens(&k, 10, day + 5);
    c.add_tokens(&k, 32, day + 6);
    c.add_tokens(&key(2), 1000, day + 6);
    eventually("42 tokens counted", || {
        let c = Arc::clone(&c);
        let k = k.clone();
        async move { c.tokens_today(&k, day + 7).await.unwrap() == 42 }
    })
    .await;
    assert_eq!(
        c.tokens_today(&k, day + DAY - 1).await.unwrap(),
        42,
        "the same UTC day until its last millisecond"
    );
    assert_eq!(
        c.tokens_today(&k, day + DAY).await.unwrap(),
        0,
        "a new UTC day starts at 0"
    );
    c.add_tokens(&k, 5, day + DAY + 1);
    eventually("the next day counts on its own", || {
        let c = Arc::clone(&c);
        let k = k.clone();
        async move { c.tokens_today(&k, day + DAY + 2).await.unwrap() == 5 }
    })
    .await;
    // (A past day is never asked for again: the local coordinator keeps only the current day.)
}

async fn key_concurrency_is_capped_and_given_back(f: Fixture) {
    let c = f.open().await;
    let k = key(1);
    assert!(c.enter_key(&k, 2).await.unwrap());
    assert!(c.enter_key(&k, 2).await.unwrap());
    assert!(!c.enter_key(&k, 2).await.unwrap(), "at the limit");
    assert!(c.enter_key(&key(2), 1).await.unwrap(), "per key");
    c.leave_key(&k);
    eventually("a left request frees its place", || {
        let c = Arc::clone(&c);
        let k = k.clone();
        async move { c.enter_key(&k, 2).await.unwrap() }
    })
    .await;
    assert!(!c.enter_key(&k, 2).await.unwrap(), "full again");
}

async fn round_trips_are_counted_only_with_shared_storage(f: Fixture) {
    let c = f.open().await;
    let before = c.round_trips();
    assert!(c.try_acquire(&account(1), 1).await.unwrap());
    assert_eq!(
        c.take_request(&key(1), 10, now_millis()).await.unwrap(),
        Ok(())
    );
    let after = c.round_trips();
    if f.is_redis() {
        assert!(after >= before + 2, "{before} -> {after}");
        assert!(c.recheck_interval().is_some(), "leases can expire silently");
    } else {
        assert_eq!((before, after), (0, 0));
        assert_eq!(c.recheck_interval(), None, "every release wakes waiters");
    }
}

// Local only: the rolling minute under a clock the test controls (Redis uses its own clock).

#[tokio::test]
async fn local_the_requests_per_minute_window_slides() {
    let c = LocalCoordinator::new();
    let k = key(1);
    assert_eq!(c.take_request(&k, 2, 0).await.unwrap(), Ok(()));
    assert_eq!(c.take_request(&k, 2, 30_000).await.unwrap(), Ok(()));
    assert_eq!(c.take_request(&k, 2, 45_000).await.unwrap(), Err(15));
    assert_eq!(c.take_request(&k, 2, 60_000).await.unwrap(), Ok(()));
}

// Redis server and cluster only: what exists only with a shared store.

/// Generates a `#[tokio::test]` on a Redis server and one on a cluster for each shared-only case.
macro_rules! shared_only {
    ($($name:ident),* $(,)?) => {
        mod shared_redis {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Fixture::redis()).await;
                }
            )*
        }
        mod shared_cluster {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Fixture::cluster()).await;
                }
            )*
        }
    };
}

shared_only!(
    a_crashed_instances_lease_expires_and_a_live_one_is_renewed,
    stored_cooldowns_are_loaded_and_capped,
    announced_changes_are_passed_on,
);

/// A crashed instance's slots come back after the lease time; a live one's are renewed.
async fn a_crashed_instances_lease_expires_and_a_live_one_is_renewed(f: Fixture) {
    let lease = Duration::from_millis(300);
    let longest = Duration::from_secs(60);
    let live = f.open_with(lease, longest).await;
    let other = f.open_with(lease, longest).await;
    assert!(live.try_acquire(&account(1), 1).await.unwrap());
    // Three lease times later the renewed lease still holds the slot.
    tokio::time::sleep(lease * 3).await;
    assert!(
        !other.try_acquire(&account(1), 1).await.unwrap(),
        "a held lease is renewed"
    );

    let crashed = f.open_with(lease, longest).await;
    assert!(crashed.try_acquire(&account(2), 1).await.unwrap());
    assert!(!other.try_acquire(&account(2), 1).await.unwrap());
    drop(crashed); // stops its renewal without giving anything back
    eventually("the crashed instance's lease expires", || {
        let other = Arc::clone(&other);
        async move { other.try_acquire(&account(2), 1).await.unwrap() }
    })
    .await;
}

/// Cooldowns are loaded by an instance that starts later, none longer than it allows.
async fn stored_cooldowns_are_loaded_and_capped(f: Fixture) {
    let first = f.open().await;
    let now = now_millis();
    let year = 365 * DAY;
    first
        .cool_down(&account(1), cooldown(now + year, "HTTP 429"))
        .await;
    first
        .cool_down(&account(2), cooldown(now + 30_000, "HTTP 503"))
        .await;
    let capped = f.open_with(LEASE, Duration::from_secs(600)).await;
    let one = capped.cooldown(&account(1), now).expect("loaded");
    assert_eq!(one.reason, "HTTP 429");
    assert!(
        one.until <= now_millis() + 600_000 && one.until > now + 590_000,
        "capped to 600 s: {one:?}"
    );
    let two = capped.cooldown(&account(2), now).expect("loaded");
    assert_eq!(
        two,
        cooldown(now + 30_000, "HTTP 503"),
        "under the cap: as is"
    );
    // The stored value was shortened too, so every later instance loads the capped one.
    let later = f.open_with(LEASE, Duration::from_secs(3600)).await;
    assert!(later.cooldown(&account(1), now).unwrap().until <= one.until);
}

/// Admin changes announced by another instance arrive as change events; the coordinator
/// reloads nothing itself.
async fn announced_changes_are_passed_on(f: Fixture) {
    let (changes, mut reported) = mpsc::channel(16);
    let settings = f.settings(LEASE, Duration::from_secs(60));
    let _c = RedisCoordinator::start(&settings, changes).await.unwrap();
    let prefix = f.key_prefix().await;
    let mut conn = f.plain_conn().await;
    for (payload, want) in [("accounts", Change::Accounts), ("keys", Change::Keys)] {
        let _: i64 = ::redis::cmd("PUBLISH")
            .arg(format!("{prefix}changes"))
            .arg(payload)
            .query_async(&mut conn)
            .await
            .unwrap();
        let got = tokio::time::timeout(EVENTUALLY, reported.recv())
            .await
            .expect("the change is passed on")
            .expect("the coordinator is running");
        assert_eq!(got, want);
    }
    // Anything else on the channel is not a change.
    let _: i64 = ::redis::cmd("PUBLISH")
        .arg(format!("{prefix}changes"))
        .arg("weather")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: i64 = ::redis::cmd("PUBLISH")
        .arg(format!("{prefix}changes"))
        .arg("keys")
        .query_async(&mut conn)
        .await
        .unwrap();
    let got = tokio::time::timeout(EVENTUALLY, reported.recv())
        .await
        .unwrap();
    assert_eq!(got, Some(Change::Keys), "the unknown payload was skipped");
}

/// Cluster only: the subscriber listens on one node; while that node (whichever it is) is down it
/// listens on another, and announcements made anywhere reach it.
#[tokio::test]
async fn cluster_the_subscriber_moves_on_while_its_node_is_down() {
    let mut f = Fixture::cluster();
    let c = f.open().await;
    let prefix = f.key_prefix().await;
    let Fixture::Cluster { cluster, .. } = &mut f else {
        unreachable!("a cluster fixture")
    };
    for node in 0..cluster.len() {
        cluster.stop(node);
        // Announced on a running node (a cluster passes PUBLISH on even while it refuses keyed
        // commands); sent again until heard, since an announcement made while the subscriber is
        // away is lost (the daemon then reloads everything instead).
        let other = cluster.node_url((node + 1) % cluster.len());
        let id = account(100 + u32::try_from(node).unwrap());
        let until = now_millis() + 60_000;
        let c = Arc::clone(&c);
        eventually("a cooldown announced while a node is down is heard", || {
            let (other, id, prefix, c) =
                (other.clone(), id.clone(), prefix.clone(), Arc::clone(&c));
            async move {
                let mut conn = ::redis::Client::open(other)
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap();
                let _: i64 = ::redis::cmd("PUBLISH")
                    .arg(format!("{prefix}cooldowns"))
                    .arg(format!("{} {until} restart", id.as_str()))
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                c.cooldown(&id, now_millis()).is_some()
            }
        })
        .await;
        cluster.start_again(node);
    }
}
