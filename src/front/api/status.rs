//! Status reads: the routing snapshot, the ClusterActor's observable state and
//! the database's event log, move ledger and node rows. The only file of the
//! front that may query the database, and only to read.

use super::{ApiError, Ops};
use super::{NodeAnswers, PagedAnswers, ReadAnswers};
use crate::core::health::Health;
use crate::core::placement::Reason;
use crate::core::reconcile::Refusal;
use crate::core::routing::{RouteNode, RoutingTable};
use crate::front::api::auth::Authorized;
use crate::front::error::ErrorBody;
use crate::supervisor::actors::cluster::{GetClusterState, GetNodeDetails};
use crate::supervisor::store::{self, StoreError};
use actix_web::{web, HttpResponse};
use sea_orm::DatabaseConnection;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use utoipa::IntoParams;

/// The database handle of the status reads; the rest of the front holds it
/// without being able to query through it.
#[derive(Clone)]
pub struct Reads(DatabaseConnection);

impl Reads {
    pub fn new(db: DatabaseConnection) -> Self {
        Reads(db)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Database(e.to_string())
    }
}

#[utoipa::path(get, path = "/lb/rebalancing-status", tag = "status", security(("bearer" = [])), responses(ReadAnswers))]
pub(crate) async fn rebalancing_status(_: Authorized, ops: web::Data<Ops>) -> Result<HttpResponse, ApiError> {
    let state = ops.cluster.send(GetClusterState).await.map_err(|_| ApiError::Supervisor)?;
    Ok(HttpResponse::Ok().json(json!({ "running": state.rebalancing, "last": state.last_rebalance })))
}

/// A node row joined with what the snapshot knows of it.
async fn node_view(ops: &Ops) -> Result<Vec<Value>, ApiError> {
    let table = ops.routing.load();
    Ok(store::nodes(&ops.reads.0)
        .await?
        .into_iter()
        .map(|n| {
            let route = table.node(&n.node_id);
            let mut value = serde_json::to_value(&n).unwrap_or(Value::Null);
            value["state"] = json!(route.map_or(Health::Unknown, |r| r.health));
            value["ready"] = json!(route.is_some_and(|r| r.ready));
            value["monitor_count"] = json!(route.map_or(0, |r| r.monitor_count));
            value
        })
        .collect())
}

#[utoipa::path(get, path = "/lb/nodes", tag = "status", security(("bearer" = [])), responses(ReadAnswers))]
pub(crate) async fn list_nodes(_: Authorized, ops: web::Data<Ops>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({ "nodes": node_view(&ops).await? })))
}

pub(crate) async fn one_node(ops: &Ops, id: &str) -> Result<Value, ApiError> {
    node_view(ops)
        .await?
        .into_iter()
        .find(|n| n["node_id"] == id)
        .ok_or_else(|| Refusal::UnknownNode(id.to_owned()).into())
}

#[utoipa::path(get, path = "/lb/nodes/{id}", tag = "nodes", params(("id" = String, Path, description = "node id")), security(("bearer" = [])), responses(NodeAnswers))]
pub(crate) async fn get_node(_: Authorized, ops: web::Data<Ops>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(one_node(&ops, &id).await?))
}

fn node_status_word(n: &RouteNode) -> &'static str {
    match (n.health, n.enabled) {
        (Health::Up, true) => "online",
        (Health::Up, false) => "disabled",
        (Health::Down, _) => "offline",
        (Health::Unknown, _) => "unknown",
    }
}

fn usage_percent(count: usize, limit: usize) -> f64 {
    if limit == 0 {
        return 0.0;
    }
    (count as f64 * 1000.0 / limit as f64).round() / 10.0
}

pub(crate) fn capacity_of(table: &RoutingTable) -> Value {
    let nodes: Vec<Value> = table
        .nodes
        .iter()
        .map(|n| {
            json!({
                "node_id": n.id,
                "ready": n.ready,
                "current_count": n.monitor_count,
                "limit_per_node": n.limit,
                "usage_percent": usage_percent(n.monitor_count, n.limit),
            })
        })
        .collect();
    let monitors: usize = table.nodes.iter().map(|n| n.monitor_count).sum();
    let ready_limit: usize = table.nodes.iter().filter(|n| n.ready).map(|n| n.limit).sum();
    json!({
        "nodes": nodes,
        "total_monitors": monitors,
        "ready_capacity": ready_limit,
        "usage_percent": usage_percent(monitors, ready_limit),
    })
}

/// Prometheus text format; node ids and counts are more than liveness, so it
/// takes a token like the rest (Prometheus sends it with `authorization`).
#[utoipa::path(get, path = "/lb/metrics", tag = "status", security(("bearer" = [])), responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String), (status = 401, description = "no or wrong bearer token", body = ErrorBody)))]
pub(crate) async fn metrics(_: Authorized, ops: web::Data<Ops>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(ops.metrics.render(&ops.routing.load()))
}

/// Readiness, open like liveness: the database answers and a node is ready.
#[utoipa::path(get, path = "/lb/ready", tag = "liveness", responses((status = 200, description = "ready", body = Object), (status = 503, description = "not ready", body = Object)))]
pub(crate) async fn ready(ops: web::Data<Ops>) -> HttpResponse {
    // the supervisor's own recent knowledge: no query, so it answers at once
    let mut reasons = ops.vitals.load().unready(std::time::Instant::now(), ops.stale_after);
    let database = reasons.is_empty();
    let ready_nodes = ops.routing.load().nodes.iter().filter(|n| n.ready).count();
    if ready_nodes == 0 {
        reasons.push("no node is ready".to_owned());
    }
    let ready = reasons.is_empty();
    let body = json!({ "ready": ready, "database": database, "node_ready": ready_nodes > 0, "reasons": reasons });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// How long a status read waits for the database before it answers without it.
const STATUS_READ_LIMIT: std::time::Duration = std::time::Duration::from_millis(500);

/// `read`, or `None` when the database does not answer within [`STATUS_READ_LIMIT`].
async fn within_limit<T, E>(read: impl std::future::Future<Output = Result<T, E>>) -> Option<T> {
    actix_rt::time::timeout(STATUS_READ_LIMIT, read).await.ok()?.ok()
}

#[utoipa::path(get, path = "/lb/health", tag = "status", security(("bearer" = [])), responses(ReadAnswers))]
pub(crate) async fn health(_: Authorized, ops: web::Data<Ops>) -> Result<HttpResponse, ApiError> {
    let table = ops.routing.load();
    // last_seen is the database's; without an answer in time it is left out
    let rows = within_limit(store::nodes(&ops.reads.0)).await;
    let database = rows.is_some();
    let seen: HashMap<String, Option<String>> =
        rows.unwrap_or_default().into_iter().map(|n| (n.node_id, n.last_seen)).collect();
    let nodes: Vec<Value> = table
        .nodes
        .iter()
        .map(|n| {
            json!({
                "node_id": n.id,
                "status": node_status_word(n),
                "ready": n.ready,
                "last_seen": seen.get(&n.id).cloned().flatten(),
                "monitor_count": n.monitor_count,
            })
        })
        .collect();
    let ready = table.nodes.iter().filter(|n| n.ready).count();
    let status = match ready {
        0 => "down",
        r if r == table.nodes.len() => "healthy",
        _ => "degraded",
    };
    Ok(HttpResponse::Ok().json(json!({
        "status": status,
        "ready_nodes": ready,
        "total_nodes": table.nodes.len(),
        "nodes": nodes,
        "database": database,
        "timestamp": chrono::Utc::now(),
    })))
}

#[utoipa::path(get, path = "/lb/capacity", tag = "status", security(("bearer" = [])), responses(ReadAnswers))]
pub(crate) async fn capacity(_: Authorized, ops: web::Data<Ops>) -> HttpResponse {
    HttpResponse::Ok().json(capacity_of(&ops.routing.load()))
}

async fn node_details(ops: &Ops) -> Result<Vec<Value>, ApiError> {
    let details = ops.cluster.send(GetNodeDetails).await.map_err(|_| ApiError::Supervisor)?;
    let table = ops.routing.load();
    Ok(details
        .into_iter()
        .map(|d| {
            let route = table.node(&d.member.node_id);
            let probe = d.probe.as_ref();
            json!({
                "node_id": d.member.node_id,
                "host": d.member.host,
                "state": d.member.health,
                "ready": route.is_some_and(|r| r.ready),
                "enabled": route.is_none_or(|r| r.enabled),
                "settled": d.member.settled,
                "damped": d.member.damped,
                "flap_count": d.member.flap_count,
                "consecutive_failures": probe.map(|p| p.consecutive_failures),
                "consecutive_successes": probe.map(|p| p.consecutive_successes),
                "last_probe_at": probe.and_then(|p| p.last_probe_at),
                "last_latency_ms": probe.and_then(|p| p.last_latency_ms),
                "last_error": probe.and_then(|p| p.last_error.clone()),
                "monitor_count": route.map_or(0, |r| r.monitor_count),
                "limit": route.map(|r| r.limit),
            })
        })
        .collect())
}

#[utoipa::path(get, path = "/lb/node-status", tag = "status", security(("bearer" = [])), responses(ReadAnswers))]
pub(crate) async fn node_status(_: Authorized, ops: web::Data<Ops>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({ "nodes": node_details(&ops).await? })))
}

#[utoipa::path(get, path = "/lb/health-status", tag = "status", security(("bearer" = [])), responses(ReadAnswers))]
pub(crate) async fn health_status(_: Authorized, ops: web::Data<Ops>) -> Result<HttpResponse, ApiError> {
    let details = ops.cluster.send(GetNodeDetails).await.map_err(|_| ApiError::Supervisor)?;
    let (mut probes, mut failed) = (0u64, 0u64);
    let nodes: Vec<Value> = details
        .iter()
        .map(|d| {
            let p = d.probe.as_ref();
            probes += p.map_or(0, |p| p.probes);
            failed += p.map_or(0, |p| p.failed_probes);
            json!({
                "node_id": d.member.node_id,
                "state": d.member.health,
                "probes": p.map(|p| p.probes),
                "failed_probes": p.map(|p| p.failed_probes),
                "late_answers": p.map(|p| p.late_answers),
                "consecutive_failures": p.map(|p| p.consecutive_failures),
                "consecutive_successes": p.map(|p| p.consecutive_successes),
                "last_latency_ms": p.and_then(|p| p.last_latency_ms),
                "last_error": p.and_then(|p| p.last_error.clone()),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "probes": probes, "failed_probes": failed, "nodes": nodes })))
}

fn routing_summary(table: &RoutingTable) -> Value {
    json!({
        "generation": table.generation,
        "ready_nodes": table.nodes.iter().filter(|n| n.ready).count(),
        "total_nodes": table.nodes.len(),
        "routed_monitors": table.monitors.len(),
        "setup_complete": table.setup_complete,
        "primary": table.primary,
        "nodes": table.nodes.iter().map(|n| json!({
            "node_id": n.id, "ready": n.ready, "enabled": n.enabled, "monitor_count": n.monitor_count,
        })).collect::<Vec<_>>(),
    })
}

#[utoipa::path(get, path = "/lb/load-balancer-status", tag = "status", security(("bearer" = [])), responses(ReadAnswers))]
pub(crate) async fn load_balancer_status(_: Authorized, ops: web::Data<Ops>) -> HttpResponse {
    HttpResponse::Ok().json(routing_summary(&ops.routing.load()))
}

#[utoipa::path(get, path = "/lb/setup-status", tag = "status", security(("bearer" = [])), responses(ReadAnswers))]
pub(crate) async fn setup_status(_: Authorized, ops: web::Data<Ops>) -> HttpResponse {
    let table = ops.routing.load();
    let primary_ready = table.primary.as_deref().and_then(|p| table.node(p)).is_some_and(|n| n.ready);
    HttpResponse::Ok().json(json!({
        "setup_complete": table.setup_complete,
        "primary": table.primary,
        "primary_ready": primary_ready,
    }))
}

#[utoipa::path(get, path = "/lb/system-status", tag = "status", security(("bearer" = [])), responses(ReadAnswers))]
pub(crate) async fn system_status(_: Authorized, ops: web::Data<Ops>) -> Result<HttpResponse, ApiError> {
    let cluster = ops.cluster.send(GetClusterState).await.map_err(|_| ApiError::Supervisor)?;
    let table = ops.routing.load();
    Ok(HttpResponse::Ok().json(json!({
        "replica": &cluster.ha,
        "supervisor": cluster,
        "nodes": node_details(&ops).await?,
        "capacity": capacity_of(&table),
        "routing": routing_summary(&table),
        "database": within_limit(store::ping(&ops.reads.0)).await.is_some(),
    })))
}

const MAX_PER_PAGE: u64 = 500;
const MAX_PAGE: u64 = 1_000_000;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct Paging {
    page: Option<u64>,
    per_page: Option<u64>,
    node: Option<String>,
    reason: Option<String>,
}

impl Paging {
    fn bounds(&self) -> Result<(u64, u64), ApiError> {
        let page = self.page.unwrap_or(1);
        let per_page = self.per_page.unwrap_or(50);
        if page == 0 || page > MAX_PAGE || per_page == 0 || per_page > MAX_PER_PAGE {
            return Err(ApiError::BadQuery(format!("page is 1 to {MAX_PAGE} and per_page is 1 to {MAX_PER_PAGE}")));
        }
        Ok((page, per_page))
    }
}

#[utoipa::path(get, path = "/lb/events", tag = "status", params(Paging), security(("bearer" = [])), responses(PagedAnswers))]
pub(crate) async fn events(_: Authorized, ops: web::Data<Ops>, query: web::Query<Paging>) -> Result<HttpResponse, ApiError> {
    if query.node.is_some() || query.reason.is_some() {
        return Err(ApiError::BadQuery("events are filtered by page and per_page only".into()));
    }
    let (page, per_page) = query.bounds()?;
    Ok(HttpResponse::Ok().json(store::events(&ops.reads.0, page, per_page).await?))
}

#[utoipa::path(get, path = "/lb/moves", tag = "status", params(Paging), security(("bearer" = [])), responses(PagedAnswers))]
pub(crate) async fn moves(_: Authorized, ops: web::Data<Ops>, query: web::Query<Paging>) -> Result<HttpResponse, ApiError> {
    let (page, per_page) = query.bounds()?;
    let reason = match query.reason.as_deref() {
        None => None,
        Some(r) => Some(Reason::parse(r).ok_or_else(|| {
            ApiError::BadQuery(format!("reason must be failover, drain, manual or rebalance, not {r:?}"))
        })?),
    };
    Ok(HttpResponse::Ok().json(store::moves(&ops.reads.0, page, per_page, query.node.as_deref(), reason).await?))
}
