//! Runs and conflicts of a mirror: manual sync, run history, dry-run detection,
//! conflict history and resolution.

use std::time::Duration;

use axum::Json;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use serde::Deserialize;
use serde_json::{Value, json};

use super::json::{ApiJson, ApiQuery};
use super::pagination::{self, PageQuery};
use super::{ApiError, AppState, blocking, mirror_id};
use crate::service::App;
use crate::store::{self, ConflictStatus, Page, Resolution, Run, RunStatus};

/// How long `?wait=true` waits for a run before answering with its current state.
const WAIT_LIMIT: Duration = Duration::from_secs(600);

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SyncQuery {
    #[serde(default)]
    wait: bool,
}

#[utoipa::path(post, path = "/mirrors/{id}/sync", tag = "runs", params(("id" = i64, Path, description = "Mirror id"), SyncQuery), responses((status = 202, description = "Queued: run_id, status, coalesced", body = serde_json::Value), (status = 200, description = "With wait=true: the finished run", body = Run), (status = 404, description = "No such mirror", body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody)))]
pub async fn sync(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<SyncQuery>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = mirror_id(&id)?;
    // Subscribe before queueing, so the run's end cannot be missed.
    let mut finished = state.jobs.finished();
    let enqueued = blocking(state.clone(), move |app| Ok(app.sync_now(id)?)).await?;
    let run_id = enqueued.run_id;
    if !query.wait {
        let body = json!({"run_id": run_id, "status": "queued", "coalesced": enqueued.coalesced});
        return Ok((StatusCode::ACCEPTED, Json(body)));
    }
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        let run = current_run(&state, run_id).await?;
        if run.status.is_finished() {
            return Ok((StatusCode::OK, Json(json!(run))));
        }
        // A lagged receiver only means we re-read the run sooner.
        match tokio::time::timeout_at(deadline, finished.recv()).await {
            Ok(_) => {}
            Err(_) => return Ok((StatusCode::ACCEPTED, Json(json!(run)))),
        }
    }
}

async fn current_run(state: &AppState, run_id: i64) -> Result<Run, ApiError> {
    blocking(state.clone(), move |app| {
        app.store
            .with(|c| store::runs::get(c, run_id))?
            .ok_or_else(|| ApiError::not_found(format!("no run {run_id}")))
    })
    .await
}

/// A run, with its transfer progress while it is running.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RunView {
    #[serde(flatten)]
    run: Run,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<crate::sync::progress::Snapshot>,
}

#[utoipa::path(get, path = "/runs/{run_id}", tag = "runs", params(("run_id" = i64, Path)), responses((status = 200, body = RunView), (status = 404, body = crate::api::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    let run_id = parse_run_id(&run_id)?;
    let run = current_run(&state, run_id).await?;
    let progress = state.live.get(run_id);
    Ok(Json(RunView { run, progress }))
}

/// How long a cancel waits for a running run to stop before it answers.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// Cancels a queued or running run. A queued run ends at once; a running one
/// stops at its transfer's next callback, or at once when it waits on a
/// remote (its connections are shut down), with no ref changed. Answers with
/// the run: `cancelled`, or still `running` if it has not stopped within 5 s.
#[utoipa::path(post, path = "/runs/{run_id}/cancel", tag = "runs", params(("run_id" = i64, Path)), responses((status = 200, body = Run), (status = 404, body = crate::api::ErrorBody), (status = 409, description = "The run has already ended", body = crate::api::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Json<Run>, ApiError> {
    let run_id = parse_run_id(&run_id)?;
    // Subscribe first, so the run's end cannot slip between the two.
    let mut finished = state.jobs.finished();
    let running = blocking(state.clone(), move |app| Ok(app.cancel_run(run_id)?)).await?;
    if running {
        let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
        loop {
            let run = current_run(&state, run_id).await?;
            if run.status.is_finished() {
                break;
            }
            if tokio::time::timeout_at(deadline, finished.recv())
                .await
                .is_err()
            {
                break;
            }
        }
    }
    current_run(&state, run_id).await.map(Json)
}

/// What the run did to each ref it did not leave alone, and why.
#[utoipa::path(get, path = "/runs/{run_id}/refs", tag = "runs", params(("run_id" = i64, Path)), responses((status = 200, description = "{\"refs\": [RunRef]}, by name", body = serde_json::Value), (status = 404, body = crate::api::ErrorBody)))]
pub async fn refs(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let run_id = parse_run_id(&run_id)?;
    current_run(&state, run_id).await?;
    let refs = blocking(state, move |app| {
        Ok(app.store.with(|c| store::runs::refs(c, run_id))?)
    })
    .await?;
    Ok(Json(json!({ "refs": refs })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Only runs with this status.
    status: Option<RunStatus>,
}

#[utoipa::path(get, path = "/mirrors/{id}/runs", tag = "runs",
    params(("id" = i64, Path, description = "Mirror id"), RunsQuery, PageQuery),
    responses(
        (status = 200, description = "{\"runs\": [Run]}, newest first, one page; the X-* and Link headers as on /mirrors", body = serde_json::Value),
        (status = 404, description = "No such mirror", body = crate::api::ErrorBody),
        (status = 422, description = "A parameter is not acceptable; `field` names it", body = crate::api::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
    ApiQuery(query): ApiQuery<RunsQuery>,
    ApiQuery(paging): ApiQuery<PageQuery>,
) -> Result<(HeaderMap, Json<Value>), ApiError> {
    mirror_page(state, &id, &uri, &paging, "runs", move |app, id, page| {
        Ok(app
            .store
            .with(|c| store::runs::page(c, id, query.status, page))?)
    })
    .await
}

/// A dry run: the plan per ref, with the strategy's decisions, and no ref
/// changed. Each diverged ref is opened as a conflict (or the one already
/// open is reused), so it can be resolved by id.
#[utoipa::path(post, path = "/mirrors/{id}/conflicts/detect", tag = "conflicts", params(("id" = i64, Path, description = "Mirror id")), responses((status = 200, description = "mirror_id; diverged (ref names); conflicts ([Conflict], open, one per diverged ref); plan; aborted", body = serde_json::Value), (status = 404, description = "No such mirror", body = crate::api::ErrorBody), (status = 409, description = "The remote could not be read (`sync_failed`, the reason in `message`)", body = crate::api::ErrorBody)))]
pub async fn detect(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = mirror_id(&id)?;
    blocking(state, move |app| {
        let detected = app.detect_conflicts(id)?;
        let diverged: Vec<&str> = detected
            .conflicts
            .iter()
            .map(|c| c.ref_name.as_str())
            .collect();
        Ok(Json(json!({
            "mirror_id": id,
            "diverged": diverged,
            "conflicts": detected.conflicts,
            "plan": detected.report.plan,
            "aborted": detected.report.aborted,
        })))
    })
    .await
}

/// An update done outside mirrorhost, as a script reports it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalRunBody {
    /// Whether the update succeeded.
    success: bool,
    /// How long it took.
    #[schema(minimum = 0, maximum = 2147483647)]
    duration_ms: i64,
    /// Why it failed; only for a failed update (`""` counts as none).
    #[schema(max_length = 4096)]
    error: Option<String>,
}

/// The longest error text an external update may carry.
const MAX_ERROR_CHARS: usize = 4096;

impl ExternalRunBody {
    fn validate(self) -> Result<store::ExternalUpdate, ApiError> {
        if !(0..=i64::from(i32::MAX)).contains(&self.duration_ms) {
            return Err(ApiError::invalid(
                "duration_ms",
                "must be from 0 to 2147483647",
            ));
        }
        // An empty error is no error, as scripts often send it.
        let error = self.error.filter(|e| !e.is_empty());
        match &error {
            Some(_) if self.success => {
                return Err(ApiError::invalid("error", "only a failed update has one"));
            }
            Some(e) if e.chars().count() > MAX_ERROR_CHARS => {
                return Err(ApiError::invalid("error", "at most 4096 characters"));
            }
            _ => {}
        }
        Ok(store::ExternalUpdate {
            succeeded: self.success,
            duration_ms: self.duration_ms,
            error,
        })
    }
}

/// Records an update done outside mirrorhost (trigger `external`): it ends
/// now, and counts in the mirror's health like any run.
#[utoipa::path(post, path = "/mirrors/{id}/runs", tag = "runs", params(("id" = i64, Path, description = "Mirror id")), request_body = ExternalRunBody, responses((status = 201, body = Run), (status = 404, description = "No such mirror", body = crate::api::ErrorBody), (status = 422, description = "A field is not acceptable; `field` names it", body = crate::api::ErrorBody)))]
pub async fn record(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ExternalRunBody>,
) -> Result<(StatusCode, Json<Run>), ApiError> {
    let id = mirror_id(&id)?;
    let update = body.validate()?;
    let run = blocking(state, move |app| {
        Ok(app.record_external_update(id, &update)?)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(run)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConflictsQuery {
    /// Only conflicts with this status.
    status: Option<ConflictStatus>,
}

#[utoipa::path(get, path = "/mirrors/{id}/conflicts", tag = "conflicts",
    params(("id" = i64, Path, description = "Mirror id"), ConflictsQuery, PageQuery),
    responses(
        (status = 200, description = "{\"conflicts\": [Conflict]}, newest first, one page; the X-* and Link headers as on /mirrors", body = serde_json::Value),
        (status = 404, description = "No such mirror", body = crate::api::ErrorBody),
        (status = 422, description = "A parameter is not acceptable; `field` names it", body = crate::api::ErrorBody)))]
pub async fn conflicts(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
    ApiQuery(query): ApiQuery<ConflictsQuery>,
    ApiQuery(paging): ApiQuery<PageQuery>,
) -> Result<(HeaderMap, Json<Value>), ApiError> {
    mirror_page(
        state,
        &id,
        &uri,
        &paging,
        "conflicts",
        move |app, id, page| {
            Ok(app
                .store
                .with(|c| store::conflicts::page(c, id, query.status, page))?)
        },
    )
    .await
}

/// One page of a mirror's history (`fetch`), as `{key: [...]}` with the
/// paging headers; 404 when the mirror does not exist.
async fn mirror_page<T: serde::Serialize + Send + 'static>(
    state: AppState,
    id: &str,
    uri: &Uri,
    paging: &PageQuery,
    key: &'static str,
    fetch: impl FnOnce(&App, i64, Page) -> Result<(Vec<T>, u64), ApiError> + Send + 'static,
) -> Result<(HeaderMap, Json<Value>), ApiError> {
    let id = mirror_id(id)?;
    let page = paging.page()?;
    let (rows, total) = blocking(state, move |app| {
        app.mirror(id)?;
        fetch(app, id, page)
    })
    .await?;
    Ok((
        pagination::headers(uri, page, total),
        Json(json!({ key: rows })),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    strategy: Resolution,
}

#[utoipa::path(post, path = "/mirrors/{id}/conflicts/{cid}/resolve", tag = "conflicts", params(("id" = i64, Path, description = "Mirror id"), ("cid" = i64, Path, description = "Conflict id")), request_body = ResolveBody, responses((status = 200, body = serde_json::Value), (status = 404, description = "No such mirror", body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody), (status = 422, description = "A field is not acceptable; `field` names it", body = crate::api::ErrorBody)))]
pub async fn resolve(
    State(state): State<AppState>,
    Path((id, conflict_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<ResolveBody>,
) -> Result<Json<Value>, ApiError> {
    let id = mirror_id(&id)?;
    let conflict_id: i64 = conflict_id
        .parse()
        .map_err(|_| ApiError::not_found(format!("no conflict {conflict_id}")))?;
    blocking(state, move |app| {
        let resolved = app.resolve_conflict(id, conflict_id, body.strategy)?;
        Ok(Json(json!(resolved)))
    })
    .await
}

/// Parses a `{run_id}` path segment.
fn parse_run_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("no run {raw:?}")))
}
