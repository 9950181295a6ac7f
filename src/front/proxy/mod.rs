//! The front door: every request outside `/lb/` and `/health` is forwarded to a
//! Kuma node chosen from the routing snapshot. The request path loads the
//! snapshot and nothing else: no database, no lock, no actor round trip.

pub mod body;
pub mod headers;
pub mod route;
pub mod upstream;
pub mod websocket;

use crate::config::{ProxySettings, Settings};
use crate::core::placement::MonitorId;
use crate::core::routing::RoutingTable;
use crate::front::admission::Admission;
use crate::front::error::error;
use crate::metrics::{Metrics, ProxyStats};
use crate::supervisor::publisher::RoutingReader;
use crate::supervisor::reports::FrontReport;
use actix_web::cookie::{time::Duration as CookieDuration, Cookie};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use body::RequestBody;
use http_body_util::BodyExt;
use route::{Balancer, Route, RouteInput, FIXED_COOKIE, STICKY_COOKIE};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use upstream::{Lease, NodeBody, Pool, UpstreamError};

/// What every worker shares: the snapshot, the settings, the connection caps,
/// and the channel on which the supervisor hears of failed connects and monitor writes.
#[derive(Clone)]
pub struct Front {
    pub routing: RoutingReader,
    pub settings: Arc<ProxySettings>,
    pub admission: Arc<Admission>,
    pub reports: mpsc::Sender<FrontReport>,
    pub metrics: Arc<Metrics>,
}

impl Front {
    pub fn new(routing: RoutingReader, settings: &Settings, reports: mpsc::Sender<FrontReport>, metrics: Arc<Metrics>) -> Self {
        Front {
            routing,
            settings: Arc::new(settings.proxy.clone()),
            admission: Arc::new(Admission::new(settings)),
            reports,
            metrics,
        }
    }

    /// Passive health: ask for an immediate probe of a node that refused a
    /// connection. Never waits; a full channel already has enough reports.
    pub fn suspect(&self, node_id: &str) {
        let _ = self.reports.try_send(FrontReport::Unreachable(node_id.to_owned()));
    }

    fn written(&self, served: &str, monitor: Option<MonitorId>, home: Option<String>) {
        let _ = self.reports.try_send(FrontReport::MonitorWritten { served: served.to_owned(), monitor, home });
    }
}

/// A request that writes a monitor through a node's REST API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MonitorWrite {
    /// `POST /api/v1/monitors`: the answer names the new monitor and its home.
    Create,
    /// `PUT` or `DELETE /api/v1/monitors/<id>`: update, pause, resume, delete.
    Change(MonitorId),
}

impl MonitorWrite {
    fn of(method: &Method, path: &str) -> Option<MonitorWrite> {
        // `/api/v1/monitors/7/heartbeats` and the like are reads, not writes
        let rest = path.strip_prefix("/api/v1/monitors")?;
        match (method, rest.trim_end_matches('/')) {
            (&Method::POST, "") => Some(MonitorWrite::Create),
            (&Method::PUT | &Method::DELETE, id) => id.strip_prefix('/')?.parse().ok().map(MonitorWrite::Change),
            _ => None,
        }
    }
}

/// The largest create answer read to learn the new monitor's id and home.
const MAX_CREATE_ANSWER: usize = 64 * 1024;

/// Per-worker state (one thread each): the node connection pool, the
/// websocket client, the balancer, the worker's view of the routing snapshot
/// and its metrics.
pub struct Worker {
    pub front: Front,
    pool: Rc<Pool>,
    /// Websockets have a connector of their own, without a limit: an open
    /// websocket keeps its connection for life and must never hold a place
    /// plain HTTP waits for (`proxy.ws_max_total` and `ws_max_per_node` bound them).
    pub websockets: awc::Client,
    pub balancer: RefCell<Balancer>,
    /// The snapshot as this worker last saw it: a new one is taken only when
    /// the published one changed, so a request touches no count every worker shares.
    view: RefCell<Rc<View>>,
    stats: ProxyStats,
}

impl Worker {
    pub fn new(front: Front) -> Self {
        let s = &front.settings;
        let pool = Pool::new(s.connect_timeout, s.pool_keep_alive);
        let websockets = awc::Client::builder()
            .connector(awc::Connector::new().timeout(s.connect_timeout).limit(0))
            .timeout(s.read_timeout)
            .no_default_headers()
            .finish();
        let stats = front.metrics.shard();
        let view = RefCell::new(Rc::new(View::of(front.routing.load())));
        Worker { front, pool, websockets, balancer: RefCell::default(), view, stats }
    }

    /// The current routing snapshot, as this worker sees it.
    fn view(&self) -> Rc<View> {
        let published = self.front.routing.peek();
        let mut seen = self.view.borrow_mut();
        if !Arc::ptr_eq(&published, &seen.table) {
            *seen = Rc::new(View::of(Arc::clone(&published)));
        }
        seen.clone()
    }
}

/// A routing snapshot with what a worker derives from it once, not per request.
struct View {
    table: Arc<RoutingTable>,
    /// `X-Routed-To` for each node.
    routed_to: Vec<HeaderValue>,
}

impl View {
    fn of(table: Arc<RoutingTable>) -> Self {
        let routed_to =
            table.nodes.iter().map(|n| HeaderValue::from_str(&n.id).unwrap_or(HeaderValue::from_static("-"))).collect();
        View { table, routed_to }
    }
}

/// The catch-all handler: choose a node, then forward HTTP or bridge a websocket.
pub async fn forward(req: HttpRequest, payload: web::Payload, worker: web::Data<Worker>) -> HttpResponse {
    let started = Instant::now();
    let view = worker.view();
    let table = &view.table;
    let cookies = || req.headers().get_all(header::COOKIE).filter_map(|v| v.to_str().ok());
    let input = RouteInput {
        path: req.path(),
        fixed: route::cookie(cookies(), FIXED_COOKIE),
        sticky: route::cookie(cookies(), STICKY_COOKIE),
    };
    let chosen = route::choose(&table, &input, &mut worker.balancer.borrow_mut(), worker.front.settings.fail_open);
    let route = match chosen {
        Ok(route) => route,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, "no_node_available", e.to_string()),
    };
    let (mut response, served) = if websocket::is_upgrade(&req) {
        websocket::bridge(&req, payload, &worker, &table, route.node).await
    } else {
        let write = MonitorWrite::of(req.method(), req.path());
        forward_http(&req, payload, &worker, &table, route.node, write).await
    };
    mark(&mut response, &view, served, &route);
    worker.stats.request(&table.nodes[served].id, response.status().as_u16(), started.elapsed());
    response
}

/// Adds `X-Routed-To`/`X-Routed-Via` and the session cookies.
fn mark(response: &mut HttpResponse, view: &View, served: usize, route: &Route) {
    let node = &view.table.nodes[served].id;
    let headers = response.headers_mut();
    headers.insert(HeaderName::from_static("x-routed-to"), view.routed_to[served].clone());
    headers.insert(HeaderName::from_static("x-routed-via"), HeaderValue::from_static(route.via.as_str()));
    if route.set_sticky || (served != route.node && route.via == route::Via::Sticky) {
        if let Ok(cookie) = HeaderValue::from_str(&format!("{STICKY_COOKIE}={node}; HttpOnly; SameSite=Lax; Path=/")) {
            headers.append(header::SET_COOKIE, cookie);
        }
    }
    if route.clear_fixed {
        let cookie = Cookie::build(FIXED_COOKIE, "").path("/").max_age(CookieDuration::ZERO).finish();
        let _ = response.add_cookie(&cookie);
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// The request headers as sent to a node: the client's, `Host` unchanged, minus
/// hop-by-hop, plus X-Forwarded-*.
pub fn upstream_headers(req: &HttpRequest, settings: &ProxySettings) -> hyper::HeaderMap {
    let peer = req.peer_addr().map(|a| a.ip());
    let arrival = headers::Arrival {
        peer,
        host: req.headers().get(header::HOST).and_then(|h| h.to_str().ok()),
        port: req.app_config().local_addr().port(),
        trusted: peer.is_some_and(|ip| settings.trusted_proxies.iter().any(|n| n.contains(ip))),
    };
    headers::for_node(|| req.headers().iter().map(|(name, value)| (name.as_str(), value.as_bytes())), &arrival)
}

/// The request for one attempt at `host`: the client's method, target and
/// headers (a `Host` of the node's when the client sent none), and the body.
fn node_request(req: &HttpRequest, host: &str, headers: hyper::HeaderMap, body: body::AttemptBody) -> Option<hyper::Request<body::AttemptBody>> {
    let mut request = hyper::Request::new(body);
    *request.method_mut() = hyper::Method::from_bytes(req.method().as_str().as_bytes()).ok()?;
    *request.uri_mut() = req.uri().path_and_query().map_or("/", |p| p.as_str()).parse().ok()?;
    *request.headers_mut() = headers;
    if !request.headers().contains_key(hyper::header::HOST) {
        request.headers_mut().insert(hyper::header::HOST, hyper::header::HeaderValue::from_str(host).ok()?);
    }
    Some(request)
}

/// Forwards one HTTP request. A connect failure (nothing sent) moves on to
/// another ready node; an idempotent request whose body can still be sent is
/// retried once after a failure to read the answer. Returns the response and the
/// node that gave it.
async fn forward_http(
    req: &HttpRequest,
    payload: web::Payload,
    worker: &Worker,
    table: &RoutingTable,
    first: usize,
    write: Option<MonitorWrite>,
) -> (HttpResponse, usize) {
    let settings = &worker.front.settings;
    let length = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    let chunked = req
        .headers()
        .get(header::TRANSFER_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if length.is_some_and(|n| n > settings.max_body) {
        let detail = format!("request bodies are limited to {} bytes", settings.max_body);
        return (error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", detail), first);
    }
    let body = RequestBody::new(payload, length, chunked, settings.max_body);
    // moved into the first attempt; a retry (rare) builds them again
    let mut headers = Some(upstream_headers(req, settings));
    let (mut node, mut tried, mut read_retry_left) = (first, Vec::new(), is_idempotent(req.method()));
    loop {
        let Some(host) = table.nodes[node].host.as_deref() else {
            return (error(StatusCode::BAD_GATEWAY, "node_unreachable", "the node has no address"), node);
        };
        let headers = headers.take().unwrap_or_else(|| upstream_headers(req, settings));
        let Some(request) = node_request(req, host, headers, body.attempt()) else {
            return (error(StatusCode::BAD_REQUEST, "bad_request", "the request cannot be forwarded as it is"), node);
        };
        let failure = match worker.pool.send(host, request, settings.read_timeout).await {
            Ok((response, lease)) => {
                let node_id = &table.nodes[node].id;
                let response = match write {
                    Some(write) if response.status().is_success() => {
                        written(write, response, lease, node_id, worker, req.method()).await
                    }
                    _ => respond(response, lease, req.method()),
                };
                return (response, node);
            }
            Err(e) => e,
        };
        if body.too_large() {
            let detail = format!("request bodies are limited to {} bytes", settings.max_body);
            return (error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", detail), node);
        }
        let connect_failed = failure.nothing_sent();
        let node_id = &table.nodes[node].id;
        tracing::warn!(node_id = %node_id, error = %failure, "forwarding failed");
        if connect_failed {
            worker.front.suspect(node_id);
        }
        tried.push(node);
        let may_retry = body.replayable() && (connect_failed || std::mem::take(&mut read_retry_left));
        let next = may_retry.then(|| worker.balancer.borrow_mut().pick(table, &tried, settings.fail_open)).flatten();
        match (next, connect_failed) {
            (Some(next), _) => node = next,
            // a read failure with no other node left: the same node once more
            (None, false) if may_retry => {}
            _ => {
                let response = match failure {
                    UpstreamError::Timeout => {
                        error(StatusCode::GATEWAY_TIMEOUT, "node_timeout", "the node did not answer in time")
                    }
                    _ if connect_failed => {
                        error(StatusCode::BAD_GATEWAY, "node_unreachable", "no node accepted the connection")
                    }
                    _ => error(StatusCode::BAD_GATEWAY, "bad_gateway", "the node's answer could not be read"),
                };
                return (response, node);
            }
        }
    }
}

/// A node accepted a monitor write: tells the supervisor, then answers. A
/// create's answer is read whole (it is small) for the monitor's id and home.
async fn written(
    write: MonitorWrite,
    response: hyper::Response<hyper::body::Incoming>,
    lease: Lease,
    node_id: &str,
    worker: &Worker,
    method: &Method,
) -> HttpResponse {
    if let MonitorWrite::Change(id) = write {
        worker.front.written(node_id, Some(id), None);
        return respond(response, lease, method);
    }
    let (parts, incoming) = response.into_parts();
    let body = match http_body_util::Limited::new(incoming, MAX_CREATE_ANSWER).collect().await {
        Ok(collected) => {
            lease.release();
            collected.to_bytes()
        }
        Err(e) => {
            tracing::warn!(node_id = %node_id, error = %e, "a monitor create answer could not be read");
            worker.front.written(node_id, None, None);
            return error(StatusCode::BAD_GATEWAY, "bad_gateway", "the node's answer could not be read");
        }
    };
    let created: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let monitor = created["data"]["monitor_id"].as_u64().and_then(|id| MonitorId::try_from(id).ok());
    let home = created["data"]["node_id"].as_str().map(str::to_owned);
    worker.front.written(node_id, monitor, home);
    let mut answer = HttpResponse::build(status_of(parts.status)).body(body);
    copy_headers(&parts.headers, &mut answer);
    answer
}

fn status_of(status: hyper::StatusCode) -> StatusCode {
    StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY)
}

/// The node's end-to-end answer headers onto the client's answer, but its
/// `Content-Length`, which the answer's body sets.
fn copy_headers(from: &hyper::HeaderMap, to: &mut HttpResponse) {
    let headers = to.headers_mut();
    let node = || from.iter().map(|(name, value)| (name.as_str(), value.as_bytes()));
    for (name, value) in headers::end_to_end(node).filter(|(name, _)| *name != "content-length") {
        let name = HeaderName::from_bytes(name.as_bytes());
        let value = HeaderValue::from_bytes(value);
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
}

/// Streams the node's response back, status and headers as they are (minus
/// hop-by-hop), keeping `Content-Length` when the node gave one.
fn respond(response: hyper::Response<hyper::body::Incoming>, lease: Lease, method: &Method) -> HttpResponse {
    let (parts, incoming) = response.into_parts();
    let length = parts.headers.get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let status = status_of(parts.status);
    let bodiless = *method == Method::HEAD || status.is_informational() || matches!(status.as_u16(), 204 | 304);
    let mut forwarded = if bodiless {
        drop(incoming);
        lease.release();
        // for HEAD, actix writes the declared length and sends no body
        match length {
            Some(n) => HttpResponse::build(status).body(NodeBody::empty(n)),
            None => HttpResponse::build(status).finish(),
        }
    } else {
        HttpResponse::build(status).body(NodeBody::new(incoming, length, lease))
    };
    copy_headers(&parts.headers, &mut forwarded);
    forwarded
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_writes_are_told_apart_from_reads() {
        assert_eq!(MonitorWrite::of(&Method::POST, "/api/v1/monitors"), Some(MonitorWrite::Create));
        assert_eq!(MonitorWrite::of(&Method::POST, "/api/v1/monitors/"), Some(MonitorWrite::Create));
        assert_eq!(MonitorWrite::of(&Method::PUT, "/api/v1/monitors/7"), Some(MonitorWrite::Change(7)));
        assert_eq!(MonitorWrite::of(&Method::DELETE, "/api/v1/monitors/12"), Some(MonitorWrite::Change(12)));
        assert_eq!(MonitorWrite::of(&Method::GET, "/api/v1/monitors/7"), None);
        assert_eq!(MonitorWrite::of(&Method::PUT, "/api/v1/monitors/7/heartbeats"), None);
        assert_eq!(MonitorWrite::of(&Method::POST, "/api/v1/monitorsx"), None);
        assert_eq!(MonitorWrite::of(&Method::DELETE, "/api/v1/monitors/abc"), None);
    }
}
