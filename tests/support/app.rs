//! An in-process relayd on a real socket (port 0) with its own temporary data directory: the
//! fast way to exercise the HTTP API end to end without spawning the binary.

use std::net::SocketAddr;

use relayd::config::Config;
use relayd::state::AppState;
use tokio::sync::oneshot;

/// A running in-process relayd. Stops when dropped.
#[derive(Debug)]
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The admin token.
    pub admin_token: String,
    /// Its state, for assertions that look inside.
    pub state: AppState,
    /// Its data directory (kept alive as long as the app).
    pub data_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl TestApp {
    /// Starts relayd on the embedded store in a fresh temporary directory.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts relayd after letting `configure` adjust the configuration.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config {
            data_dir: data_dir.path().to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Config::default()
        };
        // Probes would add requests to every mock upstream; the tests of probing turn them on.
        config.upstream.probe_profiles = false;
        configure(&mut config);
        let token_path = config.admin_token_path();
        let state = relayd::cli::build_state(config)
            .await
            .expect("relayd state");
        let admin_token = std::fs::read_to_string(token_path)
            .expect("admin token file")
            .trim()
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let serve_state = state.clone();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            relayd::server::serve(listener, serve_state, shutdown)
                .await
                .expect("serve");
        });
        Self {
            addr,
            admin_token,
            state,
            data_dir,
            stop: Some(stop),
        }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// An admin API client.
    pub fn admin(&self) -> crate::http::Admin {
        crate::http::Admin::new(&self.url(""), &self.admin_token)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
