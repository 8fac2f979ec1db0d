//! Rate rules: more than N matching file actions within a window trips the
//! rule. Time comes from an injected [`Clock`] so tests can move it.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Where rate rules read the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told (tests, `guard policy test`).
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    offset_ms: AtomicU64,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            offset_ms: AtomicU64::new(0),
        }
    }
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + Duration::from_millis(self.offset_ms.load(Ordering::SeqCst))
    }
}

/// Sliding-window counters, one per rate rule id. Shared by clones of a policy.
#[derive(Clone)]
pub struct RateState {
    clock: Arc<dyn Clock>,
    windows: Arc<Mutex<HashMap<String, VecDeque<Instant>>>>,
}

impl fmt::Debug for RateState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateState").finish_non_exhaustive()
    }
}

impl RateState {
    /// Empty counters on the same clock (a new session).
    pub fn fresh(&self) -> Self {
        Self::new(self.clock.clone())
    }

    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            windows: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Records one action for `rule` and returns how many fell within `window`
    /// (this one included).
    pub fn record(&self, rule: &str, window: Duration, cap: usize) -> usize {
        let now = self.clock.now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let events = windows.entry(rule.to_string()).or_default();
        while events
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > window)
        {
            events.pop_front();
        }
        events.push_back(now);
        // Bound memory: only "more than cap" matters.
        while events.len() > cap.saturating_add(1) {
            events.pop_front();
        }
        events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_slides_with_the_injected_clock() {
        let clock = Arc::new(ManualClock::default());
        let state = RateState::new(clock.clone());
        let window = Duration::from_secs(10);
        assert_eq!(state.record("r", window, 3), 1);
        assert_eq!(state.record("r", window, 3), 2);
        clock.advance(Duration::from_secs(11));
        assert_eq!(state.record("r", window, 3), 1);
        for _ in 0..10 {
            state.record("r", window, 3);
        }
        assert_eq!(state.record("r", window, 3), 4, "capped at cap + 1");
        assert_eq!(state.record("other", window, 3), 1);
    }
}
