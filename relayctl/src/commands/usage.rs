//! `relayctl usage`: request and token totals over a period, grouped by key, account, model,
//! hour or day, with a total row.

use shared::usage::UsageGroupBy;

use super::Context;
use crate::cli::UsageArgs;

/// Fetches and prints the usage report.
pub(super) fn run(ctx: &Context<'_>, args: &UsageArgs) -> anyhow::Result<()> {
    let group_by = UsageGroupBy::from(args.by);
    let mut params = vec![("group_by", group_by.as_str())];
    let optional = [
        ("since", &args.since),
        ("until", &args.until),
        ("key", &args.key),
        ("account", &args.account),
        ("model", &args.model),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            params.push((name, value.as_str()));
        }
    }
    let report = ctx.client()?.usage(&params)?;
    ctx.printer.usage_report(&report)?;
    Ok(())
}
