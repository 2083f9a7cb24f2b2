//! Where "now" comes from: the wall clock in the service, a test's own clock
//! where time is driven (schedules, backoff, retention), and the one
//! timestamp format of the database.

use chrono::{TimeZone, Utc};

pub trait Clock: std::fmt::Debug + Send + Sync {
    /// Unix milliseconds.
    fn now_ms(&self) -> i64;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        Utc::now().timestamp_millis()
    }
}

/// A clock a test moves by hand.
#[cfg(test)]
#[derive(Debug)]
pub struct Driven(std::sync::atomic::AtomicI64);

#[cfg(test)]
impl Default for Driven {
    /// At 2027-01-15, a fixed time no test's arithmetic wraps around.
    fn default() -> Self {
        Self(1_800_000_000_000.into())
    }
}

#[cfg(test)]
impl Driven {
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
impl Clock for Driven {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The timestamp format of every `*_at` column: RFC 3339, UTC, milliseconds
/// (so that text order is time order).
pub fn rfc3339(unix_ms: i64) -> String {
    Utc.timestamp_millis_opt(unix_ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Unix milliseconds of a timestamp [`rfc3339`] wrote.
pub fn parse_rfc3339(at: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(at)
        .ok()
        .map(|at| at.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_and_sort_as_text() {
        let a = rfc3339(1_700_000_000_123);
        assert_eq!(a, "2023-11-14T22:13:20.123Z");
        assert_eq!(parse_rfc3339(&a), Some(1_700_000_000_123));
        assert!(rfc3339(999) < rfc3339(1_000) && rfc3339(9_999_999) < rfc3339(10_000_000));
    }
}
