//! The ClusterActor's decision bookkeeping, kept apart from the actor (as
//! kube-runtime keeps its scheduler apart from its runner): which decision runs
//! next, who waits for which, operator commands in order, and the back-off after
//! a failure. The actor asks it what to do and does the IO; nothing here reads a
//! clock or touches the database.
//!
//! Invariants:
//! - at most one decision runs at a time;
//! - a trigger (transition, tick, request) that arrives while a decision runs
//!   causes exactly one more decision after it;
//! - a trigger is covered only by a decision that could write its effects: a
//!   refused command or a dry run leaves it pending, so it is decided at once
//!   after them, not at the next tick;
//! - a waiter is answered by a decision that started after it asked.

use crate::core::reconcile::{Command, DecisionSummary, Refusal};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Someone waiting for a decision that starts after they asked.
pub type Waiter = oneshot::Sender<Result<DecisionSummary, String>>;
/// The caller of an operator command, answered by that command's decision.
pub type Answer = oneshot::Sender<Result<DecisionSummary, ApplyError>>;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("{0}")]
    Failed(String),
}

/// How a decision ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its transaction committed (whether or not it wrote anything).
    Committed(DecisionSummary),
    /// A dry run: the plan is reported, nothing was written.
    DryRun(DecisionSummary),
    /// Its command was refused: nothing was written.
    Refused(Refusal),
    /// It failed and rolled back.
    Failed(String),
}

/// What the actor does once a decision has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Start the next decision now.
    Start,
    /// Nothing waits: stay idle until the next trigger.
    Idle,
    /// A shutdown was waiting for this decision: it is complete.
    Stopped,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The decision in flight.
struct Running {
    answer: Option<Answer>,
    rebalance: bool,
    /// A trigger was pending when it started; it is covered only if this
    /// decision could write.
    covered: bool,
}

#[derive(Default)]
pub struct DecisionQueue {
    running: Option<Running>,
    /// A trigger arrived that no started decision covers yet.
    pending: bool,
    /// Answered by the decision in flight.
    waiting: Vec<Waiter>,
    /// Answered by the decision after it.
    waiting_next: Vec<Waiter>,
    /// Operator commands, each decided in a transaction of its own, in order.
    commands: VecDeque<(Command, Answer)>,
    stopping: bool,
    stopped: Vec<oneshot::Sender<()>>,
    backoff: Option<Duration>,
    retry_at: Option<Instant>,
}

impl DecisionQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// A trigger, optionally with someone waiting for its decision. Returns
    /// whether the actor should start a decision now.
    pub fn trigger(&mut self, waiter: Option<Waiter>) -> bool {
        if self.stopping {
            if let Some(w) = waiter {
                let _ = w.send(Err("shutting down".to_owned()));
            }
            return false;
        }
        self.pending = true;
        if self.running.is_some() {
            self.waiting_next.extend(waiter);
            return false;
        }
        self.waiting.extend(waiter);
        true
    }

    /// An operator command. Returns whether the actor should start a decision now.
    pub fn command(&mut self, command: Command, answer: Answer) -> bool {
        if self.stopping {
            let _ = answer.send(Err(ApplyError::Failed("shutting down".to_owned())));
            return false;
        }
        self.commands.push_back((command, answer));
        self.running.is_none()
    }

    /// Marks a decision as started and hands out the command it decides, the
    /// oldest first. Call only when [`trigger`](Self::trigger),
    /// [`command`](Self::command) or [`finish`](Self::finish) said to start.
    pub fn start(&mut self) -> Option<Command> {
        debug_assert!(self.running.is_none(), "decisions never overlap");
        let (command, answer) = self.commands.pop_front().unzip();
        self.running = Some(Running {
            answer,
            rebalance: matches!(command, Some(Command::Rebalance { .. })),
            covered: std::mem::take(&mut self.pending),
        });
        command
    }

    /// Records how the decision in flight ended, answers everyone it owed an
    /// answer, and says what to do next. After a failure, the actor schedules a
    /// retry in [`retry_in`](Self::retry_in).
    pub fn finish(&mut self, outcome: Outcome, now: Instant) -> Next {
        let Some(run) = self.running.take() else {
            debug_assert!(false, "finish without a decision in flight");
            return Next::Idle;
        };
        match outcome {
            Outcome::Committed(summary) => {
                self.backoff = None;
                self.retry_at = None;
                if let Some(answer) = run.answer {
                    let _ = answer.send(Ok(summary.clone()));
                }
                for waiter in self.waiting.drain(..) {
                    let _ = waiter.send(Ok(summary.clone()));
                }
            }
            Outcome::DryRun(summary) => {
                if let Some(answer) = run.answer {
                    let _ = answer.send(Ok(summary));
                }
                self.uncovered(run.covered);
            }
            Outcome::Refused(refusal) => {
                if let Some(answer) = run.answer {
                    let _ = answer.send(Err(ApplyError::Refused(refusal)));
                }
                self.uncovered(run.covered);
            }
            Outcome::Failed(error) => {
                let backoff = self.backoff.map_or(FIRST_BACKOFF, |b| (b * 2).min(MAX_BACKOFF));
                self.backoff = Some(backoff);
                self.retry_at = Some(now + backoff);
                if let Some(answer) = run.answer {
                    let _ = answer.send(Err(ApplyError::Failed(error.clone())));
                }
                for waiter in self.waiting.drain(..) {
                    let _ = waiter.send(Err(error.clone()));
                }
            }
        }
        if self.stopping {
            for done in self.stopped.drain(..) {
                let _ = done.send(());
            }
            return Next::Stopped;
        }
        if self.pending || !self.commands.is_empty() {
            self.waiting.append(&mut self.waiting_next);
            return Next::Start;
        }
        Next::Idle
    }

    /// A decision that wrote nothing decided nothing for the triggers it took
    /// over and for those waiting on it: they go first in line again.
    fn uncovered(&mut self, covered: bool) {
        self.pending |= covered || !self.waiting.is_empty();
        self.waiting_next.splice(0..0, self.waiting.drain(..));
    }

    /// Starts no more decisions; answers queued commands and later waiters now,
    /// and `done` once the decision in flight (if any) has ended.
    pub fn shutdown(&mut self, done: oneshot::Sender<()>) {
        self.stopping = true;
        for waiter in self.waiting_next.drain(..) {
            let _ = waiter.send(Err("shutting down".to_owned()));
        }
        for (_, answer) in self.commands.drain(..) {
            let _ = answer.send(Err(ApplyError::Failed("shutting down".to_owned())));
        }
        if self.running.is_some() {
            self.stopped.push(done);
        } else {
            let _ = done.send(());
        }
    }

    /// Whether a periodic tick may run a decision: not while a failure's
    /// back-off lasts.
    pub fn tick_due(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| now >= at)
    }

    /// Time left of the back-off after a failure.
    pub fn retry_in(&self, now: Instant) -> Option<Duration> {
        self.retry_at.map(|at| at.saturating_duration_since(now))
    }

    /// A rebalance command is running or queued.
    pub fn rebalancing(&self) -> bool {
        self.running.as_ref().is_some_and(|r| r.rebalance)
            || self.commands.iter().any(|(c, _)| matches!(c, Command::Rebalance { .. }))
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oneshot::error::TryRecvError;

    fn summary(moves: usize) -> DecisionSummary {
        DecisionSummary { wrote: moves > 0, moves, ..DecisionSummary::default() }
    }

    fn dry_run() -> Command {
        Command::Rebalance { dry_run: true, max_moves: None, from_scratch: false }
    }

    fn refused_command() -> Command {
        Command::SetAdmin { node: "nowhere".into(), state: None }
    }

    #[test]
    fn a_trigger_while_idle_starts_a_decision_and_its_waiter_gets_the_result() {
        let mut q = DecisionQueue::new();
        let (tx, mut rx) = oneshot::channel();
        assert!(q.trigger(Some(tx)));
        assert_eq!(q.start(), None);
        assert_eq!(q.finish(Outcome::Committed(summary(3)), Instant::now()), Next::Idle);
        assert_eq!(rx.try_recv().unwrap(), Ok(summary(3)));
    }

    #[test]
    fn triggers_during_a_decision_cause_exactly_one_more() {
        let mut q = DecisionQueue::new();
        assert!(q.trigger(None));
        q.start();
        let (late, mut late_rx) = oneshot::channel();
        assert!(!q.trigger(None));
        assert!(!q.trigger(Some(late)));
        assert!(!q.trigger(None));
        assert_eq!(q.finish(Outcome::Committed(summary(1)), Instant::now()), Next::Start);
        assert_eq!(late_rx.try_recv(), Err(TryRecvError::Empty), "a late waiter is not answered by an earlier decision");
        q.start();
        assert_eq!(q.finish(Outcome::Committed(summary(2)), Instant::now()), Next::Idle);
        assert_eq!(late_rx.try_recv().unwrap(), Ok(summary(2)));
    }

    #[test]
    fn a_transition_during_a_refused_command_is_decided_at_once_after_it() {
        let mut q = DecisionQueue::new();
        assert!(q.trigger(None));
        q.start();
        let (answer, mut answer_rx) = oneshot::channel();
        assert!(!q.command(refused_command(), answer));
        assert!(!q.trigger(None), "a node transition while the first decision runs");
        assert_eq!(q.finish(Outcome::Committed(summary(0)), Instant::now()), Next::Start);
        assert_eq!(q.start(), Some(refused_command()), "the command's decision takes over the trigger");
        let next = q.finish(Outcome::Refused(Refusal::UnknownNode("nowhere".into())), Instant::now());
        assert_eq!(next, Next::Start, "the transition is decided now, not at the next tick");
        assert_eq!(answer_rx.try_recv().unwrap(), Err(ApplyError::Refused(Refusal::UnknownNode("nowhere".into()))));
        assert_eq!(q.start(), None);
        assert_eq!(q.finish(Outcome::Committed(summary(5)), Instant::now()), Next::Idle);
    }

    #[test]
    fn a_transition_during_a_dry_run_is_decided_at_once_after_it() {
        let mut q = DecisionQueue::new();
        assert!(q.trigger(None));
        q.start();
        let (answer, mut answer_rx) = oneshot::channel();
        assert!(!q.command(dry_run(), answer));
        assert!(!q.trigger(None));
        assert_eq!(q.finish(Outcome::Committed(summary(0)), Instant::now()), Next::Start);
        assert_eq!(q.start(), Some(dry_run()));
        assert!(q.rebalancing());
        assert_eq!(q.finish(Outcome::DryRun(summary(0)), Instant::now()), Next::Start);
        assert_eq!(answer_rx.try_recv().unwrap(), Ok(summary(0)));
        assert_eq!(q.start(), None);
        assert!(!q.rebalancing());
    }

    #[test]
    fn a_waiter_of_a_refused_command_decision_is_answered_by_the_next_real_one() {
        let mut q = DecisionQueue::new();
        let (answer, _answer_rx) = oneshot::channel();
        assert!(q.command(refused_command(), answer));
        q.start();
        let (waiter, mut waiter_rx) = oneshot::channel();
        assert!(!q.trigger(Some(waiter)));
        assert_eq!(q.finish(Outcome::Refused(Refusal::NotStarted), Instant::now()), Next::Start);
        q.start();
        assert_eq!(waiter_rx.try_recv(), Err(TryRecvError::Empty));
        q.finish(Outcome::Committed(summary(4)), Instant::now());
        assert_eq!(waiter_rx.try_recv().unwrap(), Ok(summary(4)));
    }

    #[test]
    fn a_plain_decision_or_an_applied_command_covers_the_pending_trigger() {
        let mut q = DecisionQueue::new();
        assert!(q.trigger(None));
        q.start();
        let (answer, _rx) = oneshot::channel();
        q.command(Command::SetAdmin { node: "a".into(), state: None }, answer);
        q.trigger(None);
        assert_eq!(q.finish(Outcome::Committed(summary(0)), Instant::now()), Next::Start);
        q.start();
        assert_eq!(q.finish(Outcome::Committed(summary(2)), Instant::now()), Next::Idle);
    }

    #[test]
    fn commands_are_decided_one_by_one_in_order() {
        let mut q = DecisionQueue::new();
        let (a, _a) = oneshot::channel();
        let (b, _b) = oneshot::channel();
        assert!(q.command(refused_command(), a));
        assert_eq!(q.start(), Some(refused_command()));
        assert!(!q.command(dry_run(), b), "it waits for the decision in flight");
        assert_eq!(q.finish(Outcome::Refused(Refusal::NotStarted), Instant::now()), Next::Start);
        assert_eq!(q.start(), Some(dry_run()));
        assert_eq!(q.finish(Outcome::DryRun(summary(0)), Instant::now()), Next::Idle);
    }

    #[test]
    fn failures_back_off_doubling_up_to_a_cap_and_a_commit_resets_it() {
        let mut q = DecisionQueue::new();
        let t0 = Instant::now();
        let mut seen = Vec::new();
        for _ in 0..10 {
            q.trigger(None);
            q.start();
            assert_eq!(q.finish(Outcome::Failed("down".into()), t0), Next::Idle);
            seen.push(q.retry_in(t0).unwrap());
        }
        assert_eq!(seen[..4], [250, 500, 1000, 2000].map(Duration::from_millis));
        assert_eq!(*seen.last().unwrap(), MAX_BACKOFF);
        assert!(!q.tick_due(t0 + Duration::from_secs(29)), "ticks wait out the back-off");
        assert!(q.tick_due(t0 + MAX_BACKOFF));
        q.trigger(None);
        q.start();
        q.finish(Outcome::Committed(summary(0)), t0);
        assert_eq!(q.retry_in(t0), None);
        assert!(q.tick_due(t0));
    }

    #[test]
    fn a_failure_answers_waiters_and_commands_with_its_error() {
        let mut q = DecisionQueue::new();
        let (answer, mut answer_rx) = oneshot::channel();
        q.command(Command::SetAdmin { node: "a".into(), state: None }, answer);
        q.start();
        q.finish(Outcome::Failed("database: gone".into()), Instant::now());
        assert_eq!(answer_rx.try_recv().unwrap(), Err(ApplyError::Failed("database: gone".into())));
    }

    #[test]
    fn shutdown_waits_for_the_decision_in_flight_and_refuses_the_rest() {
        let mut q = DecisionQueue::new();
        let (first, mut first_rx) = oneshot::channel();
        q.trigger(Some(first));
        q.start();
        let (later, mut later_rx) = oneshot::channel();
        let (answer, mut answer_rx) = oneshot::channel();
        q.trigger(Some(later));
        q.command(dry_run(), answer);
        let (done, mut done_rx) = oneshot::channel();
        q.shutdown(done);
        assert_eq!(later_rx.try_recv().unwrap(), Err("shutting down".to_owned()));
        assert_eq!(answer_rx.try_recv().unwrap(), Err(ApplyError::Failed("shutting down".into())));
        assert_eq!(done_rx.try_recv(), Err(TryRecvError::Empty), "the decision in flight is still running");
        assert!(!q.trigger(None), "nothing new starts");
        assert_eq!(q.finish(Outcome::Committed(summary(1)), Instant::now()), Next::Stopped);
        assert_eq!(first_rx.try_recv().unwrap(), Ok(summary(1)), "the decision in flight still answers");
        assert_eq!(done_rx.try_recv(), Ok(()));
    }

    #[test]
    fn shutdown_while_idle_is_complete_at_once() {
        let mut q = DecisionQueue::new();
        let (done, mut done_rx) = oneshot::channel();
        q.shutdown(done);
        assert_eq!(done_rx.try_recv(), Ok(()));
        assert!(q.is_stopping());
    }
}
