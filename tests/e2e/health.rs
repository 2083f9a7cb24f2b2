//! Health from real runs, state-change alerts to a real receiver, and `/metrics`
//! read by a Prometheus text parser.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::support::{Api, LOCAL_REMOTES, Server, Upstream, sample, scrape};

const ALERT_SECRET: &str = "alert-signing-secret";

/// An HTTP endpoint on loopback that keeps every alert it receives.
struct AlertReceiver {
    url: String,
    alerts: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    arrived: Arc<Notify>,
}

impl AlertReceiver {
    async fn start() -> Self {
        let alerts = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let (store, notify) = (alerts.clone(), arrived.clone());
        let app = axum::Router::new().route(
            "/alerts",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (store, notify) = (store.clone(), notify.clone());
                async move {
                    store.lock().unwrap().push((headers, body));
                    notify.notify_waiters();
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/alerts", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            alerts,
            arrived,
        }
    }

    /// A service that takes local remotes and sends its alerts here.
    fn alerted_server(&self, extra: &[(&str, &str)]) -> Server {
        let mut envs = LOCAL_REMOTES.to_vec();
        envs.extend([
            ("MIRRORHOST_ALERT_WEBHOOK_URL", self.url.as_str()),
            ("MIRRORHOST_ALERT_WEBHOOK_SECRET", ALERT_SECRET),
        ]);
        envs.extend_from_slice(extra);
        Server::start(&envs)
    }

    /// Waits until `n` alerts arrived and returns their verified bodies.
    async fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let notified = self.arrived.notified();
            let received = self.alerts.lock().unwrap().clone();
            if received.len() >= n {
                return received.iter().map(|(h, b)| verified(h, b)).collect();
            }
            assert!(
                tokio::time::timeout_at(deadline, notified).await.is_ok(),
                "only {} of {n} alerts arrived",
                received.len()
            );
        }
    }
}

/// Checks the alert's HMAC-SHA256 signature and returns its JSON body.
fn verified(headers: &HeaderMap, body: &[u8]) -> Value {
    use hmac::{KeyInit, Mac};
    let header = headers["x-mirrorhost-signature-256"].to_str().unwrap();
    let hex_sig = header.strip_prefix("sha256=").unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(ALERT_SECRET.as_bytes()).unwrap();
    mac.update(body);
    mac.verify_slice(&hex::decode(hex_sig).unwrap())
        .expect("alert signature verifies");
    assert_eq!(headers["x-mirrorhost-event"], "mirror.state_changed");
    serde_json::from_slice(body).unwrap()
}

fn p95(mut durations: Vec<i64>) -> i64 {
    durations.sort_unstable();
    let rank = (durations.len() * 95).div_ceil(100);
    durations[rank - 1]
}

#[tokio::test]
async fn health_follows_real_runs_and_each_state_change_alerts_once() {
    let receiver = AlertReceiver::start().await;
    let server = receiver.alerted_server(&[("MIRRORHOST_MAX_FAILURES", "3")]);
    let api = Api::new(&server);
    let up = Upstream::with_main();
    let id = api
        .create(
            "pull",
            json!({"project_id": "health/p", "url": up.url(), "update_interval": 3600}),
        )
        .await;
    let healthy = Upstream::new();
    healthy.commit("main", "b");
    healthy.push(&["main"]);
    let other = api
        .create(
            "pull",
            json!({"project_id": "health/q", "url": healthy.url()}),
        )
        .await;
    assert_eq!(api.sync(other).await["status"], "succeeded");

    let (_, fresh) = api.get(&format!("/api/v1/mirrors/{id}/health")).await;
    assert_eq!(fresh["state"], "healthy");
    assert_eq!(fresh["total_updates"], 0);
    assert_eq!(fresh["success_rate"], Value::Null);

    let first = api.sync(id).await;
    assert_eq!(first["status"], "succeeded");
    // The upstream goes away: every run now fails.
    let moved = up.dir.path().join("gone.git");
    std::fs::rename(up.bare(), &moved).unwrap();
    for _ in 0..2 {
        assert_eq!(api.sync(id).await["status"], "failed");
    }
    let (status, h) = api.get(&format!("/api/v1/mirrors/{id}/health")).await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["state"], "failing");
    assert_eq!(
        (
            &h["total_updates"],
            &h["successful_updates"],
            &h["failed_updates"]
        ),
        (&json!(3), &json!(1), &json!(2))
    );
    assert_eq!(h["success_rate"], 33.33);
    assert_eq!(h["consecutive_failures"], 2);
    assert_eq!(h["last_successful_update_at"], first["finished_at"]);
    assert!(h["last_error"].as_str().unwrap().contains("git"), "{h}");

    // The third failure in a row hard-fails it (MIRRORHOST_MAX_FAILURES=3).
    let third = api.sync(id).await;
    assert_eq!(third["status"], "failed");
    let (_, h) = api.get(&format!("/api/v1/mirrors/{id}/health")).await;
    assert_eq!(h["state"], "hard_failed");
    assert_eq!(h["consecutive_failures"], 3);
    assert_eq!(h["last_update_at"], third["finished_at"]);
    assert_eq!(h["last_error"], third["error"]);

    let (_, runs) = api.get(&format!("/api/v1/mirrors/{id}/runs")).await;
    let durations: Vec<i64> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["duration_ms"].as_i64().unwrap())
        .collect();
    assert_eq!(
        h["average_duration_ms"],
        durations.iter().sum::<i64>() / durations.len() as i64
    );
    assert_eq!(h["p95_duration_ms"], p95(durations.clone()));
    let (_, windowed) = api
        .get(&format!("/api/v1/mirrors/{id}/health?window=2"))
        .await;
    assert_eq!(
        (&windowed["total_updates"], &windowed["success_rate"]),
        (&json!(2), &json!(0.0))
    );
    assert_eq!(windowed["p95_duration_ms"], p95(durations[..2].to_vec()));

    let (_, listed) = api.get("/api/v1/health/unhealthy").await;
    let ids: Vec<i64> = listed["mirrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mirror_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![id], "the healthy mirror {other} is not listed");
    let (_, strict) = api
        .get("/api/v1/health/unhealthy?min_success_rate=20&window=1")
        .await;
    assert_eq!(
        strict["mirrors"][0]["mirror_id"], id,
        "hard-failed is always listed"
    );
    let (status, bad) = api
        .get("/api/v1/health/unhealthy?min_success_rate=120")
        .await;
    assert_eq!(
        (status, bad["error"]["field"].as_str()),
        (422, Some("min_success_rate"))
    );

    // Back: the upstream returns and a manual sync succeeds.
    std::fs::rename(&moved, up.bare()).unwrap();
    assert_eq!(api.sync(id).await["status"], "succeeded");
    let (_, h) = api.get(&format!("/api/v1/mirrors/{id}/health")).await;
    assert_eq!(h["state"], "healthy");
    assert_eq!(
        (&h["consecutive_failures"], &h["success_rate"]),
        (&json!(0), &json!(40.0))
    );
    assert_eq!(h["last_error"], Value::Null);

    // One alert per change, none per repeated failure, in order.
    let alerts = receiver.wait_for(3).await;
    let changes: Vec<(&str, &str)> = alerts
        .iter()
        .map(|a| (a["from"].as_str().unwrap(), a["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        changes,
        [
            ("healthy", "failing"),
            ("failing", "hard_failed"),
            ("hard_failed", "healthy")
        ]
    );
    assert!(alerts.iter().all(|a| a["mirror_id"] == id));
    assert_eq!(alerts[1]["health"]["consecutive_failures"], 3);

    // Disabling is a change too; the mirror then shows as disabled.
    let (status, _) = api
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/mirrors/{id}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200);
    let alerts = receiver.wait_for(4).await;
    assert_eq!(
        (alerts[3]["from"].as_str(), alerts[3]["to"].as_str()),
        (Some("healthy"), Some("disabled"))
    );
    assert_eq!(receiver.alerts.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn updates_recorded_from_outside_count_in_health_and_alert() {
    let receiver = AlertReceiver::start().await;
    let server = receiver.alerted_server(&[]);
    let api = Api::new(&server);
    let up = Upstream::with_main();
    let id = api
        .create("pull", json!({"project_id": "outside/p", "url": up.url()}))
        .await;
    assert_eq!(api.sync(id).await["status"], "succeeded");
    let runs = format!("/api/v1/mirrors/{id}/runs");

    let (status, failed) = api
        .post(
            &runs,
            json!({"success": false, "duration_ms": 1500, "error": "cron script: timed out"}),
        )
        .await;
    assert_eq!(status, 201, "{failed}");
    assert_eq!(
        (
            &failed["trigger"],
            &failed["status"],
            &failed["duration_ms"]
        ),
        (&json!("external"), &json!("failed"), &json!(1500))
    );
    assert_eq!(failed["error"], "cron script: timed out");
    assert!(failed["started_at"].as_str() < failed["finished_at"].as_str());
    let (status, _) = api
        .post(&runs, json!({"success": false, "duration_ms": 2500}))
        .await;
    assert_eq!(status, 201);

    let (_, h) = api.get(&format!("/api/v1/mirrors/{id}/health")).await;
    assert_eq!(
        (&h["total_updates"], &h["failed_updates"], &h["state"]),
        (&json!(3), &json!(2), &json!("failing")),
        "{h}"
    );
    assert_eq!(h["success_rate"], 33.33);
    assert_eq!(h["consecutive_failures"], 2);
    let (_, listed) = api.get(&format!("{runs}?status=failed")).await;
    assert_eq!(listed["runs"].as_array().unwrap().len(), 2, "{listed}");
    let alerts = receiver.wait_for(1).await;
    assert_eq!(
        (alerts[0]["from"].as_str(), alerts[0]["to"].as_str()),
        (Some("healthy"), Some("failing"))
    );

    let (status, ok) = api
        .post(&runs, json!({"success": true, "duration_ms": 0}))
        .await;
    assert_eq!((status, &ok["status"]), (201, &json!("succeeded")));
    let (_, h) = api.get(&format!("/api/v1/mirrors/{id}/health")).await;
    assert_eq!(
        (&h["state"], &h["last_error"]),
        (&json!("healthy"), &Value::Null)
    );

    // Each refusal names its field, and records nothing.
    for (body, field) in [
        (json!({"success": true, "duration_ms": -1}), "duration_ms"),
        (
            json!({"success": true, "duration_ms": 2147483648_i64}),
            "duration_ms",
        ),
        (
            json!({"success": true, "duration_ms": 5, "error": "x"}),
            "error",
        ),
        (
            json!({"success": false, "duration_ms": 5, "error": "x".repeat(4097)}),
            "error",
        ),
        (json!({"success": "yes", "duration_ms": 5}), "success"),
        (json!({"duration_ms": 5}), "success"),
        (
            json!({"success": true, "duration_ms": 5, "trigger": "manual"}),
            "trigger",
        ),
    ] {
        let (status, err) = api.post(&runs, body).await;
        assert_eq!(
            (status, err["error"]["field"].as_str()),
            (422, Some(field)),
            "{err}"
        );
    }
    let (_, h) = api.get(&format!("/api/v1/mirrors/{id}/health")).await;
    assert_eq!(h["total_updates"], 4);
    // An empty error is no error.
    let (status, ok) = api
        .post(
            &runs,
            json!({"success": true, "duration_ms": 1, "error": ""}),
        )
        .await;
    assert_eq!((status, &ok["error"]), (201, &Value::Null), "{ok}");
    let (status, _) = api
        .post(
            "/api/v1/mirrors/999/runs",
            json!({"success": true, "duration_ms": 1}),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_alert_url_without_a_secret_is_refused_at_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mirrorhost"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--alert-webhook-url",
            "http://127.0.0.1:9/x",
        ])
        .env_remove("MIRRORHOST_ALERT_WEBHOOK_SECRET")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("alert_webhook_secret"), "{stderr}");
}

#[tokio::test]
async fn metrics_count_runs_bytes_plugins_and_webhooks() {
    let server = Server::start(LOCAL_REMOTES);
    let api = Api::new(&server);
    let up = Upstream::with_main();
    let id = api
        .create(
            "pull",
            // A branch regex: a mirror that configures no filter runs no plugin.
            json!({"project_id": "metrics/p", "url": up.url(), "mirror_branch_regex": "^main$"}),
        )
        .await;
    let broken = api
        .create(
            "pull",
            json!({"project_id": "metrics/q", "url": "file:///nonexistent/repo.git"}),
        )
        .await;
    assert_eq!(api.sync(id).await["status"], "succeeded");
    assert_eq!(api.sync(broken).await["status"], "failed");
    let hook = reqwest::Client::new()
        .post(server.url("/hooks/github"))
        .header("x-github-event", "push")
        .header("x-github-delivery", "d-1")
        .header("x-hub-signature-256", "sha256=00")
        .body(r#"{"repository":{"clone_url":"https://github.com/nobody/none.git"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(hook.status(), 404);

    let (scrape, text) = scrape(&server).await;

    let runs = "mirrorhost_runs_total";
    assert_eq!(
        sample(
            &scrape,
            runs,
            &[("direction", "pull"), ("result", "succeeded")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &scrape,
            runs,
            &[("direction", "pull"), ("result", "failed")]
        ),
        1.0
    );
    assert!(
        sample(
            &scrape,
            "mirrorhost_bytes_transferred_total",
            &[("direction", "pull")]
        ) > 0.0
    );
    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == "mirrorhost_run_duration_seconds")
        .expect("a duration histogram");
    match &histogram.value {
        prometheus_parse::Value::Histogram(buckets) => {
            let all = buckets
                .iter()
                .find(|b| b.less_than == f64::INFINITY)
                .unwrap();
            assert_eq!(all.count, 2.0);
        }
        other => panic!("not a histogram: {other:?}"),
    }
    assert!(
        sample(
            &scrape,
            "mirrorhost_plugin_calls_total",
            &[("plugin", "regex-filter"), ("result", "ok")]
        ) >= 1.0
    );
    assert!(
        sample(
            &scrape,
            "mirrorhost_plugin_fuel_consumed_total",
            &[("plugin", "regex-filter")]
        ) > 0.0
    );
    assert_eq!(
        sample(
            &scrape,
            "mirrorhost_webhook_deliveries_total",
            &[("provider", "github"), ("result", "not_found")]
        ),
        1.0
    );
    assert_eq!(sample(&scrape, "mirrorhost_queue_depth", &[]), 0.0);
    assert!(
        text.contains("# HELP mirrorhost_runs_total Finished runs"),
        "described"
    );
    assert_eq!(sample(&scrape, "mirrorhost_running_jobs", &[]), 0.0);
}

#[tokio::test]
async fn json_logs_carry_the_run_span_with_mirror_and_trigger() {
    let mut envs = LOCAL_REMOTES.to_vec();
    envs.push(("MIRRORHOST_LOG_FORMAT", "json"));
    let server = Server::start(&envs);
    let api = Api::new(&server);
    let up = Upstream::with_main();
    let id = api
        .create("pull", json!({"project_id": "logs/p", "url": up.url()}))
        .await;
    assert_eq!(api.sync(id).await["status"], "succeeded");
    let (_, log) = server.terminate();
    let events: Vec<Value> = log
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let done = events
        .iter()
        .find(|e| e["fields"]["message"] == "run succeeded")
        .expect("a run succeeded event");
    assert_eq!(done["span"]["name"], "run");
    assert_eq!(done["span"]["mirror_id"], id);
    assert_eq!(done["span"]["trigger"], "manual");
}
