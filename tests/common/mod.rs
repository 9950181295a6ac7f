//! Shared test helpers: databases on both backends, fake Kuma nodes, scripted
//! probes, a transition collector and a supervisor started under test control.
#![allow(dead_code)]

pub mod relay;

use actix::prelude::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures_util::future::LocalBoxFuture;
use kuma_cluster::supervisor::actors::cluster::{ClusterActor, ClusterDeps, Reconcile};
use kuma_cluster::supervisor::actors::node::{ClockSeen, NodeTransition, Reports};
use kuma_cluster::supervisor::clock::ManualClock;
use kuma_cluster::config::{DatabaseSettings, Settings};
use kuma_cluster::supervisor::probe::{Healthy, Probe, ProbeError};
use kuma_cluster::supervisor::publisher::{RoutingPublisher, RoutingReader};
use kuma_cluster::supervisor::store;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Generates one test per backend from an `async fn(TestDb)`:
/// `sqlite::<name>` and `mariadb::<name>`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                $crate::common::run(async { super::$name($crate::common::TestDb::sqlite().await).await });
            })+
        }
        mod mariadb {
            $(#[test]
            fn $name() {
                $crate::common::run(async {
                    if let Some(db) = $crate::common::TestDb::mariadb().await {
                        super::$name(db).await;
                    }
                });
            })+
        }
    };
}

/// Runs a future on an actix system with real time; `RUST_LOG` shows the
/// in-process supervisors' logs.
pub fn run<F: Future<Output = ()>>(fut: F) {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    actix_rt::System::new().block_on(fut);
}

/// Runs a future on an actix system whose tokio clock is paused: timers fire in
/// virtual time as soon as the runtime is idle.
pub fn run_paused<F: Future<Output = ()>>(fut: F) {
    let system = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap()
    });
    system.block_on(fut);
}

pub struct TestDb {
    pub db: DatabaseConnection,
    pub url: String,
    /// The MariaDB database to drop at the end, with an admin connection.
    mariadb: Option<(DatabaseConnection, String)>,
    _dir: Option<TempDir>,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), fastrand::u32(..))
}

pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(unique("kc_test"));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = TempDir::new();
        let url = format!("sqlite://{}/kc.db?mode=rwc", dir.0.display());
        let db = store::connect(&DatabaseSettings::with_url(&url)).await.expect("sqlite opens");
        TestDb { db, url, mariadb: None, _dir: Some(dir) }
    }

    /// A fresh database on the MariaDB at `KC_TEST_MARIADB_URL` (default
    /// `mysql://root@127.0.0.1:3306`). `None` (the test is skipped) when it is
    /// unreachable, unless `KC_REQUIRE_MARIADB=1`, which makes that a failure.
    pub async fn mariadb() -> Option<TestDb> {
        let base = std::env::var("KC_TEST_MARIADB_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
        let required = std::env::var("KC_REQUIRE_MARIADB").is_ok_and(|v| v == "1");
        let admin = match store::connect(&DatabaseSettings::with_url(&format!("{base}/test"))).await {
            Ok(admin) => admin,
            Err(e) if required => panic!("MariaDB is required (KC_REQUIRE_MARIADB=1) but unreachable: {e}"),
            Err(e) => {
                eprintln!("skipping: MariaDB unreachable at {base}: {e}");
                return None;
            }
        };
        let name = unique("kc_test");
        admin.execute_unprepared(&format!("CREATE DATABASE `{name}`")).await.unwrap();
        let url = format!("{base}/{name}");
        let db = store::connect(&DatabaseSettings::with_url(&url)).await.unwrap();
        Some(TestDb { db, url, mariadb: Some((admin, name)), _dir: None })
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    pub async fn exec(&self, sql: &str) {
        self.db.execute_unprepared(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let row = self.db.query_one_raw(Statement::from_string(self.backend(), sql)).await.unwrap().unwrap();
        row.try_get_by_index::<i64>(0).unwrap()
    }

    /// Rows of a query rendered as strings, for whole-table comparisons.
    pub async fn rows(&self, sql: &str, columns: usize) -> Vec<Vec<Option<String>>> {
        let rows = self.db.query_all_raw(Statement::from_string(self.backend(), sql)).await.unwrap();
        rows.iter()
            .map(|r| (0..columns).map(|i| r.try_get_by_index::<Option<String>>(i).unwrap()).collect())
            .collect()
    }

    /// The definition of a table as the database reports it.
    pub async fn schema_of(&self, table: &str) -> String {
        match self.backend() {
            DbBackend::Sqlite => {
                let sql = format!("SELECT group_concat(sql, ';') FROM sqlite_master WHERE tbl_name = '{table}'");
                self.rows(&sql, 1).await[0][0].clone().unwrap_or_default()
            }
            _ => {
                let row = self
                    .db
                    .query_one_raw(Statement::from_string(self.backend(), format!("SHOW CREATE TABLE `{table}`")))
                    .await
                    .unwrap()
                    .unwrap();
                row.try_get_by_index::<String>(1).unwrap()
            }
        }
    }

    /// Kuma's tables, as the nodes would create them, then kuma-cluster's own.
    pub async fn migrate(&self) {
        store::create_kuma_tables(&self.db).await.expect("Kuma's tables are created");
        store::migrate(&self.db).await.expect("migrations run");
    }

    pub async fn add_node(&self, id: &str, host: &str) {
        self.exec(&format!(
            "INSERT INTO node (node_id, node_name, host, status, active, is_primary) VALUES ('{id}', '{id}', '{host}', 'online', 1, {})",
            i32::from(id.ends_with('1'))
        ))
        .await;
    }

    /// Inserts `count` active monitors homed on `node`, in one statement.
    pub async fn add_monitors(&self, node: &str, count: usize) {
        let values: Vec<String> = (0..count).map(|i| format!("('m-{node}-{i}', 1, '{node}')")).collect();
        for chunk in values.chunks(500) {
            self.exec(&format!("INSERT INTO monitor (name, active, node_id) VALUES {}", chunk.join(","))).await;
        }
    }

    /// (id, node_id, assigned_node, active) of every monitor, by id.
    pub async fn monitors(&self) -> Vec<(i64, Option<String>, Option<String>, bool)> {
        let rows = self
            .db
            .query_all_raw(Statement::from_string(
                self.backend(),
                "SELECT CAST(id AS SIGNED) AS id, node_id, assigned_node, active FROM monitor ORDER BY id",
            ))
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                (
                    r.try_get_by_index::<i64>(0).unwrap(),
                    r.try_get_by_index(1).unwrap(),
                    r.try_get_by_index(2).unwrap(),
                    r.try_get_by_index::<bool>(3).unwrap(),
                )
            })
            .collect()
    }

    /// Active monitors whose effective node is `node`.
    pub async fn running_on(&self, node: &str) -> i64 {
        self.count(&format!(
            "SELECT COUNT(*) FROM monitor WHERE active = 1 AND COALESCE(assigned_node, node_id) = '{node}'"
        ))
        .await
    }

    pub async fn status_of(&self, node: &str) -> String {
        self.rows(&format!("SELECT status FROM node WHERE node_id = '{node}'"), 1).await[0][0].clone().unwrap()
    }

    pub async fn drop_db(self) {
        if let Some((admin, name)) = &self.mariadb {
            admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS `{name}`")).await.unwrap();
        }
    }
}

/// A probe that never answers, for tests that drive the ClusterActor with
/// transition messages alone.
pub struct SilentProbe;

impl Probe for SilentProbe {
    fn check(&self, _: &str, _: &str) -> LocalBoxFuture<'static, Result<Healthy, ProbeError>> {
        Box::pin(std::future::pending())
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Scripted {
    Healthy,
    /// Healthy, with a node clock this many milliseconds ahead of ours.
    HealthyAhead(i64),
    Failing,
    /// Never answers: the NodeActor's timeout must end it.
    Hang,
    /// Answers healthy after this long.
    Slow(Duration),
}

/// Answers probes from a script; the last entry repeats. Records when each probe
/// was made (in tokio time, which may be paused).
#[derive(Clone)]
pub struct ScriptedProbe {
    script: Rc<RefCell<VecDeque<Scripted>>>,
    pub calls: Rc<RefCell<Vec<tokio::time::Instant>>>,
}

impl ScriptedProbe {
    pub fn new(script: impl IntoIterator<Item = Scripted>) -> Self {
        ScriptedProbe { script: Rc::new(RefCell::new(script.into_iter().collect())), calls: Rc::default() }
    }
}

impl Probe for ScriptedProbe {
    fn check(&self, _: &str, _: &str) -> LocalBoxFuture<'static, Result<Healthy, ProbeError>> {
        self.calls.borrow_mut().push(tokio::time::Instant::now());
        let mut script = self.script.borrow_mut();
        let next = if script.len() > 1 { script.pop_front() } else { script.front().copied() };
        match next.unwrap_or(Scripted::Healthy) {
            Scripted::Healthy => Box::pin(async { Ok(Healthy::default()) }),
            Scripted::HealthyAhead(ms) => {
                let node_time = Some(chrono::Utc::now() + chrono::Duration::milliseconds(ms));
                Box::pin(async move { Ok(Healthy { node_time }) })
            }
            Scripted::Failing => Box::pin(async { Err(ProbeError::Status(503)) }),
            Scripted::Hang => Box::pin(std::future::pending()),
            Scripted::Slow(after) => Box::pin(async move {
                tokio::time::sleep(after).await;
                Ok(Healthy::default())
            }),
        }
    }
}

/// Receives a NodeActor's reports in place of the ClusterActor.
#[derive(Default)]
pub struct Collector {
    pub seen: Rc<RefCell<Vec<(tokio::time::Instant, NodeTransition)>>>,
    pub clocks: Rc<RefCell<Vec<ClockSeen>>>,
}

impl Collector {
    pub fn reports(addr: &Addr<Collector>) -> Reports {
        Reports { transitions: addr.clone().recipient(), clocks: addr.clone().recipient() }
    }
}

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<ClockSeen> for Collector {
    type Result = ();

    fn handle(&mut self, msg: ClockSeen, _: &mut Self::Context) {
        self.clocks.borrow_mut().push(msg);
    }
}

impl Handler<NodeTransition> for Collector {
    type Result = ();

    fn handle(&mut self, msg: NodeTransition, _: &mut Self::Context) {
        self.seen.borrow_mut().push((tokio::time::Instant::now(), msg));
    }
}

/// An in-process stand-in for a Kuma node: `/api/v1/health` answers with a
/// switchable status, and reconcile calls are recorded with their Authorization.
pub struct FakeNode {
    pub host: String,
    pub health: Arc<AtomicU16>,
    pub reconciles: Arc<Mutex<Vec<Option<String>>>>,
    handle: actix_web::dev::ServerHandle,
}

impl FakeNode {
    pub fn start() -> FakeNode {
        let health = Arc::new(AtomicU16::new(200));
        let reconciles: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let (h, r) = (health.clone(), reconciles.clone());
        let server = HttpServer::new(move || {
            let (h, r) = (h.clone(), r.clone());
            App::new()
                .route(
                    "/api/v1/health",
                    web::get().to(move || {
                        let code = h.load(Ordering::SeqCst);
                        async move {
                            HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap())
                                .json(serde_json::json!({ "ok": code == 200 }))
                        }
                    }),
                )
                .route(
                    "/api/v1/reconcile-monitors",
                    web::post().to(move |req: HttpRequest| {
                        let auth = req.headers().get("authorization").map(|v| v.to_str().unwrap().to_owned());
                        r.lock().unwrap().push(auth);
                        async { HttpResponse::Ok().json(serde_json::json!({ "ok": true })) }
                    }),
                )
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        FakeNode { host: format!("127.0.0.1:{port}"), health, reconciles, handle }
    }

    pub fn set_health(&self, status: u16) {
        self.health.store(status, Ordering::SeqCst);
    }

    pub fn reconcile_calls(&self) -> Vec<Option<String>> {
        self.reconciles.lock().unwrap().clone()
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// Settings for tests: defaults, with these `KUMA_CLUSTER__...` overrides.
pub fn settings(overrides: &[(&str, &str)]) -> Settings {
    Settings::load_with_env(None, overrides.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
}

pub struct Supervisor {
    pub addr: Addr<ClusterActor>,
    pub clock: ManualClock,
    pub routing: RoutingReader,
    /// The proxy's side of the passive-health channel.
    pub reports: tokio::sync::mpsc::Sender<kuma_cluster::supervisor::reports::FrontReport>,
    pub metrics: Arc<kuma_cluster::metrics::Metrics>,
    pub vitals: kuma_cluster::supervisor::vitals::VitalSigns,
}

impl Supervisor {
    /// A ClusterActor on `db` driven only by the test's messages:
    /// [`Supervisor::quiet_settings`] and a [`ManualClock`].
    pub fn start(db: &TestDb, probe: Rc<dyn Probe>, overrides: &[(&str, &str)]) -> Supervisor {
        Supervisor::with_settings(db, probe, Supervisor::quiet_settings(overrides))
    }

    /// Settings under which only the test's messages change health and trigger
    /// decisions, however slow the machine is: the periodic tick is an hour
    /// away, and the NodeActors' probes wait an hour before they time out. The
    /// nodes' pace is so fast that waves never hold a move back: these tests
    /// are about what moves, `core::waves` and the sim tests about when.
    pub fn quiet_settings(overrides: &[(&str, &str)]) -> Settings {
        let mut all = vec![
            ("KUMA_CLUSTER__CLUSTER__RECONCILE_INTERVAL", "1h"),
            ("KUMA_CLUSTER__HEALTH__TIMEOUT", "1h"),
            ("KUMA_CLUSTER__HEALTH__INTERVAL", "1h"),
            ("KUMA_CLUSTER__HEALTH__DOWN_INTERVAL", "1h"),
            ("KUMA_CLUSTER__NODES__START_RATE", "1000000"),
            ("KUMA_CLUSTER__NODES__CRON_PERIOD", "1h"),
            ("KUMA_CLUSTER__NODES__CRON_MARGIN", "0s"),
        ];
        all.extend_from_slice(overrides);
        settings(&all)
    }

    pub fn with_settings(db: &TestDb, probe: Rc<dyn Probe>, settings: Settings) -> Supervisor {
        Supervisor::on_connection(db.db.clone(), probe, settings)
    }

    /// A supervisor on its own connection to the database (say, through a relay).
    pub fn on_connection(db: DatabaseConnection, probe: Rc<dyn Probe>, settings: Settings) -> Supervisor {
        let clock = ManualClock::new();
        let publisher = RoutingPublisher::new();
        let routing = publisher.reader();
        let (reports, reports_rx) = tokio::sync::mpsc::channel(16);
        let metrics = Arc::new(kuma_cluster::metrics::Metrics::default());
        let vitals = kuma_cluster::supervisor::vitals::VitalSigns::default();
        let addr = ClusterActor::new(ClusterDeps {
            db,
            settings: Arc::new(settings),
            clock: Arc::new(clock.clone()),
            probe,
            publisher,
            reports: reports_rx,
            metrics: metrics.clone(),
            vitals: vitals.clone(),
        })
        .start();
        Supervisor { addr, clock, routing, reports, metrics, vitals }
    }

    /// `nodes` nodes (node1 is primary) with `per_node` monitors each, supervised
    /// and settled: every node has reported up and the first decision has run.
    pub async fn settled(t: &TestDb, nodes: usize, per_node: usize) -> Supervisor {
        t.migrate().await;
        for i in 1..=nodes {
            // nothing listens on port 9: reconcile pushes fail fast and are only logged
            t.add_node(&format!("node{i}"), "127.0.0.1:9").await;
            t.add_monitors(&format!("node{i}"), per_node).await;
        }
        let sup = Supervisor::start(t, Rc::new(SilentProbe), &[]);
        sup.up_all(nodes).await;
        sup
    }

    /// Reports node1..=`nodes` up for the first time; the cluster then writes nothing.
    pub async fn up_all(&self, nodes: usize) {
        use kuma_cluster::core::health::Health::{Unknown, Up};
        self.reconcile().await;
        for i in 1..=nodes {
            self.transition(&format!("node{i}"), Unknown, Up).await;
        }
        let summary = self.reconcile().await;
        assert!(self.state().await.started);
        assert!(!summary.wrote, "a settled cluster writes nothing: {summary:?}");
    }

    /// Runs a decision, then waits for the reconcile pushes it sent to end, so
    /// the next decision sees every node free to take work.
    pub async fn reconcile(&self) -> kuma_cluster::core::reconcile::DecisionSummary {
        let summary = self.addr.send(Reconcile).await.unwrap().expect("decision commits");
        self.pushes_done().await;
        summary
    }

    /// Waits until no reconcile push is in flight (the nodes' addresses refuse
    /// at once, so this is short).
    pub async fn pushes_done(&self) {
        eventually(Duration::from_secs(30), "the reconcile pushes end", || async {
            self.state().await.nodes.iter().all(|n| !n.busy)
        })
        .await;
    }

    pub async fn transition(&self, node: &str, from: kuma_cluster::core::health::Health, to: kuma_cluster::core::health::Health) {
        self.addr
            .send(NodeTransition {
                node_id: node.into(),
                transition: kuma_cluster::core::health::Transition { from, to, weak: false },
                last_error: None,
            })
            .await
            .unwrap();
    }

    pub async fn state(&self) -> kuma_cluster::supervisor::actors::cluster::ClusterState {
        self.addr.send(kuma_cluster::supervisor::actors::cluster::GetClusterState).await.unwrap()
    }
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A blocking `GET` with `Connection: close`; `None` when nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    http_request(addr, "GET", path, None)
}

/// A blocking bodiless request, optionally with a bearer token; the whole raw
/// response, or `None` when nothing answers.
pub fn http_request(addr: &str, method: &str, path: &str, token: Option<&str>) -> Option<String> {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
    http_request_with(addr, method, path, &headers, Duration::from_secs(5))
}

/// A blocking bodiless request with `headers`, waiting up to `timeout` for the
/// answer; the whole raw response, or `None` when nothing answers.
pub fn http_request_with(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], timeout: Duration) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    Some(String::from_utf8_lossy(&response).into_owned())
}

/// A ClusterActor in real time with real HTTP probes and fast settings (50 ms
/// probes, 300 ms hold-down, 200 ms ticks), plus `overrides`. The probe timeout
/// is generous: these tests kill nodes (refused at once), and a loaded machine
/// must not fail a live node.
pub fn live_supervisor(
    db: &TestDb,
    overrides: &[(&str, &str)],
) -> (Addr<ClusterActor>, RoutingReader) {
    let mut all = vec![
        ("KUMA_CLUSTER__HEALTH__INTERVAL", "50ms"),
        ("KUMA_CLUSTER__HEALTH__DOWN_INTERVAL", "50ms"),
        ("KUMA_CLUSTER__HEALTH__TIMEOUT", "3s"),
        ("KUMA_CLUSTER__CLUSTER__HOLD_DOWN", "300ms"),
        ("KUMA_CLUSTER__CLUSTER__RECONCILE_INTERVAL", "200ms"),
    ];
    all.extend_from_slice(overrides);
    let settings = settings(&all);
    let publisher = RoutingPublisher::new();
    let routing = publisher.reader();
    // the proxy's end of the passive-health channel is not needed here
    let (_, reports) = tokio::sync::mpsc::channel(16);
    let cluster = ClusterActor::new(ClusterDeps {
        db: db.db.clone(),
        probe: Rc::new(kuma_cluster::supervisor::probe::HttpProbe::new(settings.health.late_answer_wait)),
        settings: Arc::new(settings),
        clock: Arc::new(kuma_cluster::supervisor::clock::SystemClock),
        publisher,
        reports,
        metrics: Default::default(),
        vitals: Default::default(),
    })
    .start();
    (cluster, routing)
}

/// Polls `check` every 20 ms until it holds, failing after `limit`: a liveness
/// wait for real-time tests, not a speed assertion.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for: {what}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where a child's stdout goes: the file named (appended to), or nowhere.
fn log_to(path: Option<std::path::PathBuf>) -> std::process::Stdio {
    match path {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map(std::process::Stdio::from)
            .unwrap_or_else(|e| panic!("cannot open the log file {path:?}: {e}")),
        None => std::process::Stdio::null(),
    }
}

/// A child process killed when dropped, however the test ends.
pub struct Process(pub std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The JSON body of a blocking request, or `None` when nothing (or no JSON) answers.
pub fn http_json(addr: &str, method: &str, path: &str, token: Option<&str>) -> Option<serde_json::Value> {
    let raw = http_request(addr, method, path, token)?;
    serde_json::from_str(raw.split("\r\n\r\n").nth(1)?).ok()
}

/// A `kuma-cluster sim-node` process on `127.0.0.1:port`, at `speed` times a
/// real node's pace.
pub fn sim_process(id: &str, port: u16, database: &str, auth: &str, speed: f64) -> Process {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_kuma-cluster"))
        .args(["sim-node", "--id", id, "--listen", &format!("127.0.0.1:{port}"), "--database", database])
        .args(["--auth-header", auth, "--speed", &speed.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the sim node starts");
    Process(child)
}

/// The monitor ids a sim node runs, from its `/api/v1/running`: an id appears
/// once per running copy.
pub fn running_at(host: &str) -> Option<Vec<u32>> {
    let body = http_json(host, "GET", "/api/v1/running", None)?;
    let monitors = body["monitors"].as_array()?;
    Some(
        monitors
            .iter()
            .flat_map(|m| {
                let copies = m["copies"].as_u64().unwrap_or(1) as usize;
                m["id"].as_u64().map(|id| vec![id as u32; copies]).unwrap_or_default()
            })
            .collect(),
    )
}

/// Supervisor settings (as `KUMA_CLUSTER__…` pairs) that match simulated nodes
/// running at `speed` times a real node's pace: their cron period and margin
/// shrink with it, and their start rate is taken a fifth below the nodes' mean
/// (4/s instead of 5/s, times `speed`), so a loaded machine's slower sleeps still
/// end before the next cron.
pub fn sim_pace(speed: f64) -> Vec<(&'static str, String)> {
    vec![
        ("KUMA_CLUSTER__NODES__START_RATE", format!("{}", 4.0 * speed)),
        ("KUMA_CLUSTER__NODES__CRON_PERIOD", format!("{}ms", (60_000.0 / speed) as u64)),
        ("KUMA_CLUSTER__NODES__CRON_MARGIN", format!("{}ms", (3_000.0 / speed) as u64)),
    ]
}

/// Settings for a kuma-cluster process over sim nodes at `speed`: their pace,
/// probes every 200 ms, a one-second hold-down, a two-second lease.
pub fn fast_supervision(speed: f64) -> Vec<(&'static str, String)> {
    let mut settings = sim_pace(speed);
    settings.extend([
        ("KUMA_CLUSTER__HEALTH__INTERVAL", "200ms".to_owned()),
        ("KUMA_CLUSTER__HEALTH__DOWN_INTERVAL", "200ms".to_owned()),
        ("KUMA_CLUSTER__CLUSTER__HOLD_DOWN", "1s".to_owned()),
        // a restarted process is a new replica: it waits for its predecessor's lease
        ("KUMA_CLUSTER__HA__LEASE_TTL", "2s".to_owned()),
        ("KUMA_CLUSTER__HA__RENEW_INTERVAL", "500ms".to_owned()),
        ("KUMA_CLUSTER__HA__POLL_INTERVAL", "200ms".to_owned()),
    ]);
    settings
}

/// Polls `check` every 25 ms until it holds; `None` after `limit`. Returns how
/// long it took.
pub fn poll_until(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = std::time::Instant::now();
    while !check() {
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Some(start.elapsed())
}

/// The monitors of `nodes` simulated nodes (`per_node` homed on each of sim1,
/// sim2, …) and a free port for each node, before the nodes start.
pub struct SimSeats {
    /// The active monitors' ids.
    pub active: std::collections::BTreeSet<u32>,
    pub ports: Vec<u16>,
    /// `127.0.0.1:<port>` of each node.
    pub hosts: Vec<String>,
}

impl SimSeats {
    pub async fn new(t: &TestDb, nodes: usize, per_node: usize) -> SimSeats {
        for i in 1..=nodes {
            t.add_monitors(&format!("sim{i}"), per_node).await;
        }
        let active = t.monitors().await.into_iter().filter(|m| m.3).map(|m| m.0 as u32).collect();
        let ports: Vec<u16> = (0..nodes).map(|_| free_port()).collect();
        let hosts = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        SimSeats { active, ports, hosts }
    }

    pub fn all(&self) -> Vec<&str> {
        self.hosts.iter().map(String::as_str).collect()
    }
}

/// Whether the live nodes together run `expected`, each monitor exactly once.
pub fn run_exactly_once(hosts: &[&str], expected: &std::collections::BTreeSet<u32>) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    for host in hosts {
        let Some(running) = running_at(host) else { return false };
        for id in running {
            if !seen.insert(id) {
                return false;
            }
        }
    }
    &seen == expected
}

/// Sleeps until this machine's clock is between second `from` and `to` of a
/// minute: the nodes' minute cron is at second 0 of theirs.
pub fn sleep_until_second(from: u64, to: u64) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 % 60_000;
    if !(from * 1000..to * 1000).contains(&now) {
        std::thread::sleep(Duration::from_millis((from * 1000 + 60_000 - now) % 60_000));
    }
}

/// Asks every node at `hosts` to reconcile, all at once, as kuma-cluster pushes:
/// with `auth`, waiting for each answer (it comes when the reconcile is done).
pub fn push_reconciles(hosts: &[String], auth: &str) {
    let pushes: Vec<_> = hosts
        .iter()
        .map(|host| {
            let (host, auth) = (host.clone(), auth.to_owned());
            std::thread::spawn(move || {
                let headers = [("Authorization", auth.as_str())];
                http_request_with(&host, "POST", "/api/v1/reconcile-monitors", &headers, Duration::from_secs(180))
            })
        })
        .collect();
    for push in pushes {
        let answer = push.join().unwrap().unwrap_or_default();
        assert!(answer.starts_with("HTTP/1.1 200"), "a node reconciled: {answer}");
    }
}

/// A `kuma-cluster serve` process on `database`, listening on `listen`, with
/// the API token `token`, the nodes' Authorization `node_auth` and `settings`
/// as further `KUMA_CLUSTER__…` pairs.
pub fn serve_process(database: &str, listen: &str, token: &str, node_auth: &str, settings: &[(&str, &str)]) -> Process {
    let log = std::env::var_os("KC_TEST_SERVE_LOG").map(std::path::PathBuf::from);
    serve_process_logging(database, listen, token, node_auth, settings, log)
}

/// [`serve_process`] with its log (debug level) appended to `log`.
pub fn serve_process_logging(
    database: &str,
    listen: &str,
    token: &str,
    node_auth: &str,
    settings: &[(&str, &str)],
    log: Option<std::path::PathBuf>,
) -> Process {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_kuma-cluster"))
        .arg("serve")
        .env("KUMA_CLUSTER__DATABASE__URL", database)
        .env("KUMA_CLUSTER__SERVER__LISTEN", listen)
        .env("KUMA_CLUSTER__API__TOKENS", token)
        .env("KUMA_CLUSTER__NODES__AUTH_HEADER", node_auth)
        .env("RUST_LOG", if log.is_some() { "info,kuma_cluster=debug" } else { "warn" })
        .envs(settings.iter().copied())
        .stdout(log_to(log))
        .spawn()
        .expect("kuma-cluster starts");
    Process(child)
}

/// Opens `count` socket.io websockets (Kuma's live-data socket) through
/// `listen`, each past the node's Engine.IO handshake, a hundred at a time.
pub async fn open_socket_io(listen: &str, count: usize) -> Vec<actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>> {
    use futures_util::StreamExt;
    let client = awc::Client::builder().connector(awc::Connector::new().limit(0)).timeout(Duration::from_secs(60)).finish();
    let url = format!("ws://{listen}/socket.io/?EIO=4&transport=websocket");
    let mut sockets = Vec::with_capacity(count);
    while sockets.len() < count {
        let batch = futures_util::future::join_all((0..100.min(count - sockets.len())).map(|_| async {
            let (_, mut socket) = client.ws(url.as_str()).connect().await.expect("a websocket opens through the front door");
            match socket.next().await {
                Some(Ok(awc::ws::Frame::Text(open))) => assert!(open.starts_with(b"0{"), "the node's socket.io handshake"),
                other => panic!("expected the socket.io open packet, got {other:?}"),
            }
            socket
        }))
        .await;
        sockets.extend(batch);
    }
    sockets
}
