//! The ClusterActor driven by transition messages, with a manual clock, against
//! SQLite and MariaDB: failover, revert, manual overrides, restarts, start-up
//! gating, hold-down, flapping, database failures and node discovery.

mod common;

use common::{SilentProbe, Supervisor, TestDb};
use kuma_cluster::supervisor::actors::cluster::Shutdown;
use kuma_cluster::core::health::{Health, HealthMachine, Probed};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use Health::{Down, Unknown, Up};

const HOLD_DOWN: Duration = Duration::from_secs(10);

/// (monitor_id, from, to, reason, open) of every ledger row, by id.
async fn ledger(t: &TestDb) -> Vec<(i64, Option<String>, String, String, bool)> {
    t.rows(
        "SELECT CAST(monitor_id AS CHAR), from_node, to_node, reason, CASE WHEN undone_at IS NULL THEN 'open' ELSE 'closed' END \
         FROM kc_move_ledger ORDER BY id",
        5,
    )
    .await
    .into_iter()
    .map(|r| {
        (r[0].as_ref().unwrap().parse().unwrap(), r[1].clone(), r[2].clone().unwrap(), r[3].clone().unwrap(), r[4].as_deref() == Some("open"))
    })
    .collect()
}

async fn failover_and_revert_of_4000_monitors_across_5_nodes_are_recorded_row_by_row(t: TestDb) {
    let sup = Supervisor::settled(&t, 5, 800).await;
    let before = t.monitors().await;

    sup.transition("node1", Up, Down).await;
    sup.reconcile().await;
    assert_eq!(sup.state().await.moves, 800);
    assert_eq!(t.status_of("node1").await, "offline");
    assert_eq!(t.running_on("node1").await, 0);
    for i in 2..=5 {
        assert_eq!(t.running_on(&format!("node{i}")).await, 1000, "node{i} filled exactly to its limit");
    }
    let after: HashMap<i64, _> = t.monitors().await.into_iter().map(|m| (m.0, m)).collect();
    let rows = ledger(&t).await;
    assert_eq!(rows.len(), 800);
    for (monitor, from, to, reason, open) in &rows {
        let m = &after[monitor];
        assert_eq!(m.1.as_deref(), Some("node1"), "only node1's monitors move");
        assert_eq!(from.as_deref(), Some("node1"));
        assert_eq!(m.2.as_deref(), Some(to.as_str()), "ledger row names where monitor {monitor} went");
        assert_eq!((reason.as_str(), *open), ("failover", true));
    }
    for m in &before {
        if m.1.as_deref() != Some("node1") {
            assert_eq!(after[&m.0].2, None, "monitor {} of another node stays home", m.0);
        }
    }
    let table = sup.routing.load();
    assert!(!table.node("node1").unwrap().ready);
    assert_eq!(table.node("node2").unwrap().monitor_count, 1000);
    assert_eq!(table.monitors.len(), 4000);
    assert!(table.monitors.values().all(|&i| table.nodes[i].id != "node1"));
    let events = t.rows("SELECT kind, node_id, outcome FROM kc_event_log ORDER BY id", 3).await;
    let s = |x: &str| Some(x.to_string());
    assert_eq!(events, vec![vec![s("node_down"), s("node1"), s("committed")], vec![s("failover"), s("node1"), s("committed")]]);

    sup.transition("node1", Down, Up).await;
    sup.reconcile().await;
    assert_eq!(sup.state().await.moves, 800, "nothing returns during the hold-down");
    assert_eq!(t.status_of("node1").await, "online");
    sup.clock.advance(HOLD_DOWN);
    let summary = sup.reconcile().await;
    assert_eq!((summary.reverted, summary.displaced), (800, 0));
    assert_eq!(t.monitors().await, before, "every monitor is back home");
    let rows = ledger(&t).await;
    assert_eq!(rows.len(), 800);
    assert!(rows.iter().all(|r| !r.4), "every failover row is closed");
    assert_eq!(sup.routing.load().node("node1").unwrap().monitor_count, 800);
    let generation = sup.routing.load().generation;
    assert!(!sup.reconcile().await.wrote, "a settled cluster writes nothing");
    assert_eq!(sup.routing.load().generation, generation, "nothing changed, nothing published");
    t.drop_db().await;
}

async fn a_manual_override_survives_a_revert(t: TestDb) {
    let sup = Supervisor::settled(&t, 3, 4).await;
    // monitor 1 (home node1) was moved to node3 by hand; monitor 5 (home node2) to node1
    t.exec("UPDATE monitor SET assigned_node = 'node3' WHERE id = 1").await;
    t.exec("UPDATE monitor SET assigned_node = 'node1' WHERE id = 5").await;
    t.exec(
        "INSERT INTO kc_move_ledger (monitor_id, from_node, to_node, reason, created_at) VALUES \
         (1, 'node1', 'node3', 'manual', '2026-11-01 00:00:00'), (5, 'node2', 'node1', 'manual', '2026-11-01 00:00:00')",
    )
    .await;
    sup.transition("node1", Up, Down).await;
    sup.reconcile().await;
    let moved: HashMap<i64, Option<String>> = t.monitors().await.into_iter().map(|m| (m.0, m.2)).collect();
    assert_eq!(moved[&1].as_deref(), Some("node3"), "not on node1, so not moved");
    assert_ne!(moved[&5].as_deref(), Some("node1"), "monitor 5 left the down node");

    sup.transition("node1", Down, Up).await;
    sup.clock.advance(HOLD_DOWN);
    sup.reconcile().await;
    let now: HashMap<i64, Option<String>> = t.monitors().await.into_iter().map(|m| (m.0, m.2)).collect();
    assert_eq!(now[&1].as_deref(), Some("node3"), "the manual override of monitor 1 survives");
    assert_eq!(now[&5].as_deref(), Some("node1"), "monitor 5 returns to its manual override");
    for id in [2, 3, 4] {
        assert_eq!(now[&id], None, "monitor {id} is home again");
    }
    let manual_open = ledger(&t).await.into_iter().filter(|r| r.3 == "manual" && r.4).count();
    assert_eq!(manual_open, 2, "manual rows are never closed by a revert");
    t.drop_db().await;
}

/// Everything a decision could have written.
async fn footprint(t: &TestDb) -> (i64, i64, Vec<Vec<Option<String>>>, Vec<(i64, Option<String>, Option<String>, bool)>) {
    (
        t.count("SELECT COUNT(*) FROM kc_event_log").await,
        t.count("SELECT COUNT(*) FROM kc_move_ledger WHERE undone_at IS NULL").await,
        t.rows("SELECT node_id, status, CAST(last_seen AS CHAR) FROM node ORDER BY node_id", 3).await,
        t.monitors().await,
    )
}

async fn a_restart_of_the_supervisor_on_a_settled_cluster_writes_nothing(t: TestDb) {
    let sup = Supervisor::settled(&t, 3, 50).await;
    sup.transition("node2", Up, Down).await;
    sup.reconcile().await;
    sup.transition("node2", Down, Up).await;
    sup.clock.advance(HOLD_DOWN);
    sup.reconcile().await;
    sup.addr.send(Shutdown).await.unwrap();
    let before = footprint(&t).await;
    let sup = Supervisor::start(&t, Rc::new(SilentProbe), &[]);
    sup.up_all(3).await;
    sup.clock.advance(Duration::from_secs(3600));
    assert!(!sup.reconcile().await.wrote);
    assert_eq!(footprint(&t).await, before);
    t.drop_db().await;
}

async fn a_restart_while_monitors_are_failed_over_returns_them_only_after_the_hold_down(t: TestDb) {
    let sup = Supervisor::settled(&t, 3, 20).await;
    sup.transition("node1", Up, Down).await;
    sup.reconcile().await;
    sup.addr.send(Shutdown).await.unwrap();
    let sup = Supervisor::start(&t, Rc::new(SilentProbe), &[]);
    sup.reconcile().await;
    for i in 1..=3 {
        sup.transition(&format!("node{i}"), Unknown, Up).await;
    }
    sup.reconcile().await;
    assert_eq!(t.status_of("node1").await, "online");
    assert_eq!((sup.state().await.moves, t.running_on("node1").await), (0, 0), "no return before the hold-down");
    sup.clock.advance(HOLD_DOWN);
    assert_eq!(sup.reconcile().await.reverted, 20);
    assert_eq!(t.running_on("node1").await, 20);
    t.drop_db().await;
}

async fn nothing_moves_until_every_node_has_had_its_first_verdict(t: TestDb) {
    t.migrate().await;
    for i in 1..=3 {
        t.add_node(&format!("node{i}"), "127.0.0.1:9").await;
        t.add_monitors(&format!("node{i}"), 10).await;
    }
    let sup = Supervisor::start(&t, Rc::new(SilentProbe), &[]);
    sup.reconcile().await;
    sup.transition("node1", Unknown, Down).await;
    sup.transition("node2", Unknown, Up).await;
    let summary = sup.reconcile().await;
    assert!(!summary.wrote);
    assert!(!sup.state().await.started);
    assert_eq!((t.status_of("node1").await, t.running_on("node1").await), ("online".into(), 10));
    sup.transition("node3", Unknown, Up).await;
    sup.reconcile().await;
    assert_eq!(sup.state().await.moves, 10);
    assert_eq!((t.status_of("node1").await, t.running_on("node1").await), ("offline".into(), 0));
    t.drop_db().await;
}

async fn a_recovery_that_fails_again_restarts_the_hold_down(t: TestDb) {
    let sup = Supervisor::settled(&t, 2, 10).await;
    sup.transition("node1", Up, Down).await;
    sup.reconcile().await;
    sup.transition("node1", Down, Up).await;
    sup.clock.advance(Duration::from_secs(8));
    sup.transition("node1", Up, Down).await;
    sup.transition("node1", Down, Up).await;
    sup.clock.advance(Duration::from_secs(8));
    assert_eq!(sup.reconcile().await.reverted, 0, "8 s of the new hold-down have passed, not 10");
    sup.clock.advance(Duration::from_secs(2));
    assert_eq!(sup.reconcile().await.reverted, 10);
    t.drop_db().await;
}

/// Feeds a probe pattern through the real health state machine for `hours` of
/// simulated time, sends the transitions it produces, runs a decision every 10 s
/// and checks after each that no active monitor sits on node1 while it is down.
/// Returns the number of moves made.
async fn flap(t: &TestDb, sup: &Supervisor, pattern: &[bool], hours: u64) -> u64 {
    let mut machine = HealthMachine::new(3, 3, 2);
    machine.observe(Probed::Healthy);
    machine.observe(Probed::Healthy);
    let (mut elapsed, mut next_tick, mut step) = (Duration::ZERO, Duration::from_secs(10), 0);
    while elapsed < Duration::from_secs(hours * 3600) {
        let probed = if pattern[step % pattern.len()] { Probed::Healthy } else { Probed::Failed };
        if let Some(tr) = machine.observe(probed) {
            sup.transition("node1", tr.from, tr.to).await;
        }
        step += 1;
        let gap = if machine.state() == Down { Duration::from_secs(5) } else { Duration::from_secs(2) };
        sup.clock.advance(gap);
        elapsed += gap;
        if elapsed >= next_tick {
            next_tick += Duration::from_secs(10);
            sup.reconcile().await;
            if machine.state() == Down {
                assert_eq!(t.running_on("node1").await, 0, "monitors on down node1 at {elapsed:?}");
            }
        }
    }
    sup.state().await.moves
}

async fn a_node_alternating_on_every_probe_for_hours_moves_nothing(t: TestDb) {
    let sup = Supervisor::settled(&t, 3, 30).await;
    let moves = flap(&t, &sup, &[false, true], 2).await;
    assert_eq!(moves, 0);
    assert_eq!(t.running_on("node1").await, 30);
    t.drop_db().await;
}

async fn a_node_flapping_for_an_hour_moves_a_bounded_number_of_monitors(t: TestDb) {
    let sup = Supervisor::settled(&t, 3, 30).await;
    // down after 3 failures, up after 2 successes, then healthy long enough (20 s)
    // to pass the hold-down: undamped, each 38 s cycle would move 60 monitors
    let mut pattern = vec![false, false, false, true, true];
    pattern.extend([true; 10]);
    let moves = flap(&t, &sup, &pattern, 1).await;
    let state = sup.state().await;
    let node1 = state.nodes.iter().find(|n| n.node_id == "node1").unwrap();
    assert!(node1.damped, "node1 is damped while it flaps");
    // two failovers and two returns before damping, then one last failover
    assert!(moves <= 5 * 30, "{moves} moves");
    assert!(t.count("SELECT COUNT(*) FROM kc_move_ledger").await <= 3 * 30);
    t.drop_db().await;
}

async fn a_failed_decision_rolls_back_claims_nothing_and_is_retried(t: TestDb) {
    let sup = Supervisor::settled(&t, 3, 10).await;
    let before = t.monitors().await;
    t.exec("ALTER TABLE kc_move_ledger RENAME TO kc_move_ledger_away").await;
    sup.transition("node1", Up, Down).await;
    let error = sup.addr.send(kuma_cluster::supervisor::actors::cluster::Reconcile).await.unwrap().unwrap_err();
    assert!(error.contains("kc_move_ledger"), "{error}");
    assert_eq!(t.monitors().await, before, "the monitor updates were rolled back");
    assert_eq!(t.status_of("node1").await, "online");
    let state = sup.state().await;
    assert!(state.failed_decisions >= 1 && state.last_error.is_some() && state.retry_in_ms.is_some());
    let table = sup.routing.load();
    assert!(!table.node("node1").unwrap().ready, "traffic leaves the dead node without the database");
    assert_eq!(table.node("node1").unwrap().monitor_count, 10, "no uncommitted move is claimed");

    t.exec("ALTER TABLE kc_move_ledger_away RENAME TO kc_move_ledger").await;
    // a retry after the back-off may already have committed it; either way, once
    sup.reconcile().await;
    assert_eq!(sup.state().await.moves, 10);
    assert_eq!(t.running_on("node1").await, 0);
    assert!(sup.state().await.retry_in_ms.is_none());
    common::eventually(Duration::from_secs(10), "the failure is in the event log", || async {
        t.count("SELECT COUNT(*) FROM kc_event_log WHERE kind = 'decision' AND outcome = 'failed'").await >= 1
    })
    .await;
    t.drop_db().await;
}

async fn nodes_added_or_removed_in_the_table_start_and_stop_supervision(t: TestDb) {
    let sup = Supervisor::settled(&t, 2, 5).await;
    t.add_node("node3", "127.0.0.1:9").await;
    t.add_monitors("node3", 5).await;
    sup.reconcile().await;
    let state = sup.state().await;
    let node3 = state.nodes.iter().find(|n| n.node_id == "node3").expect("node3 is supervised");
    assert_eq!(node3.health, Unknown);
    assert_eq!(t.running_on("node3").await, 5, "a node awaiting its verdict keeps its monitors");

    t.exec("DELETE FROM node WHERE node_id = 'node2'").await;
    let summary = sup.reconcile().await;
    assert_eq!(summary.displaced, 5);
    assert!(sup.state().await.nodes.iter().all(|n| n.node_id != "node2"));
    assert_eq!(t.running_on("node1").await, 10, "the only ready node takes node2's monitors");
    let rows = ledger(&t).await;
    assert!(rows.iter().all(|r| r.1.as_deref() == Some("node2") && r.3 == "failover"));
    sup.transition("node3", Unknown, Up).await;
    assert!(!sup.reconcile().await.wrote);
    t.drop_db().await;
}

async fn static_nodes_from_config_are_registered_and_supervised(t: TestDb) {
    t.migrate().await;
    t.add_node("node1", "127.0.0.1:9").await;
    let mut settings = Supervisor::quiet_settings(&[]);
    settings.nodes.static_nodes =
        vec![kuma_cluster::config::StaticNode { id: "edge".into(), host: "127.0.0.1:9".into(), name: Some("Edge".into()) }];
    let sup = Supervisor::with_settings(&t, Rc::new(SilentProbe), settings);
    sup.reconcile().await;
    assert_eq!(t.rows("SELECT node_name, host FROM node WHERE node_id = 'edge'", 2).await, vec![vec![Some("Edge".into()), Some("127.0.0.1:9".into())]]);
    assert_eq!(sup.state().await.nodes.len(), 2);
    sup.transition("node1", Unknown, Up).await;
    sup.transition("edge", Unknown, Down).await;
    sup.reconcile().await;
    assert_eq!(t.status_of("edge").await, "offline");
    t.drop_db().await;
}

async fn setup_is_complete_once_kuma_has_a_user(t: TestDb) {
    t.exec("CREATE TABLE user (id INTEGER PRIMARY KEY, username VARCHAR(255))").await;
    let sup = Supervisor::settled(&t, 1, 1).await;
    let table = sup.routing.load();
    assert!(!table.setup_complete);
    assert_eq!(table.primary.as_deref(), Some("node1"));
    t.exec("INSERT INTO user (id, username) VALUES (1, 'admin')").await;
    sup.reconcile().await;
    assert!(sup.routing.load().setup_complete);
    t.drop_db().await;
}

async fn with_every_node_down_nothing_moves_and_the_stranded_monitors_are_reported(t: TestDb) {
    let sup = Supervisor::settled(&t, 2, 5).await;
    sup.transition("node1", Up, Down).await;
    sup.transition("node2", Up, Down).await;
    sup.reconcile().await;
    let state = sup.state().await;
    // node1's monitors went to node2 while it was up; then nothing was ready
    assert_eq!((state.stranded, state.moves), (10, 5));
    assert_eq!((t.running_on("node1").await, t.running_on("node2").await), (0, 10));
    let events = t.count("SELECT COUNT(*) FROM kc_event_log").await;
    for _ in 0..5 {
        sup.clock.advance(Duration::from_secs(10));
        assert!(!sup.reconcile().await.wrote, "no write loop while nothing is ready");
    }
    assert_eq!(t.count("SELECT COUNT(*) FROM kc_event_log").await, events);
    sup.transition("node1", Down, Up).await;
    sup.reconcile().await;
    assert_eq!(sup.state().await.stranded, 0);
    assert_eq!(t.running_on("node1").await, 10, "the first node back takes everything");
    t.drop_db().await;
}

async fn a_ledger_row_with_an_unknown_reason_is_left_alone_and_blocks_nothing(t: TestDb) {
    let sup = Supervisor::settled(&t, 2, 3).await;
    t.exec(
        "INSERT INTO kc_move_ledger (monitor_id, from_node, to_node, reason, created_at) \
         VALUES (1, 'node1', 'node2', 'teleport', '2026-11-01 00:00:00')",
    )
    .await;
    sup.transition("node1", Up, Down).await;
    sup.reconcile().await;
    let state = sup.state().await;
    assert_eq!((state.unreadable_moves, state.failed_decisions), (1, 0));
    assert_eq!(t.running_on("node1").await, 0, "failover still happens");
    assert_eq!(t.count("SELECT COUNT(*) FROM kc_move_ledger WHERE reason = 'teleport' AND undone_at IS NULL").await, 1);
    t.drop_db().await;
}

async fn shutdown_lets_the_decision_in_flight_commit(t: TestDb) {
    let sup = Supervisor::settled(&t, 3, 300).await;
    sup.transition("node1", Up, Down).await;
    sup.addr.send(Shutdown).await.unwrap();
    assert_eq!(t.running_on("node1").await, 0, "the failover committed before shutdown returned");
    assert_eq!(t.count("SELECT COUNT(*) FROM kc_move_ledger").await, 300);
    let refused = sup.addr.send(kuma_cluster::supervisor::actors::cluster::Reconcile).await.unwrap();
    assert_eq!(refused, Err("shutting down".to_string()));
    t.drop_db().await;
}

/// The transition arrives while a decision runs and a refused command waits
/// behind it; the command's decision writes nothing, so the transition gets a
/// decision of its own at once. The periodic tick is an hour away: without
/// that, node1's monitors would stay on it.
async fn a_transition_during_a_refused_command_is_decided_without_waiting_for_a_tick(t: TestDb) {
    use kuma_cluster::core::model::AdminState;
    use kuma_cluster::core::reconcile::{Command, Refusal};
    use kuma_cluster::supervisor::actors::cluster::{Apply, ApplyError, Reconcile};
    let sup = Supervisor::settled(&t, 3, 10).await;
    // sent back to back, so they sit in the mailbox in this order
    let first = sup.addr.send(Reconcile);
    let refused = sup.addr.send(Apply(Command::SetAdmin { node: "nowhere".into(), state: Some(AdminState::Drain) }));
    let down = sup.addr.send(kuma_cluster::supervisor::actors::node::NodeTransition {
        node_id: "node1".into(),
        transition: kuma_cluster::core::health::Transition { from: Up, to: Down, weak: false },
        last_error: None,
    });
    first.await.unwrap().unwrap();
    assert_eq!(refused.await.unwrap(), Err(ApplyError::Refused(Refusal::UnknownNode("nowhere".into()))));
    down.await.unwrap();
    common::eventually(Duration::from_secs(30), "node1's monitors leave it", || async { t.running_on("node1").await == 0 })
        .await;
    t.drop_db().await;
}

/// A node that restarts writes `status = 'online'` into its own row while
/// kuma-cluster still holds it down: the status is put back, and the event
/// log does not tell of the node going down a second time.
async fn a_status_the_node_rewrites_at_restart_is_put_back_without_a_second_node_down(t: TestDb) {
    let sup = Supervisor::settled(&t, 3, 5).await;
    sup.transition("node1", Up, Down).await;
    sup.reconcile().await;
    assert_eq!(t.status_of("node1").await, "offline");
    t.exec("UPDATE node SET status = 'online' WHERE node_id = 'node1'").await;
    sup.reconcile().await;
    assert_eq!(t.status_of("node1").await, "offline", "the status follows kuma-cluster's verdict");
    let count = |kind: &str| format!("SELECT COUNT(*) FROM kc_event_log WHERE node_id = 'node1' AND kind = '{kind}'");
    assert_eq!(t.count(&count("node_down")).await, 1, "one death, one node_down");
    assert_eq!(t.count(&count("node_status_restored")).await, 1);
    t.drop_db().await;
}

async fn node_ids_compare_the_way_the_database_compares_them(t: TestDb) {
    let sup = Supervisor::settled(&t, 2, 2).await;
    // monitor 5 is homed on 'NODE1 ', monitor 6 overridden to 'Node2'
    t.exec("INSERT INTO monitor (name, active, node_id) VALUES ('upper', 1, 'NODE1 ')").await;
    t.exec("INSERT INTO monitor (name, active, node_id, assigned_node) VALUES ('override', 1, 'node1', 'Node2')").await;
    let summary = sup.reconcile().await;
    let table = sup.routing.load();
    if t.backend() == sea_orm::DbBackend::Sqlite {
        // SQLite compares bytes: no node runs them, so both are placed
        assert_eq!(summary.displaced, 2);
        assert_eq!(t.running_on("NODE1 ").await + t.running_on("Node2").await, 0);
    } else {
        // MariaDB's default collation ignores case and trailing spaces: node1 and node2 run them
        assert!(!summary.wrote, "nothing moves: {summary:?}");
        assert_eq!(ledger(&t).await.len(), 0);
        assert_eq!(table.nodes[table.monitors[&5]].id, "node1");
        assert_eq!(table.nodes[table.monitors[&6]].id, "node2");
        assert_eq!(table.node("node1").unwrap().monitor_count, 3);
    }
    t.drop_db().await;
}

async fn empty_strings_are_values_and_a_blank_node_id_is_never_a_target(t: TestDb) {
    let sup = Supervisor::settled(&t, 2, 2).await;
    // a node row no node can own, three monitors homed on it, one overridden to ''
    t.exec("INSERT INTO node (node_id, node_name, host, status, active, is_primary) VALUES ('', 'blank', '127.0.0.1:9', 'online', 1, 0)").await;
    t.exec("INSERT INTO monitor (name, active, node_id) VALUES ('b1', 1, ''), ('b2', 1, ''), ('b3', 1, '')").await;
    t.exec("UPDATE monitor SET assigned_node = '' WHERE id = 1").await;
    let first = sup.reconcile().await;
    assert_eq!(first.displaced, 4, "the three on '' and the one overridden to '' run nowhere: placed");
    let state = sup.state().await;
    assert_eq!(state.unusable_nodes, vec![String::new()]);
    assert_eq!(state.nodes.len(), 2, "'' is not supervised");
    for m in t.monitors().await {
        let on = m.2.clone().or(m.1.clone()).unwrap();
        assert!(on == "node1" || on == "node2", "monitor {} runs on {on:?}", m.0);
    }
    let rows_after_first = ledger(&t).await.len();
    for _ in 0..5 {
        sup.clock.advance(Duration::from_secs(10));
        let again = sup.reconcile().await;
        assert_eq!(again.moves, 0, "nothing moves again: {again:?}");
    }
    assert_eq!(ledger(&t).await.len(), rows_after_first, "no ledger churn");
    assert!(ledger(&t).await.iter().all(|r| !r.4), "rows from '' cannot return: closed");
    let reported = t.count("SELECT COUNT(*) FROM kc_event_log WHERE kind = 'node_id_unusable'").await;
    assert_eq!(reported, 1, "the event log is told once");
    t.drop_db().await;
}

async fn monitors_with_neither_home_nor_override_stay_unassigned_and_are_counted(t: TestDb) {
    let sup = Supervisor::settled(&t, 2, 2).await;
    t.exec("INSERT INTO monitor (name, active) VALUES ('na1', 1), ('na2', 1), ('paused-na', 0)").await;
    let summary = sup.reconcile().await;
    assert_eq!(summary.moves, 0);
    assert_eq!(sup.state().await.unassigned, 2, "active ones only");
    assert_eq!(t.count("SELECT COUNT(*) FROM monitor WHERE node_id IS NULL AND assigned_node IS NULL").await, 3);
    sup.addr.send(Shutdown).await.unwrap();
    // placing them is the operator's opt-in
    let sup = Supervisor::start(&t, Rc::new(SilentProbe), &[("KUMA_CLUSTER__PLACEMENT__PLACE_UNASSIGNED", "true")]);
    sup.reconcile().await;
    sup.transition("node1", Unknown, Up).await;
    sup.transition("node2", Unknown, Up).await;
    sup.reconcile().await;
    assert_eq!(sup.state().await.unassigned, 0);
    assert_eq!(t.count("SELECT COUNT(*) FROM monitor WHERE node_id IS NULL AND assigned_node IS NULL").await, 1, "the paused one stays");
    assert_eq!(t.running_on("node1").await + t.running_on("node2").await, 6);
    t.drop_db().await;
}

async fn superseded_operator_rows_and_rows_of_deleted_monitors_and_nodes_are_closed(t: TestDb) {
    let sup = Supervisor::settled(&t, 3, 2).await;
    t.exec("UPDATE monitor SET assigned_node = 'node3' WHERE id = 1").await;
    t.exec("UPDATE monitor SET assigned_node = 'node2' WHERE id = 5").await;
    t.exec(
        "INSERT INTO kc_move_ledger (monitor_id, from_node, to_node, reason, created_at) VALUES \
         (1, 'node1', 'node2', 'manual', '2026-11-01 00:00:00'), (1, 'node2', 'node3', 'rebalance', '2026-11-02 00:00:00'), \
         (2, 'node1', 'node3', 'manual', '2026-11-01 00:00:00'), (5, 'gone', 'node2', 'failover', '2026-11-01 00:00:00')",
    )
    .await;
    t.exec("DELETE FROM monitor WHERE id = 2").await;
    let summary = sup.reconcile().await;
    assert_eq!(summary.ledger_closed, 3, "{summary:?}");
    let open: Vec<(i64, String)> = ledger(&t).await.into_iter().filter(|r| r.4).map(|r| (r.0, r.3)).collect();
    assert_eq!(open, vec![(1, "rebalance".to_string())], "only the row that says where monitor 1 runs stays open");
    let gone = t.rows("SELECT node_id, outcome FROM kc_event_log WHERE kind = 'origin_gone'", 2).await;
    assert_eq!(gone, vec![vec![Some("gone".to_string()), Some("committed".to_string())]]);
    assert_eq!(t.running_on("node2").await, 3, "monitor 5 stays where it runs");
    t.drop_db().await;
}

on_both_backends!(
    node_ids_compare_the_way_the_database_compares_them,
    empty_strings_are_values_and_a_blank_node_id_is_never_a_target,
    monitors_with_neither_home_nor_override_stay_unassigned_and_are_counted,
    superseded_operator_rows_and_rows_of_deleted_monitors_and_nodes_are_closed,
    a_status_the_node_rewrites_at_restart_is_put_back_without_a_second_node_down,
    a_transition_during_a_refused_command_is_decided_without_waiting_for_a_tick,
    shutdown_lets_the_decision_in_flight_commit,
    with_every_node_down_nothing_moves_and_the_stranded_monitors_are_reported,
    a_ledger_row_with_an_unknown_reason_is_left_alone_and_blocks_nothing,
    failover_and_revert_of_4000_monitors_across_5_nodes_are_recorded_row_by_row,
    a_manual_override_survives_a_revert,
    a_restart_of_the_supervisor_on_a_settled_cluster_writes_nothing,
    a_restart_while_monitors_are_failed_over_returns_them_only_after_the_hold_down,
    nothing_moves_until_every_node_has_had_its_first_verdict,
    a_recovery_that_fails_again_restarts_the_hold_down,
    a_node_alternating_on_every_probe_for_hours_moves_nothing,
    a_node_flapping_for_an_hour_moves_a_bounded_number_of_monitors,
    a_failed_decision_rolls_back_claims_nothing_and_is_retried,
    nodes_added_or_removed_in_the_table_start_and_stop_supervision,
    static_nodes_from_config_are_registered_and_supervised,
    setup_is_complete_once_kuma_has_a_user,
);

#[test]
fn a_suspect_reported_by_the_proxy_is_probed_at_once() {
    common::run(async {
        let t = TestDb::sqlite().await;
        t.migrate().await;
        t.add_node("node1", "127.0.0.1:9").await;
        let probe = common::ScriptedProbe::new([common::Scripted::Healthy]);
        let sup = Supervisor::start(&t, Rc::new(probe.clone()), &[]);
        sup.reconcile().await;
        common::eventually(Duration::from_secs(10), "the first probe", || async { probe.calls.borrow().len() == 1 }).await;
        // reports within 250 ms of the last probe add none
        actix_rt::time::sleep(Duration::from_millis(300)).await;
        sup.reports.send(kuma_cluster::supervisor::reports::FrontReport::Unreachable("node1".into())).await.unwrap();
        common::eventually(Duration::from_secs(10), "a probe right after the report", || async {
            probe.calls.borrow().len() == 2
        })
        .await;
    });
}
