//! Dispatch throughput: `cargo bench --bench dispatch [-- --mirrors N --rounds R]`.
//!
//! N pull mirrors (default 300) of one upstream on this machine (file://),
//! each synced once; then R rounds (default 3) of a manual sync of every
//! mirror, queued through the nodes in turn, each run a no-op (nothing to
//! fetch, no ref moves): runs per second from the first queue call to the
//! last run's end. Three setups in one run: one node on SQLite, one node on
//! PostgreSQL, three nodes on PostgreSQL (`MIRRORHOST_BENCH_POSTGRES`,
//! default `postgres://root@127.0.0.1:5432/test`; a fresh schema per setup).
//! Every setup runs at most 8 runs at once (the caps hold cluster-wide), all
//! nodes on this one machine. The baseline is what a cron script pays for
//! the same check: `git fetch` of each mirror's copy, one after another.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mirrorhost::store::{Location, Store};
use serde_json::json;

mod common;
use common::child::{Service, call};
use common::git_cli::git;

fn arg(name: &str, default: u64) -> u64 {
    common::arg(name).map_or(default, |v| v.parse().expect("a number"))
}

/// One way to run the service: how many nodes, on which database.
struct Setup {
    name: &'static str,
    nodes: usize,
    postgres: bool,
}

const SETUPS: [Setup; 3] = [
    Setup {
        name: "1 node, SQLite",
        nodes: 1,
        postgres: false,
    },
    Setup {
        name: "1 node, PostgreSQL",
        nodes: 1,
        postgres: true,
    },
    Setup {
        name: "3 nodes, PostgreSQL",
        nodes: 3,
        postgres: true,
    },
];

fn main() {
    let mirrors = arg("--mirrors", 300) as usize;
    let rounds = arg("--rounds", 3) as usize;
    let work = tempfile::tempdir().expect("temp dir");
    let upstream = work.path().join("upstream.git");
    git(
        work.path(),
        &["init", "-q", "--bare", "-b", "main", "upstream.git"],
    );
    git(work.path(), &["clone", "-q", "upstream.git", "seed"]);
    let seed = work.path().join("seed");
    std::fs::write(seed.join("f"), "one\n").expect("write");
    git(&seed, &["add", "f"]);
    git(&seed, &["commit", "-q", "-m", "one"]);
    git(&seed, &["push", "-q", "origin", "HEAD:main"]);
    let url = format!("file://{}", upstream.display());
    let postgres = std::env::var("MIRRORHOST_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());

    let runtime = common::runtime();
    let mut rates = Vec::new();
    for setup in &SETUPS {
        let root = work.path().join(setup.name.replace([' ', ','], "_"));
        let location = match setup.postgres {
            true => Location::Postgres(fresh_schema(&postgres, &root)),
            false => Location::Sqlite(root.join("node0/mirrorhost.db")),
        };
        let rate = runtime.block_on(measure(setup, &root, &location, &url, mirrors, rounds));
        rates.push(rate);
    }
    let baseline = cron_baseline(work.path(), &url, mirrors.min(100));
    println!("no-op syncs per second, {mirrors} mirrors, {rounds} rounds each:");
    for (setup, rate) in SETUPS.iter().zip(&rates) {
        println!(
            "  {:<22} {rate:>7.1} runs/s  ({:.2}x SQLite, {:.2}x cron's git fetch)",
            setup.name,
            rate / rates[0],
            rate / baseline
        );
    }
    println!("  cron baseline: git fetch, one mirror after another: {baseline:.1} fetches/s");
}

/// A schema of its own in the bench database, and the URL that uses it.
fn fresh_schema(base: &str, root: &Path) -> String {
    let setup = root.file_name().and_then(|n| n.to_str()).unwrap_or("x");
    let name = format!("bench_{}_{}", std::process::id(), setup.to_lowercase());
    common::test_postgres::schema_in(base, &name)
}

/// Runs per second of `rounds` rounds of no-op syncs of `mirrors` mirrors.
async fn measure(
    setup: &Setup,
    root: &Path,
    location: &Location,
    url: &str,
    mirrors: usize,
    rounds: usize,
) -> f64 {
    let key = hex::encode(rand::random::<[u8; 32]>());
    let mut envs = vec![
        ("MIRRORHOST_MASTER_KEY", key.as_str()),
        ("MIRRORHOST_MAX_CONCURRENT_RUNS", "8"),
        ("MIRRORHOST_MAX_RUNS_PER_HOST", "8"),
        ("RUST_LOG", "warn"),
    ];
    if let Location::Postgres(database) = location {
        envs.push(("MIRRORHOST_DATABASE_URL", database.as_str()));
    }
    let nodes: Vec<Service> = (0..setup.nodes)
        .map(|n| Service::start(&root.join(format!("node{n}")), &envs, Stdio::null()))
        .collect();
    let http = reqwest::Client::new();
    for node in &nodes {
        node.ready(&http).await;
    }
    let mut ids = Vec::new();
    for i in 0..mirrors {
        let body = json!({"project_id": format!("bench/p{i}"), "url": url});
        let node = &nodes[i % nodes.len()];
        let (status, made) = call(&http, "POST", &node.url("/api/v1/mirrors/pull"), body)
            .await
            .expect("create");
        assert_eq!(status, 201, "{made}");
        ids.push(made["mirror_id"].as_i64().expect("id"));
    }
    let store = open(location).await;
    // The first round fetches; the measured ones find nothing new.
    sync_all(&http, &nodes, &ids).await;
    drained(&store).await;
    let started = Instant::now();
    for _ in 0..rounds {
        sync_all(&http, &nodes, &ids).await;
        drained(&store).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    for node in nodes {
        node.kill();
    }
    (mirrors * rounds) as f64 / elapsed
}

async fn open(location: &Location) -> std::sync::Arc<Store> {
    let location = location.clone();
    let store = tokio::task::spawn_blocking(move || Store::open_at(&location))
        .await
        .expect("open task")
        .expect("open the store");
    std::sync::Arc::new(store)
}

/// A manual sync of every mirror, through the nodes in turn.
async fn sync_all(http: &reqwest::Client, nodes: &[Service], ids: &[i64]) {
    for (i, id) in ids.iter().enumerate() {
        let node = &nodes[i % nodes.len()];
        let path = format!("/api/v1/mirrors/{id}/sync");
        let (status, queued) = call(http, "POST", &node.url(&path), json!({}))
            .await
            .expect("sync");
        assert_eq!(status, 202, "{queued}");
    }
}

/// Waits until no job is pending or running.
async fn drained(store: &std::sync::Arc<Store>) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let store = store.clone();
        let (pending, running) = tokio::task::spawn_blocking(move || {
            store.with(|c| mirrorhost::store::runs::job_counts(c))
        })
        .await
        .expect("count task")
        .expect("job counts");
        if pending + running == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "runs never drained");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `git fetch` per second of `count` up-to-date mirror copies, one after
/// another, as a cron script would check them.
fn cron_baseline(root: &Path, url: &str, count: usize) -> f64 {
    let copies = root.join("cron");
    std::fs::create_dir_all(&copies).expect("cron dir");
    for i in 0..count {
        git(
            &copies,
            &["clone", "-q", "--mirror", url, &format!("p{i}.git")],
        );
    }
    let started = Instant::now();
    for i in 0..count {
        git(
            &copies.join(format!("p{i}.git")),
            &["fetch", "-q", "--prune", "origin"],
        );
    }
    count as f64 / started.elapsed().as_secs_f64()
}
