//! The admin HTTP API (JSON, bearer token) and the unauthenticated probes.
//! Handlers stay thin: they parse, call into the owning module, and map errors
//! to [`ApiError`].

mod auth;
mod error;
mod plugins;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router, middleware};
use serde_json::json;

use crate::config::Config;
use crate::plugins::{BUILTINS, Registry};
use crate::store::Store;

pub use auth::{AdminToken, TOKEN_FILE, TokenSource};
pub use error::ApiError;

/// What every handler can reach.
pub type AppState = Arc<App>;

#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub store: Store,
    pub plugins: Registry,
    pub admin_token: AdminToken,
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/plugins", get(plugins::list))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .nest("/api/v1", api)
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
