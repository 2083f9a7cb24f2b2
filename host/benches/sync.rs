//! Sync engine benchmark: `cargo bench --bench sync`.
//!
//! 1. Initial pull mirror of a large generated repository (100k objects, 500 refs)
//!    against `git clone --mirror` of the same repository: wall time and peak
//!    memory of each, as separate processes (the engine runs in a re-exec of this
//!    binary), both over smart HTTP from the same `git http-backend`, the way
//!    production remotes are reached (file:// is refused by default, and libgit2
//!    packs file:// remotes in-process, which is not what we ship).
//! 2. A no-op sync of 200 mirrors against a `git fetch` loop over the same 200.
//!
//! Targets (issue 7): initial pull at most 1.0x git's time and peak memory; the
//! no-op sync at least 10x faster.

mod common;
use common::{bare, git};

#[path = "../../tests/fixtures/history.rs"]
mod history;
// The test suite's smart-HTTP server; the bench uses only its unauthenticated side.
#[allow(dead_code, clippy::unwrap_used)]
#[path = "../../tests/e2e/http_git.rs"]
mod http_git;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use history::{History, generate};
use mirrorhost::plugins::{Limits, Registry, Runtime};
use mirrorhost::secrets::MasterKey;
use mirrorhost::store::{self, Mirror, MirrorSettings, Project, Store};
use mirrorhost::sync::{Engine, PackIndexer};

const CHILD: &str = "child-pull";
const NOOP_MIRRORS: usize = 200;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(CHILD) {
        child_pull(&args[2], Path::new(&args[3]));
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    initial_pull(work.path());
    noop_sync(work.path());
    capped_pull(work.path());
}

fn initial_pull(work: &Path) {
    let upstream = bare(work, "big.git");
    let history = History {
        commits: 25_000,
        blob_bytes: 200,
        dirs: 50,
        refs_every: 100,
    };
    let started = Instant::now();
    generate(&upstream, history);
    let objects = git(&upstream, &["rev-list", "--all", "--objects"])
        .lines()
        .count();
    let refs = git(&upstream, &["for-each-ref"]).lines().count();
    println!(
        "generated {objects} objects, {refs} refs in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // Both sides fetch from the same git http-backend; the server runs on this
    // runtime's threads until the comparison is done.
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let server = runtime.block_on(http_git::HttpGit::start(work));
    let url = server.url("big.git");

    let clone = work.join("clone.git");
    let git_run = measure(
        Command::new("git")
            .args(["clone", "-q", "--mirror", &url])
            .arg(&clone),
    );
    let data = work.join("engine");
    let exe = std::env::current_exe().expect("own path");
    let ours = measure(Command::new(exe).args([CHILD, &url]).arg(&data));
    let mirrored = data.join("repos").join("bench/big.git");
    assert_eq!(
        git(&mirrored, &["for-each-ref"]),
        git(&clone, &["for-each-ref"]),
        "the two mirrors differ"
    );
    report("git clone --mirror (http)", &git_run);
    report("mirrorhost initial pull (http)", &ours);
    let memory: Vec<f64> = std::fs::read_to_string(data.join("memory-kib"))
        .expect("memory samples")
        .split_whitespace()
        .map(|kib| kib.parse::<f64>().expect("number") / 1024.0)
        .collect();
    println!(
        "  of which the service before the transfer (engine, plugins, store): {:.1} MiB \
         (anonymous {:.1}, file-backed {:.1})",
        memory[0] + memory[1],
        memory[0],
        memory[1]
    );
    println!(
        "  highest sampled during the pull: anonymous {:.1} MiB, file-backed {:.1} MiB",
        memory[2], memory[3]
    );
    println!(
        "initial pull ratio vs git: time {:.2}x, peak memory {:.2}x  (target <= 1.0x both)",
        ours.wall.as_secs_f64() / git_run.wall.as_secs_f64(),
        ours.max_rss_kib as f64 / git_run.max_rss_kib as f64
    );
}

/// Runs in the re-executed child: one pull of `url` into a fresh service state.
fn child_pull(url: &str, data: &Path) {
    std::fs::create_dir_all(data).expect("data dir");
    let service = Service::open(data);
    let store = &service.store;
    let (mirror, project) = mirror(store, "bench/big", url);
    // What the service holds before the transfer, and the highest readings
    // during it, for the parent's report: which kind of memory the pull costs.
    let before = resident();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = (0, 0);
            while !done.load(Ordering::Relaxed) {
                let (anon, file) = resident();
                peak = (peak.0.max(anon), peak.1.max(file));
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        })
    };
    let engine = service.engine();
    engine.run(&mirror, &project, false).expect("pull");
    done.store(true, Ordering::Relaxed);
    let peak = sampler.join().expect("sampler");
    let readings = format!("{} {} {} {}", before.0, before.1, peak.0, peak.1);
    std::fs::write(data.join("memory-kib"), readings).expect("write");
}

fn noop_sync(work: &Path) {
    let upstreams = work.join("upstreams");
    std::fs::create_dir_all(&upstreams).expect("dir");
    let clones = work.join("clones");
    std::fs::create_dir_all(&clones).expect("dir");
    let data = work.join("noop");
    std::fs::create_dir_all(&data).expect("dir");
    let service = Service::open(&data);
    let store = &service.store;
    let engine = service.engine();
    let mut mirrors = Vec::new();
    for i in 0..NOOP_MIRRORS {
        let upstream = bare(&upstreams, &format!("u{i}.git"));
        generate(
            &upstream,
            History {
                commits: 20,
                blob_bytes: 100,
                dirs: 2,
                refs_every: 5,
            },
        );
        let url = format!("file://{}", upstream.display());
        let (mirror, project) = mirror(store, &format!("noop/p{i}"), &url);
        engine.run(&mirror, &project, false).expect("initial pull");
        git(
            &clones,
            &[
                "clone",
                "-q",
                "--mirror",
                "--no-local",
                &url,
                &format!("c{i}.git"),
            ],
        );
        mirrors.push((mirror, project));
    }
    let started = Instant::now();
    for (mirror, project) in &mirrors {
        let report = engine.run(mirror, project, false).expect("no-op pull");
        assert!(!report.changed() && report.bytes_transferred == 0);
    }
    let ours = started.elapsed();
    let started = Instant::now();
    for i in 0..NOOP_MIRRORS {
        git(
            &clones.join(format!("c{i}.git")),
            &["fetch", "-q", "--prune", "origin"],
        );
    }
    let theirs = started.elapsed();
    println!(
        "no-op sync of {NOOP_MIRRORS} mirrors: mirrorhost {:.1} ms ({:.2} ms each), git fetch loop {:.1} ms ({:.2} ms each)",
        ours.as_secs_f64() * 1e3,
        ours.as_secs_f64() * 1e3 / NOOP_MIRRORS as f64,
        theirs.as_secs_f64() * 1e3,
        theirs.as_secs_f64() * 1e3 / NOOP_MIRRORS as f64,
    );
    println!(
        "no-op speed-up vs git: {:.1}x  (target >= 10x)",
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}

/// A 20 MB pull over smart HTTP with the mirror capped at 2 MB/s: about 10 s.
fn capped_pull(work: &Path) {
    const RATE: u64 = 2_000_000;
    let root = work.join("capped");
    std::fs::create_dir_all(&root).expect("dir");
    let upstream = bare(&root, "big.git");
    generate(
        &upstream,
        History {
            commits: 80,
            blob_bytes: 250_000,
            dirs: 1,
            refs_every: 0,
        },
    );
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let server = runtime.block_on(http_git::HttpGit::start(&root));
    let data = root.join("engine");
    std::fs::create_dir_all(&data).expect("dir");
    let service = Service::open(&data);
    let store = &service.store;
    let (mirror, project) = mirror(store, "bench/capped", &server.url("big.git"));
    let limits = store::bandwidth::Bandwidth {
        max_bytes_per_second: Some(RATE),
        ..Default::default()
    };
    store
        .with(|c| store::bandwidth::set(c, mirror.mirror_id, &limits))
        .expect("limits");
    let engine = service.engine();
    let started = Instant::now();
    let report = engine.run(&mirror, &project, false).expect("capped pull");
    let took = started.elapsed().as_secs_f64();
    let expected = report.bytes_transferred as f64 / RATE as f64;
    println!(
        "capped pull: {:.1} MB at {:.1} MB/s took {took:.2} s, expected {expected:.2} s: {:+.1}%  (target within 5%)",
        report.bytes_transferred as f64 / 1e6,
        RATE as f64 / 1e6,
        (took / expected - 1.0) * 100.0
    );
}

/// This process's resident set now, anonymous and file-backed, in KiB.
fn resident() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("RssAnon:"), field("RssFile:") + field("RssShmem:"))
}

/// The parts of the service a run needs, on `data`.
struct Service {
    store: Store,
    registry: Registry,
    master_key: MasterKey,
    repos: PathBuf,
    indexer: PackIndexer,
}

impl Service {
    fn open(data: &Path) -> Self {
        let cache = std::env::temp_dir().join("mirrorhost-bench-plugin-cache");
        let runtime = Runtime::new(Limits::default(), Some(cache)).expect("runtime");
        Self {
            store: Store::open(&data.join("mirrorhost.db")).expect("store"),
            registry: Registry::with_builtins(runtime).expect("plugins"),
            master_key: MasterKey::generate(),
            repos: data.join("repos"),
            indexer: PackIndexer {
                program: env!("CARGO_BIN_EXE_mirrorhost").into(),
                max_object_bytes: mirrorhost::sync::DEFAULT_MAX_OBJECT_BYTES,
            },
        }
    }

    /// The engine as the service runs it, without a global bandwidth cap.
    fn engine(&self) -> Engine<'_> {
        Engine {
            repos_dir: &self.repos,
            plugins: &self.registry,
            store: &self.store,
            master_key: &self.master_key,
            shared_bandwidth: None,
            progress: None,
            pack_indexer: &self.indexer,
        }
    }
}

fn mirror(store: &Store, project_id: &str, url: &str) -> (Mirror, Project) {
    let settings = MirrorSettings::pull(project_id, url, "local");
    let mirror = store
        .with(|c| store::mirrors::insert(c, &settings))
        .expect("insert");
    let project = store
        .with(|c| store::mirrors::ensure_project(c, project_id))
        .expect("project");
    (mirror, project)
}

struct Measured {
    wall: Duration,
    max_rss_kib: i64,
}

/// Runs `cmd` to completion; wall time and the child's peak resident set (wait4).
#[allow(unsafe_code)]
fn measure(cmd: &mut Command) -> Measured {
    let started = Instant::now();
    let child = cmd.spawn().expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child and not yet reaped; both pointers are valid.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    assert_eq!(reaped, pid, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed"
    );
    std::mem::forget(child);
    Measured {
        wall,
        max_rss_kib: usage.ru_maxrss,
    }
}

fn report(name: &str, m: &Measured) {
    println!(
        "{name:<32} {:>8.2} s  peak RSS {:>8.1} MiB",
        m.wall.as_secs_f64(),
        m.max_rss_kib as f64 / 1024.0
    );
}
