//! The rows health is computed from: finished runs, and the state each mirror
//! was last seen in (so that alerts fire on a change, not on every failure).

use super::db::{Db, Optional, params};

use serde::{Deserialize, Serialize};

use super::text::text_enum;
use super::{StoreError, now};

text_enum! {
    /// Where a mirror stands, from best to worst.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum State as "health state" {
        Healthy = "healthy",
        /// Its last run failed.
        Failing = "failing",
        /// Failed `max_failures` times in a row: skipped until a manual sync or
        /// a settings change.
        HardFailed = "hard_failed",
        /// Turned off by an operator.
        Disabled = "disabled",
    }
}

/// The last `window` finished runs of `mirror_id` in the run history, newest
/// first (interrupted and cancelled runs are left out of health). One mirror
/// never runs twice at once, so id order is finishing order.
pub fn recent(conn: &Db, mirror_id: i64, window: u32) -> Result<Vec<Outcome>, StoreError> {
    conn.query_map(
        "SELECT status = 'succeeded', COALESCE(duration_ms, 0) FROM runs \
         WHERE mirror_id = ?1 AND status IN ('succeeded', 'failed') \
         ORDER BY id DESC LIMIT ?2",
        params![mirror_id, window],
        |row| {
            Ok(Outcome {
                succeeded: row.get(0)?,
                duration_ms: row.get(1)?,
            })
        },
    )
}

/// How many finished runs a mirror's kept summary holds: the widest health
/// window served without reading the run history.
pub const KEPT_RUNS: usize = 100;

/// How one finished run went, as the summary keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub succeeded: bool,
    pub duration_ms: i64,
}

impl Outcome {
    /// Four bytes: the duration in ms (capped at 2^31 - 1) shifted left, the
    /// low bit set for a success. Big-endian, as migration 15's backfill
    /// writes it.
    fn pack(self) -> [u8; 4] {
        let ms = self.duration_ms.clamp(0, i64::from(i32::MAX)) as u32;
        ((ms << 1) | u32::from(self.succeeded)).to_be_bytes()
    }

    fn unpack(bytes: [u8; 4]) -> Self {
        let word = u32::from_be_bytes(bytes);
        Outcome {
            succeeded: word & 1 == 1,
            duration_ms: i64::from(word >> 1),
        }
    }
}

/// A mirror's health and GitLab status fields, kept as its runs start and
/// finish (`mirror_health`), so reading them costs one row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub last_started_at: Option<String>,
    pub last_finished_at: Option<String>,
    pub last_succeeded: Option<bool>,
    /// The error of the latest finished run, if it failed.
    pub last_error: Option<String>,
    pub last_success_at: Option<String>,
    pub consecutive_failures: u32,
    /// The latest finished runs, newest first, at most [`KEPT_RUNS`].
    pub recent: Vec<Outcome>,
    /// LFS objects and bytes all its finished runs moved.
    pub lfs_objects: i64,
    pub lfs_bytes: i64,
}

/// The outcomes packed in `blob`, in order.
fn unpacked(blob: &[u8]) -> impl Iterator<Item = Outcome> + '_ {
    blob.chunks_exact(4)
        .map(|c| Outcome::unpack([c[0], c[1], c[2], c[3]]))
}

/// The kept summary of `mirror_id`; the default (nothing yet) if it never ran.
pub fn summary(conn: &Db, mirror_id: i64) -> Result<Summary, StoreError> {
    let found = conn
        .query_row(
            "SELECT last_started_at, last_finished_at, last_status = 'succeeded', last_error, \
         last_success_at, consecutive_failures, recent, lfs_objects, lfs_bytes \
         FROM mirror_health WHERE mirror_id = ?1",
            [mirror_id],
            |row| {
                Ok(Summary {
                    last_started_at: row.get(0)?,
                    last_finished_at: row.get(1)?,
                    last_succeeded: row.get(2)?,
                    last_error: row.get(3)?,
                    last_success_at: row.get(4)?,
                    consecutive_failures: row.get(5)?,
                    recent: unpacked(&row.get::<Vec<u8>>(6)?).collect(),
                    lfs_objects: row.get(7)?,
                    lfs_bytes: row.get(8)?,
                })
            },
        )
        .optional()?;
    Ok(found.unwrap_or_default())
}

/// For every mirror that finished a run: how many of its latest `window`
/// finished runs (at most [`KEPT_RUNS`]) there are and how many succeeded.
/// One pass over the summaries, counting in place.
pub fn window_counts(conn: &Db, window: usize) -> Result<Vec<(i64, u32, u32)>, StoreError> {
    conn.query_map(
        "SELECT mirror_id, recent FROM mirror_health WHERE length(recent) > 0",
        [],
        |row| {
            let blob: Vec<u8> = row.get(1)?;
            let runs = &blob[..blob.len().min(window * 4)];
            let ok = unpacked(runs).filter(|o| o.succeeded).count();
            Ok((row.get(0)?, (runs.len() / 4) as u32, ok as u32))
        },
    )
}

/// Keeps the start of a run in its mirror's summary; part of the caller's
/// transaction.
pub(super) fn run_started(conn: &Db, mirror_id: i64, at: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO mirror_health (mirror_id, last_started_at) VALUES (?1, ?2) \
         ON CONFLICT(mirror_id) DO UPDATE SET last_started_at = excluded.last_started_at",
        params![mirror_id, at],
    )?;
    Ok(())
}

/// Keeps a run that succeeded or failed in its mirror's summary; part of
/// the caller's transaction.
pub(super) fn run_finished(
    conn: &Db,
    mirror_id: i64,
    outcome: Outcome,
    at: &str,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let old: Vec<u8> = conn
        .query_row(
            "SELECT recent FROM mirror_health WHERE mirror_id = ?1",
            [mirror_id],
            |row| row.get(0),
        )
        .optional()?
        .unwrap_or_default();
    let mut recent = Vec::with_capacity(KEPT_RUNS * 4);
    recent.extend_from_slice(&outcome.pack());
    recent.extend_from_slice(&old[..old.len().min((KEPT_RUNS - 1) * 4)]);
    let (status, success_at, error) = if outcome.succeeded {
        ("succeeded", Some(at), None)
    } else {
        ("failed", None, error)
    };
    conn.execute(
        "INSERT INTO mirror_health (mirror_id, last_finished_at, last_status, last_error, \
             last_success_at, consecutive_failures, recent) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT(mirror_id) DO UPDATE SET last_finished_at = excluded.last_finished_at, \
             last_status = excluded.last_status, last_error = excluded.last_error, \
             last_success_at = COALESCE(excluded.last_success_at, mirror_health.last_success_at), \
             consecutive_failures = CASE WHEN excluded.last_status = 'succeeded' THEN 0 \
                 ELSE mirror_health.consecutive_failures + 1 END, \
             recent = excluded.recent",
        params![
            mirror_id,
            at,
            status,
            error,
            success_at,
            i64::from(!outcome.succeeded),
            recent,
        ],
    )?;
    Ok(())
}

/// Adds what a finished run moved of LFS to its mirror's totals; after
/// [`run_finished`], in the same transaction.
pub(super) fn lfs_moved(
    conn: &Db,
    mirror_id: i64,
    objects: i64,
    bytes: i64,
) -> Result<(), StoreError> {
    if objects == 0 && bytes == 0 {
        return Ok(());
    }
    conn.execute(
        "UPDATE mirror_health SET lfs_objects = lfs_objects + ?2, lfs_bytes = lfs_bytes + ?3 \
         WHERE mirror_id = ?1",
        params![mirror_id, objects, bytes],
    )?;
    Ok(())
}

/// The state recorded for `mirror_id`, if one ever was.
/// A stored value this binary does not know is an error.
pub fn last_state(conn: &Db, mirror_id: i64) -> Result<Option<State>, StoreError> {
    conn.query_row(
        "SELECT state FROM health_states WHERE mirror_id = ?1",
        [mirror_id],
        |row| row.get(0),
    )
    .optional()
}

pub fn set_state(conn: &Db, mirror_id: i64, state: State) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO health_states (mirror_id, state, changed_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT(mirror_id) DO UPDATE SET state = excluded.state, changed_at = excluded.changed_at",
        params![mirror_id, state, now(conn)?],
    )?;
    Ok(())
}
