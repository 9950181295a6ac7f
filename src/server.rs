//! kuma-cluster's own HTTP endpoints. The request path reads only the routing
//! snapshot: no database query, no actor round trip.

use actix_web::{web, HttpResponse};
use serde_json::json;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/lb/ping", web::get().to(ping)).route("/health", web::get().to(ping));
}

/// Liveness: the process answers HTTP.
async fn ping() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok", "service": "kuma-cluster" }))
}
