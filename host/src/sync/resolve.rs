//! An operator's answer to an open conflict.
//!
//! Pull mirror: `theirs` moves the local ref to the remote's current tip; `ours`
//! keeps it (later runs leave that divergence alone until a tip moves).
//! Push mirror: `ours` force-pushes the local ref over the destination's; `theirs`
//! leaves the destination's ref as it is.

use std::collections::BTreeMap;

use super::refs::{self, RefUpdate};
use super::transport::Transfer;
use super::{Action, Engine, Mode, PlannedRef, Report, Run, SyncError};
use crate::store::{Conflict, Direction, Mirror, Project, Resolution};

impl Engine<'_> {
    pub fn resolve(
        &self,
        mirror: &Mirror,
        project: &Project,
        conflict: &Conflict,
        resolution: Resolution,
    ) -> Result<(), SyncError> {
        let opened = self.open(project)?;
        let run = Run::new(self, &opened, mirror, project, Mode::Apply)?;
        match (mirror.direction, resolution) {
            (Direction::Pull, Resolution::Theirs) => run.take_remote(&conflict.ref_name),
            (Direction::Push, Resolution::Ours) => run.force_push(&conflict.ref_name),
            (Direction::Pull, Resolution::Ours) | (Direction::Push, Resolution::Theirs) => Ok(()),
        }
    }
}

impl Run<'_> {
    fn take_remote(&self, name: &str) -> Result<(), SyncError> {
        let counter = Transfer::default();
        let mut upstream = self.repo.remote_anonymous(&self.mirror.url)?;
        let mut connection = upstream
            .connect_auth(
                git2::Direction::Fetch,
                Some(self.callbacks(&counter)),
                Some(self.route().options()),
            )
            .map_err(|e| self.git_error(e))?;
        let theirs = super::listing::list(connection.remote())?
            .refs
            .get(name)
            .copied()
            .ok_or_else(|| SyncError::Git(format!("{name} no longer exists upstream")))?;
        if !self.repo.odb()?.exists(theirs) {
            self.download_tips(&mut connection, &BTreeMap::from([(name, theirs)]), &counter)?;
        }
        drop(connection);
        // The LFS objects of what lands, as a run fetches them (the
        // endpoint named by the `.lfsconfig` of what lands).
        self.fetch_lfs(&[theirs], Some(theirs))?;
        let ours = self.repo.refname_to_id(name).ok();
        let update = RefUpdate {
            name: name.to_string(),
            old: ours,
            new: Some(theirs),
        };
        refs::apply(self.repo, &[update], &self.tips.found())
    }

    fn force_push(&self, name: &str) -> Result<(), SyncError> {
        let ours = self.repo.refname_to_id(name)?;
        let mut report = Report {
            plan: vec![
                PlannedRef::new(name, Action::Overwrite, Some(ours), None)
                    .because("conflict resolved with ours"),
            ],
            ..Report::default()
        };
        // The destination's LFS server answers which objects it lacks.
        self.push_lfs(&[ours], &[])?;
        self.send(&mut report, &Transfer::default())
    }
}
