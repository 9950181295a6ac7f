//! The `kuma-cluster` binary: config errors, `migrate`, and `serve` with a
//! graceful stop.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kuma-cluster"));
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1");
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("KUMA_CLUSTER__")) {
        cmd.env_remove(key);
    }
    cmd
}

#[test]
fn an_invalid_setting_prints_one_line_naming_the_key_and_exits_with_2() {
    let out = binary().arg("serve").env("KUMA_CLUSTER__HEALTH__FALL", "0").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr, "config: health.fall: must be at least 1\n");
}

#[test]
fn a_busy_listen_port_prints_one_line_naming_the_address_and_exits_with_2() {
    let dir = common::TempDir::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = binary()
        .arg("serve")
        .env("KUMA_CLUSTER__DATABASE__URL", format!("sqlite://{}/kc.db?mode=rwc", dir.0.display()))
        .env("KUMA_CLUSTER__SERVER__LISTEN", &addr)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with(&format!("error: cannot listen on {addr}: ")), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn migrate_against_a_database_that_refuses_fails_at_once_with_one_line_naming_it_and_exit_2() {
    let port = common::free_port();
    let started = std::time::Instant::now();
    let out = binary()
        .arg("migrate")
        .env("KUMA_CLUSTER__DATABASE__URL", format!("mysql://kuma:secret@127.0.0.1:{port}/kuma"))
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr, format!("error: cannot reach the database at 127.0.0.1:{port}: connection refused\n"));
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "at once, not after retries");
}

#[test]
fn a_missing_config_file_exits_with_2() {
    let out = binary().args(["--config", "/nonexistent/kc.toml", "serve"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8(out.stderr).unwrap().lines().count(), 1);
}

#[test]
fn migrate_creates_the_embedded_sqlite_database_and_its_directory() {
    let dir = common::TempDir::new();
    let db = dir.0.join("nested/kc.db");
    let out = binary()
        .arg("migrate")
        .env("KUMA_CLUSTER__DATABASE__URL", format!("sqlite://{}?mode=rwc", db.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(db.is_file());
}

#[test]
fn serve_answers_ping_and_stops_cleanly_on_sigterm() {
    let dir = common::TempDir::new();
    let addr = format!("127.0.0.1:{}", common::free_port());
    let child = binary()
        .arg("serve")
        .env("KUMA_CLUSTER__DATABASE__URL", format!("sqlite://{}/kc.db?mode=rwc", dir.0.display()))
        .env("KUMA_CLUSTER__SERVER__LISTEN", &addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let response = loop {
        if let Some(r) = common::http_get(&addr, "/lb/ping") {
            break r;
        }
        assert!(Instant::now() < deadline, "serve never answered");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""status":"ok""#));
    assert!(common::http_get(&addr, "/health").unwrap().starts_with("HTTP/1.1 200"));

    // the container health check: alive, but not ready without any node
    let health = |extra: &[&str]| {
        binary()
            .arg("health")
            .args(extra)
            .env("KUMA_CLUSTER__SERVER__LISTEN", &addr)
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(health(&[]), Some(0));
    assert_eq!(health(&["--ready"]), Some(1), "no node is ready");

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit {:?}", out.status);
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(logs.contains("shutting down") && logs.contains("stopped"), "{logs}");
}

#[test]
fn an_operator_command_against_an_unreachable_cluster_fails_with_one_line() {
    let out = binary()
        .args(["nodes", "--url", &format!("http://127.0.0.1:{}", common::free_port())])
        .env_remove("KUMA_CLUSTER_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("error: cannot reach http://127.0.0.1:") && stderr.lines().count() == 1, "{stderr}");
}
