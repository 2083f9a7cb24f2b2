//! Runs: one run from start to record ([`jobs::Executor`]), a manual sync, the
//! dry run and the resolution of a conflict.

use std::time::{Duration, Instant};

use super::{App, ServiceError};
use crate::jobs::{Executor, Queue};
use crate::store::{
    self, Conflict, ConflictStatus, Direction, Enqueued, ExternalUpdate, Mirror, PendingJob,
    Resolution, Run, RunOutcome, RunRef, Store, StoreError, Trigger,
};
use crate::sync::{Action, Engine, LeaseCheck, Report, SyncError};
use crate::{schedule, telemetry};

impl Executor for App {
    fn store(&self) -> &Store {
        &self.store
    }

    fn queue(&self) -> &Queue {
        &self.jobs
    }

    fn execute(&self, job: &PendingJob) {
        if let Err(error) = self.run(job) {
            tracing::error!(%error, "cannot record the run");
        }
    }

    fn holds_copy(&self, project_id: &str) -> bool {
        crate::sync::repo_path(&self.repos_dir, project_id).is_dir()
    }
}

/// How long a run that has ended waits for disk space to record its end.
const SPACE_WAIT: Duration = Duration::from_secs(600);

/// Runs `write` again while the data dir's disk is full, for at most
/// [`SPACE_WAIT`]: a run that has ended (its refs may have moved) must be
/// recorded, or it would stay `running`, holding its mirror's and host's
/// slots, until the next start. SQLite rolled each failed attempt back.
fn until_space<T>(write: impl Fn() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let deadline = Instant::now() + SPACE_WAIT;
    let mut pause = Duration::from_millis(250);
    loop {
        match write() {
            Err(e) if e.is_disk_full() && Instant::now() < deadline => {
                tracing::error!(
                    retry_in_ms = pause.as_millis() as u64,
                    "the data dir's disk is full: waiting to record the run's end"
                );
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(10));
            }
            other => return other,
        }
    }
}

impl App {
    /// Runs the job's mirror, records the run, moves its schedule on, watches
    /// its health, and queues the project's push mirrors after a pull that
    /// moved refs.
    fn run(&self, job: &PendingJob) -> Result<(), StoreError> {
        let started = Instant::now();
        let (mirror, project) = self.store.with(|c| -> Result<_, StoreError> {
            let mirror =
                store::mirrors::get(c, job.mirror_id)?.ok_or(StoreError::NotFound("mirror"))?;
            let project = store::mirrors::project(c, &mirror.project_id)?
                .ok_or(StoreError::NotFound("project"))?;
            Ok((mirror, project))
        })?;
        tracing::info!(direction = %mirror.direction, "run started");
        let progress = self.live.start(job.run_id);
        let node = &self.jobs.node().id;
        let holds_lease = || {
            let held = self.store.with(|c| {
                store::cluster::holds_lease(c, &project.project_id, node, job.fence, job.run_id)
            });
            held.unwrap_or_else(|error| {
                tracing::error!(%error, "cannot check the project's lease");
                false
            })
        };
        let engine = Engine {
            progress: Some(&progress),
            lease: Some(LeaseCheck(&holds_lease)),
            ..self.engine()
        };
        let result = self
            .project_locks
            .shared(&project.project_id, || engine.sync(&mirror, &project));
        self.live.finish(job.run_id);
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let mut outcome = self.record(&mirror, job.run_id, duration_ms, &result)?;
        outcome.cancelled = result.is_err() && progress.is_cancelled();
        if outcome.cancelled {
            // Whatever the transfer said as its connection was shut down,
            // what happened is the operator's cancel.
            outcome.error = Some(crate::sync::CANCELLED.to_string());
        }
        log(&outcome);
        until_space(|| {
            self.store
                .with(|c| store::runs::finish(c, job.job_id, job.run_id, &outcome))
        })?;
        telemetry::run_finished(mirror.direction, &outcome);
        // A cancelled run says nothing of the mirror: no backoff, no health.
        if outcome.cancelled {
            return Ok(());
        }
        let now = self.clock.now_ms();
        schedule::record_run(
            &self.store,
            &self.schedule_policy,
            mirror.mirror_id,
            outcome.succeeded,
            now,
        )?;
        self.observe_health(mirror.mirror_id)?;
        if mirror.direction == Direction::Pull && result.is_ok_and(|r| r.changed()) {
            self.cascade(&mirror.project_id)?;
        }
        if mirror.direction == Direction::Pull {
            self.housekeep_if_due(&mirror.project_id);
        }
        Ok(())
    }

    /// The run's outcome, with what the run found (conflicts, the remote's
    /// fingerprint) recorded.
    fn record(
        &self,
        mirror: &Mirror,
        run_id: i64,
        duration_ms: i64,
        result: &Result<Report, SyncError>,
    ) -> Result<RunOutcome, StoreError> {
        let report = match result {
            Ok(report) => report,
            Err(error) => {
                return Ok(RunOutcome {
                    duration_ms,
                    error: Some(error.to_string()),
                    ..RunOutcome::default()
                });
            }
        };
        let outcome = outcome_of(report, duration_ms);
        let touched: Vec<RunRef> = report
            .plan
            .iter()
            .filter(|p| p.action != Action::Unchanged)
            .map(RunRef::from)
            .collect();
        // Each write is one transaction, waited for on its own, so that none
        // is repeated after the disk fills between two of them.
        until_space(|| {
            self.store
                .with(|c| store::runs::record_refs(c, run_id, &touched))
        })?;
        until_space(|| {
            self.store
                .with(|c| store::conflicts::record(c, mirror.mirror_id, run_id, &report.conflicts))
        })?;
        if let (Some(fingerprint), true) = (&report.remote_fingerprint, outcome.succeeded) {
            until_space(|| {
                self.store.with(|c| {
                    store::mirrors::set_remote_fingerprint(c, mirror.mirror_id, fingerprint)
                })
            })?;
        }
        Ok(outcome)
    }

    /// Queues the project's enabled push mirrors.
    fn cascade(&self, project_id: &str) -> Result<(), StoreError> {
        let mirrors = self
            .store
            .with(|c| store::mirrors::list(c, Some(project_id), Some(Direction::Push)))?;
        for mirror in mirrors.iter().filter(|m| m.enabled) {
            // A hard-failed destination waits for a manual sync or a
            // settings change; one backing off gets the new refs anyway.
            let hard_failed = self
                .store
                .with(|c| store::schedules::hard_failed(c, mirror.mirror_id))?;
            if !hard_failed {
                self.jobs
                    .trigger(&self.store, mirror.mirror_id, Trigger::Cascade)?;
            }
        }
        Ok(())
    }

    /// Queues a run of an enabled mirror now (or joins the pending one); a
    /// hard-failed mirror gets its schedule back.
    pub fn sync_now(&self, id: i64) -> Result<Enqueued, ServiceError> {
        let mirror = self.mirror(id)?;
        if !mirror.enabled {
            return Err(ServiceError::Conflict(format!(
                "mirror {id} is disabled; enable it first"
            )));
        }
        self.revive(id)?;
        Ok(self.jobs.trigger(&self.store, id, Trigger::Manual)?)
    }

    /// Cancels a run: a queued one ends at once; a running one is asked to
    /// stop, which its transfer does at its next callback, changing no ref.
    /// `Ok(true)` when it was running (the caller may wait for its end).
    pub fn cancel_run(&self, run_id: i64) -> Result<bool, ServiceError> {
        let run = self
            .store
            .with(|c| store::runs::get(c, run_id))?
            .ok_or_else(|| ServiceError::NotFound(format!("no run {run_id}")))?;
        if run.status.is_finished() {
            return Err(ServiceError::Conflict(format!(
                "run {run_id} has already ended ({})",
                run.status
            )));
        }
        if self.store.with(|c| store::runs::cancel_queued(c, run_id))? {
            tracing::info!(run_id, mirror_id = run.mirror_id, "queued run cancelled");
            self.jobs.announce_end(run_id);
            return Ok(false);
        }
        match self.live.progress(run_id) {
            Some(progress) => {
                progress.cancel();
                tracing::info!(run_id, mirror_id = run.mirror_id, "run asked to stop");
                Ok(true)
            }
            // Running on another node: that node's listener cancels it.
            None if self
                .store
                .with(|c| store::cluster::running_elsewhere(c, run_id, &self.jobs.node().id))? =>
            {
                self.store
                    .with(|c| store::cluster::announce_cancel(c, run_id))?;
                tracing::info!(
                    run_id,
                    mirror_id = run.mirror_id,
                    "run's node asked to stop it"
                );
                Ok(true)
            }
            // Between its start and its first transfer, or just ending.
            None => Err(ServiceError::Conflict(format!(
                "run {run_id} is starting or ending; try again"
            ))),
        }
    }

    /// A dry run: what a run would do to each ref now, no ref changed. Each
    /// divergence it meets is opened as a conflict (whatever the strategy
    /// would do with it), so an operator can settle it by id.
    pub fn detect_conflicts(&self, id: i64) -> Result<Detected, ServiceError> {
        let (mirror, project) = self.mirror_with_project(id)?;
        self.refuse_unless_owner(&project.project_id)?;
        let engine = self.engine();
        let report = self
            .project_locks
            .shared(&project.project_id, || engine.plan(&mirror, &project))?;
        let conflicts = self
            .store
            .with(|c| store::conflicts::record_detected(c, id, &report.conflicts))?;
        Ok(Detected { report, conflicts })
    }

    /// Records an update done outside mirrorhost: it counts in health (and
    /// may change the mirror's state, which alerts), not in the mirror's own
    /// schedule or backoff.
    pub fn record_external_update(
        &self,
        id: i64,
        update: &ExternalUpdate,
    ) -> Result<Run, ServiceError> {
        self.mirror(id)?;
        let run = self
            .store
            .with(|c| store::runs::record_external(c, id, update))?;
        tracing::info!(
            mirror_id = id,
            run_id = run.run_id,
            succeeded = update.succeeded,
            "external update recorded"
        );
        self.observe_health(id)?;
        Ok(run)
    }

    /// Settles an open conflict as the operator says.
    pub fn resolve_conflict(
        &self,
        id: i64,
        conflict_id: i64,
        resolution: Resolution,
    ) -> Result<Option<Conflict>, ServiceError> {
        let (mirror, project) = self.mirror_with_project(id)?;
        self.refuse_unless_owner(&project.project_id)?;
        let conflict = self
            .store
            .with(|c| store::conflicts::get(c, id, conflict_id))?
            .ok_or_else(|| {
                ServiceError::NotFound(format!("no conflict {conflict_id} on mirror {id}"))
            })?;
        if conflict.status != ConflictStatus::Open {
            return Err(ServiceError::Conflict(format!(
                "conflict {conflict_id} is not open"
            )));
        }
        let engine = self.engine();
        self.project_locks.shared(&project.project_id, || {
            engine.resolve(&mirror, &project, &conflict, resolution)
        })?;
        self.store
            .with(|c| store::conflicts::resolve(c, conflict_id, resolution))?;
        // Taking upstream's tip moved a local ref: the destinations follow.
        if (mirror.direction, resolution) == (Direction::Pull, Resolution::Theirs) {
            self.cascade(&mirror.project_id)?;
        }
        Ok(self
            .store
            .with(|c| store::conflicts::get(c, id, conflict_id))?)
    }
}

impl App {
    /// What works on a project's repository (a dry run, an operator's
    /// answer, housekeeping) works on the copy of the node that owns it: on
    /// another node it is refused, naming the owner.
    pub(super) fn refuse_unless_owner(&self, project_id: &str) -> Result<(), ServiceError> {
        let node = &self.jobs.node().id;
        match self.store.with(|c| store::cluster::owner(c, project_id))? {
            Some(owner) if owner != *node => Err(ServiceError::Conflict(format!(
                "project {project_id} is kept by node {owner}; ask that node"
            ))),
            _ => Ok(()),
        }
    }
}

/// What a dry run found: its plan, and the conflicts it opened or found open.
#[derive(Debug)]
pub struct Detected {
    pub report: Report,
    pub conflicts: Vec<Conflict>,
}

/// One line for the end of a run, in the run's span.
fn log(outcome: &RunOutcome) {
    match &outcome.error {
        _ if outcome.cancelled => tracing::info!("run cancelled"),
        None => tracing::info!(
            created = outcome.refs_created,
            updated = outcome.refs_updated,
            deleted = outcome.refs_deleted,
            bytes = outcome.bytes_transferred,
            "run succeeded"
        ),
        Some(error) => tracing::warn!(%error, "run failed"),
    }
}

/// A run's figures from its report.
fn outcome_of(report: &Report, duration_ms: i64) -> RunOutcome {
    let count = |actions: &[Action]| actions.iter().map(|a| report.count(*a) as i64).sum();
    RunOutcome {
        succeeded: report.aborted.is_none(),
        cancelled: false,
        duration_ms,
        bytes_transferred: i64::try_from(report.bytes_transferred).unwrap_or(i64::MAX),
        refs_created: count(&[Action::Create]),
        refs_updated: count(&[Action::FastForward, Action::Overwrite]),
        refs_deleted: count(&[Action::Delete]),
        refs_skipped: count(&[Action::KeepLocal, Action::Manual, Action::Refused]),
        conflicts: report.conflicts.len() as i64,
        error: report
            .aborted
            .as_ref()
            .map(|reason| SyncError::Aborted(reason.clone()).to_string()),
        lfs_objects: i64::try_from(report.lfs.objects).unwrap_or(i64::MAX),
        lfs_bytes: i64::try_from(report.lfs.bytes).unwrap_or(i64::MAX),
        lfs_skipped: report.lfs.skipped.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::store::{MirrorSettings, Store};

    /// SQLite's own "database or disk is full", from a database held to
    /// the pages it has.
    fn disk_full() -> StoreError {
        let store = Store::open_in_memory().unwrap();
        store
            .with(|c| {
                let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
                c.execute_batch(&format!("PRAGMA max_page_count = {pages}"))?;
                for i in 0..1000 {
                    let url = format!("https://example.com/{i}.git");
                    let s = MirrorSettings::pull(&format!("p/{i}"), &url, "example.com");
                    store::mirrors::insert(c, &s)?;
                }
                Ok(())
            })
            .unwrap_err()
    }

    #[test]
    fn a_write_waits_for_space_and_nothing_else() {
        assert!(disk_full().is_disk_full(), "{}", disk_full());
        let attempts = Cell::new(0);
        let written = until_space(|| {
            attempts.set(attempts.get() + 1);
            match attempts.get() {
                1 | 2 => Err(disk_full()),
                _ => Ok("recorded"),
            }
        });
        assert_eq!((written.unwrap(), attempts.get()), ("recorded", 3));
        let attempts = Cell::new(0);
        let other = until_space(|| -> Result<(), StoreError> {
            attempts.set(attempts.get() + 1);
            Err(StoreError::NotFound("mirror"))
        });
        assert!(matches!(other, Err(StoreError::NotFound(_))));
        assert_eq!(attempts.get(), 1, "another error is not retried");
    }
}
