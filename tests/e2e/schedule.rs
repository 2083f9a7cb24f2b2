//! Schedules as a running service uses them: interval and cron, enable and
//! disable, hard failure and its reset, and a restart keeping them. The
//! backoff arithmetic itself is unit-tested with an injected clock
//! (host/src/schedule.rs).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Api, LOCAL_REMOTES, Server, Upstream, project_repo, refs_of};

fn fast_server(extra: &[(&'static str, &'static str)]) -> Server {
    let mut envs = LOCAL_REMOTES.to_vec();
    envs.push(("MIRRORHOST_MIN_INTERVAL_SECONDS", "1"));
    envs.extend_from_slice(extra);
    Server::start(&envs)
}

/// Waits until `check` holds for the mirror's runs.
async fn runs_until(
    api: &Api<'_>,
    id: i64,
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, runs) = api.get(&format!("/api/v1/mirrors/{id}/runs")).await;
        let runs = runs["runs"].as_array().unwrap().clone();
        if check(&runs) {
            return runs;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {runs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn interval_and_cron_schedules_fire_and_survive_a_restart() {
    let up = Upstream::new();
    up.commit("main", "a");
    up.push(&["main"]);
    let server = fast_server(&[]);
    let api = Api::new(&server);
    let id = api
        .create(
            "pull",
            json!({"project_id": "sched/p", "url": up.url(), "update_interval": 1}),
        )
        .await;
    runs_until(&api, id, "a scheduled run", |runs| {
        runs.iter()
            .any(|r| r["trigger"] == "schedule" && r["status"] == "succeeded")
    })
    .await;
    assert_eq!(
        refs_of(&project_repo(&server, "sched/p")),
        refs_of(&up.bare())
    );

    let path = format!("/api/v1/mirrors/{id}/schedule");
    let (status, err) = api.put(&path, json!({"cron": "61 * * * *"})).await;
    assert_eq!(
        (status, &err["error"]["field"]),
        (422, &json!("cron")),
        "{err}"
    );
    let (status, err) = api
        .put(&path, json!({"interval_seconds": 5, "cron": "* * * * *"}))
        .await;
    assert_eq!(status, 422, "{err}");
    let (status, schedule) = api.put(&path, json!({"cron": "*/2 * * * * *"})).await;
    assert_eq!(status, 200, "{schedule}");
    assert_eq!(schedule["cron"], "*/2 * * * * *");
    assert!(schedule["next_run_at"].is_i64());

    let (status, disabled) = api.post(&format!("{path}/disable"), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        (&disabled["enabled"], &disabled["next_run_at"]),
        (&json!(false), &Value::Null)
    );

    let data_dir = server.stop();
    let server = Server::start_in(data_dir, LOCAL_REMOTES);
    let api = Api::new(&server);
    let (_, kept) = api.get(&path).await;
    assert_eq!(
        (&kept["cron"], &kept["enabled"]),
        (&json!("*/2 * * * * *"), &json!(false))
    );
    let (status, enabled) = api.post(&format!("{path}/enable"), json!({})).await;
    assert_eq!((status, &enabled["enabled"]), (200, &json!(true)));
    assert!(enabled["next_run_at"].is_i64());
}

#[tokio::test]
async fn consecutive_failures_hard_fail_until_a_manual_sync() {
    let server = fast_server(&[("MIRRORHOST_MAX_FAILURES", "2")]);
    let api = Api::new(&server);
    let missing = tempfile::tempdir().unwrap();
    let url = format!("file://{}/missing.git", missing.path().display());
    let id = api
        .create(
            "pull",
            json!({"project_id": "sched/broken", "url": url, "update_interval": 1}),
        )
        .await;
    let path = format!("/api/v1/mirrors/{id}/schedule");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, schedule) = api.get(&path).await;
        if schedule["hard_failed"] == true {
            assert_eq!(schedule["consecutive_failures"], 2);
            assert_eq!(schedule["next_run_at"], Value::Null);
            break;
        }
        assert!(Instant::now() < deadline, "never hard-failed: {schedule}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failed = runs_until(&api, id, "two failures", |runs| runs.len() >= 2).await;
    assert!(failed.iter().all(|r| r["status"] == "failed"), "{failed:?}");

    let run = api.sync(id).await;
    assert_eq!(run["status"], "failed");
    let (_, schedule) = api.get(&path).await;
    assert_eq!(
        schedule["hard_failed"], false,
        "a manual sync revives it: {schedule}"
    );
}

#[tokio::test]
async fn reconciliation_catches_a_push_that_sent_no_webhook() {
    let up = Upstream::new();
    up.commit("main", "a");
    up.push(&["main"]);
    let mut server = fast_server(&[("MIRRORHOST_RECONCILE_SECONDS", "1")]);
    let id = {
        let api = Api::new(&server);
        let id = api
            .create("pull", json!({"project_id": "recon/p", "url": up.url()}))
            .await;
        assert_eq!(api.sync(id).await["status"], "succeeded");
        id
    };
    // Nothing changed upstream: a sweep queues nothing.
    let quiet = loop {
        let line = server
            .wait_for_log("reconcile sweep", Duration::from_secs(30))
            .expect("a reconcile sweep");
        if line.contains("checked=1") {
            break line;
        }
    };
    assert!(quiet.contains("changed=0"), "{quiet}");

    let tip = up.commit("main", "b");
    up.push(&["main"]);
    let api = Api::new(&server);
    let runs = runs_until(&api, id, "a reconcile run", |runs| {
        runs.iter()
            .any(|r| r["trigger"] == "reconcile" && r["status"] == "succeeded")
    })
    .await;
    assert_eq!(
        runs.iter().filter(|r| r["trigger"] == "reconcile").count(),
        1,
        "{runs:?}"
    );
    let local = refs_of(&project_repo(&server, "recon/p"));
    assert_eq!(local.get("refs/heads/main"), Some(&tip));
}
