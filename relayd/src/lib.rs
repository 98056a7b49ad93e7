//! relayd: a self-hosted relay that lets Anthropic-API clients (Claude Code) and OpenAI-API
//! clients use OpenAI-compatible and Azure OpenAI upstreams.
//!
//! Module map (the direction their dependencies run is drawn in the README's "Development"
//! section and enforced by `relayd/tests/layers.rs`):
//! - [`cli`]: the binary's flags and start-up sequence.
//! - [`config`]: configuration from defaults, TOML file and `RELAYD_*` variables.
//! - [`server`]: the router and `serve(listener, state, shutdown)`.
//! - [`workers`]: the serving threads, one single-threaded runtime each; the connection cap.
//! - [`serving_thread`]: which serving thread code runs on, for per-thread resources.
//! - `connection`: each client connection's read deadlines (head, body, keep-alive idle).
//! - [`logfmt`]: the text log format (the default one, written with less machinery).
//! - [`logbuf`]: the log's buffered standard error (one write per batch of lines, not per line).
//! - [`lifecycle`]: signals (drain on SIGTERM, reload on SIGHUP) and the reloadable log filter.
//! - [`systemd`]: `sd_notify` (READY, STOPPING, STATUS, WATCHDOG).
//! - [`state`]: the shared [`state::AppState`] and the daemon's tracked background tasks.
//! - [`error`]: one error type, rendered in the admin, Anthropic or OpenAI shape.
//! - [`extract`]: JSON body extraction with errors in the caller's shape.
//! - [`auth`]: admin token and relay-key secrets.
//! - [`accounts`], [`keys`]: registries with lock-free snapshots over the store.
//! - [`metrics`]: Prometheus counters and histograms, rendered on `/metrics`, and the per-account
//!   and per-key totals of the admin snapshot.
//! - [`routing`]: which accounts serve a model, which one a request goes to, the cooldown policy.
//! - [`coordinator`]: slots, leases, cooldowns and key counters, in process or shared in Redis.
//! - [`cooling_probe`]: the background probe that ends cooldowns of accounts that answer again.
//! - [`profile_probe`]: probing accounts for their capability profile, and when.
//! - [`registry_sync`]: reloads the registries when the coordinator reports another instance's
//!   admin change.
//! - [`upstream`]: the upstream HTTP client: pooled connections, answers, classified failures.
//! - [`limits`]: relay-key limits (requests per minute, tokens per day, concurrency).
//! - [`admin`]: the admin API.
//! - [`proxy`]: the client-facing API.
//! - [`ui`]: the status page at `/ui/` (read-only HTML over the admin API's data).
//! - [`crypto`]: encryption of upstream secrets at rest.
//! - [`store`]: persistence trait and its embedded (redb) and Redis backends.
//! - [`redis_endpoint`]: where the Redis store and coordinator connect (one server or a cluster).
//! - [`translate`]: pure Anthropic ⇄ OpenAI translation, SSE decoding, token counting.
//! - [`usage`]: the usage recorder, batching per-request records into the store off the request path.

pub mod accounts;
pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub(crate) mod connection;
pub mod cooling_probe;
pub mod coordinator;
pub mod crypto;
pub mod error;
pub mod extract;
pub mod keys;
pub mod lifecycle;
pub mod limits;
pub mod logbuf;
pub mod logfmt;
pub mod metrics;
pub mod profile_probe;
pub mod proxy;
pub mod redis_endpoint;
pub mod registry_sync;
pub mod routing;
pub mod server;
pub mod serving_thread;
pub mod state;
pub mod store;
pub mod systemd;
pub mod translate;
pub mod ui;
pub mod upstream;
pub mod usage;
pub mod workers;
