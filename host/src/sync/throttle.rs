//! Token buckets that cap transfer rates. libgit2 reports progress as running
//! byte counts; the transfer thread sleeps in the progress callback until the
//! bytes it has moved fit the rate. One bucket per run (the mirror's cap) and
//! one shared by every run (the service's cap).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Bytes per second, with a burst of a quarter second's worth.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(bytes_per_second: u64) -> Self {
        let rate = bytes_per_second.max(1) as f64;
        Self {
            rate,
            capacity: rate / 4.0,
            tokens: rate / 4.0,
            last: Instant::now(),
        }
    }

    /// Takes `bytes` and returns how long to wait before they are within the rate.
    pub fn take(&mut self, bytes: u64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity) - bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// The limits on one run's transfers.
#[derive(Debug, Default)]
pub struct Throttle {
    own: Option<Mutex<Bucket>>,
    shared: Option<Arc<Mutex<Bucket>>>,
    seen: Mutex<u64>,
}

/// How often a throttled transfer wakes to ask whether it may go on.
const WAKE_EVERY: Duration = Duration::from_millis(100);

impl Throttle {
    pub fn new(bytes_per_second: Option<u64>, shared: Option<Arc<Mutex<Bucket>>>) -> Self {
        Self {
            own: bytes_per_second.map(|rate| Mutex::new(Bucket::new(rate))),
            shared,
            seen: Mutex::new(0),
        }
    }

    /// Called with libgit2's running byte count; blocks as long as the caps say,
    /// or until `may_go_on` says no (a run past its deadline or cancelled must
    /// not sleep out its wait). A new transfer (the count going down) starts
    /// counting afresh.
    pub fn progress(&self, total_bytes: u64, may_go_on: impl Fn() -> bool) {
        let delta = {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            let delta = total_bytes.saturating_sub(*seen);
            *seen = total_bytes;
            delta
        };
        if delta == 0 {
            return;
        }
        let now = Instant::now();
        let wait = [self.own.as_ref(), self.shared.as_deref()]
            .into_iter()
            .flatten()
            .map(|bucket| {
                bucket
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take(delta, now)
            })
            .max()
            .unwrap_or_default();
        let until = now + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || !may_go_on() {
                return;
            }
            std::thread::sleep(left.min(WAKE_EVERY));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_paces_bytes_to_its_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(1000);
        // The burst (a quarter second) is free, the rest waits at 1000 B/s.
        assert_eq!(bucket.take(250, start), Duration::ZERO);
        let wait = bucket.take(1000, start);
        assert_eq!(wait, Duration::from_secs(1));
        // Time passing refills it.
        let later = start + Duration::from_secs(3);
        assert_eq!(bucket.take(100, later), Duration::ZERO);
    }
}
