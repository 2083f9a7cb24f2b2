//! `/api/v1/mirrors` and `/api/v1/projects/{id}/protected-branches`: mirror
//! settings, validated in full (URL policy, plugins and their configs) before
//! anything is stored.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::json::ApiJson;
use super::schedules;
use super::{ApiError, AppState, blocking, mirror_id};
use crate::plugins::World;
use crate::store::schedules::Cadence;
use crate::store::{self, AuthMethod, Direction, Mirror, MirrorSettings};
use crate::sync::remote;

/// The body of `POST /api/v1/mirrors/{pull,push}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMirror {
    project_id: String,
    url: String,
    #[serde(default = "auth_none")]
    auth_method: AuthMethod,
    update_interval: Option<i64>,
    #[serde(default)]
    only_protected_branches: bool,
    #[serde(default)]
    keep_divergent_refs: bool,
    mirror_branch_regex: Option<String>,
    conflict_strategy: Option<String>,
    #[schema(value_type = Option<Object>)]
    conflict_strategy_config: Option<Value>,
    branch_filter: Option<String>,
    #[schema(value_type = Option<Object>)]
    branch_filter_config: Option<Value>,
    /// An auth-provider plugin in place of the built-in one of `auth_method`.
    auth_provider: Option<String>,
    #[schema(value_type = Option<Object>)]
    auth_provider_config: Option<Value>,
    #[serde(default = "yes")]
    enabled: bool,
}

/// The body of `PATCH /api/v1/mirrors/{id}`: every field optional; `null` clears
/// the optional ones.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchMirror {
    url: Option<String>,
    auth_method: Option<AuthMethod>,
    #[serde(default, deserialize_with = "present")]
    update_interval: Option<Option<i64>>,
    only_protected_branches: Option<bool>,
    keep_divergent_refs: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    mirror_branch_regex: Option<Option<String>>,
    conflict_strategy: Option<String>,
    #[schema(value_type = Option<Object>)]
    conflict_strategy_config: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    branch_filter: Option<Option<String>>,
    #[schema(value_type = Option<Object>)]
    branch_filter_config: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    auth_provider: Option<Option<String>>,
    #[schema(value_type = Option<Object>)]
    auth_provider_config: Option<Value>,
    enabled: Option<bool>,
}

fn auth_none() -> AuthMethod {
    AuthMethod::None
}

fn yes() -> bool {
    true
}

/// Distinguishes a field set to `null` (`Some(None)`) from an absent one (`None`).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[utoipa::path(post, path = "/mirrors/pull", tag = "mirrors", request_body = CreateMirror, responses((status = 201, body = Mirror), (status = 422, description = "A field is not acceptable; `field` names it", body = crate::api::ErrorBody)))]
pub async fn create_pull(
    state: State<AppState>,
    body: ApiJson<CreateMirror>,
) -> Result<(StatusCode, Json<Mirror>), ApiError> {
    create(state, body, Direction::Pull).await
}

#[utoipa::path(post, path = "/mirrors/push", tag = "mirrors", request_body = CreateMirror, responses((status = 201, body = Mirror), (status = 422, description = "A field is not acceptable; `field` names it", body = crate::api::ErrorBody)))]
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
    let mirror = blocking(state, move |app| {
        let settings = MirrorSettings {
            project_id: body.project_id,
            direction,
            url: body.url,
            remote_host: String::new(),
            auth_method: body.auth_method,
            enabled: body.enabled,
            update_interval: checked_interval(app, body.update_interval, direction)?,
            only_protected_branches: body.only_protected_branches,
            keep_divergent_refs: body.keep_divergent_refs,
            mirror_branch_regex: body.mirror_branch_regex,
            conflict_strategy: body.conflict_strategy.unwrap_or_else(|| "theirs".into()),
            conflict_strategy_config: config_text(body.conflict_strategy_config),
            branch_filter: body.branch_filter,
            branch_filter_config: config_text(body.branch_filter_config),
            auth_provider: body.auth_provider,
            auth_provider_config: config_text(body.auth_provider_config),
        };
        let settings = validate(app, settings)?;
        let mirror = app.store.with(|c| store::mirrors::insert(c, &settings))?;
        if let Some(seconds) = mirror.update_interval {
            schedules::set(
                app,
                mirror.mirror_id,
                &Cadence::Interval(seconds),
                mirror.enabled,
            )?;
        }
        Ok(mirror)
    })
    .await?;
    tracing::info!(mirror_id = mirror.mirror_id, project_id = %mirror.project_id, "mirror created");
    Ok((StatusCode::CREATED, Json(mirror)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    project_id: Option<String>,
}

#[utoipa::path(get, path = "/mirrors", tag = "mirrors", params(ListQuery), responses((status = 200, description = "{\"mirrors\": [Mirror]}", body = serde_json::Value)))]
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let mirrors = blocking(state, move |app| {
        Ok(app
            .store
            .with(|c| store::mirrors::list(c, query.project_id.as_deref(), None))?)
    })
    .await?;
    Ok(Json(json!({ "mirrors": mirrors })))
}

#[utoipa::path(get, path = "/mirrors/{id}", tag = "mirrors", params(("id" = i64, Path, description = "Mirror id")), responses((status = 200, body = Mirror), (status = 404, description = "No such mirror", body = crate::api::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Mirror>, ApiError> {
    let id = mirror_id(&id)?;
    blocking(state, move |app| load(app, id)).await.map(Json)
}

#[utoipa::path(patch, path = "/mirrors/{id}", tag = "mirrors", params(("id" = i64, Path, description = "Mirror id")), request_body = PatchMirror, responses((status = 200, body = Mirror), (status = 404, description = "No such mirror", body = crate::api::ErrorBody), (status = 422, description = "A field is not acceptable; `field` names it", body = crate::api::ErrorBody)))]
pub async fn patch(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchMirror>,
) -> Result<Json<Mirror>, ApiError> {
    let id = mirror_id(&id)?;
    blocking(state, move |app| {
        let current = load(app, id)?;
        let mut s = current.settings();
        if let Some(url) = body.url {
            s.url = url;
        }
        s.auth_method = body.auth_method.unwrap_or(s.auth_method);
        if let Some(interval) = body.update_interval {
            s.update_interval = checked_interval(app, interval, s.direction)?;
        }
        s.only_protected_branches = body
            .only_protected_branches
            .unwrap_or(s.only_protected_branches);
        s.keep_divergent_refs = body.keep_divergent_refs.unwrap_or(s.keep_divergent_refs);
        s.mirror_branch_regex = body.mirror_branch_regex.unwrap_or(s.mirror_branch_regex);
        s.conflict_strategy = body.conflict_strategy.unwrap_or(s.conflict_strategy);
        if let Some(config) = body.conflict_strategy_config {
            s.conflict_strategy_config = config_text(Some(config));
        }
        s.branch_filter = body.branch_filter.unwrap_or(s.branch_filter);
        if let Some(config) = body.branch_filter_config {
            s.branch_filter_config = config_text(Some(config));
        }
        s.auth_provider = body.auth_provider.unwrap_or(s.auth_provider);
        if let Some(config) = body.auth_provider_config {
            s.auth_provider_config = config_text(Some(config));
        }
        s.enabled = body.enabled.unwrap_or(s.enabled);
        let s = validate(app, s)?;
        let mirror = app.store.with(|c| store::mirrors::update(c, id, &s))?;
        // A settings change gives a hard-failed mirror its schedule back.
        if let Some(seconds) = mirror.update_interval {
            schedules::set(app, id, &Cadence::Interval(seconds), mirror.enabled)?;
        }
        crate::health::observe(app, id)?;
        Ok(mirror)
    })
    .await
    .map(Json)
}

#[utoipa::path(delete, path = "/mirrors/{id}", tag = "mirrors", params(("id" = i64, Path, description = "Mirror id")), responses((status = 204), (status = 404, description = "No such mirror", body = crate::api::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = mirror_id(&id)?;
    blocking(state, move |app| {
        load(app, id)?;
        Ok(app.store.with(|c| store::mirrors::delete(c, id))?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/projects/{id}/protected-branches", tag = "projects", params(("id" = String, Path, description = "Project id, URL-encoded (group%2Fname)")), request_body = Vec<String>, responses((status = 200, body = store::Project), (status = 422, description = "A field is not acceptable; `field` names it", body = crate::api::ErrorBody)))]
pub async fn set_protected_branches(
    State(state): State<AppState>,
    Path(project_id): Path<String>,
    ApiJson(patterns): ApiJson<Vec<String>>,
) -> Result<Json<store::Project>, ApiError> {
    check_project_id(&project_id)?;
    for (i, pattern) in patterns.iter().enumerate() {
        if pattern.trim().is_empty() || pattern.len() > 255 || pattern.chars().any(char::is_control)
        {
            return Err(ApiError::invalid(
                format!("[{i}]"),
                "a branch name or wildcard pattern",
            ));
        }
    }
    blocking(state, move |app| {
        Ok(app
            .store
            .with(|c| store::mirrors::set_protected_branches(c, &project_id, &patterns))?)
    })
    .await
    .map(Json)
}

pub fn load(app: &super::App, id: i64) -> Result<Mirror, ApiError> {
    app.store
        .with(|c| store::mirrors::get(c, id))?
        .ok_or_else(|| ApiError::not_found(format!("no mirror {id}")))
}

/// The mirror and its project, for the calls that run the engine.
pub fn load_with_project(app: &super::App, id: i64) -> Result<(Mirror, store::Project), ApiError> {
    let mirror = load(app, id)?;
    let project = app
        .store
        .with(|c| store::mirrors::project(c, &mirror.project_id))?
        .ok_or_else(|| ApiError::not_found(format!("no project {}", mirror.project_id)))?;
    Ok((mirror, project))
}

/// Checks every setting; returns them with the derived remote host filled in.
fn validate(app: &super::App, mut s: MirrorSettings) -> Result<MirrorSettings, ApiError> {
    check_project_id(&s.project_id)?;
    let policy = remote::Policy {
        allow_local: app.config.allow_local_remotes,
        allow_http: app.config.allow_http_remotes,
    };
    let url = remote::parse(&s.url, policy).map_err(|e| ApiError::invalid("url", e.to_string()))?;
    s.url = url.url;
    s.remote_host = url.host;
    if s.direction == Direction::Pull && s.keep_divergent_refs {
        return Err(ApiError::invalid(
            "keep_divergent_refs",
            "applies to push mirrors; pull mirrors use conflict_strategy",
        ));
    }
    if let Some(regex) = &s.mirror_branch_regex {
        let config = json!({ "include": regex }).to_string();
        check_plugin(
            app,
            "mirror_branch_regex",
            "regex-filter",
            World::BranchFilter,
            &config,
        )?;
    }
    check_plugin(
        app,
        "conflict_strategy",
        &s.conflict_strategy,
        World::ConflictStrategy,
        &s.conflict_strategy_config,
    )?;
    if let Some(filter) = &s.branch_filter {
        check_plugin(
            app,
            "branch_filter",
            filter,
            World::BranchFilter,
            &s.branch_filter_config,
        )?;
    }
    if let Some(provider) = &s.auth_provider {
        if s.auth_method == AuthMethod::None {
            return Err(ApiError::invalid(
                "auth_provider",
                "a provider answers with the mirror's stored credential: set auth_method too",
            ));
        }
        check_plugin(
            app,
            "auth_provider",
            provider,
            World::AuthProvider,
            &s.auth_provider_config,
        )?;
    }
    Ok(s)
}

/// The plugin exists, is of `world`, and accepts `config`.
fn check_plugin(
    app: &super::App,
    field: &str,
    name: &str,
    world: World,
    config: &str,
) -> Result<(), ApiError> {
    use crate::plugins::PluginErrorKind as Kind;
    app.plugins
        .validate_config(name, world, config)
        .map_err(|e| match e.kind {
            Kind::NotFound => ApiError::invalid(field, format!("no plugin named {name:?}")),
            Kind::WrongWorld { actual, .. } => ApiError::invalid(
                field,
                format!("{name:?} is a {actual} plugin, not a {world}"),
            ),
            Kind::Rejected(message) => ApiError::invalid(format!("{field}_config"), message),
            _ => ApiError::invalid(field, e.to_string()),
        })
}

fn checked_interval(
    app: &super::App,
    interval: Option<i64>,
    direction: Direction,
) -> Result<Option<u32>, ApiError> {
    let Some(seconds) = interval else {
        return Ok(None);
    };
    if direction == Direction::Push {
        return Err(ApiError::invalid(
            "update_interval",
            "push mirrors follow their project's pulls and have no interval",
        ));
    }
    schedules::checked_interval(app, seconds, "update_interval").map(Some)
}

/// A plugin config is given as JSON (an object, usually) and handed to the plugin
/// as text; a JSON string is taken as the text itself.
fn config_text(config: Option<Value>) -> String {
    match config {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text,
        Some(other) => other.to_string(),
    }
}

/// `group/project`, nested groups allowed: segments of letters, digits, `.`, `_`,
/// `-`, not starting with `.` or `-`. Keeps repository paths inside the data dir.
pub fn check_project_id(id: &str) -> Result<(), ApiError> {
    let valid_segment = |s: &str| {
        !s.is_empty()
            && !s.starts_with(['.', '-'])
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    if id.len() <= 255 && id.contains('/') && id.split('/').all(valid_segment) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "project_id",
            "expected group/project: letters, digits, '.', '_', '-', segments separated by '/'",
        ))
    }
}
