//! `GET /v1/models` in both shapes: Anthropic's when the request carries `anthropic-version` or
//! `x-api-key`, OpenAI's otherwise. Only models the calling key may use are listed.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::keys::Caller;
use crate::routing::listable_models;
use crate::state::AppState;

/// Fixed creation time reported for every model: upstreams do not tell us one, and clients only
/// need a plausible value (2024-01-01T00:00:00Z).
const CREATED_UNIX: i64 = 1_704_067_200;

pub(super) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Json<Value> {
    let models = listable_models(&state.accounts.snapshot(), &caller);
    let anthropic = headers.contains_key("anthropic-version") || headers.contains_key("x-api-key");
    if anthropic {
        let data: Vec<Value> = models
            .iter()
            .map(|id| {
                json!({"type": "model", "id": id, "display_name": id, "created_at": "2024-01-01T00:00:00Z"})
            })
            .collect();
        Json(json!({
            "data": data,
            "has_more": false,
            "first_id": models.first(),
            "last_id": models.last(),
        }))
    } else {
        let data: Vec<Value> = models
            .iter()
            .map(|id| json!({"id": id, "object": "model", "created": CREATED_UNIX, "owned_by": "relayd"}))
            .collect();
        Json(json!({"object": "list", "data": data}))
    }
}
