//! A deep delta chain through the indexer and through git: `cargo bench
//! --bench deltas [-- --depth N --kib K]`.
//!
//! The packs issue 15 measured: one blob of K KiB (default 256) and N
//! (default 6,000) ofs-deltas, each rebuilding the previous object with one
//! more line, so the chain is N deep; then the same chain with a second,
//! leaf delta on every link, after the link's own child, so the walk must
//! come back up the whole chain to it (past the per-thread base budget). Both
//! indexers get the same pack on standard input: `mirrorhost-index-pack` as
//! the service starts it, and `git index-pack --stdin` in a bare repository.
//! Reported: wall time and peak memory (RSS of the child) of each, and the
//! ratio. Target (issue 15, item 3): within 2x of git (it was 170 s against
//! git's 9.7 s before the chain was walked keeping only the frames in use).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mirrorhost::sync::index_pack;
use mirrorhost::sync::packs::ChildLimits;

mod common;
use common::git_cli::git;

#[path = "../../tests/fixtures/pack_objects.rs"]
mod crafted;
use crafted::{deflated, delta_appending, entry_header, ofs_distance};

fn main() {
    let depth: usize = common::arg("--depth").map_or(6_000, |d| d.parse().expect("--depth N"));
    let kib: usize = common::arg("--kib").map_or(256, |k| k.parse().expect("--kib K"));
    for forked in [false, true] {
        let pack = chain_pack(kib << 10, depth, forked);
        let shape = if forked {
            "with a leaf on every link"
        } else {
            "alone"
        };
        println!(
            "a chain of {depth} deltas on a {kib} KiB blob, {shape}: a {} KB pack",
            pack.len() / 1000
        );
        compare(&pack);
    }
}

fn compare(pack: &[u8]) {
    let work = tempfile::tempdir().expect("temp dir");
    let ours_repo = common::bare(work.path(), "ours.git");
    let theirs_repo = common::bare(work.path(), "theirs.git");
    let args = index_pack::Args {
        objects_dir: ours_repo.join("objects"),
        max_object_bytes: 1 << 30,
        limits: ChildLimits {
            memory_bytes: 4 << 30,
            cpu_seconds: 3600,
        },
    };
    let ours = timed(
        Command::new(env!("CARGO_BIN_EXE_mirrorhost-index-pack")).args(args.to_args()),
        &[b"\n".as_slice(), pack].concat(),
    );
    let theirs = timed(
        Command::new("git")
            .arg("-C")
            .arg(&theirs_repo)
            .args(["index-pack", "--stdin"]),
        pack,
    );
    let (a, b) = (ours.0.as_secs_f64(), theirs.0.as_secs_f64());
    println!(
        "  mirrorhost-index-pack {a:>7.2} s  peak {:>6} MiB",
        ours.1 >> 10
    );
    println!(
        "  git index-pack         {b:>7.2} s  peak {:>6} MiB",
        theirs.1 >> 10
    );
    println!("  time ratio {:.2}x (target <= 2x)", a / b);
    same_objects(&ours_repo, &theirs_repo);
}

/// Runs `command` with `input` on its standard input; its wall time and its
/// peak resident memory in KiB (VmRSS, sampled every 5 ms).
fn timed(command: &mut Command, input: &[u8]) -> (Duration, u64) {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the indexer");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("feed the pack");
    let pid = child.id();
    let mut peak = 0;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "the indexer failed: {status}");
            break;
        }
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(5));
    }
    (started.elapsed(), peak)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn same_objects(ours: &Path, theirs: &Path) {
    let list = |repo: &Path| {
        let mut objects: Vec<String> =
            git(repo, &["cat-file", "--batch-all-objects", "--batch-check"])
                .lines()
                .map(str::to_owned)
                .collect();
        objects.sort();
        objects
    };
    assert_eq!(
        list(ours),
        list(theirs),
        "the two indexers found different objects"
    );
    println!("  same objects in both repositories");
}

/// The pack: a blob of `bytes`, then `depth` ofs-deltas, each on the link
/// before it; `forked`, each link also gets a leaf delta, after its child.
fn chain_pack(bytes: usize, depth: usize, forked: bool) -> Vec<u8> {
    let mut object: Vec<u8> = (0..)
        .flat_map(|i: u64| format!("line {i} of the base\n").into_bytes())
        .take(bytes)
        .collect();
    let mut pack = b"PACK".to_vec();
    pack.extend(2u32.to_be_bytes());
    let leaves = if forked { depth } else { 0 };
    pack.extend(((depth + leaves) as u32 + 1).to_be_bytes());
    let mut previous = pack.len();
    pack.extend(entry_header(3, object.len() as u64));
    pack.extend(deflated(&object));
    for n in 0..depth {
        let line = format!("delta {n}\n");
        let delta = delta_appending(&object, line.as_bytes());
        object.extend(line.as_bytes());
        let here = pack.len();
        pack.extend(entry_header(6, delta.len() as u64));
        pack.extend(ofs_distance(here - previous));
        pack.extend(deflated(&delta));
        if forked {
            let base = &object[..object.len() - line.len()];
            let leaf = delta_appending(base, format!("leaf {n}\n").as_bytes());
            let at = pack.len();
            pack.extend(entry_header(6, leaf.len() as u64));
            pack.extend(ofs_distance(at - previous));
            pack.extend(deflated(&leaf));
        }
        previous = here;
    }
    let sum: [u8; 20] = sha1dc::digest(&pack).expect("no collision").into();
    pack.extend(sum);
    pack
}
