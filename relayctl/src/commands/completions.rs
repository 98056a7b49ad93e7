//! `relayctl completions bash|zsh|fish`: a completion script on stdout.

use clap::CommandFactory;
use clap_complete::Shell;

use super::Context;
use crate::cli::{Cli, CompletionsArgs, ShellArg};

/// Prints the completion script for the chosen shell.
pub(super) fn run(ctx: &Context<'_>, args: &CompletionsArgs) -> anyhow::Result<()> {
    let shell = match args.shell {
        ShellArg::Bash => Shell::Bash,
        ShellArg::Zsh => Shell::Zsh,
        ShellArg::Fish => Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "relayctl", &mut script);
    ctx.printer.raw(&script)?;
    Ok(())
}
