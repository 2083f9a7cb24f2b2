//! Sync engine benchmark: `cargo bench --bench sync`.
//!
//! 1. Initial pull mirror of a large generated repository (100k objects, 500 refs)
//!    against `git clone --mirror` of the same repository: wall time (median
//!    of three) and peak memory (`memory`: the whole process tree, and each
//!    process in it: git's helpers and index-pack, or the service and its pack
//!    indexer child), each side as separate processes (the engine runs in a
//!    re-exec of this binary), both over smart HTTP from the same
//!    `git http-backend`, the way production remotes are reached; then the
//!    same over file:// (git: upload-pack and pack-objects; ours:
//!    pack-objects in the remote's repository, `sync::local_fetch`; issue
//!    15's target: within 1.5x of git's time and at most its memory).
//! 2. A no-op sync of 200 mirrors against a `git fetch` loop over the same 200.
//! 3. The initial pull of (1) over https from one TLS front, with a CA the
//!    bench makes: `git clone --mirror` (curl) against the engine with its
//!    TLS stream (`sync::tls_stream`; libgit2 is built without one of its
//!    own).
//!    `cargo bench --bench sync -- https` runs (1) and (3) only.
//! 4. The initial pull of a repository with 200 MB of LFS objects (40 of 5
//!    MB) from giftless behind `git http-backend`, against `git clone
//!    --mirror` followed by `git lfs fetch --all` of it (issue 21): time
//!    and peak memory of each side's whole process tree.
//!    `cargo bench --bench sync -- lfs` runs (4) only; `--lfs-objects N
//!    --lfs-object-kib K` changes its shape (many small objects: the cost
//!    of each request, where git-lfs's 8 transfers at once tell).
//! 5. `cargo bench --bench sync -- --remote <url>` runs (1) on a
//!    repository of your own (a real project's, say, as file://): the
//!    mirror keeps branches and tags, so give it a remote with only those
//!    for `git clone --mirror` to fetch the same.
//!
//! Targets (issue 7): initial pull at most 1.0x git's time and peak memory; the
//! no-op sync at least 10x faster.

mod common;
#[path = "sync/memory.rs"]
mod memory;
use common::bare;
use common::git_cli::git;

#[path = "../../tests/fixtures/history.rs"]
mod history;
// The test suite's smart-HTTP server; the bench uses only its unauthenticated side.
#[allow(dead_code, clippy::unwrap_used)]
#[path = "../../tests/e2e/http_git.rs"]
mod http_git;
// The test suite's giftless LFS server.
#[allow(dead_code, clippy::unwrap_used)]
#[path = "../../tests/e2e/lfs_server.rs"]
mod lfs_server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use history::{History, generate};
use memory::TreePeak;
use mirrorhost::plugins::{Limits, Registry, Runtime};
use mirrorhost::secrets::MasterKey;
use mirrorhost::store::{self, Mirror, MirrorSettings, Project, Store};
use mirrorhost::sync::packs::{Executable, Program};
use mirrorhost::sync::proxy::ProxySettings;
use mirrorhost::sync::{Engine, PackIndexer, Timeouts};

const CHILD: &str = "child-pull";
const NOOP_MIRRORS: usize = 200;
/// Timed initial pulls of each side; the median is reported.
const TIMED_ROUNDS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(CHILD) {
        let ca = args.get(4).map(Path::new);
        child_pull(&args[2], Path::new(&args[3]), ca);
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    if let Some(url) = common::arg("--remote") {
        compare_initial_pulls(work.path(), "remote", &url);
        return;
    }
    if args.iter().any(|a| a == "lfs") {
        lfs_pull(work.path());
        return;
    }
    initial_pull(work.path());
    let https_only = args.iter().any(|a| a == "https");
    if !https_only {
        noop_sync(work.path());
        capped_pull(work.path());
    }
    https_pull(work.path());
    if !https_only {
        lfs_pull(work.path());
    }
}

/// LFS objects of (4): count and size of each, unless `--lfs-objects N`
/// and `--lfs-object-kib K` say otherwise (many small objects measure the
/// cost per object: requests, not bytes).
fn lfs_shape() -> (usize, usize) {
    let number = |name: &str, default: usize| {
        common::arg(name).map_or(default, |v| v.parse().expect("a number"))
    };
    (
        number("--lfs-objects", 40),
        number("--lfs-object-kib", 5 << 10) << 10,
    )
}

/// (4): an initial pull of a repository whose files are LFS objects.
fn lfs_pull(work: &Path) {
    let Some(giftless) = lfs_server::Giftless::start() else {
        println!("lfs: skipped (giftless or git-lfs not available)");
        return;
    };
    let root = work.join("lfs-upstream");
    std::fs::create_dir_all(root.join("bench")).expect("upstream dir");
    git(
        &root.join("bench"),
        &["init", "-q", "--bare", "-b", "main", "big.git"],
    );
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let server = runtime.block_on(http_git::HttpGit::start_with_lfs(
        &root,
        None,
        giftless.addr,
    ));
    let url = server.url("bench/big.git");
    let started = Instant::now();
    let (objects, object_bytes) = lfs_shape();
    push_lfs_files(&work.join("lfs-work"), &url, objects, object_bytes);
    println!(
        "pushed {objects} LFS objects of {} KiB to giftless in {:.1}s",
        object_bytes >> 10,
        started.elapsed().as_secs_f64()
    );
    let exe = std::env::current_exe().expect("own path");
    let git_side = |dir: &Path| {
        let clone = dir.join("clone.git");
        let mut cmd = common::git_cli::command(dir);
        cmd.args(["clone", "-q", "--mirror", &url]).arg(&clone);
        let mut fetch = common::git_cli::command(&clone);
        fetch.args(["lfs", "fetch", "--all"]);
        (cmd, fetch)
    };
    let our_side = |dir: &Path| {
        let mut cmd = Command::new(&exe);
        cmd.args([CHILD, &url]).arg(dir.join("engine"));
        cmd
    };
    let mut times = (Vec::new(), Vec::new());
    let mut memory = (TreePeak::default(), TreePeak::default());
    for round in 0..=TIMED_ROUNDS {
        let dir = work.join(format!("lfs-{round}"));
        std::fs::create_dir_all(&dir).expect("run dir");
        // Timed rounds alternate the sides; memory is sampled in a round of
        // its own, so that the sampler does not slow the timed ones.
        let sampled = round == TIMED_ROUNDS;
        let (mut clone, mut fetch) = git_side(&dir);
        let cloned = measure(&mut clone, sampled);
        let fetched = measure(fetch.stdout(std::process::Stdio::null()), sampled);
        let ours = measure(&mut our_side(&dir), sampled);
        if !sampled {
            times.0.push(cloned.wall + fetched.wall);
            times.1.push(ours.wall);
        } else {
            memory = (larger(cloned.memory, fetched.memory), ours.memory);
            assert_eq!(
                lfs_files(&dir.join("engine/repos/bench/big.git")),
                lfs_files(&dir.join("clone.git")),
                "the two mirrors hold different LFS objects"
            );
        }
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
    let (git_time, our_time) = (median(&mut times.0), median(&mut times.1));
    report("git clone --mirror + lfs fetch --all", git_time, &memory.0);
    report("mirrorhost initial pull with LFS", our_time, &memory.1);
    println!(
        "LFS pull ({objects} objects, {} MiB) ratio vs git: time {:.2}x, peak memory of the whole tree {:.2}x",
        (objects * object_bytes) >> 20,
        our_time.as_secs_f64() / git_time.as_secs_f64(),
        memory.1.total_kib as f64 / memory.0.total_kib as f64,
    );
}

/// The peak of two steps run one after the other.
fn larger(a: TreePeak, b: TreePeak) -> TreePeak {
    if a.total_kib >= b.total_kib { a } else { b }
}

/// A commit of `objects` random files of `object_bytes` tracked by
/// git-lfs, pushed to `url`.
fn push_lfs_files(work: &Path, url: &str, objects: usize, object_bytes: usize) {
    std::fs::create_dir_all(work).expect("work dir");
    let lfs = |args: &[&str]| {
        let status = common::git_cli::command(work)
            .args(["-c", "filter.lfs.process=git-lfs filter-process"])
            .args([
                "-c",
                "filter.lfs.required=true",
                "-c",
                "lfs.locksverify=false",
            ])
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("git");
        assert!(status.success(), "git {args:?}");
    };
    lfs(&["init", "-q", "-b", "main"]);
    lfs(&["remote", "add", "origin", url]);
    lfs(&["lfs", "track", "*.bin"]);
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    for i in 0..objects {
        let bytes: Vec<u8> = (0..object_bytes / 8)
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()
            })
            .collect();
        std::fs::write(work.join(format!("f{i:04}.bin")), bytes).expect("write");
    }
    lfs(&["add", "."]);
    lfs(&["commit", "-q", "-m", "LFS files"]);
    lfs(&["push", "-q", "origin", "main"]);
}

/// The LFS objects under a bare repository, by name and size.
fn lfs_files(repo: &Path) -> Vec<(String, u64)> {
    let mut files = Vec::new();
    let mut dirs = vec![repo.join("lfs/objects")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let meta = entry.metadata().expect("metadata");
            match meta.is_dir() {
                true => dirs.push(entry.path()),
                false => files.push((entry.file_name().to_string_lossy().into_owned(), meta.len())),
            }
        }
    }
    files.sort();
    files
}

/// (3): the pull of `big.git` (made by `initial_pull`) over https.
fn https_pull(work: &Path) {
    let tls_dir = work.join("tls");
    std::fs::create_dir_all(&tls_dir).expect("tls dir");
    let (ca, files) = tls_files(&tls_dir);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let server = runtime.block_on(http_git::HttpGit::start_tls(work, None, files));
    let url = server.url("big.git");
    let exe = std::env::current_exe().expect("own path");
    let git_side = |dir: &Path| {
        let mut cmd = common::git_cli::command(dir);
        cmd.env("GIT_SSL_CAINFO", &ca)
            .args(["clone", "-q", "--mirror", &url])
            .arg(dir.join("clone.git"));
        cmd
    };
    let engine_side = |dir: &Path| {
        let mut cmd = Command::new(&exe);
        cmd.args([CHILD, &url]).arg(dir.join("engine")).arg(&ca);
        cmd
    };
    let mut times: [Vec<Duration>; 2] = Default::default();
    for round in 0..TIMED_ROUNDS {
        let dir = work.join(format!("https-{round}"));
        std::fs::create_dir_all(&dir).expect("run dir");
        times[0].push(measure(&mut git_side(&dir), false).wall);
        times[1].push(measure(&mut engine_side(&dir), false).wall);
    }
    let sampled = work.join("https-sampled");
    std::fs::create_dir_all(&sampled).expect("run dir");
    let memory = [
        measure(&mut git_side(&sampled), true).memory,
        measure(&mut engine_side(&sampled), true).memory,
    ];
    let names = ["git clone --mirror (https)", "mirrorhost (https)"];
    let medians: Vec<Duration> = times.iter_mut().map(|t| median(t)).collect();
    for ((name, time), memory) in names.iter().zip(&medians).zip(&memory) {
        report(name, *time, memory);
    }
    let refs = |repo: &str| git(&sampled.join(repo), &["for-each-ref"]);
    assert_eq!(refs("engine/repos/bench/big.git"), refs("clone.git"));
    println!(
        "https pull ratio vs git: time {:.2}x, peak memory of the whole tree {:.2}x",
        medians[1].as_secs_f64() / medians[0].as_secs_f64(),
        memory[1].total_kib as f64 / memory[0].total_kib as f64,
    );
}

/// A CA (its PEM file) and a certificate it issued for 127.0.0.1.
fn tls_files(dir: &Path) -> (PathBuf, mirrorhost::config::TlsFiles) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Named apart from the certificate it issues, which OpenSSL would
    // otherwise take for self-signed.
    params
        .distinguished_name
        .push(DnType::CommonName, "Bench CA");
    let ca_key = KeyPair::generate().expect("key");
    let ca = params.self_signed(&ca_key).expect("CA");
    let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("certificate");
    let files = mirrorhost::config::TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    std::fs::write(&files.cert, cert.pem()).expect("write");
    std::fs::write(&files.key, key.serialize_pem()).expect("write");
    (dir.join("ca.pem"), files)
}

/// Makes the child's https connections trust `ca`, through our TLS stream
/// as the service registers it.
fn trust(ca: &Path) {
    mirrorhost::sync::tls_stream::register().expect("our TLS stream");
    mirrorhost::sync::tls::trust_bundle(ca).expect("CA file");
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
    compare_initial_pulls(work, "http", &server.url("big.git"));
    // file:// packs are made by git's pack-objects on both sides.
    let file_url = format!("file://{}", upstream.display());
    compare_initial_pulls(work, "file", &file_url);
}

/// The initial pull of `url` against `git clone --mirror` of it: time
/// (median of [`TIMED_ROUNDS`], alternating) and the memory of one more run.
fn compare_initial_pulls(work: &Path, scheme: &str, url: &str) {
    let exe = std::env::current_exe().expect("own path");
    let git_side = |dir: &Path| {
        let mut cmd = common::git_cli::command(dir);
        cmd.args(["clone", "-q", "--mirror", url])
            .arg(dir.join("clone.git"));
        cmd
    };
    let our_side = |dir: &Path| {
        let mut cmd = Command::new(&exe);
        cmd.args([CHILD, url]).arg(dir.join("engine"));
        cmd
    };
    // Timed runs alternate the two sides; memory is sampled in runs of its
    // own, so that the sampler's work does not slow the timed ones.
    let mut times = (Vec::new(), Vec::new());
    for round in 0..TIMED_ROUNDS {
        let dir = work.join(format!("timed-{scheme}-{round}"));
        std::fs::create_dir_all(&dir).expect("run dir");
        times.0.push(measure(&mut git_side(&dir), false).wall);
        times.1.push(measure(&mut our_side(&dir), false).wall);
    }
    let sampled = work.join(format!("sampled-{scheme}"));
    std::fs::create_dir_all(&sampled).expect("run dir");
    let git_memory = measure(&mut git_side(&sampled), true).memory;
    let our_memory = measure(&mut our_side(&sampled), true).memory;
    assert_eq!(
        git(
            &sampled.join("engine/repos/bench/big.git"),
            &["for-each-ref"]
        ),
        git(&sampled.join("clone.git"), &["for-each-ref"]),
        "the two mirrors differ"
    );
    let (git_time, our_time) = (median(&mut times.0), median(&mut times.1));
    report(
        &format!("git clone --mirror ({scheme})"),
        git_time,
        &git_memory,
    );
    report(
        &format!("mirrorhost initial pull ({scheme})"),
        our_time,
        &our_memory,
    );
    let memory: Vec<f64> = std::fs::read_to_string(sampled.join("engine/memory-kib"))
        .expect("memory samples")
        .split_whitespace()
        .map(|kib| kib.parse::<f64>().expect("number") / 1024.0)
        .collect();
    println!(
        "  the service before the transfer (plugins listed, store open): {:.1} MiB \
         (anonymous {:.1}, file-backed {:.1}); highest during it: anonymous {:.1}, file-backed {:.1}",
        memory[0] + memory[1],
        memory[0],
        memory[1],
        memory[2],
        memory[3]
    );
    let ratio = |ours: u64, theirs: u64| ours as f64 / theirs as f64;
    println!(
        "initial pull ({scheme}) ratio vs git: time {:.2}x, peak memory of the whole tree {:.2}x, \
         of the largest process {:.2}x",
        our_time.as_secs_f64() / git_time.as_secs_f64(),
        ratio(our_memory.total_kib, git_memory.total_kib),
        ratio(our_memory.largest().1, git_memory.largest().1),
    );
}

/// Runs in the re-executed child: one pull of `url` into a fresh service
/// state, trusting `ca` if given.
fn child_pull(url: &str, data: &Path, ca: Option<&Path>) {
    if let Some(ca) = ca {
        trust(ca);
    }
    mirrorhost::sync::local_transport::register().expect("file:// transport");
    mirrorhost::sync::plain_stream::register().expect("socket stream");
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
    engine.sync(&mirror, &project).expect("pull");
    done.store(true, Ordering::Relaxed);
    let peak = sampler.join().expect("sampler");
    let readings = format!("{} {} {} {}", before.0, before.1, peak.0, peak.1);
    std::fs::write(data.join("memory-kib"), readings).expect("write");
}

fn noop_sync(work: &Path) {
    // As the service reaches file:// remotes (pushes and some downloads
    // through git's programs; a pull lists in-process).
    mirrorhost::sync::local_transport::register().expect("file:// transport");
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
        engine.sync(&mirror, &project).expect("initial pull");
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
        let report = engine.sync(mirror, project).expect("no-op pull");
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
    let report = engine.sync(&mirror, &project).expect("capped pull");
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
    let status = memory::Status::read("self").expect("own /proc status");
    let field = |name: &str| status.kib(name).unwrap_or(0);
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
            indexer: PackIndexer::new(
                Program::Dedicated(Executable::Path(
                    env!("CARGO_BIN_EXE_mirrorhost-index-pack").into(),
                )),
                mirrorhost::sync::DEFAULT_MAX_OBJECT_BYTES,
            ),
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
            timeouts: &TIMEOUTS,
            proxy: &NO_PROXY,
            remote_policy: mirrorhost::sync::remote::Policy {
                allow_local: true,
                allow_http: true,
            },
            lease: None,
        }
    }
}

/// Loopback remotes: no proxy.
static NO_PROXY: ProxySettings = ProxySettings {
    url: None,
    no_proxy: Vec::new(),
};

/// The service's default limits on remotes.
static TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(30),
    stall: Duration::from_secs(120),
    run: Duration::from_secs(3600),
};

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
    memory: TreePeak,
}

/// Runs `cmd` to completion: its wall time and, if `sampled`, the peak memory
/// of its process tree.
fn measure(cmd: &mut Command, sampled: bool) -> Measured {
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let done = Arc::new(AtomicBool::new(false));
    let sampler = sampled.then(|| {
        let (pid, done) = (child.id(), done.clone());
        std::thread::spawn(move || memory::sample(pid, &done))
    });
    let status = child.wait().expect("wait");
    let wall = started.elapsed();
    done.store(true, Ordering::Release);
    assert!(status.success(), "child failed: {status}");
    Measured {
        wall,
        memory: sampler
            .map(|s| s.join().expect("sampler"))
            .unwrap_or_default(),
    }
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn report(name: &str, wall: Duration, memory: &TreePeak) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let processes: Vec<String> = memory
        .processes
        .iter()
        .map(|(label, kib)| format!("{label} {:.1}", mib(*kib)))
        .collect();
    println!(
        "{name:<32} {:>6.2} s  peak RSS: whole tree {:>5.1} MiB; by process (MiB): {}",
        wall.as_secs_f64(),
        mib(memory.total_kib),
        processes.join(", ")
    );
}
