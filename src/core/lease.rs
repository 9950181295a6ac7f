//! The leader lease as one replica sees it: pure, no IO, no clock of its own.
//!
//! Replicas share one lease row in the database. Its expiry is on the
//! database's clock, so replicas' clocks may differ; a replica takes the lease
//! only when it is free or expired, and every change of holder raises the
//! epoch. The holder's own belief that it leads ([`Tenure`]) runs on its
//! monotonic clock from *before* each renewal was sent, so it never outlasts
//! the database's expiry: a holder that cannot renew stops acting first.
//! What it writes is fenced in the database as well (`store::fence`), so even a
//! holder whose belief is wrong (a stalled process) cannot commit.

use serde::Serialize;
use std::time::{Duration, Instant};

/// The lease row as read, with the database's clock at the moment of reading.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LeaseRow {
    pub holder: Option<String>,
    /// Where the holder's `/lb/` API is reached.
    pub address: Option<String>,
    pub epoch: i64,
    /// Milliseconds of the database's clock.
    pub expires_ms: i64,
    /// Decisions the holders have written: followers reload when it moves.
    pub generation: i64,
    /// Until then (database clock) a reconcile push of a holder may still run
    /// on a node.
    pub pushes_until_ms: i64,
    /// The database's clock when the row was read.
    pub now_ms: i64,
}

impl LeaseRow {
    /// Nobody holds the lease, or the holder let it expire.
    pub fn is_free(&self) -> bool {
        self.holder.is_none() || self.expires_ms <= self.now_ms
    }

    /// The current holder, if the lease is held.
    pub fn leader(&self) -> Option<&str> {
        self.holder.as_deref().filter(|_| !self.is_free())
    }

    /// How long a former holder's pushes may still run on the nodes.
    pub fn pushes_left(&self) -> Duration {
        Duration::from_millis(self.pushes_until_ms.saturating_sub(self.now_ms).max(0) as u64)
    }

    /// What a follower watches: a new holder or a newer decision.
    pub fn version(&self) -> (i64, i64) {
        (self.epoch, self.generation)
    }
}

/// This replica holds the lease with `epoch` until `valid_until` at the latest,
/// as far as it can tell on its own clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tenure {
    pub epoch: i64,
    valid_until: Instant,
}

impl Tenure {
    /// The lease was won (or renewed) by a statement sent at `sent`: the
    /// database's expiry is at least `ttl` after that.
    pub fn new(epoch: i64, sent: Instant, ttl: Duration) -> Self {
        Tenure { epoch, valid_until: sent + ttl }
    }

    pub fn renewed(&mut self, sent: Instant, ttl: Duration) {
        self.valid_until = self.valid_until.max(sent + ttl);
    }

    /// Whether this replica may still act as the leader at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        now < self.valid_until
    }

    /// How long it may still act without another renewal.
    pub fn left(&self, now: Instant) -> Duration {
        self.valid_until.saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(holder: Option<&str>, expires_ms: i64, now_ms: i64) -> LeaseRow {
        LeaseRow { holder: holder.map(str::to_owned), expires_ms, now_ms, ..LeaseRow::default() }
    }

    #[test]
    fn a_lease_is_free_when_nobody_holds_it_or_it_expired_on_the_databases_clock() {
        assert!(row(None, 0, 1_000).is_free());
        assert!(row(None, 5_000, 1_000).is_free(), "a released lease is free whatever its expiry");
        assert!(!row(Some("a"), 5_000, 1_000).is_free());
        assert!(row(Some("a"), 5_000, 5_000).is_free(), "expired at its expiry");
        assert_eq!(row(Some("a"), 5_000, 4_999).leader(), Some("a"));
        assert_eq!(row(Some("a"), 5_000, 5_001).leader(), None);
    }

    #[test]
    fn a_former_holders_pushes_are_waited_for_only_while_they_may_run() {
        let mut r = row(None, 0, 10_000);
        r.pushes_until_ms = 12_500;
        assert_eq!(r.pushes_left(), Duration::from_millis(2_500));
        r.pushes_until_ms = 9_000;
        assert_eq!(r.pushes_left(), Duration::ZERO);
    }

    #[test]
    fn a_tenure_ends_one_ttl_after_the_last_renewal_was_sent_and_never_shrinks() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut tenure = Tenure::new(3, t0, ttl);
        assert!(tenure.holds(t0 + Duration::from_millis(9_999)));
        assert!(!tenure.holds(t0 + ttl));
        tenure.renewed(t0 + Duration::from_secs(2), ttl);
        assert!(tenure.holds(t0 + Duration::from_secs(11)));
        assert_eq!(tenure.left(t0 + Duration::from_secs(4)), Duration::from_secs(8));
        tenure.renewed(t0 + Duration::from_secs(1), ttl);
        assert!(tenure.holds(t0 + Duration::from_secs(11)), "a late answer to an older renewal does not shorten it");
        assert_eq!(tenure.epoch, 3);
    }
}
