//! End to end with real processes: `kuma-cluster sim-node` processes and
//! `kuma-cluster serve`. On MariaDB, a node killed with SIGKILL has its
//! monitors run by exactly one live node each, and gets them back when it
//! restarts; in between, no monitor runs on zero nodes or on two. On SQLite,
//! thousands of idle websockets through one worker leave plain HTTP served.

mod common;

use common::{poll_until, run_exactly_once, running_at, sim_process, TestDb};
use std::collections::BTreeSet;
use std::time::Duration;

const AUTH: &str = "Bearer e2e-node-secret";
const TOKEN: &str = "e2e-operations-token-0123";
const LIMIT: Duration = Duration::from_secs(60);
const SPEED: f64 = 10.0;

mod mariadb {
    #[test]
    fn a_killed_sim_node_process_fails_over_and_back_with_every_monitor_run_exactly_once() {
        super::killed_sim_node_process_fails_over_and_back();
    }
}

mod sqlite {
    #[test]
    fn five_thousand_idle_websockets_through_one_worker_leave_plain_http_served() {
        super::idle_websockets_leave_http_served(5000);
    }
}

/// The open websockets `/lb/metrics` reports.
fn websockets_open(listen: &str) -> Option<u64> {
    let raw = common::http_request(listen, "GET", "/lb/metrics", Some(TOKEN))?;
    raw.lines().find_map(|l| l.strip_prefix("kuma_cluster_websockets_open ")?.trim().parse().ok())
}

fn idle_websockets_leave_http_served(count: usize) {
    common::run(async {
        let t = TestDb::sqlite().await;
        t.migrate().await;
        t.add_monitors("sim1", 5).await;
        let port = common::free_port();
        let host = format!("127.0.0.1:{port}");
        let _sim = sim_process("sim1", port, &t.url, AUTH, SPEED);
        poll_until(LIMIT, || common::http_get(&host, "/api/v1/health").is_some_and(|r| r.starts_with("HTTP/1.1 200")))
            .expect("sim node answers");
        let polling = common::http_get(&host, "/socket.io/?EIO=4&transport=polling").unwrap();
        assert!(polling.starts_with("HTTP/1.1 400"), "like Kuma, the sim speaks socket.io over websockets only: {polling}");
        let listen = format!("127.0.0.1:{}", common::free_port());
        let (total, connections) = ((count + 100).to_string(), (count + 200).to_string());
        let _cluster = common::serve_process(&t.url, &listen, TOKEN, AUTH, &[
            ("KUMA_CLUSTER__PROXY__WORKERS", "1"),
            ("KUMA_CLUSTER__PROXY__WS_MAX_TOTAL", total.as_str()),
            ("KUMA_CLUSTER__PROXY__WS_MAX_PER_NODE", total.as_str()),
            ("KUMA_CLUSTER__SERVER__MAX_CONNECTIONS", connections.as_str()),
            ("KUMA_CLUSTER__SERVER__MAX_CONNECTIONS_PER_CLIENT", connections.as_str()),
        ]);
        poll_until(LIMIT, || common::http_get(&listen, "/lb/available-nodes").is_some_and(|r| r.contains(r#""ready":1"#)))
            .expect("kuma-cluster sees the node ready");
        let sockets = common::open_socket_io(&listen, count).await;
        let listen_http = listen.clone();
        tokio::task::spawn_blocking(move || {
            assert_eq!(websockets_open(&listen_http), Some(count as u64));
            for _ in 0..20 {
                let page = common::http_get(&listen_http, "/").expect("plain HTTP answers with the websockets open");
                assert!(page.starts_with("HTTP/1.1 200") && page.contains("Simulated Kuma node sim1"), "{page}");
            }
        })
        .await
        .unwrap();
        drop(sockets);
        let listen_http = listen.clone();
        let closed = tokio::task::spawn_blocking(move || poll_until(LIMIT, || websockets_open(&listen_http) == Some(0))).await.unwrap();
        assert!(closed.is_some(), "every bridge ends when its client leaves");
        t.drop_db().await;
    });
}

fn killed_sim_node_process_fails_over_and_back() {
    common::run(async {
        let Some(t) = TestDb::mariadb().await else { return };
        t.migrate().await;
        for i in 1..=3 {
            t.add_monitors(&format!("sim{i}"), 100).await;
        }
        t.exec("UPDATE monitor SET active = 0 WHERE id % 50 = 0").await;
        let active: BTreeSet<u32> = t.monitors().await.into_iter().filter(|m| m.3).map(|m| m.0 as u32).collect();
        let ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
        let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        // ten times a real node's pace: a 6 s cron, 50 starts a second
        let mut sims: Vec<Option<common::Process>> =
            (0..3).map(|i| Some(sim_process(&format!("sim{}", i + 1), ports[i], &t.url, AUTH, SPEED))).collect();
        for host in &hosts {
            poll_until(LIMIT, || common::http_get(host, "/api/v1/health").is_some_and(|r| r.starts_with("HTTP/1.1 200")))
                .expect("sim node answers");
        }
        let listen = format!("127.0.0.1:{}", common::free_port());
        let fast = common::fast_supervision(SPEED);
        let settings: Vec<(&str, &str)> = fast.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let _cluster = common::serve_process(&t.url, &listen, TOKEN, AUTH, &settings);
        poll_until(LIMIT, || common::http_get(&listen, "/lb/available-nodes").is_some_and(|r| r.contains(r#""ready":3"#)))
            .expect("kuma-cluster sees three ready nodes");
        let all: Vec<&str> = hosts.iter().map(String::as_str).collect();
        poll_until(LIMIT, || run_exactly_once(&all, &active)).expect("after the cold starts, each monitor runs once");

        drop(sims[0].take()); // SIGKILL
        let live = &all[1..];
        poll_until(LIMIT, || run_exactly_once(live, &active)).expect("sim1's monitors run elsewhere, each once");
        for _ in 0..20 {
            assert!(run_exactly_once(live, &active), "after failover, never zero or two runners");
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = common::http_json(&listen, "GET", "/lb/node-status", Some(TOKEN)).unwrap();
        assert_eq!(status["nodes"][0]["state"], "down");

        sims[0] = Some(sim_process("sim1", ports[0], &t.url, AUTH, SPEED));
        let sim1_home: BTreeSet<u32> = (1..=100).filter(|id| active.contains(id)).collect();
        poll_until(LIMIT, || {
            running_at(&hosts[0]).is_some_and(|r| r.into_iter().collect::<BTreeSet<_>>() == sim1_home)
                && run_exactly_once(&all, &active)
        })
        .expect("sim1 gets its own monitors back, each run once");
        let open = t.count("SELECT COUNT(*) FROM kc_move_ledger WHERE undone_at IS NULL").await;
        assert_eq!(open, 0, "every failover row is closed by the revert");
        drop(sims);
        t.drop_db().await;
    });
}
