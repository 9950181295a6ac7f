//! The supervisor with real HTTP probes against in-process fake Kuma nodes, in
//! real time with short intervals.

mod common;

use common::{eventually, FakeNode, TestDb};
use kuma_cluster::supervisor::actors::cluster::{GetClusterState, Shutdown};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

async fn a_node_failing_its_health_checks_is_failed_over_and_back_with_reconcile_pushes(t: TestDb) {
    t.migrate().await;
    let nodes: Vec<FakeNode> = (0..3).map(|_| FakeNode::start()).collect();
    for (i, node) in nodes.iter().enumerate() {
        t.add_node(&format!("node{}", i + 1), &node.host).await;
        t.add_monitors(&format!("node{}", i + 1), 20).await;
    }
    let (cluster, routing) = common::live_supervisor(&t, &[("KUMA_CLUSTER__NODES__AUTH_HEADER", "Bearer test-token")]);
    // routing takes each verdict at once; the first decision comes after
    eventually(WAIT, "every node is up and routable, and supervision has begun", || async {
        let table = routing.load();
        table.nodes.len() == 3 && table.nodes.iter().all(|n| n.ready) && cluster.send(GetClusterState).await.unwrap().started
    })
    .await;

    nodes[0].set_health(503);
    eventually(WAIT, "node1's monitors leave it", || async { t.running_on("node1").await == 0 }).await;
    assert_eq!(t.status_of("node1").await, "offline");
    assert!(!routing.load().node("node1").unwrap().ready);
    assert_eq!(t.running_on("node2").await + t.running_on("node3").await, 60);
    eventually(WAIT, "the new owners are asked to reconcile", || async {
        !nodes[1].reconcile_calls().is_empty() && !nodes[2].reconcile_calls().is_empty()
    })
    .await;
    assert!(nodes[1].reconcile_calls().iter().all(|a| a.as_deref() == Some("Bearer test-token")));
    eventually(WAIT, "node1 still answers, so it is asked to stop what left it", || async {
        !nodes[0].reconcile_calls().is_empty()
    })
    .await;
    let asked = nodes[0].reconcile_calls().len();

    nodes[0].set_health(200);
    eventually(WAIT, "node1's monitors return", || async { t.running_on("node1").await == 20 }).await;
    assert_eq!(t.status_of("node1").await, "online");
    eventually(WAIT, "node1 is asked to reconcile", || async { nodes[0].reconcile_calls().len() > asked }).await;
    assert_eq!(t.count("SELECT COUNT(*) FROM kc_move_ledger WHERE undone_at IS NULL").await, 0);

    cluster.send(Shutdown).await.unwrap();
    for node in nodes {
        node.stop().await;
    }
    t.drop_db().await;
}

on_both_backends!(a_node_failing_its_health_checks_is_failed_over_and_back_with_reconcile_pushes);
