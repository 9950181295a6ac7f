//! The simulated Kuma node alone, and three of them under a real supervisor:
//! a node that dies has its monitors run elsewhere, exactly once, and gets them
//! back when it returns.

mod common;

use common::{eventually, TestDb};
use kuma_cluster::supervisor::actors::cluster::Shutdown;
use kuma_cluster::tools::sim::{SimConfig, SimNode};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const AUTH: &str = "Bearer sim-secret";

fn config(id: &str, listen: &str, reconcile_every: Duration) -> SimConfig {
    SimConfig {
        id: id.into(),
        listen: listen.parse().unwrap(),
        reconcile_every,
        auth_header: Some(AUTH.into()),
    }
}

async fn get(host: &str, path: &str) -> (u16, Value) {
    let mut response = awc::Client::new().get(format!("http://{host}{path}")).send().await.unwrap();
    let body = response.body().await.unwrap();
    (response.status().as_u16(), serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn a_sim_node_registers_itself_and_runs_exactly_its_monitors(t: TestDb) {
    t.migrate().await;
    t.add_node("other", "127.0.0.1:9").await;
    t.add_monitors("sim1", 4).await;
    t.add_monitors("other", 2).await;
    t.exec("UPDATE monitor SET active = 0 WHERE id = 1").await;
    t.exec("UPDATE monitor SET assigned_node = 'other' WHERE id = 2").await;
    t.exec("UPDATE monitor SET assigned_node = 'sim1' WHERE id = 5").await;
    let node = SimNode::start(config("sim1", "127.0.0.1:0", Duration::from_secs(3600)), t.db.clone()).await.unwrap();
    assert_eq!(node.running(), vec![3, 4, 5]);
    assert_eq!(t.rows("SELECT host, status FROM node WHERE node_id = 'sim1'", 2).await, vec![vec![Some(node.host.clone()), Some("online".into())]]);
    let (status, running) = get(&node.host, "/api/v1/running").await;
    assert_eq!((status, running["count"].as_u64(), running["node_id"].as_str()), (200, Some(3), Some("sim1")));
    assert!(running["monitors"][0]["since"].is_string());
    let (status, health) = get(&node.host, "/api/v1/health").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("healthy")));
    let page = awc::Client::new().get(format!("http://{}/", node.host)).send().await.unwrap().body().await.unwrap();
    assert!(String::from_utf8_lossy(&page).contains("Simulated Kuma node sim1"));
    node.stop().await;
    t.drop_db().await;
}



#[test]
fn a_reconcile_call_needs_authorization_and_applies_a_move_at_once() {
    common::run(async {
        let t = TestDb::sqlite().await;
        t.migrate().await;
        t.add_monitors("sim1", 2).await;
        let node = SimNode::start(config("sim1", "127.0.0.1:0", Duration::from_secs(3600)), t.db.clone()).await.unwrap();
        t.exec("UPDATE monitor SET assigned_node = 'elsewhere' WHERE id = 1").await;
        assert_eq!(node.running(), vec![1, 2], "its own cron is an hour away");
        let client = awc::Client::new();
        let url = format!("http://{}/api/v1/reconcile-monitors", node.host);
        for auth in [None, Some("Bearer wrong")] {
            let mut request = client.post(&url);
            if let Some(auth) = auth {
                request = request.insert_header(("authorization", auth));
            }
            assert_eq!(request.send().await.unwrap().status().as_u16(), 401);
        }
        assert_eq!(node.running(), vec![1, 2]);
        let response = client.post(&url).insert_header(("authorization", AUTH)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(node.running(), vec![2]);
        node.stop().await;
    });
}

#[test]
fn health_answers_503_while_the_database_does_not() {
    common::run(async {
        let t = TestDb::sqlite().await;
        t.migrate().await;
        let node = SimNode::start(config("sim1", "127.0.0.1:0", Duration::from_secs(3600)), t.db.clone()).await.unwrap();
        t.exec("ALTER TABLE monitor RENAME TO monitor_away").await;
        let (status, health) = get(&node.host, "/api/v1/health").await;
        assert_eq!((status, health["checks"]["database"].as_str()), (503, Some("unreachable")));
        t.exec("ALTER TABLE monitor_away RENAME TO monitor").await;
        assert_eq!(get(&node.host, "/api/v1/health").await.0, 200);
        node.stop().await;
    });
}

/// Active monitor ids, and which live node runs each: every one exactly once.
async fn each_runs_exactly_once(t: &TestDb, nodes: &[&SimNode]) -> bool {
    let active: BTreeSet<u32> =
        t.monitors().await.into_iter().filter(|m| m.3).map(|m| m.0 as u32).collect();
    let mut seen = BTreeSet::new();
    for node in nodes {
        for id in node.running() {
            if !seen.insert(id) {
                return false;
            }
        }
    }
    seen == active
}

async fn sim_nodes_under_the_supervisor_fail_over_and_back_with_each_monitor_run_once(t: TestDb) {
    t.migrate().await;
    for i in 1..=3 {
        t.add_monitors(&format!("sim{i}"), 30).await;
    }
    // the nodes' own cron is an hour away: only the supervisor's pushes move monitors
    let hour = Duration::from_secs(3600);
    let mut nodes = Vec::new();
    for i in 1..=3 {
        nodes.push(SimNode::start(config(&format!("sim{i}"), "127.0.0.1:0", hour), t.db.clone()).await.unwrap());
    }
    let (cluster, routing) = common::live_supervisor(&t, &[("KUMA_CLUSTER__NODES__AUTH_HEADER", AUTH)]);
    eventually(WAIT, "all three nodes ready", || async { routing.load().nodes.iter().filter(|n| n.ready).count() == 3 }).await;
    assert!(each_runs_exactly_once(&t, &[&nodes[0], &nodes[1], &nodes[2]]).await);

    let dead = nodes.remove(0);
    let address = dead.host.clone();
    dead.stop().await;
    eventually(WAIT, "sim1's monitors run elsewhere, each once", || async {
        each_runs_exactly_once(&t, &[&nodes[0], &nodes[1]]).await
    })
    .await;
    assert_eq!(nodes[0].running().len() + nodes[1].running().len(), 90);

    let back = SimNode::start(config("sim1", &address, hour), t.db.clone()).await.unwrap();
    eventually(WAIT, "sim1 gets its monitors back, each run once", || async {
        back.running().len() == 30 && each_runs_exactly_once(&t, &[&back, &nodes[0], &nodes[1]]).await
    })
    .await;
    cluster.send(Shutdown).await.unwrap();
    back.stop().await;
    for node in nodes {
        node.stop().await;
    }
    t.drop_db().await;
}

on_both_backends!(
    a_sim_node_registers_itself_and_runs_exactly_its_monitors,
    sim_nodes_under_the_supervisor_fail_over_and_back_with_each_monitor_run_once,
);
