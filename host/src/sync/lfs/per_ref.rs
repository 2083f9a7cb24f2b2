//! Per ref, the LFS objects a run moved that the ref's new tip's files
//! hold: one walk of the new tips' trees, each tree read once however many
//! refs share it (ten thousand tags over one tree cost one walk).

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use git2::Oid;

use super::LfsTally;
use crate::sync::{Action, LfsCount, PlannedRef, Run};

impl Run<'_> {
    /// Sets, on each ref of `plan` that moves to a new tip (`tip_of`), the
    /// LFS objects of `tally` that the tip's files hold. One walk of the
    /// trees, each tree read once whatever number of refs share it.
    pub(in crate::sync) fn count_lfs_per_ref(
        &self,
        plan: &mut [PlannedRef],
        tip_of: impl Fn(&PlannedRef) -> Option<Oid>,
        tally: &LfsTally,
    ) {
        if tally.moved.is_empty() {
            return;
        }
        let mut holdings = Holdings {
            repo: self.repo,
            moved: &tally.moved,
            memo: HashMap::new(),
        };
        let moving = |p: &PlannedRef| {
            matches!(
                p.action,
                Action::Create | Action::FastForward | Action::Overwrite
            )
        };
        for planned in plan.iter_mut().filter(|p| moving(p)) {
            let Some(tree) = tip_of(planned)
                .and_then(|tip| self.repo.find_object(tip, None).ok())
                .and_then(|object| object.peel_to_tree().ok())
            else {
                continue;
            };
            // A tree that cannot be read counts nothing: the count is a
            // report, and the objects are there either way.
            if let Ok(blobs) = holdings.under(tree.id()) {
                planned.lfs = LfsCount {
                    objects: blobs.len() as u64,
                    bytes: blobs.iter().map(|b| tally.moved[b]).sum(),
                };
            }
        }
    }
}

/// Which of the moved pointer blobs each tree holds, at any depth.
struct Holdings<'a> {
    repo: &'a git2::Repository,
    moved: &'a HashMap<Oid, u64>,
    memo: HashMap<Oid, Rc<BTreeSet<Oid>>>,
}

impl Holdings<'_> {
    fn under(&mut self, tree: Oid) -> Result<Rc<BTreeSet<Oid>>, git2::Error> {
        if let Some(known) = self.memo.get(&tree) {
            return Ok(Rc::clone(known));
        }
        let read = self.repo.find_tree(tree)?;
        let mut blobs = BTreeSet::new();
        for entry in read.iter() {
            match entry.kind() {
                Some(git2::ObjectType::Blob) if self.moved.contains_key(&entry.id()) => {
                    blobs.insert(entry.id());
                }
                Some(git2::ObjectType::Tree) => blobs.extend(self.under(entry.id())?.iter()),
                _ => {}
            }
        }
        let blobs = Rc::new(blobs);
        self.memo.insert(tree, Rc::clone(&blobs));
        Ok(blobs)
    }
}
