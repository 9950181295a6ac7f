//! The HTTP app of one worker. kuma-cluster's own paths are one `/lb` scope,
//! behind the connection caps and the network allow-list by construction, and
//! `/health`; every other request goes straight to the proxy with no route
//! matching, after one test for other spellings of the own paths.

use crate::front::admission::Admission;
use crate::front::api::{self, auth, Ops};
use crate::front::error::method_not_allowed;
use crate::front::proxy::{self, Front, Worker};
use crate::front::{open, openapi};
use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use std::sync::Arc;

/// The whole HTTP app for one worker; call once per worker, since it builds
/// that worker's proxy state. Without `ops`, the operations API is left out
/// (as the proxy tests serve it).
pub fn app(
    front: Front,
    ops: Option<Ops>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new().configure(configure(front, ops))
}

fn configure(front: Front, ops: Option<Ops>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let mut lb = web::scope("/lb").configure(open::configure).service(
            web::resource("/openapi.json")
                .route(web::get().to(openapi::document))
                .default_service(web::to(|req| method_not_allowed(req, "GET"))),
        );
        if let Some(ops) = ops {
            // read by the scope's guard, which runs before the scope's own data is attached
            cfg.app_data(web::Data::from(ops.access.clone()));
            lb = lb.configure(api::configure(ops));
        }
        cfg.app_data(web::Data::new(Worker::new(front)))
            .service(
                web::resource("/health")
                    .route(web::get().to(open::ping))
                    .default_service(web::to(|req| method_not_allowed(req, "GET"))),
            )
            .service(lb.default_service(web::to(open::not_found)).wrap(from_fn(auth::guard)))
            .default_service(web::to(entry));
    }
}

/// Every request outside the own paths: the caps, then other spellings of the
/// own paths and requests no node should see, then the proxy.
async fn entry(req: HttpRequest, payload: web::Payload, worker: web::Data<Worker>) -> HttpResponse {
    if let Some(refusal) = worker.front.admission.refusal(&req) {
        return refusal;
    }
    if let Some(answer) = open::answered_here(&req) {
        return answer;
    }
    proxy::forward(req, payload, worker).await
}

/// Starts the HTTP server on `listener` with `workers` threads: every
/// connection is seated by `front`'s admission, and `extra` adds routes (dev mode).
pub fn start(
    listener: std::net::TcpListener,
    workers: usize,
    front: Front,
    ops: Option<Ops>,
    extra: impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
) -> std::io::Result<Server> {
    let admission: Arc<Admission> = front.admission.clone();
    // actix stops accepting past its own per-worker cap; ours answers first
    let per_worker = front.admission.max_total() + 1024;
    Ok(HttpServer::new(move || app(front.clone(), ops.clone()).configure(extra.clone()))
        .on_connect(move |connection, data| admission.on_connect(connection, data))
        .workers(workers)
        .max_connections(per_worker)
        .disable_signals()
        .listen(listener)?
        .run())
}
