//! The open endpoints, answered without a token: liveness (`/health`,
//! `/lb/ping`) and the old layer's fixed-node cookie endpoints, which browsers
//! call. They read only the routing snapshot.

use crate::front::api::json_body;
use crate::front::error::{error, ErrorBody};
use crate::front::proxy::route::FIXED_COOKIE;
use crate::front::proxy::Worker;
use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

/// The old layer's fixed-node cookie lifetime.
const FIXED_DEFAULT_SECONDS: u64 = 7 * 24 * 3600;
const FIXED_MAX_SECONDS: u64 = 365 * 24 * 3600;

/// Liveness: the process answers HTTP.
#[utoipa::path(get, path = "/health", tag = "liveness", responses((status = 200, description = "alive", body = Object)))]
pub(crate) async fn ping() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok", "service": "kuma-cluster" }))
}

#[utoipa::path(get, path = "/lb/ping", tag = "liveness", responses((status = 200, description = "alive", body = Object)))]
pub(crate) async fn lb_ping() -> HttpResponse {
    ping().await
}

pub(crate) async fn not_found(req: HttpRequest) -> HttpResponse {
    error(StatusCode::NOT_FOUND, "not_found", format!("no endpoint {} {}", req.method(), req.path()))
}

/// Sets the fixed-node cookie for a ready node, or explains why not.
fn pin(worker: &Worker, node: &str, seconds: u64) -> HttpResponse {
    let table = worker.front.routing.load();
    match table.node(node) {
        None => error(StatusCode::BAD_REQUEST, "unknown_node", format!("no node {node:?} in the cluster")),
        Some(n) if !n.ready => error(StatusCode::BAD_REQUEST, "node_not_ready", format!("node {node:?} is not ready")),
        Some(n) => {
            let cookie = Cookie::build(FIXED_COOKIE, n.id.clone())
                .path("/")
                .http_only(true)
                .same_site(SameSite::Lax)
                .max_age(CookieDuration::seconds(seconds as i64))
                .finish();
            let mut response =
                HttpResponse::Ok().json(json!({ "success": true, "node": n.id, "expires_in_seconds": seconds }));
            let _ = response.add_cookie(&cookie);
            response
        }
    }
}

#[utoipa::path(get, path = "/lb/fixed-node/{node}", tag = "fixed-node",
    params(("node" = String, Path, description = "node id")),
    responses((status = 200, description = "cookie set", body = Object), (status = 400, description = "unknown or unready node", body = ErrorBody)))]
pub(crate) async fn fixed_node(path: web::Path<String>, worker: web::Data<Worker>) -> HttpResponse {
    pin(&worker, &path.into_inner(), FIXED_DEFAULT_SECONDS)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetFixedNode {
    node: String,
    /// Seconds until the cookie expires.
    expires: Option<u64>,
}

#[utoipa::path(post, path = "/lb/set-fixed-node", tag = "fixed-node", request_body = SetFixedNode,
    responses((status = 200, description = "cookie set", body = Object), (status = 400, description = "bad body, unknown or unready node", body = ErrorBody)))]
pub(crate) async fn set_fixed_node(body: web::Bytes, worker: web::Data<Worker>) -> HttpResponse {
    let request: SetFixedNode = match json_body(&body) {
        Ok(r) => r,
        Err(e) => return e.error_response(),
    };
    match request.expires.unwrap_or(FIXED_DEFAULT_SECONDS) {
        seconds @ 1..=FIXED_MAX_SECONDS => pin(&worker, &request.node, seconds),
        _ => error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("expires must be 1 to {FIXED_MAX_SECONDS} seconds"),
        ),
    }
}

#[utoipa::path(method(get, post), path = "/lb/clear-fixed-node", tag = "fixed-node",
    responses((status = 200, description = "cookie cleared", body = Object)))]
pub(crate) async fn clear_fixed_node() -> HttpResponse {
    let cookie = Cookie::build(FIXED_COOKIE, "").path("/").max_age(CookieDuration::ZERO).finish();
    let mut response = HttpResponse::Ok().json(json!({ "success": true }));
    let _ = response.add_cookie(&cookie);
    response
}

#[utoipa::path(get, path = "/lb/fixed-node-status", tag = "fixed-node",
    responses((status = 200, description = "the cookie and its node's readiness", body = Object)))]
pub(crate) async fn fixed_node_status(req: HttpRequest, worker: web::Data<Worker>) -> HttpResponse {
    let table = worker.front.routing.load();
    let fixed = req.cookie(FIXED_COOKIE).map(|c| c.value().to_owned());
    let ready = fixed.as_deref().map(|id| table.node(id).is_some_and(|n| n.ready));
    HttpResponse::Ok().json(json!({ "fixed_node": fixed, "node_ready": ready, "active": ready == Some(true) }))
}

/// Only ids and readiness: this endpoint is open to the browser.
#[utoipa::path(get, path = "/lb/available-nodes", tag = "fixed-node",
    responses((status = 200, description = "node ids and readiness", body = Object)))]
pub(crate) async fn available_nodes(worker: web::Data<Worker>) -> HttpResponse {
    let table = worker.front.routing.load();
    let nodes: Vec<_> = table.nodes.iter().map(|n| json!({ "node_id": n.id, "ready": n.ready })).collect();
    let ready = table.nodes.iter().filter(|n| n.ready).count();
    HttpResponse::Ok().json(json!({ "nodes": nodes, "ready": ready }))
}
