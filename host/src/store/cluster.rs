//! What lets several `mirrorhost serve` nodes share one database: each
//! node's heartbeat, the lease by which one node at a time owns a project,
//! and the claim that starts jobs under the caps and the leases.
//!
//! A project's repository lives on its owner's disk, so its runs start only
//! there: a job is claimed by the node holding its project's lease, or by
//! any node when the lease is free or expired (which takes it, with a new
//! fencing number). A node renews its leases with every heartbeat; a node
//! that stops beating loses them when they expire, and its running jobs are
//! interrupted and retried. The engine asks [`holds_lease`] with the fencing
//! number its run started under just before it writes a ref or pushes, so a
//! node that lost its lease while it ran writes nothing.
//!
//! On SQLite there is one node, and the same rows serve it.

use std::collections::HashMap;

use super::db::{Backend, Db, Lock, params};
use super::runs::{PendingJob, interrupt};
use super::{StoreError, now_ms};
use crate::clock::rfc3339;

/// The channel whose notices wake the dispatchers: a job was queued, or a
/// running one ended and freed a slot. Payload: the schema (several
/// clusters may share a database, one schema each).
const JOBS_CHANNEL: &str = "mirrorhost_jobs";
/// The channel that asks the node running a run to cancel it. Payload: the
/// schema and the run id.
const CANCEL_CHANNEL: &str = "mirrorhost_cancel";

/// What a node hears from the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// A job may be startable: look at the queue.
    Jobs,
    /// Cancel this run if it runs here.
    Cancel(i64),
}

/// Wakes every node's dispatcher when the transaction commits (PostgreSQL's
/// NOTIFY; one process on SQLite wakes itself).
pub fn announce_jobs(conn: &Db) -> Result<(), StoreError> {
    if conn.backend() == Backend::Postgres {
        conn.execute("SELECT pg_notify(?1, current_schema())", [JOBS_CHANNEL])?;
    }
    Ok(())
}

/// Asks every node to cancel run `run_id`; the one running it does.
pub fn announce_cancel(conn: &Db, run_id: i64) -> Result<(), StoreError> {
    if conn.backend() == Backend::Postgres {
        conn.execute(
            "SELECT pg_notify(?1, current_schema() || ' ' || CAST(?2 AS TEXT))",
            params![CANCEL_CHANNEL, run_id.to_string()],
        )?;
    }
    Ok(())
}

/// What a notice on `channel` with `payload` says to a node of `schema`;
/// `None` for another schema's, or what it cannot read.
fn notice(schema: &str, channel: &str, payload: &str) -> Option<Notice> {
    match (channel, payload.split_once(' ')) {
        (JOBS_CHANNEL, None) if payload == schema => Some(Notice::Jobs),
        (CANCEL_CHANNEL, Some((of, run_id))) if of == schema => {
            run_id.parse().ok().map(Notice::Cancel)
        }
        _ => None,
    }
}

/// The caps and the lease term a claim works under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// Runs at once in the whole cluster.
    pub global: usize,
    /// Runs at once against one remote host, in the whole cluster.
    pub per_host: usize,
    /// How long a lease lasts unless renewed.
    pub lease_ms: i64,
}

/// Node `node` is alive: its heartbeat now, and its leases renewed for
/// `lease_ms` (even one that expired: a row that still names this node was
/// taken by no other since, so no other node wrote under it).
pub fn heartbeat(conn: &mut Db, node: &str, lease_ms: i64) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    let at = now_ms(&tx)?;
    tx.execute(
        "INSERT INTO nodes (id, heartbeat_ms) VALUES (?1, ?2) \
         ON CONFLICT(id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms",
        params![node, at],
    )?;
    tx.execute(
        "UPDATE project_leases SET expires_at_ms = ?2 WHERE node = ?1",
        params![node, at + lease_ms],
    )?;
    tx.commit()
}

/// The running jobs of nodes that have not beaten for `lease_ms`: their
/// runs are interrupted and retried (a node that died mid-run). Returns how
/// many.
pub fn reclaim_silent(conn: &mut Db, lease_ms: i64) -> Result<usize, StoreError> {
    let tx = conn.transaction()?;
    tx.lock(Lock::Claims)?;
    let silent: Vec<(i64, i64, i64)> = tx.query_map(
        "SELECT j.id, j.mirror_id, j.run_id FROM jobs j \
         WHERE j.state = 'running' AND j.node IS NOT NULL AND NOT EXISTS \
           (SELECT 1 FROM nodes n WHERE n.id = j.node AND n.heartbeat_ms > ?1)",
        [now_ms(&tx)? - lease_ms],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )?;
    interrupt(
        &tx,
        &silent,
        "the node running this run stopped answering; it is retried",
    )?;
    tx.commit()?;
    Ok(silent.len())
}

/// Whether run `run_id` of `node` may still write: `node` holds
/// `project_id`'s lease under fencing number `fence`, unexpired, and the
/// run's job is still its own (not taken for lost and retried).
pub fn holds_lease(
    conn: &Db,
    project_id: &str,
    node: &str,
    fence: i64,
    run_id: i64,
) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM project_leases WHERE project_id = ?1 AND node = ?2 \
         AND fence = ?3 AND expires_at_ms > clock_now_ms()) \
         AND EXISTS (SELECT 1 FROM jobs WHERE run_id = ?4 AND node = ?2 AND state = 'running')",
        params![project_id, node, fence, run_id],
        |row| row.get(0),
    )
}

/// Of `run_ids`, running here, those whose jobs are no longer this node's
/// (taken for lost while this node was silent): they must stop.
pub fn lost_runs(conn: &Db, node: &str, run_ids: &[i64]) -> Result<Vec<i64>, StoreError> {
    let mut lost = Vec::new();
    for run_id in run_ids {
        let ours: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE run_id = ?1 AND node = ?2)",
            params![run_id, node],
            |row| row.get(0),
        )?;
        if !ours {
            lost.push(*run_id);
        }
    }
    Ok(lost)
}

/// Whether run `run_id` is running on a node other than `node`.
pub fn running_elsewhere(conn: &Db, run_id: i64, node: &str) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE run_id = ?1 AND state = 'running' \
         AND node IS NOT NULL AND node <> ?2)",
        params![run_id, node],
        |row| row.get(0),
    )
}

/// The node whose unexpired lease owns `project_id`, if any.
pub fn owner(conn: &Db, project_id: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_map(
            "SELECT node FROM project_leases WHERE project_id = ?1 \
             AND expires_at_ms > clock_now_ms()",
            [project_id],
            |row| row.get(0),
        )?
        .pop())
}

/// A project's lease as a claim finds it.
struct Lease {
    node: String,
    fence: i64,
    expires_at_ms: i64,
}

/// Starts what node `node` may start now, in one transaction serialised
/// across the cluster (so the caps are counted exactly): pending jobs, oldest
/// first, whose mirror runs nothing, within `terms`' caps, whose project's
/// lease is ours or free (taken then). A push job takes a free lease only
/// where `holds_copy(project)` (it pushes from the local copy; a pull
/// fetches afresh), unless no pull fills the project. Each claimed job is
/// marked running on `node`.
pub fn claim(
    conn: &mut Db,
    node: &str,
    terms: Terms,
    holds_copy: impl Fn(&str) -> bool,
) -> Result<Vec<PendingJob>, StoreError> {
    let tx = conn.transaction()?;
    tx.lock(Lock::Claims)?;
    let at_ms = now_ms(&tx)?;
    let at = rfc3339(at_ms);
    let mut running: usize = tx.query_row(
        "SELECT COUNT(*) FROM jobs WHERE state = 'running'",
        [],
        |row| row.get::<i64>(0),
    )? as usize;
    let mut per_host: HashMap<String, usize> = tx
        .query_map(
            "SELECT m.remote_host, COUNT(*) FROM jobs j JOIN mirrors m ON m.id = j.mirror_id \
             WHERE j.state = 'running' GROUP BY m.remote_host",
            [],
            |row| Ok((row.get(0)?, row.get::<i64>(1)? as usize)),
        )?
        .into_iter()
        .collect();
    let mut leases: HashMap<String, i64> = HashMap::new();
    let mut claimed = Vec::new();
    for (mut job, project_id, may_start_anywhere) in pending(&tx, at_ms)? {
        if running >= terms.global {
            break;
        }
        let host_cap = job
            .host_cap
            .map_or(terms.per_host, |cap| terms.per_host.min(cap as usize));
        let load = per_host.entry(job.remote_host.clone()).or_default();
        // A mirror is listed once: it has at most one pending job.
        if *load >= host_cap {
            continue;
        }
        let fence = match leases.get(&project_id) {
            Some(fence) => *fence,
            None => {
                let may_take = may_start_anywhere || holds_copy(&project_id);
                match lease_for(&tx, &project_id, node, at_ms, terms.lease_ms, may_take)? {
                    Some(fence) => fence,
                    None => continue,
                }
            }
        };
        leases.insert(project_id, fence);
        job.fence = fence;
        mark_running(&tx, &job, node, &at)?;
        *load += 1;
        running += 1;
        claimed.push(job);
    }
    tx.commit()?;
    Ok(claimed)
}

/// Pending jobs whose mirror has nothing running and that need not wait
/// longer, oldest first (a retried job as old as the one it retries), with
/// their project and whether any node may take the project for them: a pull
/// fetches afresh, and a push of a project no pull fills has nothing to
/// wait for; other pushes need the copy.
fn pending(tx: &Db, at_ms: i64) -> Result<Vec<(PendingJob, String, bool)>, StoreError> {
    tx.query_map(
        "SELECT j.id, j.run_id, j.mirror_id, m.remote_host, r.trigger, b.max_concurrent_updates, \
         m.project_id, m.direction = 'pull' OR NOT EXISTS (SELECT 1 FROM mirrors p \
           WHERE p.project_id = m.project_id AND p.direction = 'pull') \
         FROM jobs j JOIN mirrors m ON m.id = j.mirror_id JOIN runs r ON r.id = j.run_id \
         LEFT JOIN bandwidth b ON b.mirror_id = j.mirror_id \
         WHERE j.state = 'pending' AND COALESCE(j.not_before, 0) <= ?1 AND NOT EXISTS \
           (SELECT 1 FROM jobs r WHERE r.mirror_id = j.mirror_id AND r.state = 'running') \
         ORDER BY j.created_at, j.id",
        [at_ms],
        |row| {
            let job = PendingJob {
                job_id: row.get(0)?,
                run_id: row.get(1)?,
                mirror_id: row.get(2)?,
                remote_host: row.get(3)?,
                trigger: row.get(4)?,
                host_cap: row.get(5)?,
                fence: 0,
            };
            Ok((job, row.get(6)?, row.get(7)?))
        },
    )
}

/// The fencing number under which `node` holds `project_id`'s lease: its
/// own unexpired lease, or a free or expired one it takes now (when
/// `may_take`); `None` when another node holds it.
fn lease_for(
    tx: &Db,
    project_id: &str,
    node: &str,
    at_ms: i64,
    lease_ms: i64,
    may_take: bool,
) -> Result<Option<i64>, StoreError> {
    let found = tx
        .query_map(
            "SELECT node, fence, expires_at_ms FROM project_leases WHERE project_id = ?1",
            [project_id],
            |row| {
                Ok(Lease {
                    node: row.get(0)?,
                    fence: row.get(1)?,
                    expires_at_ms: row.get(2)?,
                })
            },
        )?
        .pop();
    let expires = at_ms + lease_ms;
    match found {
        // Ours, even expired: no other node took it since.
        Some(lease) if lease.node == node => {
            tx.execute(
                "UPDATE project_leases SET expires_at_ms = ?2 WHERE project_id = ?1",
                params![project_id, expires],
            )?;
            Ok(Some(lease.fence))
        }
        Some(lease) if lease.expires_at_ms > at_ms => Ok(None),
        _ if !may_take => Ok(None),
        found => {
            let fence = found.map_or(1, |lease| lease.fence + 1);
            tx.execute(
                "INSERT INTO project_leases (project_id, node, fence, expires_at_ms) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT(project_id) DO UPDATE SET \
                 node = excluded.node, fence = excluded.fence, expires_at_ms = excluded.expires_at_ms",
                params![project_id, node, fence, expires],
            )?;
            Ok(Some(fence))
        }
    }
}

/// Marks a claimed job and its run as running on `node`, started `at`.
fn mark_running(tx: &Db, job: &PendingJob, node: &str, at: &str) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE jobs SET state = 'running', node = ?2 WHERE id = ?1",
        params![job.job_id, node],
    )?;
    tx.execute(
        "UPDATE runs SET status = 'running', started_at = ?2, node = ?3 WHERE id = ?1",
        params![job.run_id, at, node],
    )?;
    super::health::run_started(tx, job.mirror_id, at)
}

/// Hands every [`Notice`] for this store's schema to `on_notice`, from a
/// thread of its own with its own connection to `url`, for as long as the
/// process lives. A lost connection is made again (a second later); notices
/// sent meanwhile are lost, so each connection begins with a
/// [`Notice::Jobs`]: whoever listens looks again.
pub fn listen(url: String, mut on_notice: impl FnMut(Notice) + Send + 'static) {
    let listening = move || loop {
        match subscribe(&url) {
            Ok((mut client, schema)) => {
                on_notice(Notice::Jobs);
                let mut notices = client.notifications();
                let mut notices = notices.blocking_iter();
                loop {
                    use postgres::fallible_iterator::FallibleIterator;
                    match notices.next() {
                        Ok(Some(heard)) => {
                            if let Some(n) = notice(&schema, heard.channel(), heard.payload()) {
                                on_notice(n);
                            }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            tracing::warn!(%error, "the notice connection broke");
                            break;
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot listen for the cluster's notices"),
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    };
    if let Err(error) = std::thread::Builder::new()
        .name("notices".into())
        .spawn(listening)
    {
        tracing::error!(%error, "cannot start the notice listener");
    }
}

/// A connection listening on both channels, and the schema it serves.
fn subscribe(url: &str) -> Result<(postgres::Client, String), postgres::Error> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    client.batch_execute(&format!("LISTEN {JOBS_CHANNEL}; LISTEN {CANCEL_CHANNEL}"))?;
    let schema: String = client
        .query_one("SELECT current_schema()::TEXT", &[])?
        .get(0);
    Ok((client, schema))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        Direction, MirrorSettings, RunOutcome, RunStatus, Store, Trigger, mirrors, runs,
    };

    const LEASE_MS: i64 = 30_000;

    fn mirror(store: &Store, project: &str, host: &str, direction: Direction) -> i64 {
        let mut settings =
            MirrorSettings::pull(project, &format!("https://{host}/{project}"), host);
        settings.direction = direction;
        store
            .with(|c| mirrors::insert(c, &settings))
            .unwrap()
            .mirror_id
    }

    fn queue(store: &Store, mirror_id: i64) -> i64 {
        store
            .with(|c| runs::enqueue(c, mirror_id, Trigger::Manual))
            .unwrap()
            .run_id
    }

    fn claim_as(store: &Store, node: &str, global: usize, copy: bool) -> Vec<PendingJob> {
        let terms = Terms {
            global,
            per_host: global,
            lease_ms: LEASE_MS,
        };
        store.with(|c| claim(c, node, terms, |_| copy)).unwrap()
    }

    fn finish(store: &Store, job: &PendingJob) {
        let done = RunOutcome {
            succeeded: true,
            ..RunOutcome::default()
        };
        store
            .with(|c| runs::finish(c, job.job_id, job.run_id, &done))
            .unwrap();
    }

    fn holds(store: &Store, project: &str, node: &str, fence: i64, run_id: i64) -> bool {
        store
            .with(|c| holds_lease(c, project, node, fence, run_id))
            .unwrap()
    }

    #[test]
    fn a_project_runs_on_its_lease_holder_and_moves_when_the_lease_expires() {
        let (store, clock) = Store::driven_for_test();
        let (one, two) = (
            mirror(&store, "p/a", "h", Direction::Pull),
            mirror(&store, "p/a", "h", Direction::Pull),
        );
        queue(&store, one);
        let first = claim_as(&store, "a", 10, true);
        assert_eq!((first.len(), first[0].fence), (1, 1));
        assert!(holds(&store, "p/a", "a", 1, first[0].run_id));
        queue(&store, two);
        assert!(claim_as(&store, "b", 10, true).is_empty(), "a holds p/a");
        finish(&store, &first[0]);
        assert!(
            claim_as(&store, "b", 10, true).is_empty(),
            "a's lease runs on"
        );
        let again = claim_as(&store, "a", 10, true);
        assert_eq!((again[0].mirror_id, again[0].fence), (two, 1));

        // a falls silent: its lease expires and b takes the project over,
        // under a new fencing number that a's runs no longer match.
        clock.advance(LEASE_MS + 1);
        queue(&store, one);
        let taken = claim_as(&store, "b", 10, true);
        assert_eq!((taken[0].mirror_id, taken[0].fence), (one, 2));
        assert!(
            !holds(&store, "p/a", "a", 1, again[0].run_id),
            "a's run is fenced off"
        );
        assert!(holds(&store, "p/a", "b", 2, taken[0].run_id));
        finish(&store, &again[0]);
    }

    /// Two stores on one database, as two nodes have: PostgreSQL in the
    /// PostgreSQL pass, a SQLite file otherwise.
    fn two_nodes() -> (Store, Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let schema = crate::store::test_postgres::fresh_schema();
        match crate::store::test_postgres::schema_url(&schema) {
            Some(url) => (
                Store::connect(&url).unwrap(),
                Store::connect(&url).unwrap(),
                dir,
            ),
            None => {
                let path = dir.path().join("shared.db");
                (
                    Store::open(&path).unwrap(),
                    Store::open(&path).unwrap(),
                    dir,
                )
            }
        }
    }

    #[test]
    fn nodes_queuing_one_mirror_at_once_make_one_job_and_a_schedule_fires_once() {
        let (a, b, _dir) = two_nodes();
        let id = mirror(&a, "u/v", "h", Direction::Pull);
        let both = std::thread::scope(|scope| {
            let runs: Vec<_> = [&a, &b]
                .into_iter()
                .map(|store| {
                    scope.spawn(move || {
                        (0..50)
                            .map(|_| {
                                store
                                    .with(|c| runs::enqueue(c, id, Trigger::Webhook))
                                    .unwrap()
                                    .run_id
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            runs.into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect::<std::collections::BTreeSet<_>>()
        });
        assert_eq!(both.len(), 1, "one pending run: {both:?}");

        let schedule = crate::store::schedules::Cadence::Interval(60);
        a.with(|c| crate::store::schedules::set(c, id, &schedule, true, Some(1_000)))
            .unwrap();
        let fired = [&a, &b].map(|store| {
            store
                .with(|c| crate::store::schedules::move_on(c, id, 1_000, Some(61_000)))
                .unwrap()
        });
        assert_eq!(fired, [true, false], "the second node finds it moved on");
    }

    #[test]
    fn a_node_hears_only_its_own_schemas_notices() {
        assert_eq!(notice("a", JOBS_CHANNEL, "a"), Some(Notice::Jobs));
        assert_eq!(notice("a", JOBS_CHANNEL, "b"), None);
        assert_eq!(notice("a", CANCEL_CHANNEL, "a 7"), Some(Notice::Cancel(7)));
        assert_eq!(notice("a", CANCEL_CHANNEL, "b 7"), None);
        assert_eq!(notice("a", CANCEL_CHANNEL, "a x"), None);
        assert_eq!(notice("a", "other", "a"), None);
    }

    #[test]
    fn the_caps_count_the_runs_of_every_node() {
        let (store, _) = Store::driven_for_test();
        let ids: Vec<i64> = ["x/1", "x/2", "x/3", "x/4"]
            .iter()
            .map(|p| mirror(&store, p, "h", Direction::Pull))
            .collect();
        for id in &ids {
            queue(&store, *id);
        }
        assert_eq!(claim_as(&store, "a", 2, true).len(), 2);
        assert!(
            claim_as(&store, "b", 2, true).is_empty(),
            "the cluster is full"
        );
        assert_eq!(claim_as(&store, "b", 3, true).len(), 1);
    }

    #[test]
    fn a_push_takes_a_free_project_only_where_its_copy_is() {
        let (store, _) = Store::driven_for_test();
        mirror(&store, "q/r", "up", Direction::Pull);
        let push = mirror(&store, "q/r", "dest", Direction::Push);
        queue(&store, push);
        assert!(claim_as(&store, "a", 10, false).is_empty());
        assert_eq!(claim_as(&store, "b", 10, true).len(), 1);
        // A project no pull fills may go anywhere.
        let alone = mirror(&store, "only/push", "dest", Direction::Push);
        queue(&store, alone);
        assert_eq!(claim_as(&store, "a", 10, false).len(), 1);
    }

    #[test]
    fn a_silent_nodes_runs_are_interrupted_and_retried_elsewhere() {
        let (store, clock) = Store::driven_for_test();
        let id = mirror(&store, "s/t", "h", Direction::Pull);
        let run = queue(&store, id);
        store.with(|c| heartbeat(c, "a", LEASE_MS)).unwrap();
        assert_eq!(claim_as(&store, "a", 10, true).len(), 1);
        store.with(|c| reclaim_silent(c, LEASE_MS)).unwrap();
        assert_eq!(
            store.with(|c| runs::get(c, run)).unwrap().unwrap().status,
            RunStatus::Running,
            "a beats"
        );
        clock.advance(LEASE_MS + 1);
        store.with(|c| heartbeat(c, "b", LEASE_MS)).unwrap();
        assert_eq!(store.with(|c| reclaim_silent(c, LEASE_MS)).unwrap(), 1);
        let cut = store.with(|c| runs::get(c, run)).unwrap().unwrap();
        assert_eq!(cut.status, RunStatus::Interrupted);
        let retry = claim_as(&store, "b", 10, true);
        assert_eq!((retry.len(), retry[0].fence), (1, 2));
        assert_eq!(store.with(|c| reclaim_silent(c, LEASE_MS)).unwrap(), 0);
    }
}
