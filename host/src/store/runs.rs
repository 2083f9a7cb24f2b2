//! Runs and the durable job queue behind them.
//!
//! A trigger becomes a pending job plus a `queued` run. Per mirror there is at
//! most one pending and one running job (a unique index enforces it); a trigger
//! that finds a pending job joins it and gets its run id, so none is lost and a
//! burst costs at most two runs.

use super::db::{Db, Lock, Optional, Row, params};
use serde::Serialize;

use super::text::text_enum;
use super::{StoreError, now, now_ms};
use crate::clock::rfc3339;

text_enum! {
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum RunStatus as "run status" {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Interrupted = "interrupted",
        /// Stopped by an operator (`POST /api/v1/runs/{id}/cancel`).
        Cancelled = "cancelled",
    }
}

impl RunStatus {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded
                | RunStatus::Failed
                | RunStatus::Interrupted
                | RunStatus::Cancelled
        )
    }
}

text_enum! {
    /// What queued a run.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum Trigger as "run trigger" {
        /// `POST /api/v1/mirrors/{id}/sync`.
        Manual = "manual",
        /// The mirror's interval or cron schedule.
        Schedule = "schedule",
        /// A verified push webhook.
        Webhook = "webhook",
        /// A pull of the project that moved refs (push mirrors only).
        Cascade = "cascade",
        /// The sweep that found the remote's refs changed.
        Reconcile = "reconcile",
        /// Queued again: a run cut off by a stop of the service (at start), or
        /// a failed mirror without a schedule, after its backoff.
        Retry = "retry",
        /// An update done outside mirrorhost, recorded through the API.
        External = "external",
    }
}

text_enum! {
    /// What a run did to one ref (or, for a dry run, would do).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum RefAction as "ref action" {
        Create = "create",
        FastForward = "fast_forward",
        /// Diverged and overwritten (`theirs` on pull, force on push).
        Overwrite = "overwrite",
        Delete = "delete",
        Unchanged = "unchanged",
        /// Diverged and left as it is (`ours`, `keep_divergent_refs`, or an
        /// operator's `ours`).
        KeepLocal = "keep_local",
        /// Diverged and left for an operator.
        Manual = "manual",
        /// Diverged, and the strategy cancelled the run.
        Abort = "abort",
        /// Not mirrored: a name git refuses, not UTF-8, or clashing with
        /// another ref.
        Refused = "refused",
    }
}

/// One ref a run did not leave alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RunRef {
    pub ref_name: String,
    pub action: RefAction,
    /// Its tip here before the run (pull), or ours (push).
    pub local_oid: Option<String>,
    /// The remote's tip: upstream's (pull) or the destination's (push).
    pub remote_oid: Option<String>,
    pub reason: Option<String>,
    /// LFS objects the run moved that the ref's new tip's files hold, and
    /// their bytes.
    pub lfs_objects: i64,
    pub lfs_bytes: i64,
}

/// Records what run `run_id` did to its refs.
pub fn record_refs(conn: &mut Db, run_id: i64, refs: &[RunRef]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        for r in refs {
            tx.execute(
                "INSERT INTO run_refs (run_id, ref_name, action, local_oid, remote_oid, reason, \
             lfs_objects, lfs_bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    run_id,
                    r.ref_name,
                    r.action,
                    r.local_oid,
                    r.remote_oid,
                    r.reason,
                    r.lfs_objects,
                    r.lfs_bytes
                ],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// What run `run_id` did to its refs, by name.
pub fn refs(conn: &Db, run_id: i64) -> Result<Vec<RunRef>, StoreError> {
    conn.query_map(
        "SELECT ref_name, action, local_oid, remote_oid, reason, lfs_objects, lfs_bytes \
         FROM run_refs WHERE run_id = ?1 ORDER BY ref_name",
        [run_id],
        |row| {
            Ok(RunRef {
                ref_name: row.get(0)?,
                action: row.get(1)?,
                local_oid: row.get(2)?,
                remote_oid: row.get(3)?,
                reason: row.get(4)?,
                lfs_objects: row.get(5)?,
                lfs_bytes: row.get(6)?,
            })
        },
    )
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Run {
    pub run_id: i64,
    pub mirror_id: i64,
    pub trigger: Trigger,
    pub status: RunStatus,
    pub queued_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub bytes_transferred: i64,
    pub refs_created: i64,
    pub refs_updated: i64,
    pub refs_deleted: i64,
    pub refs_skipped: i64,
    pub conflicts: i64,
    pub error: Option<String>,
    /// LFS objects the run downloaded (pull) or uploaded (push), and their bytes.
    pub lfs_objects: i64,
    pub lfs_bytes: i64,
    /// LFS objects it could not move and left out (`lfs_missing: skip`).
    pub lfs_skipped: Vec<String>,
}

/// What a finished run reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOutcome {
    pub succeeded: bool,
    /// An operator stopped it: neither a success nor a failure.
    pub cancelled: bool,
    pub duration_ms: i64,
    pub bytes_transferred: i64,
    pub refs_created: i64,
    pub refs_updated: i64,
    pub refs_deleted: i64,
    pub refs_skipped: i64,
    pub conflicts: i64,
    pub error: Option<String>,
    pub lfs_objects: i64,
    pub lfs_bytes: i64,
    pub lfs_skipped: Vec<String>,
}

/// A job the dispatcher may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingJob {
    pub job_id: i64,
    pub run_id: i64,
    pub mirror_id: i64,
    pub remote_host: String,
    pub trigger: Trigger,
    /// The mirror's own cap on runs against its remote host, if it set one.
    pub host_cap: Option<u32>,
    /// The fencing number of the project's lease the job was claimed under.
    pub fence: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    pub run_id: i64,
    /// True when the trigger joined a job that was already pending.
    pub coalesced: bool,
}

const RUN_COLUMNS: &str = "id, mirror_id, trigger, status, queued_at, started_at, finished_at, \
     duration_ms, bytes_transferred, refs_created, refs_updated, refs_deleted, refs_skipped, \
     conflicts, error, lfs_objects, lfs_bytes, lfs_skipped";

fn run_from_row(row: &Row<'_>) -> Result<Run, StoreError> {
    Ok(Run {
        run_id: row.get(0)?,
        mirror_id: row.get(1)?,
        trigger: row.get(2)?,
        status: row.get(3)?,
        queued_at: row.get(4)?,
        started_at: row.get(5)?,
        finished_at: row.get(6)?,
        duration_ms: row.get(7)?,
        bytes_transferred: row.get(8)?,
        refs_created: row.get(9)?,
        refs_updated: row.get(10)?,
        refs_deleted: row.get(11)?,
        refs_skipped: row.get(12)?,
        conflicts: row.get(13)?,
        error: row.get(14)?,
        lfs_objects: row.get(15)?,
        lfs_bytes: row.get(16)?,
        lfs_skipped: skipped_from(row, 17)?,
    })
}

/// The skipped LFS objects, kept as a JSON array (NULL for none).
fn skipped_from(row: &Row<'_>, at: usize) -> Result<Vec<String>, StoreError> {
    match row.get::<Option<String>>(at)? {
        None => Ok(Vec::new()),
        Some(json) => serde_json::from_str(&json).map_err(|e| StoreError::Decode {
            index: at,
            message: e.to_string(),
        }),
    }
}

fn skipped_to(skipped: &[String]) -> Option<String> {
    (!skipped.is_empty()).then(|| serde_json::Value::from(skipped).to_string())
}

/// Queues a run of `mirror_id`, or joins the one already pending.
pub fn enqueue(conn: &mut Db, mirror_id: i64, trigger: Trigger) -> Result<Enqueued, StoreError> {
    enqueue_spaced(conn, mirror_id, trigger, None)
}

/// Like [`enqueue`]; with `spacing`, a new job starts no sooner than that long
/// after the mirror's latest run started (so a sustained flood of triggers
/// costs a run per `spacing`, and a lone one starts at once).
pub fn enqueue_spaced(
    conn: &mut Db,
    mirror_id: i64,
    trigger: Trigger,
    spacing: Option<std::time::Duration>,
) -> Result<Enqueued, StoreError> {
    let tx = conn.transaction()?;
    // Two nodes queuing one mirror at once: the second joins the first's job.
    tx.lock(Lock::Mirror(mirror_id))?;
    let pending: Option<i64> = tx
        .query_row(
            "SELECT run_id FROM jobs WHERE mirror_id = ?1 AND state = 'pending'",
            [mirror_id],
            |row| row.get(0),
        )
        .optional()?;
    if let Some(run_id) = pending {
        return Ok(Enqueued {
            run_id,
            coalesced: true,
        });
    }
    let now_at = now_ms(&tx)?;
    let at = rfc3339(now_at);
    let run_id: i64 = tx.query_row(
        "INSERT INTO runs (mirror_id, trigger, status, queued_at) VALUES (?1, ?2, 'queued', ?3) \
         RETURNING id",
        params![mirror_id, trigger, at],
        |row| row.get(0),
    )?;
    let not_before = match spacing {
        Some(spacing) => latest_start_ms(&tx, mirror_id)?
            .map(|started| started + i64::try_from(spacing.as_millis()).unwrap_or(i64::MAX))
            .filter(|at| *at > now_at),
        None => None,
    };
    tx.execute(
        "INSERT INTO jobs (mirror_id, run_id, state, created_at, not_before) \
         VALUES (?1, ?2, 'pending', ?3, ?4)",
        params![mirror_id, run_id, at, not_before],
    )?;
    super::cluster::announce_jobs(&tx)?;
    tx.commit()?;
    Ok(Enqueued {
        run_id,
        coalesced: false,
    })
}

/// When the mirror's latest run started, in Unix milliseconds.
fn latest_start_ms(conn: &Db, mirror_id: i64) -> Result<Option<i64>, StoreError> {
    let started: Option<String> = conn
        .query_row(
            "SELECT started_at FROM runs WHERE mirror_id = ?1 AND started_at IS NOT NULL \
             ORDER BY id DESC LIMIT 1",
            [mirror_id],
            |row| row.get(0),
        )
        .optional()?;
    Ok(started.as_deref().and_then(crate::clock::parse_rfc3339))
}

/// How long until the first pending job that waits may start, if one waits.
pub fn next_start_in(conn: &Db) -> Result<Option<std::time::Duration>, StoreError> {
    let now = now_ms(conn)?;
    let at: Option<i64> = conn.query_row(
        "SELECT MIN(not_before) FROM jobs WHERE state = 'pending' AND not_before > ?1",
        [now],
        |row| row.get(0),
    )?;
    Ok(at.map(|at| std::time::Duration::from_millis(u64::try_from(at - now).unwrap_or(1))))
}

/// Records the outcome of a run and removes its job.
pub fn finish(conn: &mut Db, job_id: i64, run_id: i64, o: &RunOutcome) -> Result<Run, StoreError> {
    let tx = conn.transaction()?;
    let status = match (o.cancelled, o.succeeded) {
        (true, _) => RunStatus::Cancelled,
        (false, true) => RunStatus::Succeeded,
        (false, false) => RunStatus::Failed,
    };
    let at = now(&tx)?;
    // A run whose job is gone was taken for lost (its node fell silent) and
    // is on record as interrupted, its retry queued: that record stands.
    if tx.execute("DELETE FROM jobs WHERE id = ?1", [job_id])? == 0 {
        let run = get(&tx, run_id)?.ok_or(StoreError::NotFound("run"))?;
        tx.commit()?;
        return Ok(run);
    }
    tx.execute(
        "UPDATE runs SET status = ?2, finished_at = ?3, duration_ms = ?4, bytes_transferred = ?5, \
         refs_created = ?6, refs_updated = ?7, refs_deleted = ?8, refs_skipped = ?9, \
         conflicts = ?10, error = ?11, lfs_objects = ?12, lfs_bytes = ?13, lfs_skipped = ?14 \
         WHERE id = ?1",
        params![
            run_id,
            status,
            at,
            o.duration_ms,
            o.bytes_transferred,
            o.refs_created,
            o.refs_updated,
            o.refs_deleted,
            o.refs_skipped,
            o.conflicts,
            o.error,
            o.lfs_objects,
            o.lfs_bytes,
            skipped_to(&o.lfs_skipped),
        ],
    )?;
    let run = get(&tx, run_id)?.ok_or(StoreError::NotFound("run"))?;
    if !o.cancelled {
        let outcome = super::health::Outcome {
            succeeded: o.succeeded,
            duration_ms: o.duration_ms,
        };
        super::health::run_finished(&tx, run.mirror_id, outcome, &at, o.error.as_deref())?;
        super::health::lfs_moved(&tx, run.mirror_id, o.lfs_objects, o.lfs_bytes)?;
    }
    // A slot is free: another node's dispatcher may start something.
    super::cluster::announce_jobs(&tx)?;
    tx.commit()?;
    Ok(run)
}

/// What a caller reports of an update done outside mirrorhost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalUpdate {
    pub succeeded: bool,
    pub duration_ms: i64,
    pub error: Option<String>,
}

/// Records an update done outside mirrorhost as a finished run (trigger
/// `external`) that ended now and started `duration_ms` before; it counts in
/// the mirror's health like any run.
pub fn record_external(
    conn: &mut Db,
    mirror_id: i64,
    update: &ExternalUpdate,
) -> Result<Run, StoreError> {
    let tx = conn.transaction()?;
    let end_ms = now_ms(&tx)?;
    let (started, finished) = (
        rfc3339(end_ms.saturating_sub(update.duration_ms)),
        rfc3339(end_ms),
    );
    let status = match update.succeeded {
        true => RunStatus::Succeeded,
        false => RunStatus::Failed,
    };
    let run_id: i64 = tx.query_row(
        "INSERT INTO runs (mirror_id, trigger, status, queued_at, started_at, finished_at, \
         duration_ms, error) VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7) RETURNING id",
        params![
            mirror_id,
            Trigger::External,
            status,
            started,
            finished,
            update.duration_ms,
            update.error,
        ],
        |row| row.get(0),
    )?;
    super::health::run_started(&tx, mirror_id, &started)?;
    let outcome = super::health::Outcome {
        succeeded: update.succeeded,
        duration_ms: update.duration_ms,
    };
    super::health::run_finished(&tx, mirror_id, outcome, &finished, update.error.as_deref())?;
    let run = get(&tx, run_id)?.ok_or(StoreError::NotFound("run"))?;
    tx.commit()?;
    Ok(run)
}

/// Cancels run `run_id` if it is still queued: its job goes, the run ends
/// `cancelled`. Whether it was queued.
pub fn cancel_queued(conn: &mut Db, run_id: i64) -> Result<bool, StoreError> {
    let tx = conn.transaction()?;
    let removed = tx.execute(
        "DELETE FROM jobs WHERE run_id = ?1 AND state = 'pending'",
        [run_id],
    )?;
    if removed == 0 {
        return Ok(false);
    }
    tx.execute(
        "UPDATE runs SET status = ?2, finished_at = ?3, error = ?4 WHERE id = ?1",
        params![
            run_id,
            RunStatus::Cancelled,
            now(&tx)?,
            "cancelled by an operator before it started"
        ],
    )?;
    tx.commit()?;
    Ok(true)
}

/// After a crash: the runs node `node` was running (or any run no node
/// claimed, from before nodes) are marked `interrupted`, and their jobs go
/// back to pending under a fresh run (or join the job already pending).
/// Returns how many runs were interrupted.
pub fn recover(conn: &mut Db, node: &str) -> Result<usize, StoreError> {
    let tx = conn.transaction()?;
    tx.lock(Lock::Claims)?;
    let running: Vec<(i64, i64, i64)> = tx.query_map(
        "SELECT id, mirror_id, run_id FROM jobs \
         WHERE state = 'running' AND (node = ?1 OR node IS NULL)",
        [node],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )?;
    interrupt(
        &tx,
        &running,
        "the service stopped during this run; it is retried",
    )?;
    tx.commit()?;
    Ok(running.len())
}

/// Marks each `(job, mirror, run)` interrupted with `why`, removes its job,
/// and queues a retry of its mirror unless one is pending already.
pub(super) fn interrupt(tx: &Db, running: &[(i64, i64, i64)], why: &str) -> Result<(), StoreError> {
    let at = now(tx)?;
    for (job_id, mirror_id, run_id) in running {
        tx.execute(
            "UPDATE runs SET status = 'interrupted', finished_at = ?2, error = ?3 WHERE id = ?1",
            params![run_id, at, why],
        )?;
        let queued_at: String = tx.query_row(
            "DELETE FROM jobs WHERE id = ?1 RETURNING created_at",
            [job_id],
            |row| row.get(0),
        )?;
        let has_pending: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE mirror_id = ?1 AND state = 'pending')",
            [mirror_id],
            |row| row.get(0),
        )?;
        if !has_pending {
            let retry_run: i64 = tx.query_row(
                "INSERT INTO runs (mirror_id, trigger, status, queued_at) \
                 VALUES (?1, ?2, 'queued', ?3) RETURNING id",
                params![mirror_id, Trigger::Retry, at],
                |row| row.get(0),
            )?;
            // The retry keeps the cut-off job's place in the queue (claims
            // go oldest job first), not the back of it.
            tx.execute(
                "INSERT INTO jobs (mirror_id, run_id, state, created_at) VALUES (?1, ?2, 'pending', ?3)",
                params![mirror_id, retry_run, queued_at],
            )?;
        }
    }
    if !running.is_empty() {
        super::cluster::announce_jobs(tx)?;
    }
    Ok(())
}

/// How many jobs are pending and how many running.
pub fn job_counts(conn: &Db) -> Result<(i64, i64), StoreError> {
    conn.query_row(
        "SELECT COUNT(*) FILTER (WHERE state = 'pending'), COUNT(*) FILTER (WHERE state = 'running') \
         FROM jobs",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
}

pub fn get(conn: &Db, run_id: i64) -> Result<Option<Run>, StoreError> {
    conn.query_row(
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
        [run_id],
        run_from_row,
    )
    .optional()
}

/// One page of `mirror_id`'s runs, newest first, only those with `status`
/// if given, and how many there are in all.
pub fn page(
    conn: &Db,
    mirror_id: i64,
    status: Option<RunStatus>,
    page: super::Page,
) -> Result<(Vec<Run>, u64), StoreError> {
    let from = "FROM runs WHERE mirror_id = ?1 AND (status = ?2 OR ?2 IS NULL)";
    let args = params![mirror_id, status];
    super::paged(conn, RUN_COLUMNS, from, "id DESC", args, page, run_from_row)
}

/// A run that is queued or going on, with its mirror's project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub run: Run,
    pub project_id: String,
}

/// The runs going on, then the queued ones, oldest first, at most `limit`:
/// picked through `jobs`, which holds only those, so a long history costs
/// nothing.
pub fn in_flight(conn: &Db, limit: u32) -> Result<Vec<InFlight>, StoreError> {
    conn.query_map(
        &format!(
            "SELECT {RUN_COLUMNS}, \
         (SELECT project_id FROM mirrors WHERE mirrors.id = runs.mirror_id) AS project_id \
         FROM runs WHERE id IN (SELECT run_id FROM jobs) \
         ORDER BY status = 'queued', id LIMIT ?1"
        ),
        [limit],
        |row| {
            Ok(InFlight {
                run: run_from_row(row)?,
                project_id: row.get(row.column_count() - 1)?,
            })
        },
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::{MirrorSettings, Store, mirrors};

    fn store_with_mirror() -> (Store, i64) {
        let store = Store::for_test();
        let settings = MirrorSettings::pull("a/b", "https://example.com/a/b.git", "example.com");
        let mirror = store.with(|c| mirrors::insert(c, &settings)).unwrap();
        (store, mirror.mirror_id)
    }

    /// The queue page's list: running before queued, finished runs never.
    #[test]
    fn in_flight_lists_running_then_queued_runs_only() {
        let (store, first) = store_with_mirror();
        run_once(&store, first, RunOutcome::default());
        let other = MirrorSettings::pull("c/d", "https://example.com/c/d.git", "example.com");
        let second = store
            .with(|c| mirrors::insert(c, &other))
            .unwrap()
            .mirror_id;
        store.with(|c| enqueue(c, second, Trigger::Manual)).unwrap();
        let queued = store.with(|c| enqueue(c, first, Trigger::Manual)).unwrap();
        let job = claim(&store, 1).remove(0);
        assert_eq!(job.mirror_id, second);
        let listed: Vec<(i64, RunStatus, String)> = store
            .with(|c| in_flight(c, 10))
            .unwrap()
            .into_iter()
            .map(|f| (f.run.run_id, f.run.status, f.project_id))
            .collect();
        assert_eq!(
            listed,
            [
                (job.run_id, RunStatus::Running, "c/d".to_string()),
                (queued.run_id, RunStatus::Queued, "a/b".to_string()),
            ]
        );
        assert_eq!(store.with(|c| in_flight(c, 1)).unwrap().len(), 1);
    }

    /// What node "node" claims under a cap of `global`.
    pub(crate) fn claim(store: &Store, global: usize) -> Vec<PendingJob> {
        let terms = crate::store::cluster::Terms {
            global,
            per_host: global,
            lease_ms: 60_000,
        };
        store
            .with(|c| crate::store::cluster::claim(c, "node", terms, |_| true))
            .unwrap()
    }

    fn run_once(store: &Store, id: i64, outcome: RunOutcome) {
        store.with(|c| enqueue(c, id, Trigger::Manual)).unwrap();
        let job = claim(store, 10).remove(0);
        store
            .with(|c| finish(c, job.job_id, job.run_id, &outcome))
            .unwrap();
    }

    /// The kept summary follows the runs: the window holds the newest
    /// `KEPT_RUNS`, a cancel counts for nothing, a success clears the error.
    #[test]
    fn finishing_runs_keeps_the_summary() {
        use crate::store::health::{KEPT_RUNS, summary};
        let (store, id) = store_with_mirror();
        for i in 0..(KEPT_RUNS as i64 + 4) {
            let failed = i % 4 == 3;
            let outcome = RunOutcome {
                succeeded: !failed,
                duration_ms: i,
                error: failed.then(|| format!("boom {i}")),
                ..RunOutcome::default()
            };
            run_once(&store, id, outcome);
        }
        let cancelled = RunOutcome {
            cancelled: true,
            ..RunOutcome::default()
        };
        run_once(&store, id, cancelled.clone());
        let kept = store.with(|c| summary(c, id)).unwrap();
        assert_eq!(kept.recent.len(), KEPT_RUNS);
        assert_eq!(kept.recent[0].duration_ms, KEPT_RUNS as i64 + 3);
        assert_eq!(kept.recent[KEPT_RUNS - 1].duration_ms, 4);
        assert_eq!(
            (kept.consecutive_failures, kept.last_succeeded),
            (1, Some(false))
        );
        assert_eq!(kept.last_error.as_deref(), Some("boom 103"));
        assert!(kept.last_success_at.is_some() && kept.last_started_at.is_some());
        // Newest first: 103 failed, 102..100 succeeded; 99 failed.
        let counts = |window| store.with(|c| crate::store::health::window_counts(c, window));
        assert_eq!(counts(4).unwrap(), vec![(id, 4, 3)]);
        assert_eq!(counts(5).unwrap(), vec![(id, 5, 3)]);
        assert_eq!(counts(1000).unwrap(), vec![(id, KEPT_RUNS as u32, 75)]);

        run_once(
            &store,
            id,
            RunOutcome {
                succeeded: true,
                ..RunOutcome::default()
            },
        );
        let kept = store.with(|c| summary(c, id)).unwrap();
        assert_eq!((kept.consecutive_failures, kept.last_error), (0, None));
        assert_eq!(kept.last_finished_at, kept.last_success_at);
    }

    #[test]
    fn runs_come_in_pages_newest_first_and_filter_by_status() {
        let (store, id) = store_with_mirror();
        for i in 0..7 {
            let outcome = RunOutcome {
                succeeded: i % 3 != 0,
                ..RunOutcome::default()
            };
            run_once(&store, id, outcome);
        }
        let page = |status, page, per_page| {
            let p = crate::store::Page { page, per_page };
            let (runs, total) = store.with(|c| super::page(c, id, status, p)).unwrap();
            (runs.iter().map(|r| r.run_id).collect::<Vec<_>>(), total)
        };
        assert_eq!(page(None, 1, 3), (vec![7, 6, 5], 7));
        assert_eq!(page(None, 3, 3), (vec![1], 7));
        assert_eq!(page(Some(RunStatus::Failed), 1, 10), (vec![7, 4, 1], 3));
        assert_eq!(page(Some(RunStatus::Queued), 1, 10), (vec![], 0));
    }

    #[test]
    fn triggers_coalesce_into_one_running_and_one_pending() {
        let (store, id) = store_with_mirror();
        let first = store.with(|c| enqueue(c, id, Trigger::Webhook)).unwrap();
        let second = store.with(|c| enqueue(c, id, Trigger::Webhook)).unwrap();
        assert!(!first.coalesced && second.coalesced);
        assert_eq!(first.run_id, second.run_id);

        let job = claim(&store, 10).remove(0);
        assert!(claim(&store, 10).is_empty());
        let third = store.with(|c| enqueue(c, id, Trigger::Manual)).unwrap();
        let fourth = store.with(|c| enqueue(c, id, Trigger::Manual)).unwrap();
        assert!(!third.coalesced && fourth.coalesced);
        assert_ne!(third.run_id, first.run_id);
        // The pending job waits while its mirror has one running.
        assert!(claim(&store, 10).is_empty());

        let done = store
            .with(|c| {
                finish(
                    c,
                    job.job_id,
                    job.run_id,
                    &RunOutcome {
                        succeeded: true,
                        ..RunOutcome::default()
                    },
                )
            })
            .unwrap();
        assert_eq!(done.status, RunStatus::Succeeded);
        assert_eq!(claim(&store, 10)[0].run_id, third.run_id);
    }

    #[test]
    fn recovery_marks_running_runs_interrupted_and_requeues_them() {
        let (store, id) = store_with_mirror();
        let queued = store.with(|c| enqueue(c, id, Trigger::Manual)).unwrap();
        claim(&store, 10).remove(0);

        assert_eq!(store.with(|c| recover(c, "node")).unwrap(), 1);
        let interrupted = store.with(|c| get(c, queued.run_id)).unwrap().unwrap();
        assert_eq!(interrupted.status, RunStatus::Interrupted);
        assert!(interrupted.error.unwrap().contains("retried"));
        assert_eq!(
            store.with(|c| recover(c, "node")).unwrap(),
            0,
            "recovery is idempotent"
        );
        let retry = claim(&store, 10);
        assert_eq!(retry.len(), 1);
        let run = store.with(|c| get(c, retry[0].run_id)).unwrap().unwrap();
        assert_eq!(
            (run.trigger, run.status),
            (Trigger::Retry, RunStatus::Running)
        );
        assert_eq!(
            store.with(|c| recover(c, "another")).unwrap(),
            0,
            "another node's runs are its own"
        );
    }
}
