//! Remotes that never answer, never accept, or take too long: each run ends
//! at its limit with the limit named, frees its slots, and the runs queued
//! behind it go ahead.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::history::{History, generate};
use crate::http_git::HttpGit;
use crate::support::{
    Api, LOCAL_REMOTES, Server, bare_repo, silent_listener, slow_mirror, slow_upstream,
};

fn server(limits: &[(&'static str, &'static str)]) -> Server {
    let mut envs = LOCAL_REMOTES.to_vec();
    envs.extend_from_slice(limits);
    Server::start(&envs)
}

/// The run failed naming `why`, after about the 2 s limit the tests set.
fn failed_at_the_limit(run: &Value, why: &str) {
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(error.contains(why), "{error}");
    let took = run["duration_ms"].as_i64().unwrap();
    assert!((1500..15_000).contains(&took), "{took} ms");
}

/// Waits for run `run_id` to finish; returns it and how long the wait took.
async fn finished(api: &Api<'_>, run_id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, run) = api.get(&format!("/api/v1/runs/{run_id}")).await;
        if run["finished_at"].is_string() {
            return run;
        }
        assert!(Instant::now() < deadline, "run {run_id} never ended: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two remotes that accept the connection and then say nothing hold both of
/// the host's slots; each run ends at the stall limit, and a good mirror on
/// the same host, queued behind them, then runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_remotes_end_at_the_stall_limit_and_free_their_slots() {
    let silent_addr = silent_listener();
    let root = tempfile::tempdir().unwrap();
    let good = bare_repo(root.path(), "good.git");
    generate(
        &good,
        History {
            commits: 3,
            blob_bytes: 100,
            dirs: 1,
            refs_every: 0,
        },
    );
    let http = HttpGit::start(root.path()).await;

    let server = server(&[
        ("MIRRORHOST_STALL_TIMEOUT_SECONDS", "2"),
        ("MIRRORHOST_MAX_RUNS_PER_HOST", "2"),
    ]);
    let api = Api::new(&server);
    let mut silent_runs = Vec::new();
    for i in 0..2 {
        let url = format!("http://{silent_addr}/silent{i}.git");
        let id = api
            .create(
                "pull",
                json!({"project_id": format!("stall/s{i}"), "url": url}),
            )
            .await;
        silent_runs.push(api.queue(id).await);
    }
    let good_id = api
        .create(
            "pull",
            json!({"project_id": "stall/good", "url": http.url("good.git")}),
        )
        .await;
    let started = Instant::now();
    let good_run = api.queue(good_id).await;

    for run_id in silent_runs {
        let run = finished(&api, run_id).await;
        failed_at_the_limit(&run, "nothing for 2 s (stall timeout");
    }
    let run = finished(&api, good_run).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // A failure like any other: health counts it.
    let (_, health) = api.get("/api/v1/mirrors/1/health").await;
    assert_eq!(health["state"], "failing", "{health}");
}

/// A listener whose accept queue is full drops new connections' SYNs: the
/// connect hangs until the connect limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_remote_ends_at_the_connect_limit() {
    let full = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = full.local_addr().unwrap();
    let _held = fill_accept_queue(addr);
    let server = server(&[("MIRRORHOST_CONNECT_TIMEOUT_SECONDS", "2")]);
    let api = Api::new(&server);
    let id = api
        .create(
            "pull",
            json!({"project_id": "connect/p", "url": format!("http://{addr}/x.git")}),
        )
        .await;
    failed_at_the_limit(&api.sync(id).await, "within 2 s (connect timeout");
    drop(full);
}

/// https remotes go through our TLS stream (`sync::tls_stream`), which keeps
/// the same two limits: a silent handshake ends at the stall limit, a
/// connect that hangs at the connect limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_remotes_keep_the_stall_and_connect_limits() {
    let silent = silent_listener();
    let full = TcpListener::bind("127.0.0.1:0").unwrap();
    let _held = fill_accept_queue(full.local_addr().unwrap());
    let server = server(&[
        ("MIRRORHOST_STALL_TIMEOUT_SECONDS", "2"),
        ("MIRRORHOST_CONNECT_TIMEOUT_SECONDS", "2"),
    ]);
    let api = Api::new(&server);
    let cases = [
        (silent, "nothing for 2 s (stall timeout"),
        (full.local_addr().unwrap(), "within 2 s (connect timeout"),
    ];
    for (i, (addr, why)) in cases.into_iter().enumerate() {
        let body =
            json!({"project_id": format!("tls/limit{i}"), "url": format!("https://{addr}/x.git")});
        let id = api.create("pull", body).await;
        failed_at_the_limit(&api.sync(id).await, why);
    }
}

/// Connections that fill `addr`'s accept queue, found full once a connect
/// to it times out.
fn fill_accept_queue(addr: SocketAddr) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..10_000 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => held.push(stream),
            Err(_) => return held,
        }
    }
    panic!("the accept queue of {addr} never filled");
}

/// A transfer that goes on longer than the run may take is stopped at the
/// run's limit, even while bytes still arrive (here slowly, by a bandwidth
/// cap), over smart HTTP and over file:// alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_limit_is_stopped() {
    let root = tempfile::tempdir().unwrap();
    let http = slow_upstream(root.path()).await;
    let file = format!("file://{}", root.path().join("big.git").display());
    let server = server(&[("MIRRORHOST_RUN_TIMEOUT_SECONDS", "2")]);
    let api = Api::new(&server);
    for (url, project) in [(http.url("big.git"), "slow/http"), (file, "slow/file")] {
        let id = slow_mirror(&api, &url, project).await;
        let run = api.sync(id).await;
        failed_at_the_limit(&run, "longer than 2 s and was stopped (run timeout");
        let (_, refs) = api
            .get(&format!("/api/v1/runs/{}/refs", run["run_id"]))
            .await;
        assert_eq!(refs["refs"], json!([]), "nothing landed");
    }
}

/// Over SSH too: libssh2 waits for the server's banner no longer than the
/// stall limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_ssh_remote_ends_at_the_stall_limit() {
    let addr = silent_listener();
    let server = server(&[("MIRRORHOST_STALL_TIMEOUT_SECONDS", "2")]);
    let api = Api::new(&server);
    let id = api
        .create(
            "pull",
            json!({"project_id": "stall/ssh", "url": format!("ssh://git@{addr}/x.git")}),
        )
        .await;
    failed_at_the_limit(&api.sync(id).await, "(stall timeout");
}
