//! Node admin: register, change and delete node rows, each a command to the
//! ClusterActor; the answer shows the row as the status reads see it.

use super::status::one_node;
use super::{apply, json_body, ApiError, Ops};
use super::{ChangeAnswers, CreateAnswers};
use crate::core::model::{NodeSpec, NodeUpdate};
use crate::core::reconcile::Command;
use crate::front::api::auth::Authorized;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

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
pub(crate) struct NewNode {
    node_id: String,
    node_name: Option<String>,
    host: String,
    active: Option<bool>,
    is_primary: Option<bool>,
}

#[utoipa::path(post, path = "/lb/nodes", tag = "nodes", request_body = NewNode, security(("bearer" = [])), responses(CreateAnswers))]
pub(crate) async fn create_node(_: Authorized, ops: web::Data<Ops>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
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
pub(crate) struct NodePatch {
    node_name: Option<String>,
    host: Option<String>,
    active: Option<bool>,
    is_primary: Option<bool>,
}

#[utoipa::path(put, path = "/lb/nodes/{id}", tag = "nodes", params(("id" = String, Path, description = "node id")), request_body = NodePatch, security(("bearer" = [])), responses(ChangeAnswers))]
pub(crate) async fn update_node(
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
pub(crate) struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

/// Refused while the node runs monitors, unless `?force=true`, which moves them
/// away in the same transaction that deletes the row.
#[utoipa::path(delete, path = "/lb/nodes/{id}", tag = "nodes", params(("id" = String, Path, description = "node id"), DeleteQuery), security(("bearer" = [])), responses(ChangeAnswers))]
pub(crate) async fn delete_node(
    _: Authorized,
    ops: web::Data<Ops>,
    id: web::Path<String>,
    query: web::Query<DeleteQuery>,
) -> Result<HttpResponse, ApiError> {
    let summary = apply(&ops, Command::DeleteNode { node: id.to_string(), force: query.force }).await?;
    Ok(HttpResponse::Ok().json(json!({ "success": true, "deleted": id.as_str(), "summary": summary })))
}
