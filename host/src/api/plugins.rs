//! `/api/v1/plugins`.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;

/// Every loaded plugin, built-in or uploaded.
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "plugins": state.plugins.list() }))
}
