//! The LFS batch API (basic transfer adapter) as a client: ask the server
//! what to do with some objects (`POST <endpoint>/objects/batch`), then
//! download, upload and verify them at the `href`s it answers. Speaks
//! through reqwest on a runtime of its own, driven from the run's thread:
//! every wait races the run's cancel flag and deadline, every chunk goes
//! through the run's throttle and progress.

use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::{StatusCode, header};
use serde::{Deserialize, Serialize};

use super::objects::Incoming;
use super::pointer::Pointer;
use crate::sync::{Timeouts, remote};

/// What a transfer asks of the run it belongs to.
pub trait Pace {
    /// Whether the run may go on (not cancelled, not past its deadline).
    fn may_go_on(&self) -> bool;
    /// `bytes` more moved by this LFS phase: for the throttle (which may
    /// block) and the progress figures.
    fn moved(&self, bytes: u64);
}

/// How a client reaches its server.
pub struct Settings<'a> {
    /// The connect and stall limits (the run's deadline is the run's).
    pub timeouts: Timeouts,
    /// `Some(url)` through that proxy, `Some("")`/direct as `None`.
    pub proxy: Option<&'a str>,
    /// Whether to leave proxies to the environment (`HTTPS_PROXY`...).
    pub proxy_from_environment: bool,
    pub ca_pem: Option<&'a str>,
    /// Client certificate chain and key, PEM.
    pub identity: Option<(&'a [u8], &'a [u8])>,
    /// Basic credentials for the endpoint's own origin.
    pub login: Option<(String, String)>,
    /// Headers every batch request carries (from `git-lfs-authenticate`).
    pub headers: HashMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("the LFS client cannot be set up: {0}")]
    Setup(String),
    #[error("{0}")]
    Server(String),
    #[error("stopped")]
    Stopped,
}

/// What the batch asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Download,
    Upload,
}

#[derive(Serialize)]
struct BatchRequest<'a> {
    operation: Operation,
    transfers: [&'static str; 1],
    objects: Vec<ObjectSpec>,
    hash_algo: &'static str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<RefSpec<'a>>,
}

#[derive(Serialize)]
struct RefSpec<'a> {
    name: &'a str,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct ObjectSpec {
    oid: String,
    size: u64,
}

/// A batch answer, or a 404 for the whole of it (with the server's words).
enum Batched {
    Found(BatchResponse),
    Missing(String),
}
use Batched::{Found, Missing};

#[derive(Deserialize, Debug)]
struct BatchResponse {
    #[serde(default)]
    transfer: Option<String>,
    objects: Vec<ObjectAnswer>,
}

/// The server's answer for one object.
#[derive(Deserialize, Debug, Clone)]
pub struct ObjectAnswer {
    oid: String,
    #[serde(default)]
    actions: HashMap<String, Action>,
    #[serde(default)]
    error: Option<ObjectError>,
}

#[derive(Deserialize, Debug, Clone)]
struct ObjectError {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

/// Where and how to move one object.
#[derive(Deserialize, Debug, Clone)]
pub struct Action {
    href: String,
    #[serde(default)]
    header: HashMap<String, String>,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    expires_at: Option<String>,
    /// When the answer came, for `expires_in`.
    #[serde(skip, default = "now")]
    received: chrono::DateTime<chrono::Utc>,
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// How long before its stated expiry an action is taken as expired: a
/// transfer that starts then would not finish in time.
const EXPIRY_MARGIN_SECONDS: i64 = 5;

impl Action {
    /// Whether the server's permission to use `href` has run out.
    pub fn expired(&self) -> bool {
        let soon = chrono::Utc::now() + chrono::Duration::seconds(EXPIRY_MARGIN_SECONDS);
        let by_in = self
            .expires_in
            .filter(|s| *s != 0)
            .is_some_and(|s| self.received + chrono::Duration::seconds(s) <= soon);
        let by_at = self
            .expires_at
            .as_deref()
            .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
            .is_some_and(|at| at <= soon);
        by_in || by_at
    }
}

/// One object's fate in a batch answer.
#[derive(Debug)]
pub enum Answer {
    /// Move it with these actions (`download`; or `upload` and maybe `verify`).
    Act(HashMap<String, Action>),
    /// Nothing to do (an upload the server already holds).
    Nothing,
    /// The server refused it: its code and message.
    Refused(i64, String),
}

/// A batch API client for one endpoint.
pub struct Client {
    http: reqwest::Client,
    endpoint: url::Url,
    login: Option<(String, String)>,
    headers: HashMap<String, String>,
    timeouts: Timeouts,
    runtime: tokio::runtime::Runtime,
}

/// How often a transfer waiting on the network looks at the run's flag.
const LOOK_EVERY: Duration = Duration::from_millis(100);
/// Attempts at one request that the server answers 429 or 503.
const ATTEMPTS: u32 = 5;
/// The longest `Retry-After` waited for; longer fails the request.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The largest answer read whole (a batch answer of [`BATCH_SIZE`] objects,
/// each with an href and a few headers, is tens of KiB).
const MAX_ANSWER_BYTES: usize = 8 << 20;
/// Small objects downloaded at once, as git-lfs's `lfs.concurrenttransfers`
/// default: their cost is the request's round trip, which runs in parallel.
pub const CONCURRENT: usize = 8;
/// Objects from this size on go one at a time: their cost is bytes, and one
/// stream moves them as fast as eight (measured against giftless: 200 MiB
/// in 40 objects took 1.28x git-lfs's time eight at a time, 0.96x one at a
/// time; 400 objects of 64 KiB 0.90x eight at a time).
pub const LARGE_OBJECT_BYTES: u64 = 1 << 20;
/// One object to download: its place in the caller's list, where from, and
/// the file it goes into.
#[derive(Debug)]
pub struct Fetch {
    pub index: usize,
    pub action: Action,
    pub into: Incoming,
}

/// A download and how it went.
pub type Fetched = (Fetch, Result<(), String>);

/// Objects per batch request, as git-lfs sends them.
pub const BATCH_SIZE: usize = 100;

impl Client {
    pub fn new(endpoint: url::Url, s: Settings<'_>) -> Result<Self, BatchError> {
        let setup = |e: reqwest::Error| BatchError::Setup(e.to_string());
        let mut builder = reqwest::Client::builder()
            .connect_timeout(s.timeouts.connect)
            .read_timeout(s.timeouts.stall)
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("mirrorhost/", env!("CARGO_PKG_VERSION")));
        builder = match (s.proxy, s.proxy_from_environment) {
            (Some(proxy), _) if !proxy.is_empty() => {
                builder.proxy(reqwest::Proxy::all(proxy).map_err(setup)?)
            }
            (_, true) => builder,
            _ => builder.no_proxy(),
        };
        let bundles = [
            crate::sync::tls::trusted_bundle(),
            s.ca_pem.map(|p| p.as_bytes().to_vec()),
        ];
        for pem in bundles.iter().flatten() {
            for certificate in reqwest::Certificate::from_pem_bundle(pem).map_err(setup)? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let Some((chain, key)) = s.identity {
            builder =
                builder.identity(reqwest::Identity::from_pkcs8_pem(chain, key).map_err(setup)?);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BatchError::Setup(e.to_string()))?;
        Ok(Self {
            http: builder.build().map_err(setup)?,
            endpoint,
            login: s.login,
            headers: s.headers,
            timeouts: s.timeouts,
            runtime,
        })
    }

    /// Runs `work` to its end, or until the run may not go on.
    fn drive<T>(
        &self,
        pace: &dyn Pace,
        work: impl Future<Output = Result<T, BatchError>>,
    ) -> Result<T, BatchError> {
        self.runtime.block_on(async {
            tokio::select! {
                done = work => done,
                () = stopped(pace) => Err(BatchError::Stopped),
            }
        })
    }

    /// The server's answer for each of `objects`, in their order.
    pub fn batch(
        &self,
        pace: &dyn Pace,
        operation: Operation,
        objects: &[Pointer],
        reference: Option<&str>,
    ) -> Result<Vec<Answer>, BatchError> {
        let request = BatchRequest {
            operation,
            transfers: ["basic"],
            objects: objects
                .iter()
                .map(|p| ObjectSpec {
                    oid: p.oid.to_string(),
                    size: p.size,
                })
                .collect(),
            hash_algo: "sha256",
            reference: reference.map(|name| RefSpec { name }),
        };
        let body = serde_json::to_vec(&request).map_err(|e| BatchError::Setup(e.to_string()))?;
        let url = self.batch_url();
        let response = self.drive(pace, async {
            let response = self
                .send(|| {
                    let mut request = self.authorized(self.http.post(url.clone()), &url);
                    for (name, value) in &self.headers {
                        request = request.header(name, value);
                    }
                    request
                        .header(header::ACCEPT, LFS_JSON)
                        .header(header::CONTENT_TYPE, LFS_JSON)
                        .body(body.clone())
                })
                .await?;
            let status = response.status();
            let text = self.read_at_most(response, MAX_ANSWER_BYTES).await?;
            // Some servers (giftless) answer a download batch none of whose
            // objects they hold with a 404 for the whole batch: each object
            // is missing, which the mirror's `lfs_missing` decides about.
            if status == StatusCode::NOT_FOUND && operation == Operation::Download {
                return Ok(Missing(said(&text)));
            }
            if !status.is_success() {
                return Err(BatchError::Server(format!(
                    "the LFS server at {} answered {status} to the batch request{}",
                    self.shown(),
                    said(&text)
                )));
            }
            serde_json::from_slice::<BatchResponse>(&text).map(Found).map_err(|e| {
                BatchError::Server(format!(
                    "the LFS server at {} answered the batch request with something that is not a batch answer: {e}",
                    self.shown()
                ))
            })
        })?;
        let response = match response {
            Found(response) => response,
            Missing(said) => {
                let why = format!("the LFS server does not have it (404{said})");
                return Ok(objects
                    .iter()
                    .map(|_| Answer::Refused(0, why.clone()))
                    .collect());
            }
        };
        if response.transfer.as_deref().is_some_and(|t| t != "basic") {
            return Err(BatchError::Server(format!(
                "the LFS server at {} chose the transfer adapter {:?}; only basic is spoken",
                self.shown(),
                response.transfer.unwrap_or_default()
            )));
        }
        Ok(in_order(objects, response.objects))
    }

    /// Downloads `fetches`, `at_once` at a time, each checked as it comes;
    /// each with how it went, in the order they end. `Err` only when the
    /// run was stopped (every file is dropped then).
    pub fn download_many(
        &self,
        pace: &dyn Pace,
        fetches: Vec<Fetch>,
        at_once: usize,
    ) -> Result<Vec<Fetched>, BatchError> {
        self.drive(pace, async {
            Ok(futures_util::stream::iter(fetches)
                .map(|mut fetch| async {
                    let done = self.fetch_into(pace, &fetch.action, &mut fetch.into).await;
                    (fetch, done)
                })
                .buffer_unordered(at_once.max(1))
                .collect()
                .await)
        })
    }

    async fn fetch_into(
        &self,
        pace: &dyn Pace,
        action: &Action,
        into: &mut Incoming,
    ) -> Result<(), String> {
        let url =
            url::Url::parse(&action.href).map_err(|e| format!("its href is not a URL: {e}"))?;
        let mut response = self
            .send(|| self.with_headers(self.http.get(url.clone()), action, &url))
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("its download answered {status}"));
        }
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport(&e).to_string())?
        {
            into.write(&chunk).map_err(|e| e.to_string())?;
            pace.moved(chunk.len() as u64);
        }
        Ok(())
    }

    /// Uploads `file` (of `size` bytes) to `action`.
    pub fn upload(
        &self,
        pace: &dyn Pace,
        action: &Action,
        mut file: std::fs::File,
        size: u64,
    ) -> Result<(), String> {
        let url =
            url::Url::parse(&action.href).map_err(|e| format!("its href is not a URL: {e}"))?;
        let outcome = self.drive(pace, async {
            let (sender, receiver) = tokio::sync::mpsc::channel(2);
            let request = self
                .with_headers(self.http.put(url.clone()), action, &url)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(header::CONTENT_LENGTH, size)
                .body(reqwest::Body::wrap_stream(Chunks(receiver)));
            let feed = async {
                let mut buffer = vec![0; 64 << 10];
                loop {
                    let n = match file.read(&mut buffer) {
                        Ok(0) => return,
                        Ok(n) => n,
                        Err(e) => {
                            let _ = sender.send(Err(e)).await;
                            return;
                        }
                    };
                    pace.moved(n as u64);
                    if sender
                        .send(Ok(Bytes::copy_from_slice(&buffer[..n])))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            };
            let (response, ()) = tokio::join!(request.send(), feed);
            let response = response.map_err(|e| self.transport(&e))?;
            let status = response.status();
            let text = self
                .read_at_most(response, MAX_ANSWER_BYTES)
                .await
                .unwrap_or_default();
            Ok(match status.is_success() {
                true => Ok(()),
                false => Err(format!("its upload answered {status}{}", said(&text))),
            })
        });
        flatten(outcome)
    }

    /// Tells the server an upload is complete, as `verify` asks.
    pub fn verify(
        &self,
        pace: &dyn Pace,
        action: &Action,
        pointer: &Pointer,
    ) -> Result<(), String> {
        let url = url::Url::parse(&action.href)
            .map_err(|e| format!("its verify href is not a URL: {e}"))?;
        let body =
            serde_json::json!({ "oid": pointer.oid.to_string(), "size": pointer.size }).to_string();
        let outcome = self.drive(pace, async {
            let response = self
                .send(|| {
                    self.with_headers(self.http.post(url.clone()), action, &url)
                        .header(header::ACCEPT, LFS_JSON)
                        .header(header::CONTENT_TYPE, LFS_JSON)
                        .body(body.clone())
                })
                .await?;
            let status = response.status();
            Ok(match status.is_success() {
                true => Ok(()),
                false => Err(format!("its verify answered {status}")),
            })
        });
        flatten(outcome)
    }

    /// Sends the request `build` makes, again after a 429 or 503 as long as
    /// `Retry-After` asks for a reasonable wait.
    async fn send(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, BatchError> {
        let mut attempt = 1;
        loop {
            let response = build().send().await.map_err(|e| self.transport(&e))?;
            let status = response.status();
            let busy = matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            );
            let wait = retry_after(&response);
            match (busy, wait) {
                (true, Some(wait)) if attempt < ATTEMPTS && wait <= MAX_RETRY_AFTER => {
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                _ => return Ok(response),
            }
        }
    }

    /// The body of `response`, refused once it passes `limit` bytes: a
    /// server's answer is read whole, so it must not be able to fill memory.
    async fn read_at_most(
        &self,
        mut response: reqwest::Response,
        limit: usize,
    ) -> Result<Vec<u8>, BatchError> {
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(&e))? {
            if body.len() + chunk.len() > limit {
                return Err(BatchError::Server(format!(
                    "the LFS server at {} answered with more than {} KiB",
                    self.shown(),
                    limit >> 10
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The request with the action's headers; with the mirror's credentials
    /// only if it goes to the endpoint's own origin and names none itself.
    fn with_headers(
        &self,
        mut request: reqwest::RequestBuilder,
        action: &Action,
        url: &url::Url,
    ) -> reqwest::RequestBuilder {
        for (name, value) in &action.header {
            request = request.header(name, value);
        }
        let own_authorization = action
            .header
            .keys()
            .any(|k| k.eq_ignore_ascii_case("authorization"));
        match own_authorization {
            true => request,
            false => self.authorized(request, url),
        }
    }

    fn authorized(
        &self,
        request: reqwest::RequestBuilder,
        url: &url::Url,
    ) -> reqwest::RequestBuilder {
        match &self.login {
            Some((user, password)) if url.origin() == self.endpoint.origin() => {
                request.basic_auth(user, Some(password))
            }
            _ => request,
        }
    }

    fn batch_url(&self) -> url::Url {
        let mut url = self.endpoint.clone();
        let path = format!("{}/objects/batch", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url
    }

    /// The endpoint as a person may see it.
    pub fn shown(&self) -> String {
        remote::redact(self.endpoint.as_str())
    }

    fn transport(&self, e: &reqwest::Error) -> BatchError {
        if e.is_timeout() {
            // Named by the limit, as a git transfer's timeout is.
            let said = if e.is_connect() {
                "connect timed out"
            } else {
                "timed out"
            };
            if let Some(words) = self.timeouts.explain(said) {
                return BatchError::Server(format!("the LFS server at {}: {words}", self.shown()));
            }
        }
        let what = if e.is_connect() {
            "could not connect"
        } else {
            "failed"
        };
        // reqwest's message names the URL, which may carry a signed query:
        // say what happened without it.
        let cause = std::error::Error::source(e)
            .map(ToString::to_string)
            .unwrap_or_default();
        BatchError::Server(format!(
            "a request to the LFS server at {} {what}: {cause}",
            self.shown()
        ))
    }
}

const LFS_JSON: &str = "application/vnd.git-lfs+json";

/// What a run that may not go on reads as, until the run says why.
pub const STOPPED: &str = "the run was stopped";

fn flatten(outcome: Result<Result<(), String>, BatchError>) -> Result<(), String> {
    match outcome {
        Ok(done) => done,
        Err(BatchError::Stopped) => Err(STOPPED.into()),
        Err(e) => Err(e.to_string()),
    }
}

async fn stopped(pace: &dyn Pace) {
    while pace.may_go_on() {
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

/// The wait a `Retry-After` of seconds or an HTTP date asks for.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response
        .headers()
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or_default())
}

/// The server's message, if it sent a JSON one, for an error.
fn said(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Said {
        message: String,
    }
    match serde_json::from_slice::<Said>(body) {
        Ok(said) => format!(": {}", said.message.chars().take(200).collect::<String>()),
        Err(_) => String::new(),
    }
}

/// The answers for `asked`, in its order: one the server left out is refused.
fn in_order(asked: &[Pointer], answers: Vec<ObjectAnswer>) -> Vec<Answer> {
    let mut by_oid: HashMap<String, ObjectAnswer> =
        answers.into_iter().map(|a| (a.oid.clone(), a)).collect();
    asked
        .iter()
        .map(|p| match by_oid.remove(&p.oid.to_string()) {
            None => Answer::Refused(0, "the server's batch answer left it out".into()),
            Some(ObjectAnswer { error: Some(e), .. }) => Answer::Refused(e.code, e.message),
            Some(a) if a.actions.is_empty() => Answer::Nothing,
            Some(a) => Answer::Act(a.actions),
        })
        .collect()
}

/// An upload's body: the chunks the run's thread reads and paces.
struct Chunks(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>);

impl futures_core::Stream for Chunks {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
