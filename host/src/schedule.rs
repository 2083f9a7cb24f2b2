//! Schedule ticks and the slow-down after failures.
//!
//! A pull mirror's schedule fires every N seconds or on a cron expression, with
//! jitter so that many mirrors on one interval spread out. Consecutive failures
//! push the next run out exponentially (with jitter, up to a cap); after
//! `max_failures` the mirror is hard-failed and skipped until a manual sync or a
//! settings change. Every function here takes the time as an argument: the
//! clock is injected, so tests drive it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::jobs::Queue;
use crate::store::schedules::{self, Cadence, Schedule};
use crate::store::{Direction, Store, StoreError, Trigger, cluster, mirrors};
use crate::sync::Engine;

/// The scheduler's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The shortest interval an operator may set, in seconds.
    pub min_interval_seconds: u32,
    /// Consecutive failures after which a mirror is hard-failed (GitLab: 14).
    pub max_failures: u32,
    /// The longest a failing mirror waits between attempts.
    pub max_backoff: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            min_interval_seconds: 60,
            max_failures: 14,
            max_backoff: Duration::from_secs(6 * 3600),
        }
    }
}

/// Parses a crontab expression: five fields (minute precision) or six (with
/// seconds first).
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    let fields = expr.split_whitespace().count();
    let full = match fields {
        5 => format!("0 {expr}"),
        6 => expr.to_string(),
        n => return Err(format!("expected 5 fields (or 6 with seconds), found {n}")),
    };
    full.parse::<cron::Schedule>().map_err(|e| e.to_string())
}

/// Up to a tenth of `span_ms`, at most five minutes: spreads mirrors that share
/// a cadence without moving any of them far.
fn jitter(span_ms: i64, unit: f64) -> i64 {
    let max = (span_ms / 10).clamp(0, 300_000);
    (max as f64 * unit) as i64
}

/// The next run of `cadence` after `now`. `unit` in [0, 1) picks the jitter.
pub fn next_after(cadence: &Cadence, now: i64, unit: f64) -> Option<i64> {
    match cadence {
        Cadence::Interval(seconds) => {
            let span = i64::from(*seconds) * 1000;
            Some(now + span + jitter(span, unit))
        }
        Cadence::Cron(expr) => {
            let schedule = parse_cron(expr).ok()?;
            let at = DateTime::<Utc>::from_timestamp_millis(now)?;
            let mut upcoming = schedule.after(&at);
            let first = upcoming.next()?.timestamp_millis();
            let gap = upcoming
                .next()
                .map_or(60_000, |second| second.timestamp_millis() - first);
            Some(first + jitter(gap, unit))
        }
    }
}

/// What a finished run means for the schedule: (consecutive failures, hard-failed,
/// next run). A mirror without a cadence runs again only to retry a failure.
pub fn after_run(
    policy: &Policy,
    schedule: &Schedule,
    succeeded: bool,
    now: i64,
    unit: f64,
) -> (u32, bool, Option<i64>) {
    let cadence = cadence_of(schedule);
    let regular = |now| cadence.as_ref().and_then(|c| next_after(c, now, unit));
    if succeeded {
        return (0, false, regular(now));
    }
    let failures = schedule.consecutive_failures + 1;
    if failures >= policy.max_failures {
        return (failures, true, None);
    }
    let base_ms = match &cadence {
        Some(Cadence::Interval(seconds)) => i64::from(*seconds) * 1000,
        Some(Cadence::Cron(_)) | None => i64::from(policy.min_interval_seconds) * 1000,
    };
    let cap = i64::try_from(policy.max_backoff.as_millis()).unwrap_or(i64::MAX);
    let backoff = base_ms.saturating_mul(1 << (failures - 1).min(30)).min(cap);
    let retry = now + backoff + jitter(backoff, unit);
    (
        failures,
        false,
        Some(regular(now).map_or(retry, |r| r.max(retry))),
    )
}

/// The schedule's cadence; none for a row that only retries a failure.
pub fn cadence_of(schedule: &Schedule) -> Option<Cadence> {
    match (&schedule.cron, schedule.interval_seconds) {
        (Some(expr), _) => Some(Cadence::Cron(expr.clone())),
        (None, Some(seconds)) => Some(Cadence::Interval(seconds)),
        (None, None) => None,
    }
}

/// Queues the due mirrors and moves their next run on, so a run still pending
/// is not queued twice. Returns how many fired.
pub fn tick(store: &Store, queue: &Queue, now: i64) -> Result<usize, StoreError> {
    let due = store.with(|c| schedules::due(c, now))?;
    let mut fired = 0;
    for schedule in &due {
        // A retry fires once; a cadence moves on to its next run.
        let (next, trigger) = match cadence_of(schedule) {
            Some(cadence) => (next_after(&cadence, now, rand::random()), Trigger::Schedule),
            None => (None, Trigger::Retry),
        };
        // Every node ticks: the one that moves the schedule on fires it.
        let due_at = schedule.next_run_at.unwrap_or(now);
        if store.with(|c| schedules::move_on(c, schedule.mirror_id, due_at, next))? {
            queue.trigger(store, schedule.mirror_id, trigger)?;
            fired += 1;
        }
    }
    Ok(fired)
}

/// One reconciliation sweep: each enabled pull mirror's remote ref listing is
/// compared with the one its last successful run saw, and a run is queued
/// where they differ. Catches pushes that sent no webhook (GitHub sends none
/// for more than three tags at once, GitLab none for more than three refs).
/// A mirror that is hard-failed or backing off at `now` is left alone: the
/// sweep must not undo the slow-down. In a cluster, each node sweeps the
/// projects it owns. Returns (mirrors checked, mirrors queued).
pub fn sweep(
    store: &Store,
    queue: &Queue,
    engine: &Engine,
    now: i64,
) -> Result<(usize, usize), StoreError> {
    let pulls = store.with(|c| mirrors::list(c, None, Some(Direction::Pull)))?;
    let mut changed = 0;
    for mirror in pulls.iter().filter(|m| m.enabled) {
        // Each project is swept by the node that owns it (or any, if none does).
        let owner = store.with(|c| cluster::owner(c, &mirror.project_id))?;
        if owner.is_some_and(|owner| owner != queue.node().id) {
            continue;
        }
        let schedule = store.with(|c| schedules::get(c, mirror.mirror_id))?;
        if schedule.is_some_and(|s| held_back(&s, now)) {
            continue;
        }
        let Some(project) = store.with(|c| mirrors::project(c, &mirror.project_id))? else {
            continue;
        };
        let seen = store.with(|c| mirrors::remote_fingerprint(c, mirror.mirror_id))?;
        match engine.remote_fingerprint(mirror, &project) {
            Ok(now) if seen.as_deref() != Some(now.as_str()) => {
                queue.trigger(store, mirror.mirror_id, Trigger::Reconcile)?;
                changed += 1;
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(mirror_id = mirror.mirror_id, %error, "reconcile listing failed")
            }
        }
    }
    Ok((pulls.len(), changed))
}

/// Whether failures hold the mirror back at `now`: hard-failed, or waiting
/// out a backoff.
pub fn held_back(schedule: &Schedule, now: i64) -> bool {
    schedule.hard_failed
        || (schedule.consecutive_failures > 0 && schedule.next_run_at.is_some_and(|at| at > now))
}

/// Called when a run of a mirror ends, whatever queued it: a scheduled mirror
/// moves to its next run; a failing one, scheduled or not, backs off and is
/// retried, and is hard-failed after `max_failures` in a row.
pub fn record_run(
    store: &Store,
    policy: &Policy,
    mirror_id: i64,
    succeeded: bool,
    now: i64,
) -> Result<(), StoreError> {
    let existing = store.with(|c| schedules::get(c, mirror_id))?;
    let has_row = existing.is_some();
    if !has_row && succeeded {
        return Ok(());
    }
    let schedule = existing.unwrap_or(Schedule {
        mirror_id,
        interval_seconds: None,
        cron: None,
        enabled: true,
        next_run_at: None,
        consecutive_failures: 0,
        hard_failed: false,
    });
    let (failures, hard_failed, next) =
        after_run(policy, &schedule, succeeded, now, rand::random());
    if hard_failed && !schedule.hard_failed {
        tracing::warn!(
            mirror_id,
            failures,
            "mirror hard-failed: skipped until a manual sync or a settings change"
        );
    }
    store.with(|c| match (has_row, cadence_of(&schedule)) {
        (false, _) => schedules::record_first_failure(c, mirror_id, hard_failed, next),
        // A retry row whose mirror recovered holds nothing worth keeping.
        (true, None) if failures == 0 => schedules::clear_retry(c, mirror_id),
        (true, _) => schedules::record(c, mirror_id, failures, hard_failed, next),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn schedule(cadence: Cadence, failures: u32) -> Schedule {
        let (interval_seconds, cron) = match cadence {
            Cadence::Interval(s) => (Some(s), None),
            Cadence::Cron(c) => (None, Some(c)),
        };
        Schedule {
            mirror_id: 1,
            interval_seconds,
            cron,
            enabled: true,
            next_run_at: None,
            consecutive_failures: failures,
            hard_failed: false,
        }
    }

    #[test]
    fn intervals_fire_after_their_span_with_bounded_jitter() {
        let every_hour = Cadence::Interval(3600);
        assert_eq!(next_after(&every_hour, 0, 0.0), Some(HOUR));
        let latest = next_after(&every_hour, 0, 0.999).unwrap();
        assert!((HOUR..=HOUR + HOUR / 10).contains(&latest), "{latest}");
        // A thousand mirrors on one interval spread over the jitter window.
        let spread: std::collections::BTreeSet<i64> = (0..1000)
            .map(|i| next_after(&every_hour, 0, f64::from(i) / 1000.0).unwrap())
            .collect();
        assert!(spread.len() > 900);
    }

    #[test]
    fn cron_accepts_five_and_six_fields() {
        assert!(parse_cron("*/15 * * * *").is_ok());
        assert!(parse_cron("30 */15 * * * *").is_ok());
        assert!(parse_cron("* * *").is_err());
        assert!(parse_cron("61 * * * *").is_err());
        // 2026-11-28T00:07:00Z -> next quarter hour, 00:15:00Z.
        let now = DateTime::parse_from_rfc3339("2026-11-28T00:07:00Z")
            .unwrap()
            .timestamp_millis();
        let next = next_after(&Cadence::Cron("*/15 * * * *".into()), now, 0.0).unwrap();
        let expected = DateTime::parse_from_rfc3339("2026-11-28T00:15:00Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(next, expected);
    }

    #[test]
    fn a_mirror_without_a_schedule_is_retried_with_backoff_then_left_alone() {
        let policy = Policy::default();
        let mut s = schedule(Cadence::Interval(600), 0);
        (s.interval_seconds, s.cron) = (None, None);
        let mut retries = Vec::new();
        loop {
            let (failures, hard_failed, next) = after_run(&policy, &s, false, 0, 0.0);
            s.consecutive_failures = failures;
            if hard_failed {
                break;
            }
            retries.push(next.unwrap());
        }
        // From the shortest interval, doubling.
        assert_eq!(&retries[..3], &[60_000, 120_000, 240_000]);
        assert_eq!(after_run(&policy, &s, true, 0, 0.0), (0, false, None));
    }

    #[test]
    fn failures_hold_a_mirror_back_from_the_sweep_until_its_retry() {
        let mut s = schedule(Cadence::Interval(600), 0);
        s.next_run_at = Some(1000);
        assert!(!held_back(&s, 0), "a regular next run holds nothing back");
        s.consecutive_failures = 2;
        assert!(held_back(&s, 999), "backing off");
        assert!(!held_back(&s, 1000), "the retry is due");
        s.hard_failed = true;
        s.next_run_at = None;
        assert!(held_back(&s, i64::MAX));
    }

    #[test]
    fn failures_back_off_exponentially_up_to_a_cap_then_hard_fail() {
        let policy = Policy::default();
        let mut s = schedule(Cadence::Interval(600), 0);
        let mut waits = Vec::new();
        loop {
            let (failures, hard_failed, next) = after_run(&policy, &s, false, 0, 0.0);
            s.consecutive_failures = failures;
            if hard_failed {
                assert_eq!(failures, policy.max_failures);
                assert_eq!(next, None);
                break;
            }
            waits.push(next.unwrap());
        }
        assert_eq!(&waits[..4], &[600_000, 1_200_000, 2_400_000, 4_800_000]);
        assert!(waits.iter().all(|w| *w <= 6 * HOUR), "capped: {waits:?}");
        assert_eq!(*waits.last().unwrap(), 6 * HOUR);
        // A success resets the count and returns to the regular cadence.
        let (failures, hard_failed, next) = after_run(&policy, &s, true, 0, 0.0);
        assert_eq!((failures, hard_failed, next), (0, false, Some(600_000)));
    }
}
