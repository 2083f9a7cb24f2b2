//! Schedules of pull mirrors. Times are Unix milliseconds, chosen by the
//! caller: the scheduler's clock is injectable, so tests drive it.

use super::db::{Db, Optional, Row, params};
use serde::Serialize;

use super::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Schedule {
    pub mirror_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    pub enabled: bool,
    /// Unix milliseconds of the next run; none while disabled or hard-failed.
    pub next_run_at: Option<i64>,
    pub consecutive_failures: u32,
    pub hard_failed: bool,
}

/// When a schedule fires: every N seconds, or on a cron expression. A row
/// with neither only retries a failed mirror (see `schedule::after_run`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cadence {
    Interval(u32),
    Cron(String),
}

fn from_row(row: &Row<'_>) -> Result<Schedule, StoreError> {
    Ok(Schedule {
        mirror_id: row.get(0)?,
        interval_seconds: row.get(1)?,
        cron: row.get(2)?,
        enabled: row.get(3)?,
        next_run_at: row.get(4)?,
        consecutive_failures: row.get(5)?,
        hard_failed: row.get(6)?,
    })
}

const COLUMNS: &str =
    "mirror_id, interval_seconds, cron, enabled, next_run_at, consecutive_failures, hard_failed";

pub fn get(conn: &Db, mirror_id: i64) -> Result<Option<Schedule>, StoreError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM schedules WHERE mirror_id = ?1"),
        [mirror_id],
        from_row,
    )
    .optional()
}

/// Sets the cadence and the first run; a settings change clears any failure state.
pub fn set(
    conn: &Db,
    mirror_id: i64,
    cadence: &Cadence,
    enabled: bool,
    next_run_at: Option<i64>,
) -> Result<Schedule, StoreError> {
    let (interval, cron) = match cadence {
        Cadence::Interval(seconds) => (Some(*seconds), None),
        Cadence::Cron(expr) => (None, Some(expr.as_str())),
    };
    conn.execute(
        "INSERT INTO schedules (mirror_id, interval_seconds, cron, enabled, next_run_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT(mirror_id) DO UPDATE SET interval_seconds = excluded.interval_seconds, \
         cron = excluded.cron, enabled = excluded.enabled, next_run_at = excluded.next_run_at, \
         consecutive_failures = 0, hard_failed = 0",
        params![mirror_id, interval, cron, enabled, next_run_at],
    )?;
    get(conn, mirror_id)?.ok_or(StoreError::NotFound("schedule"))
}

/// Enabled, not hard-failed schedules of enabled mirrors, due at `now`. A
/// disabled mirror's schedule stays due and fires once the mirror is enabled.
pub fn due(conn: &Db, now: i64) -> Result<Vec<Schedule>, StoreError> {
    let columns: Vec<String> = COLUMNS.split(", ").map(|c| format!("s.{c}")).collect();
    conn.query_map(
        &format!(
            "SELECT {} FROM schedules s JOIN mirrors m ON m.id = s.mirror_id \
         WHERE s.enabled = 1 AND s.hard_failed = 0 AND m.enabled = 1 AND s.next_run_at <= ?1 \
         ORDER BY s.next_run_at",
            columns.join(", ")
        ),
        [now],
        from_row,
    )
}

/// Whether the mirror is hard-failed: it waits for a manual sync or a
/// settings change, whatever would trigger it.
pub fn hard_failed(conn: &Db, mirror_id: i64) -> Result<bool, StoreError> {
    Ok(get(conn, mirror_id)?.is_some_and(|s| s.hard_failed))
}

/// Every hard-failed mirror.
pub fn all_hard_failed(conn: &Db) -> Result<Vec<i64>, StoreError> {
    conn.query_map(
        "SELECT mirror_id FROM schedules WHERE hard_failed = 1",
        [],
        |row| row.get(0),
    )
}

/// Records a failure of a mirror that has no schedule row yet: a row with
/// no cadence, holding the failure state and the retry.
pub fn record_first_failure(
    conn: &Db,
    mirror_id: i64,
    hard_failed: bool,
    retry_at: Option<i64>,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO schedules (mirror_id, enabled, next_run_at, consecutive_failures, hard_failed) \
         VALUES (?1, 1, ?2, 1, ?3)",
        params![mirror_id, retry_at, hard_failed],
    )?;
    Ok(())
}

/// Forgets the failure state of a mirror without a cadence (its row only
/// held that).
pub fn clear_retry(conn: &Db, mirror_id: i64) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM schedules WHERE mirror_id = ?1 AND interval_seconds IS NULL AND cron IS NULL",
        [mirror_id],
    )?;
    Ok(())
}

/// Records the outcome of a run and the next time the schedule fires.
pub fn record(
    conn: &Db,
    mirror_id: i64,
    consecutive_failures: u32,
    hard_failed: bool,
    next_run_at: Option<i64>,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE schedules SET consecutive_failures = ?2, hard_failed = ?3, next_run_at = ?4 \
         WHERE mirror_id = ?1",
        params![mirror_id, consecutive_failures, hard_failed, next_run_at],
    )?;
    Ok(())
}

/// Moves a schedule that was due at `due` on to `next_run_at`; false when
/// it was not due then any more (another node fired it first).
pub fn move_on(
    conn: &Db,
    mirror_id: i64,
    due: i64,
    next_run_at: Option<i64>,
) -> Result<bool, StoreError> {
    let moved = conn.execute(
        "UPDATE schedules SET next_run_at = ?3 WHERE mirror_id = ?1 AND next_run_at = ?2",
        params![mirror_id, due, next_run_at],
    )?;
    Ok(moved == 1)
}
