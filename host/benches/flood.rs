//! A webhook flood: `cargo bench --bench flood [-- --seconds S --mirrors N]`.
//!
//! The service as a child process (its log at info, to a file), N pull
//! mirrors (default 20) of small upstreams served by `git http-backend`,
//! each project with its webhook secret. For S seconds (default 60), 32
//! senders post signed GitHub push deliveries round-robin over the mirrors,
//! each with a delivery id of its own and the upstream's current tip as
//! `after`, as fast as the service answers. Every 10 seconds each upstream
//! gets a new commit; the lag is the time from that push until the mirror
//! holds it (polled every 20 ms). Reported: deliveries accepted per second, runs per mirror per
//! minute, lag p50 and max, log bytes; no delivery may get a 5xx.
//!
//! Targets (issue 16, item 6): a few runs per mirror a minute, not hundreds;
//! a push reaches its mirror in under a second plus the run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;

mod common;
use common::child::{Service, all_runs, call};
use common::git_cli::git;

#[allow(dead_code, clippy::unwrap_used)]
#[path = "../../tests/e2e/http_git.rs"]
mod http_git;

const SECRET: &str = "flood-webhook-secret";
const SENDERS: usize = 32;

fn arg(name: &str, default: u64) -> u64 {
    common::arg(name).map_or(default, |v| v.parse().expect("a number"))
}

struct Upstream {
    work: PathBuf,
    clone_url: String,
    /// The tip deliveries name, as text.
    tip: std::sync::Mutex<String>,
}

impl Upstream {
    fn commit(&self, n: usize) -> String {
        std::fs::write(self.work.join("f"), format!("{n}\n")).expect("write");
        git(&self.work, &["commit", "-q", "-am", &format!("c{n}")]);
        git(&self.work, &["push", "-q", "origin", "HEAD:main"]);
        let tip = git(&self.work, &["rev-parse", "HEAD"]).trim().to_string();
        *self.tip.lock().expect("tip") = tip.clone();
        tip
    }
}

fn main() {
    let seconds = arg("--seconds", 60);
    let count = arg("--mirrors", 20) as usize;
    let work = tempfile::tempdir().expect("temp dir");
    let root = work.path();
    common::runtime().block_on(async {
        let served = http_git::HttpGit::start(root).await;
        let upstreams: Vec<Arc<Upstream>> = (0..count)
            .map(|i| Arc::new(upstream(root, i, &served)))
            .collect();
        let log_path = root.join("service.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let data = root.join("data");
        let service = Arc::new(Service::start(&data, &[("RUST_LOG", "info")], Stdio::from(log)));
        let http = reqwest::Client::new();
        service.ready(&http).await;
        let mut ids = Vec::new();
        for (i, up) in upstreams.iter().enumerate() {
            ids.push(add_mirror(&http, &service, i, up).await);
        }
        let log_before = std::fs::metadata(&log_path).map_or(0, |m| m.len());

        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let senders: Vec<_> = (0..SENDERS)
            .map(|s| {
                let (http, service, upstreams) = (http.clone(), service.clone(), upstreams.clone());
                let (stop, accepted, errors) = (stop.clone(), accepted.clone(), errors.clone());
                tokio::spawn(async move {
                    let mut n = s;
                    while !stop.load(Ordering::Relaxed) {
                        let up = &upstreams[n % upstreams.len()];
                        match deliver(&http, &service, up, &format!("s{s}-{n}")).await {
                            200..=299 => accepted.fetch_add(1, Ordering::Relaxed),
                            _ => errors.fetch_add(1, Ordering::Relaxed),
                        };
                        n += SENDERS;
                    }
                })
            })
            .collect();
        let started = Instant::now();
        let mut lags = Vec::new();
        let mut round = 1;
        while started.elapsed() < Duration::from_secs(seconds) {
            let round_started = Instant::now();
            let mut waiting = Vec::new();
            for (i, up) in upstreams.iter().enumerate() {
                let tip = up.commit(round);
                let repo = data.join(format!("repos/flood/p{i}.git"));
                let pushed = Instant::now();
                waiting.push(tokio::spawn(async move { wait_for(&repo, &tip, pushed).await }));
            }
            for lag in waiting {
                lags.push(lag.await.expect("waiter"));
            }
            round += 1;
            let next = round_started + Duration::from_secs(10);
            tokio::time::sleep_until(next.into()).await;
        }
        stop.store(true, Ordering::Relaxed);
        for sender in senders {
            let _ = sender.await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let log_bytes = std::fs::metadata(&log_path).map_or(0, |m| m.len()) - log_before;
        let mut runs = 0;
        for id in &ids {
            // The first run (the initial pull) came before the flood.
            runs += all_runs(&http, &service, *id).await.len().saturating_sub(1);
        }
        lags.sort_by(f64::total_cmp);
        println!(
            "{count} mirrors, {SENDERS} senders, {elapsed:.0} s: {:.0} deliveries accepted/s, {} answered otherwise",
            accepted.load(Ordering::Relaxed) as f64 / elapsed,
            errors.load(Ordering::Relaxed)
        );
        println!(
            "  runs per mirror per minute {:.1}; lag p50 {:.0} ms, max {:.0} ms over {} pushes; log {} bytes",
            runs as f64 / count as f64 / (elapsed / 60.0),
            lags[lags.len() / 2],
            lags[lags.len() - 1],
            lags.len(),
            log_bytes
        );
        if let Ok(service) = Arc::try_unwrap(service) {
            service.kill();
        }
    });
}

fn upstream(root: &Path, i: usize, served: &http_git::HttpGit) -> Upstream {
    let name = format!("up{i}.git");
    let bare = common::bare(root, &name);
    let work = root.join(format!("work{i}"));
    git(
        root,
        &["init", "-q", "-b", "main", work.to_str().expect("utf-8")],
    );
    git(
        &work,
        &["remote", "add", "origin", bare.to_str().expect("utf-8")],
    );
    std::fs::write(work.join("f"), "0\n").expect("write");
    git(&work, &["add", "f"]);
    git(&work, &["commit", "-q", "-m", "c0"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let tip = git(&work, &["rev-parse", "HEAD"]).trim().to_string();
    Upstream {
        work,
        clone_url: served.url(&name),
        tip: std::sync::Mutex::new(tip),
    }
}

async fn add_mirror(http: &reqwest::Client, service: &Service, i: usize, up: &Upstream) -> i64 {
    let project = format!("flood/p{i}");
    let body = json!({"project_id": project, "url": up.clone_url});
    let (status, mirror) = call(http, "POST", &service.url("/api/v1/mirrors/pull"), body)
        .await
        .expect("create");
    assert_eq!(status, 201, "{mirror}");
    let id = mirror["mirror_id"].as_i64().expect("id");
    let secret = service.url(&format!("/api/v1/projects/flood%2Fp{i}/webhook"));
    let answer = http
        .put(secret)
        .bearer_auth(common::child::TOKEN)
        .json(&json!({"secret": SECRET}))
        .send()
        .await
        .expect("secret");
    assert!(answer.status().is_success(), "{:?}", answer.text().await);
    let sync = service.url(&format!("/api/v1/mirrors/{id}/sync?wait=true"));
    let (_, run) = call(http, "POST", &sync, json!({})).await.expect("sync");
    assert_eq!(run["status"], "succeeded", "{run}");
    id
}

async fn deliver(http: &reqwest::Client, service: &Service, up: &Upstream, id: &str) -> u16 {
    let after = up.tip.lock().expect("tip").clone();
    let body = json!({
        "ref": "refs/heads/main",
        "after": after,
        "repository": {"clone_url": up.clone_url},
    })
    .to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    let answer = http
        .post(service.url("/hooks/github"))
        .header("x-github-event", "push")
        .header("x-github-delivery", id)
        .header(
            "x-hub-signature-256",
            format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
        )
        .body(body)
        .send()
        .await;
    answer.map_or(599, |a| a.status().as_u16())
}

/// Milliseconds from `since` until `repo`'s main is `tip`.
async fn wait_for(repo: &Path, tip: &str, since: Instant) -> f64 {
    let oid = git2::Oid::from_str(tip).expect("oid");
    let deadline = since + Duration::from_secs(60);
    loop {
        let there = git2::Repository::open_bare(repo)
            .and_then(|r| r.refname_to_id("refs/heads/main"))
            .is_ok_and(|id| id == oid);
        if there {
            return since.elapsed().as_secs_f64() * 1e3;
        }
        assert!(
            Instant::now() < deadline,
            "{} never got {tip}",
            repo.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
