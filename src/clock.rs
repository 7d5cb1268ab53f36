//! Time for the key store: deletion dates, rotation schedules and creation dates all come
//! from a [`Clock`], so tests and maintenance runs can move time instead of waiting for it.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time, in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    /// Now, in milliseconds since the Unix epoch.
    fn now_millis(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock that starts at the system time and moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<i64>,
}

impl ManualClock {
    /// A manual clock set to the current system time.
    pub fn new() -> ManualClock {
        ManualClock {
            now: Mutex::new(SystemClock.now_millis()),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += by.as_millis() as i64;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> i64 {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Milliseconds in one day.
pub const DAY_MILLIS: i64 = 24 * 60 * 60 * 1000;

/// Epoch milliseconds as AWS's epoch seconds (a JSON number with a fraction).
pub fn to_epoch_seconds(millis: i64) -> f64 {
    millis as f64 / 1000.0
}
