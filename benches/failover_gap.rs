//! Failover and revert at the seed's scale, at the real nodes' pace: 4000
//! monitors on 5 `kuma-cluster sim-node` processes (speed 1: about 5 starts a
//! second, the minute cron on their clocks) and `kuma-cluster serve` with
//! default settings, on MariaDB. sim1 (800 monitors) is killed with SIGKILL at
//! second 40 of a minute, then restarted. The nodes' `/api/v1/running` is
//! polled every 100 ms; it says when each copy started. Reported:
//! - failover: the gap from the kill to each moved monitor's start on its new
//!   node (p50, p90, max), next to its lower bound, detection + 200 ÷ 5/s;
//! - revert: how long each monitor ran nowhere between its stop on a survivor
//!   and its start on sim1, and when the last survivor had stopped them;
//! - doubles: monitors seen with two running copies, on one node or two.
//!
//!     cargo bench --bench failover_gap            (MariaDB from KC_TEST_MARIADB_URL)

#[path = "../tests/common/mod.rs"]
mod common;

use common::{http_json, poll_until, sim_process, Process, TestDb};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

const NODES: usize = 5;
const PER_NODE: usize = 800;
/// Starts a node does in one push clear of its minute cron.
const BATCH: usize = 250;
const NODE_AUTH: &str = "Bearer gap-node-secret";
const TOKEN: &str = "gap-operations-token-0123";
const LIMIT: Duration = Duration::from_secs(600);

fn wall_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Each node's running monitors: id → (copies, start time in epoch ms).
fn snapshot(hosts: &[&str]) -> Vec<Option<HashMap<u32, (u64, i64)>>> {
    hosts
        .iter()
        .map(|host| {
            let body = http_json(host, "GET", "/api/v1/running", None)?;
            Some(
                body["monitors"]
                    .as_array()?
                    .iter()
                    .filter_map(|m| {
                        let since = chrono::DateTime::parse_from_rfc3339(m["since"].as_str()?).ok()?.timestamp_millis();
                        Some((m["id"].as_u64()? as u32, (m["copies"].as_u64()?, since)))
                    })
                    .collect(),
            )
        })
        .collect()
}

/// Monitors with more than one running copy across the nodes.
fn doubled(snap: &[Option<HashMap<u32, (u64, i64)>>]) -> BTreeSet<u32> {
    let mut copies: BTreeMap<u32, u64> = BTreeMap::new();
    for node in snap.iter().flatten() {
        for (id, (c, _)) in node {
            *copies.entry(*id).or_default() += c;
        }
    }
    copies.into_iter().filter(|(_, c)| *c > 1).map(|(id, _)| id).collect()
}

fn percentiles(mut values: Vec<i64>) -> String {
    values.sort();
    let at = |p: f64| values[((values.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
    format!("p50 {:.1} s, p90 {:.1} s, max {:.1} s", at(0.5), at(0.9), at(1.0))
}

fn main() {
    std::env::set_var("KC_REQUIRE_MARIADB", "1");
    common::run(async {
        let t = TestDb::mariadb().await.expect("MariaDB is required");
        t.migrate().await;
        for i in 1..=NODES {
            t.add_monitors(&format!("sim{i}"), PER_NODE).await;
        }
        // paused first, resumed in waves the nodes can start before their cron
        t.exec("UPDATE monitor SET active = 0").await;
        let ports: Vec<u16> = (0..NODES).map(|_| common::free_port()).collect();
        let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let all: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let mut sims: Vec<Option<Process>> =
            (0..NODES).map(|i| Some(sim_process(&format!("sim{}", i + 1), ports[i], &t.url, NODE_AUTH, 1.0))).collect();
        // the monitors start in waves before kuma-cluster comes: nodes busy
        // with a setup it did not order would look like they time out
        for wave in 0..PER_NODE.div_ceil(BATCH) {
            let (low, high) = (wave * BATCH, ((wave + 1) * BATCH).min(PER_NODE));
            // resumed only inside the window, or the nodes' cron would start them too
            common::sleep_until_second(3, 6);
            t.exec(&format!("UPDATE monitor SET active = 1 WHERE (id - 1) % {PER_NODE} >= {low} AND (id - 1) % {PER_NODE} < {high}")).await;
            common::push_reconciles(&hosts, NODE_AUTH);
        }
        let active: BTreeSet<u32> = (1..=(NODES * PER_NODE) as u32).collect();
        poll_until(LIMIT, || common::run_exactly_once(&all, &active)).expect("a settled cluster");
        let listen = format!("127.0.0.1:{}", common::free_port());
        let _cluster = common::serve_process(&t.url, &listen, TOKEN, NODE_AUTH, &[("KUMA_CLUSTER__PLACEMENT__LIMIT_PER_NODE", "2000")]);
        poll_until(LIMIT, || common::http_get(&listen, "/lb/available-nodes").is_some_and(|r| r.contains(r#""ready":5"#)))
            .expect("five ready nodes");

        common::sleep_until_second(40, 41);
        let kill = wall_ms();
        drop(sims[0].take());
        let moved: BTreeSet<u32> = (1..=PER_NODE as u32).collect();
        let mut started: HashMap<u32, i64> = HashMap::new();
        let mut doubles: BTreeSet<u32> = BTreeSet::new();
        poll_until(LIMIT, || {
            let snap = snapshot(&all[1..]);
            doubles.extend(doubled(&snap));
            for node in snap.iter().flatten() {
                for (id, (_, since)) in node {
                    if moved.contains(id) {
                        started.entry(*id).or_insert(*since);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
            started.len() == moved.len()
        })
        .expect("sim1's monitors run elsewhere");
        let detection = http_json(&listen, "GET", "/lb/events?per_page=500", Some(TOKEN))
            .and_then(|e| {
                e["items"].as_array()?.iter().find(|e| e["kind"] == "node_down").and_then(|e| {
                    chrono::DateTime::parse_from_rfc3339(e["created_at"].as_str()?).ok().map(|t| t.timestamp_millis() - kill)
                })
            })
            .unwrap_or(0);
        let gaps: Vec<i64> = started.values().map(|s| s - kill).collect();
        println!(
            "failover of {PER_NODE} monitors from 1 of {NODES} nodes: gap {}; lower bound {:.1} s (detection {:.1} s + {} ÷ 5/s); doubles {}",
            percentiles(gaps),
            detection as f64 / 1000.0 + (PER_NODE / (NODES - 1)) as f64 / 5.0,
            detection as f64 / 1000.0,
            PER_NODE / (NODES - 1),
            doubles.len()
        );

        sims[0] = Some(sim_process("sim1", ports[0], &t.url, NODE_AUTH, 1.0));
        let restart = wall_ms();
        let mut stopped: HashMap<u32, i64> = HashMap::new();
        let mut home: HashMap<u32, i64> = HashMap::new();
        let mut doubles: BTreeSet<u32> = BTreeSet::new();
        poll_until(LIMIT, || {
            let snap = snapshot(&all);
            let now = wall_ms();
            doubles.extend(doubled(&snap));
            let elsewhere: BTreeSet<u32> = snap[1..].iter().flatten().flat_map(|n| n.keys().copied()).collect();
            for id in &moved {
                if !elsewhere.contains(id) {
                    stopped.entry(*id).or_insert(now);
                }
            }
            if let Some(sim1) = &snap[0] {
                for (id, (_, since)) in sim1 {
                    home.entry(*id).or_insert(*since);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
            home.len() == moved.len() && stopped.len() == moved.len()
        })
        .expect("sim1 runs its monitors again");
        let unchecked: Vec<i64> = moved.iter().map(|id| (home[id] - stopped[id]).max(0)).collect();
        let last_stop = stopped.values().max().unwrap() - restart;
        println!(
            "revert of {PER_NODE} monitors to sim1: unchecked between old stop and new start {}; last old copy stopped {:.1} s after the restart; all home {:.1} s after it; doubles {}",
            percentiles(unchecked),
            last_stop as f64 / 1000.0,
            (home.values().max().unwrap() - restart) as f64 / 1000.0,
            doubles.len()
        );
        t.drop_db().await;
    });
}
