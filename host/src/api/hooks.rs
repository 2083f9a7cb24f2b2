//! `POST /hooks/github`, `POST /hooks/gitlab`: the HTTP side of push webhooks.
//! Headers become a `webhooks::Delivery`; what `webhooks` makes of it becomes
//! the answer, and is counted.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::json::ApiJson;
use super::{ApiError, AppState, blocking};
use crate::webhooks::{Delivery, Outcome, Provider, WebhookError};

type Answer = Result<(StatusCode, Json<Value>), ApiError>;

/// `POST /hooks/github`.
#[utoipa::path(post, path = "/github", tag = "webhooks", security(()),
    params(
        ("X-GitHub-Event" = String, Header, min_length = 1, description = "push or ping"),
        ("X-GitHub-Delivery" = String, Header, min_length = 1, description = "The delivery's id"),
        ("X-Hub-Signature-256" = String, Header, description = "sha256=<HMAC-SHA256 of the body>")),
    request_body(content = Object, description = "GitHub push or ping payload, signed in X-Hub-Signature-256"), responses((status = 422, description = "A header is missing or malformed; `field` names it", body = crate::api::ErrorBody), (status = 202, body = serde_json::Value), (status = 200, description = "ping, duplicate or ignored event", body = serde_json::Value), (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody), (status = 413)))]
pub async fn github(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let outcome = (|| {
        let body = body.map_err(bad_body)?;
        let delivery = Delivery {
            provider: Provider::GitHub,
            event: header(&headers, "x-github-event")?,
            id: header(&headers, "x-github-delivery")?,
            proof: proof(
                &headers,
                "x-hub-signature-256",
                "missing X-Hub-Signature-256",
            )?,
            body: &body,
        };
        Ok(app.webhooks().receive(&delivery)?)
    })();
    answer(Provider::GitHub, outcome)
}

/// `POST /hooks/gitlab`.
#[utoipa::path(post, path = "/gitlab", tag = "webhooks", security(()),
    params(
        ("X-Gitlab-Event" = String, Header, min_length = 1, description = "Push Hook or Tag Push Hook"),
        ("X-Gitlab-Event-UUID" = String, Header, min_length = 1, description = "The delivery's id (or Idempotency-Key)"),
        ("X-Gitlab-Token" = String, Header, description = "The project's webhook secret")),
    request_body(content = Object, description = "GitLab Push Hook or Tag Push Hook payload, with X-Gitlab-Token"), responses((status = 422, description = "A header is missing or malformed; `field` names it", body = crate::api::ErrorBody), (status = 202, body = serde_json::Value), (status = 200, description = "duplicate or ignored event", body = serde_json::Value), (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody), (status = 413)))]
pub async fn gitlab(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let outcome = (|| {
        let body = body.map_err(bad_body)?;
        let event = header(&headers, "x-gitlab-event")?;
        let id = headers
            .get("idempotency-key")
            .or_else(|| headers.get("x-gitlab-event-uuid"))
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| {
                ApiError::invalid("X-Gitlab-Event-UUID", "missing delivery id header")
            })?;
        let delivery = Delivery {
            provider: Provider::GitLab,
            event,
            id,
            proof: proof(&headers, "x-gitlab-token", "missing X-Gitlab-Token")?,
            body: &body,
        };
        Ok(app.webhooks().receive(&delivery)?)
    })();
    answer(Provider::GitLab, outcome)
}

/// Counts a delivery by what became of it, and answers it.
fn answer(provider: Provider, outcome: Result<Outcome, ApiError>) -> Answer {
    let label = match &outcome {
        Ok(outcome) => outcome.label(),
        Err(e) => e.code,
    };
    crate::telemetry::webhook_delivery(provider.as_str(), label);
    outcome.map(|outcome| match outcome {
        Outcome::Queued(runs) => (StatusCode::ACCEPTED, Json(json!({ "queued": runs }))),
        Outcome::UpToDate => (StatusCode::OK, Json(json!({"up_to_date": true}))),
        Outcome::Duplicate => (StatusCode::OK, Json(json!({"duplicate": true}))),
        Outcome::Pong => (StatusCode::OK, Json(json!({"pong": true}))),
        Outcome::Ignored(event) => (StatusCode::OK, Json(json!({ "ignored": event }))),
    })
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Malformed(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string())
            }
            WebhookError::UnknownRepository => ApiError::not_found(e.to_string()),
            WebhookError::Unauthenticated(message) => unauthorized(message),
            WebhookError::Store(e) => e.into(),
        }
    }
}

fn bad_body(e: BytesRejection) -> ApiError {
    ApiError::new(e.status(), "bad_body", e.body_text())
}

/// A header the delivery must carry; empty counts as missing.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| ApiError::invalid(name.to_string(), "missing header"))
}

/// The header carrying the delivery's signature or token; its absence is an
/// authentication failure, not bad input.
fn proof<'a>(headers: &'a HeaderMap, name: &str, missing: &str) -> Result<&'a str, ApiError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized(missing))
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretBody {
    secret: String,
}

/// `PUT /api/v1/projects/{id}/webhook {"secret"}`: sets the project's webhook
/// secret (GitHub's secret, GitLab's token), stored sealed, never shown again.
#[utoipa::path(put, path = "/projects/{id}/webhook", tag = "projects", params(("id" = String, Path, description = "Project id, URL-encoded (group%2Fname)", pattern = "^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)+$", max_length = 255)), request_body = SecretBody, responses((status = 200, body = serde_json::Value), (status = 422, description = "A field is not acceptable; `field` names it", body = crate::api::ErrorBody)))]
pub async fn set_secret(
    State(state): State<AppState>,
    Path(project_id): Path<String>,
    ApiJson(body): ApiJson<SecretBody>,
) -> Result<Json<Value>, ApiError> {
    blocking(state, move |app| {
        app.set_webhook_secret(&project_id, &body.secret)?;
        Ok(Json(
            json!({"project_id": project_id, "webhook_secret": "set"}),
        ))
    })
    .await
}
