//! Cancelling runs: a queued run ends at once, a running one stops within two
//! seconds with no ref changed and no partial pack left.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{
    Api, LOCAL_REMOTES, Server, project_repo, refs_of, silent_listener, slow_mirror, slow_upstream,
};

/// Waits until run `run_id` has moved some bytes.
async fn transferring(api: &Api<'_>, run_id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, run) = api.get(&format!("/api/v1/runs/{run_id}")).await;
        if run["progress"]["bytes"].as_u64().unwrap_or(0) > 0 {
            return run;
        }
        assert!(Instant::now() < deadline, "never moved a byte: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn cancel(api: &Api<'_>, run_id: i64) -> (u16, Value) {
    api.post(&format!("/api/v1/runs/{run_id}/cancel"), json!({}))
        .await
}

/// Over smart HTTP and over file:// (`sync::local_fetch`, whose copy of
/// pack-objects' output is the service's own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_run_stops_within_two_seconds_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let http = slow_upstream(root.path()).await;
    let file = format!("file://{}", root.path().join("big.git").display());
    let server = Server::start(LOCAL_REMOTES);
    let api = Api::new(&server);
    for (url, project) in [(http.url("big.git"), "cancel/http"), (file, "cancel/file")] {
        stops_within_two_seconds(&api, &server, &url, project).await;
    }
}

async fn stops_within_two_seconds(api: &Api<'_>, server: &Server, url: &str, project: &str) {
    let id = slow_mirror(api, url, project).await;
    let run_id = api.queue(id).await;
    transferring(api, run_id).await;

    let asked = Instant::now();
    let (status, run) = cancel(api, run_id).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert!(
        run["error"].as_str().unwrap().contains("cancelled"),
        "{run}"
    );

    let local = project_repo(server, project);
    assert!(refs_of(&local).is_empty(), "no ref changed");
    let pack_dir = local.join("objects/pack");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<_> = std::fs::read_dir(&pack_dir)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "partial pack left: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Not the mirror's failure: health stays as it was.
    let (_, health) = api.get(&format!("/api/v1/mirrors/{id}/health")).await;
    assert_eq!(
        (&health["state"], &health["total_updates"]),
        (&json!("healthy"), &json!(0)),
        "{health}"
    );
    let (status, err) = cancel(api, run_id).await;
    assert_eq!(status, 409, "an ended run is not cancelled again: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_run_is_cancelled_at_once() {
    let root = tempfile::tempdir().unwrap();
    let http = slow_upstream(root.path()).await;
    let mut envs = LOCAL_REMOTES.to_vec();
    envs.push(("MIRRORHOST_MAX_CONCURRENT_RUNS", "1"));
    let server = Server::start(&envs);
    let api = Api::new(&server);
    let first = slow_mirror(&api, &http.url("big.git"), "cancel/first").await;
    let second = slow_mirror(&api, &http.url("big.git"), "cancel/second").await;
    let running = api.queue(first).await;
    transferring(&api, running).await;
    let queued = api.queue(second).await;

    let (status, run) = cancel(&api, queued).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(
        (&run["status"], run["finished_at"].is_string()),
        (&json!("cancelled"), true),
        "{run}"
    );
    assert!(run["started_at"].is_null(), "it never started: {run}");
    let (_, run) = cancel(&api, running).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    let (status, _) = cancel(&api, 9999).await;
    assert_eq!(status, 404);
}

/// A remote that takes the connection and then sends nothing runs no
/// callback that could read the cancel; the cancel shuts the run's
/// connections down instead, and the run ends within two seconds, long
/// before the stall limit (120 s here), over http, https and ssh alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_on_a_silent_remote_is_cancelled_within_two_seconds() {
    let silent = silent_listener();
    let server = Server::start(LOCAL_REMOTES);
    let api = Api::new(&server);
    for scheme in ["http", "https", "ssh"] {
        let url = match scheme {
            "ssh" => format!("ssh://git@{silent}/quiet.git"),
            _ => format!("{scheme}://{silent}/quiet.git"),
        };
        let id = api
            .create(
                "pull",
                json!({"project_id": format!("silent/{scheme}"), "url": url}),
            )
            .await;
        let run_id = api.queue(id).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, run) = api.get(&format!("/api/v1/runs/{run_id}")).await;
            if run["status"] == "running" {
                break;
            }
            assert!(Instant::now() < deadline, "{scheme}: never started: {run}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Well into the wait for the remote's first byte.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let asked = Instant::now();
        let (status, run) = cancel(&api, run_id).await;
        let took = asked.elapsed();
        assert_eq!(status, 200, "{scheme}: {run}");
        assert_eq!(run["status"], "cancelled", "{scheme}: {run}");
        assert!(took < Duration::from_secs(2), "{scheme}: {took:?}");
        assert_eq!(
            run["error"],
            json!("cancelled by an operator; no ref was changed"),
            "{scheme}"
        );
    }
}
