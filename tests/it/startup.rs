//! The real `relayd` binary: start-up defaults, configuration errors, a port in use, the wrong
//! encryption key, and crash safety of the embedded store under SIGKILL.

use std::process::Command;

use relayd_tests::daemon::{Daemon, Started, binary};
use relayd_tests::http::Admin;
use serde_json::json;

const KEY_A: &str = "0101010101010101010101010101010101010101010101010101010101010101";
const KEY_B: &str = "0202020202020202020202020202020202020202020202020202020202020202";

#[test]
fn default_data_dir_gets_a_private_admin_token_and_key() {
    let cwd = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary("relayd"))
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(cwd.path())
        .env_remove("RELAYD_DATA_DIR")
        .env_remove("RELAYD_ENCRYPTION_KEY")
        .env_remove("RELAYD_ADMIN_TOKEN")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut log = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("listening on") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let data = cwd.path().join("relayd-data");
    assert!(log.contains("relayd-data/admin.token"), "{log}");
    assert!(log.contains("relayd-data/encryption.key"), "{log}");
    assert!(log.contains("losing it loses"), "{log}");
    use std::os::unix::fs::PermissionsExt;
    for file in ["admin.token", "encryption.key"] {
        let mode = std::fs::metadata(data.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    assert!(data.join("relayd.redb").exists());
}

#[test]
fn a_port_in_use_is_one_clear_line_and_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    match Daemon::try_start(dir.path(), &["--listen", &addr], &[]) {
        Started::Running(_) => panic!("relayd started on a port in use"),
        Started::Exited(code, log) => {
            assert_eq!(code, Some(1));
            assert_eq!(log.trim().lines().count(), 1, "{log}");
            assert!(log.contains(&format!("cannot listen on {addr}")), "{log}");
        }
    }
}

#[test]
fn unknown_config_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relayd.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nmax_body_byte = 10\n").unwrap();
    let config = config.to_str().unwrap();
    match Daemon::try_start(dir.path(), &["--config", config], &[]) {
        Started::Running(_) => panic!("started with an unknown key"),
        Started::Exited(code, log) => {
            assert_eq!(code, Some(1));
            assert!(log.contains("max_body_byte"), "{log}");
            assert!(log.contains("relayd.toml"), "{log}");
        }
    }
    match Daemon::try_start(dir.path(), &[], &[("RELAYD_LISTN", "127.0.0.1:0")]) {
        Started::Running(_) => panic!("started with an unknown variable"),
        Started::Exited(code, log) => {
            assert_eq!(code, Some(1));
            assert!(log.contains("RELAYD_LISTN"), "{log}");
        }
    }
}

#[tokio::test]
async fn the_wrong_encryption_key_names_the_accounts_and_destroys_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = Daemon::start(dir.path(), &[], &[("RELAYD_ENCRYPTION_KEY", KEY_A)]);
    first
        .admin()
        .create_account(&json!({
            "name": "secret-holder", "endpoint": "http://127.0.0.1:9/v1",
            "deploymentName": "d", "apiKey": "sk-must-survive-1234"
        }))
        .await;
    first.kill();

    match Daemon::try_start(dir.path(), &[], &[("RELAYD_ENCRYPTION_KEY", KEY_B)]) {
        Started::Running(_) => panic!("started with the wrong key"),
        Started::Exited(code, log) => {
            assert_eq!(code, Some(1));
            assert!(log.contains("secret-holder"), "{log}");
            assert!(log.contains("encryption key"), "{log}");
        }
    }

    let again = Daemon::start(dir.path(), &[], &[("RELAYD_ENCRYPTION_KEY", KEY_A)]);
    let account = again.admin().get("/accounts/secret-holder").await;
    assert_eq!(account.status, 200);
    assert_eq!(account.json["apiKey"]["last4"], "1234");
}

/// Writes accounts one after another until the daemon stops answering; reports each name whose
/// creation was acknowledged with 201.
async fn write_until_refused(
    admin: Admin,
    writer: usize,
    acked: tokio::sync::mpsc::UnboundedSender<String>,
) {
    for i in 0.. {
        let name = format!("acct-{writer}-{i:05}");
        let body = json!({
            "name": name, "endpoint": "http://127.0.0.1:9/v1", "deploymentName": "d",
            "apiKey": format!("sk-crash-test-{i:08}")
        });
        let reply = admin
            .request(reqwest::Method::POST, "/accounts")
            .json(&body)
            .send()
            .await;
        match reply {
            Ok(r) if r.status() == 201 => {
                if acked.send(name).is_err() {
                    break;
                }
            }
            Ok(r) => panic!("unexpected status {}", r.status()),
            Err(_) => break,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_writes_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let envs = [("RELAYD_ENCRYPTION_KEY", KEY_A)];
    let daemon = Daemon::start(dir.path(), &[], &envs);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // Two writers, so a write is always in flight when the kill lands.
    let writers: Vec<_> = (0..2)
        .map(|w| tokio::spawn(write_until_refused(daemon.admin(), w, tx.clone())))
        .collect();
    drop(tx);
    let mut acked = Vec::new();
    while acked.len() < 40 {
        acked.push(rx.recv().await.expect("writers stopped early"));
    }
    daemon.kill();
    for w in writers {
        w.await.unwrap();
    }
    while let Ok(name) = rx.try_recv() {
        acked.push(name);
    }

    let restarted = Daemon::start(dir.path(), &[], &envs);
    let list = restarted.admin().get("/accounts").await;
    assert_eq!(list.status, 200);
    let stored: Vec<String> = list.json["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect();
    for name in &acked {
        assert!(
            stored.contains(name),
            "acknowledged {name} lost after SIGKILL"
        );
    }
    // The store is fully usable after the crash.
    restarted
        .admin()
        .create_account(&json!({"name": "after-crash", "endpoint": "http://127.0.0.1:9/v1", "deploymentName": "d"}))
        .await;
}

#[tokio::test]
async fn the_redis_store_keeps_accounts_and_keys_across_restarts() {
    let redis = relayd_tests::redis_server::RedisServer::start();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let args = ["--store", url.as_str()];
    let envs = [
        ("RELAYD_ENCRYPTION_KEY", KEY_A),
        ("RELAYD_REDIS_PREFIX", "e2e:"),
    ];
    let first = Daemon::start(dir.path(), &args, &envs);
    first
        .admin()
        .create_account(&json!({
            "name": "on-redis", "endpoint": "http://127.0.0.1:9/v1", "deploymentName": "d",
            "apiKey": "sk-redis-e2e-abcd"
        }))
        .await;
    let secret = first.admin().create_key(&json!({"name": "k"})).await;
    let status = first.admin().get("/status").await;
    assert_eq!(status.json["store"], "redis");
    first.kill();

    let second = Daemon::start(dir.path(), &args, &envs);
    let account = second.admin().get("/accounts/on-redis").await;
    assert_eq!(account.status, 200);
    assert_eq!(account.json["apiKey"]["last4"], "abcd");
    let models = reqwest::Client::new()
        .get(second.url("/v1/models"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
}
