//! The record that no object of a repository may be a Git LFS pointer: the
//! file `mirrorhost-no-lfs-pointers` in the repository. While it is there,
//! a run's LFS phase need not look for pointers: on a first pull of 100,000
//! objects that look (a `git rev-list --objects` of the whole history, with
//! `git cat-file` reading every small blob) took 0.7 s and 143 MiB, a
//! third of git's whole clone's time (BENCHMARKS.md).
//!
//! Every object enters a repository through the indexer child
//! ([`index_pack`](super::index_pack)), which counts the blobs of each pack
//! that may be pointers (small, starting `version `). The child writes the
//! record after a repository's first pack if that pack held none, and
//! removes it, durably, before it puts in place a pack that holds one: a
//! crash can lose the record (a look too many), never leave it over a
//! pointer. A repository without the record (mirrored before it existed,
//! or one that received a possible pointer) is looked at as before.
//!
//! Packs of one repository may be indexed at once (the runs of a project
//! share it): each child holds a lock on the pack directory while it
//! publishes and updates the record, so one's pack cannot land between
//! another's look at the pack directory and its writing the record.

use std::fs::File;
use std::io;
use std::path::Path;

const RECORD: &str = "mirrorhost-no-lfs-pointers";

/// Whether no object of the repository at `repo` may be an LFS pointer.
pub fn holds_none(repo: &Path) -> bool {
    repo.join(RECORD).exists()
}

/// The lock on `repo`'s pack directory, held until the handle drops.
pub(super) fn lock(repo: &Path) -> io::Result<File> {
    let dir = File::open(repo.join("objects/pack"))?;
    dir.lock()?;
    Ok(dir)
}

/// Before a pack with `candidates` possible pointers is put in place:
/// removes the record, durably, if the pack has any.
pub(super) fn before_publish(repo: &Path, candidates: u32) -> io::Result<()> {
    if candidates == 0 {
        return Ok(());
    }
    match std::fs::remove_file(repo.join(RECORD)) {
        Ok(()) => File::open(repo)?.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// After the pack `name` was put in place: writes the record if the pack
/// has no possible pointer and is the repository's first and only one
/// (`first`: the repository held no object before it). Not synced: losing
/// it costs one look.
pub(super) fn after_publish(
    repo: &Path,
    name: &str,
    first: bool,
    candidates: u32,
) -> io::Result<()> {
    if !first || candidates != 0 {
        return Ok(());
    }
    let ours = format!("pack-{name}.pack");
    let only_ours = super::entries(&repo.join("objects/pack")).all(|entry| {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        !(file.starts_with("pack-") && file.ends_with(".pack")) || file == ours
    });
    match only_ours {
        true => std::fs::write(repo.join(RECORD), b""),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_with_packs(names: &[&str]) -> tempfile::TempDir {
        let repo = tempfile::tempdir().unwrap();
        let packs = repo.path().join("objects/pack");
        std::fs::create_dir_all(&packs).unwrap();
        for name in names {
            std::fs::write(packs.join(format!("pack-{name}.pack")), b"").unwrap();
        }
        repo
    }

    #[test]
    fn only_a_first_and_only_pack_without_candidates_writes_the_record() {
        let repo = repo_with_packs(&["a"]);
        let (path, _lock) = (repo.path(), lock(repo.path()).unwrap());
        after_publish(path, "a", false, 0).unwrap();
        assert!(!holds_none(path), "not the first pack");
        after_publish(path, "a", true, 1).unwrap();
        assert!(!holds_none(path), "a possible pointer");
        after_publish(path, "a", true, 0).unwrap();
        assert!(holds_none(path));
        // Another child waits for the lock: flock holds across processes
        // and across handles of one.
        let other = File::open(path.join("objects/pack")).unwrap();
        assert!(other.try_lock().is_err(), "the lock is held");

        // Another run's pack landed beside the first one: no record.
        let both = repo_with_packs(&["a", "b"]);
        after_publish(both.path(), "a", true, 0).unwrap();
        assert!(!holds_none(both.path()));
    }

    #[test]
    fn a_pack_with_a_candidate_removes_the_record_before_it_lands() {
        let repo = repo_with_packs(&["a"]);
        let path = repo.path();
        after_publish(path, "a", true, 0).unwrap();
        before_publish(path, 0).unwrap();
        assert!(holds_none(path), "nothing that may be a pointer");
        before_publish(path, 2).unwrap();
        assert!(!holds_none(path));
        before_publish(path, 2).unwrap();
    }
}
