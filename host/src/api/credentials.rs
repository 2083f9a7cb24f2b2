//! `/api/v1/mirrors/{id}/credentials`: set (or rotate), show metadata, delete.
//! A secret goes in once and never comes back out.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::json::ApiJson;
use super::mirrors::{load, load_with_project};
use super::{ApiError, AppState, blocking, mirror_id};
use crate::secrets::Secret;
use crate::store::credentials::{self, CredentialMeta, HostKey, SealedCredential};
use serde_json::{Value, json};

#[utoipa::path(put, path = "/mirrors/{id}/credentials", tag = "credentials", params(("id" = i64, Path, description = "Mirror id")), request_body = Secret, responses((status = 200, body = CredentialMeta), (status = 404, description = "No such mirror", body = crate::api::ErrorBody), (status = 422, description = "A field is not acceptable; `field` names it", body = crate::api::ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(secret): ApiJson<Secret>,
) -> Result<Json<CredentialMeta>, ApiError> {
    let id = mirror_id(&id)?;
    blocking(state, move |app| {
        let mirror = load(app, id)?;
        if mirror.auth_method.as_str() != secret.kind() {
            return Err(ApiError::invalid(
                "type",
                format!(
                    "the mirror's auth_method is {}; PATCH it to {} first",
                    mirror.auth_method.as_str(),
                    secret.kind()
                ),
            ));
        }
        let described = secret
            .describe()
            .map_err(|e| ApiError::invalid(e.field, e.message))?;
        let sealed = app
            .master_key
            .seal(id, &secret)
            .map_err(ApiError::internal)?;
        let credential = SealedCredential {
            kind: described.kind,
            username: described.username,
            fingerprint: described.fingerprint,
            key_id: app.master_key.id(),
            sealed,
        };
        let meta = app.store.with(|c| credentials::put(c, id, &credential))?;
        tracing::info!(mirror_id = id, kind = meta.kind, "credentials stored");
        Ok(Json(meta))
    })
    .await
}

#[utoipa::path(get, path = "/mirrors/{id}/credentials", tag = "credentials", params(("id" = i64, Path, description = "Mirror id")), responses((status = 200, body = CredentialMeta), (status = 404, description = "No such mirror", body = crate::api::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CredentialMeta>, ApiError> {
    let id = mirror_id(&id)?;
    blocking(state, move |app| {
        load(app, id)?;
        app.store
            .with(|c| credentials::meta(c, id))?
            .map(Json)
            .ok_or_else(|| ApiError::not_found(format!("mirror {id} has no credentials")))
    })
    .await
}

#[utoipa::path(delete, path = "/mirrors/{id}/credentials", tag = "credentials", params(("id" = i64, Path, description = "Mirror id")), responses((status = 204), (status = 404, description = "No such mirror", body = crate::api::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = mirror_id(&id)?;
    blocking(state, move |app| {
        load(app, id)?;
        app.store.with(|c| credentials::delete(c, id))?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
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
    blocking(state, move |app| {
        load(app, id)?;
        let keys = app.store.with(|c| credentials::host_keys(c, id))?;
        Ok(Json(json!({ "host_keys": keys })))
    })
    .await
}

/// Replaces the host keys the mirror trusts.
#[utoipa::path(put, path = "/mirrors/{id}/ssh-host-keys", tag = "credentials", params(("id" = i64, Path, description = "Mirror id")), request_body = HostKeysBody, responses((status = 200, body = serde_json::Value), (status = 404, description = "No such mirror", body = crate::api::ErrorBody), (status = 422, description = "A field is not acceptable; `field` names it", body = crate::api::ErrorBody)))]
pub async fn put_host_keys(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<HostKeysBody>,
) -> Result<Json<Value>, ApiError> {
    let id = mirror_id(&id)?;
    for (i, key) in body.host_keys.iter().enumerate() {
        let digest = key.fingerprint.strip_prefix("SHA256:").unwrap_or_default();
        let well_formed = digest.len() == 43
            && digest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/');
        if !well_formed {
            return Err(ApiError::invalid(
                format!("host_keys[{i}].fingerprint"),
                "expected SHA256:<43 base64 characters>, as ssh-keygen -lf prints it",
            ));
        }
    }
    blocking(state, move |app| {
        load(app, id)?;
        app.store
            .with(|c| credentials::set_host_keys(c, id, &body.host_keys))?;
        let keys = app.store.with(|c| credentials::host_keys(c, id))?;
        Ok(Json(json!({ "host_keys": keys })))
    })
    .await
}

/// The host keys the remote offers, to be checked and confirmed by the operator;
/// nothing is stored.
#[utoipa::path(post, path = "/mirrors/{id}/ssh-host-keys/detect", tag = "credentials", params(("id" = i64, Path, description = "Mirror id")), responses((status = 200, body = serde_json::Value), (status = 404, description = "No such mirror", body = crate::api::ErrorBody), (status = 502, body = crate::api::ErrorBody)))]
pub async fn detect_host_keys(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = mirror_id(&id)?;
    blocking(state, move |app| {
        let (mirror, project) = load_with_project(app, id)?;
        let keys = app
            .engine()
            .detect_host_keys(&mirror, &project)
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "detect_failed", e.to_string()))?;
        Ok(Json(json!({ "host_keys": keys })))
    })
    .await
}
