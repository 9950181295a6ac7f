//! Time as the ClusterActor sees it. Decisions read an injected [`Clock`], so tests
//! move time by hand instead of sleeping; timers only wake the actor up.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
    /// Wall-clock time, epoch milliseconds: what node clocks are compared with.
    fn wall_ms(&self) -> i64;
}

/// The runtime's clock (tokio's, so paused test time applies to it as well).
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn wall_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that moves only when told to. Its wall clock starts at a fixed
/// instant ([`ManualClock::WALL_START`]) and moves with it, so anything that
/// depends on the phase of a minute is the same on every run.
#[derive(Clone)]
pub struct ManualClock {
    now: Arc<Mutex<(Instant, i64)>>,
}

impl ManualClock {
    /// 2026-01-01T00:00:10Z: ten seconds into a minute.
    pub const WALL_START: i64 = 1_767_225_610_000;

    pub fn new() -> Self {
        ManualClock { now: Arc::new(Mutex::new((Instant::now(), Self::WALL_START))) }
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        now.0 += by;
        now.1 += by.as_millis() as i64;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.now.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    fn wall_ms(&self) -> i64 {
        self.now.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}
