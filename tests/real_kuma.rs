//! kuma-cluster in front of two real, stock Uptime Kuma 2.0 nodes (from npm):
//! the UI and its assets load through the proxy, first-run setup and login run
//! over the socket.io websocket, and a monitor added that way is listed.
//!
//! The Kuma install is kept outside the repository (`KC_KUMA_DIR`, default
//! `~/.cache/kuma-cluster/uptime-kuma`) and reused; the first run installs it
//! (about 100 s). `KC_SKIP_REAL_KUMA=1` skips the test on machines without npm.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KUMA_VERSION: &str = "2.0.0-dev.0";

/// Kills the process when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kuma_install() -> PathBuf {
    let dir = std::env::var_os("KC_KUMA_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/kuma-cluster/uptime-kuma")
    });
    let package = dir.join("node_modules/uptime-kuma");
    if !package.join("server/server.js").is_file() {
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", &format!("uptime-kuma@{KUMA_VERSION}")])
            .current_dir(&dir)
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm install of uptime-kuma failed");
    }
    // the package ships its patch files outside the folder its migrator reads
    for entry in std::fs::read_dir(package.join("db")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("patch-") && name.ends_with(".sql") {
            let target = package.join("db/old_migrations").join(&name);
            if !target.exists() {
                std::fs::copy(&path, target).unwrap();
            }
        }
    }
    dir
}

fn wait_for(addr: &str, path: &str, what: &str, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if common::http_get(addr, path).is_some_and(|r| check(&r)) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start_kuma(package: &Path, data: &Path, port: u16) -> Running {
    std::fs::create_dir_all(data).unwrap();
    std::fs::write(data.join("db-config.json"), r#"{"type":"sqlite"}"#).unwrap();
    let child = Command::new("node")
        .arg("server/server.js")
        .current_dir(package)
        .env("UPTIME_KUMA_PORT", port.to_string())
        .env("UPTIME_KUMA_HOST", "127.0.0.1")
        .env("DATA_DIR", data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node starts");
    Running(child)
}

#[test]
fn real_kuma_nodes_are_usable_through_the_proxy_from_setup_to_a_listed_monitor() {
    if std::env::var("KC_SKIP_REAL_KUMA").is_ok_and(|v| v == "1") {
        eprintln!("skipping: KC_SKIP_REAL_KUMA=1");
        return;
    }
    let install = kuma_install();
    let package = install.join("node_modules/uptime-kuma");
    let work = common::TempDir::new();
    let ports = [common::free_port(), common::free_port()];
    let _nodes: Vec<Running> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| start_kuma(&package, &work.0.join(format!("kuma{}", i + 1)), port))
        .collect();
    for port in ports {
        wait_for(&format!("127.0.0.1:{port}"), "/api/entry-page", "a Kuma node", |r| r.starts_with("HTTP/1.1 200"));
    }

    let listen = format!("127.0.0.1:{}", common::free_port());
    let config = work.0.join("cluster.toml");
    std::fs::write(
        &config,
        format!(
            "[[nodes.static]]\nid = \"node1\"\nhost = \"127.0.0.1:{}\"\n\n[[nodes.static]]\nid = \"node2\"\nhost = \"127.0.0.1:{}\"\n",
            ports[0], ports[1]
        ),
    )
    .unwrap();
    // stock Kuma nodes have no cluster patch and keep their own databases: the
    // cluster's tables, which patched nodes would create, are made here
    let database = format!("sqlite://{}/kc.db?mode=rwc", work.0.display());
    common::run(async {
        let db = kuma_cluster::supervisor::store::connect(&kuma_cluster::config::DatabaseSettings::with_url(&database)).await.unwrap();
        kuma_cluster::supervisor::store::create_kuma_tables(&db).await.unwrap();
    });
    let _cluster = Running(
        Command::new(env!("CARGO_BIN_EXE_kuma-cluster"))
            .args(["--config", config.to_str().unwrap(), "serve"])
            .env("KUMA_CLUSTER__DATABASE__URL", &database)
            .env("KUMA_CLUSTER__SERVER__LISTEN", &listen)
            .env("KUMA_CLUSTER__HEALTH__PATH", "/api/entry-page")
            .env("KUMA_CLUSTER__HEALTH__INTERVAL", "300ms")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("kuma-cluster starts"),
    );
    wait_for(&listen, "/lb/available-nodes", "both nodes ready", |r| r.contains(r#""ready":2"#));

    let output = Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kuma/drive.js"))
        .arg(format!("http://{listen}"))
        .env("NODE_PATH", install.join("node_modules"))
        .output()
        .expect("node runs the driver");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "driver failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(seen["assets"].as_u64().unwrap() >= 2, "{seen}");
    assert_eq!(seen["needSetup"], true);
    assert_eq!(seen["listed"], "kc-proxied-monitor");
    let routed = seen["routedTo"].as_array().unwrap();
    assert_eq!(routed.len(), 1, "one browser session stays on one node: {seen}");
    assert_eq!(seen["stickyCookie"], routed[0]);
}
