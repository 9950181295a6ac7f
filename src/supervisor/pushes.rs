//! Reconcile pushes, one node at a time: the bookkeeping that keeps two
//! reconciles from overlapping on a node (they would start monitors twice and
//! leak the first copies). Plain data, like the decision queue: the ClusterActor
//! asks it whether to send a push and tells it when one ended.
//!
//! Invariants:
//! - at most one push is in flight per node;
//! - pushes asked for meanwhile coalesce into one, sent when the first ends;
//! - a push that failed or timed out may have left its reconcile running, or
//!   left the work to the node's cron: the node counts as busy until that work
//!   is surely over, and gets no new work before.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default)]
struct Slot {
    in_flight: bool,
    /// Asked for while busy; `Some` with the largest work asked.
    again: Option<usize>,
    /// Busy past the end of its last push (after a failure), until then.
    busy_until: Option<Instant>,
}

/// What to do with a push that was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Send it now.
    Send,
    /// One is in flight: this one follows when it ends.
    Queued,
    /// A failed push's work may still run: ask [`Pushes::due`] after this long.
    After(Duration),
}

#[derive(Debug, Default)]
pub struct Pushes {
    slots: BTreeMap<String, Slot>,
}

impl Pushes {
    /// A push of a reconcile that starts `starts` monitors.
    pub fn request(&mut self, node: &str, starts: usize, now: Instant) -> Ask {
        let waiting = self.busy_for(node, now);
        let slot = self.slots.entry(node.to_owned()).or_default();
        if slot.in_flight || waiting.is_some() {
            slot.again = Some(slot.again.unwrap_or(0).max(starts));
            return waiting.map_or(Ask::Queued, Ask::After);
        }
        slot.in_flight = true;
        Ask::Send
    }

    /// The push to `node` ended. `busy_for`: how long its work may still run on
    /// the node (zero after a success). Returns the work of a coalesced push to
    /// send now, if any; after a failure it waits for [`Pushes::due`].
    pub fn finished(&mut self, node: &str, busy_for: Duration, now: Instant) -> Option<usize> {
        let slot = self.slots.entry(node.to_owned()).or_default();
        slot.in_flight = false;
        slot.busy_until = (!busy_for.is_zero()).then(|| now + busy_for);
        self.due(node, now)
    }

    /// A queued push that may be sent now, if any (marked in flight).
    pub fn due(&mut self, node: &str, now: Instant) -> Option<usize> {
        if self.busy(node, now) {
            return None;
        }
        let slot = self.slots.get_mut(node)?;
        let again = slot.again.take()?;
        slot.in_flight = true;
        Some(again)
    }

    /// Whether a reconcile of ours may run on `node` now.
    pub fn busy(&self, node: &str, now: Instant) -> bool {
        self.slots.get(node).is_some_and(|s| s.in_flight || s.busy_until.is_some_and(|t| now < t))
    }

    /// Time until `node` is no longer busy after a failed push; `None` when it
    /// is not waiting on one.
    pub fn busy_for(&self, node: &str, now: Instant) -> Option<Duration> {
        self.slots.get(node)?.busy_until.map(|t| t.saturating_duration_since(now)).filter(|d| !d.is_zero())
    }

    /// Forgets a node that left the cluster.
    pub fn forget(&mut self, node: &str) {
        self.slots.remove(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_push_at_a_time_and_those_asked_meanwhile_coalesce_into_one() {
        let mut p = Pushes::default();
        let now = Instant::now();
        assert_eq!(p.request("a", 10, now), Ask::Send);
        assert_eq!(p.request("a", 5, now), Ask::Queued);
        assert_eq!(p.request("a", 40, now), Ask::Queued);
        assert_eq!(p.request("b", 1, now), Ask::Send, "other nodes are independent");
        assert!(p.busy("a", now));
        assert_eq!(p.finished("a", Duration::ZERO, now), Some(40), "one more push, with the largest work");
        assert!(p.busy("a", now), "and it is in flight");
        assert_eq!(p.finished("a", Duration::ZERO, now), None);
        assert!(!p.busy("a", now));
    }

    #[test]
    fn after_a_failed_push_nothing_is_sent_until_its_work_is_surely_over() {
        let mut p = Pushes::default();
        let now = Instant::now();
        p.request("a", 100, now);
        assert_eq!(p.finished("a", Duration::from_secs(30), now), None);
        assert!(p.busy("a", now + Duration::from_secs(29)));
        let later = now + Duration::from_secs(20);
        assert_eq!(p.request("a", 3, later), Ask::After(Duration::from_secs(10)));
        assert_eq!(p.due("a", later), None, "still busy");
        assert_eq!(p.due("a", now + Duration::from_secs(30)), Some(3));
        assert!(p.busy("a", now + Duration::from_secs(30)), "the queued push is in flight");
    }

    #[test]
    fn a_failed_push_with_one_queued_behind_it_waits_as_well() {
        let mut p = Pushes::default();
        let now = Instant::now();
        p.request("a", 10, now);
        assert_eq!(p.request("a", 2, now), Ask::Queued);
        assert_eq!(p.finished("a", Duration::from_secs(5), now), None);
        assert_eq!(p.due("a", now + Duration::from_secs(5)), Some(2));
    }

    #[test]
    fn a_forgotten_node_starts_afresh() {
        let mut p = Pushes::default();
        let now = Instant::now();
        p.request("a", 1, now);
        p.forget("a");
        assert!(!p.busy("a", now));
        assert_eq!(p.request("a", 1, now), Ask::Send);
    }
}
