//! A crash in the middle of a run: the repository stays fsck-clean, the run is
//! marked interrupted, and the job is retried at start.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::history::{History, generate};
use crate::support::{Api, bare_repo, fsck, git, local_server, project_repo, refs_of};

#[tokio::test]
async fn a_run_killed_mid_fetch_is_marked_interrupted_and_retried() {
    let upstream = tempfile::tempdir().unwrap();
    let bare = bare_repo(upstream.path(), "big.git");
    // About 48 MiB of incompressible history: the fetch takes a while.
    generate(
        &bare,
        History {
            commits: 192,
            blob_bytes: 256 << 10,
            dirs: 1,
            refs_every: 0,
        },
    );
    let url = format!("file://{}", bare.display());

    let server = local_server();
    let api = Api::new(&server);
    let id = api
        .create("pull", json!({"project_id": "crash/test", "url": url}))
        .await;
    let (status, queued) = api
        .post(&format!("/api/v1/mirrors/{id}/sync"), json!({}))
        .await;
    assert_eq!(status, 202, "{queued}");
    let first_run = queued["run_id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, runs) = api.get(&format!("/api/v1/mirrors/{id}/runs")).await;
        if runs["runs"][0]["status"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "the run never started: {runs}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Crash while the pack is being written, not before the transfer starts.
    let pack_dir = project_repo(&server, "crash/test").join("objects/pack");
    while partial_packs(&pack_dir).is_empty() {
        assert!(Instant::now() < deadline, "no pack was being written");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let data_dir = server.crash();
    let repo = data_dir.path().join("repos/crash/test.git");
    assert!(!partial_packs(&repo.join("objects/pack")).is_empty());
    // A crash in the instant a run replaces its refs leaves git's lock behind
    // (too short a window to hit with a kill); the retry must not wait on it.
    std::fs::write(repo.join("packed-refs.lock"), "").unwrap();

    let server = crate::support::Server::start_in(data_dir, crate::support::LOCAL_REMOTES);
    let api = Api::new(&server);
    let deadline = Instant::now() + Duration::from_secs(120);
    let runs = loop {
        let (_, runs) = api.get(&format!("/api/v1/mirrors/{id}/runs")).await;
        let list = runs["runs"].as_array().unwrap().clone();
        if list.len() == 2 && list[0]["status"] == "succeeded" {
            break list;
        }
        assert!(Instant::now() < deadline, "no successful retry: {runs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(runs[1]["run_id"], first_run);
    assert_eq!(runs[1]["status"], "interrupted", "{:?}", runs[1]);
    assert_eq!(runs[0]["trigger"], "retry");
    let local = project_repo(&server, "crash/test");
    fsck(&local);
    let left = partial_packs(&local.join("objects/pack"));
    assert!(
        left.is_empty(),
        "the killed fetch's partial pack is still there: {left:?}"
    );
    assert!(!local.join("packed-refs.lock").exists());
    assert_eq!(refs_of(&local), refs_of(&bare));
    git(&local, &["cat-file", "-e", "refs/heads/main"]);
}

/// The temporary files of pack indexers in `dir`.
fn partial_packs(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}
