//! The `relayd` binary's command line. (Also makes `cargo test --workspace` build the binary
//! that the end-to-end tests in `tests/` spawn.)

use std::process::Command;

fn relayd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_relayd"))
}

#[test]
fn version_and_help() {
    let out = relayd().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = relayd().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--config") && help.contains("RELAYD_CONFIG"),
        "{help}"
    );
}

#[test]
fn a_bad_store_setting_is_one_line_and_exit_1() {
    let out = relayd()
        .args([
            "--store",
            "postgres://127.0.0.1/x",
            "--listen",
            "127.0.0.1:0",
        ])
        .env_remove("RELAYD_STORE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("store"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
