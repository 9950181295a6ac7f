//! The supervisor under database faults: a decision that cannot finish is
//! failed at its deadline and retried, while traffic leaves a dead node at its
//! transition and readiness answers at once.

mod common;

mod mariadb {
    use super::common::{self, SilentProbe, Supervisor, TestDb};
    use kuma_cluster::core::health::Health::{Down, Unknown, Up};
    use kuma_cluster::supervisor::actors::cluster::Reconcile;
    use sea_orm::{ConnectionTrait, TransactionTrait};
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    /// Another client holds node1's monitor rows locked: the failover's
    /// updates wait on the lock. The decision fails at its deadline (1 s), is
    /// retried with backoff, and commits once the lock is gone; the node's
    /// death reached the routing snapshot at the transition all along.
    #[test]
    fn a_decision_stuck_on_a_lock_fails_at_its_deadline_while_traffic_leaves_the_dead_node_at_once() {
        common::run(async {
            let Some(t) = TestDb::mariadb().await else { return };
            t.migrate().await;
            for i in 1..=3 {
                t.add_node(&format!("node{i}"), "127.0.0.1:9").await;
                t.add_monitors(&format!("node{i}"), 10).await;
            }
            let sup = Supervisor::start(&t, Rc::new(SilentProbe), &[("KUMA_CLUSTER__CLUSTER__DECISION_TIMEOUT", "1s")]);
            sup.reconcile().await;
            for i in 1..=3 {
                sup.transition(&format!("node{i}"), Unknown, Up).await;
            }
            sup.reconcile().await;

            let blocker = t.db.begin().await.unwrap();
            blocker.execute_unprepared("SELECT id FROM monitor WHERE node_id = 'node1' FOR UPDATE").await.unwrap();
            sup.transition("node1", Up, Down).await;
            assert!(!sup.routing.load().node("node1").unwrap().ready, "traffic leaves node1 at its transition");
            let started = Instant::now();
            let error = sup.addr.send(Reconcile).await.unwrap().unwrap_err();
            assert!(error.contains("no answer from the database within 1s"), "{error}");
            assert!(started.elapsed() < Duration::from_secs(30), "failed at its deadline, not the lock's");
            let state = sup.state().await;
            assert!(state.retry_in_ms.is_some(), "retried with backoff");
            assert_eq!(t.running_on("node1").await, 10, "nothing moved while the rows were locked");
            assert!(sup.vitals.load().failing.is_some(), "readiness knows decisions fail");

            blocker.rollback().await.unwrap();
            common::eventually(Duration::from_secs(30), "the retry commits the failover", || async {
                t.running_on("node1").await == 0 && sup.vitals.load().failing.is_none()
            })
            .await;
            t.drop_db().await;
        });
    }
}
