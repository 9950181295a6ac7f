//! End to end with real processes on MariaDB: three `kuma-cluster sim-node`
//! processes and `kuma-cluster serve`. A node killed with SIGKILL has its
//! monitors run by exactly one live node each, and gets them back when it
//! restarts; in between, no monitor runs on zero nodes or on two.

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
