//! Rebalance of 10 000 monitors on 20 nodes, one of which was added empty: the
//! planning time (the pure planner, no IO), the whole dry-run decision, and the
//! applied decision on MariaDB, with the move count against the minimum.
//!
//!     cargo bench --bench rebalance            (MariaDB from KC_TEST_MARIADB_URL)

#[path = "../tests/common/mod.rs"]
mod common;

use common::{SilentProbe, Supervisor, TestDb};
use kuma_cluster::supervisor::actors::cluster::Apply;
use kuma_cluster::core::health::Health::{self, Unknown, Up};
use kuma_cluster::core::placement::{plan_rebalance, ClusterView, MonitorView, NodeView};
use kuma_cluster::core::reconcile::Command;
use std::rc::Rc;
use std::time::Instant;

const NODES: usize = 20;
const MONITORS: usize = 10_000;

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    std::env::set_var("KC_REQUIRE_MARIADB", "1");
    // the pure planner on the same shape, best of 5
    let per_node = MONITORS / (NODES - 1);
    let view = ClusterView {
        place_unassigned: false,
        nodes: (1..=NODES)
            .map(|i| NodeView {
                id: format!("node{i}"),
                health: Health::Up,
                enabled: true,
                stable: true,
                settled: true,
                limit: 1000,
                budget: usize::MAX,
                handover_budget: usize::MAX,
                idle: true,
            })
            .collect(),
        monitors: (0..MONITORS)
            .map(|k| MonitorView {
                id: k as u32,
                active: true,
                home: Some(format!("node{}", (k / per_node).min(NODES - 2) + 1)),
                assigned: None,
                origin: None,
                pinned: false,
            })
            .collect(),
    };
    let mut best = f64::MAX;
    let mut planned = 0;
    for _ in 0..5 {
        let start = Instant::now();
        planned = plan_rebalance(&view, None, false).len();
        best = best.min(ms(start.elapsed()));
    }
    println!("plan_rebalance, {MONITORS} monitors on {NODES} nodes: {best:.1} ms (best of 5), {planned} moves");

    common::run(async {
        let t = TestDb::mariadb().await.expect("MariaDB is required");
        t.migrate().await;
        for i in 1..NODES {
            t.add_node(&format!("node{i}"), "127.0.0.1:9").await;
            let count = if i == NODES - 1 { MONITORS - per_node * (NODES - 2) } else { per_node };
            t.add_monitors(&format!("node{i}"), count).await;
        }
        t.add_node(&format!("node{NODES}"), "127.0.0.1:9").await;
        let sup = Supervisor::start(&t, Rc::new(SilentProbe), &[]);
        sup.reconcile().await;
        for i in 1..=NODES {
            sup.transition(&format!("node{i}"), Unknown, Up).await;
        }
        sup.reconcile().await;
        let loads: Vec<i64> = {
            let mut v = Vec::new();
            for i in 1..=NODES {
                v.push(t.count(&format!("SELECT COUNT(*) FROM monitor WHERE COALESCE(assigned_node, node_id) = 'node{i}'")).await);
            }
            v
        };
        let share = MONITORS as i64 / NODES as i64;
        let minimum: i64 = loads.iter().map(|&l| (l - share - 1).max(0)).sum::<i64>().max(share - loads[NODES - 1]);

        let start = Instant::now();
        let dry = sup.addr.send(Apply(Command::Rebalance { dry_run: true, max_moves: None, from_scratch: false })).await.unwrap().unwrap();
        let dry_ms = ms(start.elapsed());
        let start = Instant::now();
        let applied = sup.addr.send(Apply(Command::Rebalance { dry_run: false, max_moves: None, from_scratch: false })).await.unwrap().unwrap();
        let apply_ms = ms(start.elapsed());
        let moves = applied.rebalance.as_ref().unwrap().planned;
        println!("dry-run decision (read, plan, report; no write): {dry_ms:.1} ms, {} moves", dry.rebalance.unwrap().planned);
        println!("applied decision on MariaDB (read, plan, write {moves} moves, commit): {apply_ms:.1} ms");
        println!("moves {moves}, minimum {minimum}: {:.1} % above the minimum", (moves as f64 / minimum as f64 - 1.0) * 100.0);
        t.drop_db().await;
    });
}
