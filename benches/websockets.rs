//! Resident memory of idle websockets: nginx (one worker) and `kuma-cluster
//! serve` (one worker) each bridge `KC_WS_COUNT` (default 9 000) socket.io
//! websockets to one simulated node; RSS is read with none open, with all
//! open, and again after they closed. Rounds alternate between the two.
//! Each websocket takes two open files in the proxy: the default stays under
//! a 20 000 open-files limit; set `KC_WS_COUNT` where the hard limit allows more.
//!
//!     cargo bench --bench websockets        (needs nginx)
//!     KC_OTHER_BINARIES="/tmp/old/kuma-cluster" cargo bench --bench websockets   (other builds too)

#[path = "../tests/common/mod.rs"]
mod common;

use common::{poll_until, TestDb};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const AUTH: &str = "Bearer bench-node-secret";
const ROUNDS: usize = 2;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The processes' summed RSS (nginx: master and worker).
fn rss_of(pids: &[u32]) -> u64 {
    pids.iter().map(|&p| rss_kib(p)).sum()
}

/// `program args…` with its open-files limit raised to the hard limit.
fn with_open_files(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new("bash");
    command.args(["-c", "ulimit -n \"$(ulimit -Hn)\" && exec \"$@\"", "bash", program]).args(args);
    command
}

struct Proxy {
    name: String,
    listen: String,
    pids: Vec<u32>,
    _child: common::Process,
}

impl Drop for Proxy {
    /// SIGTERM to every process first: an nginx master killed outright leaves its workers behind.
    fn drop(&mut self) {
        for pid in &self.pids {
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn nginx(node: &str, dir: &std::path::Path) -> Proxy {
    let port = common::free_port();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1; worker_rlimit_nofile {files}; daemon off; pid {dir}/nginx.pid; error_log {dir}/error.log warn;\n\
             events {{ worker_connections 30000; }}\n\
             http {{ access_log off; map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}\n\
             server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://{node}; proxy_http_version 1.1;\n\
             proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection $connection_upgrade;\n\
             proxy_set_header Host $host; proxy_read_timeout 1h; }} }} }}\n",
            dir = dir.display(),
            files = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(20_000, |(_, hard)| hard),
        ),
    )
    .unwrap();
    let child = with_open_files("nginx", &["-p", &dir.display().to_string(), "-c", &conf.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts (apt-get install nginx)");
    let listen = format!("127.0.0.1:{port}");
    poll_until(Duration::from_secs(10), || common::http_get(&listen, "/").is_some()).expect("nginx answers");
    let master = child.id();
    let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).unwrap_or_default();
    let mut pids = vec![master];
    pids.extend(children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    Proxy { name: "nginx".to_owned(), listen, pids, _child: common::Process(child) }
}

/// `kuma-cluster serve`: this build, or `binary` (another build to compare).
fn kuma_cluster(database: &str, count: usize, binary: &str) -> Proxy {
    let listen = format!("127.0.0.1:{}", common::free_port());
    let caps = (count + 1000).to_string();
    let child: Child = with_open_files(binary, &["serve"])
        .env("RUST_LOG", "warn")
        .env("KUMA_CLUSTER__DATABASE__URL", database)
        .env("KUMA_CLUSTER__SERVER__LISTEN", &listen)
        .env("KUMA_CLUSTER__PROXY__WORKERS", "1")
        .env("KUMA_CLUSTER__PROXY__WS_MAX_TOTAL", &caps)
        .env("KUMA_CLUSTER__PROXY__WS_MAX_PER_NODE", &caps)
        .env("KUMA_CLUSTER__SERVER__MAX_CONNECTIONS", &caps)
        .env("KUMA_CLUSTER__SERVER__MAX_CONNECTIONS_PER_CLIENT", &caps)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    poll_until(Duration::from_secs(60), || common::http_get(&listen, "/lb/available-nodes").is_some_and(|r| r.contains(r#""ready":1"#)))
        .expect("kuma-cluster sees the node");
    let pid = child.id();
    let name = if binary == env!("CARGO_BIN_EXE_kuma-cluster") { "kuma-cluster".to_owned() } else { binary.to_owned() };
    Proxy { name, listen, pids: vec![pid], _child: common::Process(child) }
}

/// RSS with none open, `count` open, none again (after the closes settle),
/// and `count` open a second time (memory kept after the first round is
/// either reused then, or leaked).
async fn measure(proxy: &Proxy, count: usize) -> [u64; 4] {
    for _ in 0..100 {
        common::http_get(&proxy.listen, "/");
    }
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    let before = rss_of(&proxy.pids);
    let sockets = common::open_socket_io(&proxy.listen, count).await;
    actix_rt::time::sleep(Duration::from_secs(3)).await;
    let open = rss_of(&proxy.pids);
    drop(sockets);
    actix_rt::time::sleep(Duration::from_secs(10)).await;
    let closed = rss_of(&proxy.pids);
    let again = common::open_socket_io(&proxy.listen, count).await;
    actix_rt::time::sleep(Duration::from_secs(3)).await;
    let reopened = rss_of(&proxy.pids);
    drop(again);
    actix_rt::time::sleep(Duration::from_secs(3)).await;
    [before, open, closed, reopened]
}

fn main() {
    let count: usize = std::env::var("KC_WS_COUNT").ok().and_then(|c| c.parse().ok()).unwrap_or(9_000);
    common::run(async {
        let t = TestDb::sqlite().await;
        t.migrate().await;
        t.add_monitors("sim1", 5).await;
        let port = common::free_port();
        let node = format!("127.0.0.1:{port}");
        let _sim = common::Process(
            with_open_files(env!("CARGO_BIN_EXE_kuma-cluster"), &["sim-node", "--id", "sim1", "--listen", &node])
                .args(["--database", &t.url, "--auth-header", AUTH])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        poll_until(Duration::from_secs(30), || common::http_get(&node, "/api/v1/health").is_some()).expect("sim node answers");
        let dir = common::TempDir::new();
        println!("{count} idle socket.io websockets, one worker each, RSS in MiB; {} cores", num_cpus());
        println!("{:<20} {:>6} {:>10} {:>10} {:>12} {:>10} {:>14}", "proxy", "round", "none open", "all open", "closed again", "reopened", "KiB per socket");
        for round in 1..=ROUNDS {
            let mut proxies = vec![nginx(&node, &dir.0), kuma_cluster(&t.url, count, env!("CARGO_BIN_EXE_kuma-cluster"))];
            for other in std::env::var("KC_OTHER_BINARIES").unwrap_or_default().split_whitespace() {
                proxies.push(kuma_cluster(&t.url, count, other));
            }
            for proxy in &proxies {
                let [before, open, after, reopened] = measure(proxy, count).await;
                let mib = |k: u64| format!("{:.1}", k as f64 / 1024.0);
                let per = (open.saturating_sub(before)) as f64 / count as f64;
                println!("{:<20} {:>6} {:>10} {:>10} {:>12} {:>10} {:>14.1}", proxy.name, round, mib(before), mib(open), mib(after), mib(reopened), per);
            }
        }
    });
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
