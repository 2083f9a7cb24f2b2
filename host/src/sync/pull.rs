//! Pull: upstream refs land in the project's bare repository under their own names.

use std::collections::BTreeMap;

use git2::Oid;

use super::refs::{self, RefUpdate, Relation};
use super::transport::Transfer;
use super::{Action, PlannedRef, Report, Run, SyncError, oid_string, remote};
use crate::plugins::{Decision, DivergedRef};
use crate::store::{self, ConflictStatus, NewConflict};

impl Run<'_> {
    pub(super) fn pull(&self) -> Result<Report, SyncError> {
        let counter = Transfer::default();
        let mut upstream = self.repo.remote_anonymous(&self.mirror.url)?;
        let mut connection = upstream
            .connect_auth(git2::Direction::Fetch, Some(self.callbacks(&counter)), None)
            .map_err(|e| self.git_error(e))?;
        let advertised: BTreeMap<String, Oid> = connection
            .list()?
            .iter()
            .filter(|head| refs::is_mirrorable(head.name()))
            .map(|head| (head.name().to_string(), head.oid()))
            .collect();
        let local = refs::local_refs(self.repo)?;

        // Scope: filters see upstream refs and local-only refs alike, so that a
        // ref deleted upstream is pruned only if it is in scope.
        let mut candidates: Vec<(String, Oid)> =
            advertised.iter().map(|(n, o)| (n.clone(), *o)).collect();
        candidates.extend(
            local
                .iter()
                .filter(|(n, _)| !advertised.contains_key(*n))
                .map(|(n, o)| (n.clone(), *o)),
        );
        let scope = self.scope(&candidates)?;

        // Fetch only objects we lack; a no-op sync transfers no pack at all.
        let odb = self.repo.odb()?;
        let wanted: Vec<&str> = advertised
            .iter()
            .filter(|(name, oid)| scope.contains(*name) && !odb.exists(**oid))
            .map(|(name, _)| name.as_str())
            .collect();
        if !wanted.is_empty() {
            let mut options = self.fetch_options(&counter);
            connection
                .remote()
                .download(&wanted, Some(&mut options))
                .map_err(|e| self.git_error(e))?;
            // The progress callbacks may not see the last bytes of a small pack:
            // take the remote's own count for the report.
            counter.at_least(connection.remote().stats().received_bytes() as u64);
        }
        drop(connection);

        let mut report = Report {
            bytes_transferred: counter.bytes(),
            remote_fingerprint: Some(super::fingerprint(&advertised)),
            ..Report::default()
        };
        let mut updates = Vec::new();
        for (name, &theirs) in advertised.iter().filter(|(n, _)| scope.contains(*n)) {
            let ours = local.get(name).copied();
            let planned = self.plan_ref(name, ours, theirs, &mut report)?;
            if matches!(
                planned.action,
                Action::Create | Action::FastForward | Action::Overwrite
            ) {
                updates.push(RefUpdate {
                    name: name.clone(),
                    old: ours,
                    new: Some(theirs),
                });
            }
            report.plan.push(planned);
        }
        for (name, &ours) in local
            .iter()
            .filter(|(n, _)| scope.contains(*n) && !advertised.contains_key(*n))
        {
            updates.push(RefUpdate {
                name: name.clone(),
                old: Some(ours),
                new: None,
            });
            report.plan.push(PlannedRef {
                ref_name: name.clone(),
                action: Action::Delete,
                local_oid: Some(ours.to_string()),
                remote_oid: None,
                merge_base: None,
                ahead: None,
                behind: None,
                reason: Some("deleted upstream".into()),
            });
        }

        if report.aborted.is_some() {
            for conflict in &mut report.conflicts {
                conflict.status = ConflictStatus::Aborted;
            }
            return Ok(report);
        }
        if !self.dry_run {
            refs::apply(self.repo, &updates, "mirrorhost: pull")?;
        }
        Ok(report)
    }

    /// What happens to one in-scope upstream ref.
    fn plan_ref(
        &self,
        name: &str,
        ours: Option<Oid>,
        theirs: Oid,
        report: &mut Report,
    ) -> Result<PlannedRef, SyncError> {
        let mut planned = PlannedRef {
            ref_name: name.to_string(),
            action: Action::Create,
            local_oid: oid_string(ours),
            remote_oid: Some(theirs.to_string()),
            merge_base: None,
            ahead: None,
            behind: None,
            reason: None,
        };
        let Some(ours) = ours else {
            return Ok(planned);
        };
        let (merge_base, ahead, behind) = match refs::relate(self.repo, ours, theirs)? {
            Relation::Same => {
                planned.action = Action::Unchanged;
                return Ok(planned);
            }
            Relation::FastForward => {
                planned.action = Action::FastForward;
                return Ok(planned);
            }
            Relation::Diverged {
                merge_base,
                ahead,
                behind,
            } => (merge_base, ahead, behind),
        };
        planned.merge_base = oid_string(merge_base);
        planned.ahead = Some(ahead);
        planned.behind = Some(behind);

        let kept = self.engine.store.with(|conn| {
            store::conflicts::kept_by_operator(
                conn,
                self.mirror.mirror_id,
                name,
                &ours.to_string(),
                &theirs.to_string(),
            )
        })?;
        if kept {
            planned.action = Action::KeepLocal;
            planned.reason = Some("an operator resolved this divergence with ours".into());
            return Ok(planned);
        }

        let diverged = DivergedRef {
            name: name.to_string(),
            local_oid: ours.to_string(),
            remote_oid: theirs.to_string(),
            merge_base: oid_string(merge_base),
            ahead: saturate(ahead),
            behind: saturate(behind),
            protected: super::is_protected(name, &self.project.protected_branches),
            direction: crate::plugins::Direction::Pull,
        };
        let strategy = &self.mirror.conflict_strategy;
        let decision = self
            .engine
            .plugins
            .decide(
                strategy,
                &self.context(),
                &self.mirror.conflict_strategy_config,
                &diverged,
            )?
            .value;
        let (action, status, resolution, reason) = match decision {
            Decision::KeepLocal => (
                Action::KeepLocal,
                ConflictStatus::Resolved,
                Some("ours"),
                None,
            ),
            Decision::TakeRemote => (
                Action::Overwrite,
                ConflictStatus::Resolved,
                Some("theirs"),
                None,
            ),
            Decision::DeferManual(reason) => {
                (Action::Manual, ConflictStatus::Open, None, Some(reason))
            }
            Decision::Abort(reason) => {
                report
                    .aborted
                    .get_or_insert_with(|| format!("{name}: {reason}"));
                (Action::Abort, ConflictStatus::Aborted, None, Some(reason))
            }
        };
        planned.action = action;
        planned.reason = reason;
        report.conflicts.push(NewConflict {
            ref_name: name.to_string(),
            local_oid: ours.to_string(),
            remote_oid: theirs.to_string(),
            merge_base: oid_string(merge_base),
            ahead: ahead as i64,
            behind: behind as i64,
            strategy: strategy.clone(),
            status,
            resolution: resolution.map(str::to_string),
        });
        Ok(planned)
    }

    /// A libgit2 error with the remote URL redacted, should it quote it; our own
    /// refusal instead, when a callback refused the connection.
    pub(super) fn git_error(&self, e: git2::Error) -> SyncError {
        match self.refusal.borrow_mut().take() {
            Some(refusal) => SyncError::Git(refusal),
            None => SyncError::Git(remote::redact_in(e.message(), &self.mirror.url)),
        }
    }
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
