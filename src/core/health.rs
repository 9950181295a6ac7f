//! The node health state machine and flap damping: pure, no IO, no clock of its own.
//!
//! HAProxy semantics: a node is declared up after `rise` consecutive successes
//! and down after a streak of failures. A result that agrees with the current
//! streak extends it and resets the opposite counter; only a change of state
//! produces a [`Transition`], so a node that alternates on every probe never
//! transitions at all.
//!
//! Evidence has weights (as Envoy's outlier detection and HAProxy's `observe`
//! tell errors apart): a refused connection or an error answer is strong, and
//! `fall` of them in a streak make a node down; a timeout is weak (the node may
//! only be busy), and only `timeout_fall` failures in a streak make a node down
//! on timeouts alone. Such a verdict is marked `weak`, and is made strong by
//! `fall` strong failures later in the same streak.
//!
//! A probe that timed out may still be answered later: a node busy starting
//! hundreds of monitors answers its health check in seconds, not never. Such a
//! late answer is proof of life: it forgives the timeouts of the current
//! streak, so only a node that does not answer at all goes down on timeouts.
//! It is no success (a slow node does not rise), except for a node with no
//! verdict yet, whose first verdict must not wait until it is idle.

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

/// What one probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probed {
    Healthy,
    /// Refused, reset, an error answer: strong evidence.
    Failed,
    /// No answer in time: weak evidence.
    TimedOut,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub from: Health,
    pub to: Health,
    /// A down verdict on timeouts alone. `Down → Down` with `weak: false` is a
    /// weak verdict made strong.
    pub weak: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct HealthMachine {
    state: Health,
    fall: u32,
    timeout_fall: u32,
    rise: u32,
    consecutive_failures: u32,
    /// Refusals and error answers within the current failure streak.
    strong_failures: u32,
    consecutive_successes: u32,
    /// The node is down on timeouts alone.
    weak: bool,
    /// Late answers since the last refusal or error answer, while the node has
    /// no verdict yet.
    late_answers: u32,
}

impl HealthMachine {
    pub fn new(fall: u32, timeout_fall: u32, rise: u32) -> Self {
        HealthMachine {
            state: Health::Unknown,
            fall: fall.max(1),
            timeout_fall: timeout_fall.max(fall).max(1),
            rise: rise.max(1),
            consecutive_failures: 0,
            strong_failures: 0,
            consecutive_successes: 0,
            weak: false,
            late_answers: 0,
        }
    }

    /// Feeds one probe result; returns the transition it caused, if any.
    pub fn observe(&mut self, probed: Probed) -> Option<Transition> {
        let from = self.state;
        if probed == Probed::Healthy {
            self.consecutive_failures = 0;
            self.strong_failures = 0;
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            if from != Health::Up && self.consecutive_successes >= self.rise {
                self.state = Health::Up;
                self.weak = false;
                return Some(Transition { from, to: Health::Up, weak: false });
            }
            return None;
        }
        self.consecutive_successes = 0;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if probed == Probed::Failed {
            self.strong_failures = self.strong_failures.saturating_add(1);
            self.late_answers = 0;
        }
        let strong = self.strong_failures >= self.fall;
        match from {
            Health::Down if self.weak && strong => {
                self.weak = false;
                Some(Transition { from, to: Health::Down, weak: false })
            }
            Health::Down => None,
            _ if strong || self.consecutive_failures >= self.timeout_fall => {
                self.state = Health::Down;
                self.weak = !strong;
                Some(Transition { from, to: Health::Down, weak: self.weak })
            }
            _ => None,
        }
    }

    /// A probe that had timed out was answered healthy after all: the timeouts
    /// of this failure streak are forgiven. Only a node with no verdict yet
    /// counts it as a success.
    pub fn answered_late(&mut self) -> Option<Transition> {
        self.consecutive_failures = self.strong_failures;
        if self.state != Health::Unknown || self.strong_failures > 0 {
            return None;
        }
        self.late_answers = self.late_answers.saturating_add(1);
        if self.late_answers < self.rise {
            return None;
        }
        self.state = Health::Up;
        Some(Transition { from: Health::Unknown, to: Health::Up, weak: false })
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
        results.iter().filter_map(|&ok| machine.observe(if ok { Probed::Healthy } else { Probed::Failed })).collect()
    }

    fn down(from: Health) -> Transition {
        Transition { from, to: Health::Down, weak: false }
    }

    fn up(from: Health) -> Transition {
        Transition { from, to: Health::Up, weak: false }
    }

    #[test]
    fn timeouts_alone_need_the_longer_streak_and_give_a_weak_verdict() {
        let mut m = HealthMachine::new(3, 6, 2);
        feed(&mut m, &[true, true]);
        let timeouts: Vec<Transition> = (0..5).filter_map(|_| m.observe(Probed::TimedOut)).collect();
        assert_eq!(timeouts, vec![], "five timeouts are not enough");
        assert_eq!(m.observe(Probed::TimedOut), Some(Transition { from: Health::Up, to: Health::Down, weak: true }));
    }

    #[test]
    fn refusals_count_through_timeouts_and_make_a_weak_verdict_strong() {
        let mut m = HealthMachine::new(3, 6, 2);
        feed(&mut m, &[true, true]);
        assert_eq!(m.observe(Probed::Failed), None);
        assert_eq!(m.observe(Probed::TimedOut), None);
        assert_eq!(m.observe(Probed::Failed), None);
        assert_eq!(m.observe(Probed::Failed), Some(down(Health::Up)), "three refusals in one streak");
        let mut m = HealthMachine::new(3, 4, 2);
        feed(&mut m, &[true, true]);
        let weak: Vec<Transition> = (0..4).filter_map(|_| m.observe(Probed::TimedOut)).collect();
        assert_eq!(weak, vec![Transition { from: Health::Up, to: Health::Down, weak: true }]);
        assert_eq!(feed(&mut m, &[false, false, false]), vec![down(Health::Down)], "confirmed by refusals");
        assert_eq!(feed(&mut m, &[false]), vec![], "and only once");
    }

    #[test]
    fn a_success_ends_a_timeout_streak() {
        let mut m = HealthMachine::new(3, 4, 2);
        feed(&mut m, &[true, true]);
        for _ in 0..3 {
            m.observe(Probed::TimedOut);
        }
        feed(&mut m, &[true]);
        assert_eq!(m.observe(Probed::TimedOut), None);
        assert_eq!(m.state(), Health::Up);
    }

    #[test]
    fn a_late_answer_forgives_the_timeouts_of_the_streak_but_not_its_refusals() {
        let mut m = HealthMachine::new(3, 4, 2);
        feed(&mut m, &[true, true]);
        for _ in 0..3 {
            assert_eq!(m.observe(Probed::TimedOut), None);
        }
        assert_eq!(m.answered_late(), None, "a late answer is no success for a node that is up");
        assert_eq!(m.consecutive_failures(), 0);
        let timeouts: Vec<Transition> = (0..3).filter_map(|_| m.observe(Probed::TimedOut)).collect();
        assert_eq!(timeouts, vec![], "the streak starts again from zero");
        assert_eq!(m.observe(Probed::Failed), Some(Transition { from: Health::Up, to: Health::Down, weak: true }));

        let mut m = HealthMachine::new(3, 10, 2);
        feed(&mut m, &[true, true, false, false]);
        assert_eq!(m.observe(Probed::TimedOut), None);
        assert_eq!(m.answered_late(), None);
        assert_eq!(m.consecutive_failures(), 2, "the refusals still count");
        assert_eq!(m.observe(Probed::Failed), Some(down(Health::Up)));
    }

    #[test]
    fn late_answers_give_a_node_without_a_verdict_its_first_one() {
        let mut m = HealthMachine::new(3, 4, 2);
        assert_eq!(m.observe(Probed::TimedOut), None);
        assert_eq!(m.answered_late(), None);
        assert_eq!(m.observe(Probed::TimedOut), None);
        assert_eq!(m.answered_late(), Some(up(Health::Unknown)), "two answers, however slow, make it up");
        assert_eq!(m.answered_late(), None);
        assert_eq!(m.state(), Health::Up);
    }

    #[test]
    fn node_goes_down_after_fall_consecutive_failures() {
        let mut m = HealthMachine::new(3, 3, 2);
        feed(&mut m, &[true, true]);
        assert_eq!(feed(&mut m, &[false, false]), vec![]);
        assert_eq!(
            feed(&mut m, &[false]),
            vec![down(Health::Up)]
        );
        assert_eq!(feed(&mut m, &[false, false]), vec![], "staying down emits nothing");
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        let mut m = HealthMachine::new(3, 3, 2);
        feed(&mut m, &[true, true]);
        assert_eq!(feed(&mut m, &[false, false, true, false, false]), vec![]);
        assert_eq!(m.state(), Health::Up);
        assert_eq!(m.consecutive_failures(), 2);
    }

    #[test]
    fn first_verdict_needs_a_full_streak_either_way() {
        let mut m = HealthMachine::new(3, 3, 2);
        assert_eq!(feed(&mut m, &[true]), vec![]);
        assert_eq!(m.state(), Health::Unknown);
        assert_eq!(feed(&mut m, &[true]), vec![up(Health::Unknown)]);
        let mut m = HealthMachine::new(3, 3, 2);
        assert_eq!(
            feed(&mut m, &[false, false, false]),
            vec![down(Health::Unknown)]
        );
    }

    #[test]
    fn a_node_alternating_on_every_probe_never_transitions() {
        let mut m = HealthMachine::new(3, 3, 2);
        feed(&mut m, &[true, true]);
        let alternating: Vec<bool> = (0..1000).map(|i| i % 2 == 0).collect();
        assert_eq!(feed(&mut m, &alternating), vec![]);
    }

    #[test]
    fn recovery_needs_rise_consecutive_successes() {
        let mut m = HealthMachine::new(1, 1, 3);
        feed(&mut m, &[false]);
        assert_eq!(feed(&mut m, &[true, true, false, true, true]), vec![]);
        assert_eq!(feed(&mut m, &[true]), vec![up(Health::Down)]);
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
