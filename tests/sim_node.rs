//! The simulated Kuma node alone, and three of them under a real supervisor:
//! a node that dies has its monitors run elsewhere, exactly once, and gets them
//! back when it returns.

mod common;

use common::{eventually, TestDb};
use kuma_cluster::core::reconcile::Command;
use kuma_cluster::core::waves::Pace;
use kuma_cluster::supervisor::actors::cluster::{Apply, GetClusterState, Shutdown};
use kuma_cluster::tools::sim::{SimConfig, SimNode};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const AUTH: &str = "Bearer sim-secret";
/// Ten times a real node's pace: pauses of 10–30 ms per start, a 6 s cron.
const SPEED: f64 = 10.0;

fn config(id: &str, listen: &str) -> SimConfig {
    SimConfig { speed: SPEED, ..SimConfig::new(id, listen.parse().unwrap(), Some(AUTH.into())) }
}

async fn post(host: &str, path: &str, body: &str) -> (u16, Value) {
    let mut response = awc::Client::new()
        .post(format!("http://{host}{path}"))
        .insert_header(("authorization", AUTH))
        .insert_header(("content-type", "application/json"))
        .timeout(Duration::from_secs(30))
        .send_body(body.to_owned())
        .await
        .unwrap();
    let body = response.body().await.unwrap();
    (response.status().as_u16(), serde_json::from_slice(&body).unwrap_or(Value::Null))
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
    let node = SimNode::start(config("sim1", "127.0.0.1:0"), t.db.clone()).await.unwrap();
    eventually(WAIT, "the cold start ends", || async { node.booted() }).await;
    assert_eq!(node.running(), vec![3, 4, 5]);
    assert_eq!(t.rows("SELECT host, status FROM node WHERE node_id = 'sim1'", 2).await, vec![vec![Some(node.host.clone()), Some("online".into())]]);
    let (status, running) = get(&node.host, "/api/v1/running").await;
    assert_eq!((status, running["count"].as_u64(), running["node_id"].as_str()), (200, Some(3), Some("sim1")));
    assert!(running["monitors"][0]["since"].is_string());
    assert_eq!(running["monitors"][0]["copies"].as_u64(), Some(1));
    let (status, health) = get(&node.host, "/api/v1/health").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("healthy")));
    let page = awc::Client::new().get(format!("http://{}/", node.host)).send().await.unwrap().body().await.unwrap();
    assert!(String::from_utf8_lossy(&page).contains("Simulated Kuma node sim1"));
    node.stop().await;
    t.drop_db().await;
}



#[test]
fn a_reconcile_call_needs_authorization_and_answers_when_the_reconcile_is_done() {
    common::run(async {
        let t = TestDb::sqlite().await;
        t.migrate().await;
        t.add_monitors("sim1", 2).await;
        t.add_monitors("elsewhere", 20).await;
        let node = SimNode::start(config("sim1", "127.0.0.1:0"), t.db.clone()).await.unwrap();
        eventually(WAIT, "the cold start ends", || async { node.booted() }).await;
        t.exec("UPDATE monitor SET assigned_node = 'elsewhere' WHERE id = 1").await;
        t.exec("UPDATE monitor SET assigned_node = 'sim1' WHERE node_id = 'elsewhere'").await;
        let client = awc::Client::new();
        let url = format!("http://{}/api/v1/reconcile-monitors", node.host);
        for auth in [None, Some("Bearer wrong")] {
            let mut request = client.post(&url);
            if let Some(auth) = auth {
                request = request.insert_header(("authorization", auth));
            }
            assert_eq!(request.send().await.unwrap().status().as_u16(), 401);
        }
        let (status, _) = post(&node.host, "/api/v1/reconcile-monitors", "").await;
        assert_eq!(status, 200);
        assert_eq!(node.running(), (2..=22).collect::<Vec<u32>>(), "the answer comes once all 20 started and 1 stopped");
        node.stop().await;
    });
}

#[test]
fn overlapping_reconciles_start_monitors_twice_and_the_first_copies_leak() {
    common::run(async {
        let t = TestDb::sqlite().await;
        t.migrate().await;
        t.add_monitors("elsewhere", 10).await;
        let node = SimNode::start(config("sim1", "127.0.0.1:0"), t.db.clone()).await.unwrap();
        eventually(WAIT, "the cold start ends", || async { node.booted() }).await;
        t.exec("UPDATE monitor SET assigned_node = 'sim1'").await;
        let host = node.host.clone();
        let (a, b) = futures_util::join!(
            post(&host, "/api/v1/reconcile-monitors", ""),
            post(&host, "/api/v1/reconcile-monitors", "")
        );
        assert_eq!((a.0, b.0), (200, 200));
        let copies = node.copies();
        assert!(copies.values().any(|&c| c == 2), "two reconciles at once start monitors twice: {copies:?}");
        t.exec("UPDATE monitor SET assigned_node = 'elsewhere'").await;
        post(&host, "/api/v1/reconcile-monitors", "").await;
        assert!(!node.copies().is_empty(), "a stop ends only the listed copy; the leaked ones run on");
        node.stop().await;
    });
}

#[test]
fn health_is_slow_while_the_node_starts_monitors() {
    common::run(async {
        let t = TestDb::sqlite().await;
        t.migrate().await;
        t.add_monitors("elsewhere", 100).await;
        let node = SimNode::start(config("sim1", "127.0.0.1:0"), t.db.clone()).await.unwrap();
        eventually(WAIT, "the cold start ends", || async { node.booted() }).await;
        let quiet = Instant::now();
        assert_eq!(get(&node.host, "/api/v1/health").await.0, 200);
        let quiet = quiet.elapsed();
        t.exec("UPDATE monitor SET assigned_node = 'sim1'").await;
        let host = node.host.clone();
        let reconcile = actix_rt::spawn(async move { post(&host, "/api/v1/reconcile-monitors", "").await });
        eventually(WAIT, "the reconcile is starting monitors", || async {
            get(&node.host, "/api/v1/running").await.1["busy"].as_bool() == Some(true)
        })
        .await;
        let busy = Instant::now();
        assert_eq!(get(&node.host, "/api/v1/health").await.0, 200);
        let busy = busy.elapsed();
        assert!(busy >= kuma_cluster::tools::sim::BUSY_HEALTH.div_f64(SPEED), "busy health took {busy:?}");
        assert!(busy > quiet, "busy {busy:?}, quiet {quiet:?}");
        reconcile.await.unwrap();
        node.stop().await;
    });
}

#[test]
fn a_monitor_created_through_rest_is_homed_on_the_least_loaded_online_node_and_starts_here() {
    common::run(async {
        let t = TestDb::sqlite().await;
        t.migrate().await;
        t.add_node("node1", "127.0.0.1:9").await;
        t.add_node("node2", "127.0.0.1:9").await;
        t.add_monitors("node1", 3).await;
        t.add_monitors("node2", 1).await;
        let node = SimNode::start(config("sim1", "127.0.0.1:0"), t.db.clone()).await.unwrap();
        t.add_monitors("sim1", 2).await;
        eventually(WAIT, "the cold start ends", || async { node.booted() }).await;
        let (status, body) = post(&node.host, "/api/v1/monitors", r#"{"name":"too fast","interval":10}"#).await;
        assert_eq!((status, body["ok"].as_bool()), (400, Some(false)));
        let (status, body) = post(&node.host, "/api/v1/monitors", r#"{"name":"new","interval":60}"#).await;
        assert_eq!(status, 201);
        assert_eq!(body["data"]["node_id"].as_str(), Some("node2"), "node2 has the fewest monitors homed on it: {body}");
        let id = body["data"]["monitor_id"].as_u64().unwrap() as u32;
        assert!(node.running().contains(&id));
        let (_, body) = post(&node.host, "/api/v1/monitors", r#"{"name":"elsewhere","node_id":"node1"}"#).await;
        let other = body["data"]["monitor_id"].as_u64().unwrap() as u32;
        assert!(node.running().contains(&other), "started here whatever its home");
        post(&node.host, "/api/v1/reconcile-monitors", "").await;
        assert!(!node.running().contains(&other) && !node.running().contains(&id), "until its next reconcile");
        node.stop().await;
    });
}

#[test]
fn the_cron_reconciles_at_whole_periods_of_the_nodes_clock() {
    common::run(async {
        let t = TestDb::sqlite().await;
        t.migrate().await;
        t.add_monitors("elsewhere", 1).await;
        let fast = SimConfig { speed: 120.0, ..config("sim1", "127.0.0.1:0") };
        let node = SimNode::start(fast, t.db.clone()).await.unwrap();
        t.exec("UPDATE monitor SET assigned_node = 'sim1'").await;
        eventually(WAIT, "a cron tick reconciles", || async { node.reconciles() >= 1 && node.running() == vec![1] }).await;
        let (_, running) = get(&node.host, "/api/v1/running").await;
        let at = chrono::DateTime::parse_from_rfc3339(running["reconciled_at"].as_str().unwrap()).unwrap();
        assert!(at.timestamp_subsec_millis() % 500 < 300, "ticks of 500 ms land on whole half-seconds: {at}");
        node.stop().await;
    });
}

/// Active monitor ids, and which live node runs each: every one exactly once.
async fn each_runs_exactly_once(t: &TestDb, nodes: &[&SimNode]) -> bool {
    let active: BTreeSet<u32> =
        t.monitors().await.into_iter().filter(|m| m.3).map(|m| m.0 as u32).collect();
    let mut seen = BTreeSet::new();
    for node in nodes {
        for (id, copies) in node.copies() {
            if copies > 1 || !seen.insert(id) {
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
    let mut nodes = Vec::new();
    for i in 1..=3 {
        nodes.push(SimNode::start(config(&format!("sim{i}"), "127.0.0.1:0"), t.db.clone()).await.unwrap());
    }
    let pace = common::sim_pace(SPEED);
    let mut overrides: Vec<(&str, &str)> = pace.iter().map(|(k, v)| (*k, v.as_str())).collect();
    overrides.push(("KUMA_CLUSTER__NODES__AUTH_HEADER", AUTH));
    let (cluster, routing) = common::live_supervisor(&t, &overrides);
    eventually(WAIT, "all three nodes ready", || async { routing.load().nodes.iter().filter(|n| n.ready).count() == 3 }).await;
    eventually(WAIT, "every node booted, each monitor run once", || async {
        nodes.iter().all(SimNode::booted) && each_runs_exactly_once(&t, &[&nodes[0], &nodes[1], &nodes[2]]).await
    })
    .await;

    let dead = nodes.remove(0);
    let address = dead.host.clone();
    dead.stop().await;
    eventually(WAIT, "sim1's monitors run elsewhere, each once", || async {
        each_runs_exactly_once(&t, &[&nodes[0], &nodes[1]]).await
    })
    .await;
    assert_eq!(nodes[0].running().len() + nodes[1].running().len(), 90);

    let back = SimNode::start(config("sim1", &address), t.db.clone()).await.unwrap();
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

/// Whether no monitor runs more than once across `nodes`, counting every copy.
fn at_most_one_copy(nodes: &[&SimNode]) -> bool {
    doubles(nodes).is_empty()
}

/// Monitors with more than one running copy across `nodes`, with the copies
/// each node runs.
fn doubles(nodes: &[&SimNode]) -> BTreeMap<u32, Vec<(String, u32)>> {
    let mut seen: BTreeMap<u32, Vec<(String, u32)>> = BTreeMap::new();
    for node in nodes {
        for (id, copies) in node.copies() {
            seen.entry(id).or_default().push((node.id().to_owned(), copies));
        }
    }
    seen.retain(|_, on| on.iter().map(|(_, c)| c).sum::<u32>() > 1);
    seen
}

/// Every live node: the survivors and sim2 while it runs.
fn all<'a>(sim2: &'a Option<SimNode>, survivors: &'a [SimNode]) -> Vec<&'a SimNode> {
    survivors.iter().chain(sim2.iter()).collect()
}

/// The default settings, every duration divided by `speed` (the nodes' pace too).
fn scaled_defaults(speed: f64) -> Vec<(&'static str, String)> {
    let ms = |real: f64| format!("{}ms", (real / speed) as u64);
    let mut settings = common::sim_pace(speed);
    settings.extend([
        ("KUMA_CLUSTER__HEALTH__INTERVAL", ms(2000.0)),
        ("KUMA_CLUSTER__HEALTH__TIMEOUT", ms(1000.0)),
        ("KUMA_CLUSTER__HEALTH__LATE_ANSWER_WAIT", ms(30_000.0)),
        ("KUMA_CLUSTER__HEALTH__DOWN_INTERVAL", ms(5000.0)),
        ("KUMA_CLUSTER__CLUSTER__HOLD_DOWN", ms(10_000.0)),
        ("KUMA_CLUSTER__CLUSTER__RECONCILE_INTERVAL", ms(10_000.0)),
        ("KUMA_CLUSTER__CLUSTER__FLAP_WINDOW", ms(300_000.0)),
        ("KUMA_CLUSTER__NODES__AUTH_HEADER", AUTH.to_owned()),
    ]);
    settings
}

/// The real nodes' cascade: a failover of 400 monitors onto 2 nodes keeps both
/// busy starting monitors, and their health checks time out meanwhile. With
/// the default settings (scaled twenty times), neither is ever marked down, no
/// monitor ever runs twice (two copies on one node or on two), and each ends up
/// run exactly once, at four phases of the nodes' cron period, next to its
/// ticks and between them; the revert too, old owners stopping before the new
/// one starts.
#[test]
fn a_failover_of_400_monitors_onto_two_busy_nodes_never_marks_a_second_node_down() {
    common::run(async {
        const FAST: f64 = 20.0;
        let t = TestDb::sqlite().await;
        t.migrate().await;
        t.add_monitors("sim1", 100).await;
        t.add_monitors("sim2", 400).await;
        t.add_monitors("sim3", 100).await;
        let start = |id: &str, listen: &str| SimNode::start(SimConfig { speed: FAST, ..config(id, listen) }, t.db.clone());
        let mut survivors = vec![start("sim1", "127.0.0.1:0").await.unwrap(), start("sim3", "127.0.0.1:0").await.unwrap()];
        let mut sim2 = Some(start("sim2", "127.0.0.1:0").await.unwrap());
        let address = sim2.as_ref().unwrap().host.clone();
        let settings = scaled_defaults(FAST);
        let overrides: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (cluster, routing) = common::live_supervisor(&t, &overrides);
        let period_ms = (60_000.0 / FAST) as i64;
        for phase in [0.05, 0.35, 0.65, 0.95] {
            eventually(Duration::from_secs(60), "every node booted, each monitor run once", || async {
                let nodes = all(&sim2, &survivors);
                nodes.iter().all(|n| n.booted()) && each_runs_exactly_once(&t, &nodes).await
            })
            .await;
            // kill sim2 at this phase of the nodes' cron period
            let into = chrono::Utc::now().timestamp_millis().rem_euclid(period_ms);
            let wanted = (phase * period_ms as f64) as i64;
            actix_rt::time::sleep(Duration::from_millis((wanted - into).rem_euclid(period_ms) as u64)).await;
            sim2.take().unwrap().stop().await;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let table = routing.load();
                for id in ["sim1", "sim3"] {
                    assert!(table.node(id).is_some_and(|n| n.ready), "{id} left service during the failover (phase {phase})");
                }
                assert!(at_most_one_copy(&[&survivors[0], &survivors[1]]), "a monitor ran twice (phase {phase})");
                if each_runs_exactly_once(&t, &[&survivors[0], &survivors[1]]).await {
                    break;
                }
                assert!(Instant::now() < deadline, "sim2's monitors run elsewhere (phase {phase})");
                actix_rt::time::sleep(Duration::from_millis(10)).await;
            }
            sim2 = Some(start("sim2", &address).await.unwrap());
            // three rounds are six transitions: flap damping may hold the last
            // revert for a (scaled) window
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let nodes = all(&sim2, &survivors);
                assert!(at_most_one_copy(&nodes), "a monitor ran on two nodes during the revert (phase {phase})");
                if sim2.as_ref().is_some_and(|n| n.running().len() == 400) && each_runs_exactly_once(&t, &nodes).await {
                    break;
                }
                assert!(Instant::now() < deadline, "sim2 gets its 400 monitors back (phase {phase})");
                actix_rt::time::sleep(Duration::from_millis(5)).await;
            }
        }
        cluster.send(Shutdown).await.unwrap();
        for node in survivors.drain(..).chain(sim2) {
            node.stop().await;
        }
    });
}

/// A node busy with work of its own (here its cold start: 400 monitors at about
/// 1.4/s, no push of ours to grace it) answers its health checks after the
/// probe timeout, for far longer than `health.timeout_fall` probes. With the
/// default settings scaled twenty times, it is never marked down, nothing
/// leaves it, and no monitor ever runs twice: its answers come late, not never.
#[test]
fn a_node_busy_with_its_own_cold_start_answers_late_and_is_never_failed_over() {
    common::run(async {
        const FAST: f64 = 20.0;
        let t = TestDb::sqlite().await;
        t.migrate().await;
        t.add_monitors("sim1", 20).await;
        t.add_monitors("sim2", 400).await;
        t.add_monitors("sim3", 20).await;
        let mut nodes = Vec::new();
        for id in ["sim1", "sim2", "sim3"] {
            nodes.push(SimNode::start(SimConfig { speed: FAST, ..config(id, "127.0.0.1:0") }, t.db.clone()).await.unwrap());
        }
        let settings = scaled_defaults(FAST);
        let overrides: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (cluster, routing) = common::live_supervisor(&t, &overrides);
        let started = Instant::now();
        let deadline = started + Duration::from_secs(120);
        let mut busy_for = Duration::ZERO;
        loop {
            let all: Vec<&SimNode> = nodes.iter().collect();
            assert!(at_most_one_copy(&all), "a monitor ran twice: {:?}", doubles(&all));
            if !nodes[1].booted() {
                busy_for = started.elapsed();
            } else if each_runs_exactly_once(&t, &all).await {
                break;
            }
            let health = routing.load().node("sim2").map(|n| n.health);
            assert_ne!(health, Some(kuma_cluster::core::health::Health::Down), "sim2 was marked down while busy");
            assert!(Instant::now() < deadline, "sim2's cold start ends with each monitor run once");
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        // twenty scaled probe periods (timeout + interval) are 3 s
        assert!(busy_for > Duration::from_secs(5), "sim2 was busy for only {busy_for:?}");
        assert_eq!(t.count("SELECT COUNT(*) FROM monitor WHERE assigned_node IS NOT NULL").await, 0, "nothing moved");
        assert_eq!(t.count("SELECT COUNT(*) FROM kc_event_log WHERE kind IN ('node_down', 'ejection_held')").await, 0);
        let details = cluster.send(kuma_cluster::supervisor::actors::cluster::GetNodeDetails).await.unwrap();
        let sim2 = details.iter().find(|d| d.member.node_id == "sim2").and_then(|d| d.probe.clone()).unwrap();
        assert!(sim2.late_answers > 0, "its health answers came late: {sim2:?}");
        assert_eq!(sim2.health, kuma_cluster::core::health::Health::Up);
        cluster.send(Shutdown).await.unwrap();
        for node in nodes {
            node.stop().await;
        }
    });
}

/// Whether the supervisor has no reconcile push in flight.
async fn pushes_idle(cluster: &actix::Addr<kuma_cluster::supervisor::actors::cluster::ClusterActor>) -> bool {
    cluster.send(GetClusterState).await.is_ok_and(|s| s.nodes.iter().all(|n| !n.busy))
}

/// Sleeps until `at_ms` into the current (or next) period of the wall clock.
async fn sleep_until_phase(period_ms: i64, at_ms: i64) {
    let into = chrono::Utc::now().timestamp_millis().rem_euclid(period_ms);
    actix_rt::time::sleep(Duration::from_millis((at_ms - into).rem_euclid(period_ms) as u64)).await;
}

/// For each node, its moved monitors and when the last of them was first seen
/// running there.
fn last_starts(first_seen: &HashMap<u32, (usize, Instant)>) -> BTreeMap<usize, (usize, Instant)> {
    let mut by_node: BTreeMap<usize, (usize, Instant)> = BTreeMap::new();
    for &(node, seen) in first_seen.values() {
        let entry = by_node.entry(node).or_insert((0, seen));
        entry.0 += 1;
        entry.1 = entry.1.max(seen);
    }
    by_node
}

/// Five nodes whose clocks stand a quarter of the cron period apart (sim1's in
/// between). sim1, with 300 monitors, is killed fifteen times, one scaled
/// second later each time, so a failover begins at every second of every
/// survivor's minute; it is restarted at fifteen phases as well. Then a sixth
/// node joins and rebalances even the load out. Throughout, no monitor ever has
/// two running copies and no survivor leaves service; after each failover and
/// revert, every node has started its share within the time the wave plan
/// promises (`Pace::time_to_start`, from when the move could first be decided).
#[test]
fn failover_revert_and_rebalance_at_every_second_of_the_minute_run_each_monitor_once_within_the_promised_time() {
    common::run(async {
        const FAST: f64 = 20.0;
        const PERIOD_MS: i64 = 3_000;
        const VICTIM: usize = 300;
        let pace = Pace { start_rate: 4.0 * FAST, cron_period: Duration::from_millis(PERIOD_MS as u64), margin: Duration::from_millis(150) };
        let hold_down = Duration::from_millis((10_000.0 / FAST) as u64);
        // the decision, the push and late timers on a loaded machine
        let slack = Duration::from_secs(1);
        let offsets: [i64; 6] = [375, 0, 750, 1_500, 2_250, 1_875];
        let t = TestDb::sqlite().await;
        t.migrate().await;
        t.add_monitors("sim1", VICTIM).await;
        for i in 2..=5 {
            t.add_monitors(&format!("sim{i}"), 100).await;
        }
        let start = |i: usize, listen: &str| {
            let config = SimConfig {
                speed: FAST,
                clock_offset: chrono::Duration::milliseconds(offsets[i - 1]),
                ..config(&format!("sim{i}"), listen)
            };
            SimNode::start(config, t.db.clone())
        };
        let mut nodes: Vec<SimNode> = Vec::new();
        for i in 2..=5 {
            nodes.push(start(i, "127.0.0.1:0").await.unwrap());
        }
        let mut victim = Some(start(1, "127.0.0.1:0").await.unwrap());
        let address = victim.as_ref().unwrap().host.clone();
        let mut settings = scaled_defaults(FAST);
        // fifteen kills of one node are not flapping here
        settings.push(("KUMA_CLUSTER__CLUSTER__FLAP_MAX_TRANSITIONS", "1000".to_owned()));
        let overrides: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (cluster, routing) = common::live_supervisor(&t, &overrides);
        let node_ms = |i: usize, at: Instant| {
            let wall = chrono::Utc::now() - chrono::Duration::from_std(at.elapsed()).unwrap();
            wall.timestamp_millis() + offsets[i - 1]
        };
        let moved: BTreeSet<u32> = (1..=VICTIM as u32).collect();
        for s in 0..15 {
            eventually(Duration::from_secs(60), "every node booted, each monitor run once", || async {
                let live = all(&victim, &nodes);
                live.iter().all(|n| n.booted()) && each_runs_exactly_once(&t, &live).await && pushes_idle(&cluster).await
            })
            .await;
            // survivor sim(2+j) is at scaled second s - 15j of its minute
            sleep_until_phase(PERIOD_MS, s * 50 + 25).await;
            victim.take().unwrap().stop().await;
            let (mut detected, mut first_seen) = (None, HashMap::new());
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let table = routing.load();
                for n in &nodes {
                    assert!(table.node(n.id()).is_some_and(|n| n.ready), "{} left service (round {s})", n.id());
                }
                if detected.is_none() && !table.node("sim1").is_some_and(|n| n.ready) {
                    detected = Some(Instant::now());
                }
                let survivors: Vec<&SimNode> = nodes.iter().collect();
                assert!(at_most_one_copy(&survivors), "a monitor ran twice during failover round {s}");
                for (j, n) in nodes.iter().enumerate() {
                    for id in n.copies().into_keys().filter(|id| moved.contains(id)) {
                        first_seen.entry(id).or_insert((j + 2, Instant::now()));
                    }
                }
                if first_seen.len() == VICTIM && each_runs_exactly_once(&t, &survivors).await {
                    break;
                }
                assert!(Instant::now() < deadline, "sim1's monitors run elsewhere (round {s})");
                actix_rt::time::sleep(Duration::from_millis(5)).await;
            }
            let detected = detected.expect("sim1 left service");
            for (node, (gained, last)) in last_starts(&first_seen) {
                let promised = pace.time_to_start(node_ms(node, detected), gained, false).unwrap();
                assert!(
                    last <= detected + promised + slack,
                    "round {s}: sim{node} started its {gained} monitors {:?} after detection, promised {promised:?}",
                    last - detected
                );
            }

            sleep_until_phase(PERIOD_MS, s * 200).await;
            victim = Some(start(1, &address).await.unwrap());
            let (mut ready, mut first_seen) = (None, HashMap::new());
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let live = all(&victim, &nodes);
                assert!(at_most_one_copy(&live), "a monitor ran on two nodes during revert round {s}");
                if ready.is_none() && routing.load().node("sim1").is_some_and(|n| n.ready) {
                    ready = Some(Instant::now());
                }
                for id in victim.as_ref().unwrap().copies().into_keys() {
                    first_seen.entry(id).or_insert((1, Instant::now()));
                }
                if first_seen.len() == VICTIM && each_runs_exactly_once(&t, &live).await {
                    break;
                }
                assert!(Instant::now() < deadline, "sim1 gets its monitors back (round {s})");
                actix_rt::time::sleep(Duration::from_millis(5)).await;
            }
            let eligible = ready.expect("sim1 back in service") + hold_down;
            let (_, last) = last_starts(&first_seen)[&1];
            let promised = pace.time_to_start(node_ms(1, eligible), VICTIM, true).unwrap();
            assert!(
                last <= eligible + promised + slack,
                "round {s}: sim1 got its {VICTIM} monitors back {:?} after it could, promised {promised:?}",
                last.saturating_duration_since(eligible)
            );
        }

        // a sixth node joins; rebalances move monitors only between live
        // nodes, each stopped on its old node before it starts on the new one
        nodes.push(start(6, "127.0.0.1:0").await.unwrap());
        nodes.extend(victim.take());
        eventually(Duration::from_secs(30), "sim6 in service and stable", || async {
            routing.load().node("sim6").is_some_and(|n| n.ready)
                && cluster.send(GetClusterState).await.is_ok_and(|s| s.nodes.iter().any(|n| n.node_id == "sim6" && n.settled))
        })
        .await;
        let everyone: Vec<&SimNode> = nodes.iter().collect();
        let mut spread = usize::MAX;
        // sim1 stops all it hands over in one reconcile, so it hands over no
        // more than the smallest handover budget among its new owners: with
        // their clocks spread over the period that is a few dozen per call,
        // called when sim2's window opens (the latest of the others then has
        // about 450 ms left)
        sleep_until_phase(PERIOD_MS, 150).await;
        for _ in 0..24 {
            let summary = cluster
                .send(Apply(Command::Rebalance { dry_run: false, max_moves: None, from_scratch: false }))
                .await
                .unwrap()
                .expect("a rebalance");
            spread = summary.rebalance.expect("its report").spread_after;
            let deadline = Instant::now() + Duration::from_secs(30);
            while !(pushes_idle(&cluster).await && each_runs_exactly_once(&t, &everyone).await) {
                let twice = doubles(&everyone);
                assert!(twice.is_empty(), "monitors ran twice during a rebalance: {twice:?}");
                assert!(Instant::now() < deadline, "the rebalance settles");
                actix_rt::time::sleep(Duration::from_millis(5)).await;
            }
            if spread <= 1 {
                break;
            }
            sleep_until_phase(PERIOD_MS, 150).await;
        }
        assert!(spread <= 1, "the load is even after 24 rebalances: spread {spread}");
        let loads: Vec<usize> = nodes.iter().map(|n| n.running().len()).collect();
        assert!(loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 1, "loads {loads:?}");
        cluster.send(Shutdown).await.unwrap();
        for node in nodes {
            node.stop().await;
        }
    });
}
