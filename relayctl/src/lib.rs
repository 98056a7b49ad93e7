//! relayctl, the admin CLI for relayd. It talks only to relayd's admin API (never to the store).
//!
//! Module map:
//! - [`cli`]: the command line (clap derive), including `--help` examples.
//! - [`client`]: a typed, blocking admin-API client over the `shared` DTOs, with typed errors.
//! - [`output`]: every byte relayctl prints — comfy-table for people, pretty JSON for scripts —
//!   except `top`'s full-screen view, which ratatui draws (`commands/top`).
//! - [`prompt`]: interactive questions (dialoguer), used only when a terminal is attached.
//! - [`commands`]: one module per command; each returns `anyhow::Result<()>`.
//!
//! [`run`] is the edge: it parses the command line, dispatches, and maps the outcome to an exit
//! code — 0 ok, 1 failure, 2 usage error — printing any error as one line `relayctl: error: …`.

pub mod claude_env;
pub mod cli;
pub mod client;
pub mod commands;
pub mod output;
pub mod prompt;

use std::process::ExitCode;

use clap::Parser;

/// A mistake in how relayctl was invoked (missing flags without a terminal to ask, a refused
/// confirmation that needs `--yes`, a flag value that fails validation). Exits with status 2,
/// the same as clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs relayctl with the process arguments and returns its exit code.
pub fn run() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap decides: --help/--version print to stdout and exit 0, usage errors exit 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match commands::dispatch(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => {
            // `relayctl accounts list | head -1`: the reader left; that is not a failure to report.
            ExitCode::SUCCESS
        }
        Err(err) => {
            output::error_line(&format!("{err:#}"));
            if err.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Whether any error in the chain is a write to a closed pipe.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
