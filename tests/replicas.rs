//! Two `kuma-cluster serve` replicas on one MariaDB database in front of three
//! `kuma-cluster sim-node` processes, while a client keeps requesting through
//! every live replica:
//! - an operator action sent to the follower is applied by the leader;
//! - the leader is killed (SIGKILL), then a node: the follower takes over within
//!   the lease's time to live and a renew interval, and the node's monitors
//!   move exactly once;
//! - the leader is stopped (SIGSTOP) past its lease: the other replica takes
//!   over and fails a second node over; the stopped one, continued, follows and
//!   writes nothing: the ledger's epochs never interleave;
//! - the leader is stopped with SIGTERM: the follower leads about one poll later;
//! - no client request is answered with a 5xx meanwhile.
//!
//! And two replicas on one SQLite file (the embedded default): one leads at a
//! time, no decision fails on the file's lock, SIGTERM hands the lead over.

mod common;

use common::{poll_until, run_exactly_once, sim_process, Process, SimSeats, TestDb};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const AUTH: &str = "Bearer replicas-node-secret";
const TOKEN: &str = "replicas-operations-token-0123";
const SPEED: f64 = 10.0;
const LIMIT: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(2);
const RENEW: Duration = Duration::from_millis(500);
/// Room for a loaded machine on top of every promised time.
const SLACK: Duration = Duration::from_secs(5);

fn signal(process: &Process, name: &str) {
    let status = std::process::Command::new("kill").arg(format!("-{name}")).arg(process.0.id().to_string()).status().unwrap();
    assert!(status.success(), "kill -{name}");
}

/// This replica's role and epoch, as its status says.
fn role(listen: &str) -> Option<(String, i64)> {
    let status = common::http_json(listen, "GET", "/lb/system-status", Some(TOKEN))?;
    Some((status["replica"]["role"].as_str()?.to_owned(), status["replica"]["epoch"].as_i64().unwrap_or(0)))
}

fn leads(listen: &str) -> bool {
    role(listen).is_some_and(|(r, _)| r == "leader")
}

/// Ready for traffic, as a load balancer in front would ask before sending any.
fn ready(listen: &str) -> bool {
    common::http_get(listen, "/lb/ready").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
}

/// A client that requests `/` through every replica in `targets`, over and
/// over, and counts the answers and the 5xx among them.
struct Client {
    stop: Arc<AtomicBool>,
    answers: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    fn start(targets: Arc<Mutex<Vec<String>>>) -> Client {
        let (stop, answers, errors) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
        let (s, a, e) = (stop.clone(), answers.clone(), errors.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let now: Vec<String> = targets.lock().unwrap().clone();
                for listen in now {
                    let Some(answer) = common::http_request_with(&listen, "GET", "/", &[], Duration::from_secs(2)) else { continue };
                    a.fetch_add(1, Ordering::Relaxed);
                    if answer.starts_with("HTTP/1.1 5") {
                        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
                        e.lock().unwrap().push(format!("{listen}: {} {body}", answer.lines().next().unwrap_or("")));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Client { stop, answers, errors, thread: Some(thread) }
    }

    /// Stops the client: how many answers it got, and the 5xx among them.
    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.take().map(std::thread::JoinHandle::join);
        (self.answers.load(Ordering::Relaxed), self.errors.lock().unwrap().clone())
    }
}

/// Every ledger row's epoch, in the order the rows were written.
async fn ledger_epochs(t: &TestDb) -> Vec<i64> {
    t.rows("SELECT CAST(epoch AS CHAR) FROM kc_move_ledger ORDER BY id", 1)
        .await
        .into_iter()
        .map(|r| r[0].as_deref().expect("every row names its epoch").parse().unwrap())
        .collect()
}

mod sqlite {
    #[test]
    fn two_replicas_on_one_sqlite_file_lead_one_at_a_time_and_hand_over_on_sigterm() {
        super::two_replicas_on_sqlite();
    }
}

/// The embedded default with a second replica on the same file: it works, one
/// leader at a time, without failed decisions from the file's lock.
fn two_replicas_on_sqlite() {
    common::run(async {
        let t = TestDb::sqlite().await;
        t.migrate().await;
        let seats = SimSeats::new(&t, 2, 20).await;
        let (active, ports, all) = (&seats.active, &seats.ports, seats.all());
        let _sims: Vec<Process> = (0..2).map(|i| sim_process(&format!("sim{}", i + 1), ports[i], &t.url, AUTH, SPEED)).collect();
        let fast = common::fast_supervision(SPEED);
        let settings: Vec<(&str, &str)> = fast.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let listens: Vec<String> = (0..2).map(|_| format!("127.0.0.1:{}", common::free_port())).collect();
        let replicas: Vec<Process> = listens.iter().map(|l| common::serve_process(&t.url, l, TOKEN, AUTH, &settings)).collect();
        poll_until(LIMIT, || listens.iter().all(|l| ready(l))).expect("both replicas are ready");
        poll_until(LIMIT, || run_exactly_once(&all, active)).expect("each monitor runs once");
        let leaders: Vec<usize> = (0..2).filter(|&i| leads(&listens[i])).collect();
        assert_eq!(leaders.len(), 1, "exactly one replica leads");
        let (leader, follower) = (leaders[0], 1 - leaders[0]);
        let status = common::http_json(&listens[leader], "GET", "/lb/system-status", Some(TOKEN)).unwrap();
        assert_eq!(status["supervisor"]["failed_decisions"], 0, "no decision failed on the file's lock");
        signal(&replicas[leader], "TERM");
        let term = Instant::now();
        poll_until(LIMIT, || leads(&listens[follower])).expect("the follower leads after SIGTERM");
        assert!(term.elapsed() <= Duration::from_secs(1) + SLACK, "handover took {:?}", term.elapsed());
        poll_until(LIMIT, || run_exactly_once(&all, active)).expect("each monitor still runs once");
        drop(replicas);
        t.drop_db().await;
    });
}

mod mariadb {
    #[test]
    fn replicas_hand_the_lead_over_on_kill_stop_and_term_with_each_monitor_moved_once_and_no_5xx() {
        super::replicas_hand_the_lead_over();
    }
}

fn replicas_hand_the_lead_over() {
    common::run(async {
        let Some(t) = TestDb::mariadb().await else { return };
        t.migrate().await;
        let SimSeats { active, ports, hosts } = SimSeats::new(&t, 3, 40).await;
        let all: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let mut sims: Vec<Option<Process>> =
            (0..3).map(|i| Some(sim_process(&format!("sim{}", i + 1), ports[i], &t.url, AUTH, SPEED))).collect();
        let fast = common::fast_supervision(SPEED);
        let settings: Vec<(&str, &str)> = fast.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let listens: Vec<String> = (0..2).map(|_| format!("127.0.0.1:{}", common::free_port())).collect();
        let start = |i: usize| common::serve_process(&t.url, &listens[i], TOKEN, AUTH, &settings);
        let mut replicas = vec![Some(start(0)), None];
        poll_until(LIMIT, || leads(&listens[0])).expect("the first replica leads");
        replicas[1] = Some(start(1));
        poll_until(LIMIT, || ready(&listens[1])).expect("the second replica is ready");
        assert_eq!(role(&listens[1]).map(|r| r.0).as_deref(), Some("follower"));
        poll_until(LIMIT, || run_exactly_once(&all, &active)).expect("a settled cluster");
        let targets = Arc::new(Mutex::new(listens.clone()));
        let client = Client::start(targets.clone());

        // an operator action sent to the follower is applied by the leader
        let drained = common::http_request(&listens[1], "POST", "/lb/nodes/sim3/drain", Some(TOKEN)).unwrap();
        assert!(drained.starts_with("HTTP/1.1 200"), "{drained}");
        assert!(drained.to_ascii_lowercase().contains(&format!("x-kuma-cluster-leader: {}", listens[0])), "{drained}");
        assert_eq!(t.count("SELECT COUNT(*) FROM kc_node_admin WHERE node_id = 'sim3' AND state = 'drain'").await, 1);
        poll_until(LIMIT, || run_exactly_once(&all[..2], &active)).expect("sim3's monitors leave it, each run once");
        let undrained = common::http_request(&listens[1], "POST", "/lb/nodes/sim3/undrain", Some(TOKEN)).unwrap();
        assert!(undrained.starts_with("HTTP/1.1 200"), "{undrained}");
        poll_until(LIMIT, || {
            run_exactly_once(&all, &active) && common::running_at(&hosts[2]).is_some_and(|r| r.len() == 40)
        })
        .expect("sim3 runs its own monitors again");

        // kill -9 the leader, then sim1: the follower takes over and fails sim1 over once
        targets.lock().unwrap().retain(|l| *l != listens[0]);
        drop(replicas[0].take());
        let killed = Instant::now();
        drop(sims[0].take());
        let took = poll_until(LIMIT, || leads(&listens[1])).expect("the follower takes over");
        assert!(killed.elapsed() <= TTL + RENEW + SLACK, "takeover after kill -9 took {took:?}");
        poll_until(LIMIT, || run_exactly_once(&all[1..], &active)).expect("sim1's monitors run elsewhere, each once");
        let doubled = t.count("SELECT COUNT(*) FROM (SELECT monitor_id FROM kc_move_ledger WHERE undone_at IS NULL GROUP BY monitor_id HAVING COUNT(*) > 1) d").await;
        assert_eq!(doubled, 0, "each of sim1's monitors moved once");
        assert_eq!(t.count("SELECT COUNT(*) FROM kc_move_ledger WHERE undone_at IS NULL AND reason = 'failover'").await, 40);

        // the killed replica comes back as a follower
        replicas[0] = Some(start(0));
        poll_until(LIMIT, || role(&listens[0]).is_some_and(|(r, _)| r == "follower") && ready(&listens[0]))
            .expect("the restarted replica follows, ready");
        targets.lock().unwrap().push(listens[0].clone());

        // SIGSTOP the leader past its lease: the other takes over and fails sim2 over
        let (_, stopped_epoch) = role(&listens[1]).unwrap();
        targets.lock().unwrap().retain(|l| *l != listens[1]);
        signal(replicas[1].as_ref().unwrap(), "STOP");
        poll_until(LIMIT, || leads(&listens[0])).expect("the other replica takes over from the stopped one");
        drop(sims[1].take());
        poll_until(LIMIT, || run_exactly_once(&all[2..], &active)).expect("sim1's and sim2's monitors run on sim3, each once");
        signal(replicas[1].as_ref().unwrap(), "CONT");
        poll_until(LIMIT, || role(&listens[1]).is_some_and(|(r, e)| r == "follower" && e > stopped_epoch) && ready(&listens[1]))
            .expect("the continued replica follows the new leader, ready");
        targets.lock().unwrap().push(listens[1].clone());
        let epochs = ledger_epochs(&t).await;
        assert!(epochs.windows(2).all(|w| w[0] <= w[1]), "no two epochs interleave: {epochs:?}");
        let (_, leader_epoch) = role(&listens[0]).unwrap();
        assert_eq!(t.count(&format!("SELECT COUNT(*) FROM kc_move_ledger WHERE epoch > {leader_epoch}")).await, 0);
        // sim1's monitors on sim2 moved on to sim3: a chain of two rows, one per node left
        let doubled = t.count("SELECT COUNT(*) FROM (SELECT monitor_id FROM kc_move_ledger WHERE undone_at IS NULL GROUP BY monitor_id, from_node HAVING COUNT(*) > 1) d").await;
        assert_eq!(doubled, 0, "no monitor moved off a node twice");
        assert_eq!(t.count("SELECT COUNT(*) FROM kc_move_ledger WHERE undone_at IS NULL AND from_node = 'sim2'").await, 60, "sim2's own and sim1's, once each");

        // the nodes return; then SIGTERM the leader: the follower leads about a poll later
        for i in 0..2 {
            sims[i] = Some(sim_process(&format!("sim{}", i + 1), ports[i], &t.url, AUTH, SPEED));
        }
        poll_until(LIMIT * 2, || {
            run_exactly_once(&all, &active) && (0..3).all(|i| common::running_at(&hosts[i]).is_some_and(|r| r.len() == 40))
        })
        .expect("every node runs its own monitors again");
        signal(replicas[0].as_ref().unwrap(), "TERM");
        let term = Instant::now();
        poll_until(LIMIT, || leads(&listens[1])).expect("the follower leads after SIGTERM");
        assert!(term.elapsed() <= Duration::from_secs(1) + SLACK, "handover after SIGTERM took {:?}", term.elapsed());
        assert!(replicas[0].as_mut().unwrap().0.wait().unwrap().success(), "a SIGTERM ends the replica cleanly");
        targets.lock().unwrap().retain(|l| *l != listens[0]);

        let (answers, errors) = client.finish();
        assert!(answers > 100, "the client got {answers} answers");
        assert!(errors.is_empty(), "5xx while replicas changed roles: {errors:?}");
        drop(replicas);
        drop(sims);
        t.drop_db().await;
    });
}
