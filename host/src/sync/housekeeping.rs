//! Housekeeping of a project repository: the packs that fetches add one by
//! one are rolled into one, and objects no ref reaches go after a grace
//! period. The work is git's own `git repack -a -d --cruft`: it writes the new
//! packs under temporary names, renames them into place, and only then deletes
//! what they replace, so a kill at any point leaves a repository that holds
//! every object (at worst twice) and temporary files that
//! `sync::remove_leftovers` deletes at the next start. Unreachable objects
//! wait in a cruft pack that records their ages, as `git gc` keeps them, so a
//! force-push upstream loses nothing before the grace period ends.
//!
//! The git CLI is a declared run-time dependency: [`check_git`] runs at start
//! and refuses a git without cruft packs (2.37).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::git_cli;

/// The oldest git whose `repack` knows `--cruft` (named in the errors).
const MIN_GIT: (u32, u32) = (2, 37);

#[derive(Debug, thiserror::Error)]
pub enum HousekeepingError {
    #[error("cannot run git ({0}); housekeeping needs git 2.37 or newer on PATH")]
    NoGit(std::io::Error),
    #[error("{found} is too old; housekeeping needs git 2.37 or newer")]
    OldGit { found: String },
    #[error("no repository for this project yet")]
    NoRepository,
    #[error("git failed in housekeeping: {0}")]
    Repack(String),
}

/// When housekeeping runs by itself, and how long unreachable objects wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Housekeeping {
    /// Housekeeping runs after a run that leaves more packs than this
    /// (the cruft pack not counted).
    pub pack_limit: usize,
    /// Objects no ref reaches are deleted once unreachable for this long.
    pub grace: Duration,
}

impl Default for Housekeeping {
    fn default() -> Self {
        Self {
            pack_limit: 8,
            // git gc's default (gc.pruneExpire).
            grace: Duration::from_secs(14 * 86_400),
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Pass {
    pub packs_before: usize,
    pub packs_after: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub duration_ms: u64,
}

/// Checks that `git` runs and is new enough; its version.
pub fn check_git() -> Result<String, HousekeepingError> {
    let out = git_cli::command()
        .arg("--version")
        .output()
        .map_err(HousekeepingError::NoGit)?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let version = text
        .strip_prefix("git version ")
        .unwrap_or(&text)
        .to_string();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if !out.status.success() || found < MIN_GIT {
        return Err(HousekeepingError::OldGit { found: text });
    }
    Ok(version)
}

/// Whether `repo` holds more packs than `limit` (a cheap directory read).
pub fn due(repo: &Path, limit: usize) -> bool {
    packs(repo).0 > limit
}

/// Rolls `repo`'s packs into one and drops objects unreachable for longer
/// than `grace`. The caller holds the project exclusively: no run reads or
/// writes the repository meanwhile.
pub fn run(repo: &Path, grace: Duration) -> Result<Pass, HousekeepingError> {
    if !repo.join("objects").is_dir() {
        return Err(HousekeepingError::NoRepository);
    }
    let started = Instant::now();
    let (packs_before, bytes_before) = packs(repo);
    // The first pass searches every delta anew (`-f`): until then the
    // repository holds the deltas the upstream's server chose, often far
    // from the best (tokio's: 1.58x the size `git repack -adf` reaches).
    // Later passes reuse them and search deltas only for new objects.
    let recompute = !deltas_recomputed(repo);
    let mut repack = git_cli::in_repo(repo);
    repack
        // No bitmaps: libgit2, which reads these packs, does not use them,
        // and writing them costs a reachability walk of its own.
        .args(["-c", "repack.writeBitmaps=false", "-c", "gc.auto=0"])
        .args(["repack", "-a", "-d", "-n", "-q", "--cruft"])
        .arg(format!(
            "--cruft-expiration={}.seconds.ago",
            grace.as_secs()
        ));
    if recompute {
        repack.arg("-f");
    }
    git_ok(&mut repack)?;
    if recompute {
        // Lost in a crash, this only means the next pass searches again.
        let mut mark = git_cli::in_repo(repo);
        mark.args(["config", DELTAS_RECOMPUTED, "true"]);
        git_ok(&mut mark)?;
    }
    let (packs_after, bytes_after) = packs(repo);
    Ok(Pass {
        packs_before,
        packs_after,
        bytes_before,
        bytes_after,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// The repository's config key that says a pass searched every delta anew.
const DELTAS_RECOMPUTED: &str = "mirrorhost.deltasRecomputed";

fn deltas_recomputed(repo: &Path) -> bool {
    git_cli::in_repo(repo)
        .args(["config", "--bool", DELTAS_RECOMPUTED])
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"true"))
}

/// Runs `command`; its standard error is the error when it fails.
fn git_ok(command: &mut Command) -> Result<(), HousekeepingError> {
    let out = command.output().map_err(HousekeepingError::NoGit)?;
    if !out.status.success() {
        let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(HousekeepingError::Repack(message));
    }
    Ok(())
}

/// How many packs `repo` holds (a cruft pack not counted) and the bytes of
/// all its object files, packs and loose ones.
fn packs(repo: &Path) -> (usize, u64) {
    let pack_dir = repo.join("objects/pack");
    let mut count = 0;
    let mut bytes = 0;
    for entry in super::entries(&pack_dir) {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        bytes += entry.metadata().map_or(0, |m| m.len());
        if let Some(stem) = name.strip_suffix(".pack") {
            let cruft = pack_dir.join(format!("{stem}.mtimes")).exists();
            count += usize::from(!cruft);
        }
    }
    for fan in super::entries(&repo.join("objects")) {
        let name = fan.file_name();
        if name.len() == 2
            && name
                .to_str()
                .is_some_and(|n| n.chars().all(|c| c.is_ascii_hexdigit()))
        {
            for object in super::entries(&fan.path()) {
                bytes += object.metadata().map_or(0, |m| m.len());
            }
        }
    }
    (count, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sync::testing::git;

    fn commit(work: &Path, n: usize) {
        std::fs::write(work.join("f"), format!("{n}\n").repeat(n + 1)).unwrap();
        git(work, &["add", "f"]);
        git(work, &["commit", "-q", "-m", &format!("c{n}")]);
    }

    /// Ten packs become one; an object a force-push orphaned survives a pass
    /// inside its grace period and goes in one after it; git fsck passes.
    #[test]
    fn packs_roll_up_and_unreachable_objects_wait_their_grace() {
        check_git().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        git(root, &["init", "-q", "-b", "main", "work"]);
        git(root, &["init", "-q", "--bare", "mirror.git"]);
        let (work, mirror) = (root.join("work"), root.join("mirror.git"));
        for n in 0..10 {
            commit(&work, n);
            git(&work, &["push", "-q", mirror.to_str().unwrap(), "main"]);
            git(&mirror, &["repack", "-q"]);
        }
        let orphan = git(&work, &["rev-parse", "HEAD"]);
        git(&work, &["reset", "-q", "--hard", "HEAD~3"]);
        commit(&work, 99);
        git(
            &work,
            &["push", "-q", "-f", mirror.to_str().unwrap(), "main"],
        );
        assert!(due(&mirror, 8));

        let pass = run(&mirror, Duration::from_secs(3600)).unwrap();
        assert!(pass.packs_before >= 10, "{pass:?}");
        assert_eq!(pass.packs_after, 1);
        assert!(!due(&mirror, 8));
        // The first pass searched every delta anew, and says so.
        assert_eq!(
            git(&mirror, &["config", "--bool", DELTAS_RECOMPUTED]).trim(),
            "true"
        );
        git(&mirror, &["fsck", "--strict", "--no-dangling"]);
        git(&mirror, &["cat-file", "-e", orphan.trim()]);

        run(&mirror, Duration::ZERO).unwrap();
        let gone = crate::sync::testing::command(&mirror)
            .args(["cat-file", "-e", orphan.trim()])
            .status()
            .unwrap();
        assert!(!gone.success(), "the orphan outlived its grace");
        git(&mirror, &["fsck", "--strict"]);
    }
}
