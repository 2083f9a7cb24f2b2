//! Webhook ingest benchmark: `cargo bench --bench webhooks` (needs `wrk`).
//!
//! wrk posts a signed GitHub push delivery to `/hooks/github` of the service,
//! in-process on loopback, and in the same run the same body to a bare axum
//! handler that only answers 200: the service's throughput as a share of the
//! bare handler's, and its p99 latency. Every delivery is parsed, matched to
//! its mirror, verified (HMAC-SHA256) and checked against the delivery table;
//! after the first, each is a replay answered 200, so no git work runs.
//!
//! Targets (issue 4): at least 0.5x the bare handler's throughput, p99 under 5 ms.

use std::process::Command;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use mirrorhost::config::Overrides;
use sha2::Sha256;

mod common;

const SECRET: &str = "bench-webhook-secret";
const DURATION: &str = "10s";

fn main() {
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk is not installed (Debian: apt-get install wrk); skipping");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let data = tempfile::tempdir().expect("temp dir");
    let body = serde_json::json!({
        "ref": "refs/heads/main",
        "after": "1111111111111111111111111111111111111111",
        "repository": {
            "full_name": "acme/widgets",
            "clone_url": "https://github.com/acme/widgets.git",
            "html_url": "https://github.com/acme/widgets"
        },
        "pusher": {"name": "octocat"}
    })
    .to_string();
    let (service, bare) = runtime.block_on(async {
        let app = service_app(data.path()).await;
        let service = serve(mirrorhost::api::router(app)).await;
        let bare = serve(
            axum::Router::new().route("/hooks/github", axum::routing::post(|| async { "ok" })),
        )
        .await;
        (service, bare)
    });
    let script = data.path().join("post.lua");
    std::fs::write(&script, lua(&body)).expect("script");
    let theirs = wrk(&format!("http://{bare}/hooks/github"), &script);
    let ours = wrk(&format!("http://{service}/hooks/github"), &script);
    println!(
        "bare axum handler        {:>10.0} req/s  p99 {:>6.2} ms",
        theirs.0, theirs.1
    );
    println!(
        "signed GitHub endpoint   {:>10.0} req/s  p99 {:>6.2} ms",
        ours.0, ours.1
    );
    println!(
        "throughput ratio: {:.2}x of the bare handler (target >= 0.5x); p99 {:.2} ms (target < 5 ms)",
        ours.0 / theirs.0,
        ours.1
    );
}

/// The service with one pull mirror of the payload's repository and its webhook secret.
async fn service_app(data: &std::path::Path) -> Arc<mirrorhost::service::App> {
    let app = common::app(data, Overrides::default()).await;
    let settings = mirrorhost::store::MirrorSettings::pull(
        "acme/widgets",
        "https://github.com/acme/widgets.git",
        "github.com",
    );
    app.store
        .with(|c| mirrorhost::store::mirrors::insert(c, &settings))
        .expect("mirror");
    app.set_webhook_secret("acme/widgets", SECRET)
        .expect("secret");
    app
}

async fn serve(router: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

fn lua(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    format!(
        "wrk.method = \"POST\"\n\
         wrk.body = [[{body}]]\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"X-GitHub-Event\"] = \"push\"\n\
         wrk.headers[\"X-GitHub-Delivery\"] = \"bench-delivery\"\n\
         wrk.headers[\"X-Hub-Signature-256\"] = \"sha256={signature}\"\n"
    )
}

/// Runs wrk for `DURATION` with 2 threads and 32 connections; (requests/s, p99 ms).
fn wrk(url: &str, script: &std::path::Path) -> (f64, f64) {
    let out = Command::new("wrk")
        .args(["-t2", "-c32", "-d", DURATION, "--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Non-2xx"), "{url} answered errors:\n{text}");
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no throughput in wrk output:\n{text}"));
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| millis(v.trim()))
        .unwrap_or_else(|| panic!("no p99 in wrk output:\n{text}"));
    (rps, p99)
}

/// wrk prints latencies like `812.00us`, `1.52ms`, `2.01s`.
fn millis(value: &str) -> f64 {
    let split = value
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        _ => f64::NAN,
    }
}
