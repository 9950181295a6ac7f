//! The operations API under `/lb/`: status reads and actions for operators and
//! automation. Everything that reveals more than liveness, and every action,
//! takes [`auth::Authorized`].
//! - [`status`]: the reads: routing snapshot, the ClusterActor's observable state,
//!   and the only database reads of the front (events, moves, node rows).
//! - [`actions`]: drain, maintenance, moves, rebalancing: commands to the
//!   ClusterActor, each one transaction.
//! - [`nodes`]: node admin (create, update, delete), commands as well.
//!
//! - [`forward`]: actions sent to a replica that does not lead go to the leader.
//!
//! Nothing here writes: every change is a command the ClusterActor decides.

pub mod actions;
pub mod auth;
pub mod forward;
pub mod nodes;
pub mod status;

use crate::core::reconcile::{Command, DecisionSummary, Refusal};
use crate::front::error::{error, method_not_allowed};
use crate::metrics::Metrics;
use crate::supervisor::actors::cluster::{Apply, ApplyError, ClusterActor};
use crate::supervisor::publisher::RoutingReader;
use crate::supervisor::vitals::VitalSigns;
use actix::Addr;
use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse, ResponseError};
use auth::Access;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, RefOr, Response, ResponseBuilder, Schema};
use utoipa::IntoResponses;

/// What the operations API reads from.
#[derive(Clone)]
pub struct Ops {
    pub cluster: Addr<ClusterActor>,
    /// The database, for the status reads only.
    pub reads: status::Reads,
    pub routing: RoutingReader,
    pub access: Arc<Access>,
    pub metrics: Arc<Metrics>,
    /// The supervisor's own knowledge of its health, for readiness.
    pub vitals: VitalSigns,
    /// Database contact older than this makes the supervisor not ready.
    pub stale_after: std::time::Duration,
}

/// Why a read failed, in words that leak no internals.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The cause is logged, never shown.
    #[error("the database did not answer")]
    Database(String),
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
                | Refusal::Configured(_)
                | Refusal::OverBudget { .. }
                | Refusal::SourceBusy(_),
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
            ApiError::Refused(Refusal::OverBudget { .. } | Refusal::SourceBusy(_)) => "node_busy",
        };
        error(self.status_code(), code, self.to_string())
    }
}

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
            web::resource(path)
                .route(handler)
                .default_service(web::to(|req| method_not_allowed(req, "POST")))
                .wrap(from_fn(forward::to_leader))
        };
        cfg.service(get("/metrics", web::get().to(status::metrics)))
            .service(get("/ready", web::get().to(status::ready)))
            .service(get("/health", web::get().to(status::health)))
            .service(get("/capacity", web::get().to(status::capacity)))
            .service(get("/node-status", web::get().to(status::node_status)))
            .service(get("/health-status", web::get().to(status::health_status)))
            .service(get("/load-balancer-status", web::get().to(status::load_balancer_status)))
            .service(get("/setup-status", web::get().to(status::setup_status)))
            .service(get("/system-status", web::get().to(status::system_status)))
            .service(get("/events", web::get().to(status::events)))
            .service(get("/moves", web::get().to(status::moves)))
            .service(
                web::resource("/nodes")
                    .route(web::get().to(status::list_nodes))
                    .route(web::post().to(nodes::create_node))
                    .default_service(web::to(|req| method_not_allowed(req, "GET, POST")))
                    .wrap(from_fn(forward::to_leader)),
            )
            .service(
                web::resource("/nodes/{id}")
                    .route(web::get().to(status::get_node))
                    .route(web::put().to(nodes::update_node))
                    .route(web::delete().to(nodes::delete_node))
                    .default_service(web::to(|req| method_not_allowed(req, "GET, PUT, DELETE")))
                    .wrap(from_fn(forward::to_leader)),
            )
            .service(post("/nodes/{id}/drain", web::post().to(actions::drain)))
            .service(post("/nodes/{id}/maintenance", web::post().to(actions::maintenance)))
            .service(post("/nodes/{id}/undrain", web::post().to(actions::undrain)))
            .service(post("/monitors/move", web::post().to(actions::move_monitors)))
            .service(post("/update-loads", web::post().to(actions::update_loads)))
            .service(post("/monitor-written", web::post().to(actions::monitor_written)))
            .service(post("/rebalance", web::post().to(actions::rebalance)))
            .service(post("/trigger-rebalancing", web::post().to(actions::trigger_rebalancing)))
            .service(post("/force-rebalance-all", web::post().to(actions::force_rebalance_all)))
            .service(get("/rebalancing-status", web::get().to(status::rebalancing_status)));
    }
}

/// A JSON request body; unknown fields and wrong types are refused with 400.
pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadBody(e.to_string()))
}

pub(crate) async fn apply(ops: &Ops, command: Command) -> Result<DecisionSummary, ApiError> {
    match ops.cluster.send(Apply(command)).await {
        Ok(Ok(summary)) => Ok(summary),
        Ok(Err(ApplyError::Refused(refusal))) => Err(refusal.into()),
        Ok(Err(ApplyError::Failed(_))) | Err(_) => Err(ApiError::Supervisor),
    }
}
