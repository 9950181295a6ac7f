//! The front door through real HTTP: in-process backends on port 0, the proxy on
//! port 0, and routing tables published by the test.

mod common;

use actix_web::body::SizedStream;
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use actix_ws::{CloseCode, CloseReason, Message};
use awc::ws::Frame;
use common::run;
use futures_util::{SinkExt, StreamExt};
use kuma_cluster::core::health::Health;
use kuma_cluster::front::proxy::Front;
use kuma_cluster::supervisor::reports::FrontReport;
use kuma_cluster::core::routing::{RouteNode, RoutingTable};
use kuma_cluster::supervisor::publisher::RoutingPublisher;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

const MIB: usize = 1024 * 1024;
const WAIT: Duration = Duration::from_secs(60);

/// Signals shared between a backend's worker thread and the test.
#[derive(Default)]
struct Signals {
    /// The backend has received the first MiB of an upload.
    upload_started: Notify,
    /// The client has received the first MiB of a download.
    download_started: Notify,
    /// A flooding websocket's node side found its connection closed.
    flood_ended: Notify,
}

async fn echo(req: HttpRequest, body: Bytes, name: web::Data<String>) -> HttpResponse {
    let headers: HashMap<String, String> =
        req.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect();
    HttpResponse::Ok()
        .json(json!({ "node": name.get_ref(), "method": req.method().as_str(), "uri": req.uri().to_string(), "headers": headers, "body": body.len() }))
}

/// Kuma's REST create: 201 with the new monitor and the home it was given.
async fn create_monitor(name: web::Data<String>) -> HttpResponse {
    HttpResponse::Created().json(json!({ "ok": true, "msg": "Monitor created successfully", "data": { "monitor_id": 77, "node_id": format!("home-of-{}", name.get_ref()) } }))
}

async fn redirect() -> HttpResponse {
    HttpResponse::Found().insert_header(("location", "/elsewhere?x=1")).finish()
}

async fn upload(req: HttpRequest, mut payload: web::Payload, signals: web::Data<Arc<Signals>>) -> HttpResponse {
    let mut received = 0usize;
    let mut signalled = false;
    while let Some(chunk) = payload.next().await {
        received += chunk.unwrap().len();
        if received >= MIB && !signalled {
            signalled = true;
            signals.upload_started.notify_one();
        }
    }
    let header = |name: &str| req.headers().get(name).map(|v| v.to_str().unwrap().to_string());
    HttpResponse::Ok().json(json!({
        "received": received,
        "content_length": header("content-length"),
        "transfer_encoding": header("transfer-encoding"),
    }))
}

/// 50 chunks of 1 MiB of `byte` that hold back after the second until `gate` is
/// notified from the far side of the proxy: a proxy that buffered the whole body
/// would wait forever.
fn gated_50_mib(
    byte: u8,
    signals: Arc<Signals>,
    gate: fn(&Signals) -> &Notify,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(0usize, move |sent| {
        let signals = signals.clone();
        async move {
            if sent == 50 {
                return None;
            }
            if sent == 2 {
                gate(&signals).notified().await;
            }
            Some((Ok(Bytes::from(vec![byte; MIB])), sent + 1))
        }
    })
}

async fn download(signals: web::Data<Arc<Signals>>) -> HttpResponse {
    let chunks = gated_50_mib(b'd', signals.get_ref().clone(), |s| &s.download_started);
    HttpResponse::Ok().body(SizedStream::new((50 * MIB) as u64, chunks))
}

async fn head_target() -> HttpResponse {
    HttpResponse::Ok().body(vec![b'h'; 1234])
}

async fn ws_echo(req: HttpRequest, body: web::Payload) -> actix_web::Result<HttpResponse> {
    let (response, mut session, stream) = actix_ws::handle_with_protocols(&req, body, &["chat"])?;
    let mut stream = stream.max_frame_size(4 * MIB);
    actix_web::rt::spawn(async move {
        while let Some(Ok(message)) = stream.recv().await {
            let sent = match message {
                Message::Text(text) if text.starts_with("close:") => {
                    let code: u16 = text["close:".len()..].parse().unwrap();
                    let _ = session.close(Some(CloseReason { code: CloseCode::Other(code), description: None })).await;
                    return;
                }
                Message::Text(text) => session.text(text).await,
                Message::Binary(bytes) => session.binary(bytes).await,
                Message::Ping(bytes) => session.pong(&bytes).await,
                Message::Close(reason) => {
                    let _ = session.close(reason).await;
                    return;
                }
                _ => Ok(()),
            };
            if sent.is_err() {
                return;
            }
        }
    });
    Ok(response)
}

/// A node that sends 64 KiB frames as fast as its client takes them, until the
/// connection is closed.
async fn ws_flood(req: HttpRequest, body: web::Payload, signals: web::Data<Arc<Signals>>) -> actix_web::Result<HttpResponse> {
    let (response, mut session, mut stream) = actix_ws::handle(&req, body)?;
    let signals = signals.get_ref().clone();
    actix_web::rt::spawn(async move {
        let frame = Bytes::from(vec![7u8; 64 * 1024]);
        loop {
            tokio::select! {
                sent = session.binary(frame.clone()) => if sent.is_err() { break },
                message = stream.recv() => if !matches!(message, Some(Ok(_))) { break },
            }
        }
        signals.flood_ended.notify_one();
    });
    Ok(response)
}

struct Backend {
    host: String,
    signals: Arc<Signals>,
    handle: actix_web::dev::ServerHandle,
}

impl Backend {
    fn start(name: &str) -> Backend {
        let signals = Arc::new(Signals::default());
        let (n, s) = (name.to_string(), signals.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(n.clone()))
                .app_data(web::Data::new(s.clone()))
                .app_data(web::PayloadConfig::new(usize::MAX))
                .route("/redirect", web::get().to(redirect))
                .route("/api/v1/monitors", web::post().to(create_monitor))
                .route("/upload", web::post().to(upload))
                .route("/download", web::get().to(download))
                .route("/head", web::route().to(head_target))
                .route("/ws", web::get().to(ws_echo))
                .route("/flood", web::get().to(ws_flood))
                .default_service(web::to(echo))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Backend { host: format!("127.0.0.1:{port}"), signals, handle }
    }
}

/// A node spoken for by hand: for each connection it reads the request, then
/// writes `reply` (if any) and hangs up. With no reply it is a node whose answer
/// cannot be read.
struct RawNode {
    host: String,
    requests: Arc<AtomicUsize>,
}

impl RawNode {
    fn start(reply: Option<&'static str>) -> RawNode {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut buf = [0u8; 4096];
                if matches!(stream.read(&mut buf), Ok(n) if n > 0) {
                    seen.fetch_add(1, Ordering::SeqCst);
                    if let Some(reply) = reply {
                        let _ = std::io::Write::write_all(&mut stream, reply.as_bytes());
                    }
                }
            }
        });
        RawNode { host, requests }
    }
}

/// A port nothing listens on.
fn dead_host() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn node(id: &str, host: &str, ready: bool, monitors: usize) -> RouteNode {
    RouteNode {
        id: id.into(),
        host: Some(host.into()),
        health: if ready { Health::Up } else { Health::Down },
        ready,
        enabled: true,
        monitor_count: monitors,
        limit: 1000,
    }
}

fn table(nodes: Vec<RouteNode>) -> RoutingTable {
    RoutingTable { nodes, primary: Some("node1".into()), setup_complete: true, ..RoutingTable::default() }
}

struct Proxy {
    base: String,
    publisher: RoutingPublisher,
    reports: mpsc::Receiver<FrontReport>,
    client: awc::Client,
}

impl Proxy {
    fn start(first: RoutingTable, overrides: &[(&str, &str)]) -> Proxy {
        let publisher = RoutingPublisher::new();
        publisher.publish(first);
        let (tx, reports) = mpsc::channel(64);
        let settings = common::settings(overrides);
        let front = Front::new(publisher.reader(), &settings, tx, Default::default());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        actix_web::rt::spawn(kuma_cluster::front::server::start(listener, 1, front, None, |_| {}).unwrap());
        let client = awc::Client::builder().disable_redirects().timeout(WAIT).finish();
        Proxy { base: format!("127.0.0.1:{port}"), publisher, reports, client }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.base)
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> (StatusCode, HashMap<String, String>, Value) {
        let mut request = self.client.get(self.url(path));
        if let Some(cookie) = cookie {
            request = request.insert_header(("cookie", cookie));
        }
        let mut response = request.send().await.unwrap();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .fold(HashMap::new(), |mut m: HashMap<String, String>, (k, v)| {
                m.entry(k).and_modify(|e| *e = format!("{e}; {v}")).or_insert(v);
                m
            });
        let body = response.body().limit(10 * MIB).await.unwrap();
        (response.status(), headers, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

fn routed(headers: &HashMap<String, String>) -> (&str, &str) {
    (headers["x-routed-to"].as_str(), headers["x-routed-via"].as_str())
}

#[test]
fn before_setup_every_request_goes_to_the_primary() {
    run(async {
        let (a, b) = (Backend::start("node1"), Backend::start("node2"));
        let mut t = table(vec![node("node1", &a.host, true, 900), node("node2", &b.host, true, 0)]);
        t.setup_complete = false;
        let proxy = Proxy::start(t, &[]);
        for path in ["/", "/setup", "/api/v1/monitors/1"] {
            let (status, headers, body) = proxy.get(path, Some("KUMA_FIXED_NODE=node2; KUMA_CLUSTER_NODE=node2")).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(routed(&headers), ("node1", "setup"));
            assert_eq!(body["node"], "node1");
        }
        a.handle.stop(false).await;
        b.handle.stop(false).await;
    });
}

#[test]
fn a_fixed_node_cookie_pins_requests_and_a_stale_one_is_ignored_and_cleared() {
    run(async {
        let (a, b) = (Backend::start("node1"), Backend::start("node2"));
        let mut t = table(vec![node("node1", &a.host, true, 0), node("node2", &b.host, true, 0)]);
        t.monitors.insert(5, 0);
        let proxy = Proxy::start(t, &[]);
        let (_, headers, body) = proxy.get("/api/v1/monitors/5", Some("KUMA_FIXED_NODE=node2")).await;
        assert_eq!(routed(&headers), ("node2", "fixed-node"));
        assert_eq!(body["node"], "node2");
        assert!(!headers.contains_key("set-cookie") || !headers["set-cookie"].contains("KUMA_FIXED_NODE"));

        let (status, headers, _) = proxy.get("/", Some("KUMA_FIXED_NODE=node9")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-routed-via"], "load-balancer");
        let cookies = &headers["set-cookie"];
        assert!(cookies.contains("KUMA_FIXED_NODE=;") && cookies.contains("Max-Age=0"), "{cookies}");
        a.handle.stop(false).await;
        b.handle.stop(false).await;
    });
}

#[test]
fn requests_about_a_monitor_go_to_the_node_that_runs_it() {
    run(async {
        let (a, b) = (Backend::start("node1"), Backend::start("node2"));
        let mut t = table(vec![node("node1", &a.host, true, 0), node("node2", &b.host, true, 0)]);
        t.monitors.insert(7, 1);
        t.monitors.insert(8, 0);
        let proxy = Proxy::start(t, &[]);
        for (path, owner) in [
            ("/api/v1/monitors/7", "node2"),
            ("/api/v1/monitors/7/heartbeats?limit=5", "node2"),
            ("/api/badge/8/status", "node1"),
        ] {
            let (_, headers, body) = proxy.get(path, Some("KUMA_CLUSTER_NODE=node1")).await;
            assert_eq!(routed(&headers), (owner, "monitor-owner"), "{path}");
            assert_eq!(body["node"], owner);
        }
        let (_, headers, body) = proxy.get("/api/v1/monitors/7/heartbeats?limit=5", None).await;
        assert_eq!(body["uri"], "/api/v1/monitors/7/heartbeats?limit=5", "path and query pass unchanged");
        assert!(!headers.contains_key("set-cookie"), "monitor requests start no session");
        a.handle.stop(false).await;
        b.handle.stop(false).await;
    });
}

#[test]
fn a_new_session_gets_a_sticky_cookie_and_keeps_its_node_while_it_is_ready() {
    run(async {
        let (a, b) = (Backend::start("node1"), Backend::start("node2"));
        let proxy = Proxy::start(table(vec![node("node1", &a.host, true, 0), node("node2", &b.host, true, 0)]), &[]);
        let (_, headers, _) = proxy.get("/dashboard", None).await;
        let (first, via) = routed(&headers);
        assert_eq!(via, "load-balancer");
        let cookie = headers["set-cookie"].clone();
        assert!(cookie.starts_with(&format!("KUMA_CLUSTER_NODE={first}")) && cookie.contains("HttpOnly"), "{cookie}");
        for _ in 0..5 {
            let (_, headers, _) = proxy.get("/dashboard", Some(&format!("KUMA_CLUSTER_NODE={first}"))).await;
            assert_eq!(routed(&headers), (first, "sticky"));
        }
        let other = if first == "node1" { "node2" } else { "node1" };
        let mut t = table(vec![node("node1", &a.host, true, 0), node("node2", &b.host, true, 0)]);
        t.nodes.iter_mut().find(|n| n.id == first).unwrap().ready = false;
        proxy.publisher.publish(t);
        let (_, headers, _) = proxy.get("/dashboard", Some(&format!("KUMA_CLUSTER_NODE={first}"))).await;
        assert_eq!(routed(&headers), (other, "load-balancer"));
        assert!(headers["set-cookie"].starts_with(&format!("KUMA_CLUSTER_NODE={other}")));
        a.handle.stop(false).await;
        b.handle.stop(false).await;
    });
}

#[test]
fn new_sessions_are_spread_over_ready_nodes_by_free_capacity() {
    run(async {
        let (a, b, c) = (Backend::start("node1"), Backend::start("node2"), Backend::start("node3"));
        let t = table(vec![node("node1", &a.host, true, 750), node("node2", &b.host, true, 0), node("node3", &c.host, false, 0)]);
        let proxy = Proxy::start(t, &[]);
        let mut counts: HashMap<String, usize> = HashMap::new();
        for _ in 0..50 {
            let (_, headers, _) = proxy.get("/", None).await;
            *counts.entry(headers["x-routed-to"].clone()).or_default() += 1;
        }
        // free capacity 250 : 1000
        assert_eq!((counts.get("node1"), counts.get("node2"), counts.get("node3")), (Some(&10), Some(&40), None));
        for b in [a, b, c] {
            b.handle.stop(false).await;
        }
    });
}

/// Headers a client may send to claim another address or scheme.
const SPOOFED: [(&str, &str); 9] = [
    ("forwarded", "for=6.6.6.6;proto=https"),
    ("x-forwarded-for", "6.6.6.6"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "evil.example"),
    ("x-forwarded-port", "443"),
    ("x-real-ip", "6.6.6.6"),
    ("x-client-ip", "6.6.6.6"),
    ("true-client-ip", "6.6.6.6"),
    ("cf-connecting-ip", "6.6.6.6"),
];

async fn headers_seen(proxy: &Proxy) -> Value {
    let mut request = proxy.client.get(proxy.url("/anything?q=1")).insert_header(("host", "kuma.example.org"));
    for (name, value) in SPOOFED {
        request = request.insert_header((name, value));
    }
    let body: Value = request.insert_header(("cookie", "session=abc")).send().await.unwrap().json().await.unwrap();
    body["headers"].clone()
}

#[test]
fn host_passes_through_and_no_identity_header_of_an_untrusted_client_reaches_the_node() {
    run(async {
        let a = Backend::start("node1");
        let proxy = Proxy::start(table(vec![node("node1", &a.host, true, 0)]), &[]);
        let port = proxy.base.rsplit(':').next().unwrap().to_owned();
        let h = headers_seen(&proxy).await;
        assert_eq!(h["host"], "kuma.example.org");
        assert_eq!(h["x-forwarded-for"], "127.0.0.1", "a client cannot forge its address");
        assert_eq!(h["x-real-ip"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "kuma.example.org");
        assert_eq!(h["x-forwarded-port"], port.as_str());
        assert_eq!(h["cookie"], "session=abc");
        for name in ["forwarded", "x-client-ip", "true-client-ip", "cf-connecting-ip"] {
            assert!(h.get(name).is_none(), "{name} reached the node: {h}");
        }
        a.handle.stop(false).await;
    });
}

#[test]
fn a_trusted_proxys_identity_headers_reach_the_node_with_its_address_appended() {
    run(async {
        let a = Backend::start("node1");
        let trusting = [("KUMA_CLUSTER__PROXY__TRUSTED_PROXIES", "10.0.0.0/8,127.0.0.1")];
        let proxy = Proxy::start(table(vec![node("node1", &a.host, true, 0)]), &trusting);
        let h = headers_seen(&proxy).await;
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
        assert_eq!(h["forwarded"], "for=6.6.6.6;proto=https, for=127.0.0.1");
        assert_eq!(h["x-real-ip"], "6.6.6.6");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "evil.example");
        assert_eq!(h["x-forwarded-port"], "443");
        assert_eq!(h["cf-connecting-ip"], "6.6.6.6");
        a.handle.stop(false).await;
    });
}

#[test]
fn options_asterisk_is_answered_here_and_never_counts_against_a_node() {
    run(async {
        let raw = RawNode::start(Some("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"));
        let mut proxy = Proxy::start(table(vec![node("node1", &raw.host, true, 0)]), &[]);
        let base = proxy.base.clone();
        let answer = tokio::task::spawn_blocking(move || {
            let options = exchange_from("127.0.0.1", &base, "OPTIONS * HTTP/1.1\r\nhost: kuma\r\nconnection: close\r\n\r\n");
            let connect = exchange_from("127.0.0.1", &base, "CONNECT kuma:443 HTTP/1.1\r\nhost: kuma:443\r\nconnection: close\r\n\r\n");
            (options, connect)
        })
        .await
        .unwrap();
        assert!(answer.0.starts_with("HTTP/1.1 204"), "{}", answer.0);
        assert!(answer.0.to_ascii_lowercase().contains("allow: get, head, post"), "{}", answer.0);
        assert!(answer.1.starts_with("HTTP/1.1 400"), "{}", answer.1);
        assert!(answer.1.contains("bad_request_target"), "{}", answer.1);
        assert_eq!(raw.requests.load(Ordering::SeqCst), 0, "the node saw nothing");
        assert!(proxy.reports.try_recv().is_err(), "no node was reported as unreachable");
    });
}

/// A connection to `base` from the loopback address `from` (127.x.y.z all reach
/// the local host, each a client address of its own).
fn connect_from(from: &str, base: &str) -> std::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&format!("{from}:0").parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    socket.connect(&base.parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    let stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
}

fn exchange_from(from: &str, base: &str, request: &str) -> String {
    let mut stream = connect_from(from, base);
    std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn connections_past_the_caps_are_answered_503_or_429_and_closed_and_their_places_come_back() {
    run(async {
        let a = Backend::start("node1");
        let caps = [("KUMA_CLUSTER__SERVER__MAX_CONNECTIONS", "3"), ("KUMA_CLUSTER__SERVER__MAX_CONNECTIONS_PER_CLIENT", "2")];
        let proxy = Proxy::start(table(vec![node("node1", &a.host, true, 0)]), &caps);
        let base = proxy.base.clone();
        tokio::task::spawn_blocking(move || {
            let get = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: kuma\r\nconnection: close\r\n\r\n");
            let mut held: Vec<_> = (0..2).map(|_| connect_from("127.0.0.1", &base)).collect();
            let answer = exchange_from("127.0.0.1", &base, &get("/page"));
            assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
            assert!(answer.contains("too_many_connections_from_client") && answer.contains("connection: close"), "{answer}");
            held.push(connect_from("127.0.0.2", &base));
            for path in ["/page", "/lb/ping"] {
                let answer = exchange_from("127.0.0.3", &base, &get(path));
                assert!(answer.starts_with("HTTP/1.1 503"), "{path}: {answer}");
                assert!(answer.contains("too_many_connections") && answer.contains("retry-after: 1"), "{answer}");
            }
            drop(held);
            let back = common::poll_until(WAIT, || exchange_from("127.0.0.1", &base, &get("/page")).starts_with("HTTP/1.1 200"));
            assert!(back.is_some(), "closed connections give their places back");
        })
        .await
        .unwrap();
        a.handle.stop(false).await;
    });
}

#[test]
fn a_request_head_over_the_limit_is_answered_431() {
    run(async {
        let a = Backend::start("node1");
        let proxy = Proxy::start(table(vec![node("node1", &a.host, true, 0)]), &[("KUMA_CLUSTER__SERVER__MAX_HEADER_SIZE", "2048")]);
        let big = "c".repeat(3000);
        for path in ["/page", "/lb/ping"] {
            let mut response = proxy.client.get(proxy.url(path)).insert_header(("cookie", big.as_str())).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "{path}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "request_header_too_large");
        }
        let small = "c".repeat(1000);
        let response = proxy.client.get(proxy.url("/page")).insert_header(("cookie", small.as_str())).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        a.handle.stop(false).await;
    });
}

#[test]
fn hop_by_hop_headers_are_stripped_both_ways() {
    run(async {
        let a = Backend::start("node1");
        let proxy = Proxy::start(table(vec![node("node1", &a.host, true, 0)]), &[]);
        // by hand: HTTP clients write their own Connection header; on its own
        // thread, since blocking this one would stall the servers' futures
        let base = proxy.base.clone();
        let raw = actix_web::rt::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(base).unwrap();
            std::io::Write::write_all(
                &mut stream,
                b"GET /hop HTTP/1.1\r\nHost: kuma\r\nConnection: close, x-client-secret\r\nX-Client-Secret: 1\r\n\
                  Keep-Alive: timeout=9\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\nX-Visible: yes\r\n\r\n",
            )
            .unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut raw = Vec::new();
            let _ = stream.read_to_end(&mut raw);
            String::from_utf8_lossy(&raw).into_owned()
        })
        .await
        .unwrap();
        let body: Value = serde_json::from_str(raw.split("\r\n\r\n").nth(1).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}: {raw}"));
        let h = body["headers"].as_object().unwrap();
        for gone in ["x-client-secret", "keep-alive", "te", "proxy-authorization"] {
            assert!(!h.contains_key(gone), "{gone} reached the node");
        }
        assert_eq!(h["x-visible"], "yes");

        let raw = RawNode::start(Some(
            "HTTP/1.1 200 OK\r\nConnection: close, x-node-secret\r\nX-Node-Secret: hidden\r\n\
             Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nX-Node-Visible: yes\r\nContent-Length: 2\r\n\r\nok",
        ));
        proxy.publisher.publish(table(vec![node("node1", &raw.host, true, 0)]));
        let mut response = proxy.client.get(proxy.url("/hop")).send().await.unwrap();
        for gone in ["x-node-secret", "keep-alive", "proxy-authenticate"] {
            assert!(response.headers().get(gone).is_none(), "{gone} reached the client");
        }
        assert_eq!(response.headers().get("x-node-visible").unwrap(), "yes");
        assert_eq!(response.body().await.unwrap(), Bytes::from_static(b"ok"));
        a.handle.stop(false).await;
    });
}

#[test]
fn a_50_mib_upload_is_streamed_to_the_node_with_its_length() {
    run(async {
        let a = Backend::start("node1");
        let proxy = Proxy::start(table(vec![node("node1", &a.host, true, 0)]), &[]);
        let chunks = gated_50_mib(b'u', a.signals.clone(), |s| &s.upload_started);
        let request = proxy.client.post(proxy.url("/upload")).send_body(SizedStream::new((50 * MIB) as u64, chunks));
        let mut response = tokio::time::timeout(WAIT, request).await.expect("upload streamed").unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["received"], 50 * MIB);
        assert_eq!(body["content_length"], (50 * MIB).to_string());
        assert_eq!(body["transfer_encoding"], Value::Null);
        a.handle.stop(false).await;
    });
}

#[test]
fn a_50_mib_download_is_streamed_to_the_client_with_its_length() {
    run(async {
        let a = Backend::start("node1");
        let proxy = Proxy::start(table(vec![node("node1", &a.host, true, 0)]), &[]);
        let mut response = proxy.client.get(proxy.url("/download")).send().await.unwrap();
        assert_eq!(response.headers().get("content-length").unwrap(), &(50 * MIB).to_string());
        let mut received = 0;
        let mut signalled = false;
        let read = async {
            while let Some(chunk) = response.next().await {
                received += chunk.unwrap().len();
                if received >= MIB && !signalled {
                    signalled = true;
                    a.signals.download_started.notify_one();
                }
            }
        };
        tokio::time::timeout(WAIT, read).await.expect("download streamed");
        assert_eq!(received, 50 * MIB);
        a.handle.stop(false).await;
    });
}

#[test]
fn a_head_request_keeps_the_nodes_content_length() {
    run(async {
        let a = Backend::start("node1");
        let proxy = Proxy::start(table(vec![node("node1", &a.host, true, 0)]), &[]);
        let mut response = proxy.client.head(proxy.url("/head")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers().get("content-length").unwrap(), "1234");
        assert!(response.body().await.unwrap().is_empty());
        a.handle.stop(false).await;
    });
}

#[test]
fn redirects_are_passed_through_untouched() {
    run(async {
        let a = Backend::start("node1");
        let proxy = Proxy::start(table(vec![node("node1", &a.host, true, 0)]), &[]);
        let response = proxy.client.get(proxy.url("/redirect")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(response.headers().get("location").unwrap(), "/elsewhere?x=1");
        a.handle.stop(false).await;
    });
}

#[test]
fn a_connect_failure_is_retried_on_another_node_and_reported_for_a_probe() {
    run(async {
        let b = Backend::start("node2");
        let t = table(vec![node("node1", &dead_host(), true, 0), node("node2", &b.host, true, 0)]);
        let mut proxy = Proxy::start(t, &[]);
        let response = proxy
            .client
            .post(proxy.url("/submit"))
            .insert_header(("cookie", "KUMA_CLUSTER_NODE=node1"))
            .send_body("payload that was never sent to node1");
        let mut response = response.await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers().get("x-routed-to").unwrap(), "node2");
        let body: Value = response.json().await.unwrap();
        assert_eq!((body["node"].as_str(), body["body"].as_u64()), (Some("node2"), Some(36)));
        assert_eq!(proxy.reports.recv().await, Some(FrontReport::Unreachable("node1".into())));
        b.handle.stop(false).await;
    });
}

#[test]
fn an_idempotent_request_is_retried_once_after_a_read_failure_and_a_post_is_never_replayed() {
    run(async {
        let b = Backend::start("node2");
        let closer = RawNode::start(None);
        let t = table(vec![node("node1", &closer.host, true, 0), node("node2", &b.host, true, 0)]);
        let proxy = Proxy::start(t, &[]);
        let (status, headers, body) = proxy.get("/page", Some("KUMA_CLUSTER_NODE=node1")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!((headers["x-routed-to"].as_str(), body["node"].as_str()), ("node2", Some("node2")));
        assert_eq!(closer.requests.load(Ordering::SeqCst), 1);

        let mut response = proxy
            .client
            .post(proxy.url("/submit"))
            .insert_header(("cookie", "KUMA_CLUSTER_NODE=node1"))
            .send_body("once only")
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "bad_gateway");
        assert_eq!(closer.requests.load(Ordering::SeqCst), 2, "the POST reached node1 once and nowhere else");
        b.handle.stop(false).await;
    });
}

#[test]
fn with_no_ready_node_the_answer_is_a_503_in_json_unless_fail_open() {
    run(async {
        let a = Backend::start("node1");
        let t = table(vec![node("node1", &a.host, false, 0)]);
        let proxy = Proxy::start(t.clone(), &[]);
        let (status, _, body) = proxy.get("/", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], "no_node_available");
        assert_eq!(body["detail"], "no Kuma node is ready");

        let open = Proxy::start(t, &[("KUMA_CLUSTER__PROXY__FAIL_OPEN", "true")]);
        let (status, headers, _) = open.get("/", None).await;
        assert_eq!((status, headers["x-routed-to"].as_str()), (StatusCode::OK, "node1"));
        a.handle.stop(false).await;
    });
}

#[test]
fn an_oversized_body_is_refused_with_413() {
    run(async {
        let a = Backend::start("node1");
        let proxy = Proxy::start(table(vec![node("node1", &a.host, true, 0)]), &[("KUMA_CLUSTER__PROXY__MAX_BODY", "1024")]);
        let mut response = proxy.client.post(proxy.url("/upload")).send_body(vec![0u8; 4096]).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "body_too_large");
        a.handle.stop(false).await;
    });
}

async fn next_frame(
    framed: &mut actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>,
) -> Frame {
    tokio::time::timeout(WAIT, framed.next()).await.expect("a frame arrives").expect("socket open").unwrap()
}

#[test]
fn a_websocket_carries_text_binary_a_1_mib_frame_ping_and_close_codes_both_ways() {
    run(async {
        let a = Backend::start("node1");
        let proxy = Proxy::start(table(vec![node("node1", &a.host, true, 0)]), &[]);
        let connect = |proxy: &Proxy| {
            proxy
                .client
                .ws(format!("ws://{}/ws", proxy.base))
                .protocols(["other", "chat"])
                .max_frame_size(4 * MIB)
                .connect()
        };
        let (response, mut ws) = connect(&proxy).await.unwrap();
        assert_eq!(response.headers().get("sec-websocket-protocol").unwrap(), "chat");
        assert_eq!(response.headers().get("x-routed-to").unwrap(), "node1");

        ws.send(awc::ws::Message::Text("hello".into())).await.unwrap();
        assert_eq!(next_frame(&mut ws).await, Frame::Text(Bytes::from_static(b"hello")));
        let big: Bytes = (0..MIB + 7).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
        ws.send(awc::ws::Message::Binary(big.clone())).await.unwrap();
        assert_eq!(next_frame(&mut ws).await, Frame::Binary(big));
        ws.send(awc::ws::Message::Ping(Bytes::from_static(b"are you there"))).await.unwrap();
        assert_eq!(next_frame(&mut ws).await, Frame::Pong(Bytes::from_static(b"are you there")));
        let close = CloseReason { code: CloseCode::Other(4001), description: Some("bye".into()) };
        ws.send(awc::ws::Message::Close(Some(close.clone()))).await.unwrap();
        assert_eq!(next_frame(&mut ws).await, Frame::Close(Some(close)), "the client's close code comes back");

        let (_, mut ws) = connect(&proxy).await.unwrap();
        ws.send(awc::ws::Message::Text("close:4002".into())).await.unwrap();
        match next_frame(&mut ws).await {
            Frame::Close(Some(reason)) => assert_eq!(reason.code, CloseCode::Other(4002), "the node's close code arrives"),
            other => panic!("expected a close, got {other:?}"),
        }
        a.handle.stop(false).await;
    });
}

#[test]
fn a_websocket_is_closed_when_its_node_goes_down() {
    run(async {
        let a = Backend::start("node1");
        let proxy = Proxy::start(table(vec![node("node1", &a.host, true, 0)]), &[]);
        let (_, mut ws) = proxy.client.ws(format!("ws://{}/ws", proxy.base)).connect().await.unwrap();
        ws.send(awc::ws::Message::Text("still here".into())).await.unwrap();
        assert_eq!(next_frame(&mut ws).await, Frame::Text(Bytes::from_static(b"still here")));
        proxy.publisher.publish(table(vec![node("node1", &a.host, false, 0)]));
        match next_frame(&mut ws).await {
            Frame::Close(Some(reason)) => assert_eq!(reason.code, CloseCode::Restart),
            other => panic!("expected a close, got {other:?}"),
        }
        a.handle.stop(false).await;
    });
}

#[test]
fn websockets_past_the_total_or_a_nodes_cap_get_503_and_plain_http_still_flows() {
    run(async {
        let (a, b) = (Backend::start("node1"), Backend::start("node2"));
        let caps = [("KUMA_CLUSTER__PROXY__WS_MAX_TOTAL", "3"), ("KUMA_CLUSTER__PROXY__WS_MAX_PER_NODE", "2")];
        let proxy = Proxy::start(table(vec![node("node1", &a.host, true, 0), node("node2", &b.host, true, 0)]), &caps);
        let open = |pinned: &'static str| {
            proxy.client.ws(format!("ws://{}/ws", proxy.base)).header("cookie", format!("KUMA_FIXED_NODE={pinned}")).connect()
        };
        let refused = |result: Result<_, awc::error::WsClientError>| {
            matches!(result, Err(awc::error::WsClientError::InvalidResponseStatus(StatusCode::SERVICE_UNAVAILABLE)))
        };
        let (_, mut first) = open("node1").await.unwrap();
        let _second = open("node1").await.unwrap();
        assert!(refused(open("node1").await), "node1 holds its cap of 2");
        let _third = open("node2").await.unwrap();
        assert!(refused(open("node2").await), "the total of 3 is reached");
        let (status, _, _) = proxy.get("/page", None).await;
        assert_eq!(status, StatusCode::OK, "plain HTTP is not held up by websockets");
        first.send(awc::ws::Message::Close(None)).await.unwrap();
        let mut again = None;
        for _ in 0..600 {
            if let Ok(connected) = open("node1").await {
                again = Some(connected);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(again.is_some(), "a closed websocket gives its place back");
        a.handle.stop(false).await;
        b.handle.stop(false).await;
    });
}

#[test]
fn a_client_that_stops_reading_is_closed_after_the_write_timeout_and_its_node_connection_with_it() {
    run(async {
        let a = Backend::start("node1");
        let settings = [("KUMA_CLUSTER__PROXY__WS_WRITE_TIMEOUT", "1s"), ("KUMA_CLUSTER__PROXY__WS_MAX_TOTAL", "1")];
        let proxy = Proxy::start(table(vec![node("node1", &a.host, true, 0)]), &settings);
        let mut stuck = tokio::net::TcpStream::connect(&proxy.base).await.unwrap();
        let handshake = "GET /flood HTTP/1.1\r\nhost: kuma\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
                         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n";
        tokio::io::AsyncWriteExt::write_all(&mut stuck, handshake.as_bytes()).await.unwrap();
        // the client reads nothing from here on, while the node floods
        tokio::time::timeout(WAIT, a.signals.flood_ended.notified())
            .await
            .expect("the node's side of a stuck websocket is closed");
        let mut reopened = false;
        for _ in 0..600 {
            if proxy.client.ws(format!("ws://{}/ws", proxy.base)).connect().await.is_ok() {
                reopened = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(reopened, "the stuck bridge ended and gave its place back");
        drop(stuck);
        a.handle.stop(false).await;
    });
}

#[test]
fn fixed_node_endpoints_set_report_and_clear_the_cookie() {
    run(async {
        let (a, b) = (Backend::start("node1"), Backend::start("node2"));
        let proxy = Proxy::start(table(vec![node("node1", &a.host, true, 0), node("node2", &b.host, false, 0)]), &[]);
        let (status, headers, body) = proxy.get("/lb/fixed-node/node1", None).await;
        assert_eq!((status, body["node"].as_str()), (StatusCode::OK, Some("node1")));
        let cookie = &headers["set-cookie"];
        for part in ["KUMA_FIXED_NODE=node1", "HttpOnly", "SameSite=Lax", "Max-Age=604800", "Path=/"] {
            assert!(cookie.contains(part), "{part} missing from {cookie}");
        }
        let (_, _, status) = proxy.get("/lb/fixed-node-status", Some("KUMA_FIXED_NODE=node1")).await;
        assert_eq!(status, json!({ "fixed_node": "node1", "node_ready": true, "active": true }));

        let mut response = proxy
            .client
            .post(proxy.url("/lb/set-fixed-node"))
            .send_json(&json!({ "node": "node1", "expires": 60 }))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("set-cookie").unwrap().to_str().unwrap().contains("Max-Age=60"));
        let _ = response.body().await;

        let (_, headers, _) = proxy.get("/lb/clear-fixed-node", Some("KUMA_FIXED_NODE=node1")).await;
        assert!(headers["set-cookie"].contains("Max-Age=0"));
        let (_, _, nodes) = proxy.get("/lb/available-nodes", None).await;
        assert_eq!(
            nodes,
            json!({ "nodes": [{ "node_id": "node1", "ready": true }, { "node_id": "node2", "ready": false }], "ready": 1 })
        );
        a.handle.stop(false).await;
        b.handle.stop(false).await;
    });
}

#[test]
fn another_sites_page_cannot_pin_or_unpin_a_browser() {
    run(async {
        let a = Backend::start("node1");
        let proxy = Proxy::start(table(vec![node("node1", &a.host, true, 0)]), &[]);
        let body = r#"{"node":"node1"}"#;
        let post = |content_type: &'static str, extra: Option<(&'static str, &'static str)>| {
            let mut request = proxy.client.post(proxy.url("/lb/set-fixed-node")).insert_header(("content-type", content_type));
            if let Some(header) = extra {
                request = request.insert_header(header);
            }
            request.send_body(body)
        };
        for (content_type, extra, status, error) in [
            ("text/plain", None, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ("application/x-www-form-urlencoded", None, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ("application/json", Some(("origin", "https://evil.example")), StatusCode::FORBIDDEN, "cross_site"),
            ("application/json", Some(("origin", "null")), StatusCode::FORBIDDEN, "cross_site"),
            ("text/plain", Some(("sec-fetch-site", "cross-site")), StatusCode::FORBIDDEN, "cross_site"),
        ] {
            let mut response = post(content_type, extra).await.unwrap();
            assert!(response.headers().get("set-cookie").is_none(), "{content_type} {extra:?}");
            let answer: Value = response.json().await.unwrap();
            assert_eq!((response.status(), answer["error"].as_str()), (status, Some(error)), "{content_type} {extra:?}");
        }
        for path in ["/lb/fixed-node/node1", "/lb/clear-fixed-node"] {
            let response = proxy.client.get(proxy.url(path)).insert_header(("sec-fetch-site", "cross-site")).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
            assert!(response.headers().get("set-cookie").is_none(), "{path}");
        }
        let same_origin = format!("http://{}", proxy.base);
        let mut response = proxy
            .client
            .post(proxy.url("/lb/set-fixed-node"))
            .insert_header(("origin", same_origin.as_str()))
            .insert_header(("sec-fetch-site", "same-origin"))
            .insert_header(("content-type", "application/json; charset=utf-8"))
            .send_body(body)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "the site's own page may pin");
        assert!(response.headers().get("set-cookie").is_some());
        let _ = response.body().await;
        a.handle.stop(false).await;
    });
}

#[test]
fn pinning_an_unknown_or_down_node_or_a_bad_body_is_refused_with_400() {
    run(async {
        let (a, b) = (Backend::start("node1"), Backend::start("node2"));
        let proxy = Proxy::start(table(vec![node("node1", &a.host, true, 0), node("node2", &b.host, false, 0)]), &[]);
        for (path, error) in [("/lb/fixed-node/node2", "node_not_ready"), ("/lb/fixed-node/node9", "unknown_node")] {
            let (status, headers, body) = proxy.get(path, None).await;
            assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some(error)));
            assert!(!headers.contains_key("set-cookie"));
        }
        for bad in [json!({ "node": "node1", "color": "red" }), json!({ "node": "node1", "expires": 0 }), json!({})] {
            let mut response = proxy.client.post(proxy.url("/lb/set-fixed-node")).send_json(&bad).await.unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "invalid_body");
        }
        let (status, _, body) = proxy.get("/lb/no-such-endpoint", None).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
        a.handle.stop(false).await;
        b.handle.stop(false).await;
    });
}

#[test]
fn monitor_writes_through_the_front_door_are_reported_to_the_supervisor_and_answered_unchanged() {
    run(async {
        let backend = Backend::start("node1");
        let mut proxy = Proxy::start(table(vec![node("node1", &backend.host, true, 0)]), &[]);
        let mut response = proxy.client.post(proxy.url("/api/v1/monitors")).send_body("{}").await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = serde_json::from_slice(&response.body().await.unwrap()).unwrap();
        assert_eq!(body["data"]["monitor_id"], 77, "the node's answer passes through: {body}");
        assert_eq!(
            proxy.reports.recv().await,
            Some(FrontReport::MonitorWritten { served: "node1".into(), monitor: Some(77), home: Some("home-of-node1".into()) })
        );
        for method in ["PUT", "DELETE"] {
            let request = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
            let response = proxy.client.request(request, proxy.url("/api/v1/monitors/5")).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(
                proxy.reports.recv().await,
                Some(FrontReport::MonitorWritten { served: "node1".into(), monitor: Some(5), home: None }),
                "{method}"
            );
        }
        let read = proxy.client.get(proxy.url("/api/v1/monitors/5")).send().await.unwrap();
        assert_eq!(read.status(), StatusCode::OK);
        assert!(proxy.reports.try_recv().is_err(), "a read is not a write");
    });
}
