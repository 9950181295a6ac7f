//! Two supervisors on one database, in one process, on SQLite and MariaDB:
//! exactly one holds the leader lease and decides; the other follows the
//! leader's commits in its routing; a released lease passes at the next poll;
//! a decision of a replica whose lease was taken writes nothing.

mod common;

use common::{eventually, SilentProbe, Supervisor, TestDb};
use kuma_cluster::core::health::Health::{Down, Unknown, Up};
use kuma_cluster::supervisor::actors::cluster::{Reconcile, Shutdown};
use kuma_cluster::supervisor::leadership::Role;
use std::rc::Rc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// Frequent polls and renewals; a lease long enough that a takeover well
/// within it can only come from a release.
const FAST_LEASE: [(&str, &str); 3] = [
    ("KUMA_CLUSTER__HA__LEASE_TTL", "30s"),
    ("KUMA_CLUSTER__HA__RENEW_INTERVAL", "500ms"),
    ("KUMA_CLUSTER__HA__POLL_INTERVAL", "100ms"),
];

async fn role(sup: &Supervisor) -> Role {
    sup.state().await.ha.role
}

/// Both supervisors report every node up: the leader's first decision starts supervision.
async fn up_everywhere(sups: &[&Supervisor], nodes: usize) {
    for sup in sups {
        for i in 1..=nodes {
            sup.transition(&format!("node{i}"), Unknown, Up).await;
        }
    }
}

/// The open ledger rows' epochs, each once.
async fn ledger_epochs(t: &TestDb) -> Vec<String> {
    t.rows("SELECT DISTINCT CAST(epoch AS CHAR) FROM kc_move_ledger ORDER BY 1", 1).await.into_iter().filter_map(|r| r[0].clone()).collect()
}

async fn two_supervisors_elect_one_leader_and_the_follower_routes_by_its_commits(t: TestDb) {
    t.migrate().await;
    for i in 1..=3 {
        t.add_node(&format!("node{i}"), "127.0.0.1:9").await;
        t.add_monitors(&format!("node{i}"), 20).await;
    }
    let a = Supervisor::start(&t, Rc::new(SilentProbe), &FAST_LEASE);
    let b = Supervisor::start(&t, Rc::new(SilentProbe), &FAST_LEASE);
    eventually(WAIT, "one of the two leads", || async { role(&a).await == Role::Leader || role(&b).await == Role::Leader }).await;
    let (leader, follower) = if role(&a).await == Role::Leader { (a, b) } else { (b, a) };
    assert_eq!(role(&follower).await, Role::Follower, "exactly one leads");
    let epoch = leader.state().await.ha.epoch.unwrap();
    let seen = follower.state().await.ha;
    assert_eq!((seen.leader_id, seen.epoch), (Some(leader.state().await.ha.replica_id), Some(epoch)));
    let refused = follower.addr.send(Reconcile).await.unwrap().unwrap_err();
    assert!(refused.contains("does not lead"), "{refused}");

    up_everywhere(&[&leader, &follower], 3).await;
    leader.reconcile().await;
    // node1 dies: both see it; only the leader decides, the follower routes by its commit
    leader.transition("node1", Up, Down).await;
    follower.transition("node1", Up, Down).await;
    assert!(!follower.routing.load().node("node1").unwrap().ready, "the follower's own probes take node1 out at once");
    leader.reconcile().await;
    assert_eq!(t.running_on("node1").await, 0);
    eventually(WAIT, "the follower routes node1's monitors where the leader moved them", || async {
        let table = follower.routing.load();
        (1..=20).all(|m| table.node_of_monitor(m).is_some_and(|n| n.id != "node1"))
    })
    .await;
    assert_eq!(follower.state().await.decisions, 0, "the follower decided nothing");
    assert_eq!(ledger_epochs(&t).await, vec![epoch.to_string()], "every ledger row names the epoch that wrote it");
    assert_eq!(t.count(&format!("SELECT COUNT(*) FROM kc_event_log WHERE epoch IS NULL OR epoch <> {epoch}")).await, 0);

    // the leader stops: its lease is released and the follower leads at its next poll
    leader.addr.send(Shutdown).await.unwrap();
    eventually(Duration::from_secs(10), "the follower takes over the released lease, long before it would expire", || async {
        role(&follower).await == Role::Leader
    })
    .await;
    let new_epoch = follower.state().await.ha.epoch.unwrap();
    assert_eq!(new_epoch, epoch + 1, "the epoch rises with the new holder");
    assert!(follower.state().await.nodes.iter().all(|n| n.busy), "no push before the former leader's pushes may have ended");
    follower.clock.advance(Duration::from_secs(10));
    follower.transition("node2", Up, Down).await;
    follower.reconcile().await;
    assert_eq!(t.running_on("node2").await, 0, "the new leader fails node2 over");
    assert_eq!(ledger_epochs(&t).await, vec![epoch.to_string(), new_epoch.to_string()]);
    follower.addr.send(Shutdown).await.unwrap();
    t.drop_db().await;
}

async fn a_decision_after_the_lease_was_taken_writes_nothing_and_its_replica_steps_down(t: TestDb) {
    t.migrate().await;
    for i in 1..=2 {
        t.add_node(&format!("node{i}"), "127.0.0.1:9").await;
        t.add_monitors(&format!("node{i}"), 10).await;
    }
    // renewals far apart: the replica believes it leads when the lease is taken
    let slow = [("KUMA_CLUSTER__HA__LEASE_TTL", "1h"), ("KUMA_CLUSTER__HA__RENEW_INTERVAL", "30m")];
    let sup = Supervisor::start(&t, Rc::new(SilentProbe), &slow);
    sup.up_all(2).await;
    let epoch = sup.state().await.ha.epoch.unwrap();
    // another replica takes over (as one would once the lease expired)
    t.exec(&format!("UPDATE kc_lease SET holder = 'intruder', epoch = {}, address = '10.9.9.9:8080'", epoch + 1)).await;
    // node1's death makes it decide: the lease refuses the transaction
    sup.transition("node1", Up, Down).await;
    eventually(WAIT, "the decision is fenced", || async { sup.state().await.ha.fenced_decisions == 1 }).await;
    assert_eq!(t.running_on("node1").await, 10, "nothing moved");
    assert_eq!(t.status_of("node1").await, "online", "nothing written");
    assert_eq!(t.count("SELECT COUNT(*) FROM kc_move_ledger").await, 0);
    let state = sup.state().await;
    assert_eq!((state.ha.role, state.ha.fenced_decisions), (Role::Follower, 1), "it stepped down");
    assert!(sup.metrics.render(&sup.routing.load()).contains("kuma_cluster_fenced_decisions_total 1"));
    let refused = sup.addr.send(Reconcile).await.unwrap().unwrap_err();
    assert!(refused.contains("does not lead") || refused.contains("no replica leads"), "it follows now: {refused}");
    eventually(WAIT, "it reads who leads now", || async { sup.state().await.ha.leader_id.as_deref() == Some("intruder") }).await;
    sup.addr.send(Shutdown).await.unwrap();
    t.drop_db().await;
}

/// A stand-in leader that records the monitor-write reports it is sent.
fn capturing_leader() -> (String, std::sync::Arc<std::sync::Mutex<Vec<(Option<String>, serde_json::Value)>>>) {
    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    let seen: std::sync::Arc<std::sync::Mutex<Vec<(Option<String>, serde_json::Value)>>> = Default::default();
    let kept = seen.clone();
    let server = HttpServer::new(move || {
        let kept = kept.clone();
        App::new().route(
            "/lb/monitor-written",
            web::post().to(move |req: HttpRequest, body: web::Json<serde_json::Value>| {
                let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
                kept.lock().unwrap().push((auth, body.into_inner()));
                async { HttpResponse::Ok().json(serde_json::json!({ "success": true })) }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let address = format!("127.0.0.1:{}", server.addrs()[0].port());
    actix_rt::spawn(server.run());
    (address, seen)
}

async fn a_follower_tells_the_leader_of_a_monitor_write_through_its_front_door(t: TestDb) {
    t.migrate().await;
    t.add_node("node1", "127.0.0.1:9").await;
    t.add_monitors("node1", 5).await;
    let (leader, seen) = capturing_leader();
    // another replica holds the lease for an hour
    t.exec(&format!("UPDATE kc_lease SET holder = 'leader-x', epoch = 7, address = '{leader}', expires_ms = 99999999999999")).await;
    let token = "follower-token-0123456789";
    let mut settings = FAST_LEASE.to_vec();
    settings.push(("KUMA_CLUSTER__API__TOKENS", token));
    let follower = Supervisor::start(&t, Rc::new(SilentProbe), &settings);
    eventually(WAIT, "the follower knows the leader", || async { follower.state().await.ha.leader_id.as_deref() == Some("leader-x") }).await;
    let written = kuma_cluster::supervisor::reports::FrontReport::MonitorWritten { served: "node1".into(), monitor: Some(3), home: None };
    follower.reports.send(written).await.unwrap();
    eventually(WAIT, "the leader is told", || async { !seen.lock().unwrap().is_empty() }).await;
    let (auth, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(auth, Some(format!("Bearer {token}")));
    assert_eq!(body, serde_json::json!({ "served": "node1", "monitor": 3, "home": null }));
    follower.addr.send(Shutdown).await.unwrap();
    t.drop_db().await;
}

on_both_backends!(
    a_follower_tells_the_leader_of_a_monitor_write_through_its_front_door,
    two_supervisors_elect_one_leader_and_the_follower_routes_by_its_commits,
    a_decision_after_the_lease_was_taken_writes_nothing_and_its_replica_steps_down,
);
