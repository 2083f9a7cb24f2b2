//! The connectivity check after a fetch, as git's fetch makes it
//! (`check_connected`: `git rev-list --objects --stdin --not --all`): every
//! object reachable from the fetched tips is in the repository, the walk
//! stopping at what the repository's refs reach already (kept connected by
//! the same check on every earlier fetch). A remote that sends a pack
//! missing a tree or a blob, or a parent, is caught here, before any ref
//! points at the hole. A first fetch is the indexer's to check
//! ([`holds_no_objects`]).

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use super::SyncError;
use super::git_cli;

/// Whether the repository holds no object yet: a first fetch. Its pack is
/// checked by the indexer instead (it must hold every object its objects
/// name, as a clone checks), which costs far less than walking the whole
/// history; every later fetch by [`check`].
pub(super) fn holds_no_objects(objects_dir: &Path) -> bool {
    let any = |dir: &Path, found: &dyn Fn(&std::fs::DirEntry) -> bool| {
        std::fs::read_dir(dir).is_ok_and(|entries| entries.flatten().any(|e| found(&e)))
    };
    let packs = any(&objects_dir.join("pack"), &|e| {
        e.file_name().to_string_lossy().ends_with(".pack")
    });
    // Loose objects live in the directories `00` to `ff`.
    let loose = any(objects_dir, &|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit()) && any(&e.path(), &|_| true)
    });
    !packs && !loose
}

/// Checks that everything `tips` reach is in `repo`.
pub fn check(repo: &Path, tips: &[git2::Oid]) -> Result<(), SyncError> {
    if tips.is_empty() {
        return Ok(());
    }
    let mut child = git_cli::in_repo(repo)
        .args([
            "rev-list",
            "--objects",
            "--quiet",
            "--stdin",
            "--not",
            "--all",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SyncError::Git(format!("cannot run git for the connectivity check: {e}")))?;
    let lines: String = tips.iter().map(|tip| format!("{tip}\n")).collect();
    if let Some(mut input) = child.stdin.take() {
        // A walk that fails early closes its input; its status says why.
        let _ = input.write_all(lines.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| SyncError::Git(format!("the connectivity check: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    Err(SyncError::Disconnected(
        said.lines()
            .next()
            .unwrap_or("git rev-list failed")
            .trim()
            .to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::testing::git;

    /// A commit whose blob is gone fails the check with git's word for what
    /// is missing; a whole one passes; a ref's history is not walked again.
    #[test]
    fn a_tip_whose_history_has_a_hole_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("r.git");
        git(dir.path(), &["init", "-q", "--bare", "r.git"]);
        let r = git2::Repository::open_bare(&repo).unwrap();
        let (kept, lost) = (r.blob(b"kept\n").unwrap(), r.blob(b"lost\n").unwrap());
        let commit = |blob: git2::Oid, name: &str| {
            let mut tree = r.treebuilder(None).unwrap();
            tree.insert(name, blob, 0o100644).unwrap();
            let tree = r.find_tree(tree.write().unwrap()).unwrap();
            let who = git2::Signature::now("t", "t@example.com").unwrap();
            r.commit(None, &who, &who, name, &tree, &[]).unwrap()
        };
        let whole = commit(kept, "whole");
        let holed = commit(lost, "holed");
        let hex = lost.to_string();
        std::fs::remove_file(repo.join(format!("objects/{}/{}", &hex[..2], &hex[2..]))).unwrap();

        check(&repo, &[whole]).unwrap();
        let error = check(&repo, &[holed]).unwrap_err().to_string();
        assert!(error.contains(&hex), "{error}");
        // Reached from a ref already, the hole is not this fetch's.
        git(&repo, &["update-ref", "refs/heads/old", &holed.to_string()]);
        check(&repo, &[holed]).unwrap();
    }
}
