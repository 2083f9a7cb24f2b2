//! The middleware that guards `/api/v1`: `Authorization: Bearer <admin token>`.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, AppState};

/// Middleware for every `/api` route.
pub async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if state.admin_token.matches(token) => Ok(next.run(request).await),
        _ => Err(ApiError::unauthorized()),
    }
}
