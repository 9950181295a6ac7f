//! This replica's part in the leader lease: whether it leads, since which
//! epoch and until when, what it last saw of the lease, and how long its own
//! pushes may still run. Plain data, like the decision queue: the ClusterActor
//! does the database round trips and tells it what came back.

use crate::core::lease::{LeaseRow, Tenure};
use serde::Serialize;
use std::time::{Duration, Instant};

/// The base URL of a replica from its advertised address: `host:port` or a URL.
pub fn base_url(address: &str) -> String {
    if address.starts_with("http://") || address.starts_with("https://") {
        address.trim_end_matches('/').to_owned()
    } else {
        format!("http://{address}")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Follower,
}

/// What the status API and the CLI show of the lease.
#[derive(Clone, Debug, Serialize)]
pub struct HaState {
    pub replica_id: String,
    pub address: Option<String>,
    pub role: Role,
    pub leader_id: Option<String>,
    pub leader_address: Option<String>,
    pub epoch: Option<i64>,
    /// When the lease ends: for the leader, when it stops acting unless it
    /// renews again (before the database's expiry); for a follower, the
    /// expiry on the database's clock as last read.
    pub lease_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Changes of role of this replica since it started.
    pub role_changes: u64,
    /// Decisions this replica began as the leader that the lease refused.
    pub fenced_decisions: u64,
}

#[derive(Debug)]
pub struct Leadership {
    me: String,
    address: Option<String>,
    tenure: Option<Tenure>,
    /// The lease as a follower last read it; none while this replica leads
    /// and right after it stepped down, until it reads it again.
    lease: Option<LeaseRow>,
    /// The lease has been read or won at least once.
    looked: bool,
    /// The lease version (epoch, generation) the follower's table was built from.
    loaded: Option<(i64, i64)>,
    /// The latest moment a push of this replica may still run on a node.
    pushes_until: Option<Instant>,
    role_changes: u64,
    fenced: u64,
}

impl Leadership {
    pub fn new(me: String, address: Option<String>) -> Self {
        Leadership { me, address, tenure: None, lease: None, looked: false, loaded: None, pushes_until: None, role_changes: 0, fenced: 0 }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    pub fn address(&self) -> Option<&str> {
        self.address.as_deref()
    }

    /// Whether the lease has been read or won at least once: before that, no
    /// one can tell whether this replica will lead.
    pub fn looked(&self) -> bool {
        self.looked
    }

    /// The epoch this replica leads with at `now`, if it still may act.
    pub fn leading(&self, now: Instant) -> Option<i64> {
        self.tenure.filter(|t| t.holds(now)).map(|t| t.epoch)
    }

    /// It holds a tenure, whether or not it is still good: a renewal is due.
    pub fn holds_tenure(&self) -> Option<i64> {
        self.tenure.map(|t| t.epoch)
    }

    /// The lease was won with `epoch` by a statement sent at `sent`.
    pub fn won(&mut self, epoch: i64, sent: Instant, ttl: Duration) {
        self.tenure = Some(Tenure::new(epoch, sent, ttl));
        self.lease = None;
        self.looked = true;
        self.role_changes += 1;
    }

    pub fn renewed(&mut self, sent: Instant, ttl: Duration) {
        if let Some(tenure) = &mut self.tenure {
            tenure.renewed(sent, ttl);
        }
    }

    /// This replica stops leading. Returns whether it led.
    pub fn lost(&mut self) -> bool {
        self.loaded = None;
        self.lease = None;
        let led = self.tenure.take().is_some();
        if led {
            self.role_changes += 1;
        }
        led
    }

    /// A decision was refused by the lease.
    pub fn fenced(&mut self) {
        self.fenced += 1;
    }

    /// A follower read the lease: whether its table is older than the
    /// committed rows (a new holder, or a newer decision) and must be reloaded.
    pub fn seen(&mut self, row: LeaseRow) -> bool {
        let stale = self.loaded != Some(row.version());
        self.lease = Some(row);
        self.looked = true;
        stale
    }

    /// The follower's table now shows the rows of lease `version`.
    pub fn loaded(&mut self, version: (i64, i64)) {
        self.loaded = Some(version);
    }

    /// A push was sent that may run until `until`.
    pub fn push_sent(&mut self, until: Instant) {
        self.pushes_until = self.pushes_until.max(Some(until));
    }

    /// How long this replica's pushes may still run on the nodes: a successor
    /// waits that long before it pushes the same nodes.
    pub fn pushes_left(&self, now: Instant) -> Duration {
        self.pushes_until.map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    pub fn state(&self, now: Instant) -> HaState {
        let lease = self.lease.as_ref();
        let epoch = self.leading(now);
        let (leader_id, leader_address) = match epoch {
            Some(_) => (Some(self.me.clone()), self.address.clone()),
            None => (lease.and_then(|l| l.leader().map(str::to_owned)), lease.filter(|l| !l.is_free()).and_then(|l| l.address.clone())),
        };
        HaState {
            replica_id: self.me.clone(),
            address: self.address.clone(),
            role: if epoch.is_some() { Role::Leader } else { Role::Follower },
            leader_id,
            leader_address,
            epoch: epoch.or(lease.map(|l| l.epoch)),
            lease_expires_at: match self.tenure.filter(|t| t.holds(now)) {
                Some(tenure) => chrono::Duration::from_std(tenure.left(now)).ok().map(|left| chrono::Utc::now() + left),
                None => lease.filter(|l| l.holder.is_some()).and_then(|l| chrono::DateTime::from_timestamp_millis(l.expires_ms)),
            },
            role_changes: self.role_changes,
            fenced_decisions: self.fenced,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(holder: Option<&str>, epoch: i64, generation: i64) -> LeaseRow {
        LeaseRow {
            holder: holder.map(str::to_owned),
            address: holder.map(|h| format!("{h}:8080")),
            epoch,
            expires_ms: 20_000,
            generation,
            pushes_until_ms: 0,
            now_ms: 10_000,
        }
    }

    #[test]
    fn a_replicas_address_may_be_host_and_port_or_a_url() {
        assert_eq!(base_url("10.0.0.5:8080"), "http://10.0.0.5:8080");
        assert_eq!(base_url("http://kc-1.kc:8080/"), "http://kc-1.kc:8080");
        assert_eq!(base_url("https://kc.example"), "https://kc.example");
    }

    #[test]
    fn a_follower_reloads_when_the_holder_or_the_decision_generation_moves() {
        let mut l = Leadership::new("b".into(), None);
        assert!(l.seen(row(Some("a"), 1, 5)), "nothing loaded yet");
        l.loaded((1, 5));
        assert!(!l.seen(row(Some("a"), 1, 5)));
        assert!(l.seen(row(Some("a"), 1, 6)), "a newer decision");
        l.loaded((1, 6));
        assert!(l.seen(row(Some("c"), 2, 6)), "a new holder");
        let state = l.state(Instant::now());
        assert_eq!((state.role, state.leader_id.as_deref(), state.leader_address.as_deref()), (Role::Follower, Some("c"), Some("c:8080")));
    }

    #[test]
    fn a_leader_acts_only_within_its_tenure_and_counts_each_change_of_role() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut l = Leadership::new("a".into(), Some("a:8080".into()));
        assert_eq!(l.leading(t0), None);
        l.won(4, t0, ttl);
        assert_eq!(l.leading(t0 + Duration::from_secs(9)), Some(4));
        assert_eq!(l.leading(t0 + ttl), None, "not renewed: it stops acting before the database's expiry");
        assert_eq!(l.holds_tenure(), Some(4), "and tries to renew");
        l.renewed(t0 + Duration::from_secs(5), ttl);
        assert_eq!(l.leading(t0 + ttl), Some(4));
        let state = l.state(t0);
        assert_eq!((state.role, state.leader_id.as_deref(), state.epoch), (Role::Leader, Some("a"), Some(4)));
        assert!(l.lost());
        assert!(!l.lost(), "only once");
        let state = l.state(t0);
        assert_eq!((state.role_changes, state.leader_id), (2, None), "who leads is unknown until the next read");
        assert!(l.looked());
        assert!(l.seen(row(Some("a"), 4, 0)), "a former leader reloads as a follower");
    }

    #[test]
    fn a_successor_waits_for_the_latest_push_of_this_replica() {
        let t0 = Instant::now();
        let mut l = Leadership::new("a".into(), None);
        assert_eq!(l.pushes_left(t0), Duration::ZERO);
        l.push_sent(t0 + Duration::from_secs(30));
        l.push_sent(t0 + Duration::from_secs(10));
        assert_eq!(l.pushes_left(t0 + Duration::from_secs(5)), Duration::from_secs(25));
        assert_eq!(l.pushes_left(t0 + Duration::from_secs(40)), Duration::ZERO);
    }
}
