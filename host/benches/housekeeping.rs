//! Packs and disk after many incremental fetches: `cargo bench --bench
//! housekeeping [-- --rounds N --source REPO]`.
//!
//! An upstream (a copy of `--source`, a bare repository such as a fetched
//! snapshot of a real project; without it, a generated history of 25,000
//! commits) served by `git http-backend`; one pull mirror in the running
//! service (in-process, loopback). Each round commits a change upstream and
//! syncs the mirror (`POST /sync?wait=true`, which returns once housekeeping
//! after the run is done). Reported: the most packs the mirror held after any
//! round, the housekeeping passes and their time; then no-op and incremental
//! sync times of that mirror against a fresh mirror of the same upstream
//! (medians of 15, interleaved), and the mirror's object bytes against a copy
//! of it after `git repack -adf`.
//!
//! Targets (issue 16, item 1): at most 10 packs after 1,000 fetches; syncs
//! within 10% of the fresh mirror; disk within 1.3x of `git repack -adf`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mirrorhost::config::Overrides;
use mirrorhost::store::{self, MirrorSettings};

mod common;
use common::git_cli::git;

#[path = "../../tests/fixtures/history.rs"]
mod history;

#[allow(dead_code, clippy::unwrap_used)]
#[path = "../../tests/e2e/http_git.rs"]
mod http_git;

const TOKEN: &str = "bench-token";

fn main() {
    let rounds: usize = common::arg("--rounds").map_or(1000, |r| r.parse().expect("--rounds N"));
    let work = tempfile::tempdir().expect("temp dir");
    let root = work.path();
    let upstream = root.join("upstream.git");
    match common::arg("--source") {
        Some(source) => {
            git(
                root,
                &[
                    "clone",
                    "-q",
                    "--bare",
                    "--no-local",
                    &source,
                    "upstream.git",
                ],
            );
        }
        None => {
            common::bare(root, "upstream.git");
            let shape = history::History {
                commits: 25_000,
                blob_bytes: 200,
                dirs: 50,
                refs_every: 100,
            };
            history::generate(&upstream, shape);
        }
    }
    let branch = git(&upstream, &["symbolic-ref", "--short", "HEAD"])
        .trim()
        .to_string();
    let tree = common::work_tree(root, &upstream);

    common::runtime().block_on(async {
        let served = http_git::HttpGit::start(root).await;
        let url = served.url("upstream.git");
        let data = root.join("data");
        let (app, addr) = start(&data).await;
        let http = reqwest::Client::new();
        let old = add_mirror(&app, "bench/old", &url);
        let started = Instant::now();
        sync(&http, addr, old).await;
        println!(
            "initial pull: {:.1} s ({} objects)",
            started.elapsed().as_secs_f64(),
            git(&upstream, &["count-objects", "-v"])
                .lines()
                .find_map(|l| l.strip_prefix("in-pack: "))
                .unwrap_or("?")
        );
        let repo = data.join("repos/bench/old.git");
        let (mut most, mut passes) = (0, 0);
        let started = Instant::now();
        for round in 0..rounds {
            commit_and_push(&tree, &branch, round);
            let before = packs(&repo);
            sync(&http, addr, old).await;
            let after = packs(&repo);
            passes += usize::from(after < before);
            most = most.max(after);
        }
        println!(
            "{rounds} incremental fetches in {:.1} s: at most {most} packs after a round \
             (target <= 10), {passes} housekeeping passes, {} packs at the end",
            started.elapsed().as_secs_f64(),
            packs(&repo)
        );

        let fresh = add_mirror(&app, "bench/fresh", &url);
        sync(&http, addr, fresh).await;
        let (mut noop_old, mut noop_fresh) = (Vec::new(), Vec::new());
        let (mut inc_old, mut inc_fresh) = (Vec::new(), Vec::new());
        for round in 0..15 {
            noop_old.push(timed(&http, addr, old).await);
            noop_fresh.push(timed(&http, addr, fresh).await);
            commit_and_push(&tree, &branch, rounds + round);
            // Alternate which mirror fetches the new commit first.
            if round % 2 == 0 {
                inc_old.push(timed(&http, addr, old).await);
                inc_fresh.push(timed(&http, addr, fresh).await);
            } else {
                inc_fresh.push(timed(&http, addr, fresh).await);
                inc_old.push(timed(&http, addr, old).await);
            }
        }
        report("no-op sync", &mut noop_old, &mut noop_fresh);
        report("incremental sync", &mut inc_old, &mut inc_fresh);
        disk(root, &repo);
    });
}

async fn start(
    data: &Path,
) -> (
    std::sync::Arc<mirrorhost::service::App>,
    std::net::SocketAddr,
) {
    let local = Overrides {
        allow_local_remotes: Some(true),
        allow_http_remotes: Some(true),
        ..Overrides::default()
    };
    let app = common::app(data, local).await;
    let addr = common::serve(app.clone()).await;
    (app, addr)
}

fn add_mirror(app: &mirrorhost::service::App, project: &str, url: &str) -> i64 {
    let settings = MirrorSettings::pull(project, url, "127.0.0.1");
    app.store
        .with(|c| store::mirrors::insert(c, &settings))
        .expect("mirror")
        .mirror_id
}

fn commit_and_push(tree: &Path, branch: &str, round: usize) {
    let file = tree.join(format!("bench-{}.txt", round % 20));
    std::fs::write(&file, format!("round {round}\n").repeat(round % 50 + 1)).expect("write");
    git(tree, &["add", "-A"]);
    git(tree, &["commit", "-q", "-m", &format!("round {round}")]);
    git(tree, &["push", "-q", "origin", &format!("HEAD:{branch}")]);
}

async fn sync(http: &reqwest::Client, addr: std::net::SocketAddr, id: i64) {
    let answer = http
        .post(format!("http://{addr}/api/v1/mirrors/{id}/sync?wait=true"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("sync");
    let run: serde_json::Value = answer.json().await.expect("run");
    assert_eq!(run["status"], "succeeded", "{run}");
}

async fn timed(http: &reqwest::Client, addr: std::net::SocketAddr, id: i64) -> Duration {
    let started = Instant::now();
    sync(http, addr, id).await;
    started.elapsed()
}

fn median(times: &mut [Duration]) -> f64 {
    times.sort_unstable();
    times[times.len() / 2].as_secs_f64() * 1e3
}

fn report(what: &str, old: &mut [Duration], fresh: &mut [Duration]) {
    let (old, fresh) = (median(old), median(fresh));
    println!(
        "  {what:<17} after the fetches {old:>7.1} ms, fresh mirror {fresh:>7.1} ms: {:.2}x (target <= 1.10x)",
        old / fresh
    );
}

/// Packs in `repo`, a cruft pack not counted.
fn packs(repo: &Path) -> usize {
    std::fs::read_dir(repo.join("objects/pack"))
        .expect("pack dir")
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter_map(|n| n.strip_suffix(".pack").map(str::to_owned))
        .filter(|stem| !repo.join(format!("objects/pack/{stem}.mtimes")).exists())
        .count()
}

fn object_bytes(repo: &Path) -> u64 {
    fn walk(dir: &Path) -> u64 {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
    }
    walk(&repo.join("objects"))
}

fn disk(root: &Path, repo: &Path) {
    let copy: PathBuf = root.join("repacked.git");
    git(
        root,
        &[
            "clone",
            "-q",
            "--mirror",
            "--no-local",
            repo.to_str().expect("utf-8"),
            "repacked.git",
        ],
    );
    git(&copy, &["repack", "-adf", "-q"]);
    let (ours, theirs) = (object_bytes(repo), object_bytes(&copy));
    println!(
        "  disk: the mirror's objects {:.1} MiB, after git repack -adf {:.1} MiB: {:.2}x (target <= 1.30x)",
        ours as f64 / 1048576.0,
        theirs as f64 / 1048576.0,
        ours as f64 / theirs as f64
    );
}
