//! `/api/v1/mirrors`, `/api/v1/projects/{id}/protected-branches` and
//! `/api/v1/projects/{id}/housekeeping`.

use axum::Json;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::json::{ApiJson, ApiQuery};
use super::pagination::{self, PageQuery};
use super::{ApiError, AppState, blocking, mirror_id};
use crate::health::State as HealthState;
use crate::service::{CreateMirror, PatchMirror};
use crate::store::mirrors::{MirrorFilter, MirrorOrder, Sort};
use crate::store::{self, Direction, Mirror};

#[utoipa::path(post, path = "/mirrors/pull", tag = "mirrors", request_body = CreateMirror, responses((status = 201, body = Mirror), (status = 409, description = "The project has a pull mirror already (a project mirrors one upstream)", body = crate::api::ErrorBody), (status = 422, description = "A field is not acceptable; `field` names it", body = crate::api::ErrorBody)))]
pub async fn create_pull(
    state: State<AppState>,
    body: ApiJson<CreateMirror>,
) -> Result<(StatusCode, Json<Mirror>), ApiError> {
    create(state, body, Direction::Pull).await
}

#[utoipa::path(post, path = "/mirrors/push", tag = "mirrors", request_body = CreateMirror, responses((status = 201, body = Mirror), (status = 409, description = "The project has a pull mirror already (a project mirrors one upstream)", body = crate::api::ErrorBody), (status = 422, description = "A field is not acceptable; `field` names it", body = crate::api::ErrorBody)))]
pub async fn create_push(
    state: State<AppState>,
    body: ApiJson<CreateMirror>,
) -> Result<(StatusCode, Json<Mirror>), ApiError> {
    create(state, body, Direction::Push).await
}

async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateMirror>,
    direction: Direction,
) -> Result<(StatusCode, Json<Mirror>), ApiError> {
    let mirror = blocking(state, move |app| Ok(app.create_mirror(direction, body)?)).await?;
    Ok((StatusCode::CREATED, Json(mirror)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this project's mirrors.
    project_id: Option<String>,
    /// Only pull or only push mirrors.
    direction: Option<Direction>,
    /// Only enabled, or only disabled, mirrors.
    enabled: Option<bool>,
    /// Only mirrors in this health state.
    state: Option<HealthState>,
    /// Only mirrors whose project id or URL holds this text.
    #[param(max_length = 255)]
    search: Option<String>,
    /// The column to sort by [default: id]; ties go by id.
    order_by: Option<MirrorOrder>,
    /// `asc` [default] or `desc`.
    sort: Option<Sort>,
}

#[utoipa::path(get, path = "/mirrors", tag = "mirrors", params(ListQuery, PageQuery),
    responses(
        (status = 200, description = "{\"mirrors\": [Mirror]}, oldest first unless \
            `order_by`/`sort` say otherwise, one page; \
            X-Total, X-Total-Pages, X-Page, X-Per-Page, X-Next-Page, X-Prev-Page and Link \
            (first, prev, next, last) say where it stands", body = serde_json::Value),
        (status = 422, description = "A parameter is not acceptable; `field` names it", body = crate::api::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    ApiQuery(query): ApiQuery<ListQuery>,
    ApiQuery(paging): ApiQuery<PageQuery>,
) -> Result<(HeaderMap, Json<Value>), ApiError> {
    let page = paging.page()?;
    if query
        .search
        .as_ref()
        .is_some_and(|s| s.chars().count() > 255)
    {
        return Err(ApiError::invalid("search", "at most 255 characters"));
    }
    let filter = MirrorFilter {
        project_id: query.project_id,
        direction: query.direction,
        enabled: query.enabled,
        state: query.state,
        search: query.search,
    };
    let order = (
        query.order_by.unwrap_or_default(),
        query.sort.unwrap_or_default(),
    );
    let (mirrors, total) = blocking(state, move |app| {
        Ok(app
            .store
            .with(|c| store::mirrors::page(c, &filter, order, page))?)
    })
    .await?;
    Ok((
        pagination::headers(&uri, page, total),
        Json(json!({ "mirrors": mirrors })),
    ))
}

#[utoipa::path(get, path = "/mirrors/{id}", tag = "mirrors", params(("id" = i64, Path, description = "Mirror id")), responses((status = 200, body = Mirror), (status = 404, description = "No such mirror", body = crate::api::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Mirror>, ApiError> {
    let id = mirror_id(&id)?;
    blocking(state, move |app| Ok(app.mirror(id)?))
        .await
        .map(Json)
}

#[utoipa::path(patch, path = "/mirrors/{id}", tag = "mirrors", params(("id" = i64, Path, description = "Mirror id")), request_body = PatchMirror, responses((status = 200, body = Mirror), (status = 404, description = "No such mirror", body = crate::api::ErrorBody), (status = 422, description = "A field is not acceptable; `field` names it", body = crate::api::ErrorBody)))]
pub async fn patch(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchMirror>,
) -> Result<Json<Mirror>, ApiError> {
    let id = mirror_id(&id)?;
    blocking(state, move |app| Ok(app.patch_mirror(id, body)?))
        .await
        .map(Json)
}

#[utoipa::path(delete, path = "/mirrors/{id}", tag = "mirrors", params(("id" = i64, Path, description = "Mirror id")), responses((status = 204), (status = 404, description = "No such mirror", body = crate::api::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = mirror_id(&id)?;
    blocking(state, move |app| Ok(app.delete_mirror(id)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/projects/{id}/protected-branches", tag = "projects", params(("id" = String, Path, description = "Project id, URL-encoded (group%2Fname)", pattern = "^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)+$", max_length = 255)), request_body = Vec<String>, responses((status = 200, body = store::Project), (status = 422, description = "A field is not acceptable; `field` names it", body = crate::api::ErrorBody)))]
pub async fn set_protected_branches(
    State(state): State<AppState>,
    Path(project_id): Path<String>,
    ApiJson(patterns): ApiJson<Vec<String>>,
) -> Result<Json<store::Project>, ApiError> {
    blocking(state, move |app| {
        Ok(app.set_protected_branches(&project_id, &patterns)?)
    })
    .await
    .map(Json)
}

#[utoipa::path(post, path = "/projects/{id}/housekeeping", tag = "projects",
    params(("id" = String, Path, description = "Project id, URL-encoded (group%2Fname)", pattern = "^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)+$", max_length = 255)),
    responses(
        (status = 200, description = "Packed anew; sizes before and after", body = crate::sync::housekeeping::Pass),
        (status = 404, description = "No such project", body = crate::api::ErrorBody),
        (status = 409, description = "The project has no repository yet", body = crate::api::ErrorBody)))]
pub async fn housekeeping(
    State(state): State<AppState>,
    Path(project_id): Path<String>,
) -> Result<Json<crate::sync::housekeeping::Pass>, ApiError> {
    blocking(state, move |app| Ok(app.housekeeping(&project_id)?))
        .await
        .map(Json)
}
