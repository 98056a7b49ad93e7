//! Which account a test runs against: a saved account, or unsaved settings validated like a new
//! account, both held to the link-local address policy before any request is sent.

use shared::account::{AccountId, AccountInput, link_local_errors, redact_url};
use shared::admin::{TestEndpointRequest, TestTarget};

use super::field_error;
use crate::accounts::LiveAccount;
use crate::error::ApiError;
use crate::state::AppState;

/// Name used for unsaved settings given without one (validation needs a name).
const UNSAVED_NAME: &str = "unsaved settings";

/// The account to test: a saved one, or unsaved settings validated like a new account.
pub(super) fn resolve(
    state: &AppState,
    request: TestEndpointRequest,
) -> Result<(std::sync::Arc<LiveAccount>, TestTarget), ApiError> {
    if let Some(id) = &request.account {
        return resolve_saved(state, &request, id);
    }
    resolve_unsaved(state, request)
}

/// A saved account, named by id or name; no settings may come with it.
fn resolve_saved(
    state: &AppState,
    request: &TestEndpointRequest,
    id: &str,
) -> Result<(std::sync::Arc<LiveAccount>, TestTarget), ApiError> {
    let settings_given = [
        ("name", request.name.is_some()),
        ("endpoint", request.endpoint.is_some()),
        ("deploymentName", request.deployment_name.is_some()),
        ("apiKey", request.api_key.is_some()),
        ("kind", request.kind.is_some()),
        ("apiVersion", request.api_version.is_some()),
        ("proxy", request.proxy.is_some()),
    ];
    if let Some((field, _)) = settings_given.iter().find(|(_, given)| *given) {
        return Err(ApiError::fields(vec![field_error(
            field,
            "give either `account` (a saved account) or unsaved settings, not both",
        )]));
    }
    let snapshot = state.accounts.snapshot();
    let account = snapshot
        .find(id)
        .ok_or_else(|| ApiError::not_found(format!("no account with id or name {id:?}")))?;
    // Also for an account saved before the address policy existed: the report shows what
    // the upstream answered, which for a metadata address would be the host's credentials.
    refuse_link_local(state, account)?;
    let target = target_of(account, true);
    Ok((std::sync::Arc::clone(account), target))
}

/// Unsaved settings, validated like a new account.
fn resolve_unsaved(
    state: &AppState,
    request: TestEndpointRequest,
) -> Result<(std::sync::Arc<LiveAccount>, TestTarget), ApiError> {
    if request.endpoint.is_none() && request.deployment_name.is_none() {
        return Err(ApiError::fields(vec![
            field_error(
                "endpoint",
                "required unless `account` names a saved account",
            ),
            field_error(
                "deploymentName",
                "required unless `account` names a saved account",
            ),
        ]));
    }
    let named = request.name.is_some();
    let input = AccountInput {
        name: request.name.unwrap_or_else(|| UNSAVED_NAME.to_owned()),
        endpoint: request.endpoint.unwrap_or_default(),
        deployment_name: request.deployment_name.unwrap_or_default(),
        api_key: request.api_key,
        kind: request.kind,
        api_version: request.api_version,
        proxy: request.proxy,
        ..AccountInput::default()
    };
    let (settings, secrets) = input.validate().map_err(ApiError::fields)?;
    let account = LiveAccount::new(AccountId(String::new()), settings, secrets, (0, 0), None);
    refuse_link_local(state, &account)?;
    let target = target_of(&account, named);
    Ok((std::sync::Arc::new(account), target))
}

/// The address policy (`allow_link_local_endpoints`), checked before any request is sent.
fn refuse_link_local(state: &AppState, account: &LiveAccount) -> Result<(), ApiError> {
    if state.config.allow_link_local_endpoints {
        return Ok(());
    }
    let refused = link_local_errors(&account.settings, &account.secrets, None);
    if refused.is_empty() {
        Ok(())
    } else {
        Err(ApiError::fields(refused))
    }
}

fn target_of(account: &LiveAccount, named: bool) -> TestTarget {
    TestTarget {
        id: Some(account.id.clone()).filter(|id| !id.as_str().is_empty()),
        name: named.then(|| account.settings.name.clone()),
        kind: account.settings.kind,
        endpoint: account.settings.endpoint.clone(),
        deployment_name: account.settings.deployment_name.clone(),
        api_key_set: account.secrets.api_key.is_some(),
        proxy: account.secrets.proxy.as_deref().map(redact_url),
    }
}
