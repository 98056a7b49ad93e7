//! relayd on a Redis Cluster, end to end: the real binary with `store = "redis+cluster://…"` on a
//! private three-node cluster, one mock upstream account, load and admin writes running while
//! each node (the one holding relayd's slot first) is killed and restarted in turn. Every write relayd acknowledged must be
//! there afterwards, no request may hang (failures during the outage are 503s), `/readyz` must say
//! 503 during each outage and 200 after it, and the account's slot leases must drain to none in
//! flight within the lease time.
//!
//! The conformance suites run their cases on a cluster too (`store_conformance`,
//! `coordinator_conformance`, `usage_store`: the `cluster` modules).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relayd_tests::daemon::{Daemon, Started};
use relayd_tests::http::{Admin, Reply, send};
use relayd_tests::mock_upstream::{MockReply, MockUpstream, completion};
use relayd_tests::redis_cluster::RedisCluster;
use serde_json::json;
use tokio::sync::watch;

const MODEL: &str = "claude-sonnet-4-5-20250929";
/// Slot lease time configured for the daemon.
const LEASE_SECS: u64 = 2;
/// Concurrent clients sending requests.
const CLIENTS: usize = 8;
/// The account's concurrency: below [`CLIENTS`], so requests queue for slots and a leaked one
/// would show.
const CONCURRENCY: u32 = 4;
/// Longest a request or admin call may take, outage included, before it counts as hung: the
/// store's command timeout (10 s) with room for a retry.
const HUNG: Duration = Duration::from_secs(40);
/// Longest the test waits for progress it expects (outage seen, recovery seen).
const PROGRESS: Duration = Duration::from_secs(60);

/// What the clients and the admin writer saw.
#[derive(Debug, Default)]
struct Seen {
    /// Status of every proxied request, with when it ended.
    requests: Vec<(u16, Instant)>,
    /// Names of keys and accounts whose creation was acknowledged (201).
    acknowledged: Vec<String>,
    /// Statuses of admin writes that were refused, with when.
    refused: Vec<(u16, Instant)>,
    /// The longest any request or admin write took.
    slowest: Duration,
}

impl Seen {
    fn ok_since(&self, t: Instant) -> usize {
        self.requests
            .iter()
            .filter(|(s, at)| *s == 200 && *at > t)
            .count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_restart_under_load_loses_no_acknowledged_write_and_leaks_no_slot() {
    let cluster = RedisCluster::start();
    let mock = MockUpstream::start().await;
    mock.set_responder(|_| short_completion());
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &[],
        &[
            ("RELAYD_STORE", &cluster.url()),
            ("RELAYD_ROUTING__LEASE_SECS", &LEASE_SECS.to_string()),
        ],
    );
    let admin = daemon.admin();
    let account = admin
        .create_account(&json!({
            "name": "upstream", "endpoint": mock.endpoint(), "deploymentName": "d",
            "concurrency": CONCURRENCY, "supportedModels": [MODEL]
        }))
        .await;
    let account_id = account["id"].as_str().unwrap().to_owned();
    let key = admin.create_key(&json!({"name": "load"})).await;
    // The default prefix `relayd:` is tagged `{relayd}:` on a cluster: this node holds it all.
    let store_node = cluster.node_holding("{relayd}:meta");

    let seen = Arc::new(Mutex::new(Seen::default()));
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        tasks.push(tokio::spawn(client(
            daemon.url(""),
            key.clone(),
            Arc::clone(&seen),
            stopped.clone(),
        )));
    }
    tasks.push(tokio::spawn(writer(
        admin.clone(),
        mock.endpoint(),
        Arc::clone(&seen),
        stopped.clone(),
    )));

    let start = Instant::now();
    wait_for("load and writes before the restart", &seen, |s| {
        s.ok_since(start) >= 20 && s.acknowledged.len() >= 3
    })
    .await;

    // Kill each node in turn, the one holding relayd's slot first (the others take the whole
    // cluster down too: it refuses commands while any slot has no primary). Each stays down
    // until both the load and the writer have met the outage, then starts again with its
    // append-only file and cluster config.
    let order: Vec<usize> = std::iter::once(store_node)
        .chain((0..cluster.len()).filter(|i| *i != store_node))
        .collect();
    let mut cluster = cluster;
    for node in order {
        let outage;
        (cluster, outage) = tokio::task::spawn_blocking(move || {
            cluster.stop(node);
            (cluster, Instant::now())
        })
        .await
        .unwrap();
        wait_for("the outage to be seen", &seen, |s| {
            s.refused.iter().any(|(_, at)| *at > outage)
                && s.requests.iter().any(|(st, at)| *st != 200 && *at > outage)
        })
        .await;
        wait_ready(&daemon, 503).await;
        let back;
        (cluster, back) = tokio::task::spawn_blocking(move || {
            cluster.start_again(node);
            (cluster, Instant::now())
        })
        .await
        .unwrap();
        let acknowledged_before = seen.lock().unwrap().acknowledged.len();
        wait_for("recovery after the restart", &seen, |s| {
            s.ok_since(back) >= 20 && s.acknowledged.len() >= acknowledged_before + 3
        })
        .await;
        wait_ready(&daemon, 200).await;
    }
    stop.send(true).unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    let stopped_at = Instant::now();

    let seen = Arc::try_unwrap(seen).unwrap().into_inner().unwrap();
    let odd: Vec<u16> = seen
        .requests
        .iter()
        .map(|(s, _)| *s)
        .filter(|s| ![200, 503].contains(s))
        .collect();
    assert!(
        odd.is_empty(),
        "requests ended other than 200 or 503: {odd:?}"
    );
    let failed = seen.requests.iter().filter(|(s, _)| *s != 200).count();
    eprintln!(
        "{} requests, {failed} refused during the outages; {} admin writes acknowledged, {} \
         refused ({:?}); slowest call {:?}",
        seen.requests.len(),
        seen.acknowledged.len(),
        seen.refused.len(),
        seen.refused.iter().map(|(s, _)| s).collect::<Vec<_>>(),
        seen.slowest
    );

    // Every acknowledged write is there.
    let keys = admin.get("/keys").await;
    assert_eq!(keys.status, 200, "{}", keys.text);
    let accounts = admin.get("/accounts").await;
    assert_eq!(accounts.status, 200, "{}", accounts.text);
    let names: Vec<&str> = keys.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .chain(accounts.json["accounts"].as_array().unwrap())
        .filter_map(|r| r["name"].as_str())
        .collect();
    let lost: Vec<&String> = seen
        .acknowledged
        .iter()
        .filter(|n| !names.contains(&n.as_str()))
        .collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");

    // No lease outlives the lease time: the account's live leases drain to none.
    let zset = format!("{{relayd}}:slots:{account_id}");
    let node = ::redis::Client::open(cluster.node_url(store_node)).unwrap();
    let mut conn = node.get_multiplexed_async_connection().await.unwrap();
    let within = Duration::from_secs(LEASE_SECS) + Duration::from_secs(1);
    loop {
        let live = live_leases(&mut conn, &zset).await;
        if live == 0 {
            break;
        }
        assert!(
            stopped_at.elapsed() < within,
            "{live} leases still live {within:?} after the load stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the whole capacity serves again at once.
    let burst: Vec<Reply> = futures_util::future::join_all(
        (0..CONCURRENCY).map(|_| anthropic_at(daemon.url(""), key.clone())),
    )
    .await;
    assert!(burst.iter().all(|r| r.status == 200));
    drop(cluster);
}

/// Credentials in the cluster URL reach every node and never show: not in relayd's log, and not
/// in the refusal to start with a wrong password.
#[tokio::test]
async fn a_password_protected_cluster_serves_and_its_password_never_shows() {
    let password = "cluster-secret-4711";
    let cluster = RedisCluster::start_with_password(password);
    let mock = MockUpstream::start().await;
    mock.set_responder(|_| short_completion());
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[], &[("RELAYD_STORE", &cluster.url())]);
    let admin = daemon.admin();
    admin
        .create_account(&json!({
            "name": "upstream", "endpoint": mock.endpoint(), "deploymentName": "d",
            "concurrency": 2, "supportedModels": [MODEL]
        }))
        .await;
    let key = admin.create_key(&json!({"name": "k"})).await;
    let reply = anthropic_at(daemon.url(""), key).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(!daemon.log().contains(password), "{}", daemon.log());

    let wrong = "wrong-secret-0815";
    let other = tempfile::tempdir().unwrap();
    let url = cluster.url().replace(password, wrong);
    match Daemon::try_start(other.path(), &[], &[("RELAYD_STORE", &url)]) {
        Started::Exited(code, log) => {
            assert_eq!(code, Some(1), "{log}");
            assert!(log.contains("cannot open the Redis store"), "{log}");
            assert!(log.contains(":****@127.0.0.1:"), "{log}");
            assert!(!log.contains(wrong) && !log.contains(password), "{log}");
        }
        Started::Running(_) => panic!("relayd started with a wrong cluster password"),
    }
}

/// Sends requests one after another until `stopped`, recording each status.
async fn client(
    base: String,
    key: String,
    seen: Arc<Mutex<Seen>>,
    mut stopped: watch::Receiver<bool>,
) {
    while !*stopped.borrow_and_update() {
        let sent = Instant::now();
        let reply = tokio::time::timeout(HUNG, anthropic_at(base.clone(), key.clone()))
            .await
            .unwrap_or_else(|_| panic!("a request hung for {HUNG:?}"));
        let mut seen = seen.lock().unwrap();
        seen.requests.push((reply.status, Instant::now()));
        seen.slowest = seen.slowest.max(sent.elapsed());
    }
}

/// Creates keys and (unused) accounts one after another until `stopped`, recording which were
/// acknowledged.
async fn writer(
    admin: Admin,
    endpoint: String,
    seen: Arc<Mutex<Seen>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut n = 0u32;
    while !*stopped.borrow_and_update() {
        n += 1;
        let (name, path, body) = if n.is_multiple_of(2) {
            let name = format!("key-{n}");
            let body = json!({"name": name});
            (name, "/keys", body)
        } else {
            let name = format!("account-{n}");
            // A model nobody asks for, so the load stays on the one account under test.
            let body = json!({
                "name": name, "endpoint": endpoint, "deploymentName": "d",
                "supportedModels": ["unused-model"]
            });
            (name, "/accounts", body)
        };
        let sent = Instant::now();
        let reply = tokio::time::timeout(HUNG, admin.post(path, &body))
            .await
            .unwrap_or_else(|_| panic!("an admin write hung for {HUNG:?}"));
        {
            let mut seen = seen.lock().unwrap();
            seen.slowest = seen.slowest.max(sent.elapsed());
        }
        if reply.status == 201 {
            seen.lock().unwrap().acknowledged.push(name);
        } else {
            seen.lock()
                .unwrap()
                .refused
                .push((reply.status, Instant::now()));
            // Not too many refusals while the store is down.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Polls `seen` until `done` holds, failing after [`PROGRESS`].
async fn wait_for(what: &str, seen: &Mutex<Seen>, done: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + PROGRESS;
    while !done(&seen.lock().unwrap()) {
        assert!(Instant::now() < deadline, "no {what} within {PROGRESS:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `/readyz` until it answers `status` (503 while the store's slot is unreachable),
/// failing after [`PROGRESS`].
async fn wait_ready(daemon: &Daemon, status: u16) {
    let deadline = Instant::now() + PROGRESS;
    loop {
        let reply = send(reqwest::Client::new().get(daemon.url("/readyz"))).await;
        if reply.status == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {} ({}), not {status}, after {PROGRESS:?}",
            reply.status,
            reply.text.trim()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Leases in `zset` that have not expired by the Redis clock.
async fn live_leases(conn: &mut ::redis::aio::MultiplexedConnection, zset: &str) -> u64 {
    let (secs, micros): (u64, u64) = ::redis::cmd("TIME").query_async(conn).await.unwrap();
    let now_ms = secs * 1000 + micros / 1000;
    ::redis::cmd("ZCOUNT")
        .arg(zset)
        .arg(format!("({now_ms}"))
        .arg("+inf")
        .query_async(conn)
        .await
        .unwrap()
}

/// A completion streamed in two pieces a few milliseconds apart, so slots are held a moment.
fn short_completion() -> MockReply {
    let body = completion("ok").to_string();
    let (head, tail) = body.split_at(body.len() / 2);
    MockReply::Stream {
        pieces: vec![head.to_owned(), tail.to_owned()],
        gap: Duration::from_millis(20),
        abort: false,
    }
}

async fn anthropic_at(base: String, key: String) -> Reply {
    send(
        reqwest::Client::new()
            .post(format!("{base}/v1/messages"))
            .header("x-api-key", key)
            .json(&json!({
                "model": MODEL, "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}]
            })),
    )
    .await
}
