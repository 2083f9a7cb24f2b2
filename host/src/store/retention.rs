//! What the store forgets, and when: finished runs beyond a mirror's latest
//! few or older than a number of days, webhook delivery ids once a replay of
//! them is no longer plausible, conflicts long settled. Health and GitLab's
//! status fields do not read the history (`mirror_health` keeps them), so
//! nothing an operator sees at a glance changes when history goes.
//!
//! Deletes go in batches, each its own transaction, so the connection is never
//! held for long; the space they free goes back to the file system through
//! SQLite's incremental vacuum.

use super::db::{Db, params};

use super::StoreError;
use crate::clock::rfc3339;

/// How much history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Finished runs kept per mirror, newest first (at least 1).
    pub runs_per_mirror: u32,
    /// Finished runs older than this are deleted whatever their number.
    pub run_days: u32,
    /// Webhook delivery ids (replay protection) older than this are deleted.
    pub delivery_days: u32,
    /// Resolved and aborted conflicts older than this are deleted; open ones
    /// never are.
    pub conflict_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            runs_per_mirror: 100,
            run_days: 30,
            delivery_days: 7,
            conflict_days: 90,
        }
    }
}

/// What one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub runs: usize,
    pub deliveries: usize,
    pub conflicts: usize,
}

/// Rows deleted per transaction.
pub const BATCH: i64 = 5_000;
/// Mirrors whose run count is trimmed per transaction.
const MIRRORS_PER_BATCH: i64 = 200;

const DAY_MS: i64 = 86_400_000;

fn cutoff(now_ms: i64, days: u32) -> String {
    rfc3339(now_ms - i64::from(days) * DAY_MS)
}

/// Deletes up to [`BATCH`] rows past their age; how many of each went. Call
/// again while it deletes a full batch of something.
pub fn prune_by_age(conn: &mut Db, keep: &Retention, now_ms: i64) -> Result<Pruned, StoreError> {
    let tx = conn.transaction()?;
    let runs = tx.execute(
        "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE finished_at < ?1 LIMIT ?2)",
        params![cutoff(now_ms, keep.run_days), BATCH],
    )?;
    let deliveries = tx.execute(
        "DELETE FROM webhook_deliveries WHERE (source, delivery_id) IN \
         (SELECT source, delivery_id FROM webhook_deliveries WHERE received_at < ?1 LIMIT ?2)",
        params![cutoff(now_ms, keep.delivery_days), BATCH],
    )?;
    let conflicts = tx.execute(
        "DELETE FROM conflicts WHERE id IN (SELECT id FROM conflicts WHERE status != 'open' \
         AND COALESCE(resolved_at, detected_at) < ?1 LIMIT ?2)",
        params![cutoff(now_ms, keep.conflict_days), BATCH],
    )?;
    tx.commit()?;
    Ok(Pruned {
        runs,
        deliveries,
        conflicts,
    })
}

/// Trims the finished runs of the mirrors after `after_id` (up to
/// [`MIRRORS_PER_BATCH`] of them) to their newest `keep.runs_per_mirror`.
/// Returns the runs deleted and the last mirror id seen (`None` when none
/// was left).
pub fn trim_per_mirror(
    conn: &mut Db,
    keep: &Retention,
    after_id: i64,
) -> Result<(usize, Option<i64>), StoreError> {
    let tx = conn.transaction()?;
    let ids: Vec<i64> = tx.query_map(
        "SELECT id FROM mirrors WHERE id > ?1 ORDER BY id LIMIT ?2",
        params![after_id, MIRRORS_PER_BATCH],
        |row| row.get(0),
    )?;
    let mut deleted = 0;
    {
        // The newest kept run's id, then every finished run before it.
        let offset = keep.runs_per_mirror.max(1) - 1;
        for id in &ids {
            deleted += tx.execute(
                "DELETE FROM runs WHERE mirror_id = ?1 AND finished_at IS NOT NULL AND id < \
             (SELECT id FROM runs WHERE mirror_id = ?1 AND finished_at IS NOT NULL \
              ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                params![id, offset],
            )?;
        }
    }
    tx.commit()?;
    Ok((deleted, ids.last().copied()))
}

/// Hands free pages back to the file system once they are over a quarter of
/// the file (below that, new rows reuse them soon). Returns the pages freed.
pub fn reclaim(conn: &Db) -> Result<i64, StoreError> {
    // PostgreSQL's autovacuum keeps its tables' free space for reuse.
    let Some(conn) = conn.as_sqlite() else {
        return Ok(0);
    };
    let pages: i64 = conn.pragma_query_value(None, "page_count", |row| row.get(0))?;
    let free: i64 = conn.pragma_query_value(None, "freelist_count", |row| row.get(0))?;
    if free * 4 <= pages {
        return Ok(0);
    }
    // The pragma frees pages as its rows are stepped through.
    let mut statement = conn.prepare("PRAGMA incremental_vacuum")?;
    let mut rows = statement.query([])?;
    while rows.next()?.is_some() {}
    Ok(free)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::store::{
        ConflictStatus, MirrorSettings, NewConflict, Page, RunOutcome, Store, Trigger, conflicts,
        mirrors, runs, webhooks,
    };

    fn mirror(store: &Store, name: &str) -> i64 {
        let settings = MirrorSettings::pull(name, &format!("https://example.com/{name}"), "h");
        store
            .with(|c| mirrors::insert(c, &settings))
            .unwrap()
            .mirror_id
    }

    fn finished_run(store: &Store, mirror_id: i64) -> i64 {
        let queued = store
            .with(|c| runs::enqueue(c, mirror_id, Trigger::Manual))
            .unwrap();
        let job = runs::tests::claim(store, 10).remove(0);
        let outcome = RunOutcome {
            succeeded: true,
            ..RunOutcome::default()
        };
        store
            .with(|c| runs::finish(c, job.job_id, job.run_id, &outcome))
            .unwrap();
        queued.run_id
    }

    fn run_ids(store: &Store, mirror_id: i64) -> Vec<i64> {
        let all = Page {
            page: 1,
            per_page: 10_000,
        };
        let mut ids: Vec<i64> = store
            .with(|c| runs::page(c, mirror_id, None, all))
            .unwrap()
            .0
            .iter()
            .map(|r| r.run_id)
            .collect();
        ids.sort_unstable();
        ids
    }

    fn trim_all(store: &Store, keep: &Retention) -> usize {
        let (mut deleted, mut after) = (0, 0);
        while let (n, Some(last)) = store.with(|c| trim_per_mirror(c, keep, after)).unwrap() {
            deleted += n;
            after = last;
        }
        deleted
    }

    #[test]
    fn each_mirror_keeps_its_newest_runs_and_every_unfinished_one() {
        let (store, _) = Store::driven_for_test();
        let (a, b) = (mirror(&store, "a/a"), mirror(&store, "b/b"));
        let a_runs: Vec<i64> = (0..7).map(|_| finished_run(&store, a)).collect();
        let b_runs: Vec<i64> = (0..2).map(|_| finished_run(&store, b)).collect();
        let queued = store
            .with(|c| runs::enqueue(c, a, Trigger::Manual))
            .unwrap();
        let keep = Retention {
            runs_per_mirror: 3,
            ..Retention::default()
        };
        assert_eq!(trim_all(&store, &keep), 4);
        let mut expected = a_runs[4..].to_vec();
        expected.push(queued.run_id);
        assert_eq!(run_ids(&store, a), expected);
        assert_eq!(run_ids(&store, b), b_runs);
        // The summary outlives the history.
        let kept = store.with(|c| crate::store::health::summary(c, a)).unwrap();
        assert_eq!(kept.recent.len(), 7);
    }

    #[test]
    fn rows_past_their_age_go_and_open_conflicts_stay() {
        let (store, clock) = Store::driven_for_test();
        let id = mirror(&store, "a/a");
        let old_run = finished_run(&store, id);
        let conflict = |status| NewConflict {
            ref_name: "refs/heads/main".into(),
            local_oid: "a".repeat(40),
            remote_oid: "b".repeat(40),
            merge_base: None,
            ahead: 1,
            behind: 1,
            strategy: "manual".into(),
            status,
            resolution: None,
        };
        let both = [
            conflict(ConflictStatus::Open),
            conflict(ConflictStatus::Aborted),
        ];
        store
            .with(|c| conflicts::record(c, id, old_run, &both))
            .unwrap();
        store
            .with(|c| webhooks::first_delivery(c, "github", "old"))
            .unwrap();
        let keep = Retention::default();
        clock.advance(8 * DAY_MS);
        store
            .with(|c| webhooks::first_delivery(c, "github", "new"))
            .unwrap();
        let pruned = store
            .with(|c| prune_by_age(c, &keep, clock.now_ms()))
            .unwrap();
        assert_eq!(
            pruned,
            Pruned {
                runs: 0,
                deliveries: 1,
                conflicts: 0
            }
        );
        assert!(
            store
                .with(|c| webhooks::first_delivery(c, "github", "old"))
                .unwrap()
        );
        assert!(
            !store
                .with(|c| webhooks::first_delivery(c, "github", "new"))
                .unwrap()
        );

        clock.advance(90 * DAY_MS);
        let new_run = finished_run(&store, id);
        let pruned = store
            .with(|c| prune_by_age(c, &keep, clock.now_ms()))
            .unwrap();
        assert_eq!((pruned.runs, pruned.conflicts), (1, 1));
        assert_eq!(run_ids(&store, id), vec![new_run]);
        let all = Page {
            page: 1,
            per_page: 100,
        };
        let (left, _) = store.with(|c| conflicts::page(c, id, None, all)).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].status, ConflictStatus::Open);
        assert_eq!(left[0].run_id, None);
    }

    #[test]
    fn an_old_file_is_converted_and_freed_pages_go_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE old (x BLOB)").unwrap();
        }
        let store = Store::open(&path).unwrap();
        let mode: i64 = store
            .with(|c| {
                let mode = c
                    .as_sqlite()
                    .unwrap()
                    .pragma_query_value(None, "auto_vacuum", |r| r.get(0));
                Ok::<i64, StoreError>(mode?)
            })
            .unwrap();
        assert_eq!(mode, 2);
        let id = mirror(&store, "a/a");
        // Enough runs that trimming them frees over a quarter of the file.
        for _ in 0..1000 {
            finished_run(&store, id);
        }
        let pages = |store: &Store| -> i64 {
            store
                .with(|c| {
                    let pages =
                        c.as_sqlite()
                            .unwrap()
                            .pragma_query_value(None, "page_count", |r| r.get(0));
                    Ok::<i64, StoreError>(pages?)
                })
                .unwrap()
        };
        let before = pages(&store);
        trim_all(
            &store,
            &Retention {
                runs_per_mirror: 1,
                ..Retention::default()
            },
        );
        let free = store.with(|c| reclaim(c)).unwrap();
        assert!(free > 0, "{free} free of {before}");
        assert!(pages(&store) < before, "{} !< {before}", pages(&store));
    }
}
