//! `relayctl test-endpoint`: asks relayd to check an upstream (a saved account or unsaved
//! settings) over the relay's own network path, prints one line per check, and exits 1 when a
//! check failed — so monitoring scripts can use the exit code and `--output json`.
//!
//! Also used by `add-model` to test the settings before saving them.

use shared::account::AccountInput;
use shared::admin::{TestEndpointReport, TestEndpointRequest};

use super::Context;
use crate::cli::TestEndpointArgs;

/// One or more checks failed; the report was already printed.
#[derive(Debug, thiserror::Error)]
#[error("endpoint test failed: {failed} of {total} checks failed ({names})")]
pub(super) struct ChecksFailed {
    /// Failed checks.
    pub(super) failed: usize,
    /// All checks.
    pub(super) total: usize,
    /// Names of the failed checks.
    pub(super) names: String,
}

impl ChecksFailed {
    /// The failure of `report`, or `None` when every check passed.
    pub(super) fn of(report: &TestEndpointReport) -> Option<Self> {
        let failed = report.failed_checks();
        (!report.ok).then(|| Self {
            failed: failed.len(),
            total: report.checks.len(),
            names: failed.join(", "),
        })
    }
}

pub(super) fn run(ctx: &Context<'_>, args: &TestEndpointArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let request = TestEndpointRequest {
        account: args.account.clone(),
        endpoint: args.endpoint.clone(),
        deployment_name: args.deployment.clone(),
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        kind: args.kind.map(Into::into),
        api_version: args.api_version.clone(),
        proxy: args.proxy.clone().filter(|p| !p.is_empty()),
        timeout_secs: args.timeout,
        ..TestEndpointRequest::default()
    };
    if !ctx.printer.is_json() {
        crate::output::note("testing the endpoint (each chat check may take up to a minute)…");
    }
    let report = client.test_endpoint(&request)?;
    ctx.printer.test_report(&report)?;
    match ChecksFailed::of(&report) {
        Some(failed) => Err(failed.into()),
        None => Ok(()),
    }
}

/// The request that tests what `add-model` is about to save.
pub(super) fn request_for(input: &AccountInput) -> TestEndpointRequest {
    TestEndpointRequest {
        name: Some(input.name.clone()),
        endpoint: Some(input.endpoint.clone()),
        deployment_name: Some(input.deployment_name.clone()),
        api_key: input.api_key.clone(),
        kind: input.kind,
        api_version: input.api_version.clone(),
        proxy: input.proxy.clone(),
        ..TestEndpointRequest::default()
    }
}
