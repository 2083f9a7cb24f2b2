//! A kill -9 campaign: `cargo bench --bench crashes [-- --kills N --seed S]`.
//!
//! The service runs as a child process (`mirrorhost serve`) with one project:
//! a pull mirror of an upstream served by `git http-backend` (a generated
//! history of 3,000 commits), two push mirrors to bare repositories, and a
//! pack limit of 2 so housekeeping passes come often. Each round changes
//! the upstream (a commit, now and then a force-push or a new branch),
//! queues a pull (which cascades to the pushes) and sometimes a housekeeping
//! pass, waits a random time, and kills the service's whole process group
//! (SIGKILL: the indexer and git children die with it). Then it restarts the
//! service on the same data dir, lets the queue drain, and counts:
//! repositories failing `git fsck`, runs left `running`, and lost jobs (a
//! run that never ended, or an interrupted run with no run after it).
//! At the end one more sync must leave the mirror and both destinations equal
//! to the upstream. Figures go to RELIABILITY.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::child::{Service, all_runs, call};
use common::git_cli::git;

#[path = "../../tests/fixtures/history.rs"]
mod history;

#[allow(dead_code, clippy::unwrap_used)]
#[path = "../../tests/e2e/http_git.rs"]
mod http_git;

const PROJECT: &str = "crash/project";

/// A small xorshift generator: the campaign is repeatable from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Every run of the mirrors, once nothing is queued or running.
async fn drained_runs(http: &reqwest::Client, service: &Service, ids: &[i64]) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut runs = Vec::new();
        for id in ids {
            runs.extend(all_runs(http, service, *id).await);
        }
        let busy = runs
            .iter()
            .any(|r| r["status"] == "queued" || r["status"] == "running");
        if !busy {
            return runs;
        }
        assert!(Instant::now() < deadline, "the queue never drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn start(data: &Path) -> Service {
    let envs = [
        ("MIRRORHOST_HOUSEKEEPING_PACK_LIMIT", "2"),
        // Keep every run: the campaign counts them all.
        ("MIRRORHOST_RETAIN_RUNS", "100000"),
        ("RUST_LOG", "warn"),
    ];
    Service::start(data, &envs, Stdio::null())
}

fn fsck_ok(repo: &Path) -> bool {
    !repo.join("objects").exists()
        || Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["fsck", "--no-progress", "--no-dangling"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn refs(repo: &Path) -> String {
    git(
        repo,
        &[
            "for-each-ref",
            "--format=%(refname) %(objectname)",
            "refs/heads",
            "refs/tags",
        ],
    )
}

fn change_upstream(tree: &Path, rng: &mut Rng, round: u64) {
    let file = tree.join(format!("crash-{}.txt", rng.below(30)));
    std::fs::write(
        &file,
        format!("round {round}\n").repeat(rng.below(2000) as usize + 1),
    )
    .expect("write");
    git(tree, &["add", "-A"]);
    git(tree, &["commit", "-q", "-m", &format!("round {round}")]);
    match rng.below(10) {
        0 => {
            // A force-push: the old tip becomes unreachable upstream.
            git(
                tree,
                &["commit", "-q", "--amend", "-m", &format!("amended {round}")],
            );
            git(tree, &["push", "-q", "-f", "origin", "HEAD:main"]);
        }
        1 => {
            git(
                tree,
                &[
                    "push",
                    "-q",
                    "origin",
                    &format!("HEAD:refs/heads/topic-{round}"),
                ],
            );
        }
        _ => {
            git(tree, &["push", "-q", "origin", "HEAD:main"]);
        }
    }
}

fn main() {
    let kills: u64 = common::arg("--kills").map_or(120, |k| k.parse().expect("--kills N"));
    let seed =
        common::arg("--seed").map_or(0x9e37_79b9_7f4a_7c15, |s| s.parse().expect("--seed S"));
    let mut rng = Rng(seed);
    let work = tempfile::tempdir().expect("temp dir");
    let root = work.path();
    let upstream = common::bare(root, "upstream.git");
    history::generate(
        &upstream,
        history::History {
            commits: 3_000,
            blob_bytes: 2_000,
            dirs: 20,
            refs_every: 200,
        },
    );
    let tree = common::work_tree(root, &upstream);
    git(&tree, &["checkout", "-q", "-B", "main", "origin/main"]);
    let destinations: Vec<PathBuf> = (0..2)
        .map(|i| common::bare(root, &format!("dest{i}.git")))
        .collect();
    let data = root.join("data");

    common::runtime().block_on(async {
        let served = http_git::HttpGit::start(root).await;
        let http = reqwest::Client::new();
        let mut service = start(&data);
        service.ready(&http).await;
        let pull = json!({"project_id": PROJECT, "url": served.url("upstream.git")});
        let (_, body) = call(&http, "POST", &service.url("/api/v1/mirrors/pull"), pull)
            .await
            .expect("pull mirror");
        let mut ids = vec![body["mirror_id"].as_i64().expect("id")];
        for dest in &destinations {
            let push = json!({"project_id": PROJECT, "url": format!("file://{}", dest.display())});
            let (_, body) = call(&http, "POST", &service.url("/api/v1/mirrors/push"), push)
                .await
                .expect("push mirror");
            ids.push(body["mirror_id"].as_i64().expect("id"));
        }
        let repo = data.join(format!("repos/{PROJECT}.git"));
        let (mut fsck_failures, mut left_running, mut lost) = (0, 0, 0);
        let mut interrupted_total = 0;
        let (mut in_indexer, mut in_repack) = (0, 0);
        let started = Instant::now();
        for round in 0..kills {
            change_upstream(&tree, &mut rng, round);
            let sync = service.url(&format!("/api/v1/mirrors/{}/sync", ids[0]));
            call(&http, "POST", &sync, json!({})).await;
            if rng.below(3) == 0 {
                // Housekeeping runs on the request; the kill may land inside it.
                let url = service.url("/api/v1/projects/crash%2Fproject/housekeeping");
                let client = http.clone();
                tokio::spawn(async move { call(&client, "POST", &url, json!({})).await });
            }
            tokio::time::sleep(Duration::from_millis(rng.below(1500))).await;
            let children = service.children();
            in_indexer += usize::from(children.contains("index-pack"));
            in_repack +=
                usize::from(children.contains("repack") || children.contains("pack-objects"));
            service.kill();
            for repo in std::iter::once(&repo).chain(&destinations) {
                fsck_failures += usize::from(!fsck_ok(repo));
            }
            service = start(&data);
            service.ready(&http).await;
            let runs = drained_runs(&http, &service, &ids).await;
            left_running += runs.iter().filter(|r| r["status"] == "running").count();
            // An interrupted run must have a later run of its mirror.
            for run in runs.iter().filter(|r| r["status"] == "interrupted") {
                let later = runs.iter().any(|r| {
                    r["mirror_id"] == run["mirror_id"]
                        && r["run_id"].as_i64() > run["run_id"].as_i64()
                });
                lost += usize::from(!later);
            }
            interrupted_total = runs.iter().filter(|r| r["status"] == "interrupted").count();
        }
        // A last sync, uninterrupted: everything equal to the upstream.
        let sync = service.url(&format!("/api/v1/mirrors/{}/sync?wait=true", ids[0]));
        let (_, run) = call(&http, "POST", &sync, json!({}))
            .await
            .expect("final sync");
        let runs = drained_runs(&http, &service, &ids).await;
        let statuses = |status: &str| runs.iter().filter(|r| r["status"] == status).count();
        let upstream_refs = refs(&upstream);
        let equal =
            refs(&repo) == upstream_refs && destinations.iter().all(|d| refs(d) == upstream_refs);
        let packs = std::fs::read_dir(repo.join("objects/pack")).map_or(0, |d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
                .count()
        });
        println!(
            "{kills} kills in {:.0} s (--seed {seed}); last run {}",
            started.elapsed().as_secs_f64(),
            run["status"]
        );
        println!(
            "  kills that landed while a pack was being indexed: {in_indexer}; \
             during a git repack: {in_repack}"
        );
        println!(
            "  runs: {} succeeded, {} failed, {} cancelled, {} interrupted (each retried)",
            statuses("succeeded"),
            statuses("failed"),
            statuses("cancelled"),
            interrupted_total
        );
        println!(
            "  repositories failing git fsck: {fsck_failures}; runs left running: {left_running}; \
             lost jobs: {lost}; mirror and destinations equal to upstream: {equal}; packs: {packs}"
        );
        service.kill();
    });
}
