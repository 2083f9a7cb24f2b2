//! Push-to-push-mirror latency: `cargo bench --bench cascade`.
//!
//! A project with a pull mirror of an upstream (smart HTTP, `git http-backend`)
//! and three push mirrors (file://), in the running service (dispatcher,
//! cascade, webhooks; in-process, loopback).
//! Each round commits upstream, posts the signed GitHub push webhook, and waits
//! until all three destinations hold the new commit. Reported per round: the
//! end-to-end time, the time the runs on the critical path took (the pull plus
//! the slowest push, from the run records), and what the service added beyond
//! them (queueing, dispatch, the cascade); plus the git CLI doing the same
//! transfers (a fetch, then the three pushes one after another) for scale.
//!
//! Target (issue 4): well under one second added beyond the git transfers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use mirrorhost::config::Overrides;
use mirrorhost::store::{self, Direction, MirrorSettings};
use sha2::Sha256;

mod common;
use common::bare;
use common::git_cli::git;

// The test suite's smart-HTTP server; the bench uses only its unauthenticated side.
#[allow(dead_code, clippy::unwrap_used)]
#[path = "../../tests/e2e/http_git.rs"]
mod http_git;

/// The first page of one row: a mirror's latest run.
const LATEST: store::Page = store::Page {
    page: 1,
    per_page: 1,
};
const SECRET: &str = "bench-webhook-secret";
const ROUNDS: usize = 10;
const DESTINATIONS: usize = 3;

fn main() {
    let work = tempfile::tempdir().expect("temp dir");
    let root = work.path();
    let upstream = bare(root, "upstream.git");
    git(root, &["init", "-q", "-b", "main", "work"]);
    let tree = root.join("work");
    git(
        &tree,
        &["remote", "add", "origin", upstream.to_str().expect("utf-8")],
    );
    commit(&tree, 0);
    let destinations: Vec<PathBuf> = (0..DESTINATIONS)
        .map(|i| bare(root, &format!("dest{i}.git")))
        .collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let git_http = runtime.block_on(http_git::HttpGit::start(root));
    let clone_url = git_http.url("upstream.git");
    let rounds = runtime.block_on(async {
        let (app, addr) = start(&root.join("data"), &clone_url, &destinations).await;
        let http = reqwest::Client::new();
        let mut rounds = Vec::new();
        // Round 0 makes the first copies; it is not measured.
        for round in 0..=ROUNDS {
            let tip = commit(&tree, round + 1);
            let started = Instant::now();
            deliver(&http, addr, round, &clone_url).await;
            wait_for(&destinations, &tip).await;
            let elapsed = started.elapsed();
            if round > 0 {
                rounds.push((elapsed, critical_path(&app)));
            }
        }
        rounds
    });

    let cli = git_cli_baseline(root, &clone_url, &tree);
    let mut end_to_end: Vec<f64> = rounds.iter().map(|(e, _)| ms(*e)).collect();
    let mut runs: Vec<f64> = rounds.iter().map(|(_, r)| ms(*r)).collect();
    let mut added: Vec<f64> = rounds
        .iter()
        .map(|(e, r)| ms(e.saturating_sub(*r)))
        .collect();
    println!("webhook -> pull -> {DESTINATIONS} push mirrors, {ROUNDS} rounds (median, max):");
    println!(
        "  end to end                  {:>8.1} ms  {:>8.1} ms",
        median(&mut end_to_end),
        max(&end_to_end)
    );
    println!(
        "  runs on the critical path   {:>8.1} ms  {:>8.1} ms",
        median(&mut runs),
        max(&runs)
    );
    println!(
        "  added by the service        {:>8.1} ms  {:>8.1} ms  (target: well under 1000 ms)",
        median(&mut added),
        max(&added)
    );
    println!(
        "  git CLI, same transfers     {:>8.1} ms  (fetch + {DESTINATIONS} pushes, one after another)",
        ms(cli)
    );
}

/// The service, serving on loopback, with the project's mirrors and webhook secret.
async fn start(
    data: &Path,
    upstream: &str,
    destinations: &[PathBuf],
) -> (Arc<mirrorhost::service::App>, std::net::SocketAddr) {
    let local = Overrides {
        allow_local_remotes: Some(true),
        allow_http_remotes: Some(true),
        ..Overrides::default()
    };
    let app = common::app(data, local).await;
    let url = |path: &Path| format!("file://{}", path.display());
    let pull = MirrorSettings::pull("acme/widgets", upstream, "127.0.0.1");
    app.store
        .with(|c| store::mirrors::insert(c, &pull))
        .expect("pull mirror");
    for dest in destinations {
        let push = MirrorSettings {
            direction: Direction::Push,
            ..MirrorSettings::pull("acme/widgets", &url(dest), "localhost")
        };
        app.store
            .with(|c| store::mirrors::insert(c, &push))
            .expect("push mirror");
    }
    app.set_webhook_secret("acme/widgets", SECRET)
        .expect("secret");
    let addr = common::serve(app.clone()).await;
    (app, addr)
}

/// Posts a signed GitHub push delivery naming `clone_url`.
async fn deliver(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    round: usize,
    clone_url: &str,
) {
    let body = serde_json::json!({
        "ref": "refs/heads/main",
        "repository": {"clone_url": clone_url},
    })
    .to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    let response = http
        .post(format!("http://{addr}/hooks/github"))
        .header("x-github-event", "push")
        .header("x-github-delivery", format!("round-{round}"))
        .header(
            "x-hub-signature-256",
            format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
        )
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
}

/// Polls the destinations' `main` until every one is at `tip`.
async fn wait_for(destinations: &[PathBuf], tip: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let oid = git2::Oid::from_str(tip).expect("oid");
    loop {
        let arrived = destinations.iter().all(|d| {
            git2::Repository::open_bare(d)
                .and_then(|r| r.refname_to_id("refs/heads/main"))
                .is_ok_and(|id| id == oid)
        });
        if arrived {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the push mirrors never got {tip}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The latest pull run's duration plus the slowest of the latest push runs.
fn critical_path(app: &mirrorhost::service::App) -> Duration {
    let latest = |direction: Direction| -> Vec<i64> {
        let mirrors = app
            .store
            .with(|c| store::mirrors::list(c, Some("acme/widgets"), Some(direction)))
            .expect("mirrors");
        mirrors
            .iter()
            .map(|m| {
                app.store
                    .with(|c| store::runs::page(c, m.mirror_id, None, LATEST))
                    .expect("runs")
                    .0[0]
                    .duration_ms
                    .unwrap_or(0)
            })
            .collect()
    };
    let pull = latest(Direction::Pull)[0];
    let push = latest(Direction::Push).into_iter().max().unwrap_or(0);
    Duration::from_millis(u64::try_from(pull + push).unwrap_or(0))
}

/// The same transfers with the git CLI: a fetch into a mirror clone, then the
/// pushes to three fresh destinations, one after another.
fn git_cli_baseline(root: &Path, upstream: &str, tree: &Path) -> Duration {
    let scratch = root.join("cli");
    std::fs::create_dir_all(&scratch).expect("dir");
    git(&scratch, &["clone", "-q", "--mirror", upstream, "copy.git"]);
    let copy = scratch.join("copy.git");
    let dests: Vec<PathBuf> = (0..DESTINATIONS)
        .map(|i| bare(&scratch, &format!("d{i}.git")))
        .collect();
    for d in &dests {
        git(
            &copy,
            &["push", "-q", "--mirror", d.to_str().expect("utf-8")],
        );
    }
    commit(tree, ROUNDS + 10);
    let started = Instant::now();
    git(&copy, &["fetch", "-q", "--prune", "origin"]);
    for d in &dests {
        git(
            &copy,
            &["push", "-q", "--mirror", d.to_str().expect("utf-8")],
        );
    }
    started.elapsed()
}

/// Commits a change upstream and pushes it; returns the new tip.
fn commit(tree: &Path, n: usize) -> String {
    std::fs::write(tree.join("file.txt"), format!("change {n}\n")).expect("write");
    git(tree, &["add", "file.txt"]);
    git(tree, &["commit", "-q", "-m", &format!("change {n}")]);
    git(tree, &["push", "-q", "origin", "main"]);
    git(tree, &["rev-parse", "HEAD"]).trim().to_string()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::MIN, f64::max)
}
