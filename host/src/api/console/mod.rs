//! The operator's console: HTML pages served at `/` by the binary itself
//! (markup written here, stylesheet and script compiled in, nothing fetched
//! from elsewhere). Reading works with JavaScript off; the one script only
//! refreshes the progress of running runs.
//!
//! Safe by default: every page and action needs a session, bought at
//! `/login` with the admin token (`session`); every form carries the
//! session's CSRF token, checked before anything is done; every answer says
//! `Content-Security-Policy` with no inline script or style. The stylesheet
//! is the one thing served without a session: the login page needs it and
//! it holds no data. These routes are HTML for people, not the admin API:
//! they are not in the OpenAPI document.

mod actions;
mod html;
mod pages;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;

use super::AppState;
use crate::service::ServiceError;
use crate::store::StoreError;
pub use session::Sessions;

/// What the console's handlers reach: the service and the sessions.
#[derive(Debug)]
pub struct Console {
    app: AppState,
    sessions: Sessions,
    /// The listener speaks TLS: the cookie is marked `Secure`.
    secure: bool,
}

type ConsoleState = Arc<Console>;

/// The console's routes, with their state.
pub fn router(app: AppState) -> Router {
    let console = Arc::new(Console {
        secure: app.config.tls.is_some(),
        app,
        sessions: Sessions::default(),
    });
    Router::new()
        .route("/", get(pages::mirrors))
        .route("/mirrors/{id}", get(pages::mirror))
        .route("/runs/{id}", get(pages::run))
        .route("/runs/{id}/progress", get(pages::progress))
        .route("/queue", get(pages::queue))
        .route("/plugins", get(pages::plugins))
        .route("/login", get(actions::login_form).post(actions::login))
        .route("/logout", post(actions::logout))
        .route("/mirrors/{id}/sync", post(actions::sync))
        .route("/mirrors/{id}/pause", post(actions::pause))
        .route("/mirrors/{id}/resume", post(actions::resume))
        .route(
            "/mirrors/{id}/conflicts/{cid}/resolve",
            post(actions::resolve),
        )
        .route("/runs/{id}/cancel", post(actions::cancel))
        .route("/console/console.css", get(stylesheet))
        .route("/console/console.js", get(script))
        .layer(middleware::from_fn(security_headers))
        .with_state(console)
}

/// What every console answer says about itself: no inline script or style,
/// nothing loaded from elsewhere, never framed, never cached.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn stylesheet() -> impl IntoResponse {
    asset(
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    )
}

/// The script needs a session like the pages it serves.
async fn script(_: session::Session) -> impl IntoResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "private, max-age=300"),
        ],
        body,
    )
}

/// A signed-in request: without a live session, the answer is the login page.
impl FromRequestParts<ConsoleState> for session::Session {
    type Rejection = Redirect;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(session::from_cookie_header)
            .and_then(|id| console.sessions.find(id))
            .ok_or_else(|| Redirect::to("/login"))
    }
}

/// A form body, read only if it carries the session's CSRF token.
fn checked_form<T: DeserializeOwned>(
    session: &session::Session,
    body: &[u8],
) -> Result<T, ConsoleError> {
    #[derive(serde::Deserialize)]
    struct Csrf {
        csrf: Option<String>,
    }
    let presented: Csrf = serde_urlencoded::from_bytes(body).map_err(|_| ConsoleError::Forged)?;
    match presented.csrf {
        Some(token) if session.csrf_matches(&token) => {}
        _ => return Err(ConsoleError::Forged),
    }
    serde_urlencoded::from_bytes(body).map_err(|e| ConsoleError::Invalid(e.to_string()))
}

/// What goes wrong behind a console page, shown as a page.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("this form did not come from a page of this session; reload the page and try again")]
    Forged,
    #[error("{}", crate::store::DISK_FULL)]
    DiskFull,
    /// Its detail goes to the log, not to the page.
    #[error("internal error; see the server log")]
    Internal(String),
}

impl From<ServiceError> for ConsoleError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound(m) => ConsoleError::NotFound(m),
            ServiceError::Invalid { .. } => ConsoleError::Invalid(e.to_string()),
            ServiceError::Conflict(m) => ConsoleError::Conflict(m),
            ServiceError::Sync(e) => ConsoleError::Conflict(e.to_string()),
            ServiceError::Store(e) => e.into(),
            ServiceError::Internal(e) => ConsoleError::Internal(e.to_string()),
        }
    }
}

impl From<StoreError> for ConsoleError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ConsoleError::NotFound(format!("no such {what}")),
            full if full.is_disk_full() => ConsoleError::DiskFull,
            other => ConsoleError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, title) = match self {
            ConsoleError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            ConsoleError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Not acceptable"),
            ConsoleError::Conflict(_) => (StatusCode::CONFLICT, "Not done"),
            ConsoleError::Forged => (StatusCode::FORBIDDEN, "Refused"),
            ConsoleError::DiskFull => (StatusCode::INSUFFICIENT_STORAGE, "Disk full"),
            ConsoleError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Something broke"),
        };
        if let ConsoleError::Internal(e) = &self {
            tracing::error!(error = %e, "console page failed");
        }
        let body = format!(
            "<p role=\"alert\">{}</p><p><a href=\"/\">Back to the mirrors</a></p>",
            html::esc(&self.to_string())
        );
        let page = html::page(title, html::Section::Login, None, &body);
        (status, Html(page)).into_response()
    }
}

/// An HTML answer.
pub struct Html(String);

impl IntoResponse for Html {
    fn into_response(self) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        (headers, self.0).into_response()
    }
}

/// Runs `f` on the blocking pool with the service: store reads block.
async fn blocking<T: Send + 'static>(
    console: &ConsoleState,
    f: impl FnOnce(&crate::service::App) -> Result<T, ConsoleError> + Send + 'static,
) -> Result<T, ConsoleError> {
    let app = console.app.clone();
    tokio::task::spawn_blocking(move || f(&app))
        .await
        .map_err(|e| ConsoleError::Internal(e.to_string()))?
}

/// A `{id}` path segment; anything else names nothing.
fn id_of(raw: &str) -> Result<i64, ConsoleError> {
    raw.parse()
        .map_err(|_| ConsoleError::NotFound(format!("nothing is numbered {raw:?}")))
}
