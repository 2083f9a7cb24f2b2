//! `/api/v1/mirrors/{id}/schedule`: when a pull mirror runs on its own.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;

use super::json::ApiJson;
use super::mirrors::load;
use super::{ApiError, App, AppState, blocking, mirror_id};
use crate::schedule;
use crate::store::Direction;
use crate::store::schedules::{self, Cadence, Schedule};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    interval_seconds: Option<i64>,
    cron: Option<String>,
    enabled: Option<bool>,
}

#[utoipa::path(get, path = "/mirrors/{id}/schedule", tag = "schedules", params(("id" = i64, Path, description = "Mirror id")), responses((status = 200, body = Schedule), (status = 404, description = "No such mirror", body = crate::api::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Schedule>, ApiError> {
    let id = mirror_id(&id)?;
    blocking(state, move |app| {
        load(app, id)?;
        app.store
            .with(|c| schedules::get(c, id))?
            .map(Json)
            .ok_or_else(|| ApiError::not_found(format!("mirror {id} has no schedule")))
    })
    .await
}

/// Sets the cadence (exactly one of `interval_seconds` and `cron`) and whether it
/// is enabled; clears any failure state, hard failure included.
#[utoipa::path(put, path = "/mirrors/{id}/schedule", tag = "schedules", params(("id" = i64, Path, description = "Mirror id")), request_body = ScheduleBody, responses((status = 200, body = Schedule), (status = 404, description = "No such mirror", body = crate::api::ErrorBody), (status = 422, description = "A field is not acceptable; `field` names it", body = crate::api::ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ScheduleBody>,
) -> Result<Json<Schedule>, ApiError> {
    let id = mirror_id(&id)?;
    blocking(state, move |app| {
        let mirror = load(app, id)?;
        if mirror.direction == Direction::Push {
            return Err(ApiError::invalid(
                "interval_seconds",
                "push mirrors run after their project's pulls and have no schedule",
            ));
        }
        let cadence = match (body.interval_seconds, body.cron) {
            (Some(seconds), None) => {
                Cadence::Interval(checked_interval(app, seconds, "interval_seconds")?)
            }
            (None, Some(expr)) => {
                schedule::parse_cron(&expr).map_err(|e| ApiError::invalid("cron", e))?;
                Cadence::Cron(expr)
            }
            _ => {
                return Err(ApiError::invalid(
                    "interval_seconds",
                    "give exactly one of interval_seconds and cron",
                ));
            }
        };
        let enabled = body.enabled.unwrap_or(true);
        let schedule = set(app, id, &cadence, enabled)?;
        crate::health::observe(app, id)?;
        Ok(Json(schedule))
    })
    .await
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
    blocking(state, move |app| {
        load(app, id)?;
        let current = app
            .store
            .with(|c| schedules::get(c, id))?
            .ok_or_else(|| ApiError::not_found(format!("mirror {id} has no schedule")))?;
        let schedule = set(app, id, &schedule::cadence_of(&current), enabled)?;
        crate::health::observe(app, id)?;
        Ok(Json(schedule))
    })
    .await
}

/// Stores a cadence with its first run (jittered, so mirrors created together
/// do not fire together) and a clean failure state.
pub fn set(app: &App, id: i64, cadence: &Cadence, enabled: bool) -> Result<Schedule, ApiError> {
    let next = if enabled {
        schedule::next_after(cadence, app.clock.now_ms(), rand::random())
    } else {
        None
    };
    Ok(app
        .store
        .with(|c| schedules::set(c, id, cadence, enabled, next))?)
}

/// A positive interval no shorter than the configured minimum.
pub fn checked_interval(app: &App, seconds: i64, field: &str) -> Result<u32, ApiError> {
    let min = app.schedule_policy.min_interval_seconds;
    u32::try_from(seconds)
        .ok()
        .filter(|s| *s >= min)
        .ok_or_else(|| ApiError::invalid(field, format!("at least {min} seconds")))
}

/// After a manual sync: a hard-failed mirror gets its schedule back.
pub fn revive(app: &App, id: i64) -> Result<(), ApiError> {
    let current = app.store.with(|c| schedules::get(c, id))?;
    if let Some(schedule) = current.filter(|s| s.hard_failed) {
        set(app, id, &schedule::cadence_of(&schedule), schedule.enabled)?;
    }
    Ok(())
}
