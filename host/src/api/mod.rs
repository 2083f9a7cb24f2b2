//! The HTTP face: the admin API (JSON, bearer token), the webhook receivers,
//! the unauthenticated probes and the operator's console (HTML, `console`).
//! Handlers stay thin: they parse, call the service (`crate::service::App`),
//! and map its errors to [`ApiError`].

mod auth;
mod bandwidth;
mod console;
mod credentials;
mod error;
mod health;
mod hooks;
mod json;
mod mirrors;
mod pagination;
mod plugins;
mod runs;
mod schedules;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Json, Router, middleware};
use serde_json::json;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::plugins::BUILTINS;
use crate::service::{App, ServiceError};
use crate::store::StoreError;
use crate::webhooks;

/// Largest component an upload may carry.
const MAX_COMPONENT_BYTES: usize = 64 << 20;
pub use error::{ApiError, ErrorBody};
pub use json::ApiJson;

/// What every handler can reach.
pub type AppState = Arc<App>;

/// The service's routes. Admin routes are registered with their OpenAPI
/// operations in one step (`routes!`), so the served document and the router
/// are built from the same list and cannot disagree.
pub fn router(state: AppState) -> Router {
    let admin = admin_routes().route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_admin,
    ));
    let (router, mut doc) = probes_and_hooks().nest("/api/v1", admin).split_for_parts();
    document_shared_statuses(&mut doc);
    document_what_derives_miss(&mut doc);
    OPENAPI.get_or_init(|| doc);
    router
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state.clone())
        .merge(console::router(state))
}

/// The document `/api/openapi.json` serves, kept from the first router built:
/// every router is built from the same route list, so every document is the same.
static OPENAPI: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();

fn probes_and_hooks() -> OpenApiRouter<AppState> {
    // Webhooks authenticate themselves (signature or token), not with the admin token.
    let hooks = OpenApiRouter::new()
        .routes(routes!(hooks::github))
        .routes(routes!(hooks::gitlab))
        .layer(DefaultBodyLimit::max(webhooks::MAX_BODY_BYTES));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(openapi_json))
        .nest("/hooks", hooks)
}

fn admin_routes() -> OpenApiRouter<AppState> {
    let (schemas, paths, plugins) = routes!(plugins::list, plugins::upload);
    let plugins = plugins.layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES));
    OpenApiRouter::new()
        .routes((schemas, paths, plugins))
        .routes(routes!(plugins::delete))
        .routes(routes!(mirrors::list))
        .routes(routes!(mirrors::create_pull))
        .routes(routes!(mirrors::create_push))
        .routes(routes!(mirrors::get, mirrors::patch, mirrors::delete))
        .routes(routes!(
            credentials::put,
            credentials::get,
            credentials::delete
        ))
        .routes(routes!(
            credentials::get_host_keys,
            credentials::put_host_keys
        ))
        .routes(routes!(credentials::detect_host_keys))
        .routes(routes!(schedules::get, schedules::put))
        .routes(routes!(schedules::enable))
        .routes(routes!(schedules::disable))
        .routes(routes!(bandwidth::get, bandwidth::put))
        .routes(routes!(runs::sync))
        .routes(routes!(runs::list, runs::record))
        .routes(routes!(runs::get))
        .routes(routes!(runs::refs))
        .routes(routes!(runs::cancel))
        .routes(routes!(health::mirror))
        .routes(routes!(health::unhealthy))
        .routes(routes!(runs::conflicts))
        .routes(routes!(runs::detect))
        .routes(routes!(runs::resolve))
        .routes(routes!(mirrors::set_protected_branches))
        .routes(routes!(mirrors::housekeeping))
        .routes(routes!(hooks::set_secret))
}

/// Adds to every admin operation the statuses that the layers around the
/// handlers answer, so a client generated from the document knows them: 401
/// from the token check, 507 from the store when its disk is full, 400 and
/// 422 where `ApiJson` parses a body, 422 where `ApiQuery` parses a query
/// string. An operation's own description of a status wins.
fn document_shared_statuses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let error = |description: &str| {
        let body = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build();
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content("application/json", body)
                .build(),
        )
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/api/v1/") {
            continue;
        }
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in operations.into_iter().flatten() {
            let queried =
                op.parameters.iter().flatten().any(
                    |p| matches!(p, RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Query)),
                );
            let bodied = op.request_body.is_some();
            let responses = &mut op.responses.responses;
            let mut add = |status: &str, description: &str| {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| error(description));
            };
            add("401", "The admin token is missing or wrong");
            add("507", "The data dir's disk is full; nothing was changed");
            if bodied {
                add("400", "The body is not well-formed JSON");
            }
            if bodied || queried {
                add(
                    "422",
                    "A field or parameter is not acceptable; `field` names it",
                );
            }
        }
    }
}

/// What the derived schemas do not say but the handlers check, so that a
/// body the document allows is a body the service takes: a secret's variants
/// take no other field (`deny_unknown_fields` on a tagged enum is lost in
/// derivation), an external update names an error only when it failed, a
/// schedule is an interval or a cron expression, and a protected-branch
/// pattern is a name or a wildcard.
fn document_what_derives_miss(doc: &mut utoipa::openapi::OpenApi) {
    if let Some(item) = doc
        .paths
        .paths
        .get_mut("/api/v1/projects/{id}/protected-branches")
    {
        let mut value = serde_json::to_value(&*item).unwrap_or_default();
        value["put"]["requestBody"]["content"]["application/json"]["schema"]["items"] = serde_json::json!({
            "type": "string", "minLength": 1, "maxLength": 255,
            "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
        });
        if let Ok(described) = serde_json::from_value(value) {
            *item = described;
        }
    }
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    let schemas = &mut components.schemas;
    if let Some(secret) = schemas.get_mut("Secret") {
        let mut value = serde_json::to_value(&*secret).unwrap_or_default();
        for variant in value["oneOf"].as_array_mut().into_iter().flatten() {
            variant["additionalProperties"] = serde_json::Value::Bool(false);
        }
        if let Ok(closed) = serde_json::from_value(value) {
            *secret = closed;
        }
    }
    let duration = serde_json::json!({"type": "integer", "minimum": 0, "maximum": 2147483647,
                                      "description": "How long it took, in milliseconds."});
    let external = serde_json::json!({
        "description": "An update done outside mirrorhost, as a script reports it: `error` (at \
                        most 4096 characters) only for a failed one; `\"\"` counts as none.",
        "oneOf": [
            {"type": "object", "additionalProperties": false, "required": ["success", "duration_ms"],
             "properties": {"success": {"type": "boolean", "enum": [true]}, "duration_ms": duration,
                            "error": {"type": ["string", "null"], "maxLength": 0}}},
            {"type": "object", "additionalProperties": false, "required": ["success", "duration_ms"],
             "properties": {"success": {"type": "boolean", "enum": [false]}, "duration_ms": duration,
                            "error": {"type": ["string", "null"], "maxLength": 4096}}}
        ]
    });
    if let Ok(schema) = serde_json::from_value(external) {
        schemas.insert("ExternalRunBody".to_string(), schema);
    }
    let enabled = serde_json::json!({"type": ["boolean", "null"]});
    let schedule = serde_json::json!({
        "description": "A schedule: exactly one of `interval_seconds` (at least the service's \
                        `min_interval_seconds`, 60 unless set) and `cron`; enabled unless \
                        `enabled` says otherwise.",
        "oneOf": [
            {"type": "object", "additionalProperties": false, "required": ["interval_seconds"],
             "properties": {"interval_seconds": {"type": "integer", "minimum": 60},
                            "cron": {"type": "null"}, "enabled": enabled}},
            {"type": "object", "additionalProperties": false, "required": ["cron"],
             "properties": {"cron": {"type": "string"}, "interval_seconds": {"type": "null"},
                            "enabled": enabled}}
        ]
    });
    if let Ok(schema) = serde_json::from_value(schedule) {
        schemas.insert("SetSchedule".to_string(), schema);
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "mirrorhost", description = "Admin API of the mirrorhost Git mirroring service."),
    security(("admin_token" = [])),
    modifiers(&AdminTokenScheme),
    // Named by query parameters, which utoipa does not collect on its own.
    components(schemas(
        crate::store::ConflictStatus,
        crate::store::RunStatus,
        crate::store::Direction,
        crate::health::State,
        crate::store::mirrors::MirrorOrder,
        crate::store::mirrors::Sort
    ))
)]
struct ApiDoc;

/// Every operation needs `Authorization: Bearer <admin token>` unless it says
/// otherwise (probes and webhooks do).
struct AdminTokenScheme;

impl utoipa::Modify for AdminTokenScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[utoipa::path(get, path = "/api/openapi.json", tag = "probes", security(()),
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = serde_json::Value)))]
async fn openapi_json() -> Result<Json<&'static utoipa::openapi::OpenApi>, ApiError> {
    // Set by `router` before any request can reach this handler.
    OPENAPI
        .get()
        .map(Json)
        .ok_or_else(|| ApiError::internal("the OpenAPI document was not built"))
}

#[utoipa::path(get, path = "/healthz", tag = "probes", security(()),
    responses((status = 200, description = "The process answers", body = serde_json::Value)))]
async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready when the database answers and every built-in plugin is loaded.
#[utoipa::path(get, path = "/readyz", tag = "probes", security(()),
    responses((status = 200, body = serde_json::Value), (status = 503, body = serde_json::Value)))]
async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    let db = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || state.store.ping())
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
    };
    let plugins_loaded = BUILTINS.iter().all(|b| state.plugins.get(b.name).is_some());
    let ready = db.is_ok() && plugins_loaded;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "database": db.err().unwrap_or_else(|| "ok".into()),
        "plugins_loaded": plugins_loaded,
    });
    (status, Json(body))
}

/// Runs `f` on the blocking pool: store access, git and plugin calls all block.
async fn blocking<T: Send + 'static>(
    state: AppState,
    f: impl FnOnce(&App) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || f(&state))
        .await
        .map_err(ApiError::internal)?
}

/// Parses a `{id}` path segment.
fn mirror_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("no mirror {raw:?}")))
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(format!("no such {what}")),
            full if full.is_disk_full() => {
                tracing::error!(error = %full, "the database's disk is full");
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "disk_full",
                    crate::store::DISK_FULL,
                )
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound(message) => ApiError::not_found(message),
            ServiceError::Invalid { field, message } => ApiError::invalid(field, message),
            ServiceError::Conflict(message) => ApiError::conflict(message),
            // A sync failure during a request is the remote's or the
            // repository's state, not the caller's input: 409 with the
            // engine's (redacted) message.
            ServiceError::Sync(e) => {
                ApiError::new(StatusCode::CONFLICT, "sync_failed", e.to_string())
            }
            ServiceError::Store(e) => e.into(),
            ServiceError::Internal(e) => ApiError::internal(e),
        }
    }
}
