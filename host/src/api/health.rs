//! `/api/v1/mirrors/{id}/health`, `/api/v1/health/unhealthy` and `/metrics`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::json::ApiQuery;
use super::{ApiError, AppState, blocking, mirror_id};
use crate::health::{self, Health};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WindowQuery {
    /// How many of the latest finished runs to cover [default: the `health_window` setting].
    #[param(minimum = 1, maximum = 100000)]
    window: Option<u32>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnhealthyQuery {
    /// Percent; mirrors under it are listed [default: 90].
    #[param(minimum = 0, maximum = 100)]
    min_success_rate: Option<f64>,
    /// How many of the latest finished runs to cover [default: the `health_window` setting].
    #[param(minimum = 1, maximum = 100000)]
    window: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UnhealthyList {
    mirrors: Vec<Health>,
}

fn window(requested: Option<u32>, default: u32) -> Result<u32, ApiError> {
    match requested {
        None => Ok(default),
        Some(n @ 1..=100_000) => Ok(n),
        Some(_) => Err(ApiError::invalid("window", "must be from 1 to 100000")),
    }
}

#[utoipa::path(get, path = "/mirrors/{id}/health", tag = "health",
    params(("id" = i64, Path, description = "Mirror id"), WindowQuery),
    responses((status = 200, body = Health), (status = 404, body = super::ErrorBody)))]
pub async fn mirror(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<WindowQuery>,
) -> Result<Json<Health>, ApiError> {
    let id = mirror_id(&id)?;
    blocking(state, move |app| {
        let window = window(query.window, app.config.health_window)?;
        let mirror = app.mirror(id)?;
        Ok(app.store.with(|c| health::of(c, &mirror, window))?)
    })
    .await
    .map(Json)
}

#[utoipa::path(get, path = "/health/unhealthy", tag = "health", params(UnhealthyQuery),
    responses((status = 200, body = UnhealthyList), (status = 422, body = super::ErrorBody)))]
pub async fn unhealthy(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<UnhealthyQuery>,
) -> Result<Json<UnhealthyList>, ApiError> {
    let min = query.min_success_rate.unwrap_or(90.0);
    if !(0.0..=100.0).contains(&min) {
        return Err(ApiError::invalid(
            "min_success_rate",
            "must be a percentage from 0 to 100",
        ));
    }
    blocking(state, move |app| {
        let window = window(query.window, app.config.health_window)?;
        let mirrors = app.store.with(|c| health::unhealthy(c, window, min))?;
        Ok(Json(UnhealthyList { mirrors }))
    })
    .await
}

#[utoipa::path(get, path = "/metrics", tag = "probes", security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
/// Prometheus text format. Unauthenticated like `/healthz`, as scrapers expect;
/// it names no mirror, URL or secret.
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let text = blocking(state, |app| {
        Ok(crate::telemetry::render(&app.metrics, &app.store)?)
    })
    .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}
