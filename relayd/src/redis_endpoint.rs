//! Where the Redis store and coordinator connect: one server (`redis://`, `rediss://`) or a Redis
//! Cluster (`redis+cluster://host:port,host:port`, Valkey alike), behind one connection type that
//! both use for every command, so neither has a second code path for the cluster.
//!
//! In a cluster every key the store and the coordinator touch carries one hash tag derived from
//! the prefix (`relayd:` → `{relayd}:`), so all of them live in one slot: every Lua script may then
//! touch any of them atomically, as on one server. The price is that one primary serves relayd's
//! whole load; relayd's load on Redis is small (a few commands per request), and a cluster is
//! usually chosen to share infrastructure, not for relayd's throughput. Single-server key names
//! stay untagged, so existing `redis://` stores keep working unchanged.
//!
//! Pub/sub: a cluster propagates every PUBLISH to all nodes, so the subscriber listens on a plain
//! connection to one seed node, moving to the next seed when that one drops.
//!
//! A cluster connection sends a command again when its connection broke before the answer, or
//! while the cluster is down (a few times, within the command timeout), so a command may run
//! twice. The store's writes leave the same state when run twice (records replaced whole, usage
//! records `SET NX` by request id; only the answer may differ, such as a repeated delete finding
//! nothing); in the coordinator a repeated slot take leaves a lease nobody holds, which
//! expires after the lease time, and a repeated token count adds twice (rare; it errs towards a
//! relay key reaching its daily limit early).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, ConnectionInfo, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value};

/// The URL scheme of a Redis Cluster: seed nodes separated by commas.
const CLUSTER_SCHEME: &str = "redis+cluster://";

/// Bounds one connection attempt, so a wrong address fails startup promptly instead of hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds one command (in a cluster, with its retries); a Redis that stops answering surfaces
/// as an error, not a stuck request.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed store URL: what to connect to, and how to name it in messages.
#[derive(Clone)]
pub(crate) struct RedisEndpoint {
    target: Target,
    /// The URL with its password masked.
    display: String,
}

#[derive(Clone)]
enum Target {
    Single(redis::Client),
    /// The cluster client and each seed node's address (for the subscriber).
    Cluster(ClusterClient, Vec<ConnectionInfo>),
}

impl std::fmt::Debug for RedisEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEndpoint")
            .field("url", &self.display)
            .finish_non_exhaustive()
    }
}

impl RedisEndpoint {
    /// Parses `redis://[user:password@]host[:port][/db]`, `rediss://…` or
    /// `redis+cluster://[user:password@]host:port[,host:port…]`. The error names the URL with
    /// its password masked and never echoes the password.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let display = redact(url);
        let invalid = |detail: String| {
            let detail = scrub(&detail, url);
            format!("invalid Redis URL {display}: {detail}")
        };
        let target = if let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) {
            let seeds = cluster_seeds(rest).map_err(invalid)?;
            let client = ClusterClient::builder(seeds.clone())
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                // The crate's default is 16 retries with waits growing past ten minutes; a
                // cluster that lost a primary answers within its failover time or not at all, so
                // a command fails over to an error quickly (the caller's 503) instead.
                .retries(3)
                .min_retry_wait(100)
                .max_retry_wait(1_000)
                .build()
                .map_err(|e| invalid(e.to_string()))?;
            Target::Cluster(client, seeds)
        } else {
            let info: ConnectionInfo = url
                .parse()
                .map_err(|e: redis::RedisError| invalid(e.to_string()))?;
            Target::Single(redis::Client::open(info).map_err(|e| invalid(e.to_string()))?)
        };
        Ok(Self { target, display })
    }

    /// The URL with its password masked, for messages.
    pub(crate) fn display(&self) -> &str {
        &self.display
    }

    /// Whether this is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(..))
    }

    /// The prefix keys are actually named with: `prefix` itself on one server, hash-tagged in a
    /// cluster (see the module docs).
    pub(crate) fn key_prefix(&self, prefix: &str) -> String {
        if self.is_cluster() {
            cluster_prefix(prefix)
        } else {
            prefix.to_owned()
        }
    }

    /// Opens a connection shared by concurrent callers: on one server a [`ConnectionManager`]
    /// (re-established in the background when it drops), in a cluster a [`ClusterConnection`]
    /// (which follows the slot map and reconnects to nodes as they come back).
    pub(crate) async fn connect(&self) -> RedisResult<RedisConn> {
        match &self.target {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(RESPONSE_TIMEOUT)
                    // redis 0.32 feeds these to `backon`, whose delays start at one second and
                    // grow by `factor` per attempt (the crate's default factor of 100 means
                    // waiting 100 s before the second retry), so both the factor and each delay
                    // are bounded here. Startup then fails within about two seconds; later drops
                    // reconnect in the background.
                    .set_factor(2)
                    .set_max_delay(500)
                    .set_number_of_retries(2);
                ConnectionManager::new_with_config(client.clone(), config)
                    .await
                    .map(RedisConn::Single)
            }
            Target::Cluster(client, _) => {
                let connecting = client.get_async_connection();
                match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
                    Ok(conn) => conn.map(|c| RedisConn::Cluster(Box::new(c))),
                    Err(_) => Err(redis::RedisError::from((
                        redis::ErrorKind::IoError,
                        "timed out connecting to the cluster",
                    ))),
                }
            }
        }
    }

    /// Opens a pub/sub connection. In a cluster, to seed node `attempt` modulo their number, so a
    /// caller retrying after a failure moves on to the next seed.
    pub(crate) async fn pubsub(&self, attempt: usize) -> RedisResult<PubSub> {
        match &self.target {
            Target::Single(client) => client.get_async_pubsub().await,
            Target::Cluster(_, seeds) => {
                let seed = seeds[attempt % seeds.len()].clone();
                redis::Client::open(seed)?.get_async_pubsub().await
            }
        }
    }
}

/// A connection to one server or a cluster; cheap to clone (clones share the connection).
#[derive(Clone)]
pub(crate) enum RedisConn {
    /// One server (or a Sentinel-managed primary).
    Single(ConnectionManager),
    /// A Redis Cluster; boxed because it is much larger than a manager.
    Cluster(Box<ClusterConnection>),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "RedisConn::Single",
            Self::Cluster(_) => "RedisConn::Cluster",
        })
    }
}

impl RedisConn {
    /// Runs `cmd`, which names no key (such as SCAN), on the node holding `key`: in a cluster,
    /// keyless commands otherwise go to a random node. Costs a cluster a round trip more.
    pub(crate) async fn query_beside<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        key: &str,
    ) -> RedisResult<T> {
        match self {
            Self::Single(conn) => cmd.query_async(conn).await,
            Self::Cluster(conn) => {
                // Any node answers where a key hashes; the crate's own routing is private.
                let slot: u16 = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(key)
                    .query_async(conn.as_mut())
                    .await?;
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::new(slot, SlotAddr::Master),
                ));
                let value = conn.route_command(cmd, routing).await?;
                T::from_redis_value(&value)
            }
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// The seed nodes of `rest` (a cluster URL after its scheme): `[user:password@]host:port,…`.
/// The credentials apply to every node. A database number is refused: a cluster has only 0.
fn cluster_seeds(rest: &str) -> Result<Vec<ConnectionInfo>, String> {
    let (userinfo, hosts) = match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, rest),
    };
    let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
    if hosts.contains('/') || hosts.contains('?') {
        return Err("a cluster URL names seed nodes only (host:port,host:port), no path".into());
    }
    let seeds = hosts
        .split(',')
        .map(|host| {
            let host = host.trim();
            if host.is_empty() {
                return Err("an empty seed node".to_owned());
            }
            let url = match userinfo {
                Some(userinfo) => format!("redis://{userinfo}@{host}"),
                None => format!("redis://{host}"),
            };
            url.parse::<ConnectionInfo>()
                .map_err(|e| format!("seed node {host}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(seeds)
}

/// `prefix` with a hash tag, so every key under it hashes to one cluster slot: the text before
/// its trailing colons in braces (`relayd:` → `{relayd}:`). A prefix that already holds a tag
/// (`{fleet}relayd:`) is the operator's choice and kept.
fn cluster_prefix(prefix: &str) -> String {
    if let Some(open) = prefix.find('{')
        && prefix[open + 1..].find('}').is_some_and(|close| close > 0)
    {
        return prefix.to_owned();
    }
    let body = prefix.trim_end_matches(':');
    let tail = &prefix[body.len()..];
    // An empty tag would hash whole key names again (Redis ignores `{}`).
    let body = if body.is_empty() { "relayd" } else { body };
    format!("{{{body}}}{tail}")
}

/// `url` with its password masked: `redis://`-style URLs through the URL parser, cluster URLs
/// by their credentials part (their comma-separated hosts are no URL authority).
pub(crate) fn redact(url: &str) -> String {
    let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) else {
        return shared::account::redact_url(url);
    };
    match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{CLUSTER_SCHEME}{user}:****@{hosts}"),
            None => format!("{CLUSTER_SCHEME}****@{hosts}"),
        },
        None => url.to_owned(),
    }
}

/// Removes the raw URL and its password from a message, in case a parser echoed them.
pub(crate) fn scrub(message: &str, url: &str) -> String {
    let mut out = if url.is_empty() {
        message.to_owned()
    } else {
        message.replace(url, "[url]")
    };
    if let Some(password) = password_of(url).filter(|p| !p.is_empty()) {
        out = out.replace(password, "****");
    }
    out
}

/// The password part of a URL's credentials, as written.
fn password_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let (userinfo, _) = rest.rsplit_once('@')?;
    Some(userinfo.split_once(':').map_or(userinfo, |(_, p)| p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_prefixes_get_one_hash_tag() {
        assert_eq!(cluster_prefix("relayd:"), "{relayd}:");
        assert_eq!(cluster_prefix("fleet-a"), "{fleet-a}");
        assert_eq!(cluster_prefix("a:b::"), "{a:b}::");
        assert_eq!(cluster_prefix("{mine}relayd:"), "{mine}relayd:");
        assert_eq!(cluster_prefix("{}x:"), "{{}x}:", "an empty tag is no tag");
        assert_eq!(cluster_prefix(""), "{relayd}");
    }

    #[test]
    fn cluster_urls_name_their_seeds() {
        let seeds = cluster_seeds("u:p@127.0.0.1:7000, 127.0.0.1:7001/").unwrap();
        assert_eq!(seeds.len(), 2);
        assert_eq!(seeds[1].addr.to_string(), "127.0.0.1:7001");
        assert_eq!(seeds[1].redis.password.as_deref(), Some("p"));
        assert_eq!(seeds[0].redis.username.as_deref(), Some("u"));
        assert!(cluster_seeds("127.0.0.1:7000/2").is_err(), "no database");
        assert!(cluster_seeds("127.0.0.1:7000,,").is_err());
    }

    #[test]
    fn cluster_urls_are_redacted() {
        let url = "redis+cluster://admin:hunter2@127.0.0.1:7000,127.0.0.1:7001";
        assert_eq!(
            redact(url),
            "redis+cluster://admin:****@127.0.0.1:7000,127.0.0.1:7001"
        );
        assert_eq!(
            redact("redis+cluster://hunter2@127.0.0.1:1"),
            "redis+cluster://****@127.0.0.1:1"
        );
        let bad =
            RedisEndpoint::parse("redis+cluster://admin:hunter2@127.0.0.1:7000/3").unwrap_err();
        assert!(!bad.contains("hunter2"), "{bad}");
        assert!(bad.contains("admin:****@"), "{bad}");
    }
}
