//! The monitoring gap end to end with real processes, default settings: 4000
//! monitors on 5 `kuma-cluster sim-node` processes (each with Kuma's one-minute
//! reconcile cron) and `kuma-cluster serve`, on MariaDB. One node is killed with
//! SIGKILL, then restarted. Measured from the kill (or restart):
//!   detection   until kuma-cluster reports the node down (or up),
//!   transaction the decision that moved the monitors, read to commit,
//!   gap         until every moved monitor runs on its new node, exactly once.
//! Once with the reconcile push, once without (the nodes refuse the push, so
//! only their cron picks the moves up).
//!
//!     cargo bench --bench failover_gap            (MariaDB from KC_TEST_MARIADB_URL)

#[path = "../tests/common/mod.rs"]
mod common;

use common::{http_json, poll_until, run_exactly_once, running_at, sim_process, Process, TestDb};
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NODES: usize = 5;
const PER_NODE: usize = 800;
const NODE_AUTH: &str = "Bearer gap-node-secret";
const TOKEN: &str = "gap-operations-token-0123";
const LIMIT: Duration = Duration::from_secs(180);

struct Phase {
    detection: Duration,
    transaction_ms: u64,
    gap: Duration,
}

/// Waits for the node's state and for the decision that moved `moved` monitors.
fn observe(listen: &str, node: usize, state: &str, field: &str, moved: usize, done: impl Fn() -> bool) -> Phase {
    let start = Instant::now();
    let id = format!("sim{}", node + 1);
    let detection = poll_until(LIMIT, || {
        http_json(listen, "GET", "/lb/node-status", Some(TOKEN)).is_some_and(|s| {
            s["nodes"].as_array().into_iter().flatten().any(|n| n["node_id"] == id.as_str() && n["state"] == state)
        })
    })
    .expect("the supervisor saw the node change");
    let mut transaction_ms = 0;
    poll_until(LIMIT, || {
        let s = http_json(listen, "GET", "/lb/system-status", Some(TOKEN));
        let last = s.as_ref().map(|s| &s["supervisor"]["last_decision"]);
        match last {
            Some(d) if d[field].as_u64() == Some(moved as u64) => {
                transaction_ms = d["duration_ms"].as_u64().unwrap_or(0);
                true
            }
            _ => false,
        }
    })
    .expect("the decision that moved the monitors");
    poll_until(LIMIT, done).expect("every moved monitor runs, exactly once");
    Phase { detection, transaction_ms, gap: start.elapsed() }
}

fn run(t: &TestDb, push: bool) -> (Phase, Phase) {
    let ports: Vec<u16> = (0..NODES).map(|_| common::free_port()).collect();
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut sims: Vec<Option<Process>> =
        (0..NODES).map(|i| Some(sim_process(&format!("sim{}", i + 1), ports[i], &t.url, NODE_AUTH, 1.0))).collect();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let mut cluster = Command::new(env!("CARGO_BIN_EXE_kuma-cluster"));
    cluster
        .arg("serve")
        .env("KUMA_CLUSTER__DATABASE__URL", &t.url)
        .env("KUMA_CLUSTER__SERVER__LISTEN", &listen)
        .env("KUMA_CLUSTER__API__TOKENS", TOKEN)
        .env("KUMA_CLUSTER__PLACEMENT__LIMIT_PER_NODE", "2000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    if push {
        cluster.env("KUMA_CLUSTER__NODES__AUTH_HEADER", NODE_AUTH);
    }
    let _cluster = Process(cluster.spawn().unwrap());
    poll_until(LIMIT, || common::http_get(&listen, "/lb/available-nodes").is_some_and(|r| r.contains(r#""ready":5"#)))
        .expect("five ready nodes");
    let active: BTreeSet<u32> = (1..=(NODES * PER_NODE) as u32).collect();
    let all: Vec<&str> = hosts.iter().map(String::as_str).collect();
    poll_until(LIMIT, || run_exactly_once(&all, &active)).expect("a settled cluster");
    std::thread::sleep(Duration::from_secs(3));

    drop(sims[0].take());
    let failover = observe(&listen, 0, "down", "displaced", PER_NODE, || run_exactly_once(&all[1..], &active));
    sims[0] = Some(sim_process("sim1", ports[0], &t.url, NODE_AUTH, 1.0));
    let home: BTreeSet<u32> = (1..=PER_NODE as u32).collect();
    let revert = observe(&listen, 0, "up", "reverted", PER_NODE, || {
        running_at(&hosts[0]).is_some_and(|r| r.into_iter().collect::<BTreeSet<_>>() == home) && run_exactly_once(&all, &active)
    });
    (failover, revert)
}

fn main() {
    std::env::set_var("KC_REQUIRE_MARIADB", "1");
    common::run(async {
        for push in [true, false] {
            let t = TestDb::mariadb().await.expect("MariaDB is required");
            t.migrate().await;
            for i in 1..=NODES {
                t.add_monitors(&format!("sim{i}"), PER_NODE).await;
            }
            let (failover, revert) = run(&t, push);
            let label = if push { "with the reconcile push" } else { "without the push (node cron only)" };
            for (name, p) in [("failover", failover), ("revert", revert)] {
                println!(
                    "{label}, {name}: detection {:.2} s, transaction {} ms, gap {:.2} s",
                    p.detection.as_secs_f64(),
                    p.transaction_ms,
                    p.gap.as_secs_f64()
                );
            }
            t.drop_db().await;
        }
    });
}
