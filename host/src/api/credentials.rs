//! `/api/v1/mirrors/{id}/credentials`: set (or rotate), show metadata, delete.
//! A secret goes in once and never comes back out.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::json::ApiJson;
use super::mirrors::load;
use super::{ApiError, AppState, blocking, mirror_id};
use crate::secrets::Secret;
use crate::store::credentials::{self, CredentialMeta, SealedCredential};

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
