//! `relayctl env --model NAME [--key SECRET]`: the `export` lines that point Claude Code at
//! relayd for one model, including the context window it must plan for — the smallest known
//! window among the accounts that serve the model (see [`crate::claude_env`]).

use anyhow::bail;

use super::Context;
use super::models::routes_for;
use crate::claude_env::ClaudeEnv;
use crate::cli::EnvArgs;

/// Prints the environment for `args.model`.
pub(super) fn run(ctx: &Context<'_>, args: &EnvArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let table = client.routing_table()?;
    let routes = routes_for(&args.model, &table.models);
    if routes.is_empty() {
        bail!(
            "model {} is not served by any account (see relayctl models)",
            args.model
        );
    }
    let windows: Vec<u32> = routes
        .iter()
        .flat_map(|r| &r.accounts)
        .filter_map(|a| a.context_window)
        .collect();
    let unknown = routes
        .iter()
        .flat_map(|r| &r.accounts)
        .filter(|a| a.context_window.is_none())
        .map(|a| a.name.as_str())
        .collect::<Vec<_>>();
    let env = ClaudeEnv::new(
        &client.server(),
        args.key.as_deref(),
        &args.model,
        windows.iter().copied().min(),
    );
    ctx.printer.claude_env(&args.model, &env, &unknown)?;
    Ok(())
}
