//! Push: local refs in scope go to the destination. A destination ref that is not
//! an ancestor of ours is divergent: kept and recorded with `keep_divergent_refs`,
//! force-updated otherwise. Only refs this mirror pushed before may be deleted
//! there; a destination ref that never came from us is left alone.

use std::collections::BTreeMap;

use git2::Oid;

use super::refs::{self, Relation};
use super::transport::Transfer;
use super::{Action, Mode, PlannedRef, Report, Run, SyncError};
use crate::store::{self, ConflictStatus, NewConflict, Resolution};

impl Run<'_> {
    pub(super) fn push(&self) -> Result<Report, SyncError> {
        let local = refs::local_refs(self.repo)?;
        let candidates: Vec<(String, Oid)> = local.iter().map(|(n, o)| (n.clone(), *o)).collect();
        let scope = self.scope(&candidates)?;
        let destination = self.destination_refs()?;
        let pushed_before = self
            .engine
            .store
            .with(|conn| store::conflicts::pushed_refs(conn, self.mirror.mirror_id))?;

        let mut report = Report::default();
        let mut divergent_missing = Vec::new();
        for (name, &ours) in local.iter().filter(|(n, _)| scope.contains(*n)) {
            let theirs = destination.get(name).copied();
            if theirs.is_some_and(|t| !self.repo.odb().is_ok_and(|odb| odb.exists(t))) {
                divergent_missing.push(name.clone());
            }
            report
                .plan
                .push(PlannedRef::new(name, Action::Create, Some(ours), theirs));
        }
        // Objects of divergent destination tips, so their merge base can be recorded.
        let counter = Transfer::default();
        if !divergent_missing.is_empty() {
            let mut remote = self.repo.remote_anonymous(&self.mirror.url)?;
            let mut options = self.fetch_options(&counter);
            remote
                .download(&divergent_missing, Some(&mut options))
                .map_err(|e| self.git_error(e))?;
        }
        for planned in &mut report.plan {
            self.plan_push(planned, &mut report.conflicts)?;
        }
        for (name, pushed_oid) in &pushed_before {
            let gone_locally = !local.contains_key(name);
            let tip = destination.get(name).copied();
            let still_ours = tip.is_some_and(|tip| tip.to_string() == *pushed_oid);
            if gone_locally && still_ours {
                report.plan.push(
                    PlannedRef::new(name, Action::Delete, None, tip)
                        .because("pushed by this mirror, deleted locally"),
                );
            }
        }
        if self.mode == Mode::DryRun {
            return Ok(report);
        }
        if !self.may_go_on() {
            return Err(self.stopped());
        }
        self.still_owner()?;
        report.lfs = self.push_lfs(&pushed_tips(&report), &known_tips(self.repo, &destination)?)?;
        report.bytes_transferred += report.lfs.bytes;
        self.count_lfs_per_ref(&mut report.plan, |p| p.local_oid, &report.lfs);
        self.send(&mut report, &counter)?;
        Ok(report)
    }

    fn destination_refs(&self) -> Result<BTreeMap<String, Oid>, SyncError> {
        let counter = Transfer::default();
        let mut remote = self.repo.remote_anonymous(&self.mirror.url)?;
        let mut connection = remote
            .connect_auth(
                git2::Direction::Push,
                Some(self.callbacks(&counter)),
                Some(self.route().options()),
            )
            .map_err(|e| self.git_error(e))?;
        // Names the destination holds that git refuses are no ref of ours: we
        // neither push nor delete them.
        Ok(super::listing::list(connection.remote())?.refs)
    }

    /// Settles the action of one local ref against its destination tip.
    fn plan_push(
        &self,
        planned: &mut PlannedRef,
        conflicts: &mut Vec<NewConflict>,
    ) -> Result<(), SyncError> {
        let (Some(ours), Some(theirs)) = (planned.local_oid, planned.remote_oid) else {
            return Ok(()); // not on the destination: create
        };
        // `relate(current = theirs, target = ours)`: pushing moves their tip to ours.
        let (merge_base, behind, ahead) = match refs::relate(self.repo, theirs, ours)? {
            Relation::Same => {
                planned.action = Action::Unchanged;
                return Ok(());
            }
            Relation::FastForward => {
                planned.action = Action::FastForward;
                return Ok(());
            }
            Relation::Diverged {
                merge_base,
                ahead,
                behind,
            } => (merge_base, ahead, behind),
        };
        planned.merge_base = merge_base;
        planned.ahead = Some(ahead);
        planned.behind = Some(behind);
        let keep = self.mirror.keep_divergent_refs;
        planned.action = if keep {
            Action::KeepLocal
        } else {
            Action::Overwrite
        };
        planned.reason = Some(if keep {
            "destination diverged; kept (keep_divergent_refs)".into()
        } else {
            "destination diverged; force-updated".into()
        });
        conflicts.push(NewConflict {
            ref_name: planned.ref_name.clone(),
            local_oid: ours.to_string(),
            remote_oid: theirs.to_string(),
            merge_base: merge_base.map(|o| o.to_string()),
            ahead: ahead as i64,
            behind: behind as i64,
            strategy: if keep {
                "keep_divergent_refs"
            } else {
                "force_push"
            }
            .into(),
            status: if keep {
                ConflictStatus::Open
            } else {
                ConflictStatus::Resolved
            },
            resolution: (!keep).then_some(Resolution::Ours),
        });
        Ok(())
    }

    /// Pushes every planned change in one push and records what the destination
    /// accepted. A ref the destination refuses fails the run, naming the ref.
    pub(super) fn send(&self, report: &mut Report, counter: &Transfer) -> Result<(), SyncError> {
        let specs: Vec<String> = report
            .plan
            .iter()
            .filter_map(|p| match p.action {
                Action::Create | Action::FastForward => Some(format!("{0}:{0}", p.ref_name)),
                Action::Overwrite => Some(format!("+{0}:{0}", p.ref_name)),
                Action::Delete => Some(format!(":{}", p.ref_name)),
                _ => None,
            })
            .collect();
        if specs.is_empty() {
            return Ok(());
        }
        let mut rejected: BTreeMap<String, String> = BTreeMap::new();
        let mut remote = self.repo.remote_anonymous(&self.mirror.url)?;
        {
            let mut options = self.push_options(counter, |name, status| {
                if let Some(status) = status {
                    rejected.insert(name.to_string(), status.to_string());
                }
            });
            remote
                .push(&specs, Some(&mut options))
                .map_err(|e| self.git_error(e))?;
        }
        report.bytes_transferred += counter.bytes();
        let accepted: Vec<(String, Option<String>)> = report
            .plan
            .iter()
            .filter(|p| !rejected.contains_key(&p.ref_name))
            .filter_map(|p| match p.action {
                Action::Create | Action::FastForward | Action::Overwrite => {
                    Some((p.ref_name.clone(), p.local_oid.map(|o| o.to_string())))
                }
                Action::Delete => Some((p.ref_name.clone(), None)),
                _ => None,
            })
            .collect();
        self.engine.store.with(|conn| {
            store::conflicts::update_pushed_refs(conn, self.mirror.mirror_id, &accepted)
        })?;
        if rejected.is_empty() {
            return Ok(());
        }
        let refused: Vec<String> = rejected
            .iter()
            .map(|(name, why)| format!("{name} ({why})"))
            .collect();
        Err(SyncError::PushRejected(refused.join(", ")))
    }
}

/// The commits the planned push moves destination refs to.
fn pushed_tips(report: &Report) -> Vec<Oid> {
    report
        .plan
        .iter()
        .filter(|p| {
            matches!(
                p.action,
                Action::Create | Action::FastForward | Action::Overwrite
            )
        })
        .filter_map(|p| p.local_oid)
        .collect()
}

/// The destination's tips that this repository holds: what it has already.
fn known_tips(
    repo: &git2::Repository,
    destination: &BTreeMap<String, Oid>,
) -> Result<Vec<Oid>, SyncError> {
    let odb = repo.odb()?;
    Ok(destination
        .values()
        .copied()
        .filter(|oid| odb.exists(*oid))
        .collect())
}
