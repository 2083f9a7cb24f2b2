//! Push webhooks from GitHub and GitLab as sync triggers.
//!
//! A delivery names its repository; the pull mirrors whose URL is that
//! repository (`sync::remote::normalize`) are candidates. It is acted on only if
//! it authenticates against the webhook secret of a candidate's project (GitHub:
//! HMAC-SHA256 of the raw body, compared in constant time; GitLab: the token,
//! compared in constant time), and only once per delivery id. Acting is queueing:
//! the answer goes out before any git work starts.

mod routing;

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::api::{ApiError, App, AppState};
use crate::store::{self, Mirror, StoreError};

pub use routing::RoutingCache;

/// Deliveries larger than this are refused (GitHub caps payloads at 25 MB).
pub const MAX_BODY_BYTES: usize = 25 << 20;

/// The part of a GitHub delivery mirrorhost reads; everything else is skipped
/// without being built.
#[derive(Debug, Default, Deserialize)]
struct GitHubPayload {
    #[serde(default)]
    repository: Urls,
}

/// The part of a GitLab delivery mirrorhost reads.
#[derive(Debug, Default, Deserialize)]
struct GitLabPayload {
    #[serde(default)]
    project: Urls,
    #[serde(default)]
    repository: Urls,
}

/// Every URL field either forge uses for a repository.
#[derive(Debug, Default, Deserialize)]
struct Urls {
    clone_url: Option<String>,
    git_url: Option<String>,
    ssh_url: Option<String>,
    html_url: Option<String>,
    url: Option<String>,
    git_http_url: Option<String>,
    git_ssh_url: Option<String>,
}

impl Urls {
    fn into_vec(self) -> Vec<String> {
        [
            self.clone_url,
            self.git_url,
            self.ssh_url,
            self.html_url,
            self.url,
            self.git_http_url,
            self.git_ssh_url,
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// How a delivery proves where it comes from.
enum Proof<'a> {
    /// `X-Hub-Signature-256: sha256=<hex>` over the raw body.
    GitHubSignature { signature: &'a str, body: &'a [u8] },
    /// `X-Gitlab-Token`: the secret itself.
    GitLabToken(&'a str),
}

impl Proof<'_> {
    fn holds_for(&self, secret: &[u8]) -> bool {
        match self {
            Proof::GitHubSignature { signature, body } => {
                let Some(expected) = signature
                    .strip_prefix("sha256=")
                    .and_then(|h| hex::decode(h).ok())
                else {
                    return false;
                };
                let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
                    return false;
                };
                mac.update(body);
                mac.verify_slice(&expected).is_ok()
            }
            Proof::GitLabToken(token) => token.as_bytes().ct_eq(secret).into(),
        }
    }
}

type Answer = Result<(StatusCode, Json<Value>), ApiError>;

/// What became of a delivery that was not refused.
#[derive(Debug)]
enum Outcome {
    /// Runs queued for the proven mirrors (202).
    Queued(Vec<i64>),
    /// A delivery id seen before: nothing done again.
    Duplicate,
    /// GitHub's ping, authenticated.
    Pong,
    /// An event that is not a push, named.
    Ignored(String),
}

impl Outcome {
    /// The `result` label of the deliveries metric.
    fn label(&self) -> &'static str {
        match self {
            Outcome::Queued(_) => "queued",
            Outcome::Duplicate => "duplicate",
            Outcome::Pong => "ping",
            Outcome::Ignored(_) => "ignored",
        }
    }

    fn into_answer(self) -> (StatusCode, Json<Value>) {
        match self {
            Outcome::Queued(runs) => (StatusCode::ACCEPTED, Json(json!({ "queued": runs }))),
            Outcome::Duplicate => (StatusCode::OK, Json(json!({"duplicate": true}))),
            Outcome::Pong => (StatusCode::OK, Json(json!({"pong": true}))),
            Outcome::Ignored(event) => (StatusCode::OK, Json(json!({ "ignored": event }))),
        }
    }
}

/// `POST /hooks/github`.
#[utoipa::path(post, path = "/github", tag = "webhooks", request_body(content = serde_json::Value, description = "GitHub push or ping payload, signed in X-Hub-Signature-256"), responses((status = 202, body = serde_json::Value), (status = 200, description = "ping, duplicate or ignored event", body = serde_json::Value), (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody), (status = 413)))]
pub async fn github(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    answer("github", receive_github(&app, &headers, body))
}

/// `POST /hooks/gitlab`.
#[utoipa::path(post, path = "/gitlab", tag = "webhooks", request_body(content = serde_json::Value, description = "GitLab Push Hook or Tag Push Hook payload, with X-Gitlab-Token"), responses((status = 202, body = serde_json::Value), (status = 200, description = "duplicate or ignored event", body = serde_json::Value), (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody), (status = 413)))]
pub async fn gitlab(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    answer("gitlab", receive_gitlab(&app, &headers, body))
}

/// Counts a delivery by what became of it, and answers it.
fn answer(provider: &'static str, outcome: Result<Outcome, ApiError>) -> Answer {
    let label = match &outcome {
        Ok(outcome) => outcome.label(),
        Err(e) => e.code,
    };
    crate::telemetry::webhook_delivery(provider, label);
    outcome.map(Outcome::into_answer)
}

fn receive_github(
    app: &App,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Outcome, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), "bad_body", e.body_text()))?;
    let event = header(headers, "x-github-event")?;
    let delivery = header(headers, "x-github-delivery")?.to_string();
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized("missing X-Hub-Signature-256"))?
        .to_string();
    let payload: GitHubPayload = parse(&body)?;
    let urls = payload.repository.into_vec();
    let is_push = match event {
        "push" => true,
        "ping" => false,
        other => return Ok(Outcome::Ignored(other.to_string())),
    };
    deliver(app, "github", &delivery, &urls, is_push, |secret| {
        Proof::GitHubSignature {
            signature: &signature,
            body: &body,
        }
        .holds_for(secret)
    })
}

fn receive_gitlab(
    app: &App,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Outcome, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), "bad_body", e.body_text()))?;
    let event = header(headers, "x-gitlab-event")?;
    let delivery = headers
        .get("idempotency-key")
        .or_else(|| headers.get("x-gitlab-event-uuid"))
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::invalid("X-Gitlab-Event-UUID", "missing delivery id header"))?
        .to_string();
    let token = headers
        .get("x-gitlab-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized("missing X-Gitlab-Token"))?
        .to_string();
    let payload: GitLabPayload = parse(&body)?;
    let mut urls = payload.project.into_vec();
    urls.extend(payload.repository.into_vec());
    if !matches!(event, "Push Hook" | "Tag Push Hook") {
        return Ok(Outcome::Ignored(event.to_string()));
    }
    deliver(app, "gitlab", &delivery, &urls, true, |secret| {
        Proof::GitLabToken(&token).holds_for(secret)
    })
}

/// Finds the delivery's pull mirrors, authenticates it against their projects'
/// secrets, records it once, and queues the mirrors of the projects it proved.
///
/// Runs on the async worker: a few short indexed queries and one HMAC, where the
/// hop to the blocking pool cost more than the work.
fn deliver(
    app: &App,
    source: &str,
    delivery: &str,
    urls: &[String],
    is_push: bool,
    proves: impl Fn(&[u8]) -> bool,
) -> Result<Outcome, ApiError> {
    let candidates = app.webhook_routing.candidates(&app.store, urls)?;
    if candidates.is_empty() {
        return Err(ApiError::not_found("no pull mirror of this repository"));
    }
    let proven: Vec<&Arc<Mirror>> = candidates
        .iter()
        .filter(|(project, (_, sealed))| {
            let aad = store::webhooks::aad(project);
            sealed
                .as_ref()
                .and_then(|sealed| app.master_key.open_bytes(&aad, sealed).ok())
                .is_some_and(|secret| proves(&secret))
        })
        .flat_map(|(_, (mirrors, _))| mirrors)
        .collect();
    if proven.is_empty() {
        return Err(unauthorized(
            "signature or token does not match the project's webhook secret",
        ));
    }
    if !is_push {
        return Ok(Outcome::Pong);
    }
    if app.webhook_routing.seen(source, delivery) {
        return Ok(Outcome::Duplicate);
    }
    // Record the delivery and queue its mirrors under one hold of the database.
    let runs = app
        .store
        .with(|c| -> Result<Option<Vec<i64>>, StoreError> {
            if !store::webhooks::first_delivery(c, source, delivery)? {
                return Ok(None);
            }
            let mut runs = Vec::new();
            for mirror in proven.iter().filter(|m| m.enabled) {
                runs.push(store::runs::enqueue(c, mirror.mirror_id, "webhook")?.run_id);
            }
            Ok(Some(runs))
        })?;
    app.webhook_routing.remember(source, delivery);
    let Some(runs) = runs else {
        return Ok(Outcome::Duplicate);
    };
    app.jobs.wake();
    tracing::info!(source, delivery = %delivery, runs = runs.len(), "webhook delivery queued");
    Ok(Outcome::Queued(runs))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretBody {
    secret: String,
}

/// `PUT /api/v1/projects/{id}/webhook {"secret"}`: sets the project's webhook
/// secret (GitHub's secret, GitLab's token), stored sealed, never shown again.
#[utoipa::path(put, path = "/projects/{id}/webhook", tag = "projects", params(("id" = String, Path, description = "Project id, URL-encoded (group%2Fname)")), request_body = SecretBody, responses((status = 200, body = serde_json::Value), (status = 422, description = "A field is not acceptable; `field` names it", body = crate::api::ErrorBody)))]
pub async fn set_secret(
    State(app): State<AppState>,
    Path(project_id): Path<String>,
    crate::api::ApiJson(body): crate::api::ApiJson<SecretBody>,
) -> Result<Json<Value>, ApiError> {
    crate::api::check_project_id(&project_id)?;
    if body.secret.len() < 8 {
        return Err(ApiError::invalid("secret", "at least 8 characters"));
    }
    let app: Arc<App> = app;
    tokio::task::spawn_blocking(move || {
        store_secret(&app, &project_id, &body.secret)?;
        Ok(Json(
            json!({"project_id": project_id, "webhook_secret": "set"}),
        ))
    })
    .await
    .map_err(ApiError::internal)?
}

/// Seals a project's webhook secret under the master key, bound to the
/// project, and stores it. Blocking.
pub fn store_secret(app: &App, project_id: &str, secret: &str) -> Result<(), ApiError> {
    let aad = store::webhooks::aad(project_id);
    let sealed = app
        .master_key
        .seal_bytes(&aad, secret.as_bytes())
        .map_err(ApiError::internal)?;
    let key_id = app.master_key.id();
    app.store
        .with(|c| store::webhooks::set_secret(c, project_id, &sealed, &key_id))?;
    Ok(())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::invalid(name.to_string(), "missing header"))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("malformed JSON: {e}"),
        )
    })
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_signatures_are_checked_over_the_raw_body() {
        let body = br#"{"zen": "Keep it logically awesome."}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret-hook").unwrap();
        mac.update(body);
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let proof = |signature: &str, body: &[u8], secret: &[u8]| {
            Proof::GitHubSignature { signature, body }.holds_for(secret)
        };
        assert!(proof(&signature, body, b"s3cret-hook"));
        assert!(!proof(&signature, body, b"other-secret"));
        assert!(!proof(&signature, b"{}", b"s3cret-hook"));
        assert!(!proof("sha1=abc", body, b"s3cret-hook"));
        assert!(!proof("sha256=zz", body, b"s3cret-hook"));
    }

    #[test]
    fn gitlab_tokens_must_match_exactly() {
        assert!(Proof::GitLabToken("tok-123").holds_for(b"tok-123"));
        assert!(!Proof::GitLabToken("tok-12").holds_for(b"tok-123"));
        assert!(!Proof::GitLabToken("").holds_for(b"tok-123"));
    }
}
