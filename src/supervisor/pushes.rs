//! Reconcile pushes, one node at a time: the bookkeeping that keeps two
//! reconciles from overlapping on a node (they would start monitors twice and
//! leak the first copies), and that has the old owners of handed-over monitors
//! stop them before the new owners start them. Plain data, like the decision
//! queue: the ClusterActor asks it whether to send a push and tells it when one
//! ended.
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
    /// Pushes sent so far: the number of the last one.
    sent: u64,
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
        slot.sent += 1;
        Ask::Send
    }

    /// The number the next push to `node` will carry: the first one that
    /// carries work committed now.
    pub fn next(&self, node: &str) -> u64 {
        self.slots.get(node).map_or(0, |s| s.sent) + 1
    }

    /// The number of the push to `node` sent last.
    pub fn last(&self, node: &str) -> u64 {
        self.slots.get(node).map_or(0, |s| s.sent)
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

    /// `node`'s own cron does work committed for it, instead of a push: it is
    /// busy for `busy_for` from `now` (or longer, if it already was).
    pub fn leave_to_cron(&mut self, node: &str, busy_for: Duration, now: Instant) {
        let slot = self.slots.entry(node.to_owned()).or_default();
        slot.busy_until = slot.busy_until.max(Some(now + busy_for));
    }

    /// A queued push that may be sent now, if any (marked in flight).
    pub fn due(&mut self, node: &str, now: Instant) -> Option<usize> {
        if self.busy(node, now) {
            return None;
        }
        let slot = self.slots.get_mut(node)?;
        let again = slot.again.take()?;
        slot.in_flight = true;
        slot.sent += 1;
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

/// A new owner waiting for the old owners of the monitors it takes over to
/// stop them first, so a monitor handed between two live nodes never runs on
/// both; its deadline keeps its own reconcile clear of its next cron.
#[derive(Clone, Debug)]
struct Held {
    starts: usize,
    /// Each old owner, with the number of the push of its that stops them.
    sources: BTreeMap<String, u64>,
    deadline: Instant,
}

/// Pushes to new owners held back until their old owners' pushes end.
#[derive(Debug, Default)]
pub struct Handovers {
    held: BTreeMap<String, Held>,
}

impl Handovers {
    /// Holds the push to `target` (`starts` monitors) until each of `sources`
    /// has ended the push numbered as given (the one that stops them), or
    /// until `deadline`.
    pub fn hold(&mut self, target: &str, starts: usize, sources: BTreeMap<String, u64>, deadline: Instant) {
        let held = self.held.entry(target.to_owned()).or_insert_with(|| Held { starts: 0, sources: BTreeMap::new(), deadline });
        held.starts += starts;
        for (source, push) in sources {
            let wanted = held.sources.entry(source).or_insert(push);
            *wanted = (*wanted).max(push);
        }
        held.deadline = held.deadline.min(deadline);
    }

    /// `source` has ended its push number `push`: the targets that waited on
    /// it alone, to push now. An earlier push of the source releases nothing:
    /// it did not carry the stops.
    pub fn source_done(&mut self, source: &str, push: u64) -> Vec<(String, usize)> {
        for held in self.held.values_mut() {
            if held.sources.get(source).is_some_and(|&wanted| push >= wanted) {
                held.sources.remove(source);
            }
        }
        self.release(|h| h.sources.is_empty())
    }

    /// The targets whose deadline has come, to push now.
    pub fn due(&mut self, now: Instant) -> Vec<(String, usize)> {
        self.release(|h| h.deadline <= now)
    }

    fn release(&mut self, ready: impl Fn(&Held) -> bool) -> Vec<(String, usize)> {
        let ready: Vec<String> = self.held.iter().filter(|(_, h)| ready(h)).map(|(t, _)| t.clone()).collect();
        ready.into_iter().filter_map(|t| self.held.remove(&t).map(|h| (t, h.starts))).collect()
    }

    /// Whether work for `node` is committed but its push held: it takes no more.
    pub fn holds(&self, node: &str) -> bool {
        self.held.contains_key(node)
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
    fn a_node_whose_cron_does_the_work_takes_no_push_until_that_work_is_done() {
        let mut p = Pushes::default();
        let now = Instant::now();
        p.leave_to_cron("a", Duration::from_secs(8), now);
        assert!(p.busy("a", now + Duration::from_secs(7)));
        assert_eq!(p.request("a", 4, now + Duration::from_secs(2)), Ask::After(Duration::from_secs(6)));
        p.leave_to_cron("a", Duration::from_secs(1), now + Duration::from_secs(2));
        assert_eq!(p.due("a", now + Duration::from_secs(7)), None, "a shorter hold does not cut the longer one");
        assert_eq!(p.due("a", now + Duration::from_secs(8)), Some(4));
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

    #[test]
    fn a_new_owner_is_pushed_once_every_old_owner_has_stopped_or_at_its_deadline() {
        let now = Instant::now();
        let mut h = Handovers::default();
        let sources = |s: &[(&str, u64)]| s.iter().map(|(s, n)| (s.to_string(), *n)).collect::<BTreeMap<_, _>>();
        h.hold("c", 10, sources(&[("a", 1), ("b", 4)]), now + Duration::from_secs(20));
        h.hold("c", 5, sources(&[("a", 2)]), now + Duration::from_secs(30));
        assert!(h.holds("c"));
        assert_eq!(h.source_done("a", 1), vec![], "a's push 2 stops what c takes over");
        assert_eq!(h.source_done("a", 2), vec![]);
        assert_eq!(h.source_done("b", 3), vec![], "an earlier push of b carried no stops");
        assert_eq!(h.source_done("b", 4), vec![("c".to_string(), 15)], "both old owners stopped");
        assert!(!h.holds("c"));
        h.hold("d", 3, sources(&[("a", 3)]), now + Duration::from_secs(5));
        assert_eq!(h.due(now + Duration::from_secs(4)), vec![]);
        assert_eq!(h.due(now + Duration::from_secs(5)), vec![("d".to_string(), 3)], "the deadline keeps it clear of its cron");
        assert_eq!(h.source_done("a", 3), vec![]);
    }

    #[test]
    fn pushes_are_numbered_and_the_next_one_carries_new_work() {
        let mut p = Pushes::default();
        let now = Instant::now();
        assert_eq!(p.next("a"), 1);
        p.request("a", 1, now);
        assert_eq!((p.last("a"), p.next("a")), (1, 2));
        assert_eq!(p.request("a", 1, now), Ask::Queued);
        assert_eq!(p.next("a"), 2, "the queued push is the next one");
        assert_eq!(p.finished("a", Duration::ZERO, now), Some(1));
        assert_eq!(p.last("a"), 2);
    }
}
