//! `kuma-cluster dev`: the whole cluster on one machine with no Kuma install.
//! Simulated nodes run in-process under a [`DevNodes`] actor, so the HTTP
//! workers can kill and revive them by message to watch failover and revert.

use crate::front::api::auth::Authorized;
use crate::front::error::error;
use crate::tools::sim::{SimConfig, SimError, SimNode};
use actix::prelude::*;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::json;
use sea_orm::DatabaseConnection;
use std::collections::BTreeMap;
use std::net::SocketAddr;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DevError {
    #[error("no simulated node {0:?}")]
    Unknown(String),
    #[error("node {0:?} is already {1}")]
    Already(String, &'static str),
    #[error("node {0:?} could not start again: {1}")]
    Start(String, String),
}

/// Stop a simulated node, as if it crashed.
#[derive(Message)]
#[rtype(result = "Result<(), DevError>")]
pub struct Kill(pub String);

/// Start a killed node again on its old address.
#[derive(Message)]
#[rtype(result = "Result<(), DevError>")]
pub struct Revive(pub String);

struct Slot {
    address: SocketAddr,
    node: Option<SimNode>,
}

pub struct DevNodes {
    db: DatabaseConnection,
    auth_header: String,
    speed: f64,
    nodes: BTreeMap<String, Slot>,
}

impl DevNodes {
    /// Starts one simulated node per id on a free loopback port.
    pub async fn start(
        db: DatabaseConnection,
        ids: &[String],
        auth_header: String,
        speed: f64,
    ) -> Result<Addr<DevNodes>, SimError> {
        let mut nodes = BTreeMap::new();
        for id in ids {
            let mut config = SimConfig::new(id, "127.0.0.1:0".parse().expect("a literal address"), Some(auth_header.clone()));
            config.speed = speed;
            let node = SimNode::start(config, db.clone()).await?;
            let address = node.host.parse().expect("a sim node's host is an address");
            nodes.insert(id.clone(), Slot { address, node: Some(node) });
        }
        Ok(DevNodes { db, auth_header, speed, nodes }.start())
    }

    fn config(&self, id: &str, address: SocketAddr) -> SimConfig {
        SimConfig { speed: self.speed, ..SimConfig::new(id, address, Some(self.auth_header.clone())) }
    }
}

impl Actor for DevNodes {
    type Context = Context<Self>;
}

impl Handler<Kill> for DevNodes {
    type Result = ResponseFuture<Result<(), DevError>>;

    fn handle(&mut self, Kill(id): Kill, _: &mut Self::Context) -> Self::Result {
        let taken = match self.nodes.get_mut(&id) {
            None => Err(DevError::Unknown(id.clone())),
            Some(slot) => slot.node.take().ok_or_else(|| DevError::Already(id.clone(), "dead")),
        };
        Box::pin(async move {
            taken?.stop().await;
            tracing::info!(node_id = %id, "dev: node killed");
            Ok(())
        })
    }
}

impl Handler<Revive> for DevNodes {
    type Result = ResponseActFuture<Self, Result<(), DevError>>;

    fn handle(&mut self, Revive(id): Revive, _: &mut Self::Context) -> Self::Result {
        let address = match self.nodes.get(&id) {
            None => return Box::pin(fut::ready(Err(DevError::Unknown(id)))),
            Some(Slot { node: Some(_), .. }) => return Box::pin(fut::ready(Err(DevError::Already(id, "running")))),
            Some(slot) => slot.address,
        };
        let start = SimNode::start(self.config(&id, address), self.db.clone());
        Box::pin(start.into_actor(self).map(move |started, act, _| {
            let node = started.map_err(|e| DevError::Start(id.clone(), e.to_string()))?;
            tracing::info!(node_id = %id, "dev: node revived");
            if let Some(slot) = act.nodes.get_mut(&id) {
                slot.node = Some(node);
            }
            Ok(())
        }))
    }
}

/// The dev mode's own routes, token required: kill and revive simulated nodes.
pub fn routes(nodes: Addr<DevNodes>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(nodes))
            .route("/dev/nodes/{id}/kill", web::post().to(kill))
            .route("/dev/nodes/{id}/revive", web::post().to(revive));
    }
}

fn answer(id: &str, state: &str, result: Result<Result<(), DevError>, MailboxError>) -> HttpResponse {
    match result {
        Ok(Ok(())) => HttpResponse::Ok().json(json!({ "success": true, "node": id, "state": state })),
        Ok(Err(e @ DevError::Unknown(_))) => error(StatusCode::NOT_FOUND, "unknown_node", e.to_string()),
        Ok(Err(e @ DevError::Already(..))) => error(StatusCode::CONFLICT, "conflict", e.to_string()),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "sim_node_failed", e.to_string()),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "dev_unavailable", "the simulated nodes are gone"),
    }
}

async fn kill(_: Authorized, id: web::Path<String>, nodes: web::Data<Addr<DevNodes>>) -> HttpResponse {
    answer(&id, "killed", nodes.send(Kill(id.to_string())).await)
}

async fn revive(_: Authorized, id: web::Path<String>, nodes: web::Data<Addr<DevNodes>>) -> HttpResponse {
    answer(&id, "running", nodes.send(Revive(id.to_string())).await)
}
