//! Relay-key endpoints: create (the secret is in this answer only), list, get, update, revoke.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use shared::admin::KeyList;
use shared::key::{CreateKeyRequest, CreatedKey, RelayKey, UpdateKeyRequest};

use crate::error::AdminApiError;
use crate::extract::AdminJson;
use crate::state::AppState;

type Result<T> = std::result::Result<T, AdminApiError>;

pub(super) async fn list(State(state): State<AppState>) -> Json<KeyList> {
    Json(KeyList {
        keys: state.keys.list(),
    })
}

pub(super) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RelayKey>> {
    Ok(Json(state.keys.get(&id)?))
}

pub(super) async fn create(
    State(state): State<AppState>,
    AdminJson(request): AdminJson<CreateKeyRequest>,
) -> Result<(StatusCode, Json<CreatedKey>)> {
    let created = state.keys.create(request).await?;
    tracing::info!(key = %created.key.name, id = %created.key.id, "relay key created");
    Ok((StatusCode::CREATED, Json(created)))
}

pub(super) async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AdminJson(request): AdminJson<UpdateKeyRequest>,
) -> Result<Json<RelayKey>> {
    let key = state.keys.update(&id, request).await?;
    tracing::info!(key = %key.name, id = %key.id, "relay key updated");
    Ok(Json(key))
}

pub(super) async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RelayKey>> {
    let key = state.keys.revoke(&id).await?;
    tracing::info!(key = %key.name, id = %key.id, "relay key revoked");
    Ok(Json(key))
}
