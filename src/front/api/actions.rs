//! Actions: each is a command to the ClusterActor, decided and written in one
//! transaction, or refused with nothing written.

use super::status::capacity_of;
use super::{apply, json_body, ApiError, Ops};
use crate::core::model::AdminState;
use crate::core::placement::MonitorId;
use crate::core::reconcile::{Command, Refusal};
use crate::front::api::auth::Authorized;
use crate::supervisor::actors::cluster::{Reconcile, Reported};
use crate::supervisor::reports::FrontReport;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use super::{AdminAnswers, ChangeAnswers, ReadAnswers, RebalanceAnswers};

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
pub(crate) async fn drain(_: Authorized, ops: web::Data<Ops>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    set_admin(&ops, id.into_inner(), Some(AdminState::Drain)).await
}

#[utoipa::path(post, path = "/lb/nodes/{id}/maintenance", tag = "actions", params(("id" = String, Path, description = "node id")), security(("bearer" = [])), responses(AdminAnswers))]
pub(crate) async fn maintenance(_: Authorized, ops: web::Data<Ops>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    set_admin(&ops, id.into_inner(), Some(AdminState::Maintenance)).await
}

#[utoipa::path(post, path = "/lb/nodes/{id}/undrain", tag = "actions", params(("id" = String, Path, description = "node id")), security(("bearer" = [])), responses(AdminAnswers))]
pub(crate) async fn undrain(_: Authorized, ops: web::Data<Ops>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    set_admin(&ops, id.into_inner(), None).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MoveRequest {
    monitor_ids: Vec<MonitorId>,
    to_node: String,
    #[serde(default)]
    pin: bool,
}

/// A manual override: recovery never reverts it; with `pin`, rebalancing leaves
/// it too.
#[utoipa::path(post, path = "/lb/monitors/move", tag = "actions", request_body = MoveRequest, security(("bearer" = [])), responses(ChangeAnswers))]
pub(crate) async fn move_monitors(_: Authorized, ops: web::Data<Ops>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
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
pub(crate) struct RebalanceRequest {
    dry_run: bool,
    max_moves: Option<usize>,
}

/// Evens out load over the ready nodes with as few moves as possible; a dry run
/// returns the plan and changes nothing.
#[utoipa::path(post, path = "/lb/rebalance", tag = "actions", request_body = RebalanceRequest, security(("bearer" = [])), responses(RebalanceAnswers))]
pub(crate) async fn rebalance(_: Authorized, ops: web::Data<Ops>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let request: RebalanceRequest = json_body(&body)?;
    run_rebalance(&ops, request.dry_run, request.max_moves, false).await
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TriggerRequest {
    max_moves: Option<usize>,
}

/// The old layer's name for an applied rebalance; the body is optional.
#[utoipa::path(post, path = "/lb/trigger-rebalancing", tag = "actions", request_body(content = Option<TriggerRequest>, description = "optional"), security(("bearer" = [])), responses(RebalanceAnswers))]
pub(crate) async fn trigger_rebalancing(_: Authorized, ops: web::Data<Ops>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let request: TriggerRequest = if body.is_empty() { TriggerRequest::default() } else { json_body(&body)? };
    run_rebalance(&ops, false, request.max_moves, false).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForceRequest {
    confirm: bool,
    max_moves: Option<usize>,
}

/// Sends every free monitor home where its home can take it, then evens out the
/// rest. Moves many monitors at once, hence the explicit confirmation.
#[utoipa::path(post, path = "/lb/force-rebalance-all", tag = "actions", request_body = ForceRequest, security(("bearer" = [])), responses(RebalanceAnswers))]
pub(crate) async fn force_rebalance_all(_: Authorized, ops: web::Data<Ops>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let request: ForceRequest = json_body(&body)?;
    if !request.confirm {
        return Err(ApiError::BadBody("force-rebalance-all moves every monitor; send {\"confirm\": true}".into()));
    }
    run_rebalance(&ops, false, request.max_moves, true).await
}

/// Re-reads every count from the database now instead of at the next tick.
#[utoipa::path(post, path = "/lb/update-loads", tag = "actions", security(("bearer" = [])), responses(ReadAnswers))]
pub(crate) async fn update_loads(_: Authorized, ops: web::Data<Ops>) -> Result<HttpResponse, ApiError> {
    let summary = ops.cluster.send(Reconcile).await.map_err(|_| ApiError::Supervisor)?.map_err(|_| ApiError::Supervisor)?;
    Ok(HttpResponse::Ok().json(json!({ "success": true, "summary": summary, "capacity": capacity_of(&ops.routing.load()) })))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MonitorWritten {
    /// The node that answered the write.
    served: String,
    monitor: Option<MonitorId>,
    /// The home the node gave a monitor it created.
    home: Option<String>,
}

/// A replica that does not lead saw a node answer a monitor write (REST
/// create, update, pause, resume, delete) through its front door: the leader
/// has that node and the monitor's node reconcile, as for a write through its own.
#[utoipa::path(post, path = "/lb/monitor-written", tag = "actions", request_body = MonitorWritten, security(("bearer" = [])), responses(ChangeAnswers))]
pub(crate) async fn monitor_written(_: Authorized, ops: web::Data<Ops>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let written: MonitorWritten = json_body(&body)?;
    let table = ops.routing.load();
    for node in std::iter::once(&written.served).chain(&written.home) {
        if table.node(node).is_none() {
            return Err(Refusal::UnknownNode(node.clone()).into());
        }
    }
    let report = FrontReport::MonitorWritten { served: written.served, monitor: written.monitor, home: written.home };
    ops.cluster.try_send(Reported(report)).map_err(|_| ApiError::Supervisor)?;
    Ok(HttpResponse::Ok().json(json!({ "success": true })))
}
