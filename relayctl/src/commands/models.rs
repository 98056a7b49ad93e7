//! `relayctl models [--check NAME]`: the routing table, model name → accounts in routing order.

use anyhow::bail;
use shared::account::model_matches;
use shared::admin::ModelRoute;

use super::Context;
use crate::cli::ModelsArgs;

/// Prints the routing table, or only the routes for one model name.
pub(super) fn run(ctx: &Context<'_>, args: &ModelsArgs) -> anyhow::Result<()> {
    let table = ctx.client()?.routing_table()?;
    let Some(model) = &args.check else {
        ctx.printer.routing_table(&table)?;
        return Ok(());
    };
    let routes = routes_for(model, &table.models);
    ctx.printer
        .model_check(model, &routes, table.affinity.as_ref())?;
    if routes.is_empty() {
        bail!("model {model} is not served by any account");
    }
    Ok(())
}

/// The same rule relayd applies: an exact entry wins; otherwise every matching pattern, in the
/// table's order (relayd sorts patterns), is a candidate.
pub(super) fn routes_for(model: &str, routes: &[ModelRoute]) -> Vec<ModelRoute> {
    if let Some(exact) = routes.iter().find(|r| !r.pattern && r.model == model) {
        return vec![exact.clone()];
    }
    routes
        .iter()
        .filter(|r| r.pattern && model_matches(&r.model, model))
        .cloned()
        .collect()
}
