//! A private three-node Redis Cluster for tests: three `redis-server --cluster-enabled yes`
//! children on free loopback ports (each with its cluster bus port, +10000, free too), joined by
//! `redis-cli --cluster create` with no replicas, persisting every write (`appendfsync always`) so
//! a node can be killed and restarted without losing what it acknowledged. Dropping the handle
//! kills every node.
//!
//! Like [`crate::redis_server`], a missing `redis-server` or `redis-cli` fails the test with
//! instructions instead of skipping it.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Nodes in the cluster: the fewest primaries `redis-cli --cluster create` accepts.
const NODES: usize = 3;
/// How long the cluster may take to form (or a restarted node to rejoin).
const FORM_DEADLINE: Duration = Duration::from_secs(30);
/// Start attempts, each on fresh ports, before giving up.
const ATTEMPTS: usize = 5;
/// Pause between readiness probes; the probe is the synchronisation, this only avoids spinning.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Cluster ports need their bus port (+10000) below 65536.
const BUS_OFFSET: u16 = 10_000;
/// How soon the other nodes declare a silent node failed (Redis's default is 15 s); short, so
/// a restart test sees the outage and the recovery within seconds.
const NODE_TIMEOUT_MS: u32 = 1_000;

/// A running cluster owned by the test; every node is killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
    /// The password every node requires (`requirepass`, and `masterauth` between nodes), if any.
    password: Option<String>,
    // Holds every node's data, config and log for as long as the cluster runs.
    dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Node {
    port: u16,
    /// `None` while the node is stopped.
    child: Option<Child>,
}

impl RedisCluster {
    /// Starts three nodes, joins them into a cluster and waits until every node reports
    /// `cluster_state:ok`.
    ///
    /// # Panics
    /// When `redis-server` or `redis-cli` is missing, or the cluster cannot be formed after
    /// several attempts, with a message saying why.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Like [`Self::start`], with every node requiring `password`.
    pub fn start_with_password(password: &str) -> Self {
        Self::start_with(Some(password))
    }

    fn start_with(password: Option<&str>) -> Self {
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            match Self::try_start(password) {
                Ok(cluster) => return cluster,
                // The usual cause is a port taken between choosing and binding it: try others.
                Err(e) => failures.push(e),
            }
        }
        panic!(
            "the Redis Cluster did not form after {ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    /// The relayd store URL of the cluster: every node as a seed, with the password if any.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}{}", self.credentials(), seeds.join(","))
    }

    /// A plain `redis://` URL of node `i`, with the password if any.
    pub fn node_url(&self, i: usize) -> String {
        format!(
            "redis://{}127.0.0.1:{}/",
            self.credentials(),
            self.nodes[i].port
        )
    }

    fn credentials(&self) -> String {
        self.password
            .as_ref()
            .map_or_else(String::new, |p| format!(":{p}@"))
    }

    /// How many nodes the cluster has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has nodes (here for the `len` convention).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The index of the node serving `key`'s slot.
    ///
    /// # Panics
    /// When no node answers for the slot.
    pub fn node_holding(&self, key: &str) -> usize {
        let mut conn = self.connect(0).expect("node 0 answers");
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn)
            .unwrap();
        // CLUSTER SLOTS: [[start, end, [host, port, id], …], …]
        let ranges: Vec<(u16, u16, (String, u16))> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query::<Vec<redis::Value>>(&mut conn)
            .unwrap()
            .into_iter()
            .map(|range| {
                let redis::Value::Array(parts) = range else {
                    panic!("unexpected CLUSTER SLOTS entry {range:?}")
                };
                let start: u16 = redis::from_redis_value(&parts[0]).unwrap();
                let end: u16 = redis::from_redis_value(&parts[1]).unwrap();
                let redis::Value::Array(primary) = &parts[2] else {
                    panic!("unexpected CLUSTER SLOTS node {:?}", parts[2])
                };
                let host: String = redis::from_redis_value(&primary[0]).unwrap();
                let port: u16 = redis::from_redis_value(&primary[1]).unwrap();
                (start, end, (host, port))
            })
            .collect();
        let (_, _, (_, port)) = ranges
            .into_iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .unwrap_or_else(|| panic!("no node serves slot {slot}"));
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .unwrap_or_else(|| panic!("slot {slot} is served by unknown port {port}"))
    }

    /// Kills node `i` (SIGKILL: no chance to save anything beyond what it already wrote).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its port with its data and cluster config, and waits until it
    /// answers and the whole cluster reports `cluster_state:ok` again.
    ///
    /// # Panics
    /// When the node does not come back or the cluster does not recover in time.
    pub fn start_again(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node {i} is running");
        let port = self.nodes[i].port;
        let child = spawn_node(self.dir.path(), port, self.password.as_deref())
            .unwrap_or_else(|e| panic!("{e}"));
        self.nodes[i].child = Some(child);
        self.wait_answering(i).unwrap_or_else(|e| panic!("{e}"));
        self.wait_ok().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Kills node `i` and starts it again ([`Self::stop`], [`Self::start_again`]).
    pub fn restart(&mut self, i: usize) {
        self.stop(i);
        self.start_again(i);
    }

    fn try_start(password: Option<&str>) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let mut cluster = Self {
            nodes: Vec::with_capacity(NODES),
            password: password.map(str::to_owned),
            dir,
        };
        for _ in 0..NODES {
            let port = free_cluster_port(&cluster.nodes)?;
            let child = spawn_node(cluster.dir.path(), port, password)?;
            cluster.nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        for i in 0..NODES {
            cluster.wait_answering(i)?;
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut create = Command::new("redis-cli");
        if let Some(password) = password {
            create.args(["-a", password, "--no-auth-warning"]);
        }
        let created = create
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output();
        let created = match created {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "`redis-cli` was not found on PATH; the Redis Cluster tests need it. \
                 Install Redis (for example `apt-get install redis-tools`) and run the tests again."
            ),
            Err(e) => return Err(format!("cannot run redis-cli: {e}")),
        };
        if !created.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&created.stdout),
                String::from_utf8_lossy(&created.stderr)
            ));
        }
        cluster.wait_ok()?;
        Ok(cluster)
    }

    fn connect(&self, i: usize) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(self.node_url(i))?;
        let conn = client.get_connection_with_timeout(Duration::from_millis(500))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(conn)
    }

    /// Waits until node `i` (ours: its pid checked) answers.
    fn wait_answering(&mut self, i: usize) -> Result<(), String> {
        let port = self.nodes[i].port;
        let deadline = Instant::now() + FORM_DEADLINE;
        loop {
            let child = self.nodes[i].child.as_mut().expect("a started node");
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "redis-server on port {port} exited with {status}; log:\n{}",
                    read_log(self.dir.path(), port)
                ));
            }
            let pid = child.id();
            let info: Option<String> = self
                .connect(i)
                .and_then(|mut c| redis::cmd("INFO").arg("server").query(&mut c))
                .ok();
            let found = info.as_deref().and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("process_id:"))
                    .and_then(|p| p.trim().parse::<u32>().ok())
            });
            match found {
                Some(found) if found == pid => return Ok(()),
                Some(other) => {
                    return Err(format!(
                        "port {port} is served by another process (pid {other})"
                    ));
                }
                None if Instant::now() >= deadline => {
                    return Err(format!(
                        "redis-server on port {port} did not answer within {FORM_DEADLINE:?}"
                    ));
                }
                None => std::thread::sleep(POLL_INTERVAL),
            }
        }
    }

    /// Waits until every running node reports `cluster_state:ok` and knows every other node.
    fn wait_ok(&self) -> Result<(), String> {
        let deadline = Instant::now() + FORM_DEADLINE;
        loop {
            let mut last = String::new();
            let all_ok = (0..self.nodes.len()).all(|i| {
                let info: Result<String, _> = self
                    .connect(i)
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query(&mut c));
                match info {
                    Ok(info) => {
                        let ok = info.contains("cluster_state:ok")
                            && info.contains(&format!("cluster_known_nodes:{NODES}"));
                        if !ok {
                            last = format!("node {i}: {info}");
                        }
                        ok
                    }
                    Err(e) => {
                        last = format!("node {i}: {e}");
                        false
                    }
                }
            });
            if all_ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the cluster was not ok within {FORM_DEADLINE:?}; last: {last}"
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i);
        }
    }
}

/// Starts one cluster node on `port`, its files in `dir` (a restart finds them again).
fn spawn_node(dir: &Path, port: u16, password: Option<&str>) -> Result<Child, String> {
    let mut command = Command::new("redis-server");
    if let Some(password) = password {
        command.args(["--requirepass", password, "--masterauth", password]);
    }
    let child = command
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1", "--save", ""])
        .args(["--cluster-enabled", "yes"])
        .arg("--cluster-config-file")
        .arg(format!("nodes-{port}.conf"))
        .arg("--cluster-node-timeout")
        .arg(NODE_TIMEOUT_MS.to_string())
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--appendfilename")
        .arg(format!("appendonly-{port}.aof"))
        .arg("--appenddirname")
        .arg(format!("aof-{port}"))
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(log_path(dir, port))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(child) => Ok(child),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`redis-server` was not found on PATH; the Redis Cluster tests need it. \
             Install Redis (for example `apt-get install redis-server`) and run the tests again."
        ),
        Err(e) => Err(format!("cannot run redis-server: {e}")),
    }
}

fn log_path(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!("redis-{port}.log"))
}

fn read_log(dir: &Path, port: u16) -> String {
    std::fs::read_to_string(log_path(dir, port)).unwrap_or_default()
}

/// A port that was free a moment ago, whose cluster bus port (+10000) was free too, and that
/// none of `taken` uses (nor its bus port).
fn free_cluster_port(taken: &[Node]) -> Result<u16, String> {
    for _ in 0..100 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("cannot read the bound port: {e}"))?
            .port();
        let Some(bus) = port.checked_add(BUS_OFFSET) else {
            continue;
        };
        let clashes = taken.iter().any(|n| {
            [n.port, n.port + BUS_OFFSET]
                .iter()
                .any(|p| *p == port || *p == bus)
        });
        if clashes || TcpListener::bind((Ipv4Addr::LOCALHOST, bus)).is_err() {
            continue;
        }
        return Ok(port);
    }
    Err("no free port pair (port, port + 10000) found".to_owned())
}
