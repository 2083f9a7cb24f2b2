//! When a pull mirror runs on its own: its cadence, and the failure state that
//! a manual sync or a settings change clears.

use serde::Deserialize;

use super::{App, ServiceError};
use crate::schedule;
use crate::store::Direction;
use crate::store::schedules::{self, Cadence, Schedule};

/// A schedule, as `PUT /api/v1/mirrors/{id}/schedule` takes it: exactly one of
/// `interval_seconds` and `cron`; enabled unless it says otherwise.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSchedule {
    /// At least the service's `min_interval_seconds` (60 unless set).
    #[schema(minimum = 60)]
    pub interval_seconds: Option<i64>,
    pub cron: Option<String>,
    pub enabled: Option<bool>,
}

impl App {
    /// The mirror's schedule; a row that only retries a failure is none.
    pub fn schedule(&self, id: i64) -> Result<Schedule, ServiceError> {
        self.mirror(id)?;
        self.store
            .with(|c| schedules::get(c, id))?
            .filter(|s| schedule::cadence_of(s).is_some())
            .ok_or_else(|| ServiceError::NotFound(format!("mirror {id} has no schedule")))
    }

    /// Sets the cadence and whether it is enabled; clears any failure state,
    /// hard failure included.
    pub fn set_schedule(&self, id: i64, request: SetSchedule) -> Result<Schedule, ServiceError> {
        let mirror = self.mirror(id)?;
        if mirror.direction == Direction::Push {
            return Err(ServiceError::invalid(
                "interval_seconds",
                "push mirrors run after their project's pulls and have no schedule",
            ));
        }
        let cadence = match (request.interval_seconds, request.cron) {
            (Some(seconds), None) => {
                Cadence::Interval(self.checked_interval(seconds, "interval_seconds")?)
            }
            (None, Some(expr)) => {
                schedule::parse_cron(&expr).map_err(|e| ServiceError::invalid("cron", e))?;
                Cadence::Cron(expr)
            }
            _ => {
                return Err(ServiceError::invalid(
                    "interval_seconds",
                    "give exactly one of interval_seconds and cron",
                ));
            }
        };
        let schedule = self.set_cadence(id, &cadence, request.enabled.unwrap_or(true))?;
        self.observe_health(id)?;
        Ok(schedule)
    }

    /// Turns an existing schedule on or off, keeping its cadence.
    pub fn enable_schedule(&self, id: i64, enabled: bool) -> Result<Schedule, ServiceError> {
        let current = self.schedule(id)?;
        let cadence = schedule::cadence_of(&current)
            .ok_or_else(|| ServiceError::NotFound(format!("mirror {id} has no schedule")))?;
        let schedule = self.set_cadence(id, &cadence, enabled)?;
        self.observe_health(id)?;
        Ok(schedule)
    }

    /// Stores a cadence with its first run (jittered, so mirrors created together
    /// do not fire together) and a clean failure state.
    pub(super) fn set_cadence(
        &self,
        id: i64,
        cadence: &Cadence,
        enabled: bool,
    ) -> Result<Schedule, ServiceError> {
        let next = if enabled {
            schedule::next_after(cadence, self.clock.now_ms(), rand::random())
        } else {
            None
        };
        Ok(self
            .store
            .with(|c| schedules::set(c, id, cadence, enabled, next))?)
    }

    /// A positive interval no shorter than the configured minimum.
    pub(super) fn checked_interval(&self, seconds: i64, field: &str) -> Result<u32, ServiceError> {
        let min = self.schedule_policy.min_interval_seconds;
        u32::try_from(seconds)
            .ok()
            .filter(|s| *s >= min)
            .ok_or_else(|| ServiceError::invalid(field, format!("at least {min} seconds")))
    }

    /// After a manual sync or a settings change: a hard-failed mirror gets its
    /// schedule back.
    pub(super) fn revive(&self, id: i64) -> Result<(), ServiceError> {
        let current = self.store.with(|c| schedules::get(c, id))?;
        let Some(schedule) = current.filter(|s| s.hard_failed) else {
            return Ok(());
        };
        match schedule::cadence_of(&schedule) {
            Some(cadence) => {
                self.set_cadence(id, &cadence, schedule.enabled)?;
            }
            None => self.store.with(|c| schedules::clear_retry(c, id))?,
        }
        Ok(())
    }
}
