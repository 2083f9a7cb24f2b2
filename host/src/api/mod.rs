//! The admin HTTP API (JSON, bearer token) and the unauthenticated probes.
//! Handlers stay thin: they parse, call into the owning module, and map errors
//! to [`ApiError`].

mod auth;
mod bandwidth;
mod credentials;
mod error;
mod health;
mod json;
mod mirrors;
mod plugins;
mod runs;
mod schedules;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router, middleware};
use serde_json::json;

use crate::alerts::Alerts;
use crate::config::Config;
use crate::jobs::Queue;
use crate::plugins::{BUILTINS, Registry};
use crate::schedule::{Clock, Policy};
use crate::secrets::MasterKey;
use crate::store::{Store, StoreError};
use crate::sync::Engine;
use crate::sync::progress::{Progress, Snapshot};
use crate::sync::throttle::Bucket;
use crate::webhooks;
use metrics_exporter_prometheus::PrometheusHandle;

pub use auth::{AdminToken, TOKEN_FILE, TokenSource};

/// Largest component an upload may carry.
const MAX_COMPONENT_BYTES: usize = 64 << 20;
pub use error::{ApiError, ErrorBody};
pub use json::ApiJson;
pub use mirrors::check_project_id;

/// What every handler can reach.
pub type AppState = Arc<App>;

#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub repos_dir: PathBuf,
    pub store: Store,
    pub plugins: Registry,
    pub jobs: Queue,
    pub admin_token: AdminToken,
    pub master_key: MasterKey,
    pub schedule_policy: Policy,
    /// The scheduler's time source; tests put their own clock here.
    pub clock: Arc<dyn Clock>,
    /// The service-wide transfer cap (`max_bytes_per_second` in config).
    pub bandwidth: Option<Arc<std::sync::Mutex<Bucket>>>,
    /// Sends an alert per mirror state change, when configured.
    pub alerts: Alerts,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Transfer progress of the runs in flight, by run id.
    pub live: LiveRuns,
}

/// Progress of the runs in flight. Entries live from a run's start to its end.
#[derive(Debug, Default)]
pub struct LiveRuns(std::sync::Mutex<HashMap<i64, Arc<Progress>>>);

impl LiveRuns {
    pub fn start(&self, run_id: i64) -> Arc<Progress> {
        let progress = Arc::new(Progress::default());
        self.lock().insert(run_id, progress.clone());
        progress
    }

    pub fn finish(&self, run_id: i64) {
        self.lock().remove(&run_id);
    }

    pub fn get(&self, run_id: i64) -> Option<Snapshot> {
        self.lock().get(&run_id).map(|p| p.snapshot())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<Progress>>> {
        // The map holds no invariant a panicking holder could break.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl App {
    /// The sync engine over this service's repositories, plugins and database.
    pub fn engine(&self) -> Engine<'_> {
        Engine {
            repos_dir: &self.repos_dir,
            plugins: &self.plugins,
            store: &self.store,
            master_key: &self.master_key,
            shared_bandwidth: self.bandwidth.as_ref(),
            progress: None,
        }
    }
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route(
            "/plugins",
            get(plugins::list)
                .post(plugins::upload)
                .layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES)),
        )
        .route("/plugins/{name}", axum::routing::delete(plugins::delete))
        .route("/mirrors", get(mirrors::list))
        .route("/mirrors/pull", post(mirrors::create_pull))
        .route("/mirrors/push", post(mirrors::create_push))
        .route(
            "/mirrors/{id}",
            get(mirrors::get)
                .patch(mirrors::patch)
                .delete(mirrors::delete),
        )
        .route(
            "/mirrors/{id}/credentials",
            put(credentials::put)
                .get(credentials::get)
                .delete(credentials::delete),
        )
        .route(
            "/mirrors/{id}/ssh-host-keys",
            get(credentials::get_host_keys).put(credentials::put_host_keys),
        )
        .route(
            "/mirrors/{id}/ssh-host-keys/detect",
            post(credentials::detect_host_keys),
        )
        .route(
            "/mirrors/{id}/schedule",
            get(schedules::get).put(schedules::put),
        )
        .route("/mirrors/{id}/schedule/enable", post(schedules::enable))
        .route("/mirrors/{id}/schedule/disable", post(schedules::disable))
        .route(
            "/mirrors/{id}/bandwidth",
            get(bandwidth::get).put(bandwidth::put),
        )
        .route("/mirrors/{id}/sync", post(runs::sync))
        .route("/mirrors/{id}/runs", get(runs::list))
        .route("/mirrors/{id}/health", get(health::mirror))
        .route("/health/unhealthy", get(health::unhealthy))
        .route("/runs/{run_id}", get(runs::get))
        .route("/mirrors/{id}/conflicts", get(runs::conflicts))
        .route("/mirrors/{id}/conflicts/detect", post(runs::detect))
        .route("/mirrors/{id}/conflicts/{cid}/resolve", post(runs::resolve))
        .route(
            "/projects/{id}/protected-branches",
            put(mirrors::set_protected_branches),
        )
        .route("/projects/{id}/webhook", put(webhooks::set_secret))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    // Webhooks authenticate themselves (signature or token), not with the admin token.
    let hooks = Router::new()
        .route("/github", post(webhooks::github))
        .route("/gitlab", post(webhooks::gitlab))
        .layer(DefaultBodyLimit::max(webhooks::MAX_BODY_BYTES));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(health::metrics))
        .nest("/api/v1", api)
        .nest("/hooks", hooks)
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready when the database answers and every built-in plugin is loaded.
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
            other => ApiError::internal(other),
        }
    }
}
