//! `/api/v1/mirrors/{id}/credentials` and `.../ssh-host-keys`: set (or rotate),
//! show metadata, delete. A secret goes in once and never comes back out.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::json::ApiJson;
use super::{ApiError, AppState, blocking, mirror_id};
use crate::secrets::Secret;
use crate::service::ServiceError;
use crate::store::credentials::{CredentialMeta, HostKey};

#[utoipa::path(put, path = "/mirrors/{id}/credentials", tag = "credentials", params(("id" = i64, Path, description = "Mirror id")), request_body = Secret, responses((status = 200, body = CredentialMeta), (status = 404, description = "No such mirror", body = crate::api::ErrorBody), (status = 422, description = "A field is not acceptable; `field` names it", body = crate::api::ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(secret): ApiJson<Secret>,
) -> Result<Json<CredentialMeta>, ApiError> {
    let id = mirror_id(&id)?;
    blocking(state, move |app| Ok(app.set_credential(id, &secret)?))
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/mirrors/{id}/credentials", tag = "credentials", params(("id" = i64, Path, description = "Mirror id")), responses((status = 200, body = CredentialMeta), (status = 404, description = "No such mirror", body = crate::api::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CredentialMeta>, ApiError> {
    let id = mirror_id(&id)?;
    blocking(state, move |app| Ok(app.credential(id)?))
        .await
        .map(Json)
}

#[utoipa::path(delete, path = "/mirrors/{id}/credentials", tag = "credentials", params(("id" = i64, Path, description = "Mirror id")), responses((status = 204), (status = 404, description = "No such mirror", body = crate::api::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = mirror_id(&id)?;
    blocking(state, move |app| Ok(app.delete_credential(id)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostKeysBody {
    host_keys: Vec<HostKey>,
}

#[utoipa::path(get, path = "/mirrors/{id}/ssh-host-keys", tag = "credentials", params(("id" = i64, Path, description = "Mirror id")), responses((status = 200, description = "{\"host_keys\": [HostKey]}", body = serde_json::Value), (status = 404, description = "No such mirror", body = crate::api::ErrorBody)))]
pub async fn get_host_keys(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = mirror_id(&id)?;
    let keys = blocking(state, move |app| Ok(app.host_keys(id)?)).await?;
    Ok(Json(json!({ "host_keys": keys })))
}

/// Replaces the host keys the mirror trusts.
#[utoipa::path(put, path = "/mirrors/{id}/ssh-host-keys", tag = "credentials", params(("id" = i64, Path, description = "Mirror id")), request_body = HostKeysBody, responses((status = 200, body = serde_json::Value), (status = 404, description = "No such mirror", body = crate::api::ErrorBody), (status = 422, description = "A field is not acceptable; `field` names it", body = crate::api::ErrorBody)))]
pub async fn put_host_keys(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<HostKeysBody>,
) -> Result<Json<Value>, ApiError> {
    let id = mirror_id(&id)?;
    let keys = blocking(
        state,
        move |app| Ok(app.set_host_keys(id, &body.host_keys)?),
    )
    .await?;
    Ok(Json(json!({ "host_keys": keys })))
}

/// The host keys the remote offers, to be checked and confirmed by the operator;
/// nothing is stored.
#[utoipa::path(post, path = "/mirrors/{id}/ssh-host-keys/detect", tag = "credentials", params(("id" = i64, Path, description = "Mirror id")), responses((status = 200, body = serde_json::Value), (status = 404, description = "No such mirror", body = crate::api::ErrorBody), (status = 502, body = crate::api::ErrorBody)))]
pub async fn detect_host_keys(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = mirror_id(&id)?;
    let keys = blocking(state, move |app| {
        app.detect_host_keys(id).map_err(|e| match e {
            // The remote did not answer as asked: a gateway failure, not ours.
            ServiceError::Sync(e) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "detect_failed", e.to_string())
            }
            other => other.into(),
        })
    })
    .await?;
    Ok(Json(json!({ "host_keys": keys })))
}
