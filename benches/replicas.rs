//! Supervisor HA with real processes on MariaDB: three `kuma-cluster serve`
//! replicas with the default lease settings (TTL 10 s, renew 2 s, poll 1 s)
//! and default health settings, in front of three `kuma-cluster sim-node`
//! processes at ten times the nodes' pace (30 monitors each). Interleaved
//! rounds measure:
//! - takeover after SIGKILL of the leader (until another replica says it leads);
//! - handover after SIGTERM of the leader;
//! - the failover gap (a node's death until each of its monitors runs once
//!   elsewhere) with the leader alive, and with the leader killed at the same
//!   moment as the node: the difference is what a leader's death adds.
//!
//! Afterwards the ledger's epochs must never interleave (no write of a former
//! leader committed after a newer one's), and the fenced decisions are counted.
//!
//! `KC_SOAK_MINUTES=30` runs the soak instead: random leader kills, stops
//! (SIGSTOP past the lease or not) and terminations, and node deaths and
//! returns, for that long; then everything comes back and settles, and the
//! monitors run by no node or by two are counted over a minute.
//!
//!     cargo bench --bench replicas                     (MariaDB from KC_TEST_MARIADB_URL)
//!     KC_SOAK_MINUTES=30 cargo bench --bench replicas

#[path = "../tests/common/mod.rs"]
mod common;

use common::{poll_until, run_exactly_once, sim_process, Process, TestDb};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const ROUNDS: usize = 4;
const NODE_AUTH: &str = "Bearer replicas-bench-node-secret";
const TOKEN: &str = "replicas-bench-operations-token";
const SPEED: f64 = 10.0;
const PER_NODE: u32 = 30;
const LIMIT: Duration = Duration::from_secs(180);

fn signal(process: &Process, name: &str) {
    let _ = std::process::Command::new("kill").arg(format!("-{name}")).arg(process.0.id().to_string()).status();
}

fn leads(listen: &str) -> bool {
    common::http_json(listen, "GET", "/lb/system-status", Some(TOKEN)).is_some_and(|s| s["replica"]["role"] == "leader")
}

fn ready(listen: &str) -> bool {
    common::http_get(listen, "/lb/ready").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
}

fn fenced(listen: &str) -> u64 {
    common::http_json(listen, "GET", "/lb/system-status", Some(TOKEN)).and_then(|s| s["replica"]["fenced_decisions"].as_u64()).unwrap_or(0)
}

fn summary(name: &str, mut values: Vec<Duration>) -> Vec<Duration> {
    values.sort();
    let at = |p: f64| values[((values.len() - 1) as f64 * p).round() as usize].as_secs_f64();
    println!("{name}: min {:.2} s, median {:.2} s, max {:.2} s ({} rounds)", at(0.0), at(0.5), at(1.0), values.len());
    values
}

struct Cluster {
    t: TestDb,
    listens: Vec<String>,
    replicas: Vec<Option<Process>>,
    ports: Vec<u16>,
    hosts: Vec<String>,
    sims: Vec<Option<Process>>,
    active: BTreeSet<u32>,
}

impl Cluster {
    fn start_replica(&mut self, i: usize) {
        let (pace, health) = (common::sim_pace(SPEED), [("KUMA_CLUSTER__CLUSTER__FLAP_MAX_TRANSITIONS", "1000")]);
        let mut settings: Vec<(&str, &str)> = pace.iter().map(|(k, v)| (*k, v.as_str())).collect();
        settings.extend(health);
        self.replicas[i] = Some(common::serve_process(&self.t.url, &self.listens[i], TOKEN, NODE_AUTH, &settings));
        poll_until(LIMIT, || ready(&self.listens[i])).expect("the replica gets ready");
    }

    fn start_sim(&mut self, i: usize) {
        self.sims[i] = Some(sim_process(&format!("sim{}", i + 1), self.ports[i], &self.t.url, NODE_AUTH, SPEED));
    }

    fn leader(&self) -> Option<usize> {
        (0..self.listens.len()).find(|&i| self.replicas[i].is_some() && leads(&self.listens[i]))
    }

    fn wait_leader(&self) -> usize {
        let mut found = None;
        poll_until(LIMIT, || {
            found = self.leader();
            found.is_some()
        })
        .expect("a replica leads");
        found.unwrap()
    }

    fn live_hosts(&self) -> Vec<&str> {
        (0..3).filter(|&i| self.sims[i].is_some()).map(|i| self.hosts[i].as_str()).collect()
    }

    /// Every node back and running its own monitors, each once.
    fn settle(&mut self) {
        for i in 0..3 {
            if self.sims[i].is_none() {
                self.start_sim(i);
            }
        }
        for i in 0..self.listens.len() {
            if self.replicas[i].is_none() {
                self.start_replica(i);
            }
        }
        let hosts: Vec<&str> = self.hosts.iter().map(String::as_str).collect();
        poll_until(LIMIT, || {
            run_exactly_once(&hosts, &self.active)
                && (0..3).all(|i| common::running_at(&self.hosts[i]).is_some_and(|r| r.len() == PER_NODE as usize))
        })
        .expect("every node runs its own monitors, each once");
    }

    /// Kills sim `i` (and the leader with it when `with_leader`): the time
    /// until each of its monitors runs once on the live nodes.
    fn failover_gap(&mut self, i: usize, with_leader: bool) -> Duration {
        let leader = self.wait_leader();
        let killed = Instant::now();
        if with_leader {
            drop(self.replicas[leader].take());
        }
        drop(self.sims[i].take());
        let live = self.live_hosts();
        poll_until(LIMIT, || run_exactly_once(&live, &self.active)).expect("the node's monitors run elsewhere, each once");
        killed.elapsed()
    }
}

fn main() {
    std::env::set_var("KC_REQUIRE_MARIADB", "1");
    let soak = std::env::var("KC_SOAK_MINUTES").ok().map(|m| Duration::from_secs(m.parse::<u64>().expect("minutes") * 60));
    common::run(async move {
        let t = TestDb::mariadb().await.expect("MariaDB is required");
        t.migrate().await;
        let common::SimSeats { active, ports, hosts } = common::SimSeats::new(&t, 3, PER_NODE as usize).await;
        let mut c = Cluster {
            listens: (0..3).map(|_| format!("127.0.0.1:{}", common::free_port())).collect(),
            replicas: vec![None, None, None],
            hosts,
            ports,
            sims: vec![None, None, None],
            active,
            t,
        };
        c.settle();
        match soak {
            Some(length) => run_soak(&mut c, length),
            None => run_rounds(&mut c),
        }
        let epochs: Vec<i64> = c
            .t
            .rows("SELECT CAST(epoch AS CHAR) FROM kc_move_ledger ORDER BY id", 1)
            .await
            .into_iter()
            .map(|r| r[0].as_deref().unwrap().parse().unwrap())
            .collect();
        let interleaved = epochs.windows(2).filter(|w| w[1] < w[0]).count();
        let fenced: u64 = (0..3).filter(|&i| c.replicas[i].is_some()).map(|i| fenced(&c.listens[i])).sum();
        println!(
            "ledger: {} rows, epochs {}..={}, written by a former leader after a newer one: {interleaved}; decisions fenced (live replicas): {fenced}",
            epochs.len(),
            epochs.first().unwrap_or(&0),
            epochs.last().unwrap_or(&0)
        );
        drop(c.replicas.drain(..));
        drop(c.sims.drain(..));
        c.t.drop_db().await;
    });
}

fn run_rounds(c: &mut Cluster) {
    let (mut takeover, mut handover, mut alone, mut together) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let leader = c.wait_leader();
        let killed = Instant::now();
        drop(c.replicas[leader].take());
        c.wait_leader();
        takeover.push(killed.elapsed());
        println!("round {round}: takeover {:.2} s after kill -9 of the leader", killed.elapsed().as_secs_f64());
        c.settle();

        let leader = c.wait_leader();
        signal(c.replicas[leader].as_ref().unwrap(), "TERM");
        let termed = Instant::now();
        poll_until(LIMIT, || c.leader().is_some_and(|l| l != leader)).expect("another replica leads");
        handover.push(termed.elapsed());
        println!("round {round}: handover {:.2} s after SIGTERM of the leader", termed.elapsed().as_secs_f64());
        let _ = c.replicas[leader].as_mut().unwrap().0.wait();
        c.replicas[leader] = None;
        c.settle();

        let sim = round % 3;
        let gap = c.failover_gap(sim, false);
        alone.push(gap);
        println!("round {round}: failover gap {:.2} s, leader alive", gap.as_secs_f64());
        c.settle();
        let gap = c.failover_gap(sim, true);
        together.push(gap);
        println!("round {round}: failover gap {:.2} s, leader killed with the node", gap.as_secs_f64());
        c.settle();
    }
    summary("takeover after kill -9", takeover);
    summary("handover after SIGTERM", handover);
    let alone = summary("failover gap, leader alive", alone);
    let together = summary("failover gap, leader killed at the same moment", together);
    let median = |v: &[Duration]| v[v.len() / 2].as_secs_f64();
    println!("the leader's death adds {:.2} s to the median failover gap", median(&together) - median(&alone));
}

/// Random faults for `length`, then everything returns: monitors run by no
/// node or by two, counted over a minute of samples.
fn run_soak(c: &mut Cluster, length: Duration) {
    let started = Instant::now();
    let mut events = 0;
    while started.elapsed() < length {
        // at least one replica to take over from the leader
        if c.replicas.iter().filter(|r| r.is_some()).count() < 2 {
            for i in 0..3 {
                if c.replicas[i].is_none() {
                    c.start_replica(i);
                }
            }
        }
        let leader = c.wait_leader();
        match fastrand::u8(0..6) {
            0 => {
                drop(c.replicas[leader].take());
            }
            1 => {
                let stopped = c.replicas[leader].as_ref().unwrap();
                signal(stopped, "STOP");
                std::thread::sleep(Duration::from_millis(fastrand::u64(2_000..15_000)));
                signal(c.replicas[leader].as_ref().unwrap(), "CONT");
            }
            2 => {
                signal(c.replicas[leader].as_ref().unwrap(), "TERM");
                let _ = c.replicas[leader].as_mut().unwrap().0.wait();
                c.replicas[leader] = None;
            }
            3 | 4 => {
                let i = fastrand::usize(0..3);
                if c.sims.iter().filter(|s| s.is_some()).count() > 1 {
                    drop(c.sims[i].take());
                }
            }
            _ => {
                drop(c.replicas[leader].take());
                let i = fastrand::usize(0..3);
                if c.sims.iter().filter(|s| s.is_some()).count() > 1 {
                    drop(c.sims[i].take());
                }
            }
        }
        events += 1;
        std::thread::sleep(Duration::from_millis(fastrand::u64(1_000..10_000)));
        // bring back what is down now and then, so the cluster keeps moving
        if fastrand::u8(0..3) == 0 {
            for i in 0..3 {
                if c.sims[i].is_none() {
                    c.start_sim(i);
                }
                if c.replicas[i].is_none() {
                    c.start_replica(i);
                }
            }
        }
    }
    println!("soak: {events} faults in {:.0} min; settling", started.elapsed().as_secs_f64() / 60.0);
    c.settle();
    let hosts: Vec<&str> = c.hosts.iter().map(String::as_str).collect();
    let (mut none, mut twice, mut samples) = (BTreeSet::new(), BTreeSet::new(), 0);
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(60) {
        let mut seen: Vec<u32> = hosts.iter().filter_map(|h| common::running_at(h)).flatten().collect();
        seen.sort();
        for pair in seen.windows(2).filter(|p| p[0] == p[1]) {
            twice.insert(pair[0]);
        }
        let running: BTreeSet<u32> = seen.into_iter().collect();
        none.extend(c.active.difference(&running).copied());
        samples += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("after settling, over {samples} samples: monitors run by no node {}, by two {}", none.len(), twice.len());
}
