//! Health at scale and a long history: `cargo bench --bench endurance`.
//!
//! 1. Health at scale: 20,000 mirrors with 100 finished runs each, written
//!    through the store's own run path (enqueue, start, finish), 5% of the
//!    mirrors failing half their runs; then the service on that database
//!    answers `GET /api/v1/health/unhealthy`, a mirror's health, and pages of
//!    the mirrors list over HTTP. Targets: under 50 ms (issue 16, item 4;
//!    issue 18, item 3).
//! 2. A soak on simulated time: mirrors on 5-minute schedules (each step runs
//!    every mirror once through the same path, one in fifty failing), one
//!    webhook delivery per mirror an hour, one conflict per mirror a day,
//!    resolved at once; the service's retention pass every simulated hour.
//!    The database's size (file and WAL) is printed at the end of each
//!    retention window and at the end, with the health queries' time.
//!    Target (item 3): the end no bigger than after the longest window.
//!
//! Arguments (after `--`): `--mirrors N` (default 20000 for part 1),
//! `--soak-mirrors N` (default 1000), `--days D` (default 365), `--only
//! health|soak`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use mirrorhost::clock::Clock;
use mirrorhost::config::Overrides;
use mirrorhost::store::{
    self, ConflictStatus, MirrorSettings, NewConflict, RunOutcome, Store, Trigger,
};

mod common;

/// The first page of one row: a mirror's latest run.
const LATEST: store::Page = store::Page {
    page: 1,
    per_page: 1,
};
const TOKEN: &str = "bench-token";
const STEP_MS: i64 = 5 * 60 * 1000;
const DAY_MS: i64 = 86_400_000;

#[derive(Debug)]
struct Simulated(AtomicI64);

impl Clock for Simulated {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

struct Args {
    mirrors: usize,
    soak_mirrors: usize,
    days: i64,
    only: Option<String>,
}

fn args() -> Args {
    let mut args = Args {
        mirrors: 20_000,
        soak_mirrors: 1_000,
        days: 365,
        only: None,
    };
    let given: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < given.len() {
        let value = given.get(i + 1).cloned().unwrap_or_default();
        match given[i].as_str() {
            "--mirrors" => args.mirrors = value.parse().expect("--mirrors N"),
            "--soak-mirrors" => args.soak_mirrors = value.parse().expect("--soak-mirrors N"),
            "--days" => args.days = value.parse().expect("--days D"),
            "--only" => args.only = Some(value),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    args
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if args.only.as_deref() != Some("soak") {
        runtime.block_on(health_at_scale(args.mirrors));
    }
    if args.only.as_deref() != Some("health") {
        runtime.block_on(soak(args.soak_mirrors, args.days));
    }
}

fn add_mirrors(store: &Store, count: usize) -> Vec<i64> {
    (0..count)
        .map(|i| {
            let name = format!("group{}/project{i}", i % 100);
            let settings = MirrorSettings::pull(
                &name,
                &format!("https://git.example.com/{name}"),
                "git.example.com",
            );
            store
                .with(|c| store::mirrors::insert(c, &settings))
                .expect("mirror")
                .mirror_id
        })
        .collect()
}

/// Runs every mirror once through the store's run path; `fails` says which
/// mirror's run fails.
fn run_all(store: &Store, ids: &[i64], fails: impl Fn(i64) -> bool) {
    for id in ids {
        store
            .with(|c| store::runs::enqueue(c, *id, Trigger::Schedule))
            .expect("enqueue");
    }
    let terms = store::cluster::Terms {
        global: ids.len(),
        per_host: ids.len(),
        lease_ms: 60_000,
    };
    let jobs = store
        .with(|c| store::cluster::claim(c, "bench", terms, |_| true))
        .expect("claim");
    for job in jobs {
        let failed = fails(job.mirror_id);
        let outcome = RunOutcome {
            succeeded: !failed,
            duration_ms: 200 + job.run_id % 700,
            error: failed.then(|| "remote hung up unexpectedly".to_string()),
            ..RunOutcome::default()
        };
        store
            .with(|c| store::runs::finish(c, job.job_id, job.run_id, &outcome))
            .expect("finish");
    }
}

/// The median time of `rounds` GETs of `path`, and the last answer's size.
async fn time_get(addr: std::net::SocketAddr, path: &str, rounds: usize) -> (Duration, usize) {
    time_get_as(
        addr,
        path,
        rounds,
        &format!("Bearer {TOKEN}"),
        "authorization",
    )
    .await
}

/// As `time_get`, with `value` in the header `name` (the token, or the
/// console's session cookie).
async fn time_get_as(
    addr: std::net::SocketAddr,
    path: &str,
    rounds: usize,
    value: &str,
    name: &str,
) -> (Duration, usize) {
    let http = reqwest::Client::new();
    let mut times = Vec::with_capacity(rounds);
    let mut size = 0;
    for _ in 0..rounds {
        let started = Instant::now();
        let answer = http
            .get(format!("http://{addr}{path}"))
            .header(name, value)
            .send()
            .await
            .expect("GET");
        assert!(answer.status().is_success(), "{path}: {}", answer.status());
        size = answer.bytes().await.expect("body").len();
        times.push(started.elapsed());
    }
    times.sort_unstable();
    (times[rounds / 2], size)
}

async fn health_at_scale(mirrors: usize) {
    let work = tempfile::tempdir().expect("temp dir");
    let data = work.path().join("data");
    let app = common::app(&data, Overrides::default()).await;
    let ids = add_mirrors(&app.store, mirrors);
    let started = Instant::now();
    for round in 0..100_i64 {
        // Every twentieth mirror fails every other run.
        run_all(&app.store, &ids, |id| id % 20 == 0 && round % 2 == 0);
    }
    let fill = started.elapsed();
    let runs = mirrors * 100;
    println!(
        "health at scale: {mirrors} mirrors, {runs} runs written in {:.1} s ({:.0} runs/s)",
        fill.as_secs_f64(),
        runs as f64 / fill.as_secs_f64()
    );
    let addr = common::serve(app.clone()).await;
    // The service's retention pass at start walks every mirror; let it end.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (unhealthy, size) = time_get(addr, "/api/v1/health/unhealthy", 21).await;
    let one = format!("/api/v1/mirrors/{}/health", ids[ids.len() / 2]);
    let (single, _) = time_get(addr, &one, 21).await;
    println!(
        "  GET /api/v1/health/unhealthy   median {:>7.2} ms  ({} mirrors listed, {size} bytes)",
        unhealthy.as_secs_f64() * 1e3,
        mirrors / 20
    );
    println!(
        "  GET /api/v1/mirrors/ID/health  median {:>7.2} ms",
        single.as_secs_f64() * 1e3
    );
    for path in [
        "/api/v1/mirrors",
        "/api/v1/mirrors?page=500&per_page=20",
        "/api/v1/mirrors?state=failing&per_page=100",
    ] {
        let (took, size) = time_get(addr, path, 21).await;
        println!(
            "  GET {path:<42} median {:>7.2} ms  ({size} bytes)",
            took.as_secs_f64() * 1e3
        );
    }
    console_pages(addr, ids[ids.len() / 2]).await;
}

/// The console's pages over the same mirrors (issue 18, item 6: the first
/// page under 1 s), signed in as a browser is.
async fn console_pages(addr: std::net::SocketAddr, mirror: i64) {
    let login = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(format!("http://{addr}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .expect("login");
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("cookie")
        .to_string();
    for path in [
        "/".to_string(),
        "/?page=200".into(),
        "/?order_by=last_update_at&sort=desc".into(),
        "/?state=failing".into(),
        "/?q=project1999".into(),
        format!("/mirrors/{mirror}"),
    ] {
        let (took, size) = time_get_as(addr, &path, 21, &cookie, "cookie").await;
        println!(
            "  console GET {path:<34} median {:>7.2} ms  ({size} bytes)",
            took.as_secs_f64() * 1e3
        );
    }
}

fn database_bytes(data: &Path) -> u64 {
    ["mirrorhost.db", "mirrorhost.db-wal"]
        .iter()
        .map(|f| std::fs::metadata(data.join(f)).map_or(0, |m| m.len()))
        .sum()
}

fn conflict(step: i64) -> NewConflict {
    NewConflict {
        ref_name: format!("refs/heads/topic-{step}"),
        local_oid: format!("{:040x}", step),
        remote_oid: format!("{:040x}", step + 1),
        merge_base: None,
        ahead: 1,
        behind: 2,
        strategy: "theirs".into(),
        status: ConflictStatus::Resolved,
        resolution: Some(store::Resolution::Theirs),
    }
}

async fn soak(mirrors: usize, days: i64) {
    let work = tempfile::tempdir().expect("temp dir");
    let data = work.path().join("data");
    let start_ms = chrono::Utc::now().timestamp_millis();
    let clock = Arc::new(Simulated(AtomicI64::new(start_ms)));
    let built = common::in_process_app(&data, Overrides::default()).await;
    let app = Arc::new(built.with_clock(clock.clone()));
    let ids = add_mirrors(&app.store, mirrors);
    let keep = app.config.retention;
    let windows = [
        i64::from(keep.delivery_days),
        i64::from(keep.run_days),
        i64::from(keep.conflict_days),
    ];
    let longest = *windows.iter().max().expect("windows");
    println!(
        "soak: {mirrors} mirrors on 5-minute schedules for {days} simulated days; retention {keep:?}"
    );
    let started = Instant::now();
    let mut size_after_window = None;
    let steps_per_day = DAY_MS / STEP_MS;
    for step in 1..=days * steps_per_day {
        clock.0.store(start_ms + step * STEP_MS, Ordering::Relaxed);
        run_all(&app.store, &ids, |id| (id + step) % 50 == 0);
        if step % 12 == 0 {
            for id in &ids {
                let delivery = format!("{id}-{step}");
                app.store
                    .with(|c| store::webhooks::first_delivery(c, "github", &delivery))
                    .expect("delivery");
            }
            app.prune_history().expect("retention");
        }
        if step % steps_per_day == 0 {
            let day = step / steps_per_day;
            let run_id = app
                .store
                .with(|c| store::runs::page(c, ids[0], None, LATEST))
                .expect("runs")
                .0[0]
                .run_id;
            for id in &ids {
                app.store
                    .with(|c| store::conflicts::record(c, *id, run_id, &[conflict(step)]))
                    .expect("conflict");
            }
            if windows.contains(&day) || day == days || day % 30 == 0 {
                println!(
                    "  day {day:>3}: database {:>6.1} MiB, {:.0} s so far",
                    database_bytes(&data) as f64 / 1048576.0,
                    started.elapsed().as_secs_f64()
                );
            }
            if day == longest {
                size_after_window = Some(database_bytes(&data));
            }
        }
    }
    let end = database_bytes(&data);
    let runs = mirrors as i64 * days * steps_per_day;
    println!(
        "  {runs} runs in {:.0} s ({:.0} runs/s)",
        started.elapsed().as_secs_f64(),
        runs as f64 / started.elapsed().as_secs_f64()
    );
    if let Some(window) = size_after_window {
        println!(
            "  end / after the {longest}-day window: {:.1} MiB / {:.1} MiB = {:.2}x",
            end as f64 / 1048576.0,
            window as f64 / 1048576.0,
            end as f64 / window as f64
        );
    }
    let addr = common::serve(app.clone()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (unhealthy, _) = time_get(addr, "/api/v1/health/unhealthy", 21).await;
    let one = format!("/api/v1/mirrors/{}/health", ids[0]);
    let (single, _) = time_get(addr, &one, 21).await;
    println!(
        "  health queries at the end: unhealthy {:.2} ms, one mirror {:.2} ms (medians)",
        unhealthy.as_secs_f64() * 1e3,
        single.as_secs_f64() * 1e3
    );
}
