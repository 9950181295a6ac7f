//! The front door: every request outside `/lb/` and `/health` is forwarded to a
//! Kuma node chosen from the routing snapshot. The request path loads the
//! snapshot and nothing else: no database, no lock, no actor round trip.

pub mod body;
pub mod headers;
pub mod route;
pub mod websocket;

use crate::config::{ProxySettings, Settings};
use crate::front::admission::Admission;
use crate::front::error::error;
use crate::core::routing::RoutingTable;
use crate::core::placement::MonitorId;
use crate::supervisor::publisher::RoutingReader;
use crate::supervisor::reports::FrontReport;
use actix_web::body::SizedStream;
use actix_web::cookie::{time::Duration as CookieDuration, Cookie};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use awc::error::{ConnectError, SendRequestError};
use body::RequestBody;
use route::{Balancer, Route, RouteInput, FIXED_COOKIE, STICKY_COOKIE};
use std::cell::RefCell;
use crate::metrics::{Metrics, ProxyShard};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;

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

/// Per-worker state (one thread each): the pooled HTTP client, the websocket
/// client, the balancer and the worker's own metrics shard.
pub struct Worker {
    pub front: Front,
    pub client: awc::Client,
    /// Its own connector without a limit: an open websocket keeps its
    /// connection for life, and must never hold a place plain HTTP waits for
    /// (`proxy.ws_max_total` and `ws_max_per_node` bound them instead).
    pub websockets: awc::Client,
    pub balancer: RefCell<Balancer>,
    stats: Arc<Mutex<ProxyShard>>,
}

impl Worker {
    pub fn new(front: Front) -> Self {
        let s = &front.settings;
        let connector = awc::Connector::new()
            .timeout(s.connect_timeout)
            .conn_keep_alive(s.pool_keep_alive)
            .limit(1024);
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(s.read_timeout)
            .disable_redirects()
            .no_default_headers()
            .finish();
        let websockets = awc::Client::builder()
            .connector(awc::Connector::new().timeout(s.connect_timeout).limit(0))
            .timeout(s.read_timeout)
            .no_default_headers()
            .finish();
        let stats = front.metrics.shard();
        Worker { front, client, websockets, balancer: RefCell::default(), stats }
    }
}

/// The catch-all handler: choose a node, then forward HTTP or bridge a websocket.
pub async fn forward(req: HttpRequest, payload: web::Payload, worker: web::Data<Worker>) -> HttpResponse {
    let started = Instant::now();
    let table = worker.front.routing.load();
    let fixed = req.cookie(FIXED_COOKIE);
    let sticky = req.cookie(STICKY_COOKIE);
    let input = RouteInput {
        path: req.path(),
        fixed: fixed.as_ref().map(|c| c.value()),
        sticky: sticky.as_ref().map(|c| c.value()),
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
    mark(&mut response, &table, served, &route);
    let status = response.status().as_u16();
    worker.stats.lock().unwrap_or_else(|e| e.into_inner()).request(&table.nodes[served].id, status, started.elapsed());
    response
}

/// Adds `X-Routed-To`/`X-Routed-Via` and the session cookies.
fn mark(response: &mut HttpResponse, table: &RoutingTable, served: usize, route: &Route) {
    let node = &table.nodes[served].id;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(node) {
        headers.insert(HeaderName::from_static("x-routed-to"), value);
    }
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

/// Whether the request certainly never reached the node. awc also reports a
/// connection lost after sending as a connect error (`Disconnected`): that one
/// may have been received, so it does not count.
fn nothing_sent(failure: &SendRequestError) -> bool {
    matches!(failure, SendRequestError::Connect(e) if !matches!(e, ConnectError::Disconnected | ConnectError::H2(_)))
}

fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// The request headers as sent to a node: the client's, `Host` unchanged, minus
/// hop-by-hop, plus X-Forwarded-*.
pub fn upstream_headers(req: &HttpRequest, settings: &ProxySettings) -> HeaderMap {
    let mut headers = req.headers().clone();
    headers::strip_hop_by_hop(&mut headers);
    let peer = req.peer_addr().map(|a| a.ip());
    let arrival = headers::Arrival {
        peer,
        host: req.headers().get(header::HOST).and_then(|h| h.to_str().ok()),
        port: req.app_config().local_addr().port(),
        trusted: peer.is_some_and(|ip| settings.trusted_proxies.iter().any(|n| n.contains(ip))),
    };
    headers::set_forwarded(&mut headers, &arrival);
    headers
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
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let (mut node, mut tried, mut read_retry_left) = (first, Vec::new(), is_idempotent(req.method()));
    loop {
        let Some(host) = table.nodes[node].host.as_deref() else {
            return (error(StatusCode::BAD_GATEWAY, "node_unreachable", "the node has no address"), node);
        };
        let mut request = worker.client.request(req.method().clone(), format!("http://{host}{target}"));
        *request.headers_mut() = headers.take().unwrap_or_else(|| upstream_headers(req, settings));
        let failure = match request.send_body(body.attempt()).await {
            Ok(response) => {
                let node_id = &table.nodes[node].id;
                let response = match write {
                    Some(write) if response.status().is_success() => written(write, response, node_id, worker, req.method()).await,
                    _ => respond(response, req.method()),
                };
                return (response, node);
            }
            Err(e) => e,
        };
        if body.too_large() {
            let detail = format!("request bodies are limited to {} bytes", settings.max_body);
            return (error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", detail), node);
        }
        let connect_failed = nothing_sent(&failure);
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
                    SendRequestError::Timeout => {
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
    mut response: awc::ClientResponse,
    node_id: &str,
    worker: &Worker,
    method: &Method,
) -> HttpResponse {
    if let MonitorWrite::Change(id) = write {
        worker.front.written(node_id, Some(id), None);
        return respond(response, method);
    }
    let body = match response.body().limit(MAX_CREATE_ANSWER).await {
        Ok(body) => body,
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
    let mut headers = response.headers().clone();
    headers::strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    let mut answer = HttpResponse::build(response.status()).body(body);
    *answer.headers_mut() = headers;
    answer
}

/// Streams the node's response back, status and headers as they are (minus
/// hop-by-hop), keeping `Content-Length` when the node gave one.
fn respond(response: awc::ClientResponse, method: &Method) -> HttpResponse {
    let mut headers = response.headers().clone();
    headers::strip_hop_by_hop(&mut headers);
    let length = headers.remove(header::CONTENT_LENGTH).next().and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let status = response.status();
    let bodiless = *method == Method::HEAD || status.is_informational() || matches!(status.as_u16(), 204 | 304);
    let mut forwarded = match length {
        // for HEAD, actix writes the declared length and sends no body
        Some(n) => HttpResponse::build(status).body(SizedStream::new(n, response)),
        None if bodiless => HttpResponse::build(status).finish(),
        None => HttpResponse::build(status).streaming(response),
    };
    *forwarded.headers_mut() = headers;
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
