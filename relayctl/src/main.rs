//! The `relayctl` binary: everything lives in the library; this only turns its outcome into the
//! process exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    relayctl::run()
}
