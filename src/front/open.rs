//! The open endpoints, answered without a token: liveness (`/health`,
//! `/lb/ping`) and the old layer's fixed-node cookie endpoints, which browsers
//! call (from the same site only). They read only the routing snapshot. Also
//! the answers no node should give: other spellings of kuma-cluster's own
//! paths, request targets that are not paths, the old layer's status paths.

use crate::front::api::{auth, json_body};
use crate::front::error::{error, ErrorBody};
use crate::front::path;
use crate::front::proxy::route::FIXED_COOKIE;
use crate::front::proxy::Worker;
use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::{header, Method, StatusCode};
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

/// The fixed-node endpoints, under the `/lb` scope.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ping", web::get().to(lb_ping))
        .route("/fixed-node/{node}", web::get().to(fixed_node))
        .route("/set-fixed-node", web::post().to(set_fixed_node))
        .route("/clear-fixed-node", web::route().to(clear_fixed_node))
        .route("/fixed-node-status", web::get().to(fixed_node_status))
        .route("/available-nodes", web::get().to(available_nodes));
}

/// 308: the same method and body, at the plain path.
fn redirect(to: &str, query: &str) -> HttpResponse {
    let location = if query.is_empty() { to.to_owned() } else { format!("{to}?{query}") };
    HttpResponse::PermanentRedirect().insert_header((header::LOCATION, location)).finish()
}

/// Answers a request outside the router's own paths that no node should see:
/// - a request target that is not a path (`OPTIONS *`, `CONNECT host:port`):
///   it is about this server, and a node must never be blamed for it;
/// - another spelling of an own path (`/%6cb/ready`, `//lb/ready`,
///   `/x/../lb/ready`, `/LB/ready`): the network allow-list, then a redirect
///   to the plain path, where the scope's guards apply;
/// - the old layer's `/api/<status>` paths: a redirect to `/lb/<status>`.
pub(crate) fn answered_here(req: &HttpRequest) -> Option<HttpResponse> {
    let raw = req.uri().path();
    if !raw.starts_with('/') {
        return Some(if req.method() == Method::OPTIONS {
            HttpResponse::NoContent().insert_header((header::ALLOW, "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS")).finish()
        } else {
            error(StatusCode::BAD_REQUEST, "bad_request_target", format!("{} {raw} is not a request for a path", req.method()))
        });
    }
    if let Some(own) = path::disguised_own(raw) {
        if own.guarded && !auth::admits(req) {
            return Some(auth::forbidden());
        }
        return Some(redirect(&own.plain, req.query_string()));
    }
    let name = raw.strip_prefix("/api/")?;
    let legacy = STATUS_NAMES.contains(&name) && matches!(*req.method(), Method::GET | Method::HEAD);
    legacy.then(|| HttpResponse::MovedPermanently().insert_header((header::LOCATION, format!("/lb/{name}"))).finish())
}

/// Refuses a request a page of another site made a browser send: by its
/// `Sec-Fetch-Site`, or an `Origin` that is not this host. Without either
/// (curl, scripts), the request is the operator's own.
fn cross_site(req: &HttpRequest) -> Option<HttpResponse> {
    let text = |name| req.headers().get(name).and_then(|v: &header::HeaderValue| v.to_str().ok());
    let fetched_from_elsewhere = text(header::HeaderName::from_static("sec-fetch-site")).is_some_and(|s| s.eq_ignore_ascii_case("cross-site"));
    let foreign_origin = text(header::ORIGIN).is_some_and(|origin| {
        let authority = origin.split_once("://").map(|(_, rest)| rest.trim_end_matches('/'));
        authority.is_none_or(|a| text(header::HOST).is_none_or(|host| !a.eq_ignore_ascii_case(host)))
    });
    (fetched_from_elsewhere || foreign_origin).then(|| {
        error(StatusCode::FORBIDDEN, "cross_site", "the fixed-node endpoints take requests from this site's own pages only")
    })
}

/// The `/lb` scope's answer when no route matched: a redirect for another
/// spelling of a path (`/lb//ready`), 404 otherwise.
pub(crate) async fn not_found(req: HttpRequest) -> HttpResponse {
    if let Some(own) = path::disguised_own(req.uri().path()) {
        return redirect(&own.plain, req.query_string());
    }
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
pub(crate) async fn fixed_node(req: HttpRequest, path: web::Path<String>, worker: web::Data<Worker>) -> HttpResponse {
    if let Some(refusal) = cross_site(&req) {
        return refusal;
    }
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
    responses((status = 200, description = "cookie set", body = Object), (status = 400, description = "bad body, unknown or unready node", body = ErrorBody),
        (status = 403, description = "sent from another site's page", body = ErrorBody), (status = 415, description = "the body is not JSON", body = ErrorBody)))]
pub(crate) async fn set_fixed_node(req: HttpRequest, body: web::Bytes, worker: web::Data<Worker>) -> HttpResponse {
    if let Some(refusal) = cross_site(&req) {
        return refusal;
    }
    // a form cannot send JSON without the browser asking the site first (CORS)
    let json = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(';').next().is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send the body as Content-Type: application/json");
    }
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
pub(crate) async fn clear_fixed_node(req: HttpRequest) -> HttpResponse {
    if let Some(refusal) = cross_site(&req) {
        return refusal;
    }
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
