//! What an operator does from the console: log in and out, sync, pause,
//! resume, resolve a conflict, cancel a run. Every action is a POST whose
//! form carries the session's CSRF token, and answers with a redirect to the
//! page that shows its effect (post, redirect, get).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::html::{self, Section};
use super::session::{self, Session};
use super::{ConsoleError, ConsoleState, Html, blocking, checked_form, id_of};
use crate::service::PatchMirror;
use crate::store::Resolution;

/// `GET /login`.
pub async fn login_form() -> Html {
    Html(login_page(None))
}

fn login_page(refusal: Option<&str>) -> String {
    let alert = refusal
        .map(|r| format!("<p role=\"alert\" class=\"error\">{}</p>", html::esc(r)))
        .unwrap_or_default();
    let body = format!(
        "{alert}<form method=\"post\" action=\"/login\" class=\"login\">\
         <label for=\"token\">Admin token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" \
         required autofocus>\
         <button type=\"submit\">Log in</button></form>\
         <p class=\"hint\">The token is in <code>&lt;data-dir&gt;/admin-token</code> \
         or <code>MIRRORHOST_ADMIN_TOKEN</code>.</p>"
    );
    html::page("Log in", Section::Login, None, &body)
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

/// `POST /login`: the admin token buys a session.
pub async fn login(State(console): State<ConsoleState>, body: Bytes) -> Response {
    let form: Option<LoginForm> = serde_urlencoded::from_bytes(&body).ok();
    match form {
        Some(f) if console.app.admin_token.matches(f.token.trim()) => {
            let session = console.sessions.start();
            let cookie = session::set_cookie(&session, console.secure);
            (
                StatusCode::SEE_OTHER,
                [(SET_COOKIE, cookie), (LOCATION, "/".to_string())],
            )
                .into_response()
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            Html(login_page(Some("That is not the admin token."))),
        )
            .into_response(),
    }
}

/// The fields of a form with nothing but its CSRF token.
#[derive(Debug, Deserialize)]
struct Plain {}

/// The `{id}` an action on one thing names, once its form (nothing but the
/// CSRF token) checked out.
fn plain_form(session: &Session, body: &[u8], id: &str) -> Result<i64, ConsoleError> {
    checked_form::<Plain>(session, body)?;
    id_of(id)
}

/// `POST /logout`: the session ends here and now, whatever its cookie says later.
pub async fn logout(
    session: Session,
    State(console): State<ConsoleState>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    checked_form::<Plain>(&session, &body)?;
    console.sessions.end(&session.id);
    let cookie = session::clear_cookie(console.secure);
    Ok((
        StatusCode::SEE_OTHER,
        [(SET_COOKIE, cookie), (LOCATION, "/login".to_string())],
    )
        .into_response())
}

/// `POST /mirrors/{id}/sync`: queues a run; its page shows it.
pub async fn sync(
    session: Session,
    State(console): State<ConsoleState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Redirect, ConsoleError> {
    let id = plain_form(&session, &body, &id)?;
    let enqueued = blocking(&console, move |app| Ok(app.sync_now(id)?)).await?;
    Ok(Redirect::to(&format!("/runs/{}", enqueued.run_id)))
}

pub async fn pause(
    session: Session,
    state: State<ConsoleState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Redirect, ConsoleError> {
    set_enabled(session, state, &id, &body, false).await
}

pub async fn resume(
    session: Session,
    state: State<ConsoleState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Redirect, ConsoleError> {
    set_enabled(session, state, &id, &body, true).await
}

/// Pausing is disabling the mirror, as `PATCH {"enabled": false}` does:
/// no schedule, webhook or sweep starts it until it is resumed.
async fn set_enabled(
    session: Session,
    State(console): State<ConsoleState>,
    id: &str,
    body: &[u8],
    enabled: bool,
) -> Result<Redirect, ConsoleError> {
    let id = plain_form(&session, body, id)?;
    let patch = PatchMirror {
        enabled: Some(enabled),
        ..PatchMirror::default()
    };
    blocking(&console, move |app| Ok(app.patch_mirror(id, patch)?)).await?;
    Ok(Redirect::to(&format!("/mirrors/{id}")))
}

#[derive(Debug, Deserialize)]
struct ResolveForm {
    resolution: String,
}

/// `POST /mirrors/{id}/conflicts/{cid}/resolve` with `resolution` ours or theirs.
pub async fn resolve(
    session: Session,
    State(console): State<ConsoleState>,
    Path((id, cid)): Path<(String, String)>,
    body: Bytes,
) -> Result<Redirect, ConsoleError> {
    let form: ResolveForm = checked_form(&session, &body)?;
    let (id, cid) = (id_of(&id)?, id_of(&cid)?);
    let resolution: Resolution = form.resolution.parse().map_err(|_| {
        ConsoleError::Invalid(format!(
            "resolution: {:?} is neither ours nor theirs",
            form.resolution
        ))
    })?;
    blocking(&console, move |app| {
        Ok(app.resolve_conflict(id, cid, resolution)?)
    })
    .await?;
    Ok(Redirect::to(&format!("/mirrors/{id}#conflicts")))
}

/// `POST /runs/{id}/cancel`: asks the run to stop; its page shows when it has.
pub async fn cancel(
    session: Session,
    State(console): State<ConsoleState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Redirect, ConsoleError> {
    let run_id = plain_form(&session, &body, &id)?;
    blocking(&console, move |app| Ok(app.cancel_run(run_id)?)).await?;
    Ok(Redirect::to(&format!("/runs/{run_id}")))
}
