//! A simulated Kuma node that behaves as the real cluster-patched nodes do
//! (CONTRACT.md), for dev mode, tests and benchmarks:
//! - it registers its row at every start-up, `status = 'online'`;
//! - a cold start lists every monitor it owns at once, then starts them one by
//!   one with a 300–1000 ms pause (about 1.4/s), and only then starts its cron;
//! - its reconcile (pushed with `POST /api/v1/reconcile-monitors`, or by the cron
//!   at every whole minute of its own clock) reads its running set and the
//!   database once, starts the missing monitors one by one with a 100–300 ms
//!   pause, then stops the extra ones with a 50–150 ms pause, and answers only
//!   when it is done;
//! - two reconciles that overlap start the same monitor twice: the first copy
//!   leaks and runs until the node dies;
//! - while it is starting monitors, `GET /api/v1/health` answers only after
//!   [`BUSY_HEALTH`] (its small database pool is taken by monitor checks), and
//!   a 503 when its database does not answer;
//! - `POST /api/v1/monitors` creates a monitor, homes it on the online node
//!   with the fewest active monitors when the body names none, and starts it
//!   here, whatever its home;
//! - `GET /api/v1/running` reports each monitor's running copies.
//!
//! Every pause, the busy health delay and the cron period are divided by
//! `speed`, so tests run the same behaviour faster.

use crate::core::placement::MonitorId;
use crate::supervisor::store::{self, StoreError};
use actix_web::http::{header, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a busy node's health check takes at speed 1: above the default
/// probe timeout, as the real nodes' are while they start monitors.
pub const BUSY_HEALTH: Duration = Duration::from_millis(2500);
/// Kuma's reconcile cron: every minute, at second 0 of the node's clock.
pub const CRON_PERIOD: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub id: String,
    pub listen: SocketAddr,
    /// The `Authorization` value a reconcile or create call must carry; `None`
    /// accepts any.
    pub auth_header: Option<String>,
    /// 1.0 is a real node's pace; 10.0 makes every pause, the busy health delay
    /// and the cron period ten times shorter.
    pub speed: f64,
    /// How far the node's clock is ahead of this machine's (negative: behind).
    pub clock_offset: chrono::Duration,
}

impl SimConfig {
    /// A node at real speed with a correct clock.
    pub fn new(id: &str, listen: SocketAddr, auth_header: Option<String>) -> Self {
        SimConfig { id: id.to_owned(), listen, auth_header, speed: 1.0, clock_offset: chrono::Duration::zero() }
    }

    fn scaled(&self, d: Duration) -> Duration {
        d.div_f64(self.speed)
    }

    /// A pause drawn uniformly from `low..=high` milliseconds, scaled.
    fn pause(&self, low: u64, high: u64) -> Duration {
        self.scaled(Duration::from_millis(fastrand::u64(low..=high)))
    }

    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_offset
    }

    /// The cron period at this speed.
    pub fn cron_period(&self) -> Duration {
        self.scaled(CRON_PERIOD)
    }

    /// Real time until the next cron tick: the next whole multiple of the
    /// period on the node's clock.
    fn until_cron(&self) -> Duration {
        until_next_period(self.now().timestamp_millis(), self.cron_period().as_millis().max(1) as i64)
    }
}

/// Time from `now_ms` (epoch milliseconds) to the next whole multiple of `period_ms`.
fn until_next_period(now_ms: i64, period_ms: i64) -> Duration {
    Duration::from_millis((period_ms - now_ms.rem_euclid(period_ms)) as u64)
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// One monitor in the node's memory, as Kuma keeps it.
#[derive(Clone, Debug, Default)]
struct Entry {
    /// In the node's monitor list: what a reconcile sees as running.
    listed: bool,
    /// The listed copy is started.
    started: bool,
    /// Copies no longer in the list that keep running: the leaks of
    /// overlapping reconciles.
    leaked: u32,
    since: Option<DateTime<Utc>>,
}

impl Entry {
    fn copies(&self) -> u32 {
        u32::from(self.started) + self.leaked
    }
}

#[derive(Default)]
struct Memory {
    monitors: BTreeMap<MonitorId, Entry>,
    reconciled_at: Option<DateTime<Utc>>,
    reconciles: u64,
}

impl Memory {
    /// `monitorList[id] = monitor; monitor.start()`: a started copy already
    /// listed is replaced and keeps running, leaked.
    fn start(&mut self, id: MonitorId, at: DateTime<Utc>) {
        let entry = self.monitors.entry(id).or_default();
        if entry.started {
            entry.leaked += 1;
        }
        entry.listed = true;
        entry.started = true;
        entry.since = Some(at);
    }

    /// `monitor.stop(); delete monitorList[id]`: only the listed copy stops.
    fn stop(&mut self, id: MonitorId) {
        if let Some(entry) = self.monitors.get_mut(&id) {
            entry.listed = false;
            entry.started = false;
            if entry.leaked == 0 {
                self.monitors.remove(&id);
            }
        }
    }
}

struct Sim {
    config: SimConfig,
    db: DatabaseConnection,
    memory: Mutex<Memory>,
    /// Reconciles and cold starts now starting monitors: the node is busy.
    starting: AtomicUsize,
    /// The cold start has started every monitor it listed.
    booted: std::sync::atomic::AtomicBool,
}

/// Counts one starter while alive, so the node is busy exactly while some
/// loop is starting monitors, however that loop ends.
struct Starting<'a>(&'a AtomicUsize);

impl<'a> Starting<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Starting(counter)
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Sim {
    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Kuma's `startMonitors` at boot: lists every monitor it owns, then starts
    /// them one by one, slowly.
    async fn cold_start(&self) -> Result<(), StoreError> {
        let owned = store::runnable(&self.db, &self.config.id).await?;
        {
            let mut memory = self.memory();
            for id in &owned {
                memory.monitors.entry(*id).or_default().listed = true;
            }
        }
        let _busy = Starting::new(&self.starting);
        let mut due = actix_rt::time::Instant::now();
        for id in owned {
            {
                let mut memory = self.memory();
                let now = self.config.now();
                let entry = memory.monitors.entry(id).or_default();
                if entry.listed && !entry.started {
                    entry.started = true;
                    entry.since = Some(now);
                } else {
                    // a reconcile started or stopped it meanwhile: boot's own copy runs as well
                    entry.leaked += 1;
                }
            }
            due += self.config.pause(300, 1000);
            actix_rt::time::sleep_until(due).await;
        }
        Ok(())
    }

    /// Kuma's `reconcileMonitors`: one read of the database and of the running
    /// set, starts one by one, then stops one by one. Returns how many it runs.
    async fn reconcile(&self) -> Result<usize, StoreError> {
        let wanted = store::runnable(&self.db, &self.config.id).await?;
        let listed: Vec<MonitorId> =
            self.memory().monitors.iter().filter(|(_, e)| e.listed).map(|(id, _)| *id).collect();
        // paced against a schedule, so a late timer does not slow the node down
        let mut due = actix_rt::time::Instant::now();
        {
            let _busy = Starting::new(&self.starting);
            for &id in wanted.iter().filter(|id| listed.binary_search(id).is_err()) {
                self.memory().start(id, self.config.now());
                due += self.config.pause(100, 300);
                actix_rt::time::sleep_until(due).await;
            }
        }
        let extra: Vec<MonitorId> = self
            .memory()
            .monitors
            .iter()
            .filter(|(id, e)| e.listed && wanted.binary_search(id).is_err())
            .map(|(id, _)| *id)
            .collect();
        for id in extra {
            self.memory().stop(id);
            due += self.config.pause(50, 150);
            actix_rt::time::sleep_until(due).await;
        }
        let mut memory = self.memory();
        memory.reconciled_at = Some(self.config.now());
        memory.reconciles += 1;
        Ok(memory.monitors.values().filter(|e| e.listed).count())
    }

    fn authorized(&self, req: &HttpRequest) -> bool {
        let presented = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        match (&self.config.auth_header, presented) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(expected), Some(given)) => expected == given,
        }
    }
}

/// A running simulated node; dropping it does not stop it, [`SimNode::stop`] does.
pub struct SimNode {
    /// `host:port` as registered in the node table.
    pub host: String,
    sim: Arc<Sim>,
    server: actix_web::dev::ServerHandle,
    boot: actix_rt::task::JoinHandle<()>,
}

impl SimNode {
    /// Registers the node and serves at once; the cold start and then the cron
    /// run in the background, as Kuma's do. Runs on the calling actix system.
    pub async fn start(config: SimConfig, db: DatabaseConnection) -> Result<SimNode, SimError> {
        let listen = config.listen;
        let sim = Arc::new(Sim {
            config,
            db,
            memory: Mutex::default(),
            starting: AtomicUsize::new(0),
            booted: std::sync::atomic::AtomicBool::new(false),
        });
        let shared = sim.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::from(shared.clone()))
                .route("/api/v1/health", web::get().to(health))
                .route("/api/v1/reconcile-monitors", web::post().to(reconcile_now))
                .route("/api/v1/monitors", web::post().to(create_monitor))
                .route("/api/v1/running", web::get().to(running))
                .route("/socket.io/", web::get().to(socket_io))
                .route("/", web::get().to(page))
        })
        .workers(1)
        .disable_signals()
        .bind(listen)
        .map_err(|source| SimError::Bind { addr: listen, source })?;
        let bound = server.addrs()[0];
        let host = format!("{}:{}", if bound.ip().is_unspecified() { "127.0.0.1".into() } else { bound.ip().to_string() }, bound.port());
        store::register_self(&sim.db, &sim.config.id, &host).await?;
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        let booting = sim.clone();
        let boot = actix_rt::spawn(async move {
            if let Err(e) = booting.cold_start().await {
                tracing::warn!(node_id = %booting.config.id, error = %e, "sim node cold start failed");
            }
            booting.booted.store(true, Ordering::SeqCst);
            loop {
                actix_rt::time::sleep(booting.config.until_cron()).await;
                if let Err(e) = booting.reconcile().await {
                    tracing::warn!(node_id = %booting.config.id, error = %e, "sim node reconcile failed");
                }
            }
        });
        tracing::info!(node_id = %sim.config.id, host = %host, "sim node running");
        Ok(SimNode { host, sim, server: handle, boot })
    }

    /// The monitors it runs now (at least one started copy), by id.
    /// The node id it runs as.
    pub fn id(&self) -> &str {
        &self.sim.config.id
    }

    pub fn running(&self) -> Vec<MonitorId> {
        self.sim.memory().monitors.iter().filter(|(_, e)| e.copies() > 0).map(|(id, _)| *id).collect()
    }

    /// Running copies per monitor; more than one is a leak.
    pub fn copies(&self) -> BTreeMap<MonitorId, u32> {
        self.sim.memory().monitors.iter().map(|(id, e)| (*id, e.copies())).filter(|(_, c)| *c > 0).collect()
    }

    /// Whether it has started every monitor it listed at boot.
    pub fn booted(&self) -> bool {
        self.sim.booted.load(Ordering::SeqCst)
    }

    /// Reconciles it has finished, pushed or by its cron.
    pub fn reconciles(&self) -> u64 {
        self.sim.memory().reconciles
    }

    /// Stops serving and running monitors, as a node that died.
    pub async fn stop(self) {
        self.boot.abort();
        self.server.stop(false).await;
        self.sim.memory().monitors.clear();
    }
}

async fn health(sim: web::Data<Sim>) -> HttpResponse {
    let started = std::time::Instant::now();
    if sim.starting.load(Ordering::SeqCst) > 0 {
        actix_rt::time::sleep(sim.config.scaled(BUSY_HEALTH)).await;
    }
    match store::ping(&sim.db).await {
        Ok(()) => HttpResponse::Ok().json(json!({
            "ok": true,
            "status": "healthy",
            "timestamp": sim.config.now(),
            "checks": { "database": { "status": "healthy" }, "server": { "status": "healthy" }, "disk": { "status": "healthy" } },
            "responseTime": started.elapsed().as_millis() as u64,
        })),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({
            "ok": false,
            "status": "unhealthy",
            "timestamp": sim.config.now(),
            "checks": { "database": { "status": "unhealthy", "error": e.to_string() } },
        })),
    }
}

fn unauthorized() -> HttpResponse {
    HttpResponse::build(StatusCode::UNAUTHORIZED).json(json!({ "ok": false, "msg": "unauthorized" }))
}

async fn reconcile_now(req: HttpRequest, sim: web::Data<Sim>) -> HttpResponse {
    if !sim.authorized(&req) {
        return unauthorized();
    }
    match sim.reconcile().await {
        Ok(count) => HttpResponse::Ok().json(json!({ "ok": true, "msg": "Reconcile triggered", "running": count })),
        Err(e) => HttpResponse::InternalServerError().json(json!({ "ok": false, "msg": e.to_string() })),
    }
}

#[derive(Deserialize)]
struct NewMonitor {
    name: String,
    interval: Option<u32>,
    node_id: Option<String>,
    active: Option<bool>,
}

/// Kuma's REST create: refuses intervals below 20 s, picks a home when none is
/// named, and starts the monitor here whatever its home.
async fn create_monitor(req: HttpRequest, body: web::Bytes, sim: web::Data<Sim>) -> HttpResponse {
    if !sim.authorized(&req) {
        return unauthorized();
    }
    let Ok(new) = serde_json::from_slice::<NewMonitor>(&body) else {
        return HttpResponse::BadRequest().json(json!({ "ok": false, "msg": "name is required" }));
    };
    if new.interval.is_some_and(|i| i < 20) {
        return HttpResponse::BadRequest().json(json!({ "ok": false, "msg": "Interval must be at least 20 seconds" }));
    }
    let active = new.active.unwrap_or(true);
    let created = async {
        let home = match new.node_id {
            Some(home) => home,
            None => store::least_loaded_online_node(&sim.db).await?.unwrap_or_else(|| sim.config.id.clone()),
        };
        let id = store::insert_monitor(&sim.db, &new.name, &home, active).await?;
        Ok::<_, StoreError>((id, home))
    };
    match created.await {
        Ok((id, home)) => {
            if active {
                sim.memory().start(id, sim.config.now());
            }
            HttpResponse::Created().json(json!({
                "ok": true,
                "msg": "Monitor created successfully",
                "data": { "monitor_id": id, "node_id": home },
            }))
        }
        Err(e) => HttpResponse::InternalServerError().json(json!({ "ok": false, "msg": e.to_string() })),
    }
}

async fn running(sim: web::Data<Sim>) -> HttpResponse {
    let memory = sim.memory();
    let monitors: Vec<_> = memory
        .monitors
        .iter()
        .filter(|(_, e)| e.copies() > 0)
        .map(|(id, e)| json!({ "id": id, "copies": e.copies(), "since": e.since }))
        .collect();
    HttpResponse::Ok().json(json!({
        "node_id": sim.config.id,
        "count": monitors.len(),
        "monitors": monitors,
        "reconciled_at": memory.reconciled_at,
        "reconciles": memory.reconciles,
        "busy": sim.starting.load(Ordering::SeqCst) > 0,
        "booted": sim.booted.load(Ordering::SeqCst),
    }))
}

async fn page(sim: web::Data<Sim>) -> HttpResponse {
    let count = sim.memory().monitors.values().filter(|e| e.copies() > 0).count();
    let id = sim.config.id.replace(['<', '>', '&', '"'], "");
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(format!(
        "<!doctype html><title>{id}</title><h1>Simulated Kuma node {id}</h1><p>Running {count} monitors.</p>"
    ))
}

/// Engine.IO's heartbeat, as Kuma's socket.io server sends it.
const SOCKET_IO_PING: Duration = Duration::from_secs(25);

/// Kuma's live-data socket as far as a proxy sees it: socket.io over the
/// websocket transport only (Engine.IO 4). The node opens with its handshake
/// packet, pings every 25 s, and answers a namespace connect; a request for
/// any other transport is refused as Kuma refuses it. Kuma's `Origin` check
/// is kept: the `Origin` host must be the `Host` header.
async fn socket_io(req: HttpRequest, body: web::Payload) -> HttpResponse {
    let query = req.query_string();
    if !query.split('&').any(|p| p == "transport=websocket") || !query.split('&').any(|p| p == "EIO=4") {
        return HttpResponse::BadRequest().json(json!({ "code": 0, "message": "Transport unknown" }));
    }
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if origin.is_some_and(|o| o.split_once("://").map(|(_, rest)| rest.trim_end_matches('/')) != Some(host)) {
        return HttpResponse::BadRequest().json(json!({ "code": 4, "message": "Forbidden" }));
    }
    let (response, mut session, mut stream) = match actix_ws::handle(&req, body) {
        Ok(accepted) => accepted,
        Err(e) => return HttpResponse::BadRequest().body(e.to_string()),
    };
    actix_rt::spawn(async move {
        let sid = || format!("{:016x}", fastrand::u64(..));
        let open = json!({ "sid": sid(), "upgrades": [], "pingInterval": 25000, "pingTimeout": 20000, "maxPayload": 1000000 });
        if session.text(format!("0{open}")).await.is_err() {
            return;
        }
        let mut ping = actix_rt::time::interval(SOCKET_IO_PING);
        ping.tick().await;
        loop {
            tokio::select! {
                message = stream.recv() => {
                    let sent = match message {
                        Some(Ok(actix_ws::Message::Text(text))) if text.starts_with("40") => {
                            session.text(format!("40{}", json!({ "sid": sid() }))).await
                        }
                        Some(Ok(actix_ws::Message::Ping(bytes))) => session.pong(&bytes).await,
                        Some(Ok(actix_ws::Message::Close(reason))) => {
                            let _ = session.close(reason).await;
                            return;
                        }
                        Some(Ok(_)) => Ok(()),
                        Some(Err(_)) | None => return,
                    };
                    if sent.is_err() {
                        return;
                    }
                }
                _ = ping.tick() => {
                    if session.text("2").await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_starts_leak_a_copy_and_a_stop_ends_only_the_listed_one() {
        let mut memory = Memory::default();
        let now = Utc::now();
        memory.start(7, now);
        memory.start(7, now);
        assert_eq!(memory.monitors[&7].copies(), 2);
        memory.stop(7);
        assert_eq!(memory.monitors[&7].copies(), 1, "the leaked copy keeps running");
        assert!(!memory.monitors[&7].listed, "and no reconcile sees it");
        memory.start(8, now);
        memory.stop(8);
        assert!(!memory.monitors.contains_key(&8));
    }

    #[test]
    fn the_cron_fires_at_whole_periods_of_the_nodes_clock() {
        let mut config = SimConfig::new("n", "127.0.0.1:0".parse().unwrap(), None);
        config.speed = 60.0;
        assert_eq!(config.cron_period(), Duration::from_secs(1));
        assert_eq!(until_next_period(60_000 * 7 + 59_900, 60_000), Duration::from_millis(100));
        assert_eq!(until_next_period(60_000 * 7, 60_000), Duration::from_secs(60), "a tick that just fired is a period away");
        assert_eq!(until_next_period(-100, 1000), Duration::from_millis(100));
    }
}
