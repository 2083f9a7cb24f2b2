//! The rows health is computed from: finished runs, and the state each mirror
//! was last seen in (so that alerts fire on a change, not on every failure).

use rusqlite::{Connection, OptionalExtension, params};

use serde::Serialize;

use super::text::text_enum;
use super::{StoreError, now};

text_enum! {
    /// Where a mirror stands, from best to worst.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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

/// A run that ended on its own. Interrupted runs are left out of health: the
/// service stopping is not the mirror's failure, and they are retried anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedRun {
    pub succeeded: bool,
    pub duration_ms: i64,
    pub finished_at: String,
    pub error: Option<String>,
}

/// The last `window` finished runs of `mirror_id`, newest first. One mirror
/// never runs twice at once, so id order is finishing order.
pub fn recent(
    conn: &Connection,
    mirror_id: i64,
    window: u32,
) -> Result<Vec<FinishedRun>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT status = 'succeeded', COALESCE(duration_ms, 0), finished_at, error FROM runs \
         WHERE mirror_id = ?1 AND status IN ('succeeded', 'failed') \
         ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![mirror_id, window], |row| {
        Ok(FinishedRun {
            succeeded: row.get(0)?,
            duration_ms: row.get(1)?,
            finished_at: row.get(2)?,
            error: row.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Failed runs since the last successful one, over the whole history.
pub fn consecutive_failures(conn: &Connection, mirror_id: i64) -> Result<u32, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT COUNT(*) FROM runs WHERE mirror_id = ?1 AND status = 'failed' AND id > \
         COALESCE((SELECT MAX(id) FROM runs WHERE mirror_id = ?1 AND status = 'succeeded'), 0)",
    )?;
    Ok(stmt.query_row([mirror_id], |row| row.get(0))?)
}

/// When the last successful run finished, over the whole history.
pub fn last_success_at(conn: &Connection, mirror_id: i64) -> Result<Option<String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT finished_at FROM runs WHERE mirror_id = ?1 AND status = 'succeeded' \
         ORDER BY id DESC LIMIT 1",
    )?;
    Ok(stmt.query_row([mirror_id], |row| row.get(0)).optional()?)
}

/// The state recorded for `mirror_id`, if one ever was.
/// A stored value this binary does not know is an error.
pub fn last_state(conn: &Connection, mirror_id: i64) -> Result<Option<State>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT state FROM health_states WHERE mirror_id = ?1",
            [mirror_id],
            |row| row.get(0),
        )
        .optional()?)
}

pub fn set_state(conn: &Connection, mirror_id: i64, state: State) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO health_states (mirror_id, state, changed_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT(mirror_id) DO UPDATE SET state = excluded.state, changed_at = excluded.changed_at",
        params![mirror_id, state, now()],
    )?;
    Ok(())
}
