//! kuma-cluster with three real cluster-patched Kuma nodes (the fork in
//! `../shared/fixtures/`) on MariaDB, at their real pace:
//! - kuma-cluster starts first on an empty database and waits; the nodes'
//!   own migrations then run without conflict;
//! - a few hundred monitors check a local target that tells which node
//!   process made each check (from the connection, through `/proc`);
//! - a node is killed at a chosen second of the minute, then restarted: no
//!   monitor is ever checked by two processes at once or twice per interval by
//!   one, every one runs again on its new node, and back home after the revert.
//!
//! The fork is installed once outside the repository (`KC_FORK_DIR`, default
//! `~/.cache/kuma-cluster/cluster-ea195dd3`; `npm ci` takes about 6 minutes).
//! `KC_SKIP_REAL_NODES=1` skips the test on a machine without npm.

mod common;

use common::{free_port, Process, TestDb};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FORK: &str = "uptime-kuma-cluster-ea195dd3";
/// Any Authorization that is not `Bearer …` acts as user 1 on the fork.
const NODE_AUTH: &str = "kuma-cluster-test";
/// Monitors per node, one node each; `KC_REAL_NODES_MONITORS="100,400,100"`
/// runs the cascade scale of issue 10, `"100,800,100,100,100"` the seed's
/// (node2, the one killed, has the second count).
const PER_NODE: [usize; 3] = [80, 80, 80];
/// Starts a node can do in one push clear of its minute cron.
const BATCH: usize = 150;
const INTERVAL: Duration = Duration::from_secs(20);
const TOKEN: &str = "real-nodes-test-token-0123";
/// How far back "every monitor is checked" looks: an interval and a half, as
/// a busy node's checks drift past their interval (each waits for the last).
const LOOKBACK: Duration = Duration::from_secs(30);

/// The fork, unpacked and installed once, with a stand-in for its built UI.
fn fork_install() -> PathBuf {
    let dir = std::env::var_os("KC_FORK_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/kuma-cluster/cluster-ea195dd3")
    });
    if !dir.join("node_modules/.package-lock.json").is_file() {
        let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../shared/fixtures/{FORK}.tar.gz"));
        let parent = dir.parent().unwrap();
        std::fs::create_dir_all(parent).unwrap();
        let unpacked = parent.join("uptime-kuma-cluster");
        let _ = std::fs::remove_dir_all(&unpacked);
        let _ = std::fs::remove_dir_all(&dir);
        let status = Command::new("tar").arg("xzf").arg(&archive).current_dir(parent).status().expect("tar runs");
        assert!(status.success(), "cannot unpack {}", archive.display());
        std::fs::rename(&unpacked, &dir).unwrap();
        let status = Command::new("npm")
            .args(["ci", "--omit=dev", "--no-audit", "--no-fund"])
            .env("npm_config_nodedir", "/usr")
            .current_dir(&dir)
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm ci of the fork failed");
    }
    let dist = dir.join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    if !dist.join("index.html").is_file() {
        std::fs::write(dist.join("index.html"), "<!doctype html><title>Uptime Kuma</title><div id=app></div>").unwrap();
    }
    dir
}

/// A real node process on MariaDB database `db`.
fn start_node(fork: &Path, data: &Path, id: &str, port: u16, db: &str, primary: bool) -> Process {
    std::fs::create_dir_all(data).unwrap();
    let child = Command::new("node")
        .arg("server/server.js")
        .current_dir(fork)
        .envs([
            ("NODE_ENV", "production"),
            ("UPTIME_KUMA_HOST", "127.0.0.1"),
            ("UPTIME_KUMA_DB_TYPE", "mariadb"),
            ("UPTIME_KUMA_DB_HOSTNAME", "127.0.0.1"),
            ("UPTIME_KUMA_DB_PORT", "3306"),
            ("UPTIME_KUMA_DB_NAME", db),
            ("UPTIME_KUMA_DB_USERNAME", "root"),
            ("UPTIME_KUMA_DB_PASSWORD", ""),
            ("UPTIME_KUMA_NODE_ID", id),
            ("UPTIME_KUMA_NODE_NAME", id),
            ("UPTIME_KUMA_PRIMARY", if primary { "1" } else { "0" }),
        ])
        .env("DATA_DIR", format!("{}/", data.display()))
        .env("UPTIME_KUMA_PORT", port.to_string())
        .env("UPTIME_KUMA_NODE_HOST", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node starts");
    Process(child)
}

fn wait(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    common::poll_until(limit, &mut check).unwrap_or_else(|| panic!("timed out waiting for {what}"));
}

fn healthy(port: u16) -> bool {
    common::http_get(&format!("127.0.0.1:{port}"), "/api/v1/health").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
}

/// The process of a check whose connection could not be traced.
const UNKNOWN: u32 = 0;

/// One check seen by the target: which monitor, which process, when.
#[derive(Clone, Copy, Debug)]
struct Check {
    monitor: u32,
    pid: u32,
    at: Instant,
}

/// The socket inode of the open loopback TCP connection from `port`, from
/// `/proc/net/tcp` (or `tcp6`, for an IPv4 connection on an IPv6 socket). Ports
/// are reused: an older connection from the same port may linger in
/// TIME_WAIT, with no inode; only the established one counts.
fn socket_inode(port: u16) -> Option<u64> {
    [("/proc/net/tcp", format!("0100007F:{port:04X}")), ("/proc/net/tcp6", format!("0000000000000000FFFF00000100007F:{port:04X}"))]
        .into_iter()
        .find_map(|(table, local)| {
            let table = std::fs::read_to_string(table).ok()?;
            table.lines().skip(1).find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let established = fields.get(3) == Some(&"01");
                (fields.get(1) == Some(&local.as_str()) && established)
                    .then(|| fields.get(9)?.parse().ok())
                    .flatten()
                    .filter(|&inode| inode != 0)
            })
        })
}

/// Which of `pids` holds the socket with `inode` open.
fn owner(pids: &[u32], inode: u64) -> Option<u32> {
    let wanted = format!("socket:[{inode}]");
    pids.iter().copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == wanted))
    })
}

/// A local HTTP target for the monitors (`/m/<id>`): answers 200 and closes, and
/// books each check against the node process that made it.
struct Target {
    port: u16,
    checks: Arc<Mutex<Vec<Check>>>,
    pids: Arc<Mutex<Vec<u32>>>,
    /// Checks whose process could not be found (it must stay zero).
    unattributed: Arc<Mutex<Vec<Option<u32>>>>,
}

impl Target {
    fn start() -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let checks: Arc<Mutex<Vec<Check>>> = Arc::default();
        let pids: Arc<Mutex<Vec<u32>>> = Arc::default();
        let unattributed: Arc<Mutex<Vec<Option<u32>>>> = Arc::default();
        let (c, p, u) = (checks.clone(), pids.clone(), unattributed.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (c, p, u) = (c.clone(), p.clone(), u.clone());
                std::thread::spawn(move || serve_check(stream, &c, &p, &u));
            }
        });
        Target { port, checks, pids, unattributed }
    }

    fn checks(&self) -> Vec<Check> {
        self.checks.lock().unwrap().clone()
    }
}

fn serve_check(mut stream: TcpStream, checks: &Mutex<Vec<Check>>, pids: &Mutex<Vec<u32>>, unattributed: &Mutex<Vec<Option<u32>>>) {
    let at = Instant::now();
    let peer = stream.peer_addr().map(|a| a.port()).unwrap_or(0);
    let mut line = String::new();
    if BufReader::new(&stream).read_line(&mut line).is_err() {
        return;
    }
    let monitor = line.split_whitespace().nth(1).and_then(|p| p.strip_prefix("/m/")).and_then(|id| id.parse().ok());
    // the connection is open until we answer: its owner can still be found;
    // /proc/net/tcp is read in pages while sockets come and go, so an entry
    // can be missed once: look again
    let pid = (0..5).find_map(|attempt| {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        socket_inode(peer).and_then(|inode| owner(&pids.lock().unwrap(), inode))
    });
    if let Some(monitor) = monitor {
        // a rare connection is gone from /proc before it is answered: the check
        // counts as made, by no known process
        checks.lock().unwrap().push(Check { monitor, pid: pid.unwrap_or(UNKNOWN), at });
        if pid.is_none() {
            unattributed.lock().unwrap().push(Some(monitor));
        }
    }
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
}

/// Monitors run twice among the checks between `from` and `to`: a process
/// checks a monitor again after another took it over (both run it), or one
/// process checks it twice within 3/4 of an interval (a leaked copy).
fn doubles(checks: &[Check], from: Instant, to: Instant) -> BTreeSet<u32> {
    let mut by_monitor: BTreeMap<u32, Vec<&Check>> = BTreeMap::new();
    for c in checks.iter().filter(|c| c.at >= from && c.at <= to && c.pid != UNKNOWN) {
        by_monitor.entry(c.monitor).or_default().push(c);
    }
    by_monitor
        .into_iter()
        .filter(|(_, cs)| {
            let mut retired = BTreeSet::new();
            let twice = cs.windows(2).any(|w| w[0].pid == w[1].pid && w[1].at.duration_since(w[0].at) < INTERVAL.mul_f64(0.75));
            let resumed = cs.windows(2).any(|w| {
                if w[0].pid != w[1].pid {
                    retired.insert(w[0].pid);
                }
                retired.contains(&w[1].pid)
            });
            twice || resumed
        })
        .map(|(m, _)| m)
        .collect()
}

/// The process that last checked each cloned monitor since `from`, if known.
fn last_checker(checks: &[Check], from: Instant) -> HashMap<u32, u32> {
    checks.iter().filter(|c| c.at >= from && c.monitor >= 2).map(|c| (c.monitor, c.pid)).collect()
}

/// Whether every check in `last` was made by one of `pids` (or an untraced one).
fn all_by(last: &HashMap<u32, u32>, pids: &[u32]) -> bool {
    last.values().all(|pid| *pid == UNKNOWN || pids.contains(pid))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn real_nodes_fail_over_and_back_with_every_monitor_checked_by_exactly_one_process() {
    if std::env::var("KC_SKIP_REAL_NODES").is_ok_and(|v| v == "1") {
        eprintln!("skipping: KC_SKIP_REAL_NODES=1");
        return;
    }
    let fork = fork_install();
    let counts: Vec<usize> = std::env::var("KC_REAL_NODES_MONITORS")
        .ok()
        .map(|v| v.split(',').map(|c| c.trim().parse().expect("monitor counts")).collect())
        .unwrap_or(PER_NODE.to_vec());
    assert!(counts.len() >= 3, "at least three nodes");
    // one runtime for the whole test: the database pool lives on it; the
    // waiting below blocks it, which only the pool notices
    common::run(async move {
    let Some(t) = TestDb::mariadb().await else { return };
    let db = t.url.rsplit('/').next().unwrap().to_owned();
    let work = common::TempDir::new();
    let target = Target::start();

    // kuma-cluster first, on the empty database: it creates only its own tables
    let listen = format!("127.0.0.1:{}", free_port());
    let _cluster = common::serve_process(&t.url, &listen, TOKEN, NODE_AUTH, &[]);
    wait(Duration::from_secs(30), "kuma-cluster answers, not ready", || {
        common::http_get(&listen, "/lb/ready").is_some_and(|r| r.starts_with("HTTP/1.1 503"))
    });

    // then the nodes, one after another: their migrations do not collide with ours
    let ids: Vec<String> = (1..=counts.len()).map(|i| format!("node{i}")).collect();
    let ports: Vec<u16> = ids.iter().map(|_| free_port()).collect();
    let data = |i: usize| work.0.join(&ids[i]);
    let mut nodes: Vec<Option<Process>> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        nodes.push(Some(start_node(&fork, &data(i), id, ports[i], &db, i == 0)));
        wait(Duration::from_secs(120), "a node's health", || healthy(ports[i]));
    }
    let pids = |nodes: &[Option<Process>]| -> Vec<u32> { nodes.iter().flatten().map(|p| p.0.id()).collect() };
    *target.pids.lock().unwrap() = pids(&nodes);
    let all_ready = format!(r#""ready":{}"#, ids.len());
    wait(Duration::from_secs(60), "kuma-cluster ready with every node", || {
        common::http_get(&listen, "/lb/available-nodes").is_some_and(|r| r.contains(&all_ready))
    });

    // monitors: one made by the fork itself, cloned by SQL, each pointing at the target
    t.exec("INSERT INTO user (id, username, password, active) VALUES (1, 'admin', 'x', 1)").await;
    let create = format!(
        r#"{{"name":"template","type":"http","url":"http://127.0.0.1:{}/m/0","interval":{},"node_id":"node1"}}"#,
        target.port,
        INTERVAL.as_secs()
    );
    let created = http_post(ports[0], "/api/v1/monitors", &create);
    assert!(created.contains(r#""monitor_id":1"#), "{created}");
    {
        let columns: Vec<String> = t
            .rows("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'monitor' AND COLUMN_NAME NOT IN ('id', 'node_id')", 1)
            .await
            .into_iter()
            .filter_map(|r| r[0].clone())
            .map(|c| format!("`{c}`"))
            .collect();
        let list = columns.join(", ");
        for (i, id) in ids.iter().enumerate() {
            for _ in 0..counts[i] {
                t.exec(&format!("INSERT INTO monitor ({list}, node_id) SELECT {list}, '{id}' FROM monitor WHERE id = 1")).await;
            }
        }
        t.exec(&format!("UPDATE monitor SET url = CONCAT('http://127.0.0.1:{}/m/', id), name = CONCAT('m', id)", target.port)).await;
        // the template runs on node1 with its first address until node1 reconciles it away
        t.exec("DELETE FROM monitor WHERE id = 1").await;
        // every node's monitors paused, then resumed in waves below
        t.exec("UPDATE monitor SET active = 0").await;
    }
    // an operator's first reconciles, as kuma-cluster pushes them: each clear of
    // the nodes' minute cron (BATCH starts take about 30 s), all three at once
    let home: HashMap<u32, usize> = counts
        .iter()
        .enumerate()
        .flat_map(|(i, &n)| std::iter::repeat_n(i, n))
        .enumerate()
        .map(|(k, i)| (k as u32 + 2, i))
        .collect();
    let total: usize = counts.iter().sum();
    for wave in 0..counts.iter().max().unwrap().div_ceil(BATCH) {
        let mut batch: Vec<u32> = Vec::new();
        for i in 0..ids.len() {
            let mine: Vec<u32> = {
                let mut ids: Vec<u32> = home.iter().filter(|(_, h)| **h == i).map(|(m, _)| *m).collect();
                ids.sort();
                ids
            };
            batch.extend(mine.iter().skip(wave * BATCH).take(BATCH));
        }
        let list: Vec<String> = batch.iter().map(u32::to_string).collect();
        // resumed only inside the window: resumed earlier, the nodes' own cron
        // would start them too, and the push would overlap it
        common::sleep_until_second(3, 20);
        t.exec(&format!("UPDATE monitor SET active = 1 WHERE id IN ({})", list.join(","))).await;
        common::push_reconciles(&ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>(), NODE_AUTH);
    }

    // a settled baseline: each monitor checked by its home process only
    let settled = Instant::now() + INTERVAL;
    std::thread::sleep(INTERVAL + LOOKBACK);
    let checks = target.checks();
    let node_pids = pids(&nodes);
    let last = last_checker(&checks, settled);
    let missing: Vec<(u32, usize)> = home.iter().filter(|(m, _)| !last.contains_key(m)).map(|(m, h)| (*m, *h)).collect();
    let unattributed = target.unattributed.lock().unwrap().len();
    assert_eq!(last.len(), total, "every monitor is checked; missing (id, home): {missing:?}; {unattributed} checks unattributed");
    assert!(last.iter().all(|(m, pid)| *pid == UNKNOWN || node_pids[home[m]] == *pid), "each on its home node");
    assert_eq!(doubles(&checks, settled, Instant::now()), BTreeSet::new());

    // kill node2 at second 40 of the minute: its reconcile waves must dodge the cron
    common::sleep_until_second(40, 41);
    let killed = Instant::now();
    drop(nodes[1].take());
    let survivors = pids(&nodes);
    let moved: BTreeSet<u32> = home.iter().filter(|(_, h)| **h == 1).map(|(m, _)| *m).collect();
    wait(Duration::from_secs(180), "node2's monitors checked by a survivor", || {
        let checks = target.checks();
        let first: HashMap<u32, Instant> =
            checks.iter().rev().filter(|c| c.at >= killed && moved.contains(&c.monitor)).map(|c| (c.monitor, c.at)).collect();
        first.len() == moved.len()
    });
    let checks = target.checks();
    let mut gaps: Vec<Duration> = moved
        .iter()
        .filter_map(|m| checks.iter().find(|c| c.monitor == *m && c.at >= killed && survivors.contains(&c.pid)))
        .map(|c| c.at.duration_since(killed))
        .collect();
    gaps.sort();
    let gained = moved.len() / (ids.len() - 1);
    eprintln!(
        "failover of {} monitors onto {} real nodes: gap p50 {:?}, p90 {:?}, max {:?} (lower bound: detection + {gained} ÷ 5/s = {} s)",
        moved.len(),
        ids.len() - 1,
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.9),
        gaps.last().unwrap(),
        gained / 5
    );
    std::thread::sleep(INTERVAL * 2);
    let after = Instant::now() - LOOKBACK;
    let checks = target.checks();
    let doubled = doubles(&checks, killed, Instant::now());
    let seen: Vec<Vec<(u32, u64)>> = doubled
        .iter()
        .take(3)
        .map(|m| checks.iter().filter(|c| c.monitor == *m && c.at >= killed).map(|c| (c.pid, c.at.duration_since(killed).as_millis() as u64)).collect())
        .collect();
    assert_eq!(doubled, BTreeSet::new(), "no monitor checked twice during the failover; (pid, ms after the kill): {seen:?}");
    let last = last_checker(&checks, after);
    assert_eq!(last.len(), total, "every monitor is checked after the failover");
    let metrics = common::http_request(&listen, "GET", "/lb/metrics", Some(TOKEN)).unwrap();
    for node in ids.iter().filter(|id| *id != "node2") {
        let down = format!("kuma_cluster_node_transitions_total{{node=\"{node}\",to=\"down\"}}");
        assert!(!metrics.contains(&down), "{node} was marked down during the failover:\n{metrics}");
    }
    assert!(all_by(&last, &survivors), "only live processes check");

    // node2 comes back: its monitors return in waves
    nodes[1] = Some(start_node(&fork, &data(1), "node2", ports[1], &db, false));
    let back = Instant::now();
    *target.pids.lock().unwrap() = pids(&nodes);
    let node2 = nodes[1].as_ref().unwrap().0.id();
    // the revert goes in waves clear of node2's cron: about 4 minutes for 800
    let revert_limit = Duration::from_secs(240) + Duration::from_millis(500) * moved.len() as u32;
    wait(revert_limit, "node2 checks its monitors again", || {
        let last = last_checker(&target.checks(), Instant::now() - LOOKBACK);
        moved.iter().all(|m| last.get(m) == Some(&node2))
    });
    eprintln!("revert of {} monitors to node2 took {:?} after its restart", moved.len(), back.elapsed());
    std::thread::sleep(INTERVAL * 2);
    let checks = target.checks();
    let old_owners_last = checks.iter().filter(|c| c.at >= back && moved.contains(&c.monitor) && c.pid != node2 && c.pid != UNKNOWN).map(|c| c.at).max();
    eprintln!("the old owners' last check of a returning monitor: {:?} after node2's restart", old_owners_last.map(|at| at.duration_since(back)));
    assert_eq!(doubles(&checks, back, Instant::now()), BTreeSet::new(), "no monitor checked twice during the revert");
    let last = last_checker(&checks, Instant::now() - LOOKBACK);
    let node_pids = pids(&nodes);
    assert!(last.iter().all(|(m, pid)| *pid == UNKNOWN || node_pids[home[m]] == *pid), "each back on its home node");
    let untraced = target.unattributed.lock().unwrap().len();
    assert!(untraced * 100 <= checks.len(), "{untraced} of {} checks could not be traced to a process", checks.len());
    t.drop_db().await;
    });
}

/// A POST to a node with the fork's Authorization; the whole raw answer.
fn http_post(port: u16, path: &str, body: &str) -> String {
    use std::io::Read;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {NODE_AUTH}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}
