//! `/api/v1/mirrors/{id}/bandwidth`: a mirror's transfer and concurrency limits.

use axum::Json;
use axum::extract::{Path, State};

use super::json::ApiJson;
use super::{ApiError, AppState, blocking, mirror_id};
use crate::store::bandwidth::{self, Bandwidth};

#[utoipa::path(get, path = "/mirrors/{id}/bandwidth", tag = "bandwidth", params(("id" = i64, Path, description = "Mirror id")), responses((status = 200, body = Bandwidth), (status = 404, description = "No such mirror", body = crate::api::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Bandwidth>, ApiError> {
    let id = mirror_id(&id)?;
    blocking(state, move |app| {
        app.mirror(id)?;
        Ok(Json(app.store.with(|c| bandwidth::get(c, id))?))
    })
    .await
}

#[utoipa::path(put, path = "/mirrors/{id}/bandwidth", tag = "bandwidth", params(("id" = i64, Path, description = "Mirror id")), request_body = Bandwidth, responses((status = 200, body = Bandwidth), (status = 404, description = "No such mirror", body = crate::api::ErrorBody), (status = 422, description = "A field is not acceptable; `field` names it", body = crate::api::ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(limits): ApiJson<Bandwidth>,
) -> Result<Json<Bandwidth>, ApiError> {
    let id = mirror_id(&id)?;
    // SQLite keeps it as a signed 64-bit integer.
    let storable = 1..=i64::MAX.unsigned_abs();
    if limits
        .max_bytes_per_second
        .is_some_and(|rate| !storable.contains(&rate))
    {
        return Err(ApiError::invalid(
            "max_bytes_per_second",
            "a positive number of bytes up to 9223372036854775807, or null for none",
        ));
    }
    if limits.max_concurrent_updates == Some(0) {
        return Err(ApiError::invalid(
            "max_concurrent_updates",
            "a positive number, or null for none",
        ));
    }
    blocking(state, move |app| {
        app.mirror(id)?;
        app.store.with(|c| bandwidth::set(c, id, &limits))?;
        Ok(Json(app.store.with(|c| bandwidth::get(c, id))?))
    })
    .await
}
