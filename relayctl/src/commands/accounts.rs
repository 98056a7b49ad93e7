//! `relayctl accounts list|show|update|enable|disable|probe|reset|remove`.

use shared::account::AccountPatch;

use super::Context;
use crate::cli::{AccountsCommand, UpdateAccountArgs};
use crate::{UsageError, output, prompt};

/// Runs one `accounts` subcommand.
pub(super) fn run(ctx: &Context<'_>, command: &AccountsCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match command {
        AccountsCommand::List => ctx.printer.account_list(&client.list_accounts()?)?,
        AccountsCommand::Show { account } => ctx.printer.account(&client.get_account(account)?)?,
        AccountsCommand::Update(args) => {
            let patch = patch_from(args)?;
            ctx.printer
                .account(&client.update_account(&args.account, &patch)?)?;
        }
        AccountsCommand::Enable { account } => ctx
            .printer
            .account(&client.set_account_enabled(account, true)?)?,
        AccountsCommand::Disable { account } => ctx
            .printer
            .account(&client.set_account_enabled(account, false)?)?,
        AccountsCommand::Probe { account, all } => probe(ctx, &client, account.as_deref(), *all)?,
        AccountsCommand::Reset { account } => ctx
            .printer
            .cooldown_reset(&client.reset_account(account)?)?,
        AccountsCommand::Remove { account, yes } => {
            if !yes {
                if !prompt::interactive() {
                    return Err(UsageError(format!(
                        "refusing to remove account {account} without confirmation: no terminal to ask; pass --yes"
                    ))
                    .into());
                }
                if !prompt::confirm(
                    &format!("Remove account {account}? This cannot be undone"),
                    false,
                )? {
                    output::note("nothing removed");
                    return Ok(());
                }
            }
            client.delete_account(account)?;
            ctx.printer.account_removed(account)?;
        }
    }
    Ok(())
}

/// `accounts probe NAME` (the account, profile included) or `--all`: every account in turn,
/// each announced and its outcome said on stderr as it ends, then the table (or the JSON list)
/// of those probed. A failed probe does not stop the others; any failure exits 1.
fn probe(
    ctx: &Context<'_>,
    client: &crate::client::AdminClient,
    account: Option<&str>,
    all: bool,
) -> anyhow::Result<()> {
    if let (Some(account), false) = (account, all) {
        ctx.printer.account(&client.probe_account(account)?)?;
        return Ok(());
    }
    let names: Vec<String> = client
        .list_accounts()?
        .accounts
        .into_iter()
        .map(|a| a.settings.name)
        .collect();
    if names.is_empty() {
        output::note("no accounts to probe");
    }
    let mut probed = Vec::with_capacity(names.len());
    let mut failed = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let step = format!("[{}/{}] {name}", i + 1, names.len());
        output::note(&format!("{step}: probing…"));
        match client.probe_account(name) {
            Ok(account) => {
                output::note(&format!("{step}: {}", output::probe_summary(&account)));
                probed.push(account);
            }
            Err(e) => {
                output::note(&format!("{step}: failed: {e}"));
                failed.push(name.clone());
            }
        }
    }
    ctx.printer.profiles(&probed)?;
    if failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{} of {} probes failed: {}",
            failed.len(),
            names.len(),
            failed.join(", ")
        ))
    }
}

/// The flags given, as a partial update; an empty `--api-key`/`--proxy` or `--clear-*` removes.
fn patch_from(args: &UpdateAccountArgs) -> Result<AccountPatch, UsageError> {
    let f = args.account_flags.clone();
    let clearable = |value: Option<String>, clear: bool| {
        if clear {
            Some(None)
        } else {
            value.map(|v| Some(v).filter(|v| !v.is_empty()))
        }
    };
    let patch = AccountPatch {
        name: f.name,
        endpoint: f.endpoint,
        deployment_name: f.deployment,
        api_key: clearable(f.api_key, args.clear_api_key),
        kind: f.kind.map(Into::into),
        api_version: f.api_version,
        supported_models: f.models,
        priority: f.priority,
        concurrency: f.concurrency,
        proxy: clearable(f.proxy, args.clear_proxy),
        enabled: None,
        description: None,
        context_window: if args.clear_context_window {
            Some(None)
        } else {
            f.context_window.map(Some)
        },
        anthropic_mode: f.anthropic_mode.map(Into::into),
        upstream_auth: f.upstream_auth.map(Into::into),
        ..AccountPatch::default()
    };
    if patch.is_empty() {
        return Err(UsageError(
            "nothing to change: give at least one flag (see `relayctl accounts update --help`)"
                .to_owned(),
        ));
    }
    Ok(patch)
}
