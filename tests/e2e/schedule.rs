//! Schedules as a running service uses them: interval and cron, enable and
//! disable, hard failure and its reset, and a restart keeping them. The
//! backoff arithmetic itself is unit-tested with an injected clock
//! (host/src/schedule.rs), and the last test runs the real scheduler loop on an
//! injected clock.

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
    let up = Upstream::with_main();
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
    let (_, mirror) = api.get(&format!("/api/v1/mirrors/{id}")).await;
    assert_eq!(mirror["update_status"], "failed", "{mirror}");
    assert_eq!(mirror["last_successful_update_at"], Value::Null);
    assert!(mirror["last_error"].is_string(), "{mirror}");

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
    let up = Upstream::with_main();
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

/// The scheduler's time, set by the test.
#[derive(Debug)]
struct ManualClock(std::sync::atomic::AtomicI64);

impl mirrorhost::clock::Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The running service with a clock the test moves: the real scheduler loop,
/// dispatcher and runs, with hours passing in milliseconds.
struct Driven {
    clock: std::sync::Arc<ManualClock>,
    base: String,
    http: reqwest::Client,
    _data: tempfile::TempDir,
}

impl Driven {
    async fn start(now: i64) -> Self {
        let data = tempfile::tempdir().unwrap();
        let overrides = mirrorhost::config::Overrides {
            allow_local_remotes: Some(true),
            max_failures: Some(3),
            ..Default::default()
        };
        let clock = std::sync::Arc::new(ManualClock(now.into()));
        let app = crate::app::app(data.path(), crate::support::ADMIN_TOKEN, overrides)
            .await
            .with_clock(clock.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(mirrorhost::server::serve(
            std::sync::Arc::new(app),
            listener,
            std::future::pending(),
        ));
        Self {
            clock,
            base,
            http: crate::support::client(),
            _data: data,
        }
    }

    fn set_time(&self, ms: i64) {
        self.clock.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(crate::support::ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    async fn schedule(&self, id: i64) -> Value {
        self.call(
            reqwest::Method::GET,
            &format!("/mirrors/{id}/schedule"),
            None,
        )
        .await
    }

    /// Finished runs with trigger `schedule`, newest first.
    async fn scheduled_runs(&self, id: i64) -> Vec<Value> {
        self.runs(id)
            .await
            .into_iter()
            .filter(|r| r["trigger"] == "schedule" && r["finished_at"].is_string())
            .collect()
    }

    /// Creates a mirror (`pull` or `push`) and returns its id.
    async fn create(&self, direction: &str, body: Value) -> i64 {
        let mirror = self
            .call(
                reqwest::Method::POST,
                &format!("/mirrors/{direction}"),
                Some(body),
            )
            .await;
        mirror["mirror_id"].as_i64().unwrap()
    }

    /// A manual sync, waited for.
    async fn sync(&self, id: i64) -> Value {
        self.call(
            reqwest::Method::POST,
            &format!("/mirrors/{id}/sync?wait=true"),
            None,
        )
        .await
    }

    /// Every run of the mirror, newest first.
    async fn runs(&self, id: i64) -> Vec<Value> {
        let runs = self
            .call(reqwest::Method::GET, &format!("/mirrors/{id}/runs"), None)
            .await;
        runs["runs"].as_array().unwrap().clone()
    }

    /// Waits for a run of the mirror that `check` accepts; the newest such.
    async fn latest_run(&self, id: i64, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(run) = self.runs(id).await.into_iter().find(|r| check(r)) {
                // Its schedule is recorded right after the run: let it land.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return run;
            }
            assert!(Instant::now() < deadline, "no such run of mirror {id}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Moves the clock to `at` and waits for the scheduled run it fires.
    async fn fire(&self, id: i64, at: i64) -> Value {
        let before = self.scheduled_runs(id).await.len();
        self.set_time(at);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let runs = self.scheduled_runs(id).await;
            if runs.len() > before {
                // The schedule is recorded right after the run: let it land.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return runs[0].clone();
            }
            assert!(Instant::now() < deadline, "no scheduled run at {at}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Moves the clock to `at` and checks that two scheduler ticks pass
    /// without a scheduled run.
    async fn stays_quiet(&self, id: i64, at: i64) {
        let before = self.scheduled_runs(id).await.len();
        self.set_time(at);
        tokio::time::sleep(Duration::from_millis(2200)).await;
        assert_eq!(self.scheduled_runs(id).await.len(), before, "fired at {at}");
    }
}

const HOUR_MS: i64 = 3_600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_clock_drives_firing_backoff_hard_failure_and_reset() {
    // 2026-11-28T00:00:00Z.
    let t0 = 1_795_824_000_000;
    let service = Driven::start(t0).await;
    let up = Upstream::with_main();
    let id = service
        .create(
            "pull",
            json!({"project_id": "clock/p", "url": up.url(), "update_interval": 3600}),
        )
        .await;
    let next = service.schedule(id).await["next_run_at"].as_i64().unwrap();
    assert!(
        (t0 + HOUR_MS..=t0 + HOUR_MS + HOUR_MS / 10).contains(&next),
        "{next}"
    );

    // Not before its time; at its time, once.
    service.stays_quiet(id, next - 1000).await;
    assert_eq!(service.fire(id, next).await["status"], "succeeded");

    // The upstream goes away: each failure pushes the next run out further,
    // the third hard-fails the mirror (MIRRORHOST_MAX_FAILURES=3 here).
    let moved = up.dir.path().join("gone.git");
    std::fs::rename(up.bare(), &moved).unwrap();
    let mut now = service.schedule(id).await["next_run_at"].as_i64().unwrap();
    let mut gaps = Vec::new();
    for failures in 1..=3 {
        assert_eq!(service.fire(id, now).await["status"], "failed");
        let s = service.schedule(id).await;
        assert_eq!(s["consecutive_failures"], failures);
        if failures < 3 {
            let next = s["next_run_at"].as_i64().unwrap();
            gaps.push(next - now);
            now = next;
        } else {
            assert_eq!(
                (&s["hard_failed"], &s["next_run_at"]),
                (&json!(true), &Value::Null)
            );
        }
    }
    // Backoff: one interval after the first failure, two after the second (each
    // plus up to a tenth of jitter).
    assert!((HOUR_MS..=HOUR_MS * 11 / 10).contains(&gaps[0]), "{gaps:?}");
    assert!(
        (2 * HOUR_MS..=2 * HOUR_MS * 11 / 10).contains(&gaps[1]),
        "{gaps:?}"
    );
    service.stays_quiet(id, now + 100 * HOUR_MS).await;

    // A settings change revives it; the upstream is back, and it succeeds.
    std::fs::rename(&moved, up.bare()).unwrap();
    let now = now + 100 * HOUR_MS;
    let s = service
        .call(
            reqwest::Method::PUT,
            &format!("/mirrors/{id}/schedule"),
            Some(json!({"interval_seconds": 3600})),
        )
        .await;
    assert_eq!(
        (&s["hard_failed"], &s["consecutive_failures"]),
        (&json!(false), &json!(0))
    );
    let next = s["next_run_at"].as_i64().unwrap();
    assert!(next > now, "planned from the injected time");
    assert_eq!(service.fire(id, next).await["status"], "succeeded");

    // Disabled, it never fires; enabled again, it does.
    service
        .call(
            reqwest::Method::POST,
            &format!("/mirrors/{id}/schedule/disable"),
            None,
        )
        .await;
    service.stays_quiet(id, next + 10 * HOUR_MS).await;
    let s = service
        .call(
            reqwest::Method::POST,
            &format!("/mirrors/{id}/schedule/enable"),
            None,
        )
        .await;
    let next = s["next_run_at"].as_i64().unwrap();
    assert_eq!(service.fire(id, next).await["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_mirror_never_fires_and_a_patch_keeps_its_cron() {
    // 2026-11-28T00:00:00Z.
    let t0 = 1_795_824_000_000;
    let service = Driven::start(t0).await;
    let up = Upstream::with_main();
    let id = service
        .create("pull", json!({"project_id": "clock/cron", "url": up.url()}))
        .await;
    let path = format!("/mirrors/{id}");
    let s = service
        .call(
            reqwest::Method::PUT,
            &format!("{path}/schedule"),
            Some(json!({"cron": "0 * * * *"})),
        )
        .await;
    let next = s["next_run_at"].as_i64().unwrap();

    // Disabling the mirror (not its schedule) silences the cron schedule, and
    // a PATCH that does not name update_interval leaves the cron as it is.
    let patched = service
        .call(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(patched["enabled"], false, "{patched}");
    assert_eq!(service.schedule(id).await["cron"], "0 * * * *");
    service.stays_quiet(id, next + 3 * HOUR_MS).await;

    let patched = service
        .call(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"enabled": true, "only_protected_branches": false})),
        )
        .await;
    assert_eq!(patched["enabled"], true, "{patched}");
    let s = service.schedule(id).await;
    assert_eq!(s["cron"], "0 * * * *", "{s}");
    // Enabled again, the schedule that came due while it was off fires.
    let deadline = Instant::now() + Duration::from_secs(30);
    let runs = loop {
        let runs = service.scheduled_runs(id).await;
        if !runs.is_empty() {
            break runs;
        }
        assert!(
            Instant::now() < deadline,
            "the cron never fired once enabled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["status"], "succeeded");
}

/// A push mirror has no schedule, yet a failed push is retried with backoff
/// until it succeeds, or hard-fails after `max_failures` (3 here); a success
/// clears it and nothing more runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_push_is_retried_with_backoff_until_it_succeeds() {
    // 2026-11-28T00:00:00Z.
    let t0 = 1_795_824_000_000;
    let service = Driven::start(t0).await;
    let up = Upstream::with_main();
    let pull = service
        .create("pull", json!({"project_id": "retry/p", "url": up.url()}))
        .await;
    let dest_dir = tempfile::tempdir().unwrap();
    let dest = dest_dir.path().join("dest.git");
    let push = service
        .create(
            "push",
            json!({"project_id": "retry/p", "url": format!("file://{}", dest.display())}),
        )
        .await;

    // The pull cascades to the push, which fails: the destination is missing.
    service.sync(pull).await;
    let failed = service.latest_run(push, |r| r["status"] == "failed").await;
    assert_eq!(failed["trigger"], "cascade");
    let health = service
        .call(
            reqwest::Method::GET,
            &format!("/mirrors/{push}/health"),
            None,
        )
        .await;
    assert_eq!(health["state"], "failing", "{health}");

    // One minute (the shortest interval) later, plus jitter, it is retried.
    service.set_time(t0 + 30_000);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(service.runs(push).await.len(), 1, "not before its backoff");
    service.set_time(t0 + 70_000);
    let retried = service
        .latest_run(push, |r| {
            r["trigger"] == "retry" && r["finished_at"].is_string()
        })
        .await;
    assert_eq!(retried["status"], "failed");

    // The destination appears; the next retry (two minutes on) succeeds, and
    // then nothing more is queued.
    crate::support::bare_repo(dest_dir.path(), "dest.git");
    service.set_time(t0 + 70_000 + 140_000);
    let ok = service
        .latest_run(push, |r| r["status"] == "succeeded")
        .await;
    assert_eq!(ok["trigger"], "retry");
    assert_eq!(refs_of(&dest), refs_of(&up.bare()));
    let runs = service.runs(push).await.len();
    service.set_time(t0 + 100 * HOUR_MS);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        service.runs(push).await.len(),
        runs,
        "a success ends the retries"
    );
    let health = service
        .call(
            reqwest::Method::GET,
            &format!("/mirrors/{push}/health"),
            None,
        )
        .await;
    assert_eq!(health["state"], "healthy", "{health}");
}
