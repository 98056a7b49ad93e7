//! Command line of the `relayd` binary and its start-up sequence: configuration, logging,
//! listener, store, secrets, registries, then serving until SIGTERM or Ctrl-C, with a drain
//! bounded by `shutdown_grace_secs` (signals and reload: [`crate::lifecycle`]).
//!
//! This is the binary's edge, so errors are `anyhow` with context; `main` prints the chain.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::AccountRegistry;
use crate::auth::{AdminToken, TokenOrigin};
use crate::config::{Config, LogFormat, Overrides, StoreSpec};
use crate::cooling_probe::CoolingProbe;
use crate::coordinator::{
    AffinitySettings, Coordinator, LocalCoordinator, RedisCoordinator, RedisSettings,
};
use crate::crypto::{Cipher, KeyOrigin, load_or_create_key};
use crate::keys::KeyRegistry;
use crate::lifecycle::{LogControl, SignalContext, Signals};
use crate::profile_probe::ProfileProbe;
use crate::registry_sync::RegistrySync;
use crate::state::{AppState, Background, StateParts};
use crate::store::Store;
use crate::store::embedded::EmbeddedStore;
use crate::store::redis::RedisStore;
use crate::systemd::Notifier;

/// relayd: serve Claude Code and OpenAI clients from OpenAI-compatible and Azure upstreams.
///
/// With no arguments: listens on 127.0.0.1:3000, keeps its data in ./relayd-data (or
/// $RELAYD_DATA_DIR), and writes a generated admin token to <data>/admin.token.
#[derive(Debug, Clone, Parser)]
#[command(version, about, long_about)]
pub struct Args {
    /// TOML configuration file (every key can also be set as a RELAYD_* environment variable).
    #[arg(long, env = "RELAYD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen address, e.g. 0.0.0.0:3000 (overrides `listen`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Data directory (overrides `data_dir`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// `embedded`, a redis:// URL or redis+cluster://host:port,host:port (overrides `store`).
    #[arg(long, value_name = "STORE")]
    pub store: Option<String>,
    /// Log format (overrides `log_format`).
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
}

impl Args {
    /// The flags that override configuration keys.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            store: self.store.clone(),
            log_format: self.log_format.as_deref().map(|format| {
                if format == "json" {
                    LogFormat::Json
                } else {
                    LogFormat::Text
                }
            }),
        }
    }
}

/// Installs the global `tracing` subscriber and returns the control that swaps its filter on
/// SIGHUP.
pub fn init_logging(config: &Config) -> LogControl {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let output = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(crate::logbuf::BufferedStderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .fmt_fields(crate::logfmt::TextFields)
            .event_format(crate::logfmt::TextFormat::new())
            .with_writer(crate::logbuf::BufferedStderr)
            // Colours only for a person at a terminal: journald and log files get plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .init();
    crate::logbuf::flush_on_panic();
    LogControl::new(handle)
}

/// Runs relayd until SIGTERM or Ctrl-C and the drain that follows; `args` are kept to re-read
/// the configuration on SIGHUP (their file and overrides).
pub async fn run(args: &Args, config: Config, log: LogControl) -> anyhow::Result<()> {
    // Bind first: a port in use is the most common start-up mistake, and it should be the one
    // and only line printed, before anything is created on disk.
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let metrics_listener = match config.metrics.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (metrics.listen)"))?,
        ),
        None => None,
    };
    let signals = Signals::register().context("cannot install signal handlers")?;
    let state = build_state(config).await?;
    let addr = listener.local_addr()?;
    let store_kind = state.store.kind().as_str();
    tracing::info!(%addr, store = store_kind, "listening on {addr}");
    if state.config.ui.enabled {
        tracing::info!("status page at http://{addr}/ui/ (sign in with the admin token)");
    }
    let notifier = Notifier::from_env();
    notifier.ready(&format!("serving on {addr}, store {store_kind}"));

    let tasks = TaskTracker::new();
    let done = CancellationToken::new();
    let drain = CancellationToken::new();
    let force = CancellationToken::new();
    if notifier.enabled()
        && let Some(interval) = crate::systemd::watchdog_interval()
    {
        tracing::info!(
            interval_ms = interval.as_millis(),
            "pinging the systemd watchdog every {} ms",
            interval.as_millis()
        );
        tasks.spawn(notifier.clone().watchdog(interval, done.clone()));
    }
    if let Some(metrics_listener) = metrics_listener {
        serve_metrics(&tasks, metrics_listener, &state, &done)?;
    }
    tasks.spawn(crate::lifecycle::handle_signals(
        signals,
        SignalContext {
            config_path: args.config.clone(),
            overrides: args.overrides(),
            state: state.clone(),
            log,
            notifier: notifier.clone(),
            drain: drain.clone(),
            force: force.clone(),
            done: done.clone(),
        },
    ));

    let serving = crate::server::serve(listener, state.clone(), drain.clone().cancelled_owned());
    let deadline = async {
        drain.cancelled().await;
        let grace = state.live_config.load().shutdown_grace();
        let waited = tokio::select! {
            () = tokio::time::sleep(grace) => grace,
            () = force.cancelled() => std::time::Duration::ZERO,
        };
        // Counted now: ending `serving` ends the requests, and with them this count.
        (waited, state.in_flight.load(Ordering::Relaxed))
    };
    let outcome = tokio::select! {
        served = serving => served.map(|()| None),
        waited = deadline => Ok(Some(waited)),
    };
    done.cancel();
    tasks.close();
    tasks.wait().await;
    // Requests are finished (or cut off): stop the probes and reloads, release routing state
    // (Redis leases) and write the usage they produced before exiting.
    state.background.shutdown().await;
    state.routing.shutdown().await;
    state.usage.flush_and_stop().await;
    if let Some((waited, open)) = outcome? {
        tracing::warn!(
            cut_off = open,
            "stopped after {} s with {open} client request(s) still open; they were cut off",
            waited.as_secs()
        );
    } else {
        tracing::info!("stopped");
    }
    Ok(())
}

/// Serves `/metrics` on its own listener until `done`.
fn serve_metrics(
    tasks: &TaskTracker,
    listener: TcpListener,
    state: &AppState,
    done: &CancellationToken,
) -> anyhow::Result<()> {
    let metrics_addr = listener.local_addr()?;
    tracing::info!(%metrics_addr, "metrics on http://{metrics_addr}/metrics");
    let app = crate::server::metrics_router(state.clone());
    let stop = done.clone();
    tasks.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the metrics listener failed");
        }
    });
    Ok(())
}

/// Creates the data directory, store, secrets and registries.
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;

    // The store first: a store this build must not open (written by a newer relayd, locked by
    // another process) is refused before any secret is generated next to it.
    let store = open_store(&config).await?;

    let (cipher, admin_token) = load_secrets(&config)?;
    let ui_viewer_token = load_viewer_token(&config.ui)?.map(Arc::new);
    let cipher = Arc::new(cipher);
    let accounts = Arc::new(
        AccountRegistry::load(Arc::clone(&store), cipher)
            .await?
            .with_link_local_endpoints(config.allow_link_local_endpoints),
    );
    let keys = Arc::new(KeyRegistry::load(Arc::clone(&store)).await?);
    let upstreams = Arc::new(crate::upstream::Upstreams::new(
        config.timeouts.clone(),
        config.upstream.clone(),
        config.serving_threads(),
    ));
    let usage = Arc::new(crate::usage::UsageRecorder::start(
        Arc::clone(&store),
        &config.usage,
    ));
    let background = Arc::new(Background::default());
    let coordinator = start_coordinator(&config, &accounts, &keys, &background).await?;
    let profile_probe = start_probes(&config, &accounts, &coordinator, &upstreams, &background);
    let routing = Arc::new(crate::routing::Router::new(
        config.routing.clone(),
        coordinator,
        accounts.snapshot(),
    ));
    Ok(AppState::new(StateParts {
        metrics: Arc::new(crate::metrics::Metrics::new()),
        routing,
        upstreams,
        live_config: Arc::new(ArcSwap::from_pointee(config.clone())),
        config: Arc::new(config),
        store,
        accounts,
        keys,
        admin_token: Arc::new(admin_token),
        ui_viewer_token,
        started: Instant::now(),
        in_flight: Arc::new(AtomicU64::new(0)),
        usage,
        background,
        profile_probe,
    }))
}

/// The status page's viewer token from `ui.viewer_token_file`, when one is configured. A file
/// that is missing or empty stops start-up: a typo must not silently leave viewers locked out.
fn load_viewer_token(ui: &crate::config::UiConfig) -> anyhow::Result<Option<AdminToken>> {
    let Some(path) = &ui.viewer_token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read ui.viewer_token_file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        anyhow::bail!("ui.viewer_token_file {} is empty", path.display());
    }
    tracing::info!(path = %path.display(), "status page viewer token read from {}", path.display());
    Ok(Some(AdminToken::new(token)))
}

/// The probes that run beside the server: of cooling accounts (when configured), and of every
/// account's capability profile, whose prober admin writes also use.
fn start_probes(
    config: &Config,
    accounts: &Arc<AccountRegistry>,
    coordinator: &Arc<dyn crate::coordinator::Coordinator>,
    upstreams: &Arc<crate::upstream::Upstreams>,
    background: &Background,
) -> Arc<ProfileProbe> {
    if config.routing.probe_interval_secs > 0 {
        let every = Duration::from_secs(config.routing.probe_interval_secs);
        let probe = CoolingProbe {
            accounts: Arc::clone(accounts),
            coordinator: Arc::clone(coordinator),
            upstreams: Arc::clone(upstreams),
        };
        background.spawn(|cancel| probe.run(every, cancel));
    }
    let profile_probe = Arc::new(ProfileProbe::new(
        Arc::clone(accounts),
        Arc::clone(upstreams),
    ));
    if config.upstream.probe_profiles {
        let every = config.upstream.probe_profile_every();
        let runner = Arc::clone(&profile_probe);
        background.spawn(|cancel| runner.run(every, cancel));
    }
    profile_probe
}

/// The coordinator the store calls for: in process for the embedded store, shared through Redis
/// otherwise — then with a tracked task that reloads `accounts` and `keys` when it reports another
/// instance's admin change.
async fn start_coordinator(
    config: &Config,
    accounts: &Arc<AccountRegistry>,
    keys: &Arc<KeyRegistry>,
    background: &Background,
) -> anyhow::Result<Arc<dyn Coordinator>> {
    let url = match config.store_spec()? {
        StoreSpec::Embedded => {
            return Ok(Arc::new(LocalCoordinator::with_affinity(
                affinity_settings(&config.routing),
            )));
        }
        StoreSpec::Redis(url) => url,
    };
    let (changes, reported) = tokio::sync::mpsc::channel(crate::registry_sync::QUEUE);
    let settings = RedisSettings {
        url,
        prefix: config.redis_prefix.clone(),
        lease: Duration::from_secs(config.routing.lease_secs),
        longest_cooldown: Duration::from_secs(config.routing.longest_cooldown_secs()),
        serving_threads: config.serving_threads(),
        affinity: affinity_settings(&config.routing),
    };
    let coordinator = RedisCoordinator::start(&settings, changes)
        .await
        .context("cannot share routing state through Redis")?;
    let sync = RegistrySync {
        accounts: Arc::clone(accounts),
        keys: Arc::clone(keys),
    };
    background.spawn(|cancel| sync.run(reported, cancel));
    Ok(Arc::new(coordinator))
}

/// How the coordinator remembers moved conversations: `sticky_ttl_secs`, `sticky_max_sessions`.
fn affinity_settings(routing: &crate::config::Routing) -> AffinitySettings {
    AffinitySettings {
        ttl: Duration::from_secs(routing.sticky_ttl_secs),
        max: routing.sticky_max_sessions,
    }
}

/// Opens the store `config` selects.
async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match config.store_spec()? {
        StoreSpec::Embedded => {
            let path = config.data_dir.join("relayd.redb");
            Arc::new(
                EmbeddedStore::open(&path).await.with_context(|| {
                    format!("cannot open the embedded store {}", path.display())
                })?,
            )
        }
        StoreSpec::Redis(url) => Arc::new(
            RedisStore::connect(&url, &config.redis_prefix)
                .await
                .context("cannot open the Redis store")?,
        ),
    })
}

/// The encryption key of upstream secrets and the admin token: from the environment, their files,
/// or generated (and said so in the log).
fn load_secrets(config: &Config) -> anyhow::Result<(Cipher, AdminToken)> {
    let env_key = std::env::var("RELAYD_ENCRYPTION_KEY").ok();
    let (cipher, key_origin) = load_or_create_key(
        &config.data_dir,
        env_key.as_deref(),
        config.encryption_key_file.as_deref(),
    )?;
    match &key_origin {
        KeyOrigin::Generated(path) => tracing::warn!(
            path = %path.display(),
            "generated a new encryption key at {}; back it up: losing it loses every stored upstream API key",
            path.display()
        ),
        other => tracing::info!(origin = ?other, "encryption key loaded"),
    }

    let token_path = config.admin_token_path();
    let env_token = std::env::var("RELAYD_ADMIN_TOKEN").ok();
    let (admin_token, token_origin) = AdminToken::load_or_create(env_token.as_deref(), &token_path)
        .with_context(|| format!("cannot set up the admin token at {}", token_path.display()))?;
    match token_origin {
        TokenOrigin::Generated => tracing::info!(
            path = %token_path.display(),
            "generated admin token, written to {} (mode 0600)",
            token_path.display()
        ),
        TokenOrigin::File => {
            tracing::info!(path = %token_path.display(), "admin token read from {}", token_path.display())
        }
        TokenOrigin::Environment => tracing::info!("admin token taken from RELAYD_ADMIN_TOKEN"),
    }

    Ok((cipher, admin_token))
}
