//! Ref bookkeeping shared by pull and push: reading a repo's refs, relating two
//! tips, and applying a run's ref updates as one transaction.

mod packed;

pub use packed::{PackedRefsError, remove_stale_lock};

use std::collections::{BTreeMap, HashMap};

use git2::{Oid, Repository};

use super::SyncError;
use super::index_pack::Kind;

/// Our own scratch namespace; never mirrored, never offered to filters.
pub const PRIVATE_NAMESPACE: &str = "refs/mirrorhost/";

/// The refs a mirror can move: everything but HEAD, peeled entries and our own
/// namespace.
pub fn is_mirrorable(name: &str) -> bool {
    name.starts_with("refs/") && !name.starts_with(PRIVATE_NAMESPACE) && !name.ends_with("^{}")
}

/// A name git accepts for a ref under `refs/` (`git check-ref-format`): the
/// name becomes a line of `packed-refs`, and a path when git writes it loose.
pub fn valid_name(name: &str) -> bool {
    name.starts_with("refs/") && git2::Reference::is_valid_name(name)
}

/// Name -> oid of the repo's mirrorable refs (symbolic refs are skipped).
pub fn local_refs(repo: &Repository) -> Result<BTreeMap<String, Oid>, git2::Error> {
    let mut refs = BTreeMap::new();
    for reference in repo.references()? {
        let reference = reference?;
        let (Ok(name), Some(oid)) = (reference.name(), reference.target()) else {
            continue;
        };
        if is_mirrorable(name) {
            refs.insert(name.to_string(), oid);
        }
    }
    Ok(refs)
}

/// Points the repository's HEAD at `branch`, as `git clone --mirror` points
/// it at the upstream's default branch, so that a clone of the mirror checks
/// it out. libgit2 writes HEAD through its own lock file and a rename.
pub fn point_head(repo: &Repository, branch: &str) -> Result<(), SyncError> {
    let current = repo.find_reference("HEAD")?;
    if current.symbolic_target_bytes() == Some(branch.as_bytes()) {
        return Ok(());
    }
    repo.set_head(branch)?;
    Ok(())
}

/// How a target tip relates to the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Same,
    /// `current` is an ancestor of `target`.
    FastForward,
    Diverged {
        merge_base: Option<Oid>,
        /// Commits on `current` not on `target`.
        ahead: usize,
        /// Commits on `target` not on `current`.
        behind: usize,
    },
}

/// Relates `current` to `target` through their commits (tags are peeled). Objects
/// that are not commits, or that we do not have, can only be the same or diverged.
pub fn relate(repo: &Repository, current: Oid, target: Oid) -> Result<Relation, git2::Error> {
    if current == target {
        return Ok(Relation::Same);
    }
    let (Some(current), Some(target)) = (peel_commit(repo, current), peel_commit(repo, target))
    else {
        return Ok(Relation::Diverged {
            merge_base: None,
            ahead: 0,
            behind: 0,
        });
    };
    if current == target {
        // Different tag objects over the same commit: a retag, not a fast-forward.
        return Ok(Relation::Diverged {
            merge_base: Some(current),
            ahead: 0,
            behind: 0,
        });
    }
    if repo.graph_descendant_of(target, current)? {
        return Ok(Relation::FastForward);
    }
    let merge_base = match repo.merge_base(current, target) {
        Ok(base) => Some(base),
        Err(e) if e.code() == git2::ErrorCode::NotFound => None,
        Err(e) => return Err(e),
    };
    let (ahead, behind) = repo.graph_ahead_behind(current, target)?;
    Ok(Relation::Diverged {
        merge_base,
        ahead,
        behind,
    })
}

fn peel_commit(repo: &Repository, oid: Oid) -> Option<Oid> {
    let object = repo.find_object(oid, None).ok()?;
    object.peel_to_commit().ok().map(|c| c.id())
}

/// One ref change: `old` is what the ref must still hold (None: must not exist),
/// `new` what it becomes (None: deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub name: String,
    pub old: Option<Oid>,
    pub new: Option<Oid>,
}

/// Applies every update or none: each ref must still hold its `old` value,
/// and the repository's refs move to their new values in one step
/// ([`packed`]). `kinds` are the objects' kinds where the indexer told them.
pub fn apply(
    repo: &Repository,
    updates: &[RefUpdate],
    kinds: &HashMap<Oid, Kind>,
) -> Result<(), SyncError> {
    if updates.is_empty() {
        return Ok(());
    }
    Ok(packed::apply(repo, updates, kinds)?)
}

#[cfg(test)]
mod tests {
    use super::valid_name;
    use crate::sync::testing;

    /// Names a remote may advertise, judged by git and by us alike.
    #[test]
    fn ref_names_are_judged_as_git_judges_them() {
        let names = [
            "refs/heads/main",
            "refs/tags/v1.0",
            "refs/heads/feature/x-y_z",
            "refs/heads/ä-umlaut",
            "refs/heads/-dash",
            "refs/heads/HEAD",
            "refs/x",
            "refs/heads/a..b",
            "refs/heads/.hidden",
            "refs/heads/a/.b",
            "refs/heads/trailing.",
            "refs/heads/x.lock",
            "refs/heads/x.lock/y",
            "refs/heads/@",
            "refs/heads/a@{b",
            "refs/heads/a b",
            "refs/heads/a\tb",
            "refs/heads/a~b",
            "refs/heads/a^b",
            "refs/heads/a:b",
            "refs/heads/a?b",
            "refs/heads/a*b",
            "refs/heads/a[b",
            "refs/heads/a\\b",
            "refs/heads//a",
            "refs/heads/a/",
            "refs/heads/a\u{7f}b",
            "refs/heads/.",
            "refs/heads/..",
            "refs/heads/{a}",
            "refs/heads/a@b",
            "refs/heads/@{u}",
        ];
        let dir = tempfile::tempdir().unwrap();
        for name in names {
            let git_accepts = testing::command(dir.path())
                .args(["check-ref-format", name])
                .status()
                .unwrap()
                .success();
            assert_eq!(valid_name(name), git_accepts, "{name:?}");
        }
    }
}
