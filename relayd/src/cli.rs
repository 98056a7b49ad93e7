//! Command line of the `relayd` binary and its start-up sequence: configuration, logging,
//! listener, secrets, store, registries, then serving until SIGTERM or Ctrl-C.
//!
//! This is the binary's edge, so errors are `anyhow` with context; `main` prints the chain.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use tokio::net::TcpListener;

use crate::accounts::AccountRegistry;
use crate::auth::{AdminToken, TokenOrigin};
use crate::config::{Config, LogFormat, StoreSpec};
use crate::crypto::{KeyOrigin, load_or_create_key};
use crate::keys::KeyRegistry;
use crate::state::AppState;
use crate::store::Store;
use crate::store::embedded::EmbeddedStore;
use crate::store::redis::RedisStore;

/// relayd: serve Claude Code and OpenAI clients from OpenAI-compatible and Azure upstreams.
///
/// With no arguments: listens on 127.0.0.1:3000, keeps its data in ./relayd-data (or
/// $RELAYD_DATA_DIR), and writes a generated admin token to <data>/admin.token.
#[derive(Debug, Parser)]
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
    /// `embedded` or a redis:// URL (overrides `store`).
    #[arg(long, value_name = "STORE")]
    pub store: Option<String>,
    /// Log format (overrides `log_format`).
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
}

/// Loads the configuration from the file, the environment and the flags.
pub fn load_config(args: &Args) -> anyhow::Result<Config> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir.clone_from(dir);
    }
    if let Some(store) = &args.store {
        config.store.clone_from(store);
        config.store_spec()?;
    }
    if let Some(format) = &args.log_format {
        config.log_format = if format == "json" {
            LogFormat::Json
        } else {
            LogFormat::Text
        };
    }
    Ok(config)
}

/// Installs the global `tracing` subscriber.
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Runs relayd until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Bind first: a port in use is the most common start-up mistake, and it should be the one
    // and only line printed, before anything is created on disk.
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let state = build_state(config).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, store = state.store.kind().as_str(), "listening on {addr}");
    let routing = Arc::clone(&state.routing);
    crate::server::serve(listener, state, shutdown_signal()).await?;
    routing.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Creates the data directory, secrets, store and registries.
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;

    let env_key = std::env::var("RELAYD_ENCRYPTION_KEY").ok();
    let (cipher, key_origin) = load_or_create_key(
        data_dir,
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

    let store: Arc<dyn Store> =
        match config.store_spec()? {
            StoreSpec::Embedded => {
                let path = data_dir.join("relayd.redb");
                Arc::new(EmbeddedStore::open(&path).await.with_context(|| {
                    format!("cannot open the embedded store {}", path.display())
                })?)
            }
            StoreSpec::Redis(url) => Arc::new(
                RedisStore::connect(&url, &config.redis_prefix)
                    .await
                    .context("cannot open the Redis store")?,
            ),
        };

    let cipher = Arc::new(cipher);
    let accounts = Arc::new(AccountRegistry::load(Arc::clone(&store), cipher).await?);
    let keys = Arc::new(KeyRegistry::load(Arc::clone(&store)).await?);
    let upstreams = Arc::new(crate::proxy::upstream::Upstreams::new(
        config.timeouts.clone(),
    ));
    let coordinator: Arc<dyn crate::routing::coordinator::Coordinator> =
        match config.store_spec()? {
            StoreSpec::Embedded => Arc::new(crate::routing::coordinator::LocalCoordinator::new()),
            StoreSpec::Redis(url) => Arc::new(
                crate::routing::redis::RedisCoordinator::start(
                    &url,
                    &config.redis_prefix,
                    Duration::from_secs(config.routing.lease_secs),
                    Arc::clone(&accounts),
                    Arc::clone(&keys),
                )
                .await
                .context("cannot share routing state through Redis")?,
            ),
        };
    let routing = Arc::new(crate::routing::Router::new(
        config.routing.clone(),
        coordinator,
        accounts.snapshot(),
    ));
    routing.start_probing(Arc::clone(&accounts), Arc::clone(&upstreams));
    Ok(AppState {
        routing,
        upstreams,
        config: Arc::new(config),
        store,
        accounts,
        keys,
        admin_token: Arc::new(admin_token),
        started: Instant::now(),
        in_flight: Arc::new(AtomicU64::new(0)),
    })
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: no new connections, finishing open requests");
}
