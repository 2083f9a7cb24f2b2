//! `/api/v1/plugins`: list, upload, delete.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, blocking};
use crate::plugins::{PluginMeta, World, uploaded};
use crate::store;

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
    Query(query): Query<UploadQuery>,
    body: Bytes,
) -> Result<(StatusCode, Json<PluginMeta>), ApiError> {
    let name = query
        .name
        .ok_or_else(|| ApiError::invalid("name", "required (query parameter)"))?;
    if !uploaded::valid_name(&name) {
        return Err(ApiError::invalid(
            "name",
            "1 to 64 characters: lower-case letters, digits and '-', not starting with '-'",
        ));
    }
    let world: World = query
        .world
        .ok_or_else(|| ApiError::invalid("world", "required (query parameter)"))?
        .parse()
        .map_err(|e: String| ApiError::invalid("world", e))?;
    match state.plugins.get(&name) {
        Some(p) if p.builtin => {
            return Err(ApiError::conflict(format!("{name:?} is a built-in plugin")));
        }
        Some(p) if p.world != world => {
            return Err(ApiError::conflict(format!(
                "{name:?} is a {} plugin; delete it before uploading a {world} under that name",
                p.world
            )));
        }
        _ => {}
    }
    let meta = blocking(state, move |app| {
        let meta = app
            .plugins
            .load(&name, world, &body)
            .map_err(|e| ApiError::invalid("component", e.to_string()))?;
        uploaded::store(&app.config.plugins_dir(), &name, world, &body)
            .map_err(ApiError::internal)?;
        Ok(meta)
    })
    .await?;
    tracing::info!(plugin = %meta.name, world = %meta.world, sha256 = %meta.sha256, "plugin uploaded");
    Ok((StatusCode::CREATED, Json(meta)))
}

/// Refused while a mirror uses the plugin, and for built-ins.
#[utoipa::path(delete, path = "/plugins/{name}", tag = "plugins", params(("name" = String, Path)), responses((status = 204), (status = 404, body = crate::api::ErrorBody), (status = 409, description = "Built-in, or used by mirrors", body = crate::api::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(state, move |app| {
        let meta = app
            .plugins
            .get(&name)
            .ok_or_else(|| ApiError::not_found(format!("no plugin {name:?}")))?;
        if meta.builtin {
            return Err(ApiError::conflict(format!("{name:?} is a built-in plugin")));
        }
        let users: Vec<i64> = app
            .store
            .with(|c| store::mirrors::list(c, None, None))?
            .into_iter()
            .filter(|m| m.uses_plugin(&name))
            .map(|m| m.mirror_id)
            .collect();
        if !users.is_empty() {
            return Err(ApiError::conflict(format!(
                "{name:?} is used by mirrors {users:?}"
            )));
        }
        uploaded::remove(&app.config.plugins_dir(), &name).map_err(ApiError::internal)?;
        app.plugins.remove(&name);
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
