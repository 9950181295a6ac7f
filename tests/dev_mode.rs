//! `kuma-cluster dev` as a newcomer runs it: it prints its token, serves three
//! simulated nodes with their monitors, and a killed node's monitors move away
//! and come back when it is revived.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Monitors per dev node, from `/lb/capacity`.
fn counts(addr: &str, token: &str) -> Vec<(String, bool, u64)> {
    let Some(raw) = common::http_request(addr, "GET", "/lb/capacity", Some(token)) else { return vec![] };
    let body: serde_json::Value = serde_json::from_str(raw.split("\r\n\r\n").nth(1).unwrap_or("null")).unwrap_or_default();
    body["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| (n["node_id"].as_str().unwrap_or("").to_owned(), n["ready"] == true, n["current_count"].as_u64().unwrap_or(0)))
        .collect()
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dev_mode_shows_a_node_failing_over_and_coming_back() {
    let dir = common::TempDir::new();
    let addr = format!("127.0.0.1:{}", common::free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_kuma-cluster"))
        .arg("dev")
        .current_dir(&dir.0)
        .env("KUMA_CLUSTER__SERVER__LISTEN", &addr)
        .env("KUMA_CLUSTER__HEALTH__INTERVAL", "200ms")
        .env("KUMA_CLUSTER__HEALTH__DOWN_INTERVAL", "200ms")
        .env("KUMA_CLUSTER__CLUSTER__HOLD_DOWN", "500ms")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let token = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("token: ").map(str::to_owned))
        .expect("dev prints its token");
    let all_at_home = |c: &[(String, bool, u64)]| c.len() == 3 && c.iter().all(|(_, ready, n)| *ready && *n == 100);
    wait_until("three ready nodes with 100 monitors each", || all_at_home(&counts(&addr, &token)));
    assert!(dir.0.join("data/dev.db").is_file(), "the embedded database lives under ./data");
    let page = common::http_get(&addr, "/").unwrap();
    assert!(page.contains("Simulated Kuma node dev"), "{page}");

    let killed = common::http_request(&addr, "POST", "/dev/nodes/dev1/kill", Some(&token)).unwrap();
    assert!(killed.starts_with("HTTP/1.1 200"), "{killed}");
    wait_until("dev1's monitors on dev2 and dev3", || {
        let c = counts(&addr, &token);
        c.len() == 3 && !c[0].1 && c[0].2 == 0 && c[1].2 + c[2].2 == 300
    });
    let again = common::http_request(&addr, "POST", "/dev/nodes/dev1/kill", Some(&token)).unwrap();
    assert!(again.starts_with("HTTP/1.1 409"), "{again}");
    let anonymous = common::http_request(&addr, "POST", "/dev/nodes/dev1/revive", None).unwrap();
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");

    let revived = common::http_request(&addr, "POST", "/dev/nodes/dev1/revive", Some(&token)).unwrap();
    assert!(revived.starts_with("HTTP/1.1 200"), "{revived}");
    wait_until("dev1's monitors back home", || all_at_home(&counts(&addr, &token)));
    let _ = child.kill();
    let _ = child.wait();
}
