//! The supervisor under database faults: a decision that cannot finish is
//! failed at its deadline and retried, while traffic leaves a dead node at its
//! transition and readiness answers at once. The database is reached through a
//! controllable relay (`common::relay`) that passes, refuses, resets, delays
//! or blackholes.

mod common;

mod mariadb {
    use super::common::relay::{Fault, Relay};
    use super::common::{self, SilentProbe, Supervisor, TestDb};
    use kuma_cluster::config::DatabaseSettings;
    use kuma_cluster::core::health::Health::{Down, Unknown, Up};
    use kuma_cluster::supervisor::actors::cluster::{Reconcile, Shutdown};
    use kuma_cluster::supervisor::store;
    use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};
    use std::collections::BTreeSet;
    use std::net::ToSocketAddrs;
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    /// The MariaDB server the test database is on.
    fn server_of(t: &TestDb) -> std::net::SocketAddr {
        let rest = t.url.split("://").nth(1).unwrap();
        let authority = rest.split('/').next().unwrap();
        let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
        host.to_socket_addrs().unwrap().next().unwrap()
    }

    /// A relay to the test database's server, and a supervisor whose
    /// connection goes through it (1 s to connect or acquire, decisions due in
    /// 1 s), settled on `nodes` nodes with 10 monitors each.
    async fn behind_a_relay(t: &TestDb, nodes: usize) -> (Relay, Supervisor, DatabaseConnection) {
        t.migrate().await;
        for i in 1..=nodes {
            t.add_node(&format!("node{i}"), "127.0.0.1:9").await;
            t.add_monitors(&format!("node{i}"), 10).await;
        }
        let relay = Relay::start(server_of(t));
        let settings = DatabaseSettings {
            url: relay.url_for(&t.url),
            connect_timeout: Duration::from_secs(1),
            acquire_timeout: Duration::from_secs(1),
        };
        let db = store::connect(&settings).await.unwrap();
        let overrides = Supervisor::quiet_settings(&[("KUMA_CLUSTER__CLUSTER__DECISION_TIMEOUT", "1s")]);
        let sup = Supervisor::on_connection(db.clone(), Rc::new(SilentProbe), overrides);
        sup.reconcile().await;
        for i in 1..=nodes {
            sup.transition(&format!("node{i}"), Unknown, Up).await;
        }
        sup.reconcile().await;
        (relay, sup, db)
    }

    /// Stops the supervisor and closes its pool while the runtime still runs.
    async fn stop(sup: Supervisor, db: DatabaseConnection) {
        sup.addr.send(Shutdown).await.unwrap();
        let _ = db.close().await;
    }

    /// The database takes connections but answers nothing for 30 s while
    /// node1 dies. Routing drops node1 at the transition; the supervisor keeps
    /// answering; the failover, failed at each deadline meanwhile, commits
    /// within 2 s of the database's return (the supervisor pings it while
    /// decisions fail). A shutdown during such a hang ends within its deadline.
    #[test]
    fn with_the_database_blackholed_a_dead_node_loses_its_traffic_at_once_and_fails_over_soon_after_the_return() {
        common::run(async {
            let Some(t) = TestDb::mariadb().await else { return };
            let (relay, sup, db) = behind_a_relay(&t, 3).await;

            relay.set(Fault::Blackhole);
            sup.transition("node1", Up, Down).await;
            assert!(!sup.routing.load().node("node1").unwrap().ready, "traffic leaves node1 at its transition");
            let outage = Instant::now();
            while outage.elapsed() < Duration::from_secs(30) {
                let asked = Instant::now();
                let state = sup.state().await;
                assert!(asked.elapsed() < Duration::from_secs(1), "the supervisor answers during the outage");
                assert!(!sup.routing.load().node("node1").unwrap().ready);
                assert_eq!(state.moves, 0);
                actix_rt::time::sleep(Duration::from_secs(1)).await;
            }
            assert!(sup.state().await.failed_decisions >= 2, "decisions failed at their deadline and were retried");
            let unready = sup.vitals.load().unready(Instant::now(), Duration::from_secs(3600));
            assert!(!unready.is_empty(), "readiness knows");
            assert_eq!(t.running_on("node1").await, 10, "nothing moved during the outage");

            relay.set(Fault::Pass);
            let back = Instant::now();
            common::eventually(Duration::from_secs(30), "the failover commits", || async { t.running_on("node1").await == 0 }).await;
            let took = back.elapsed();
            assert!(took < Duration::from_secs(3), "committed {took:?} after the database's return");
            assert_eq!(t.running_on("node2").await + t.running_on("node3").await, 30);

            relay.set(Fault::Blackhole);
            sup.transition("node2", Up, Down).await;
            let stop = Instant::now();
            sup.addr.send(Shutdown).await.unwrap();
            assert!(stop.elapsed() < Duration::from_secs(5), "shutdown waited {:?}", stop.elapsed());
            relay.set(Fault::Pass);
            let _ = db.close().await;
            t.drop_db().await;
        });
    }

    /// Another client holds node1's monitor rows locked: the failover's
    /// updates wait on the lock. The decision fails at its deadline (1 s), is
    /// retried with backoff, and commits once the lock is gone; the node's
    /// death reached the routing snapshot at the transition all along.
    #[test]
    fn a_decision_stuck_on_a_lock_fails_at_its_deadline_while_traffic_leaves_the_dead_node_at_once() {
        common::run(async {
            let Some(t) = TestDb::mariadb().await else { return };
            t.migrate().await;
            for i in 1..=3 {
                t.add_node(&format!("node{i}"), "127.0.0.1:9").await;
                t.add_monitors(&format!("node{i}"), 10).await;
            }
            let sup = Supervisor::start(&t, Rc::new(SilentProbe), &[("KUMA_CLUSTER__CLUSTER__DECISION_TIMEOUT", "1s")]);
            sup.reconcile().await;
            for i in 1..=3 {
                sup.transition(&format!("node{i}"), Unknown, Up).await;
            }
            sup.reconcile().await;

            let blocker = t.db.begin().await.unwrap();
            blocker.execute_unprepared("SELECT id FROM monitor WHERE node_id = 'node1' FOR UPDATE").await.unwrap();
            sup.transition("node1", Up, Down).await;
            assert!(!sup.routing.load().node("node1").unwrap().ready, "traffic leaves node1 at its transition");
            let started = Instant::now();
            let error = sup.addr.send(Reconcile).await.unwrap().unwrap_err();
            assert!(error.contains("no answer from the database within 1s"), "{error}");
            assert!(started.elapsed() < Duration::from_secs(30), "failed at its deadline, not the lock's");
            let state = sup.state().await;
            assert!(state.retry_in_ms.is_some(), "retried with backoff");
            assert_eq!(t.running_on("node1").await, 10, "nothing moved while the rows were locked");
            assert!(sup.vitals.load().failing.is_some(), "readiness knows decisions fail");

            blocker.rollback().await.unwrap();
            common::eventually(Duration::from_secs(30), "the retry commits the failover", || async {
                t.running_on("node1").await == 0 && sup.vitals.load().failing.is_none()
            })
            .await;
            t.drop_db().await;
        });
    }

    /// `serve` started while its database refuses connections (the usual
    /// order in a container deployment): the front answers at once, readiness
    /// says why it is not ready within 1 s, one log line per attempt names the
    /// database and the cause, and once the database comes, kuma-cluster
    /// creates its tables and becomes ready.
    #[test]
    fn serve_started_before_its_database_answers_not_ready_says_why_and_gets_ready_when_it_comes() {
        common::run(async {
            let Some(t) = TestDb::mariadb().await else { return };
            store::create_kuma_tables(&t.db).await.unwrap();
            let relay = Relay::start(server_of(&t));
            relay.set(Fault::Refuse);
            let _sim = common::sim_process("sim1", common::free_port(), &t.url, "Bearer faults", 10.0);
            let dir = common::TempDir::new();
            let log = dir.0.join("serve.log");
            let listen = format!("127.0.0.1:{}", common::free_port());
            let _serve = common::serve_process_logging(
                &relay.url_for(&t.url),
                &listen,
                "faults-operations-token-0123",
                "Bearer faults",
                &[("KUMA_CLUSTER__DATABASE__ACQUIRE_TIMEOUT", "1s")],
                Some(log.clone()),
            );
            common::poll_until(Duration::from_secs(30), || common::http_get(&listen, "/health").is_some_and(|r| r.starts_with("HTTP/1.1 200")))
                .expect("the front answers while the database refuses");
            let cause = format!("cannot reach the database at {}: connection refused", relay.addr);
            let attempts = || std::fs::read_to_string(&log).unwrap_or_default().lines().filter(|l| l.contains(&cause)).count();
            common::poll_until(Duration::from_secs(60), || attempts() >= 2).expect("one line per attempt");
            let asked = Instant::now();
            let ready = common::http_get(&listen, "/lb/ready").unwrap();
            assert!(asked.elapsed() < Duration::from_secs(1), "readiness answered in {:?}", asked.elapsed());
            assert!(ready.starts_with("HTTP/1.1 503") && ready.contains(&cause), "{ready}");
            let asked = Instant::now();
            let health = common::http_json(&listen, "GET", "/lb/health", Some("faults-operations-token-0123")).expect("/lb/health answers");
            assert!(asked.elapsed() < Duration::from_secs(1), "/lb/health answered in {:?}", asked.elapsed());
            assert_eq!(health["database"], false, "{health}");
            assert_eq!(t.count("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'kc_move_ledger'").await, 0);

            relay.set(Fault::Pass);
            common::poll_until(Duration::from_secs(90), || common::http_get(&listen, "/lb/ready").is_some_and(|r| r.starts_with("HTTP/1.1 200")))
                .expect("ready once the database answers");
            assert_eq!(t.count("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'kc_move_ledger'").await, 1);

            // a database that takes connections and answers nothing: both still answer within 1 s
            relay.set(Fault::Blackhole);
            for path in ["/lb/ready", "/lb/health"] {
                let asked = Instant::now();
                let answer = common::http_request(&listen, "GET", path, Some("faults-operations-token-0123"));
                assert!(answer.is_some() && asked.elapsed() < Duration::from_secs(1), "{path} answered in {:?}", asked.elapsed());
            }
            relay.set(Fault::Pass);
            t.drop_db().await;
        });
    }

    /// The rows as a settled cluster must have them when `live` are the ready
    /// nodes: every active monitor on one of them, and every one away from its
    /// home with the open ledger row that says where it went.
    async fn rows_are_consistent(t: &TestDb, live: &[String]) {
        let open: Vec<(i64, String)> = t
            .rows("SELECT CAST(monitor_id AS CHAR), to_node FROM kc_move_ledger WHERE undone_at IS NULL", 2)
            .await
            .into_iter()
            .map(|r| (r[0].as_ref().unwrap().parse().unwrap(), r[1].clone().unwrap()))
            .collect();
        for (id, home, assigned, active) in t.monitors().await {
            if !active {
                continue;
            }
            let on = assigned.clone().or(home.clone()).unwrap();
            assert!(live.contains(&on), "monitor {id} is on {on}, not on a ready node");
            if assigned.is_some() {
                assert!(open.iter().any(|(m, to)| *m == id && *to == on), "monitor {id} on {on} has no open ledger row");
            }
        }
    }

    /// kuma-cluster is killed with SIGKILL at a random moment of a failover,
    /// then started again, 20 times (a node is killed each round and restarted
    /// after). After each failover and each return has settled, every active
    /// monitor runs on exactly one ready node, and the database says so row by
    /// row, with a ledger row for every displacement.
    #[test]
    fn twenty_kills_of_kuma_cluster_during_failovers_leave_every_monitor_on_one_ready_node_with_its_ledger_row() {
        const AUTH: &str = "Bearer kill-nine";
        const TOKEN: &str = "kill-nine-operations-token";
        const SPEED: f64 = 10.0;
        let limit = Duration::from_secs(120);
        common::run(async {
            let Some(t) = TestDb::mariadb().await else { return };
            t.migrate().await;
            let common::SimSeats { active, ports, hosts } = common::SimSeats::new(&t, 3, 40).await;
            let all: Vec<&str> = hosts.iter().map(String::as_str).collect();
            let ids: Vec<String> = (1..=3).map(|i| format!("sim{i}")).collect();
            let mut sims: Vec<Option<common::Process>> =
                (0..3).map(|i| Some(common::sim_process(&ids[i], ports[i], &t.url, AUTH, SPEED))).collect();
            let fast = common::fast_supervision(SPEED);
            let settings: Vec<(&str, &str)> = fast.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let listen = format!("127.0.0.1:{}", common::free_port());
            let start = || common::serve_process(&t.url, &listen, TOKEN, AUTH, &settings);
            let mut cluster = start();
            common::poll_until(limit, || common::run_exactly_once(&all, &active)).expect("a settled cluster");
            for round in 0..20 {
                let victim = round % 3;
                drop(sims[victim].take());
                // detection takes about 0.6 s, the failover's pushes about as long
                std::thread::sleep(Duration::from_millis(fastrand::u64(0..2_500)));
                drop(cluster);
                cluster = start();
                let live: Vec<&str> = all.iter().enumerate().filter(|(i, _)| *i != victim).map(|(_, h)| *h).collect();
                common::poll_until(limit, || common::run_exactly_once(&live, &active))
                    .unwrap_or_else(|| panic!("round {round}: {}'s monitors run once elsewhere", ids[victim]));
                let ready: Vec<String> = ids.iter().enumerate().filter(|(i, _)| *i != victim).map(|(_, id)| id.clone()).collect();
                rows_are_consistent(&t, &ready).await;

                sims[victim] = Some(common::sim_process(&ids[victim], ports[victim], &t.url, AUTH, SPEED));
                let home: BTreeSet<u32> = (victim as u32 * 40 + 1..=victim as u32 * 40 + 40).collect();
                common::poll_until(limit, || {
                    common::run_exactly_once(&all, &active)
                        && common::running_at(&hosts[victim]).is_some_and(|r| r.into_iter().collect::<BTreeSet<_>>() == home)
                })
                .unwrap_or_else(|| panic!("round {round}: {} runs its own monitors again", ids[victim]));
                rows_are_consistent(&t, &ids).await;
                assert_eq!(t.count("SELECT COUNT(*) FROM kc_move_ledger WHERE undone_at IS NULL").await, 0, "round {round}");
            }
            drop(cluster);
            drop(sims);
            t.drop_db().await;
        });
    }

    /// The connection resets as the failover's `COMMIT` goes out: once before
    /// the database gets it, once right after (it commits; only the answer is
    /// lost). Either way the supervisor counts a commit that may have
    /// happened, pushes the nodes, and decides again from what the database
    /// holds: every monitor of node1 ends on one ready node, with exactly one
    /// open ledger row that says so.
    #[test]
    fn a_connection_reset_during_commit_leads_to_a_reload_and_no_monitor_is_lost_or_doubled() {
        common::run(async {
            for delivered in [false, true] {
                let Some(t) = TestDb::mariadb().await else { return };
                let (relay, sup, db) = behind_a_relay(&t, 3).await;
                relay.reset_at(b"COMMIT", delivered);
                sup.transition("node1", Up, Down).await;
                common::eventually(Duration::from_secs(30), "the failover commits after the reset", || async {
                    relay.has_reset() && t.running_on("node1").await == 0 && sup.state().await.failed_decisions >= 1
                })
                .await;
                let state = sup.state().await;
                assert_eq!(state.uncertain_commits, 1, "delivered: {delivered}");
                let open: Vec<(i64, String, String)> = t
                    .rows("SELECT CAST(monitor_id AS CHAR), to_node, reason FROM kc_move_ledger WHERE undone_at IS NULL ORDER BY monitor_id", 3)
                    .await
                    .into_iter()
                    .map(|r| (r[0].as_ref().unwrap().parse().unwrap(), r[1].clone().unwrap(), r[2].clone().unwrap()))
                    .collect();
                assert_eq!(open.len(), 10, "one row per moved monitor, delivered: {delivered}: {open:?}");
                for (id, home, assigned, _) in t.monitors().await {
                    let on = assigned.clone().or(home.clone()).unwrap();
                    assert!(on == "node2" || on == "node3", "monitor {id} on {on}");
                    if home.as_deref() == Some("node1") {
                        assert!(open.contains(&(id, on.clone(), "failover".to_owned())), "monitor {id}'s row names {on}");
                    }
                }
                stop(sup, db).await;
                t.drop_db().await;
            }
        });
    }

    /// A node that takes connections but never answers (blackholed between
    /// kuma-cluster and the node): its probes time out, it is marked down on
    /// timeouts, and new sessions go to the other node; once it answers
    /// again, it is back in service.
    #[test]
    fn a_node_that_accepts_connections_but_never_answers_is_detected_by_timeout_and_routed_around() {
        const AUTH: &str = "Bearer silent-node";
        const TOKEN: &str = "silent-node-operations-token";
        let limit = Duration::from_secs(60);
        common::run(async {
            let Some(t) = TestDb::mariadb().await else { return };
            t.migrate().await;
            let ports: Vec<u16> = (0..2).map(|_| common::free_port()).collect();
            let _sims: Vec<common::Process> =
                (0..2).map(|i| common::sim_process(&format!("sim{}", i + 1), ports[i], &t.url, AUTH, 10.0)).collect();
            common::eventually(limit, "both nodes registered", || async { t.count("SELECT COUNT(*) FROM node").await == 2 }).await;
            // Kuma's setup is done: browser traffic may go to any node
            t.exec("CREATE TABLE user (id INTEGER PRIMARY KEY, username VARCHAR(255))").await;
            t.exec("INSERT INTO user (id, username) VALUES (1, 'admin')").await;
            let relay = Relay::start(format!("127.0.0.1:{}", ports[0]).parse().unwrap());
            t.exec(&format!("UPDATE node SET host = '{}' WHERE node_id = 'sim1'", relay.addr)).await;
            let listen = format!("127.0.0.1:{}", common::free_port());
            let mut fast = common::fast_supervision(10.0);
            fast.extend([("KUMA_CLUSTER__HEALTH__TIMEOUT", "300ms".to_owned()), ("KUMA_CLUSTER__HEALTH__TIMEOUT_FALL", "3".to_owned())]);
            let settings: Vec<(&str, &str)> = fast.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let _cluster = common::serve_process(&t.url, &listen, TOKEN, AUTH, &settings);
            let ready = |n: usize| common::http_get(&listen, "/lb/available-nodes").is_some_and(|r| r.contains(&format!(r#""ready":{n}"#)));
            common::poll_until(limit, || ready(2)).expect("both nodes ready");

            // slow answers within the probe timeout are answers
            relay.set_latency(Duration::from_millis(60));
            for _ in 0..20 {
                assert!(ready(2), "a node answering in time stays in service");
                std::thread::sleep(Duration::from_millis(100));
            }
            relay.set_latency(Duration::ZERO);
            relay.set(Fault::Blackhole);
            common::poll_until(limit, || ready(1)).expect("the silent node is marked down");
            let status = common::http_json(&listen, "GET", "/lb/node-status", Some(TOKEN)).unwrap();
            let sim1 = status["nodes"].as_array().unwrap().iter().find(|n| n["node_id"] == "sim1").unwrap().clone();
            assert_eq!(sim1["state"], "down", "{sim1}");
            for _ in 0..20 {
                let page = common::http_get(&listen, "/").expect("the proxy answers");
                assert!(page.contains("sim2") && !page.contains("sim1"), "a new session went to the silent node: {page}");
            }

            relay.set(Fault::Pass);
            common::poll_until(limit, || ready(2)).expect("back in service once it answers");
            t.drop_db().await;
        });
    }
}
