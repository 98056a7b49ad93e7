//! `relayctl add-model`: create one account. Every value has a flag; on a terminal the missing
//! ones are asked for (each answer validated as typed), a summary is shown and confirmed, and only
//! then is anything sent — so Ctrl-C at any prompt saves nothing. Without a terminal, missing
//! required flags are a usage error listing all of them.
//!
//! After the summary, a terminal user is asked whether to test the endpoint first (`--test` does it
//! without asking). The results go to stderr (part of the dialogue; stdout keeps the saved account).
//! When a check fails, a terminal user is asked whether to save anyway (default no); without a
//! terminal (or with `--yes`) nothing is saved and the exit code is 1.

use shared::account::{
    AccountInput, AccountKind, DEFAULT_CONCURRENCY, DEFAULT_PRIORITY, DEFAULT_SUPPORTED_MODELS,
    MAX_CONCURRENCY, validate_endpoint, validate_models, validate_name,
};
use shared::error::FieldError;

use super::{Context, test_endpoint};
use crate::cli::{AccountFlags, AddModelArgs, KindArg};
use crate::{UsageError, output, prompt};

/// Asks for or checks the values, confirms on a terminal, then creates the account.
pub(super) fn run(ctx: &Context<'_>, args: &AddModelArgs) -> anyhow::Result<()> {
    // Resolve the server and token first: finding out they are missing after ten answers is rude.
    let client = ctx.client()?;
    let interactive = prompt::interactive();
    let input = if interactive {
        ask_missing(args.account.clone())?
    } else {
        from_flags(args.account.clone())?
    };
    input.clone().validate().map_err(|e| usage_error(&e))?;
    let ask = interactive && !args.yes;
    if ask {
        output::account_summary(&input)?;
    }
    let test = args.test || (ask && prompt::confirm("Test the endpoint before saving?", true)?);
    let mut confirmed = false;
    if test {
        output::note("testing the endpoint (each chat check may take up to a minute)…");
        let report = client.test_endpoint(&test_endpoint::request_for(&input))?;
        output::note(output::test_report_text(&report).trim_end());
        if let Some(failed) = test_endpoint::ChecksFailed::of(&report) {
            if !ask {
                return Err(anyhow::Error::new(failed).context("nothing saved"));
            }
            if !prompt::confirm("Some checks failed. Save anyway?", false)? {
                output::note("nothing saved");
                return Ok(());
            }
            confirmed = true;
        }
    }
    if ask && !confirmed && !prompt::confirm("Save this account?", true)? {
        output::note("nothing saved");
        return Ok(());
    }
    let account = client.create_account(&input)?;
    ctx.printer.account(&account)?;
    Ok(())
}

/// The account from flags alone; every missing required flag is named in one usage error.
fn from_flags(flags: AccountFlags) -> Result<AccountInput, UsageError> {
    let missing: Vec<&str> = [
        ("--name", flags.name.is_none()),
        ("--endpoint", flags.endpoint.is_none()),
        ("--deployment", flags.deployment.is_none()),
    ]
    .into_iter()
    .filter_map(|(flag, absent)| absent.then_some(flag))
    .collect();
    if !missing.is_empty() {
        return Err(UsageError(format!(
            "missing required flags (no terminal to ask): {}",
            missing.join(", ")
        )));
    }
    Ok(input_from(flags))
}

/// Fills the gaps in `flags` by asking, validating each answer as it is typed.
fn ask_missing(mut flags: AccountFlags) -> std::io::Result<AccountInput> {
    if flags.name.is_none() {
        flags.name = Some(prompt::text("Account name", None, false, |v| {
            validate_name(v.trim())
        })?);
    }
    if flags.endpoint.is_none() {
        flags.endpoint = Some(prompt::text(
            "Endpoint base URL (e.g. http://gpu-box-1:8000/v1)",
            None,
            false,
            |v| validate_endpoint(v).map(|_| ()),
        )?);
        // Asked with the endpoint it belongs to; a given endpoint keeps the inferred kind.
        if flags.kind.is_none() {
            flags.kind = Some(ask_kind(flags.endpoint.as_deref().unwrap_or_default())?);
        }
    }
    if flags.deployment.is_none() {
        flags.deployment = Some(prompt::text(
            "Deployment (model name sent upstream)",
            None,
            false,
            |v| {
                if v.trim().is_empty() {
                    Err("must not be empty".to_owned())
                } else {
                    Ok(())
                }
            },
        )?);
    }
    if flags.api_key.is_none() {
        flags.api_key = prompt::secret("Upstream API key (hidden; Enter for none)")?;
    }
    if flags.models.is_none() {
        output::note(&format!(
            "Default supported models: {}",
            DEFAULT_SUPPORTED_MODELS.join(", ")
        ));
        let answer = prompt::text(
            "Supported models (comma list; Enter for the defaults above)",
            None,
            true,
            |v| {
                if v.trim().is_empty() {
                    Ok(())
                } else {
                    validate_models(split_list(v)).map(|_| ())
                }
            },
        )?;
        flags.models = Some(split_list(&answer)).filter(|m| !m.is_empty());
    }
    if flags.priority.is_none() {
        let answer = prompt::text(
            "Priority (1-100, lower is tried first)",
            Some(DEFAULT_PRIORITY.to_string()),
            false,
            |v| in_range(v, 1, 100),
        )?;
        flags.priority = answer.trim().parse().ok();
    }
    if flags.concurrency.is_none() {
        let answer = prompt::text(
            "Concurrency (max requests in flight)",
            Some(DEFAULT_CONCURRENCY.to_string()),
            false,
            |v| in_range(v, 1, i64::from(MAX_CONCURRENCY)),
        )?;
        flags.concurrency = answer.trim().parse().ok();
    }
    Ok(input_from(flags))
}

/// The kind of server, the one the endpoint suggests offered first.
fn ask_kind(endpoint: &str) -> std::io::Result<KindArg> {
    const KINDS: [(KindArg, &str); 3] = [
        (
            KindArg::Openai,
            "openai: OpenAI-compatible chat completions (vLLM, SGLang, llama.cpp, Ollama…; \
             a native Messages API next to it is found by the probe)",
        ),
        (
            KindArg::Azure,
            "azure: Azure OpenAI deployment (api-key header, api-version)",
        ),
        (
            KindArg::Anthropic,
            "anthropic: the Anthropic Messages API only (POST …/v1/messages; \
             never offered to OpenAI clients)",
        ),
    ];
    let suggested = match validate_endpoint(endpoint).map(|url| AccountKind::infer(&url)) {
        Ok(AccountKind::Azure) => 1,
        _ => 0,
    };
    let items: Vec<&str> = KINDS.iter().map(|(_, text)| *text).collect();
    let chosen = prompt::select("Kind of server", &items, suggested)?;
    Ok(KINDS.get(chosen).map_or(KindArg::Openai, |(kind, _)| *kind))
}

fn in_range(v: &str, min: i64, max: i64) -> Result<(), String> {
    match v.trim().parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(()),
        _ => Err(format!("enter a whole number from {min} to {max}")),
    }
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn input_from(flags: AccountFlags) -> AccountInput {
    AccountInput {
        name: flags.name.unwrap_or_default().trim().to_owned(),
        endpoint: flags.endpoint.unwrap_or_default(),
        deployment_name: flags.deployment.unwrap_or_default(),
        api_key: flags.api_key.filter(|k| !k.is_empty()),
        kind: flags.kind.map(Into::into),
        api_version: flags.api_version,
        supported_models: flags.models,
        priority: flags.priority,
        concurrency: flags.concurrency,
        proxy: flags.proxy.filter(|p| !p.is_empty()),
        enabled: None,
        description: None,
        context_window: flags.context_window,
        anthropic_mode: flags.anthropic_mode.map(Into::into),
        upstream_auth: flags.upstream_auth.map(Into::into),
        ..AccountInput::default()
    }
}

/// Local validation errors, phrased in terms of the flags the user typed.
pub(super) fn usage_error(errors: &[FieldError]) -> UsageError {
    let parts: Vec<String> = errors
        .iter()
        .map(|e| {
            let flag = e.field.as_deref().map_or("", flag_for);
            format!("{flag}: {}", e.message)
        })
        .collect();
    UsageError(format!("invalid value: {}", parts.join("; ")))
}

/// The flag that sets an account field.
fn flag_for(field: &str) -> &str {
    match field {
        "name" => "--name",
        "endpoint" => "--endpoint",
        "deploymentName" => "--deployment",
        "apiKey" => "--api-key",
        "supportedModels" => "--models",
        "priority" => "--priority",
        "concurrency" => "--concurrency",
        "proxy" => "--proxy",
        "kind" => "--kind",
        "apiVersion" => "--api-version",
        "contextWindow" => "--context-window",
        "anthropicMode" => "--anthropic-mode",
        "upstreamAuth" => "--upstream-auth",
        other => other,
    }
}
