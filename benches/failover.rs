//! Failover and revert on MariaDB: 5 nodes, 4000 monitors, node1 holds 1000.
//! Failover is timed from the NodeTransition message to the commit of the
//! decision it triggers; revert from the request to its commit.
//!
//!     cargo bench --bench failover            (MariaDB from KC_TEST_MARIADB_URL)

#[path = "../tests/common/mod.rs"]
mod common;

use common::{SilentProbe, Supervisor, TestDb};
use kuma_cluster::core::health::Health::{Down, Unknown, Up};
use std::rc::Rc;
use std::time::{Duration, Instant};

const ROUNDS: usize = 10;

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name}: min {:.1} ms, median {:.1} ms, max {:.1} ms ({} runs)",
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1]),
        samples.len()
    );
}

fn main() {
    std::env::set_var("KC_REQUIRE_MARIADB", "1");
    common::run(async {
        let t = TestDb::mariadb().await.expect("MariaDB is required");
        t.migrate().await;
        for i in 1..=5 {
            t.add_node(&format!("node{i}"), "127.0.0.1:9").await;
            t.add_monitors(&format!("node{i}"), if i == 1 { 1000 } else { 750 }).await;
        }
        // every round makes two transitions: keep damping out of a benchmark of speed
        let sup = Supervisor::start(&t, Rc::new(SilentProbe), &[("KUMA_CLUSTER__CLUSTER__FLAP_MAX_TRANSITIONS", "100000")]);
        sup.reconcile().await;
        for i in 1..=5 {
            sup.transition(&format!("node{i}"), Unknown, Up).await;
        }
        sup.reconcile().await;

        let (mut failover, mut inside, mut revert) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let decisions = sup.state().await.decisions;
            let start = Instant::now();
            sup.transition("node1", Up, Down).await;
            let state = loop {
                let state = sup.state().await;
                if state.decisions > decisions {
                    break state;
                }
            };
            failover.push(start.elapsed());
            let last = state.last_decision.unwrap();
            assert_eq!(last.displaced, 1000);
            inside.push(Duration::from_millis(last.duration_ms));

            sup.transition("node1", Down, Up).await;
            sup.reconcile().await;
            sup.clock.advance(Duration::from_secs(10));
            let start = Instant::now();
            let summary = sup.reconcile().await;
            revert.push(start.elapsed());
            assert_eq!(summary.reverted, 1000);
        }
        report("failover of 1000 of 4000 monitors, transition to commit", failover);
        report("failover decision (read, plan, write, commit)", inside);
        report("revert of 1000 monitors, request to commit", revert);
        t.drop_db().await;
    });
}
