//! `relayctl status`: version, uptime, store, account and key counts, requests in flight.

use super::Context;

/// Fetches and prints the daemon's status.
pub(super) fn run(ctx: &Context<'_>) -> anyhow::Result<()> {
    let status = ctx.client()?.status()?;
    ctx.printer.status(&status)?;
    Ok(())
}
