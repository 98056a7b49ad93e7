//! The `relayctl` binary's command line. (Also makes `cargo test --workspace` build the binary
//! that the end-to-end tests in `tests/` drive.)

use std::process::Command;

#[test]
fn version_help_and_usage_errors() {
    let bin = env!("CARGO_BIN_EXE_relayctl");
    let out = Command::new(bin).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = Command::new(bin).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("import"));
    let out = Command::new(bin).arg("no-such-command").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
