//! Wires the pieces together for `kuma-cluster serve` and `kuma-cluster migrate`.

use crate::supervisor::actors::cluster::{ClusterActor, ClusterDeps, Shutdown};
use crate::supervisor::clock::SystemClock;
use crate::config::{DatabaseSettings, Settings};
use crate::metrics::Metrics;
use crate::supervisor::probe::HttpProbe;
use crate::supervisor::publisher::RoutingPublisher;
use crate::tools::dev::DevNodes;
use crate::tools::sim::{SimConfig, SimError, SimNode};
use actix::Addr;
use sea_orm::DatabaseConnection;
use std::time::Duration;
use crate::front::server;
use crate::supervisor::store::{self, StoreError};
use crate::supervisor::vitals::VitalSigns;
use actix::Actor;
use crate::front::api::auth::Access;
use crate::front::api::status::Reads;
use crate::front::api::Ops;
use crate::front::proxy::Front;
use tokio::sync::mpsc;
use std::rc::Rc;
use std::sync::Arc;

/// Front-door reports waiting for the supervisor; more are dropped: a probe is
/// already due for every node in the queue, and the periodic tick reconciles
/// whatever a dropped monitor write would have.
const REPORT_QUEUE: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("http server: {0}")]
    Server(std::io::Error),
    #[error(transparent)]
    Sim(#[from] SimError),
}

/// Runs the migrations and exits.
pub async fn migrate(settings: &Settings) -> Result<(), StoreError> {
    let db = store::connect(&settings.database).await?;
    store::migrate(&db).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// Runs the supervisor and the HTTP front until SIGINT or SIGTERM; then lets the
/// decision in flight commit before it returns. The front answers at once; the
/// supervisor connects, creates only kuma-cluster's own tables and waits for
/// the Kuma nodes' tables, retrying with backoff and not ready meanwhile.
pub async fn serve(settings: Settings) -> Result<(), ServeError> {
    let db = store::connect_lazily(&settings.database).await?;
    run(settings, db, None).await
}

const DEV_NODES: usize = 3;
/// The dev mode's simulated nodes run five times a real node's pace: a 12 s
/// cron, about 25 starts a second.
const DEV_SPEED: f64 = 5.0;
const DEV_MONITORS_PER_NODE: usize = 100;
const DEV_DATABASE: &str = "./data/dev.db";

/// `kuma-cluster dev`: a fresh embedded database, three simulated nodes with a
/// hundred monitors each, the supervisor and the proxy, and a token made for
/// this run.
pub async fn dev(mut settings: Settings) -> Result<(), ServeError> {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{DEV_DATABASE}{suffix}"));
    }
    settings.database.url = format!("sqlite://{DEV_DATABASE}?mode=rwc");
    let token = format!("{:032x}", fastrand::u128(..));
    settings.api.tokens = vec![token.clone()];
    let node_auth = format!("Bearer {:032x}", fastrand::u128(..));
    settings.nodes.auth_header = Some(node_auth.clone());
    let db = store::connect(&settings.database).await?;
    // no Kuma node will create them: the simulated ones need them first
    store::create_kuma_tables(&db).await?;
    store::migrate(&db).await?;
    let ids: Vec<String> = (1..=DEV_NODES).map(|i| format!("dev{i}")).collect();
    for id in &ids {
        store::seed_monitors(&db, id, DEV_MONITORS_PER_NODE).await?;
    }
    settings.nodes.pace = crate::core::waves::Pace {
        start_rate: 4.0 * DEV_SPEED,
        cron_period: crate::tools::sim::CRON_PERIOD.div_f64(DEV_SPEED),
        margin: Duration::from_secs(3).div_f64(DEV_SPEED),
    };
    let nodes = DevNodes::start(db.clone(), &ids, node_auth, DEV_SPEED).await?;
    let listen = settings.server.listen;
    let base = match listen.ip().is_unspecified() {
        true => format!("http://127.0.0.1:{}", listen.port()),
        false => format!("http://{listen}"),
    };
    println!(
        "kuma-cluster dev: {DEV_NODES} simulated Kuma nodes, {} monitors, embedded SQLite at {DEV_DATABASE}\n\
         \n  proxy:   {base}/   (each node's page names it)\n\
         \n  status:  curl -H 'Authorization: Bearer {token}' {base}/lb/node-status\n\
         \n  kill:    curl -X POST -H 'Authorization: Bearer {token}' {base}/dev/nodes/dev1/kill\n\
         \n  revive:  curl -X POST -H 'Authorization: Bearer {token}' {base}/dev/nodes/dev1/revive\n\
         \ntoken: {token}",
        DEV_NODES * DEV_MONITORS_PER_NODE
    );
    run(settings, db, Some(nodes)).await
}

/// Closed websockets free their buffers (tens of KiB each) into the
/// allocator, which keeps them: every `MEMORY_RETURN_EVERY`, when at least
/// `MEMORY_RETURN_AFTER` websockets closed, the free memory goes back to the system.
const MEMORY_RETURN_EVERY: Duration = Duration::from_secs(10);
const MEMORY_RETURN_AFTER: usize = 64;

fn return_memory_after_websockets(admission: Arc<crate::front::admission::Admission>) {
    actix_rt::spawn(async move {
        let mut every = actix_rt::time::interval(MEMORY_RETURN_EVERY);
        loop {
            every.tick().await;
            if admission.closed_websockets() >= MEMORY_RETURN_AFTER {
                give_back_free_memory();
            }
        }
    });
}

/// glibc keeps freed memory in its arenas; `malloc_trim` returns every free
/// page of every arena to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn give_back_free_memory() {
    // SAFETY: malloc_trim only releases memory the allocator holds free; it
    // takes each arena's lock and touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn give_back_free_memory() {}

/// Raises the open-files limit to the hard limit, as nginx's
/// `worker_rlimit_nofile` would, and warns when even that cannot hold every
/// connection `server.max_connections` admits with its node connection.
fn open_files_for(server: &crate::config::ServerSettings) {
    let needed = server.max_connections as u64 * 2 + 256;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < needed => tracing::warn!(
            open_files = limit,
            needed,
            "the open-files limit is below what server.max_connections needs (a client and a node socket each): raise it (ulimit -n) or lower server.max_connections"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not read or raise the open-files limit"),
    }
}

async fn run(settings: Settings, db: DatabaseConnection, dev: Option<Addr<DevNodes>>) -> Result<(), ServeError> {
    let listen = settings.server.listen;
    // the port first: a busy one ends the start before anything else runs
    let listener = std::net::TcpListener::bind(listen).map_err(|source| ServeError::Bind { addr: listen, source })?;
    open_files_for(&settings.server);
    let settings = Arc::new(settings);
    let publisher = RoutingPublisher::new();
    let (reports_tx, reports) = mpsc::channel(REPORT_QUEUE);
    let routing = publisher.reader();
    let metrics = Arc::new(Metrics::default());
    let front = Front::new(routing.clone(), &settings, reports_tx, metrics.clone());
    let workers = match settings.proxy.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let access = Arc::new(Access::new(&settings.api));
    if settings.api.tokens.is_empty() {
        tracing::warn!("no api.tokens configured: the operations API refuses every request");
    }
    if settings.ha.advertise.is_none() {
        tracing::warn!(listen = %listen, "ha.advertise is empty and server.listen is a wildcard address: while this replica leads, other replicas cannot forward operator actions to it");
    }
    let vitals = VitalSigns::default();
    // decisions run at least every reconcile_interval: three missed is stale
    let stale_after = settings.cluster.reconcile_interval * 3 + settings.cluster.decision_timeout;
    let cluster = ClusterActor::new(ClusterDeps {
        db: db.clone(),
        probe: Rc::new(HttpProbe::new(settings.health.late_answer_wait)),
        settings,
        clock: Arc::new(SystemClock),
        publisher,
        reports,
        metrics: metrics.clone(),
        vitals: vitals.clone(),
    })
    .start();

    let ops = Ops { cluster: cluster.clone(), reads: Reads::new(db), routing, access, metrics, vitals, stale_after };
    let extra = move |cfg: &mut actix_web::web::ServiceConfig| {
        if let Some(nodes) = &dev {
            crate::tools::dev::routes(nodes.clone())(cfg);
        }
    };
    return_memory_after_websockets(front.admission.clone());
    let server = server::start(listener, workers, front, Some(ops), extra)
        .map_err(|source| ServeError::Bind { addr: listen, source })?;
    let handle = server.handle();
    tracing::info!(listen = %listen, "kuma-cluster is serving");
    let server_task = actix_rt::spawn(server);

    wait_for_signal().await;
    tracing::info!("shutting down: finishing the decision in flight");
    if cluster.send(Shutdown).await.is_err() {
        tracing::warn!("supervisor was already stopped");
    }
    handle.stop(true).await;
    match server_task.await {
        Ok(result) => result.map_err(ServeError::Server)?,
        Err(e) => tracing::warn!(error = %e, "http server task ended abnormally"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// The container health check: whether this machine's kuma-cluster answers 200
/// at `/health`, or with `ready` at `/lb/ready` (database and a ready node).
pub async fn health_check(settings: &Settings, ready: bool) -> bool {
    let port = settings.server.listen.port();
    let path = if ready { "/lb/ready" } else { "/health" };
    let client = awc::Client::builder().timeout(Duration::from_secs(3)).finish();
    match client.get(format!("http://127.0.0.1:{port}{path}")).send().await {
        Ok(response) => response.status().is_success(),
        Err(_) => false,
    }
}

/// Runs one simulated Kuma node until SIGINT or SIGTERM. Like a real node, it
/// creates Kuma's tables when they are missing, and none of kuma-cluster's.
pub async fn sim_node(config: SimConfig, database_url: &str) -> Result<(), ServeError> {
    let db = store::connect(&DatabaseSettings::with_url(database_url)).await?;
    store::create_kuma_tables(&db).await?;
    let node = SimNode::start(config, db).await?;
    println!("sim node serving on http://{}", node.host);
    wait_for_signal().await;
    node.stop().await;
    Ok(())
}

async fn wait_for_signal() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
