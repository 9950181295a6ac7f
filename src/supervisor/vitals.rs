//! The supervisor's own recent knowledge of its health and role, for readiness
//! and for forwarding operator actions to the leader. The ClusterActor writes
//! it as decisions commit or fail and as the lease changes hands; the front
//! reads it lock-free and answers at once, whatever the database does.

use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default)]
pub struct Vitals {
    /// Kuma tables the nodes have not created yet.
    pub waiting_for: Vec<String>,
    /// When a decision last committed or the schema was last read.
    pub last_contact: Option<Instant>,
    /// Why the last decision failed, until one commits again.
    pub failing: Option<String>,
    /// This replica holds the leader lease: it decides and applies operator
    /// actions itself.
    pub leading: bool,
    /// The replica that leads, while another one does.
    pub leader_id: Option<String>,
    /// Where the leader's `/lb/` API is reached, while another replica leads.
    pub leader_address: Option<String>,
    /// Why the leader lease could not be read or renewed, until it can again.
    pub lease_error: Option<String>,
}

impl Vitals {
    /// Why the supervisor is not ready at `now`, from its own knowledge: empty
    /// when it is. Contact older than `stale_after` counts as lost.
    pub fn unready(&self, now: Instant, stale_after: Duration) -> Vec<String> {
        let mut reasons = Vec::new();
        if let Some(error) = &self.failing {
            reasons.push(format!("decisions are failing: {error}"));
        }
        if let Some(error) = &self.lease_error {
            reasons.push(format!("the leader lease cannot be read: {error}"));
        }
        match self.last_contact {
            None => reasons.push("no contact with the database yet".to_owned()),
            Some(at) if now.saturating_duration_since(at) > stale_after => reasons.push(format!(
                "no contact with the database for {} s",
                now.saturating_duration_since(at).as_secs()
            )),
            Some(_) => {}
        }
        if !self.waiting_for.is_empty() {
            reasons.push(format!("waiting for the nodes to create {}", self.waiting_for.join(", ")));
        }
        reasons
    }
}

/// One writer (the ClusterActor), lock-free readers.
#[derive(Clone, Default)]
pub struct VitalSigns(Arc<ArcSwap<Vitals>>);

impl VitalSigns {
    pub fn load(&self) -> Arc<Vitals> {
        self.0.load_full()
    }

    pub fn update(&self, change: impl FnOnce(&mut Vitals)) {
        let mut vitals = Vitals::clone(&self.0.load());
        change(&mut vitals);
        self.0.store(Arc::new(vitals));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_recent_contact_and_no_failing_decision() {
        let now = Instant::now();
        let stale = Duration::from_secs(30);
        let mut v = Vitals::default();
        assert_eq!(v.unready(now, stale), vec!["no contact with the database yet"]);
        v.last_contact = Some(now);
        assert!(v.unready(now + Duration::from_secs(30), stale).is_empty());
        assert_eq!(v.unready(now + Duration::from_secs(31), stale), vec!["no contact with the database for 31 s"]);
        v.failing = Some("no answer from the database within 5s".into());
        assert_eq!(v.unready(now, stale), vec!["decisions are failing: no answer from the database within 5s"]);
        v.failing = None;
        v.waiting_for = vec!["node".into(), "monitor".into()];
        assert_eq!(v.unready(now, stale), vec!["waiting for the nodes to create node, monitor"]);
        v.waiting_for.clear();
        v.lease_error = Some("no answer from the database within 1s".into());
        assert_eq!(v.unready(now, stale), vec!["the leader lease cannot be read: no answer from the database within 1s"]);
    }

    #[test]
    fn readers_see_each_update_whole() {
        let signs = VitalSigns::default();
        let reader = signs.clone();
        let at = Instant::now();
        signs.update(|v| v.last_contact = Some(at));
        signs.update(|v| v.failing = Some("x".into()));
        let seen = reader.load();
        assert_eq!((seen.last_contact, seen.failing.as_deref()), (Some(at), Some("x")));
    }
}
