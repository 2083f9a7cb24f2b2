//! Push webhooks from GitHub and GitLab as sync triggers: the part that knows
//! nothing of HTTP. `api::hooks` reads the headers into a [`Delivery`] and
//! turns the [`Outcome`] or [`WebhookError`] into an answer.
//!
//! A delivery names its repository; the pull mirrors whose URL is that
//! repository (`sync::remote::normalize`) are candidates. It is acted on only if
//! it authenticates against the webhook secret of a candidate's project (GitHub:
//! HMAC-SHA256 of the raw body, compared in constant time; GitLab: the token,
//! compared in constant time), and only once per delivery id. Acting is queueing:
//! the answer goes out before any git work starts.

mod routing;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::jobs::Queue;
use crate::secrets::MasterKey;
use crate::store::{self, Mirror, Store, StoreError, Trigger};

pub use routing::RoutingCache;

/// Deliveries larger than this are refused (GitHub caps payloads at 25 MB).
pub const MAX_BODY_BYTES: usize = 25 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("malformed JSON: {0}")]
    Malformed(serde_json::Error),
    #[error("no pull mirror of this repository")]
    UnknownRepository,
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which forge sent a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    GitLab,
}

impl Provider {
    /// The name deliveries are recorded and counted under.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
        }
    }
}

/// A delivery as its headers and body describe it.
#[derive(Debug)]
pub struct Delivery<'a> {
    pub provider: Provider,
    /// `X-GitHub-Event` or `X-Gitlab-Event`.
    pub event: &'a str,
    /// `X-GitHub-Delivery`, or GitLab's idempotency key / event UUID.
    pub id: &'a str,
    /// `X-Hub-Signature-256` (GitHub) or `X-Gitlab-Token` (GitLab).
    pub proof: &'a str,
    pub body: &'a [u8],
}

/// What became of a delivery that was not refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Runs queued for the proven mirrors.
    Queued(Vec<i64>),
    /// Every proven mirror already holds what the push made of its ref.
    UpToDate,
    /// A delivery id seen before: nothing done again.
    Duplicate,
    /// GitHub's ping, authenticated.
    Pong,
    /// An event that is not a push, named.
    Ignored(String),
}

impl Outcome {
    /// The `result` label of the deliveries metric.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Queued(_) => "queued",
            Outcome::UpToDate => "up_to_date",
            Outcome::Duplicate => "duplicate",
            Outcome::Pong => "ping",
            Outcome::Ignored(_) => "ignored",
        }
    }
}

/// How many deliveries came to what since the last summary: accepted
/// deliveries log at debug level, and a summary at info once a minute
/// (`service::background`), so a flood cannot fill the log.
#[derive(Debug, Default)]
pub struct Tally {
    queued: AtomicU64,
    up_to_date: AtomicU64,
    duplicate: AtomicU64,
}

impl Tally {
    fn count(&self, outcome: &Outcome) {
        let counter = match outcome {
            Outcome::Queued(_) => &self.queued,
            Outcome::UpToDate => &self.up_to_date,
            Outcome::Duplicate => &self.duplicate,
            Outcome::Pong | Outcome::Ignored(_) => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (queued, up to date, duplicate) since the last call.
    pub fn take(&self) -> (u64, u64, u64) {
        (
            self.queued.swap(0, Ordering::Relaxed),
            self.up_to_date.swap(0, Ordering::Relaxed),
            self.duplicate.swap(0, Ordering::Relaxed),
        )
    }
}

/// What receiving a delivery needs.
#[derive(Debug, Clone, Copy)]
pub struct Receiver<'a> {
    pub store: &'a Store,
    pub master_key: &'a MasterKey,
    pub routing: &'a RoutingCache,
    pub queue: &'a Queue,
    /// Where the mirrors' repositories are: a push they already hold queues
    /// nothing.
    pub repos_dir: &'a Path,
    pub tally: &'a Tally,
    /// How far apart a mirror's webhook runs start, at the least.
    pub spacing: Duration,
}

impl Receiver<'_> {
    /// Authenticates `delivery`, records it once and queues its mirrors.
    ///
    /// Runs on the async worker: a few short indexed queries and one HMAC, where
    /// the hop to the blocking pool cost more than the work.
    pub fn receive(&self, delivery: &Delivery<'_>) -> Result<Outcome, WebhookError> {
        let outcome = self.outcome(delivery)?;
        self.tally.count(&outcome);
        Ok(outcome)
    }

    fn outcome(&self, delivery: &Delivery<'_>) -> Result<Outcome, WebhookError> {
        let (urls, kind, pushed) = match delivery.provider {
            Provider::GitHub => {
                let payload: GitHubPayload = parse(delivery.body)?;
                let kind = match delivery.event {
                    "push" => Kind::Push,
                    "ping" => Kind::Ping,
                    other => return Ok(Outcome::Ignored(other.to_string())),
                };
                let pushed = pushed_tip(payload.pushed_ref, payload.after);
                (payload.repository.into_vec(), kind, pushed)
            }
            Provider::GitLab => {
                let payload: GitLabPayload = parse(delivery.body)?;
                if !matches!(delivery.event, "Push Hook" | "Tag Push Hook") {
                    return Ok(Outcome::Ignored(delivery.event.to_string()));
                }
                let mut urls = payload.project.into_vec();
                urls.extend(payload.repository.into_vec());
                (
                    urls,
                    Kind::Push,
                    pushed_tip(payload.pushed_ref, payload.after),
                )
            }
        };
        let proven = self.proven(delivery, &urls)?;
        if kind == Kind::Ping {
            return Ok(Outcome::Pong);
        }
        self.queue_once(delivery, &proven, pushed.as_ref())
    }

    /// Whether `mirror`'s repository already holds the pushed ref as the push
    /// left it (at `after`, or gone for a deletion).
    fn holds(&self, mirror: &Mirror, (name, after): &(String, git2::Oid)) -> bool {
        let path = crate::sync::repo_path(self.repos_dir, &mirror.project_id);
        let Ok(repo) = git2::Repository::open_bare(path) else {
            return false;
        };
        match repo.refname_to_id(name) {
            Ok(held) => held == *after,
            Err(_) => after.is_zero(),
        }
    }

    /// The candidates' mirrors of the projects whose secret the delivery proves.
    fn proven(
        &self,
        delivery: &Delivery<'_>,
        urls: &[String],
    ) -> Result<Vec<Arc<Mirror>>, WebhookError> {
        let candidates = self.routing.candidates(self.store, urls)?;
        if candidates.is_empty() {
            return Err(WebhookError::UnknownRepository);
        }
        let proof = Proof::of(delivery);
        let proven: Vec<Arc<Mirror>> = candidates
            .into_iter()
            .filter(|(project, (_, sealed))| {
                let aad = store::webhooks::aad(project);
                sealed
                    .as_ref()
                    .and_then(|sealed| self.master_key.open_bytes(&aad, sealed).ok())
                    .is_some_and(|secret| proof.holds_for(&secret))
            })
            .flat_map(|(_, (mirrors, _))| mirrors)
            .collect();
        if proven.is_empty() {
            return Err(WebhookError::Unauthenticated(
                "signature or token does not match the project's webhook secret",
            ));
        }
        Ok(proven)
    }

    /// Records the delivery and queues its mirrors under one hold of the database.
    /// A push a mirror already holds (a flood of deliveries for one push, or
    /// a push the reconciliation sweep caught first) queues nothing for it.
    fn queue_once(
        &self,
        delivery: &Delivery<'_>,
        proven: &[Arc<Mirror>],
        pushed: Option<&(String, git2::Oid)>,
    ) -> Result<Outcome, WebhookError> {
        let source = delivery.provider.as_str();
        if self.routing.seen(source, delivery.id) {
            return Ok(Outcome::Duplicate);
        }
        let enabled: Vec<&Arc<Mirror>> = proven.iter().filter(|m| m.enabled).collect();
        let behind: Vec<&Arc<Mirror>> = enabled
            .iter()
            .copied()
            .filter(|m| !pushed.is_some_and(|p| self.holds(m, p)))
            .collect();
        let runs = self
            .store
            .with(|c| -> Result<Option<Vec<i64>>, StoreError> {
                if !store::webhooks::first_delivery(c, source, delivery.id)? {
                    return Ok(None);
                }
                let mut runs = Vec::new();
                for mirror in &behind {
                    if store::schedules::hard_failed(c, mirror.mirror_id)? {
                        continue;
                    }
                    let queued = store::runs::enqueue_spaced(
                        c,
                        mirror.mirror_id,
                        Trigger::Webhook,
                        Some(self.spacing),
                    )?;
                    runs.push(queued.run_id);
                }
                Ok(Some(runs))
            })?;
        self.routing.remember(source, delivery.id);
        let Some(runs) = runs else {
            return Ok(Outcome::Duplicate);
        };
        if pushed.is_some() && !enabled.is_empty() && behind.is_empty() {
            tracing::debug!(source, delivery = %delivery.id, "webhook delivery: mirrors up to date");
            return Ok(Outcome::UpToDate);
        }
        self.queue.wake();
        tracing::debug!(source, delivery = %delivery.id, runs = runs.len(), "webhook delivery queued");
        Ok(Outcome::Queued(runs))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Push,
    Ping,
}

/// The part of a GitHub delivery mirrorhost reads; everything else is skipped
/// without being built.
#[derive(Debug, Default, Deserialize)]
struct GitHubPayload {
    #[serde(default)]
    repository: Urls,
    #[serde(rename = "ref")]
    pushed_ref: Option<String>,
    after: Option<String>,
}

/// The part of a GitLab delivery mirrorhost reads.
#[derive(Debug, Default, Deserialize)]
struct GitLabPayload {
    #[serde(default)]
    project: Urls,
    #[serde(default)]
    repository: Urls,
    #[serde(rename = "ref")]
    pushed_ref: Option<String>,
    after: Option<String>,
}

/// The ref a push moved and its new tip (zeros for a deletion), when the
/// payload names both well; both forges call them `ref` and `after`.
fn pushed_tip(name: Option<String>, after: Option<String>) -> Option<(String, git2::Oid)> {
    let name = name.filter(|n| crate::sync::refs::valid_name(n))?;
    let after = git2::Oid::from_str(&after?).ok()?;
    Some((name, after))
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

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, WebhookError> {
    serde_json::from_slice(body).map_err(WebhookError::Malformed)
}

/// How a delivery proves where it comes from.
enum Proof<'a> {
    /// `X-Hub-Signature-256: sha256=<hex>` over the raw body.
    GitHubSignature { signature: &'a str, body: &'a [u8] },
    /// `X-Gitlab-Token`: the secret itself.
    GitLabToken(&'a str),
}

impl<'a> Proof<'a> {
    fn of(delivery: &Delivery<'a>) -> Self {
        match delivery.provider {
            Provider::GitHub => Proof::GitHubSignature {
                signature: delivery.proof,
                body: delivery.body,
            },
            Provider::GitLab => Proof::GitLabToken(delivery.proof),
        }
    }

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
