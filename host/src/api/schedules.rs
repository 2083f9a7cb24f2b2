//! `/api/v1/mirrors/{id}/schedule`: when a pull mirror runs on its own.

use axum::Json;
use axum::extract::{Path, State};

use super::json::ApiJson;
use super::{ApiError, AppState, blocking, mirror_id};
use crate::service::SetSchedule;
use crate::store::schedules::Schedule;

#[utoipa::path(get, path = "/mirrors/{id}/schedule", tag = "schedules", params(("id" = i64, Path, description = "Mirror id")), responses((status = 200, body = Schedule), (status = 404, description = "No such mirror", body = crate::api::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Schedule>, ApiError> {
    let id = mirror_id(&id)?;
    blocking(state, move |app| Ok(app.schedule(id)?))
        .await
        .map(Json)
}

/// Sets the cadence (exactly one of `interval_seconds` and `cron`) and whether it
/// is enabled; clears any failure state, hard failure included.
#[utoipa::path(put, path = "/mirrors/{id}/schedule", tag = "schedules", params(("id" = i64, Path, description = "Mirror id")), request_body = SetSchedule, responses((status = 200, body = Schedule), (status = 404, description = "No such mirror", body = crate::api::ErrorBody), (status = 422, description = "A field is not acceptable; `field` names it", body = crate::api::ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SetSchedule>,
) -> Result<Json<Schedule>, ApiError> {
    let id = mirror_id(&id)?;
    blocking(state, move |app| Ok(app.set_schedule(id, body)?))
        .await
        .map(Json)
}

#[utoipa::path(post, path = "/mirrors/{id}/schedule/enable", tag = "schedules", params(("id" = i64, Path, description = "Mirror id")), responses((status = 200, body = Schedule), (status = 404, description = "No such mirror", body = crate::api::ErrorBody)))]
pub async fn enable(state: State<AppState>, id: Path<String>) -> Result<Json<Schedule>, ApiError> {
    toggle(state, id, true).await
}

#[utoipa::path(post, path = "/mirrors/{id}/schedule/disable", tag = "schedules", params(("id" = i64, Path, description = "Mirror id")), responses((status = 200, body = Schedule), (status = 404, description = "No such mirror", body = crate::api::ErrorBody)))]
pub async fn disable(state: State<AppState>, id: Path<String>) -> Result<Json<Schedule>, ApiError> {
    toggle(state, id, false).await
}

async fn toggle(
    State(state): State<AppState>,
    Path(id): Path<String>,
    enabled: bool,
) -> Result<Json<Schedule>, ApiError> {
    let id = mirror_id(&id)?;
    blocking(state, move |app| Ok(app.enable_schedule(id, enabled)?))
        .await
        .map(Json)
}
