//! One module per command. Each takes the parsed arguments and a [`Context`] and returns
//! `anyhow::Result<()>`; `crate::run` maps errors to exit codes.

mod accounts;
mod add_model;
mod completions;
mod env;
mod import;
mod keys;
mod models;
mod status;
mod test_endpoint;
mod top;
mod usage;

use std::path::PathBuf;

use anyhow::Context as _;

use crate::cli::{Cli, Command};
use crate::client::AdminClient;
use crate::output::Printer;

/// What every command needs: the global flags, a printer, and (lazily) an admin client.
#[derive(Debug)]
pub struct Context<'a> {
    cli: &'a Cli,
    /// Prints results in the chosen format.
    pub printer: Printer,
}

impl Context<'_> {
    /// An admin client for `--server`, with the token from `--token`, `RELAYCTL_TOKEN` or the
    /// token file. Resolved only by commands that talk to relayd (`completions` does not).
    pub fn client(&self) -> anyhow::Result<AdminClient> {
        let token = match &self.cli.token {
            Some(token) => token.clone(),
            None => read_token_file()?,
        };
        Ok(AdminClient::new(&self.cli.server, &token)?)
    }
}

/// `<RELAYD_DATA_DIR or ./relayd-data>/admin.token`, the file relayd writes on first start.
fn read_token_file() -> anyhow::Result<String> {
    let dir = std::env::var_os("RELAYD_DATA_DIR")
        .map_or_else(|| PathBuf::from("relayd-data"), PathBuf::from);
    let path = dir.join("admin.token");
    let token = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no admin token: pass --token, set RELAYCTL_TOKEN, or run where {} exists",
            path.display()
        )
    })?;
    Ok(token.trim().to_owned())
}

/// Runs the command the user asked for.
pub fn dispatch(cli: &Cli) -> anyhow::Result<()> {
    let ctx = Context {
        cli,
        printer: Printer::new(cli.output),
    };
    match &cli.command {
        Command::AddModel(args) => add_model::run(&ctx, args),
        Command::Import(args) => import::run(&ctx, args),
        Command::Models(args) => models::run(&ctx, args),
        Command::Env(args) => env::run(&ctx, args),
        Command::Accounts(command) => accounts::run(&ctx, command),
        Command::Keys(command) => keys::run(&ctx, command),
        Command::Usage(args) => usage::run(&ctx, args),
        Command::Status => status::run(&ctx),
        Command::Top(args) => top::run(&ctx, args),
        Command::TestEndpoint(args) => test_endpoint::run(&ctx, args),
        Command::Completions(args) => completions::run(&ctx, args),
    }
}
