//! The operations API through real HTTP over a supervised cluster: auth on every
//! protected endpoint, the status reads, paging and filters, redirects, refusals
//! and the network allow-list.

mod common;

use actix_web::http::StatusCode;
use common::{Supervisor, TestDb};
use kuma_cluster::front::api::auth::Access;
use kuma_cluster::front::api::Ops;
use kuma_cluster::core::health::Health::{Down, Unknown, Up};
use kuma_cluster::front::proxy::Front;
use serde_json::{json, Value};
use std::sync::Arc;

const TOKEN: &str = "first-token-0123456789";
const SECOND: &str = "second-token-0123456789";

const PROTECTED: [&str; 12] = [
    "/lb/nodes",
    "/lb/nodes/node1",
    "/lb/rebalancing-status",
    "/lb/health",
    "/lb/capacity",
    "/lb/node-status",
    "/lb/health-status",
    "/lb/load-balancer-status",
    "/lb/setup-status",
    "/lb/system-status",
    "/lb/events",
    "/lb/moves",
];

struct Stack {
    t: TestDb,
    sup: Supervisor,
    base: String,
    client: awc::Client,
}

/// Three settled nodes with 10 monitors each, behind the whole HTTP app.
async fn stack(t: TestDb, api: &[(&str, &str)]) -> Stack {
    let sup = Supervisor::settled(&t, 3, 10).await;
    let tokens = format!("{TOKEN},{SECOND}");
    let mut overrides = vec![
        ("KUMA_CLUSTER__API__TOKENS", tokens.as_str()),
        ("KUMA_CLUSTER__NODES__AUTH_HEADER", "Bearer node-secret-value"),
    ];
    overrides.extend_from_slice(api);
    let settings = common::settings(&overrides);
    let ops = Ops {
        cluster: sup.addr.clone(),
        reads: kuma_cluster::front::api::status::Reads::new(t.db.clone()),
        routing: sup.routing.clone(),
        access: Arc::new(Access::new(&settings.api)),
        metrics: sup.metrics.clone(),
        vitals: sup.vitals.clone(),
        stale_after: std::time::Duration::from_secs(3600),
    };
    let front = Front::new(sup.routing.clone(), &settings, sup.reports.clone(), sup.metrics.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    actix_rt::spawn(kuma_cluster::front::server::start(listener, 1, front, Some(ops), |_| {}).unwrap());
    Stack { t, sup, base, client: awc::Client::builder().disable_redirects().finish() }
}

impl Stack {
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let method = actix_web::http::Method::from_bytes(method.as_bytes()).unwrap();
        let request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .insert_header(("authorization", format!("Bearer {TOKEN}")));
        let mut response = match body {
            Some(body) => request.send_json(&body).await.unwrap(),
            None => request.send().await.unwrap(),
        };
        let bytes = response.body().limit(1 << 22).await.unwrap();
        (response.status(), serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Option<Value>, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.client.post(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.insert_header(("authorization", format!("Bearer {token}")));
        }
        let mut response = match body {
            Some(body) => request.send_json(&body).await.unwrap(),
            None => request.send().await.unwrap(),
        };
        let bytes = response.body().limit(1 << 22).await.unwrap();
        (response.status(), serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Everything an action could write.
    async fn footprint(&self) -> (i64, i64, i64, Vec<(i64, Option<String>, Option<String>, bool)>) {
        (
            self.t.count("SELECT COUNT(*) FROM kc_event_log").await,
            self.t.count("SELECT COUNT(*) FROM kc_move_ledger").await,
            self.t.count("SELECT COUNT(*) FROM kc_node_admin").await,
            self.t.monitors().await,
        )
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.insert_header(("authorization", format!("Bearer {token}")));
        }
        let mut response = request.send().await.unwrap();
        let body = response.body().limit(1 << 22).await.unwrap();
        (response.status(), serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

async fn every_protected_endpoint_refuses_a_missing_or_wrong_token_with_401(t: TestDb) {
    let s = stack(t, &[]).await;
    for path in PROTECTED {
        for token in [None, Some("wrong-token-0123456789"), Some("first-token-012345678")] {
            let (status, body) = s.get(path, token).await;
            assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")), "{path}");
        }
        for token in [TOKEN, SECOND] {
            let (status, _) = s.get(path, Some(token)).await;
            assert_eq!(status, StatusCode::OK, "{path} with a valid token");
        }
    }
    s.t.drop_db().await;
}

async fn events_and_moves_are_paged_newest_first_and_filtered(t: TestDb) {
    let s = stack(t, &[]).await;
    s.sup.transition("node1", Up, Down).await;
    s.sup.reconcile().await;
    let (_, events) = s.get("/lb/events?per_page=1", Some(TOKEN)).await;
    assert_eq!((events["total"].as_u64(), events["per_page"].as_u64()), (Some(2), Some(1)));
    assert_eq!(events["items"][0]["kind"], "failover", "newest first");
    assert_eq!(events["items"][0]["detail"]["moved"], 10);
    let (_, older) = s.get("/lb/events?per_page=1&page=2", Some(TOKEN)).await;
    assert_eq!(older["items"][0]["kind"], "node_down");

    let (_, moves) = s.get("/lb/moves?node=node1&reason=failover&per_page=5", Some(TOKEN)).await;
    assert_eq!((moves["total"].as_u64(), moves["items"].as_array().unwrap().len()), (Some(10), 5));
    assert_eq!(moves["items"][0]["from_node"], "node1");
    assert_eq!(moves["items"][0]["undone_at"], Value::Null);
    let (_, to_node2) = s.get("/lb/moves?node=node2", Some(TOKEN)).await;
    assert_eq!(to_node2["total"].as_u64(), Some(5), "moves to a node count for it");
    let (_, manual) = s.get("/lb/moves?reason=manual", Some(TOKEN)).await;
    assert_eq!(manual["total"].as_u64(), Some(0));
    for bad in ["/lb/moves?reason=teleport", "/lb/moves?per_page=0", "/lb/moves?per_page=501", "/lb/moves?page=0", "/lb/events?color=red", "/lb/events?node=node1", "/lb/moves?page=abc"] {
        let (status, body) = s.get(bad, Some(TOKEN)).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_query")), "{bad}");
        assert!(body["detail"].is_string());
    }
    s.t.drop_db().await;
}

async fn draining_moves_a_nodes_monitors_away_until_it_is_undrained_even_through_recovery(t: TestDb) {
    let s = stack(t, &[]).await;
    let (status, body) = s.post("/lb/nodes/node1/drain", None, Some(TOKEN)).await;
    assert_eq!((status, body["state"].as_str()), (StatusCode::OK, Some("drain")), "{body}");
    assert_eq!(body["summary"]["displaced"], 10);
    assert_eq!(s.t.running_on("node1").await, 0);
    let table = s.sup.routing.load();
    let node1 = table.node("node1").unwrap();
    assert!(!node1.ready && !node1.enabled, "no new sessions go to a drained node");
    let (_, moves) = s.get("/lb/moves?reason=drain", Some(TOKEN)).await;
    assert_eq!(moves["total"], 10);

    // a failure and a recovery of the drained node bring nothing back
    s.sup.transition("node1", Up, Down).await;
    s.sup.transition("node1", Down, Up).await;
    s.sup.clock.advance(std::time::Duration::from_secs(60));
    s.sup.reconcile().await;
    assert_eq!(s.t.running_on("node1").await, 0, "drain holds through failover and recovery");
    let before = s.footprint().await;
    let (status, _) = s.post("/lb/nodes/node1/drain", None, Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "draining again is no error");
    assert_eq!(s.footprint().await, before, "draining again changes nothing");

    let (status, body) = s.post("/lb/nodes/node1/undrain", None, Some(TOKEN)).await;
    assert_eq!((status, body["state"].as_str()), (StatusCode::OK, Some("in_service")));
    assert_eq!(body["summary"]["reverted"], 10, "a settled node gets its monitors back at once");
    assert_eq!(s.t.running_on("node1").await, 10);
    let (_, events) = s.get("/lb/events?per_page=100", Some(TOKEN)).await;
    let kinds: Vec<&str> = events["items"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for kind in ["drain", "undrain", "revert"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    s.t.drop_db().await;
}

async fn a_pinned_manual_move_is_recorded_and_returns_after_a_failover(t: TestDb) {
    let s = stack(t, &[]).await;
    let body = serde_json::json!({ "monitor_ids": [1, 2], "to_node": "node3", "pin": true });
    let (status, moved) = s.post("/lb/monitors/move", Some(body), Some(TOKEN)).await;
    assert_eq!((status, moved["moved"].as_u64()), (StatusCode::OK, Some(2)), "{moved}");
    let (_, ledger) = s.get("/lb/moves?reason=manual", Some(TOKEN)).await;
    assert_eq!(ledger["total"], 2);
    assert_eq!((ledger["items"][0]["pinned"].as_bool(), ledger["items"][0]["from_node"].as_str()), (Some(true), Some("node1")));
    assert_eq!(s.t.running_on("node3").await, 12);

    s.sup.transition("node3", Up, Down).await;
    s.sup.reconcile().await;
    assert_eq!(s.t.running_on("node3").await, 0);
    s.sup.transition("node3", Down, Up).await;
    s.sup.clock.advance(std::time::Duration::from_secs(10));
    s.sup.reconcile().await;
    let monitors = s.t.monitors().await;
    assert_eq!(monitors[0].2.as_deref(), Some("node3"), "the manual override is restored, not node1");
    assert_eq!(s.t.running_on("node3").await, 12);
    s.t.drop_db().await;
}

async fn refused_actions_answer_with_their_reason_and_change_nothing(t: TestDb) {
    let s = stack(t, &[]).await;
    s.sup.transition("node2", Up, Down).await;
    s.sup.reconcile().await;
    let before = s.footprint().await;
    let cases: Vec<(&str, Option<Value>, StatusCode, &str)> = vec![
        ("/lb/monitors/move", Some(serde_json::json!({ "monitor_ids": [1], "to_node": "node9" })), StatusCode::NOT_FOUND, "unknown_node"),
        ("/lb/monitors/move", Some(serde_json::json!({ "monitor_ids": [1], "to_node": "node2" })), StatusCode::CONFLICT, "node_not_ready"),
        ("/lb/monitors/move", Some(serde_json::json!({ "monitor_ids": [1, 999], "to_node": "node3" })), StatusCode::NOT_FOUND, "unknown_monitor"),
        ("/lb/monitors/move", Some(serde_json::json!({ "monitor_ids": [], "to_node": "node3" })), StatusCode::BAD_REQUEST, "invalid_body"),
        ("/lb/monitors/move", Some(serde_json::json!({ "monitor_ids": [1], "to_node": "node3", "force": true })), StatusCode::BAD_REQUEST, "invalid_body"),
        ("/lb/monitors/move", Some(serde_json::json!({ "monitor_ids": "1", "to_node": "node3" })), StatusCode::BAD_REQUEST, "invalid_body"),
        ("/lb/nodes/node9/drain", None, StatusCode::NOT_FOUND, "unknown_node"),
        ("/lb/nodes/node3/undrain", None, StatusCode::CONFLICT, "node_in_service"),
    ];
    for (path, body, status, code) in cases {
        let (got, answer) = s.post(path, body.clone(), Some(TOKEN)).await;
        assert_eq!((got, answer["error"].as_str()), (status, Some(code)), "{path} {body:?}: {answer}");
        assert!(answer["detail"].is_string());
        assert_eq!(s.footprint().await, before, "{path} {body:?} changed something");
    }
    let response = s.client.post(format!("{}/lb/monitors/move", s.base))
        .insert_header(("authorization", format!("Bearer {TOKEN}")))
        .insert_header(("content-type", "application/json"))
        .send_body("{not json")
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(s.get("/lb/nodes/node1/drain", Some(TOKEN)).await.0, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(s.footprint().await, before);
    s.t.drop_db().await;
}

/// Adds an empty, ready node4 to the settled three-node stack.
async fn add_empty_node(s: &Stack) {
    s.t.add_node("node4", "127.0.0.1:9").await;
    s.sup.reconcile().await;
    s.sup.transition("node4", Unknown, Up).await;
    s.sup.reconcile().await;
}

async fn a_rebalance_dry_run_changes_nothing_and_the_applied_plan_evens_load_minimally(t: TestDb) {
    let s = stack(t, &[]).await;
    add_empty_node(&s).await;
    // monitor 1 is pinned where it is: it must not move
    let pin = serde_json::json!({ "monitor_ids": [1], "to_node": "node1", "pin": true });
    assert_eq!(s.post("/lb/monitors/move", Some(pin), Some(TOKEN)).await.0, StatusCode::OK);
    s.sup.pushes_done().await;
    let before = s.footprint().await;

    let (status, dry) = s.post("/lb/rebalance", Some(serde_json::json!({ "dry_run": true })), Some(TOKEN)).await;
    assert_eq!((status, dry["applied"].as_bool()), (StatusCode::OK, Some(false)), "{dry}");
    // 30 monitors over 4 nodes: 8, 8, 7, 7 needs exactly 7 moves
    assert_eq!((dry["rebalance"]["planned"].as_u64(), dry["rebalance"]["spread_before"].as_u64()), (Some(7), Some(10)));
    assert_eq!(dry["rebalance"]["spread_after"], 1);
    assert_eq!(dry["rebalance"]["moves"].as_array().unwrap().len(), 7);
    assert_eq!(s.footprint().await, before, "a dry run changes nothing");
    let (_, status_now) = s.get("/lb/rebalancing-status", Some(TOKEN)).await;
    assert_eq!((status_now["running"].as_bool(), status_now["last"]["dry_run"].as_bool()), (Some(false), Some(true)));

    let (status, applied) = s.post("/lb/rebalance", Some(serde_json::json!({ "dry_run": false, "max_moves": 100 })), Some(TOKEN)).await;
    assert_eq!((status, applied["rebalance"]["planned"].as_u64()), (StatusCode::OK, Some(7)));
    assert_eq!(s.t.running_on("node4").await, 7);
    assert_eq!(s.t.monitors().await[0].2.as_deref(), None, "the pinned monitor stayed at home on node1");
    let (_, ledger) = s.get("/lb/moves?reason=rebalance", Some(TOKEN)).await;
    assert_eq!(ledger["total"], 7);
    assert!(ledger["items"].as_array().unwrap().iter().all(|m| m["monitor_id"] != 1));

    let (_, again) = s.post("/lb/trigger-rebalancing", None, Some(TOKEN)).await;
    assert_eq!(again["rebalance"]["planned"], 0, "a balanced cluster moves nothing");
    let (_, last) = s.get("/lb/rebalancing-status", Some(TOKEN)).await;
    assert_eq!((last["last"]["dry_run"].as_bool(), last["last"]["moves"].as_u64()), (Some(false), Some(0)));
    s.t.drop_db().await;
}

async fn nodes_are_listed_created_updated_and_deleted_through_the_supervisor(t: TestDb) {
    let s = stack(t, &[]).await;
    let (status, list) = s.get("/lb/nodes", Some(TOKEN)).await;
    assert_eq!((status, list["nodes"].as_array().unwrap().len()), (StatusCode::OK, 3));
    let node1 = &list["nodes"][0];
    assert_eq!((node1["node_id"].as_str(), node1["is_primary"].as_bool(), node1["ready"].as_bool()), (Some("node1"), Some(true), Some(true)));
    assert_eq!((node1["monitor_count"].as_u64(), node1["admin_state"].clone()), (Some(10), Value::Null));

    let new = serde_json::json!({ "node_id": "node4", "host": "127.0.0.1:9", "is_primary": true });
    let (status, created) = s.send("POST", "/lb/nodes", Some(new.clone())).await;
    assert_eq!((status, created["node"]["node_id"].as_str()), (StatusCode::CREATED, Some("node4")), "{created}");
    assert_eq!(created["node"]["node_name"], "node4");
    let (_, node1) = s.get("/lb/nodes/node1", Some(TOKEN)).await;
    assert_eq!(node1["is_primary"], false, "one primary at a time");
    assert!(s.sup.state().await.nodes.iter().any(|n| n.node_id == "node4"), "the new node is supervised");
    let (status, again) = s.send("POST", "/lb/nodes", Some(new)).await;
    assert_eq!((status, again["error"].as_str()), (StatusCode::CONFLICT, Some("node_exists")));

    let (status, renamed) = s.send("PUT", "/lb/nodes/node4", Some(serde_json::json!({ "node_name": "Edge" }))).await;
    assert_eq!((status, renamed["node"]["node_name"].as_str()), (StatusCode::OK, Some("Edge")));
    let (status, _) = s.send("PUT", "/lb/nodes/node2", Some(serde_json::json!({ "active": false }))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.t.running_on("node2").await, 0, "a deactivated node is drained in the same transaction");
    // node1 takes work again once the pushes for that drain have ended
    s.sup.pushes_done().await;

    let before = s.footprint().await;
    let (status, held) = s.send("DELETE", "/lb/nodes/node3", None).await;
    assert_eq!((status, held["error"].as_str()), (StatusCode::CONFLICT, Some("node_holds_monitors")), "{held}");
    assert_eq!(s.footprint().await, before, "a refused delete changes nothing");
    let (status, _) = s.send("DELETE", "/lb/nodes/node3?force=true", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.t.count("SELECT COUNT(*) FROM node WHERE node_id = 'node3'").await, 0);
    assert_eq!((s.t.running_on("node3").await, s.t.running_on("node1").await), (0, 30), "its monitors moved first");
    assert!(s.sup.state().await.nodes.iter().all(|n| n.node_id != "node3"), "supervision of node3 ended");
    assert!(s.sup.routing.load().node("node3").is_none());
    assert_eq!(s.send("DELETE", "/lb/nodes/node4", None).await.0, StatusCode::OK, "an empty node goes without force");
    let (status, missing) = s.get("/lb/nodes/node9", Some(TOKEN)).await;
    assert_eq!((status, missing["error"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_node")));
    let (_, events) = s.get("/lb/events?per_page=100", Some(TOKEN)).await;
    let kinds: Vec<&str> = events["items"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for kind in ["node_created", "node_updated", "node_deleted"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    s.t.drop_db().await;
}

on_both_backends!(
    nodes_are_listed_created_updated_and_deleted_through_the_supervisor,
    a_rebalance_dry_run_changes_nothing_and_the_applied_plan_evens_load_minimally,
    every_protected_endpoint_refuses_a_missing_or_wrong_token_with_401,
    events_and_moves_are_paged_newest_first_and_filtered,
    draining_moves_a_nodes_monitors_away_until_it_is_undrained_even_through_recovery,
    a_pinned_manual_move_is_recorded_and_returns_after_a_failover,
    refused_actions_answer_with_their_reason_and_change_nothing,
);

#[test]
fn every_action_needs_a_token_and_maintenance_is_marked_as_such() {
    common::run(async {
        let s = stack(TestDb::sqlite().await, &[]).await;
        let before = s.footprint().await;
        let actions: [(&str, Option<Value>); 8] = [
            ("/lb/rebalance", Some(serde_json::json!({ "dry_run": false }))),
            ("/lb/trigger-rebalancing", None),
            ("/lb/force-rebalance-all", Some(serde_json::json!({ "confirm": true }))),
            ("/lb/nodes/node1/drain", None),
            ("/lb/nodes/node1/maintenance", None),
            ("/lb/nodes/node1/undrain", None),
            ("/lb/monitors/move", Some(serde_json::json!({ "monitor_ids": [1], "to_node": "node2" }))),
            ("/lb/update-loads", None),
        ];
        for (path, body) in &actions {
            for token in [None, Some("wrong-token-0123456789")] {
                let (status, answer) = s.post(path, body.clone(), token).await;
                assert_eq!((status, answer["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")), "{path}");
            }
        }
        assert_eq!(s.footprint().await, before, "unauthorized actions changed something");

        let (status, body) = s.post("/lb/nodes/node2/maintenance", None, Some(SECOND)).await;
        assert_eq!((status, body["state"].as_str()), (StatusCode::OK, Some("maintenance")));
        assert_eq!(s.t.rows("SELECT state FROM kc_node_admin WHERE node_id = 'node2'", 1).await, vec![vec![Some("maintenance".to_string())]]);
        assert_eq!(s.t.running_on("node2").await, 0);
        let (status, refused) = s.post("/lb/force-rebalance-all", Some(serde_json::json!({ "confirm": false })), Some(TOKEN)).await;
        assert_eq!((status, refused["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_body")));
        let (status, refused) = s.post("/lb/rebalance", Some(serde_json::json!({ "max_moves": 3 })), Some(TOKEN)).await;
        assert_eq!((status, refused["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_body")), "dry_run is required");
        let (status, forced) = s.post("/lb/force-rebalance-all", Some(serde_json::json!({ "confirm": true })), Some(TOKEN)).await;
        assert_eq!((status, forced["applied"].as_bool()), (StatusCode::OK, Some(true)), "{forced}");
        let (status, loads) = s.post("/lb/update-loads", None, Some(TOKEN)).await;
        assert_eq!((status, loads["capacity"]["total_monitors"].as_u64()), (StatusCode::OK, Some(30)));
    });
}

#[test]
fn status_endpoints_describe_the_cluster() {
    common::run(async {
        let s = stack(TestDb::sqlite().await, &[]).await;
        s.sup.transition("node1", Up, Down).await;
        s.sup.reconcile().await;

        let (_, health) = s.get("/lb/health", Some(TOKEN)).await;
        assert_eq!((health["status"].as_str(), health["ready_nodes"].as_u64()), (Some("degraded"), Some(2)));
        let node1 = &health["nodes"][0];
        assert_eq!((node1["node_id"].as_str(), node1["status"].as_str()), (Some("node1"), Some("offline")));
        assert_eq!(node1["monitor_count"], 0);
        assert!(node1["last_seen"].is_string(), "{node1}");

        let (_, capacity) = s.get("/lb/capacity", Some(TOKEN)).await;
        assert_eq!(capacity["total_monitors"], 30);
        assert_eq!(capacity["ready_capacity"], 2000);
        assert_eq!(capacity["usage_percent"], 1.5);
        assert_eq!(capacity["nodes"][1]["current_count"], 15);
        assert_eq!(capacity["nodes"][1]["usage_percent"], 1.5);
        assert_eq!(capacity["nodes"][1]["limit_per_node"], 1000);

        let (_, status) = s.get("/lb/node-status", Some(TOKEN)).await;
        let n1 = &status["nodes"][0];
        assert_eq!((n1["state"].as_str(), n1["ready"].as_bool(), n1["enabled"].as_bool()), (Some("down"), Some(false), Some(true)));
        assert_eq!((n1["flap_count"].as_u64(), n1["limit"].as_u64()), (Some(1), Some(1000)));
        for field in ["consecutive_failures", "consecutive_successes", "last_probe_at", "last_latency_ms", "last_error", "monitor_count", "damped", "settled"] {
            assert!(n1.get(field).is_some(), "node-status lacks {field}");
        }
        assert_eq!(n1["consecutive_failures"], 0, "the silent probe has answered nothing yet");

        let (_, probes) = s.get("/lb/health-status", Some(TOKEN)).await;
        assert_eq!((probes["probes"].as_u64(), probes["nodes"].as_array().unwrap().len()), (Some(0), 3));
        assert_eq!(probes["nodes"][0]["late_answers"], 0, "a busy node's late answers are shown");

        let (_, lb) = s.get("/lb/load-balancer-status", Some(TOKEN)).await;
        assert_eq!((lb["ready_nodes"].as_u64(), lb["routed_monitors"].as_u64()), (Some(2), Some(30)));
        assert_eq!(lb["generation"], s.sup.routing.load().generation);

        let (_, setup) = s.get("/lb/setup-status", Some(TOKEN)).await;
        assert_eq!(setup, serde_json::json!({ "setup_complete": true, "primary": "node1", "primary_ready": false }));

        let (_, system) = s.get("/lb/system-status", Some(TOKEN)).await;
        assert_eq!(system["supervisor"]["moves"], 10);
        assert_eq!(system["database"], true);
        assert_eq!(system["capacity"]["total_monitors"], 30);
        assert_eq!(system["nodes"].as_array().unwrap().len(), 3);
        let text = system.to_string();
        assert!(!text.contains(TOKEN) && !text.contains("node-secret-value"), "a secret leaked: {text}");
    });
}

#[test]
fn open_endpoints_answer_without_a_token_and_readiness_follows_the_nodes() {
    common::run(async {
        let s = stack(TestDb::sqlite().await, &[]).await;
        for path in ["/health", "/lb/ping", "/lb/available-nodes", "/lb/fixed-node-status"] {
            assert_eq!(s.get(path, None).await.0, StatusCode::OK, "{path}");
        }
        let (status, ready) = s.get("/lb/ready", None).await;
        assert_eq!((status, ready["ready"].as_bool()), (StatusCode::OK, Some(true)));
        for i in 1..=3 {
            s.sup.transition(&format!("node{i}"), Up, Down).await;
        }
        s.sup.reconcile().await;
        let (status, ready) = s.get("/lb/ready", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            ready,
            serde_json::json!({ "ready": false, "database": true, "node_ready": false, "reasons": ["no node is ready"] })
        );
    });
}

#[test]
fn readiness_answers_from_the_supervisors_knowledge_and_says_why_decisions_fail() {
    common::run(async {
        let s = stack(TestDb::sqlite().await, &[]).await;
        s.t.exec("ALTER TABLE kc_move_ledger RENAME TO kc_move_ledger_away").await;
        s.sup.transition("node1", Up, Down).await;
        assert!(s.sup.addr.send(kuma_cluster::supervisor::actors::cluster::Reconcile).await.unwrap().is_err());
        let (status, ready) = s.get("/lb/ready", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ready["database"], false);
        let reason = ready["reasons"][0].as_str().unwrap();
        assert!(reason.starts_with("decisions are failing: ") && reason.contains("kc_move_ledger"), "{reason}");
        s.t.exec("ALTER TABLE kc_move_ledger_away RENAME TO kc_move_ledger").await;
        s.sup.reconcile().await;
        let (status, ready) = s.get("/lb/ready", None).await;
        assert_eq!((status, ready["ready"].as_bool()), (StatusCode::OK, Some(true)), "{ready}");
    });
}

#[test]
fn old_status_paths_redirect_and_wrong_methods_get_405() {
    common::run(async {
        let s = stack(TestDb::sqlite().await, &[]).await;
        for name in ["health", "capacity", "node-status", "system-status"] {
            let response = s.client.get(format!("{}/api/{name}", s.base)).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
            assert_eq!(response.headers().get("location").unwrap(), &format!("/lb/{name}"));
        }
        let mut response = s
            .client
            .post(format!("{}/lb/health", s.base))
            .insert_header(("authorization", format!("Bearer {TOKEN}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers().get("allow").unwrap(), "GET");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "method_not_allowed");
        let (status, _) = s.send("TRACE", "/health", None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "/health is kuma-cluster's own, never proxied");
    });
}

#[test]
fn clients_outside_the_allow_list_get_403_on_lb_paths_only() {
    common::run(async {
        let s = stack(TestDb::sqlite().await, &[("KUMA_CLUSTER__API__ALLOW", "10.0.0.0/8")]).await;
        for path in ["/lb/ping", "/lb/health", "/lb/available-nodes"] {
            let (status, body) = s.get(path, Some(TOKEN)).await;
            assert_eq!((status, body["error"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{path}");
        }
        assert_eq!(s.get("/health", None).await.0, StatusCode::OK, "/health is not under /lb/");
        let allowed = stack(TestDb::sqlite().await, &[("KUMA_CLUSTER__API__ALLOW", "10.0.0.0/8,127.0.0.0/8")]).await;
        assert_eq!(allowed.get("/lb/health", Some(TOKEN)).await.0, StatusCode::OK);
    });
}

/// Other spellings of `/lb/health`: percent-encoded, doubled slashes, dot
/// segments, mixed case, and mixes of them.
const SPELLINGS: [&str; 14] = [
    "/%6cb/health",
    "/l%62/health",
    "/%6C%62/health",
    "/lb/%68ealth",
    "//lb/health",
    "/lb//health",
    "/./lb/health",
    "/x/../lb/health",
    "/%2e%2e/lb/health",
    "/lb%2fhealth",
    "/LB/health",
    "/Lb/health",
    "/lB/x/%2E%2E/health",
    "//%4cB/./health",
];

#[test]
fn no_spelling_of_an_lb_path_gets_past_the_allow_list_or_the_token() {
    common::run(async {
        let refused = stack(TestDb::sqlite().await, &[("KUMA_CLUSTER__API__ALLOW", "10.0.0.0/8")]).await;
        for path in SPELLINGS.iter().chain(&["/%6cb/ping", "/l%62/ping", "/%6c%62/ready", "/LB/metrics"]) {
            for method in ["GET", "POST"] {
                let request = refused.client.request(method.parse().unwrap(), format!("{}{path}", refused.base));
                let mut response = request.insert_header(("authorization", format!("Bearer {TOKEN}"))).send().await.unwrap();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                assert_eq!((response.status(), body["error"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{method} {path}");
            }
        }
        let allowed = stack(TestDb::sqlite().await, &[("KUMA_CLUSTER__API__ALLOW", "127.0.0.0/8")]).await;
        for path in SPELLINGS {
            let (status, body) = allowed.get(path, None).await;
            let response = allowed.client.get(format!("{}{path}?x=1", allowed.base)).send().await.unwrap();
            match status {
                // spelt so that the router took it into the /lb scope: the token is asked for
                StatusCode::UNAUTHORIZED => assert_eq!(body["error"], "unauthorized", "{path}"),
                // any other spelling: sent to the plain path, where the guards apply
                StatusCode::PERMANENT_REDIRECT => {
                    assert_eq!(response.headers().get("location").unwrap(), "/lb/health?x=1", "{path}")
                }
                other => panic!("{path}: {other} {body}"),
            }
            assert_eq!(allowed.get(path, Some(TOKEN)).await.0 == StatusCode::OK, status == StatusCode::UNAUTHORIZED, "{path}");
        }
        for path in ["//health", "/HEALTH", "/x/../health"] {
            let response = allowed.client.get(format!("{}{path}", allowed.base)).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT, "{path}");
            assert_eq!(response.headers().get("location").unwrap(), "/health");
        }
    });
}

#[test]
fn bad_node_requests_are_refused_with_400_or_405_and_change_nothing() {
    common::run(async {
        let s = stack(TestDb::sqlite().await, &[]).await;
        let before = s.footprint().await;
        for (method, path, body) in [
            ("POST", "/lb/nodes", Some(serde_json::json!({ "node_id": "has space", "host": "h:1" }))),
            ("POST", "/lb/nodes", Some(serde_json::json!({ "node_id": "node9", "host": "no-port" }))),
            ("POST", "/lb/nodes", Some(serde_json::json!({ "node_id": "node9", "host": "h:0" }))),
            ("POST", "/lb/nodes", Some(serde_json::json!({ "node_id": "node9", "host": "h:1", "color": "red" }))),
            ("POST", "/lb/nodes", Some(serde_json::json!({ "node_id": "node9" }))),
            ("PUT", "/lb/nodes/node1", Some(serde_json::json!({}))),
            ("PUT", "/lb/nodes/node1", Some(serde_json::json!({ "node_name": "" }))),
            ("DELETE", "/lb/nodes/node1?force=maybe", None),
        ] {
            let (status, body) = s.send(method, path, body.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path} {body}");
            assert!(body["error"].is_string() && body["detail"].is_string());
        }
        let (status, _) = s.send("PATCH", "/lb/nodes/node1", None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (status, _) = s.send("PUT", "/lb/nodes/node9", Some(serde_json::json!({ "active": true }))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(s.footprint().await, before);
    });
}

#[test]
fn without_configured_tokens_protected_endpoints_say_so() {
    common::run(async {
        let s = stack(TestDb::sqlite().await, &[("KUMA_CLUSTER__API__TOKENS", "")]).await;
        let (status, body) = s.get("/lb/health", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["detail"], "no api.tokens are configured");
    });
}

#[test]
fn metrics_need_a_token_and_count_transitions_moves_decisions_and_proxied_requests() {
    common::run(async {
        let s = stack(TestDb::sqlite().await, &[]).await;
        s.sup.transition("node1", Up, Down).await;
        s.sup.reconcile().await;
        // nothing listens at the nodes' address: the proxy answers 502
        let response = s.client.get(format!("{}/dashboard", s.base)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(s.get("/lb/metrics", None).await.0, StatusCode::UNAUTHORIZED);
        let mut response = s
            .client
            .get(format!("{}/lb/metrics", s.base))
            .insert_header(("authorization", format!("Bearer {TOKEN}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("content-type").unwrap().to_str().unwrap().starts_with("text/plain"));
        let text = String::from_utf8(response.body().await.unwrap().to_vec()).unwrap();
        for line in [
            "kuma_cluster_node_up{node=\"node1\"} 0",
            "kuma_cluster_node_ready{node=\"node2\"} 1",
            "kuma_cluster_node_monitors{node=\"node2\"} 15",
            "kuma_cluster_node_transitions_total{node=\"node1\",to=\"down\"} 1",
            "kuma_cluster_node_transitions_total{node=\"node1\",to=\"up\"} 1",
            "kuma_cluster_moves_total{reason=\"failover\"} 10",
            "kuma_cluster_decisions_failed_total 0",
            "kuma_cluster_proxy_duration_seconds_count 1",
            "kuma_cluster_websockets_open 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        assert!(text.lines().any(|l| l.starts_with("kuma_cluster_proxy_requests_total{node=") && l.contains("status=\"502\"} 1")));
        assert!(text.lines().any(|l| l.starts_with("kuma_cluster_decision_duration_seconds_count ")));
        assert!(!text.contains(TOKEN));
    });
}

#[test]
fn the_operator_cli_reads_and_steers_the_cluster_through_the_api() {
    use kuma_cluster::tools::ops_client::{Action, ClientError, OpsClient};
    common::run(async {
        let s = stack(TestDb::sqlite().await, &[]).await;
        let cli = OpsClient::new(&s.base, Some(TOKEN.to_string()));
        let nodes = cli.run(&Action::Nodes, false).await.unwrap();
        assert!(nodes.starts_with("NODE   STATE  READY  ENABLED  MONITORS  LIMIT  FAILS  LAST ERROR"), "{nodes}");
        assert_eq!(nodes.lines().count(), 4);
        let status = cli.run(&Action::Status, false).await.unwrap();
        let mut lines = status.lines();
        assert!(lines.next().is_some_and(|l| l.starts_with("replica ") && l.contains(": leader, epoch 1, lease until 20")), "{status}");
        assert!(lines.next().is_some_and(|l| l.starts_with("supervision running, database reachable, 3 of 3 nodes ready, 30 monitors")), "{status}");

        assert_eq!(cli.run(&Action::Drain("node1".into()), false).await.unwrap(), "node1: drain (10 monitors moved away, 0 returned)");
        s.sup.pushes_done().await;
        s.sup.clock.advance(std::time::Duration::from_secs(10));
        let json: Value = serde_json::from_str(&cli.run(&Action::Undrain("node1".into()), true).await.unwrap()).unwrap();
        assert_eq!((json["state"].as_str(), json["summary"]["reverted"].as_u64()), (Some("in_service"), Some(10)));
        // node3 takes a manual move once the pushes of that revert have ended
        s.sup.pushes_done().await;
        assert_eq!(
            cli.run(&Action::Move { monitors: vec![1, 2], to: "node3".into(), pin: true }, false).await.unwrap(),
            "2 monitors moved to node3 (pinned)"
        );
        s.sup.pushes_done().await;
        let dry = cli.run(&Action::Rebalance { dry_run: true, max_moves: None }, false).await.unwrap();
        assert_eq!(dry, "dry run, would make 2 moves; load spread 4 -> 0");

        let refused = cli.run(&Action::Drain("node9".into()), false).await.unwrap_err();
        assert!(matches!(&refused, ClientError::Refused { status: 404, .. }), "{refused}");
        assert_eq!(refused.to_string(), "404: no node \"node9\" in the cluster");
        let anonymous = OpsClient::new(&s.base, None).run(&Action::Nodes, false).await.unwrap_err();
        assert_eq!(anonymous.to_string(), "401: send Authorization: Bearer <token>");
    });
}

#[test]
fn the_openapi_document_is_served_and_covers_the_api() {
    common::run(async {
        let s = stack(TestDb::sqlite().await, &[]).await;
        let (status, doc) = s.get("/lb/openapi.json", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        for path in PROTECTED.iter().map(|p| p.replace("node1", "{id}")).chain(
            [
                "/lb/ready", "/lb/ping", "/health", "/lb/metrics", "/lb/available-nodes", "/lb/fixed-node/{node}",
                "/lb/set-fixed-node", "/lb/clear-fixed-node", "/lb/fixed-node-status", "/lb/monitors/move",
                "/lb/rebalance", "/lb/trigger-rebalancing", "/lb/force-rebalance-all", "/lb/update-loads",
                "/lb/nodes/{id}/drain", "/lb/nodes/{id}/undrain", "/lb/nodes/{id}/maintenance",
            ]
            .map(String::from),
        ) {
            assert!(paths.contains_key(&path), "{path} is not documented");
        }
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        assert_eq!(paths["/lb/health"]["get"]["security"][0]["bearer"], serde_json::json!([]));
        assert!(paths["/lb/ready"]["get"].get("security").is_none(), "readiness is open");
        let delete = &paths["/lb/nodes/{id}"]["delete"]["responses"];
        for code in ["200", "400", "401", "404", "409"] {
            assert!(delete.get(code).is_some(), "DELETE /lb/nodes/{{id}} does not document {code}");
        }
    });
}

#[test]
fn a_monitor_write_reported_by_a_follower_has_the_served_node_and_the_monitors_node_reconcile() {
    common::run(async {
        let s = stack(TestDb::sqlite().await, &[]).await;
        let fakes: Vec<common::FakeNode> = (0..2).map(|_| common::FakeNode::start()).collect();
        for (i, fake) in fakes.iter().enumerate() {
            s.t.exec(&format!("UPDATE node SET host = '{}' WHERE node_id = 'node{}'", fake.host, i + 1)).await;
        }
        s.sup.reconcile().await;
        let before: Vec<usize> = fakes.iter().map(|f| f.reconcile_calls().len()).collect();
        // monitor 15 runs on node2; node1 answered a write of it through a follower
        let (status, body) = s.post("/lb/monitor-written", Some(json!({ "served": "node1", "monitor": 15, "home": null })), Some(TOKEN)).await;
        assert_eq!((status, body["success"].as_bool()), (StatusCode::OK, Some(true)), "{body}");
        common::eventually(std::time::Duration::from_secs(20), "node1 and node2 are asked to reconcile", || async {
            fakes.iter().zip(&before).all(|(f, b)| f.reconcile_calls().len() > *b)
        })
        .await;
        for (bad, expected) in [
            (json!({ "served": "node9", "monitor": 15, "home": null }), StatusCode::NOT_FOUND),
            (json!({ "served": "node1", "monitor": 15, "home": "node9" }), StatusCode::NOT_FOUND),
            (json!({ "served": "node1", "monitor": "x" }), StatusCode::BAD_REQUEST),
            (json!({ "served": "node1", "extra": 1 }), StatusCode::BAD_REQUEST),
        ] {
            assert_eq!(s.post("/lb/monitor-written", Some(bad.clone()), Some(TOKEN)).await.0, expected, "{bad}");
        }
        assert_eq!(s.post("/lb/monitor-written", Some(json!({ "served": "node1" })), None).await.0, StatusCode::UNAUTHORIZED);
    });
}

#[test]
fn an_action_at_a_follower_without_a_leader_to_forward_to_is_503_with_the_reason() {
    common::run(async {
        let s = stack(TestDb::sqlite().await, &[]).await;
        let before = s.footprint().await;
        s.sup.vitals.update(|v| {
            v.leading = false;
            v.leader_id = Some("kc-2".into());
            v.leader_address = None;
        });
        let (status, body) = s.post("/lb/nodes/node1/drain", None, Some(TOKEN)).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("leader_not_advertised")), "{body}");
        assert!(body["detail"].as_str().unwrap().contains("ha.advertise"), "{body}");
        s.sup.vitals.update(|v| v.leader_id = None);
        let (status, body) = s.post("/lb/nodes/node1/drain", None, Some(TOKEN)).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("no_leader")), "{body}");
        let (status, _) = s.get("/lb/node-status", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "reads are answered by every replica");
        assert_eq!(s.footprint().await, before, "nothing was written");
    });
}
