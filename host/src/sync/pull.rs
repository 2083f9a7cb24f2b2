//! Pull: upstream refs land in the project's bare repository under their own names.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use git2::Oid;

use super::connectivity;
use super::listing::{self, Listing, Refusal};
use super::refs::{self, RefUpdate, Relation};
use super::transport::Transfer;
use super::{Action, Mode, PlannedRef, Report, Run, SyncError, remote};
use crate::plugins::{Decision, DivergedRef};
use crate::store::{self, ConflictStatus, NewConflict, Resolution};

/// Where a local ref and its upstream counterpart parted.
struct Divergence {
    ours: Oid,
    theirs: Oid,
    merge_base: Option<Oid>,
    ahead: usize,
    behind: usize,
}

impl Run<'_> {
    pub(super) fn pull(&self) -> Result<Report, SyncError> {
        let counter = Transfer::default();
        let listing_url = super::local_transport::listing_url(&self.mirror.url);
        let mut upstream = self.repo.remote_anonymous(&listing_url)?;
        let mut connection = self.connect_fetch(&mut upstream, &counter)?;
        let Listing {
            refs: advertised,
            mut refused,
        } = listing::list(connection.remote())?;
        let local = refs::local_refs(self.repo)?;
        // What the remote's HEAD names, as `git clone --mirror` reads it.
        let default_branch = connection
            .default_branch()
            .ok()
            .and_then(|name| name.as_str().ok().map(str::to_string))
            .filter(|name| refs::valid_name(name));

        let scope = self.pull_scope(&advertised, &local, &mut refused)?;
        // A first fetch's pack is checked whole by the indexer, as a clone's
        // is (a rev-list of the whole history would cost more than the
        // clone: 1.04x git's time, 3.9x its memory on 100,000 objects);
        // later ones are walked from what they brought, as git's fetch does.
        let first = connectivity::holds_no_objects(&self.repo.path().join("objects"));
        let fetched = self.fetch_missing(&mut connection, &advertised, &local, &scope, &counter)?;
        if !first {
            connectivity::check(self.repo.path(), &fetched)?;
        }
        drop(connection);

        let mut report = Report {
            bytes_transferred: counter.bytes(),
            remote_fingerprint: Some(super::fingerprint(&advertised)),
            ..Report::default()
        };
        let updates = self.plan_pull(&advertised, &local, &scope, &mut report)?;
        for (name, oid, why) in refused {
            let local_oid = local.get(&name).copied();
            let planned = PlannedRef::new(&name, Action::Refused, local_oid, Some(oid));
            report.plan.push(planned.because(&why.to_string()));
        }
        if report.aborted.is_some() {
            for conflict in &mut report.conflicts {
                conflict.status = ConflictStatus::Aborted;
            }
            return Ok(report);
        }
        if self.mode == Mode::Apply {
            // LFS objects come before the refs that need them: a run whose
            // objects fail lands nothing, and the next one looks again. (A
            // diverged tip kept as ours gets its objects when an operator
            // takes it: `resolve`.)
            let tips: Vec<Oid> = updates.iter().filter_map(|u| u.new).collect();
            let config_at = default_branch
                .as_ref()
                .and_then(|b| advertised.get(b))
                .copied();
            report.lfs = self.fetch_lfs(&tips, config_at)?;
            report.bytes_transferred += report.lfs.bytes;
            self.count_lfs_per_ref(&mut report.plan, |p| p.remote_oid, &report.lfs);
            self.land(&local, &updates, default_branch)?;
        }
        Ok(report)
    }

    /// The refs in scope. Filters see upstream refs and local-only refs
    /// alike, so that a ref deleted upstream is pruned only if it is in
    /// scope; a new name git could not hold beside another is refused.
    fn pull_scope(
        &self,
        advertised: &BTreeMap<String, Oid>,
        local: &BTreeMap<String, Oid>,
        refused: &mut Vec<(String, Oid, Refusal)>,
    ) -> Result<HashSet<String>, SyncError> {
        let mut candidates: Vec<(String, Oid)> =
            advertised.iter().map(|(n, o)| (n.clone(), *o)).collect();
        candidates.extend(
            local
                .iter()
                .filter(|(n, _)| !advertised.contains_key(*n))
                .map(|(n, o)| (n.clone(), *o)),
        );
        let mut scope = self.scope(&candidates)?;
        for (name, other) in new_names_that_clash(advertised, local, &scope) {
            scope.remove(&name);
            refused.push((name.clone(), advertised[&name], Refusal::Clash(other)));
        }
        Ok(scope)
    }

    /// Applies the run's ref updates, unless it was cancelled or ran out of
    /// time, and points HEAD at the upstream's default branch if the mirror
    /// holds it.
    fn land(
        &self,
        local: &BTreeMap<String, Oid>,
        updates: &[RefUpdate],
        default_branch: Option<String>,
    ) -> Result<(), SyncError> {
        // The last moment a cancel or the deadline can stop the run whole.
        if !self.may_go_on() {
            return Err(self.stopped());
        }
        self.still_owner()?;
        refs::apply(self.repo, updates, &self.tips.found())?;
        match default_branch.filter(|b| holds_after(local, updates, b)) {
            Some(branch) => refs::point_head(self.repo, &branch),
            None => Ok(()),
        }
    }
}

/// Whether the repository holds `name` once `updates` are applied.
fn holds_after(local: &BTreeMap<String, Oid>, updates: &[RefUpdate], name: &str) -> bool {
    match updates.iter().find(|u| u.name == name) {
        Some(update) => update.new.is_some(),
        None => local.contains_key(name),
    }
}

/// The in-scope upstream refs this run would create whose names clash with a
/// ref the repository keeps, or with one created before them in name order:
/// git cannot hold `a` beside `a/b`. Each with the name it clashes with.
fn new_names_that_clash(
    advertised: &BTreeMap<String, Oid>,
    local: &BTreeMap<String, Oid>,
    scope: &HashSet<String>,
) -> Vec<(String, String)> {
    // Local refs stay unless this run prunes them (in scope, gone upstream).
    let kept = local
        .keys()
        .filter(|n| !scope.contains(*n) || advertised.contains_key(*n))
        .map(String::as_str);
    let new = advertised
        .keys()
        .filter(|n| scope.contains(*n) && !local.contains_key(*n))
        .map(String::as_str);
    listing::clashes(kept, new)
        .into_iter()
        .map(|(name, other)| (name.to_string(), other))
        .collect()
}

impl Run<'_> {
    /// Downloads the objects of in-scope refs that we lack; a no-op sync
    /// transfers no pack at all. The tips it fetched.
    fn fetch_missing(
        &self,
        connection: &mut git2::RemoteConnection<'_, '_, '_>,
        advertised: &BTreeMap<String, Oid>,
        local: &BTreeMap<String, Oid>,
        scope: &HashSet<String>,
        counter: &Transfer,
    ) -> Result<Vec<Oid>, SyncError> {
        let odb = self.repo.odb()?;
        let wanted: BTreeMap<&str, Oid> = advertised
            .iter()
            .filter(|(name, oid)| scope.contains(*name) && !odb.exists(**oid))
            .map(|(name, oid)| (name.as_str(), *oid))
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let listed_at = connection.remote().url().unwrap_or_default().to_string();
        if listed_at == self.mirror.url {
            self.download_tips(connection, &wanted, counter)?;
        } else {
            // Listed in-process (a local path): pack-objects there makes the
            // pack. The listing is closed first: libgit2 keeps the remote's
            // packs mapped (the tags it peeled) while it is open.
            connection.remote().disconnect()?;
            let ours = local.values().copied();
            self.fetch_local(Path::new(&listed_at), &wanted, ours, counter)?;
        }
        Ok(wanted.into_values().collect())
    }

    fn connect_fetch<'a, 'repo>(
        &'a self,
        remote: &'a mut git2::Remote<'repo>,
        counter: &'a Transfer,
    ) -> Result<git2::RemoteConnection<'repo, 'a, 'a>, SyncError> {
        remote
            .connect_auth(
                git2::Direction::Fetch,
                Some(self.callbacks(counter)),
                Some(self.route().options()),
            )
            .map_err(|e| self.git_error(e))
    }

    /// The plan for every in-scope ref, into `report`, and the ref updates that
    /// carry it out: upstream refs created, moved or kept; local-only refs pruned.
    fn plan_pull(
        &self,
        advertised: &BTreeMap<String, Oid>,
        local: &BTreeMap<String, Oid>,
        scope: &HashSet<String>,
        report: &mut Report,
    ) -> Result<Vec<RefUpdate>, SyncError> {
        let mut updates = Vec::new();
        for (name, &theirs) in advertised.iter().filter(|(n, _)| scope.contains(*n)) {
            let ours = local.get(name).copied();
            let planned = self.plan_ref(name, ours, theirs, report)?;
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
            report.plan.push(
                PlannedRef::new(name, Action::Delete, Some(ours), None).because("deleted upstream"),
            );
        }
        Ok(updates)
    }

    /// What happens to one in-scope upstream ref.
    fn plan_ref(
        &self,
        name: &str,
        ours: Option<Oid>,
        theirs: Oid,
        report: &mut Report,
    ) -> Result<PlannedRef, SyncError> {
        let mut planned = PlannedRef::new(name, Action::Create, ours, Some(theirs));
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
        planned.merge_base = merge_base;
        planned.ahead = Some(ahead);
        planned.behind = Some(behind);
        let divergence = Divergence {
            ours,
            theirs,
            merge_base,
            ahead,
            behind,
        };
        self.settle(&mut planned, &divergence, report)?;
        Ok(planned)
    }

    /// Settles a diverged ref: kept if an operator already chose ours for this
    /// very divergence, else as the mirror's conflict strategy decides; every
    /// decision is recorded as a conflict in `report`.
    fn settle(
        &self,
        planned: &mut PlannedRef,
        d: &Divergence,
        report: &mut Report,
    ) -> Result<(), SyncError> {
        let name = planned.ref_name.as_str();
        let kept = self.engine.store.with(|conn| {
            store::conflicts::kept_by_operator(
                conn,
                self.mirror.mirror_id,
                name,
                &d.ours.to_string(),
                &d.theirs.to_string(),
            )
        })?;
        if kept {
            planned.action = Action::KeepLocal;
            planned.reason = Some("an operator resolved this divergence with ours".into());
            return Ok(());
        }

        let diverged = DivergedRef {
            name: name.to_string(),
            local_oid: d.ours.to_string(),
            remote_oid: d.theirs.to_string(),
            merge_base: d.merge_base.map(|o| o.to_string()),
            ahead: saturate(d.ahead),
            behind: saturate(d.behind),
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
        if let Decision::Abort(reason) = &decision {
            report
                .aborted
                .get_or_insert_with(|| format!("{name}: {reason}"));
        }
        let (action, status, resolution, reason) = consequence(decision);
        planned.action = action;
        planned.reason = reason;
        report.conflicts.push(NewConflict {
            ref_name: name.to_string(),
            local_oid: d.ours.to_string(),
            remote_oid: d.theirs.to_string(),
            merge_base: d.merge_base.map(|o| o.to_string()),
            ahead: d.ahead as i64,
            behind: d.behind as i64,
            strategy: strategy.clone(),
            status,
            resolution,
        });
        Ok(())
    }

    /// A libgit2 error with the remote URL redacted, should it quote it; our own
    /// refusal instead, when a callback refused the connection.
    pub(super) fn git_error(&self, e: git2::Error) -> SyncError {
        if let Some(refusal) = self.refusal.borrow_mut().take() {
            return SyncError::Git(refusal);
        }
        let tls_refusal =
            e.code() == git2::ErrorCode::Certificate || e.class() == git2::ErrorClass::Ssl;
        if tls_refusal && let Some((leaf, host)) = self.presented.borrow_mut().take() {
            return SyncError::Git(super::tls::explain_refusal(&leaf, &host));
        }
        // libgit2 names the remote's object format when it is not SHA-1 (as
        // "unknown remote object format 'sha256'" or a mismatch); say plainly
        // what is not supported.
        let message = e.message();
        if message.contains("object format") && message.contains("sha256") {
            return SyncError::Sha256;
        }
        if let Some(timeout) = self.engine.timeouts.explain(message) {
            return SyncError::Git(timeout);
        }
        if let Some(proxy) = super::proxy::explain(message, &self.route()) {
            return SyncError::Git(proxy);
        }
        SyncError::Git(remote::redact_in(message, &self.mirror.url))
    }
}

/// How a strategy's decision shows in the plan and in the conflict history:
/// action, conflict status, resolution, reason.
fn consequence(decision: Decision) -> (Action, ConflictStatus, Option<Resolution>, Option<String>) {
    match decision {
        Decision::KeepLocal => (
            Action::KeepLocal,
            ConflictStatus::Resolved,
            Some(Resolution::Ours),
            None,
        ),
        Decision::TakeRemote => (
            Action::Overwrite,
            ConflictStatus::Resolved,
            Some(Resolution::Theirs),
            None,
        ),
        Decision::DeferManual(reason) => (Action::Manual, ConflictStatus::Open, None, Some(reason)),
        Decision::Abort(reason) => (Action::Abort, ConflictStatus::Aborted, None, Some(reason)),
    }
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
