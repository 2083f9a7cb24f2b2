//! Peak memory of a process tree: the measured command and every process it
//! starts, sampled from /proc.
//!
//! Why not `wait4`'s `ru_maxrss`: a child started with `posix_spawn` (as Rust
//! and git start theirs) runs in its parent's memory until it execs, and at
//! exec the kernel folds that memory's high-water mark into the child's
//! `maxrss`. Every measured command would report at least the bench's own peak
//! (which holds a whole served pack), and the service's pack indexer at least
//! the service's. `VmHWM` belongs to the memory a process has after exec.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Between two samples.
const EVERY: Duration = Duration::from_millis(1);

#[derive(Debug, Default)]
pub struct TreePeak {
    /// The highest sum of the tree's resident sets in one sample.
    pub total_kib: u64,
    /// Each kind of process's own peak resident set (`VmHWM`), by label
    /// (program and subcommand).
    pub processes: BTreeMap<String, u64>,
}

impl TreePeak {
    /// The largest single process: its label and peak.
    pub fn largest(&self) -> (&str, u64) {
        self.processes
            .iter()
            .max_by_key(|(_, kib)| **kib)
            .map_or(("none", 0), |(label, kib)| (label.as_str(), *kib))
    }
}

/// Samples the tree under `root` until `done` is set (after the root was
/// reaped). A process's growth in its last millisecond can escape the samples.
pub fn sample(root: u32, done: &AtomicBool) -> TreePeak {
    let mut total_kib = 0;
    // By pid: the latest label (a process seen between fork and exec still
    // has its parent's) and the peak.
    let mut seen: BTreeMap<u32, (String, u64)> = BTreeMap::new();
    while !done.load(Ordering::Acquire) {
        let mut total = 0;
        for (pid, parent) in tree(root) {
            // Between fork and exec a child shares its parent's memory (Rust
            // and git spawn with vfork): counting it would count that twice.
            if parent.is_some_and(|parent| cmdline(parent) == cmdline(pid)) {
                continue;
            }
            let Some((rss, hwm)) = resident(pid) else {
                continue;
            };
            total += rss;
            let process = seen.entry(pid).or_default();
            // Named as it is when it grows: a process seen between fork and
            // exec still shows its parent's command line, an exiting one a
            // torn one.
            if hwm > process.1
                && let Some(label) = label(pid)
            {
                *process = (label, hwm);
            }
        }
        total_kib = total_kib.max(total);
        std::thread::sleep(EVERY);
    }
    let mut processes = BTreeMap::<String, u64>::new();
    for (label, kib) in seen.into_values() {
        let peak = processes.entry(label).or_default();
        *peak = (*peak).max(kib);
    }
    TreePeak {
        total_kib,
        processes,
    }
}

/// `root` and its descendants now, each with its parent (none for `root`).
fn tree(root: u32) -> Vec<(u32, Option<u32>)> {
    let mut found = vec![(root, None)];
    let mut next = 0;
    while let Some(&(pid, _)) = found.get(next) {
        next += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children = std::fs::read_to_string(task.path().join("children"));
            found.extend(
                children
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok())
                    .map(|child| (child, Some(pid))),
            );
        }
    }
    found
}

fn cmdline(pid: u32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/cmdline")).ok()
}

/// A live process's resident set and its peak, in KiB.
fn resident(pid: u32) -> Option<(u64, u64)> {
    let status = Status::read(&pid.to_string())?;
    Some((status.kib("VmRSS:")?, status.kib("VmHWM:")?))
}

/// A process's `/proc/<pid>/status` (`self` for this one).
pub struct Status(String);

impl Status {
    pub fn read(pid: &str) -> Option<Self> {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .map(Self)
    }

    /// A field given in KiB, such as `VmRSS:`.
    pub fn kib(&self, field: &str) -> Option<u64> {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }
}

/// The program's name and, when it has one, its subcommand: `git index-pack`;
/// `None` once the process has let go of its memory.
fn label(pid: u32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if cmdline.is_empty() {
        return None;
    }
    let mut args = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned());
    let program = args.next().unwrap_or_default();
    let program = program.rsplit('/').next().unwrap_or_default();
    // Cargo names a bench binary `<name>-<16 hex digits>`.
    let program = match program.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name
        }
        _ => program,
    };
    Some(match args.next() {
        Some(sub) if sub.chars().all(|c| c.is_ascii_lowercase() || c == '-') => {
            format!("{program} {sub}")
        }
        _ => program.to_string(),
    })
}
