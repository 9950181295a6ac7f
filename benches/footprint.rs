//! Resident memory of `kuma-cluster serve` supervising 50 nodes and 10 000
//! monitors on MariaDB, settled and through a failover. The fake nodes live in
//! this process; only the supervisor's process is measured.
//!
//!     cargo bench --bench footprint           (MariaDB from KC_TEST_MARIADB_URL)

#[path = "../tests/common/mod.rs"]
mod common;

use common::{FakeNode, TestDb};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn sample_rss(pid: u32, for_how_long: Duration) -> u64 {
    let until = Instant::now() + for_how_long;
    let mut max = 0;
    while Instant::now() < until {
        max = max.max(status_kib(pid, "VmRSS:"));
        actix_rt::time::sleep(Duration::from_millis(250)).await;
    }
    max
}

fn main() {
    std::env::set_var("KC_REQUIRE_MARIADB", "1");
    common::run(async {
        let t = TestDb::mariadb().await.expect("MariaDB is required");
        t.migrate().await;
        let nodes: Vec<FakeNode> = (0..50).map(|_| FakeNode::start()).collect();
        for (i, node) in nodes.iter().enumerate() {
            t.add_node(&format!("node{}", i + 1), &node.host).await;
            t.add_monitors(&format!("node{}", i + 1), 200).await;
        }
        let port = common::free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_kuma-cluster"))
            .arg("serve")
            .env("RUST_LOG", "warn")
            .env("KUMA_CLUSTER__DATABASE__URL", &t.url)
            .env("KUMA_CLUSTER__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();

        let settled = sample_rss(pid, Duration::from_secs(20)).await;
        nodes[0].set_health(503);
        let start = Instant::now();
        loop {
            let left = t
                .count("SELECT COUNT(*) FROM monitor WHERE COALESCE(assigned_node, node_id) = 'node1'")
                .await;
            if left == 0 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "failover never happened");
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
        let after_failover = sample_rss(pid, Duration::from_secs(10)).await;
        let peak = status_kib(pid, "VmHWM:");
        println!("supervisor, 50 nodes, 10000 monitors: settled RSS {:.1} MiB, after a failover {:.1} MiB, peak {:.1} MiB",
            settled as f64 / 1024.0, after_failover as f64 / 1024.0, peak as f64 / 1024.0);

        Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
        child.wait().unwrap();
        for node in nodes {
            node.stop().await;
        }
        t.drop_db().await;
    });
}
