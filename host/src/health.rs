//! Mirror health, computed from each mirror's kept summary (`mirror_health`,
//! updated as its runs start and finish), and the state changes that raise
//! alerts. Figures cover the last `window` finished runs: up to
//! [`KEPT_RUNS`] from the summary, a wider window from the run history that
//! retention kept. The consecutive failure count and the last success are the
//! summary's, so they outlive the history.

use crate::store::Db;
use crate::store::db::Lock;
use serde::Serialize;

use crate::store::health::{self as rows, KEPT_RUNS, Outcome, Summary};
use crate::store::{self, Mirror, Store, StoreError};

pub use crate::store::health::State;

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub mirror_id: i64,
    pub project_id: String,
    pub direction: store::Direction,
    pub url: String,
    pub state: State,
    /// Percent of the window's runs that succeeded, two decimals; null before
    /// the first finished run.
    pub success_rate: Option<f64>,
    pub total_updates: u32,
    pub successful_updates: u32,
    pub failed_updates: u32,
    pub average_duration_ms: Option<i64>,
    /// Nearest-rank 95th percentile of the window's run durations.
    pub p95_duration_ms: Option<i64>,
    /// The error of the last run; null once a run succeeds (as GitLab does).
    pub last_error: Option<String>,
    pub last_successful_update_at: Option<String>,
    pub last_update_at: Option<String>,
    pub consecutive_failures: u32,
    /// How many of the latest finished runs the figures cover.
    pub window: u32,
    /// Git LFS objects, and their bytes, that all its runs moved (not only
    /// the window's).
    pub lfs_objects: i64,
    pub lfs_bytes: i64,
}

/// The figures over a window of runs, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
struct Figures {
    total: u32,
    succeeded: u32,
    success_rate: Option<f64>,
    average_ms: Option<i64>,
    p95_ms: Option<i64>,
}

fn figures(runs: &[Outcome]) -> Figures {
    if runs.is_empty() {
        return Figures::default();
    }
    let total = runs.len();
    let succeeded = runs.iter().filter(|r| r.succeeded).count();
    let mut durations: Vec<i64> = runs.iter().map(|r| r.duration_ms).collect();
    durations.sort_unstable();
    let sum: i64 = durations.iter().sum();
    // Nearest rank: the smallest value with at least 95% of the values at or below it.
    let rank = (total * 95).div_ceil(100).max(1);
    let rate = succeeded as f64 * 100.0 / total as f64;
    Figures {
        total: total as u32,
        succeeded: succeeded as u32,
        success_rate: Some((rate * 100.0).round() / 100.0),
        average_ms: Some(sum / total as i64),
        p95_ms: Some(durations[rank - 1]),
    }
}

/// The last `window` finished runs of `mirror_id`, newest first.
fn window_of(
    conn: &Db,
    mirror_id: i64,
    summary: &Summary,
    window: u32,
) -> Result<Vec<Outcome>, StoreError> {
    let wanted = window as usize;
    if wanted <= KEPT_RUNS {
        return Ok(summary.recent.iter().take(wanted).copied().collect());
    }
    rows::recent(conn, mirror_id, window)
}

/// The health of `mirror` over its last `window` finished runs.
pub fn of(conn: &Db, mirror: &Mirror, window: u32) -> Result<Health, StoreError> {
    let id = mirror.mirror_id;
    let summary = rows::summary(conn, id)?;
    let f = figures(&window_of(conn, id, &summary, window)?);
    let hard_failed = store::schedules::hard_failed(conn, id)?;
    let state = if !mirror.enabled {
        State::Disabled
    } else if hard_failed {
        State::HardFailed
    } else if summary.consecutive_failures > 0 {
        State::Failing
    } else {
        State::Healthy
    };
    Ok(Health {
        mirror_id: id,
        project_id: mirror.project_id.clone(),
        direction: mirror.direction,
        url: mirror.url.clone(),
        state,
        success_rate: f.success_rate,
        total_updates: f.total,
        successful_updates: f.succeeded,
        failed_updates: f.total - f.succeeded,
        average_duration_ms: f.average_ms,
        p95_duration_ms: f.p95_ms,
        last_error: summary.last_error,
        last_successful_update_at: summary.last_success_at,
        last_update_at: summary.last_finished_at,
        consecutive_failures: summary.consecutive_failures,
        window,
        lfs_objects: summary.lfs_objects,
        lfs_bytes: summary.lfs_bytes,
    })
}

/// Mirrors whose success rate is under `min_success_rate`, and hard-failed ones
/// whatever their rate. Mirrors without a finished run have no rate and are not
/// listed. One pass over the kept summaries picks them; only those are read
/// in full.
pub fn unhealthy(conn: &Db, window: u32, min_success_rate: f64) -> Result<Vec<Health>, StoreError> {
    let mut picked: Vec<i64> = store::schedules::all_hard_failed(conn)?;
    if window as usize <= KEPT_RUNS {
        for (id, total, ok) in rows::window_counts(conn, window as usize)? {
            if f64::from(ok) * 100.0 < min_success_rate * f64::from(total) {
                picked.push(id);
            }
        }
    } else {
        let all = store::mirrors::list(conn, None, None)?;
        picked.extend(all.iter().map(|m| m.mirror_id));
    }
    picked.sort_unstable();
    picked.dedup();
    let mut found = Vec::new();
    for id in picked {
        let Some(mirror) = store::mirrors::get(conn, id)? else {
            continue;
        };
        let health = of(conn, &mirror, window)?;
        let low = health.success_rate.is_some_and(|r| r < min_success_rate);
        if low || health.state == State::HardFailed {
            found.push(health);
        }
    }
    Ok(found)
}

/// A mirror moved from one state to another.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub from: State,
    pub to: State,
    pub health: Health,
}

/// Compares `mirror_id`'s state (over `window` runs) with the one last
/// recorded; on a change it logs one event, records the new state and returns
/// the change for the alert sender. Called after every run and every settings
/// change, so that a repeated failure (no change) raises nothing. A mirror
/// starts out healthy.
pub fn observe(store: &Store, window: u32, mirror_id: i64) -> Result<Option<Change>, StoreError> {
    let change = store.with(|conn| -> Result<_, StoreError> {
        // One observer of a mirror at a time, on any node: a change is
        // seen, recorded and alerted once.
        let tx = conn.transaction()?;
        tx.lock(Lock::Mirror(mirror_id))?;
        let Some(mirror) = store::mirrors::get(&tx, mirror_id)? else {
            return Ok(None);
        };
        let health = of(&tx, &mirror, window)?;
        let from = rows::last_state(&tx, mirror_id)?.unwrap_or(State::Healthy);
        if from == health.state {
            return Ok(None);
        }
        rows::set_state(&tx, mirror_id, health.state)?;
        tx.commit()?;
        Ok(Some(Change {
            from,
            to: health.state,
            health,
        }))
    })?;
    if let Some(change) = &change {
        tracing::warn!(
            mirror_id,
            from = change.from.as_str(),
            to = change.to.as_str(),
            consecutive_failures = change.health.consecutive_failures,
            "mirror state changed"
        );
    }
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(succeeded: bool, duration_ms: i64) -> Outcome {
        Outcome {
            succeeded,
            duration_ms,
        }
    }

    #[test]
    fn figures_follow_the_window() {
        assert_eq!(figures(&[]), Figures::default());
        let runs: Vec<_> = (1..=20).map(|i| run(i % 3 != 0, i * 10)).collect();
        let f = figures(&runs);
        assert_eq!((f.total, f.succeeded), (20, 14));
        assert_eq!(f.success_rate, Some(70.0));
        assert_eq!(f.average_ms, Some(105));
        // 95% of 20 is 19: the 19th smallest duration.
        assert_eq!(f.p95_ms, Some(190));
    }

    #[test]
    fn rates_round_to_two_decimals_and_one_run_is_its_own_p95() {
        let f = figures(&[run(true, 7), run(false, 9), run(false, 8)]);
        assert_eq!(f.success_rate, Some(33.33));
        assert_eq!(f.p95_ms, Some(9));
        assert_eq!(figures(&[run(false, 5)]).p95_ms, Some(5));
    }
}
