//! The OpenAPI 3 document of kuma-cluster's own endpoints, generated from the
//! handlers' annotations and served open at `/lb/openapi.json`.

use crate::front::api::{actions, nodes, status};
use crate::front::error::ErrorBody;
use crate::front::open;
use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::OpenApi;

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
        status::ready, status::health, status::capacity, status::node_status, status::health_status,
        status::load_balancer_status, status::setup_status, status::system_status, status::events, status::moves,
        status::rebalancing_status, status::list_nodes, status::get_node, status::metrics,
        nodes::create_node, nodes::update_node, nodes::delete_node,
        actions::drain, actions::maintenance, actions::undrain, actions::move_monitors, actions::rebalance,
        actions::trigger_rebalancing, actions::force_rebalance_all, actions::update_loads, actions::monitor_written,
        open::ping, open::lb_ping, open::fixed_node, open::set_fixed_node,
        open::clear_fixed_node, open::fixed_node_status, open::available_nodes,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The document is open, like the old layer's README: it describes, it reveals
/// nothing of the cluster.
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
