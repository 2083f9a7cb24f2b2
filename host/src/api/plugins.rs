//! `/api/v1/plugins`: list, upload, delete.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::json::ApiQuery;
use super::{ApiError, AppState, blocking};
use crate::plugins::{PluginMeta, World};

/// Every loaded plugin, built-in or uploaded.
#[utoipa::path(get, path = "/plugins", tag = "plugins", responses((status = 200, description = "Built-in and uploaded plugins", body = serde_json::Value)))]
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "plugins": state.plugins.list() }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    name: Option<String>,
    world: Option<String>,
}

/// `POST /api/v1/plugins?name=NAME&world=WORLD` with the component as the body.
/// The component is checked against the world it claims before it is stored.
#[utoipa::path(post, path = "/plugins", tag = "plugins", params(UploadQuery), request_body(content = Vec<u8>, content_type = "application/wasm", description = "A WebAssembly component"), responses((status = 201, body = serde_json::Value), (status = 422, description = "A field is not acceptable; `field` names it", body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<UploadQuery>,
    body: Bytes,
) -> Result<(StatusCode, Json<PluginMeta>), ApiError> {
    let name = query
        .name
        .ok_or_else(|| ApiError::invalid("name", "required (query parameter)"))?;
    let world: World = query
        .world
        .ok_or_else(|| ApiError::invalid("world", "required (query parameter)"))?
        .parse()
        .map_err(|e: String| ApiError::invalid("world", e))?;
    let meta = blocking(
        state,
        move |app| Ok(app.upload_plugin(&name, world, &body)?),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(meta)))
}

/// Refused while a mirror uses the plugin, and for built-ins.
#[utoipa::path(delete, path = "/plugins/{name}", tag = "plugins", params(("name" = String, Path)), responses((status = 204), (status = 404, body = crate::api::ErrorBody), (status = 409, description = "Built-in, or used by mirrors", body = crate::api::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(state, move |app| Ok(app.delete_plugin(&name)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}
