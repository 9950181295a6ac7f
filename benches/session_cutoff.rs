//! How long after a node's death new sessions stop going to it, with the
//! database healthy and with it blackholed (connections accepted, nothing
//! answered), in interleaved rounds. kuma-cluster (`serve`, default health
//! settings; flap damping off, since sim1 dies every round) reaches MariaDB
//! through the tests' fault relay; three
//! `kuma-cluster sim-node` processes at ten times the nodes' pace. Each round
//! kills sim1 with SIGKILL and polls the routing kuma-cluster serves
//! (`/lb/available-nodes`, every 10 ms) until sim1 is out of it. In a
//! blackholed round the outage lasts 20 s more, then the time from the
//! database's return to the failover's commit is measured. Then sim1
//! restarts with the database healthy and gets its monitors back.
//!
//!     cargo bench --bench session_cutoff            (MariaDB from KC_TEST_MARIADB_URL)

#[path = "../tests/common/mod.rs"]
mod common;

use common::relay::{Fault, Relay};
use common::{poll_until, sim_process, TestDb};
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

const ROUNDS: usize = 4;
const NODE_AUTH: &str = "Bearer cutoff-node-secret";
const TOKEN: &str = "cutoff-operations-token-0123";
const LIMIT: Duration = Duration::from_secs(180);
/// How long the database stays blackholed once the dead node is out of the routing.
const OUTAGE: Duration = Duration::from_secs(20);

fn percentiles(mut values: Vec<Duration>) -> String {
    values.sort();
    let at = |p: f64| values[((values.len() - 1) as f64 * p).round() as usize].as_secs_f64();
    format!("min {:.2} s, median {:.2} s, max {:.2} s", at(0.0), at(0.5), at(1.0))
}

fn main() {
    std::env::set_var("KC_REQUIRE_MARIADB", "1");
    common::run(async {
        let t = TestDb::mariadb().await.expect("MariaDB is required");
        t.migrate().await;
        for i in 1..=3 {
            t.add_monitors(&format!("sim{i}"), 30).await;
        }
        let authority = t.url.split("://").nth(1).unwrap().split('/').next().unwrap();
        let server = authority.rsplit_once('@').map_or(authority, |(_, h)| h).to_socket_addrs().unwrap().next().unwrap();
        let relay = Relay::start(server);
        let ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
        let mut sims: Vec<Option<common::Process>> =
            (0..3).map(|i| Some(sim_process(&format!("sim{}", i + 1), ports[i], &t.url, NODE_AUTH, 10.0))).collect();
        let listen = format!("127.0.0.1:{}", common::free_port());
        let pace = common::sim_pace(10.0);
        let mut settings: Vec<(&str, &str)> = pace.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // sim1 dies every round on purpose: flap damping would hold its returns
        settings.push(("KUMA_CLUSTER__CLUSTER__FLAP_MAX_TRANSITIONS", "1000"));
        let _cluster = common::serve_process(&relay.url_for(&t.url), &listen, TOKEN, NODE_AUTH, &settings);
        let ready = |n: usize| common::http_get(&listen, "/lb/available-nodes").is_some_and(|r| r.contains(&format!(r#""ready":{n}"#)));
        poll_until(LIMIT, || ready(3)).expect("three ready nodes");

        let (mut healthy, mut blackholed, mut committed) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS * 2 {
            let outage = round % 2 == 1;
            if outage {
                relay.set(Fault::Blackhole);
            }
            let kill = Instant::now();
            drop(sims[0].take());
            poll_until(LIMIT, || {
                std::thread::sleep(Duration::from_millis(10));
                ready(2)
            })
            .expect("sim1 leaves the routing");
            let took = kill.elapsed();
            if outage { &mut blackholed } else { &mut healthy }.push(took);
            println!("round {round}: database {}, sim1 out of the routing {:.2} s after its death", if outage { "blackholed" } else { "healthy" }, took.as_secs_f64());
            if outage {
                // the failover's decisions fail at their deadline meanwhile
                std::thread::sleep(OUTAGE);
                assert_eq!(t.running_on("sim1").await, 30, "nothing committed during the outage");
                relay.set(Fault::Pass);
                let back = Instant::now();
                common::eventually(LIMIT, "the failover commits", || async { t.running_on("sim1").await == 0 }).await;
                committed.push(back.elapsed());
                println!("round {round}: the failover committed {:.2} s after the database's return", back.elapsed().as_secs_f64());
            }
            relay.set(Fault::Pass);
            sims[0] = Some(sim_process("sim1", ports[0], &t.url, NODE_AUTH, 10.0));
            poll_until(LIMIT, || ready(3)).expect("sim1 back");
            common::eventually(LIMIT, "sim1's monitors return (after the hold-down)", || async { t.running_on("sim1").await == 30 }).await;
        }
        println!("death to the end of new sessions, database healthy: {}", percentiles(healthy));
        println!("death to the end of new sessions, database blackholed: {}", percentiles(blackholed));
        println!("database's return to the failover's commit: {}", percentiles(committed));
        drop(sims);
        t.drop_db().await;
    });
}
