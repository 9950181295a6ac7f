//! The operations API under `/lb/`: status reads and actions for operators and
//! automation. Everything that reveals more than liveness, and every action,
//! takes [`auth::Authorized`]. Reads come from the routing snapshot, the
//! ClusterActor's observable state, and the store (events, moves); actions are
//! commands to the ClusterActor, each one transaction, and nothing here writes.

pub mod auth;

use crate::actors::cluster::{
    Apply, ApplyError, ClusterActor, DecisionSummary, GetClusterState, GetNodeDetails, Reconcile,
};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::placement::{MonitorId, Reason};
use crate::reconcile::{AdminState, Command, Refusal};
use crate::proxy::error;
use crate::routing::{RouteNode, RoutingReader, RoutingTable};
use crate::store::{self, NodeSpec, NodeUpdate, StoreError};
use actix::Addr;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use auth::{Access, Authorized};
use sea_orm::DatabaseConnection;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use std::collections::BTreeMap;
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, RefOr, Response, ResponseBuilder, Schema};
use utoipa::{IntoParams, IntoResponses, OpenApi, ToSchema};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// What the operations API reads from.
#[derive(Clone)]
pub struct Ops {
    pub cluster: Addr<ClusterActor>,
    pub db: DatabaseConnection,
    pub routing: RoutingReader,
    pub access: Arc<Access>,
    pub metrics: Arc<Metrics>,
}

/// Why a read failed, in words that leak no internals.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the database did not answer")]
    Database(#[from] StoreError),
    #[error("the supervisor is not running")]
    Supervisor,
    #[error("{0}")]
    BadQuery(String),
    #[error("{0}")]
    BadBody(String),
    #[error(transparent)]
    Refused(#[from] Refusal),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Database(_) | ApiError::Supervisor => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadQuery(_) | ApiError::BadBody(_) => StatusCode::BAD_REQUEST,
            ApiError::Refused(Refusal::UnknownNode(_) | Refusal::UnknownMonitors(_)) => StatusCode::NOT_FOUND,
            ApiError::Refused(
                Refusal::NodeNotReady(_)
                | Refusal::InService(_)
                | Refusal::NotStarted
                | Refusal::NodeExists(_)
                | Refusal::NodeHoldsMonitors(..)
                | Refusal::Configured(_),
            ) => StatusCode::CONFLICT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Database(e) = self {
            tracing::warn!(error = %e, "status read failed");
        }
        let code = match self {
            ApiError::Database(_) => "database_unavailable",
            ApiError::Supervisor => "supervisor_unavailable",
            ApiError::BadQuery(_) => "invalid_query",
            ApiError::BadBody(_) => "invalid_body",
            ApiError::Refused(Refusal::UnknownNode(_)) => "unknown_node",
            ApiError::Refused(Refusal::UnknownMonitors(_)) => "unknown_monitor",
            ApiError::Refused(Refusal::NodeNotReady(_)) => "node_not_ready",
            ApiError::Refused(Refusal::InService(_)) => "node_in_service",
            ApiError::Refused(Refusal::NotStarted) => "not_started",
            ApiError::Refused(Refusal::NodeExists(_)) => "node_exists",
            ApiError::Refused(Refusal::NodeHoldsMonitors(..)) => "node_holds_monitors",
            ApiError::Refused(Refusal::Configured(_)) => "node_in_config",
        };
        error(self.status_code(), code, self.to_string())
    }
}

/// Every error answer: what went wrong, as a code and in words.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    pub detail: String,
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The OpenAPI 3 document of the `/lb` API, generated from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(title = "kuma-cluster", description = "Operations API of kuma-cluster"),
    paths(
        ready, health, capacity, node_status, health_status, load_balancer_status, setup_status, system_status,
        events, moves, rebalancing_status, list_nodes, get_node, create_node, update_node, delete_node, drain,
        maintenance, undrain, move_monitors, rebalance, trigger_rebalancing, force_rebalance_all, update_loads,
        metrics, crate::server::ping, crate::server::lb_ping, crate::server::fixed_node, crate::server::set_fixed_node,
        crate::server::clear_fixed_node, crate::server::fixed_node_status, crate::server::available_nodes,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The answers an endpoint documents, by status code: 2xx bodies are JSON
/// objects, errors are [`ErrorBody`].
fn answers(codes: &[u16]) -> BTreeMap<String, RefOr<Response>> {
    codes
        .iter()
        .map(|&code| {
            let (description, schema): (&str, RefOr<Schema>) = match code {
                200 => ("done", ObjectBuilder::new().into()),
                201 => ("created", ObjectBuilder::new().into()),
                400 => ("bad input", Ref::from_schema_name("ErrorBody").into()),
                401 => ("no or wrong bearer token", Ref::from_schema_name("ErrorBody").into()),
                404 => ("unknown node or monitor", Ref::from_schema_name("ErrorBody").into()),
                409 => ("conflicts with the cluster's state", Ref::from_schema_name("ErrorBody").into()),
                _ => ("database or supervisor unavailable", Ref::from_schema_name("ErrorBody").into()),
            };
            let response = ResponseBuilder::new()
                .description(description)
                .content("application/json", ContentBuilder::new().schema(Some(schema)).build())
                .build();
            (code.to_string(), response.into())
        })
        .collect()
}

/// Declares named sets of documented answers, one per kind of endpoint.
macro_rules! answer_sets {
    ($($name:ident => [$($code:literal),+];)+) => {$(
        struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                answers(&[$($code),+])
            }
        }
    )+};
}

answer_sets! {
    ReadAnswers => [200, 401, 503];
    PagedAnswers => [200, 400, 401, 503];
    NodeAnswers => [200, 401, 404, 503];
    CreateAnswers => [201, 400, 401, 409, 503];
    ChangeAnswers => [200, 400, 401, 404, 409, 503];
    AdminAnswers => [200, 401, 404, 409, 503];
    RebalanceAnswers => [200, 400, 401, 409, 503];
}

/// The old layer's status names, answered at `/lb/<name>` and redirected from `/api/<name>`.
const STATUS_NAMES: [&str; 8] = [
    "health",
    "capacity",
    "node-status",
    "health-status",
    "load-balancer-status",
    "setup-status",
    "system-status",
    "rebalancing-status",
];

pub fn configure(ops: Ops) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::from(ops.access.clone()))
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                let detail = e.to_string();
                actix_web::error::InternalError::from_response(e, error(StatusCode::BAD_REQUEST, "invalid_query", detail))
                    .into()
            }))
            .app_data(web::Data::new(ops));
        let get = |path: &str, handler| {
            web::resource(path).route(handler).default_service(web::to(|req| method_not_allowed(req, "GET")))
        };
        let post = |path: &str, handler| {
            web::resource(path).route(handler).default_service(web::to(|req| method_not_allowed(req, "POST")))
        };
        cfg.service(get("/lb/openapi.json", web::get().to(openapi)))
            .service(get("/metrics", web::get().to(metrics)))
            .service(get("/lb/ready", web::get().to(ready)))
            .service(get("/lb/health", web::get().to(health)))
            .service(get("/lb/capacity", web::get().to(capacity)))
            .service(get("/lb/node-status", web::get().to(node_status)))
            .service(get("/lb/health-status", web::get().to(health_status)))
            .service(get("/lb/load-balancer-status", web::get().to(load_balancer_status)))
            .service(get("/lb/setup-status", web::get().to(setup_status)))
            .service(get("/lb/system-status", web::get().to(system_status)))
            .service(get("/lb/events", web::get().to(events)))
            .service(get("/lb/moves", web::get().to(moves)))
            .service(
                web::resource("/lb/nodes")
                    .route(web::get().to(list_nodes))
                    .route(web::post().to(create_node))
                    .default_service(web::to(|req| method_not_allowed(req, "GET, POST"))),
            )
            .service(
                web::resource("/lb/nodes/{id}")
                    .route(web::get().to(get_node))
                    .route(web::put().to(update_node))
                    .route(web::delete().to(delete_node))
                    .default_service(web::to(|req| method_not_allowed(req, "GET, PUT, DELETE"))),
            )
            .service(post("/lb/nodes/{id}/drain", web::post().to(drain)))
            .service(post("/lb/nodes/{id}/maintenance", web::post().to(maintenance)))
            .service(post("/lb/nodes/{id}/undrain", web::post().to(undrain)))
            .service(post("/lb/monitors/move", web::post().to(move_monitors)))
            .service(post("/lb/update-loads", web::post().to(update_loads)))
            .service(post("/lb/rebalance", web::post().to(rebalance)))
            .service(post("/lb/trigger-rebalancing", web::post().to(trigger_rebalancing)))
            .service(post("/lb/force-rebalance-all", web::post().to(force_rebalance_all)))
            .service(get("/lb/rebalancing-status", web::get().to(rebalancing_status)));
        for name in STATUS_NAMES {
            cfg.route(&format!("/api/{name}"), web::get().to(move || redirect(name)));
        }
    }
}

/// The document is open, like the old layer's README: it describes, it reveals
/// nothing of the cluster.
async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

pub(crate) async fn method_not_allowed(req: HttpRequest, allow: &'static str) -> HttpResponse {
    let mut response =
        error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("{} is not allowed here", req.method()));
    response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allow));
    response
}

/// A JSON request body; unknown fields and wrong types are refused with 400.
pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadBody(e.to_string()))
}

async fn apply(ops: &Ops, command: Command) -> Result<DecisionSummary, ApiError> {
    match ops.cluster.send(Apply(command)).await {
        Ok(Ok(summary)) => Ok(summary),
        Ok(Err(ApplyError::Refused(refusal))) => Err(refusal.into()),
        Ok(Err(ApplyError::Failed(_))) | Err(_) => Err(ApiError::Supervisor),
    }
}

async fn set_admin(ops: &Ops, node: String, state: Option<AdminState>) -> Result<HttpResponse, ApiError> {
    let summary = apply(ops, Command::SetAdmin { node: node.clone(), state }).await?;
    Ok(HttpResponse::Ok().json(json!({
        "success": true,
        "node": node,
        "state": state.map_or("in_service", AdminState::as_str),
        "summary": summary,
    })))
}

/// Moves every monitor off the node and keeps new sessions and returning
/// monitors away until it is undrained.
#[utoipa::path(post, path = "/lb/nodes/{id}/drain", tag = "actions", params(("id" = String, Path, description = "node id")), security(("bearer" = [])), responses(AdminAnswers))]
async fn drain(_: Authorized, ops: web::Data<Ops>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    set_admin(&ops, id.into_inner(), Some(AdminState::Drain)).await
}

#[utoipa::path(post, path = "/lb/nodes/{id}/maintenance", tag = "actions", params(("id" = String, Path, description = "node id")), security(("bearer" = [])), responses(AdminAnswers))]
async fn maintenance(_: Authorized, ops: web::Data<Ops>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    set_admin(&ops, id.into_inner(), Some(AdminState::Maintenance)).await
}

#[utoipa::path(post, path = "/lb/nodes/{id}/undrain", tag = "actions", params(("id" = String, Path, description = "node id")), security(("bearer" = [])), responses(AdminAnswers))]
async fn undrain(_: Authorized, ops: web::Data<Ops>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    set_admin(&ops, id.into_inner(), None).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MoveRequest {
    monitor_ids: Vec<MonitorId>,
    to_node: String,
    #[serde(default)]
    pin: bool,
}

/// A manual override: recovery never reverts it; with `pin`, rebalancing leaves
/// it too.
#[utoipa::path(post, path = "/lb/monitors/move", tag = "actions", request_body = MoveRequest, security(("bearer" = [])), responses(ChangeAnswers))]
async fn move_monitors(_: Authorized, ops: web::Data<Ops>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let request: MoveRequest = json_body(&body)?;
    if request.monitor_ids.is_empty() {
        return Err(ApiError::BadBody("monitor_ids must name at least one monitor".into()));
    }
    let command = Command::Move { monitors: request.monitor_ids, to: request.to_node.clone(), pin: request.pin };
    let summary = apply(&ops, command).await?;
    Ok(HttpResponse::Ok().json(json!({
        "success": true,
        "to_node": request.to_node,
        "pinned": request.pin,
        "moved": summary.manual,
        "summary": summary,
    })))
}

async fn run_rebalance(ops: &Ops, dry_run: bool, max_moves: Option<usize>, from_scratch: bool) -> Result<HttpResponse, ApiError> {
    let mut summary = apply(ops, Command::Rebalance { dry_run, max_moves, from_scratch }).await?;
    let report = summary.rebalance.take();
    Ok(HttpResponse::Ok().json(json!({
        "success": true,
        "applied": !dry_run,
        "rebalance": report,
        "summary": summary,
    })))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RebalanceRequest {
    dry_run: bool,
    max_moves: Option<usize>,
}

/// Evens out load over the ready nodes with as few moves as possible; a dry run
/// returns the plan and changes nothing.
#[utoipa::path(post, path = "/lb/rebalance", tag = "actions", request_body = RebalanceRequest, security(("bearer" = [])), responses(RebalanceAnswers))]
async fn rebalance(_: Authorized, ops: web::Data<Ops>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let request: RebalanceRequest = json_body(&body)?;
    run_rebalance(&ops, request.dry_run, request.max_moves, false).await
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct TriggerRequest {
    max_moves: Option<usize>,
}

/// The old layer's name for an applied rebalance; the body is optional.
#[utoipa::path(post, path = "/lb/trigger-rebalancing", tag = "actions", request_body(content = Option<TriggerRequest>, description = "optional"), security(("bearer" = [])), responses(RebalanceAnswers))]
async fn trigger_rebalancing(_: Authorized, ops: web::Data<Ops>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let request: TriggerRequest = if body.is_empty() { TriggerRequest::default() } else { json_body(&body)? };
    run_rebalance(&ops, false, request.max_moves, false).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ForceRequest {
    confirm: bool,
    max_moves: Option<usize>,
}

/// Sends every free monitor home where its home can take it, then evens out the
/// rest. Moves many monitors at once, hence the explicit confirmation.
#[utoipa::path(post, path = "/lb/force-rebalance-all", tag = "actions", request_body = ForceRequest, security(("bearer" = [])), responses(RebalanceAnswers))]
async fn force_rebalance_all(_: Authorized, ops: web::Data<Ops>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let request: ForceRequest = json_body(&body)?;
    if !request.confirm {
        return Err(ApiError::BadBody("force-rebalance-all moves every monitor; send {\"confirm\": true}".into()));
    }
    run_rebalance(&ops, false, request.max_moves, true).await
}

#[utoipa::path(get, path = "/lb/rebalancing-status", tag = "status", security(("bearer" = [])), responses(ReadAnswers))]
async fn rebalancing_status(_: Authorized, ops: web::Data<Ops>) -> Result<HttpResponse, ApiError> {
    let state = ops.cluster.send(GetClusterState).await.map_err(|_| ApiError::Supervisor)?;
    Ok(HttpResponse::Ok().json(json!({ "running": state.rebalancing, "last": state.last_rebalance })))
}

/// A node row joined with what the snapshot knows of it.
async fn node_view(ops: &Ops) -> Result<Vec<Value>, ApiError> {
    let table = ops.routing.load();
    Ok(store::nodes(&ops.db)
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
async fn list_nodes(_: Authorized, ops: web::Data<Ops>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({ "nodes": node_view(&ops).await? })))
}

async fn one_node(ops: &Ops, id: &str) -> Result<Value, ApiError> {
    node_view(ops)
        .await?
        .into_iter()
        .find(|n| n["node_id"] == id)
        .ok_or_else(|| Refusal::UnknownNode(id.to_owned()).into())
}

#[utoipa::path(get, path = "/lb/nodes/{id}", tag = "nodes", params(("id" = String, Path, description = "node id")), security(("bearer" = [])), responses(NodeAnswers))]
async fn get_node(_: Authorized, ops: web::Data<Ops>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(one_node(&ops, &id).await?))
}

fn valid_node_id(id: &str) -> Result<(), ApiError> {
    let ok = (1..=50).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    ok.then_some(()).ok_or_else(|| ApiError::BadBody("node_id is 1 to 50 letters, digits, '-', '_' or '.'".into()))
}

fn valid_host(host: &str) -> Result<(), ApiError> {
    let port_ok = host.rsplit_once(':').is_some_and(|(name, port)| {
        !name.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
    });
    let ok = host.len() <= 45 && port_ok && !host.chars().any(|c| c.is_whitespace() || c == '/');
    ok.then_some(()).ok_or_else(|| ApiError::BadBody("host is hostname:port, at most 45 characters".into()))
}

fn valid_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=100).contains(&name.len());
    ok.then_some(()).ok_or_else(|| ApiError::BadBody("node_name is 1 to 100 characters".into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewNode {
    node_id: String,
    node_name: Option<String>,
    host: String,
    active: Option<bool>,
    is_primary: Option<bool>,
}

#[utoipa::path(post, path = "/lb/nodes", tag = "nodes", request_body = NewNode, security(("bearer" = [])), responses(CreateAnswers))]
async fn create_node(_: Authorized, ops: web::Data<Ops>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let new: NewNode = json_body(&body)?;
    valid_node_id(&new.node_id)?;
    valid_host(&new.host)?;
    if let Some(name) = &new.node_name {
        valid_name(name)?;
    }
    let spec = NodeSpec {
        name: new.node_name.unwrap_or_else(|| new.node_id.clone()),
        id: new.node_id.clone(),
        host: new.host,
        active: new.active.unwrap_or(true),
        primary: new.is_primary.unwrap_or(false),
    };
    let summary = apply(&ops, Command::CreateNode(spec)).await?;
    Ok(HttpResponse::Created().json(json!({ "node": one_node(&ops, &new.node_id).await?, "summary": summary })))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NodePatch {
    node_name: Option<String>,
    host: Option<String>,
    active: Option<bool>,
    is_primary: Option<bool>,
}

#[utoipa::path(put, path = "/lb/nodes/{id}", tag = "nodes", params(("id" = String, Path, description = "node id")), request_body = NodePatch, security(("bearer" = [])), responses(ChangeAnswers))]
async fn update_node(
    _: Authorized,
    ops: web::Data<Ops>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let patch: NodePatch = json_body(&body)?;
    if patch.node_name.is_none() && patch.host.is_none() && patch.active.is_none() && patch.is_primary.is_none() {
        return Err(ApiError::BadBody("name at least one of node_name, host, active, is_primary".into()));
    }
    if let Some(host) = &patch.host {
        valid_host(host)?;
    }
    if let Some(name) = &patch.node_name {
        valid_name(name)?;
    }
    let update = NodeUpdate {
        id: id.to_string(),
        name: patch.node_name,
        host: patch.host,
        active: patch.active,
        primary: patch.is_primary,
    };
    let summary = apply(&ops, Command::UpdateNode(update)).await?;
    Ok(HttpResponse::Ok().json(json!({ "node": one_node(&ops, &id).await?, "summary": summary })))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

/// Refused while the node runs monitors, unless `?force=true`, which moves them
/// away in the same transaction that deletes the row.
#[utoipa::path(delete, path = "/lb/nodes/{id}", tag = "nodes", params(("id" = String, Path, description = "node id"), DeleteQuery), security(("bearer" = [])), responses(ChangeAnswers))]
async fn delete_node(
    _: Authorized,
    ops: web::Data<Ops>,
    id: web::Path<String>,
    query: web::Query<DeleteQuery>,
) -> Result<HttpResponse, ApiError> {
    let summary = apply(&ops, Command::DeleteNode { node: id.to_string(), force: query.force }).await?;
    Ok(HttpResponse::Ok().json(json!({ "success": true, "deleted": id.as_str(), "summary": summary })))
}

/// Re-reads every count from the database now instead of at the next tick.
#[utoipa::path(post, path = "/lb/update-loads", tag = "actions", security(("bearer" = [])), responses(ReadAnswers))]
async fn update_loads(_: Authorized, ops: web::Data<Ops>) -> Result<HttpResponse, ApiError> {
    let summary = ops.cluster.send(Reconcile).await.map_err(|_| ApiError::Supervisor)?.map_err(|_| ApiError::Supervisor)?;
    Ok(HttpResponse::Ok().json(json!({ "success": true, "summary": summary, "capacity": capacity_of(&ops.routing.load()) })))
}

async fn redirect(name: &'static str) -> HttpResponse {
    HttpResponse::MovedPermanently().insert_header((header::LOCATION, format!("/lb/{name}"))).finish()
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

fn capacity_of(table: &RoutingTable) -> Value {
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
#[utoipa::path(get, path = "/metrics", tag = "status", security(("bearer" = [])), responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String), (status = 401, description = "no or wrong bearer token", body = ErrorBody)))]
async fn metrics(_: Authorized, ops: web::Data<Ops>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(ops.metrics.render(&ops.routing.load()))
}

/// Readiness, open like liveness: the database answers and a node is ready.
#[utoipa::path(get, path = "/lb/ready", tag = "liveness", responses((status = 200, description = "ready", body = Object), (status = 503, description = "not ready", body = Object)))]
async fn ready(ops: web::Data<Ops>) -> HttpResponse {
    let database = store::ping(&ops.db).await.is_ok();
    let ready_nodes = ops.routing.load().nodes.iter().filter(|n| n.ready).count();
    let body = json!({ "ready": database && ready_nodes > 0, "database": database, "node_ready": ready_nodes > 0 });
    if database && ready_nodes > 0 {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

#[utoipa::path(get, path = "/lb/health", tag = "status", security(("bearer" = [])), responses(ReadAnswers))]
async fn health(_: Authorized, ops: web::Data<Ops>) -> Result<HttpResponse, ApiError> {
    let table = ops.routing.load();
    let seen: HashMap<String, Option<String>> =
        store::nodes(&ops.db).await?.into_iter().map(|n| (n.node_id, n.last_seen)).collect();
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
        "timestamp": chrono::Utc::now(),
    })))
}

#[utoipa::path(get, path = "/lb/capacity", tag = "status", security(("bearer" = [])), responses(ReadAnswers))]
async fn capacity(_: Authorized, ops: web::Data<Ops>) -> HttpResponse {
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
async fn node_status(_: Authorized, ops: web::Data<Ops>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({ "nodes": node_details(&ops).await? })))
}

#[utoipa::path(get, path = "/lb/health-status", tag = "status", security(("bearer" = [])), responses(ReadAnswers))]
async fn health_status(_: Authorized, ops: web::Data<Ops>) -> Result<HttpResponse, ApiError> {
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
async fn load_balancer_status(_: Authorized, ops: web::Data<Ops>) -> HttpResponse {
    HttpResponse::Ok().json(routing_summary(&ops.routing.load()))
}

#[utoipa::path(get, path = "/lb/setup-status", tag = "status", security(("bearer" = [])), responses(ReadAnswers))]
async fn setup_status(_: Authorized, ops: web::Data<Ops>) -> HttpResponse {
    let table = ops.routing.load();
    let primary_ready = table.primary.as_deref().and_then(|p| table.node(p)).is_some_and(|n| n.ready);
    HttpResponse::Ok().json(json!({
        "setup_complete": table.setup_complete,
        "primary": table.primary,
        "primary_ready": primary_ready,
    }))
}

#[utoipa::path(get, path = "/lb/system-status", tag = "status", security(("bearer" = [])), responses(ReadAnswers))]
async fn system_status(_: Authorized, ops: web::Data<Ops>) -> Result<HttpResponse, ApiError> {
    let cluster = ops.cluster.send(GetClusterState).await.map_err(|_| ApiError::Supervisor)?;
    let table = ops.routing.load();
    Ok(HttpResponse::Ok().json(json!({
        "supervisor": cluster,
        "nodes": node_details(&ops).await?,
        "capacity": capacity_of(&table),
        "routing": routing_summary(&table),
        "database": store::ping(&ops.db).await.is_ok(),
    })))
}

const MAX_PER_PAGE: u64 = 500;
const MAX_PAGE: u64 = 1_000_000;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Paging {
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
async fn events(_: Authorized, ops: web::Data<Ops>, query: web::Query<Paging>) -> Result<HttpResponse, ApiError> {
    if query.node.is_some() || query.reason.is_some() {
        return Err(ApiError::BadQuery("events are filtered by page and per_page only".into()));
    }
    let (page, per_page) = query.bounds()?;
    Ok(HttpResponse::Ok().json(store::events(&ops.db, page, per_page).await?))
}

#[utoipa::path(get, path = "/lb/moves", tag = "status", params(Paging), security(("bearer" = [])), responses(PagedAnswers))]
async fn moves(_: Authorized, ops: web::Data<Ops>, query: web::Query<Paging>) -> Result<HttpResponse, ApiError> {
    let (page, per_page) = query.bounds()?;
    let reason = match query.reason.as_deref() {
        None => None,
        Some(r) => Some(Reason::parse(r).ok_or_else(|| {
            ApiError::BadQuery(format!("reason must be failover, drain, manual or rebalance, not {r:?}"))
        })?),
    };
    Ok(HttpResponse::Ok().json(store::moves(&ops.db, page, per_page, query.node.as_deref(), reason).await?))
}
