//! The `relayd` binary: parse flags, load configuration, run. Everything else is in the library.

use std::process::ExitCode;

use clap::Parser;
use relayd::cli::{Args, init_logging, run};

/// Every request allocates a few dozen small buffers (bodies, JSON, headers) on one worker and
/// frees many on another; mimalloc's per-thread free lists cost a fraction of glibc's arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match relayd::config::load_config(args.config.as_deref(), &args.overrides()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("relayd: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let log = init_logging(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            relayd::logbuf::flush();
            eprintln!("relayd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(&args, config, log));
    // Whatever a cut-off drain left behind (connection tasks, blocking store calls) gets a moment,
    // not a veto over exiting.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    relayd::logbuf::flush();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relayd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
