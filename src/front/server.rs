//! The HTTP app of one worker: the network allow-list first, then the
//! operations API and the open endpoints under `/lb/` and `/health`, and
//! everything else to the proxy.

use crate::front::api::{self, auth, Ops};
use crate::front::error::method_not_allowed;
use crate::front::proxy::{self, Front, Worker};
use crate::front::{open, openapi};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{web, App};

/// The whole HTTP app for one worker; call once per worker, since it builds
/// that worker's proxy state.
pub fn app(
    front: Front,
    ops: Ops,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .wrap(from_fn(auth::allow_list))
        .configure(api::configure(ops))
        .service(
            web::resource("/lb/openapi.json")
                .route(web::get().to(openapi::document))
                .default_service(web::to(|req| method_not_allowed(req, "GET"))),
        )
        .configure(configure(front))
}

/// Registers the open endpoints and the proxy (without the operations API, as
/// the proxy tests serve it).
pub fn configure(front: Front) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(Worker::new(front)))
            .service(
                web::resource("/health")
                    .route(web::get().to(open::ping))
                    .default_service(web::to(|req| method_not_allowed(req, "GET"))),
            )
            .service(
                web::scope("/lb")
                    .route("/ping", web::get().to(open::lb_ping))
                    .route("/fixed-node/{node}", web::get().to(open::fixed_node))
                    .route("/set-fixed-node", web::post().to(open::set_fixed_node))
                    .route("/clear-fixed-node", web::route().to(open::clear_fixed_node))
                    .route("/fixed-node-status", web::get().to(open::fixed_node_status))
                    .route("/available-nodes", web::get().to(open::available_nodes))
                    .default_service(web::to(open::not_found)),
            )
            .default_service(web::to(proxy::forward));
    }
}
