//! The node health state machine and flap damping: pure, no IO, no clock of its own.
//!
//! HAProxy semantics: a node is declared down after `fall` consecutive failed
//! probes and up after `rise` consecutive successes. A result that agrees with the
//! current streak extends it and resets the opposite counter; only a change of
//! state produces a [`Transition`], so a node that alternates on every probe never
//! transitions at all.

use serde::Serialize;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No verdict yet: the node has not reached `rise` or `fall` since supervision began.
    Unknown,
    Up,
    Down,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub from: Health,
    pub to: Health,
}

#[derive(Clone, Debug, Serialize)]
pub struct HealthMachine {
    state: Health,
    fall: u32,
    rise: u32,
    consecutive_failures: u32,
    consecutive_successes: u32,
}

impl HealthMachine {
    pub fn new(fall: u32, rise: u32) -> Self {
        HealthMachine {
            state: Health::Unknown,
            fall: fall.max(1),
            rise: rise.max(1),
            consecutive_failures: 0,
            consecutive_successes: 0,
        }
    }

    /// Feeds one probe result; returns the transition it caused, if any.
    pub fn observe(&mut self, healthy: bool) -> Option<Transition> {
        let from = self.state;
        if healthy {
            self.consecutive_failures = 0;
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            if from != Health::Up && self.consecutive_successes >= self.rise {
                self.state = Health::Up;
            }
        } else {
            self.consecutive_successes = 0;
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            if from != Health::Down && self.consecutive_failures >= self.fall {
                self.state = Health::Down;
            }
        }
        (self.state != from).then_some(Transition { from, to: self.state })
    }

    pub fn state(&self) -> Health {
        self.state
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    pub fn consecutive_successes(&self) -> u32 {
        self.consecutive_successes
    }
}

/// Restart-intensity damping (as in Erlang supervisors): more than `max`
/// transitions within `window` marks a node as flapping, and it stays flapping
/// until it has gone a whole `window` without a transition.
#[derive(Clone, Debug, Default)]
pub struct FlapDamper {
    /// Transitions no older than one window before the latest; the invariant the
    /// count of [`FlapDamper::recent`] rests on.
    recent: VecDeque<Instant>,
    flapping: bool,
}

impl FlapDamper {
    pub fn record(&mut self, at: Instant, window: Duration, max: u32) {
        if self.recent.back().is_some_and(|&last| at.saturating_duration_since(last) >= window) {
            self.flapping = false;
        }
        while self.recent.front().is_some_and(|&first| at.saturating_duration_since(first) > window) {
            self.recent.pop_front();
        }
        self.recent.push_back(at);
        if self.recent.len() > max as usize {
            self.flapping = true;
        }
    }

    pub fn is_damped(&self, now: Instant, window: Duration) -> bool {
        self.flapping && self.recent.back().is_some_and(|&last| now.saturating_duration_since(last) < window)
    }

    /// Transitions within the window before the latest one.
    pub fn recent(&self) -> usize {
        self.recent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(machine: &mut HealthMachine, results: &[bool]) -> Vec<Transition> {
        results.iter().filter_map(|&ok| machine.observe(ok)).collect()
    }

    #[test]
    fn node_goes_down_after_fall_consecutive_failures() {
        let mut m = HealthMachine::new(3, 2);
        feed(&mut m, &[true, true]);
        assert_eq!(feed(&mut m, &[false, false]), vec![]);
        assert_eq!(
            feed(&mut m, &[false]),
            vec![Transition { from: Health::Up, to: Health::Down }]
        );
        assert_eq!(feed(&mut m, &[false, false]), vec![], "staying down emits nothing");
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        let mut m = HealthMachine::new(3, 2);
        feed(&mut m, &[true, true]);
        assert_eq!(feed(&mut m, &[false, false, true, false, false]), vec![]);
        assert_eq!(m.state(), Health::Up);
        assert_eq!(m.consecutive_failures(), 2);
    }

    #[test]
    fn first_verdict_needs_a_full_streak_either_way() {
        let mut m = HealthMachine::new(3, 2);
        assert_eq!(feed(&mut m, &[true]), vec![]);
        assert_eq!(m.state(), Health::Unknown);
        assert_eq!(feed(&mut m, &[true]), vec![Transition { from: Health::Unknown, to: Health::Up }]);
        let mut m = HealthMachine::new(3, 2);
        assert_eq!(
            feed(&mut m, &[false, false, false]),
            vec![Transition { from: Health::Unknown, to: Health::Down }]
        );
    }

    #[test]
    fn a_node_alternating_on_every_probe_never_transitions() {
        let mut m = HealthMachine::new(3, 2);
        feed(&mut m, &[true, true]);
        let alternating: Vec<bool> = (0..1000).map(|i| i % 2 == 0).collect();
        assert_eq!(feed(&mut m, &alternating), vec![]);
    }

    #[test]
    fn recovery_needs_rise_consecutive_successes() {
        let mut m = HealthMachine::new(1, 3);
        feed(&mut m, &[false]);
        assert_eq!(feed(&mut m, &[true, true, false, true, true]), vec![]);
        assert_eq!(feed(&mut m, &[true]), vec![Transition { from: Health::Down, to: Health::Up }]);
    }

    #[test]
    fn damping_starts_past_the_limit_and_ends_after_a_quiet_window() {
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        let mut d = FlapDamper::default();
        for i in 0..4 {
            d.record(t0 + Duration::from_secs(i * 5), window, 4);
        }
        assert!(!d.is_damped(t0 + Duration::from_secs(16), window), "four transitions are allowed");
        d.record(t0 + Duration::from_secs(20), window, 4);
        assert!(d.is_damped(t0 + Duration::from_secs(21), window));
        assert!(d.is_damped(t0 + Duration::from_secs(79), window));
        assert!(!d.is_damped(t0 + Duration::from_secs(80), window));
    }

    #[test]
    fn a_new_transition_after_a_quiet_window_starts_a_fresh_count() {
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        let mut d = FlapDamper::default();
        for i in 0..5 {
            d.record(t0 + Duration::from_secs(i), window, 4);
        }
        d.record(t0 + Duration::from_secs(200), window, 4);
        assert!(!d.is_damped(t0 + Duration::from_secs(201), window));
        assert_eq!(d.recent(), 1);
    }

    #[test]
    fn transitions_spread_wider_than_the_window_never_damp() {
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        let mut d = FlapDamper::default();
        for i in 0..50 {
            d.record(t0 + Duration::from_secs(i * 20), window, 4);
            assert!(!d.is_damped(t0 + Duration::from_secs(i * 20), window), "at transition {i}");
        }
    }
}
