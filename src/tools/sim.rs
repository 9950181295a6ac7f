//! A simulated Kuma node that honours the node contract (CONTRACT.md), for the
//! dev mode, end-to-end tests and benchmarks: it registers its row at start-up,
//! answers `GET /api/v1/health` (503 when its database does not answer),
//! reconciles the monitors it runs from the database on a timer and on
//! `POST /api/v1/reconcile-monitors`, reports them with the time each started at
//! `GET /api/v1/running`, and names itself at `/`.

use crate::core::placement::MonitorId;
use crate::supervisor::store::{self, StoreError};
use actix_web::http::{header, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub id: String,
    pub listen: SocketAddr,
    /// The node's own reconcile cron; Kuma's is one minute.
    pub reconcile_every: Duration,
    /// The `Authorization` value a reconcile call must carry; `None` accepts any.
    pub auth_header: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// What the node runs: monitor id → when it started running here.
#[derive(Default)]
struct Running {
    monitors: BTreeMap<MonitorId, DateTime<Utc>>,
    reconciled_at: Option<DateTime<Utc>>,
}

struct Sim {
    config: SimConfig,
    db: DatabaseConnection,
    running: Mutex<Running>,
}

impl Sim {
    /// Starts what it should run and stops the rest, as Kuma's reconcile job does.
    async fn reconcile(&self) -> Result<usize, StoreError> {
        let wanted = store::runnable(&self.db, &self.config.id).await?;
        let now = Utc::now();
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.monitors.retain(|id, _| wanted.binary_search(id).is_ok());
        for id in wanted {
            running.monitors.entry(id).or_insert(now);
        }
        running.reconciled_at = Some(now);
        Ok(running.monitors.len())
    }
}

/// A running simulated node; dropping it does not stop it, [`SimNode::stop`] does.
pub struct SimNode {
    /// `host:port` as registered in the node table.
    pub host: String,
    sim: Arc<Sim>,
    server: actix_web::dev::ServerHandle,
    cron: actix_rt::task::JoinHandle<()>,
}

impl SimNode {
    /// Registers the node, runs a first reconcile, then serves and reconciles on
    /// its timer. Runs on the calling actix system.
    pub async fn start(config: SimConfig, db: DatabaseConnection) -> Result<SimNode, SimError> {
        let listen = config.listen;
        let sim = Arc::new(Sim { config, db, running: Mutex::default() });
        let shared = sim.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::from(shared.clone()))
                .route("/api/v1/health", web::get().to(health))
                .route("/api/v1/reconcile-monitors", web::post().to(reconcile_now))
                .route("/api/v1/running", web::get().to(running))
                .route("/", web::get().to(page))
        })
        .workers(1)
        .disable_signals()
        .bind(listen)
        .map_err(|source| SimError::Bind { addr: listen, source })?;
        let bound = server.addrs()[0];
        let host = format!("{}:{}", if bound.ip().is_unspecified() { "127.0.0.1".into() } else { bound.ip().to_string() }, bound.port());
        store::register_self(&sim.db, &sim.config.id, &host).await?;
        sim.reconcile().await?;
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        let ticking = sim.clone();
        let cron = actix_rt::spawn(async move {
            loop {
                actix_rt::time::sleep(ticking.config.reconcile_every).await;
                if let Err(e) = ticking.reconcile().await {
                    tracing::warn!(node_id = %ticking.config.id, error = %e, "sim node reconcile failed");
                }
            }
        });
        tracing::info!(node_id = %sim.config.id, host = %host, "sim node running");
        Ok(SimNode { host, sim, server: handle, cron })
    }

    /// The monitors it runs now.
    pub fn running(&self) -> Vec<MonitorId> {
        self.sim.running.lock().unwrap_or_else(|e| e.into_inner()).monitors.keys().copied().collect()
    }

    /// Stops serving and running monitors, as a node that died.
    pub async fn stop(self) {
        self.cron.abort();
        self.server.stop(false).await;
        self.sim.running.lock().unwrap_or_else(|e| e.into_inner()).monitors.clear();
    }
}

async fn health(sim: web::Data<Sim>) -> HttpResponse {
    let started = std::time::Instant::now();
    match store::runnable(&sim.db, &sim.config.id).await {
        Ok(_) => HttpResponse::Ok().json(json!({
            "ok": true,
            "status": "healthy",
            "timestamp": Utc::now(),
            "checks": { "database": "ok", "server": "ok", "disk": "ok" },
            "responseTime": started.elapsed().as_millis() as u64,
        })),
        Err(_) => HttpResponse::ServiceUnavailable().json(json!({
            "ok": false,
            "status": "unhealthy",
            "timestamp": Utc::now(),
            "checks": { "database": "unreachable", "server": "ok", "disk": "ok" },
        })),
    }
}

async fn reconcile_now(req: HttpRequest, sim: web::Data<Sim>) -> HttpResponse {
    let presented = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let allowed = match (&sim.config.auth_header, presented) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(expected), Some(given)) => expected == given,
    };
    if !allowed {
        return HttpResponse::build(StatusCode::UNAUTHORIZED).json(json!({ "ok": false, "msg": "unauthorized" }));
    }
    match sim.reconcile().await {
        Ok(count) => HttpResponse::Ok().json(json!({ "ok": true, "running": count })),
        Err(_) => HttpResponse::ServiceUnavailable().json(json!({ "ok": false, "msg": "database unreachable" })),
    }
}

async fn running(sim: web::Data<Sim>) -> HttpResponse {
    let running = sim.running.lock().unwrap_or_else(|e| e.into_inner());
    let monitors: Vec<_> = running.monitors.iter().map(|(id, since)| json!({ "id": id, "since": since })).collect();
    HttpResponse::Ok().json(json!({
        "node_id": sim.config.id,
        "count": monitors.len(),
        "monitors": monitors,
        "reconciled_at": running.reconciled_at,
    }))
}

async fn page(sim: web::Data<Sim>) -> HttpResponse {
    let count = sim.running.lock().unwrap_or_else(|e| e.into_inner()).monitors.len();
    let id = sim.config.id.replace(['<', '>', '&', '"'], "");
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(format!(
        "<!doctype html><title>{id}</title><h1>Simulated Kuma node {id}</h1><p>Running {count} monitors.</p>"
    ))
}
