//! `relayctl keys create|list|revoke|update`: relay API keys, the credentials clients present.

use shared::key::{CreateKeyRequest, KeyLimits, UpdateKeyRequest};
use shared::time::{UnixMillis, now_millis};

use shared::account::is_pattern;
use shared::admin::{ModelRoute, RoutingTable};

use super::Context;
use super::models::routes_for;
use crate::UsageError;
use crate::claude_env::window_vars;
use crate::cli::{KeyScopeFlags, KeysCommand, UpdateKeyArgs};
use crate::client::AdminClient;

const DAY_MS: UnixMillis = 86_400_000;

/// Runs one `keys` subcommand.
pub(super) fn run(ctx: &Context<'_>, command: &KeysCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match command {
        KeysCommand::Create(args) => {
            let s = &args.scope;
            let request = CreateKeyRequest {
                name: args.name.clone(),
                bound_accounts: list(s.bound_accounts.as_ref()).unwrap_or_default(),
                allowed_models: list(s.allowed_models.as_ref()).unwrap_or_default(),
                limits: KeyLimits {
                    requests_per_minute: s.rpm,
                    tokens_per_day: s.tokens_per_day,
                    concurrency: s.concurrency,
                },
                expires_at: s.expires_in_days.map(expiry),
                description: None,
                enabled: None,
            };
            let created = client.create_key(&request)?;
            // The key exists now: a routing table that cannot be read only leaves the window
            // out of the set-up line.
            let window = client
                .routing_table()
                .ok()
                .and_then(|table| smallest_window(&table, &request.allowed_models));
            let env = window.map(window_vars).unwrap_or_default();
            ctx.printer.created_key(&created, &client.server(), &env)?;
        }
        KeysCommand::List => ctx.printer.key_list(&client.list_keys()?)?,
        KeysCommand::Revoke { key } => ctx.printer.key(&client.revoke_key(key)?)?,
        KeysCommand::Update(args) => {
            let request = update_from(&client, args)?;
            ctx.printer.key(&client.update_key(&args.key, &request)?)?;
        }
    }
    Ok(())
}

/// The smallest known context window among the accounts serving the key's `allowed` model
/// names (exact ones; all served names when it lists none or only patterns): Claude Code plans
/// for one window whatever model it asks for.
fn smallest_window(table: &RoutingTable, allowed: &[String]) -> Option<u32> {
    let exact: Vec<&String> = allowed.iter().filter(|m| !is_pattern(m)).collect();
    let routes: Vec<ModelRoute> = if exact.is_empty() {
        table.models.clone()
    } else {
        exact
            .iter()
            .flat_map(|model| routes_for(model, &table.models))
            .collect()
    };
    routes
        .iter()
        .flat_map(|r| &r.accounts)
        .filter_map(|a| a.context_window)
        .min()
}

fn update_from(client: &AdminClient, args: &UpdateKeyArgs) -> anyhow::Result<UpdateKeyRequest> {
    let s: &KeyScopeFlags = &args.scope;
    let limits = if s.rpm.is_some() || s.tokens_per_day.is_some() || s.concurrency.is_some() {
        // The API replaces all three limits at once; keep the ones not given on the command line.
        let current = client.get_key(&args.key)?.limits;
        Some(KeyLimits {
            requests_per_minute: s.rpm.or(current.requests_per_minute),
            tokens_per_day: s.tokens_per_day.or(current.tokens_per_day),
            concurrency: s.concurrency.or(current.concurrency),
        })
    } else {
        None
    };
    let request = UpdateKeyRequest {
        name: args.name.clone(),
        enabled: match (args.enable, args.disable) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        bound_accounts: list(s.bound_accounts.as_ref()),
        allowed_models: list(s.allowed_models.as_ref()),
        limits,
        expires_at: if args.no_expiry {
            Some(None)
        } else {
            s.expires_in_days.map(|d| Some(expiry(d)))
        },
        description: None,
    };
    if request == UpdateKeyRequest::default() {
        return Err(UsageError(
            "nothing to change: give at least one flag (see `relayctl keys update --help`)"
                .to_owned(),
        )
        .into());
    }
    Ok(request)
}

/// A comma list without blank entries, so `--allowed-models ''` means "all".
fn list(values: Option<&Vec<String>>) -> Option<Vec<String>> {
    values.map(|v| {
        v.iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

fn expiry(days: u32) -> UnixMillis {
    now_millis().saturating_add(i64::from(days).saturating_mul(DAY_MS))
}
