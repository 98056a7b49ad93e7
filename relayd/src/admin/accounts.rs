//! Account endpoints: list, get, create, partial update, delete, enable/disable, cooldown reset,
//! batch import.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use shared::account::{Account, AccountId, AccountInput, AccountPatch};
use shared::admin::{AccountList, CooldownReset, EndedCooldown};
use shared::import::{ImportOutcome, ImportReport, parse_rows};
use shared::time::now_millis;

use crate::accounts::same_upstream;
use crate::coordinator::CoordinationError;
use crate::error::{AdminApiError, ApiError, ErrorKind};
use crate::extract::{AdminJson, parse_json, read_body};
use crate::state::AppState;

type Result<T> = std::result::Result<T, AdminApiError>;

pub(super) async fn list(State(state): State<AppState>) -> Json<AccountList> {
    let snapshot = state.accounts.snapshot();
    Json(AccountList {
        accounts: snapshot.accounts.iter().map(|a| a.view()).collect(),
    })
}

pub(super) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Account>> {
    let snapshot = state.accounts.snapshot();
    let account = snapshot
        .find(&id)
        .ok_or_else(|| ApiError::not_found(format!("no account with id or name {id:?}")))?;
    Ok(Json(account.view()))
}

pub(super) async fn create(
    State(state): State<AppState>,
    AdminJson(input): AdminJson<AccountInput>,
) -> Result<(StatusCode, Json<Account>)> {
    let account = state.accounts.create(input).await?;
    tracing::info!(account = %account.settings.name, id = %account.id, "account created");
    probe_in_background(&state, vec![account.id.clone()]);
    Ok((StatusCode::CREATED, Json(account)))
}

pub(super) async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AdminJson(patch): AdminJson<AccountPatch>,
) -> Result<Json<Account>> {
    if patch.is_empty() {
        return Err(ApiError::invalid("empty update: give at least one field to change").into());
    }
    let before = state.accounts.snapshot().find(&id).cloned();
    let account = state.accounts.update(&id, patch).await?;
    tracing::info!(account = %account.settings.name, id = %account.id, "account updated");
    // A new endpoint, deployment, key, proxy, header or kind may be another server: what was
    // learnt about the old one no longer holds.
    let snapshot = state.accounts.snapshot();
    let reached_anew = match (before, snapshot.get(&account.id)) {
        (Some(before), Some(after)) => !same_upstream(&before, after),
        _ => true,
    };
    if reached_anew {
        probe_in_background(&state, vec![account.id.clone()]);
    }
    Ok(Json(account))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let account = state.accounts.delete(&id).await?;
    tracing::info!(account = %account.settings.name, id = %account.id, "account deleted");
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn enable(state: State<AppState>, id: Path<String>) -> Result<Json<Account>> {
    set_enabled(state, id, true).await
}

pub(super) async fn disable(state: State<AppState>, id: Path<String>) -> Result<Json<Account>> {
    set_enabled(state, id, false).await
}

async fn set_enabled(
    State(state): State<AppState>,
    Path(id): Path<String>,
    enabled: bool,
) -> Result<Json<Account>> {
    let patch = AccountPatch {
        enabled: Some(enabled),
        ..AccountPatch::default()
    };
    let account = state.accounts.update(&id, patch).await?;
    tracing::info!(account = %account.settings.name, enabled, "account enabled state set");
    if enabled {
        // Putting an account back into routing means now: a cooldown it earned before (perhaps
        // the reason it was disabled) would keep it out silently.
        state
            .routing
            .coordinator()
            .clear_cooldown(&account.id)
            .await
            .map_err(|e| {
                cannot_end_cooldown(
                    &account.settings.name,
                    &e,
                    "the account was enabled, but its cooldown could not be ended (routing state unavailable); retry",
                )
            })?;
    }
    Ok(Json(account))
}

/// `POST /admin/v1/accounts/{id or name}/reset`: ends the account's cooldown now — on every
/// instance with Redis — and says which one was ended. It does not enable a disabled account.
pub(super) async fn reset(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CooldownReset>> {
    let snapshot = state.accounts.snapshot();
    let account = snapshot
        .find(&id)
        .ok_or_else(|| ApiError::not_found(format!("no account with id or name {id:?}")))?;
    let coordinator = state.routing.coordinator();
    let ended = coordinator.cooldown(&account.id, now_millis());
    // Cleared even when none is known here: the shared copy is what counts, and this is cheap.
    coordinator.clear_cooldown(&account.id).await.map_err(|e| {
        cannot_end_cooldown(
            &account.settings.name,
            &e,
            "the cooldown could not be ended (routing state unavailable); retry",
        )
    })?;
    tracing::info!(
        account = %account.settings.name,
        was_cooling_down = ended.is_some(),
        "cooldown reset"
    );
    Ok(Json(CooldownReset {
        id: account.id.clone(),
        name: account.settings.name.clone(),
        ended: ended.map(|c| EndedCooldown {
            until: c.until,
            reason: c.reason,
        }),
        state: crate::routing::account_state(account, coordinator.as_ref(), now_millis()),
    }))
}

/// A cooldown the shared routing state would not clear (Redis unreachable): a 503 saying what
/// failed, the cause in the log only.
fn cannot_end_cooldown(account: &str, error: &CoordinationError, message: &str) -> ApiError {
    tracing::warn!(account, error = %error, "cannot end a cooldown");
    ApiError::new(ErrorKind::Unavailable, message).with_retry_after(1)
}

/// Query of `POST /admin/v1/import`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ImportQuery {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /admin/v1/import[?dry_run=true]` with the batch file (a JSON array) as the body. The
/// whole file is validated first; any invalid row → 400 listing every problem, nothing written.
pub(super) async fn import(
    State(state): State<AppState>,
    query: std::result::Result<Query<ImportQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Result<Json<ImportReport>> {
    let Query(query) =
        query.map_err(|e| ApiError::invalid(format!("invalid query: {}", e.body_text())))?;
    let bytes: Bytes = read_body(req, &state).await?;
    let rows: Vec<Value> = parse_json(&bytes)?;
    let rows = parse_rows(rows).map_err(ApiError::fields)?;
    let report = state.accounts.import(rows, query.dry_run).await?;
    tracing::info!(
        dry_run = report.dry_run,
        created = report.summary.created,
        updated = report.summary.updated,
        unchanged = report.summary.unchanged,
        "batch import"
    );
    if !report.dry_run {
        let snapshot = state.accounts.snapshot();
        let changed = report
            .rows
            .iter()
            .filter(|r| matches!(r.result, ImportOutcome::Created | ImportOutcome::Updated))
            .filter_map(|r| snapshot.find(&r.name).map(|a| a.id.clone()))
            .collect();
        probe_in_background(&state, changed);
    }
    Ok(Json(report))
}

/// `POST /admin/v1/accounts/{id or name}/probe`: probes the account's upstream now, waiting
/// for the probe (after any already running), and answers with the account, its new `profile`
/// and `resolved` values included. A probe that learns nothing still answers 200: what could not
/// be learnt is in the profile's notes. 404 when the account is deleted meanwhile, 409 when how
/// it is reached changed meanwhile (the result described the old settings and was dropped).
pub(super) async fn probe(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Account>> {
    let account = state
        .accounts
        .snapshot()
        .find(&id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no account with id or name {id:?}")))?;
    state
        .profile_probe
        .probe(&account)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(state.accounts.view(&account.id)?))
}

/// Probes `ids` after the admin call has answered: a slow or dead upstream never holds up an
/// admin write.
fn probe_in_background(state: &AppState, ids: Vec<AccountId>) {
    if ids.is_empty() || !state.config.upstream.probe_profiles {
        return;
    }
    let prober = std::sync::Arc::clone(&state.profile_probe);
    state
        .background
        .spawn(|cancel| async move { prober.probe_ids(ids, cancel).await });
}
