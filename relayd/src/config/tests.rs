//! Tests of configuration loading, layering and checks.

use super::server::{ASSUMED_OPEN_FILE_LIMIT, RESERVED_FILES, parse_open_file_limit};
use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn defaults_without_anything() {
    let c = Config::load(None, env(&[])).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:3000");
    assert_eq!(c.data_dir, PathBuf::from("./relayd-data"));
    assert_eq!(c.store_spec().unwrap(), StoreSpec::Embedded);
    assert_eq!(c.max_body_bytes, 32 * 1024 * 1024);
}

#[test]
fn env_overrides_file_and_nests() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relayd.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:4000\"\n[timeouts]\nidle_secs = 5\n",
    )
    .unwrap();
    let c = Config::load(
        Some(&path),
        env(&[
            ("RELAYD_LISTEN", "0.0.0.0:5000"),
            ("RELAYD_TIMEOUTS__FIRST_BYTE_SECS", "900"),
            ("RELAYD_STORE", "redis://127.0.0.1:6379/0"),
            ("RELAYD_ENCRYPTION_KEY", "ignored-here"),
            ("HOME", "/root"),
        ]),
    )
    .unwrap();
    assert_eq!(c.listen.to_string(), "0.0.0.0:5000");
    assert_eq!(c.timeouts.idle_secs, 5);
    assert_eq!(c.timeouts.first_byte_secs, 900);
    assert_eq!(
        c.store_spec().unwrap(),
        StoreSpec::Redis("redis://127.0.0.1:6379/0".into())
    );
}

#[test]
fn a_cluster_store_is_a_redis_store() {
    let mut c = Config {
        store: "redis+cluster://127.0.0.1:7000,127.0.0.1:7001".to_owned(),
        ..Config::default()
    };
    assert_eq!(
        c.store_spec().unwrap(),
        StoreSpec::Redis("redis+cluster://127.0.0.1:7000,127.0.0.1:7001".into())
    );
    c.store = "cluster://127.0.0.1:7000".to_owned();
    let err = c.store_spec().unwrap_err().to_string();
    assert!(
        err.contains("store") && err.contains("redis+cluster://"),
        "{err}"
    );
}

#[test]
fn routing_section_from_file_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relayd.toml");
    std::fs::write(
        &path,
        "[routing]\nqueue_size = 7\ndefault_route = [\"fallback\"]\n",
    )
    .unwrap();
    let c = Config::load(
        Some(&path),
        env(&[("RELAYD_ROUTING__COOLDOWN_AUTH_SECS", "5")]),
    )
    .unwrap();
    assert_eq!(c.routing.queue_size, 7);
    assert_eq!(c.routing.default_route, ["fallback"]);
    assert_eq!(c.routing.cooldown_auth_secs, 5);
    assert_eq!(c.routing.max_attempts, 3);
    let err = Config::load(None, env(&[("RELAYD_ROUTING__QUEUE_SIZ", "1")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("queue_siz"), "{err}");
    let err = Config::load(None, env(&[("RELAYD_ROUTING__MAX_ATTEMPTS", "0")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("routing.max_attempts"), "{err}");
}

#[test]
fn the_retry_after_ceiling_defaults_to_ten_minutes_and_is_checked() {
    assert_eq!(Routing::default().max_retry_after_secs, 600);
    assert_eq!(Routing::default().longest_cooldown_secs(), 600);
    let auth_longest = Routing {
        cooldown_auth_secs: 3600,
        ..Routing::default()
    };
    assert_eq!(auth_longest.longest_cooldown_secs(), 3600);
    let c = Config::load(None, env(&[("RELAYD_ROUTING__MAX_RETRY_AFTER_SECS", "60")])).unwrap();
    assert_eq!(c.routing.max_retry_after_secs, 60);
    let err = Config::load(None, env(&[("RELAYD_ROUTING__MAX_RETRY_AFTER_SECS", "0")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("routing.max_retry_after_secs"), "{err}");
}

#[test]
fn unknown_file_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relayd.toml");
    std::fs::write(&path, "lisen = \"127.0.0.1:4000\"\n").unwrap();
    let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
    assert!(err.contains("lisen"), "{err}");
    assert!(err.contains("relayd.toml"), "{err}");
}

#[test]
fn unknown_env_key_is_named() {
    let err = Config::load(None, env(&[("RELAYD_LISTN", "x")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("RELAYD_LISTN"), "{err}");
    assert!(err.contains("listn"), "{err}");
}

#[test]
fn usage_section_has_defaults_and_is_checked() {
    let c = Config::load(None, env(&[])).unwrap();
    assert_eq!(c.usage.flush_interval_ms, 1000);
    assert_eq!(c.usage.retention_days, 30);
    let c = Config::load(None, env(&[("RELAYD_USAGE__RETENTION_DAYS", "90")])).unwrap();
    assert_eq!(c.usage.retention(), Duration::from_secs(90 * 86_400));
    let err = Config::load(None, env(&[("RELAYD_USAGE__FLUSH_INTERVAL_MS", "0")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("usage.flush_interval_ms"), "{err}");
    let err = Config::load(None, env(&[("RELAYD_USAGE__FLUSH_EVERY", "5")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("flush_every"), "{err}");
}

/// Found by the fuzz bench: a variable nested thousands of levels deep overflowed the stack.
#[test]
fn deeply_nested_env_keys_are_rejected_not_built() {
    let deep = format!("RELAYD_{}", vec!["TIMEOUTS"; 50_000].join("__"));
    let err = Config::load(None, vec![(deep.clone(), "1".to_owned())])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "environment variable {deep}: unknown key: nested 50000 levels deep (configuration keys have at most 2)"
        )
    );
    // Up to the limit, the key is read and serde names what is wrong with it.
    let var = format!("RELAYD_{}", vec!["TIMEOUTS"; 16].join("__"));
    let err = Config::load(None, vec![(var, "1".to_owned())])
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `timeouts`"), "{err}");
}

#[test]
fn workers_default_to_one_per_core_and_are_bounded() {
    let c = Config::load(None, env(&[])).unwrap();
    assert_eq!(c.workers, 0);
    assert!(c.serving_threads() >= 1);
    let c = Config::load(None, env(&[("RELAYD_WORKERS", "3")])).unwrap();
    assert_eq!(c.serving_threads(), 3);
    let err = Config::load(None, env(&[("RELAYD_WORKERS", "100000")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`workers`") && err.contains("1024"), "{err}");
}

#[test]
fn text_and_file_load_alike() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relayd.toml");
    let text = "lisen = 1\n";
    std::fs::write(&path, text).unwrap();
    let from_file = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
    let name = path.display().to_string();
    let from_text = Config::from_toml_str(text, &name, env(&[]))
        .unwrap_err()
        .to_string();
    assert_eq!(from_file, from_text);
    let c = Config::from_toml_str("workers = 2\n", "x.toml", env(&[])).unwrap();
    assert_eq!(c.workers, 2);
}

/// Found by the fuzz bench: toml gives no message for this one, and the error said nothing.
#[test]
fn parse_errors_without_a_message_give_the_position() {
    let err = Config::from_toml_str("#\0", "x.toml", env(&[]))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "config file x.toml: invalid TOML at line 1, column 2");
    let err = Config::from_toml_str("workers = 1\n  # é\0", "x.toml", env(&[]))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "config file x.toml: invalid TOML at line 2, column 6");
}

#[test]
fn server_section_has_defaults_and_is_checked() {
    let c = Config::load(None, env(&[])).unwrap();
    assert_eq!(c.server, ServerConfig::default());
    assert_eq!(c.server.header_read_timeout(), Duration::from_secs(30));
    assert!(!c.allow_link_local_endpoints);
    let c = Config::load(
        None,
        env(&[
            ("RELAYD_SERVER__KEEP_ALIVE_IDLE_SECS", "5"),
            ("RELAYD_SERVER__MAX_CONNECTIONS", "7"),
            ("RELAYD_ALLOW_LINK_LOCAL_ENDPOINTS", "true"),
        ]),
    )
    .unwrap();
    assert_eq!(c.server.keep_alive_idle(), Duration::from_secs(5));
    assert_eq!(c.server.connection_cap(), 7);
    assert!(c.allow_link_local_endpoints);
    let err = Config::load(None, env(&[("RELAYD_SERVER__BODY_READ_TIMEOUT_SECS", "0")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.body_read_timeout_secs"), "{err}");
    let err = Config::load(None, env(&[("RELAYD_SERVER__HEADER_TIMEOUT", "5")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("header_timeout"), "{err}");
}

#[test]
fn the_connection_cap_is_derived_from_the_open_file_limit() {
    let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                  Max processes             63398                63398                processes \n\
                  Max open files            1024                 524288               files     \n";
    assert_eq!(parse_open_file_limit(limits), Some(1024));
    let unlimited = "Max open files            unlimited            unlimited            files\n";
    assert_eq!(parse_open_file_limit(unlimited), None);
    let derived = ServerConfig::default().connection_cap();
    match open_file_limit() {
        Some(files) => assert_eq!(
            derived as u64,
            (files.saturating_sub(RESERVED_FILES) / 2).max(16)
        ),
        None => assert_eq!(
            derived as u64,
            (ASSUMED_OPEN_FILE_LIMIT - RESERVED_FILES) / 2
        ),
    }
}

#[test]
fn example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/relayd.toml");
    let c = Config::load(Some(&path), env(&[])).unwrap();
    assert_eq!(c.usage, UsageConfig::default());
}

#[test]
fn bad_values_are_named() {
    let err = Config::load(None, env(&[("RELAYD_LISTEN", "nonsense")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("RELAYD_LISTEN"), "{err}");
    let err = Config::load(None, env(&[("RELAYD_STORE", "postgres://x")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("store"), "{err}");
}

#[test]
fn the_ui_section_defaults_on_and_its_checks_name_the_key() {
    let c = Config::load(None, env(&[])).unwrap();
    assert!(c.ui.enabled);
    assert_eq!(c.ui.session(), Duration::from_secs(12 * 3600));
    let c = Config::from_toml_str(
        "[ui]\nenabled = false\nviewer_token_file = \"/etc/relayd/viewer.token\"\n",
        "relayd.toml",
        env(&[("RELAYD_UI__SECURE_COOKIE", "true")]),
    )
    .unwrap();
    assert!(!c.ui.enabled && c.ui.secure_cookie);
    assert_eq!(
        c.ui.viewer_token_file.as_deref(),
        Some(Path::new("/etc/relayd/viewer.token"))
    );
    let e = Config::from_toml_str("[ui]\nsession_hours = 0\n", "relayd.toml", env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`ui.session_hours`"), "{e}");
    let e = Config::from_toml_str("[ui]\nviewer_token_file = \"\"\n", "relayd.toml", env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`ui.viewer_token_file`"), "{e}");
    let e = Config::from_toml_str("[ui]\nenable = false\n", "relayd.toml", env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("enable"), "{e}");
}
