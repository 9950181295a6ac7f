//! The access path's own limits: open client connections, in all and per
//! client address, counted when a connection opens and closes (never per
//! request); the size of a request head; and open websockets, in all and per
//! node. A connection over a cap is answered once, clearly, and closed: it is
//! not left waiting in the backlog.

use crate::config::Settings;
use crate::front::error::error;
use actix_web::dev::Extensions;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use std::any::Any;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The counters every worker shares.
pub struct Admission {
    open: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    max_total: usize,
    max_per_client: usize,
    max_header: usize,
    websockets: AtomicUsize,
    /// Websockets closed since [`Admission::closed_websockets`] last asked.
    websockets_closed: AtomicUsize,
    websockets_per_node: Mutex<HashMap<String, usize>>,
    max_websockets: usize,
    max_websockets_per_node: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Admitted,
    /// `server.max_connections` were already open.
    Full,
    /// `server.max_connections_per_client` were already open from this address.
    ClientFull,
}

/// Lives in a connection's data as long as the connection: it holds the
/// connection's place in the counts and gives it back on close.
pub struct Seat {
    admission: Arc<Admission>,
    client: Option<IpAddr>,
    verdict: Verdict,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.admission.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.client {
            let mut clients = self.admission.per_client.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = clients.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    clients.remove(&ip);
                }
            }
        }
    }
}

/// An open websocket's place in the counts, given back when the bridge ends.
pub struct WebsocketSeat {
    admission: Arc<Admission>,
    node: String,
}

impl Drop for WebsocketSeat {
    fn drop(&mut self) {
        self.admission.websockets.fetch_sub(1, Ordering::Relaxed);
        self.admission.websockets_closed.fetch_add(1, Ordering::Relaxed);
        let mut nodes = self.admission.websockets_per_node.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = nodes.get_mut(&self.node) {
            *n -= 1;
            if *n == 0 {
                nodes.remove(&self.node);
            }
        }
    }
}

impl Admission {
    pub fn new(settings: &Settings) -> Self {
        Admission {
            open: AtomicUsize::new(0),
            per_client: Mutex::default(),
            max_total: settings.server.max_connections,
            max_per_client: settings.server.max_connections_per_client,
            max_header: settings.server.max_header_size,
            websockets: AtomicUsize::new(0),
            websockets_closed: AtomicUsize::new(0),
            websockets_per_node: Mutex::default(),
            max_websockets: settings.proxy.ws_max_total,
            max_websockets_per_node: settings.proxy.ws_max_per_node,
        }
    }

    /// Websockets closed since the last call.
    pub fn closed_websockets(&self) -> usize {
        self.websockets_closed.swap(0, Ordering::Relaxed)
    }

    /// A place for one more websocket to `node`, or the 503 that says which cap is reached.
    pub fn websocket(self: &Arc<Self>, node: &str) -> Result<WebsocketSeat, HttpResponse> {
        let refused = |detail: String| error(StatusCode::SERVICE_UNAVAILABLE, "websocket_limit", detail);
        if self.websockets.fetch_add(1, Ordering::Relaxed) >= self.max_websockets {
            self.websockets.fetch_sub(1, Ordering::Relaxed);
            return Err(refused(format!("{} websockets are open, the most proxy.ws_max_total allows", self.max_websockets)));
        }
        let mut nodes = self.websockets_per_node.lock().unwrap_or_else(|e| e.into_inner());
        let n = nodes.entry(node.to_owned()).or_default();
        if *n >= self.max_websockets_per_node {
            drop(nodes);
            self.websockets.fetch_sub(1, Ordering::Relaxed);
            return Err(refused(format!(
                "node {node} holds {} websockets, the most proxy.ws_max_per_node allows",
                self.max_websockets_per_node
            )));
        }
        *n += 1;
        Ok(WebsocketSeat { admission: self.clone(), node: node.to_owned() })
    }

    pub fn max_total(&self) -> usize {
        self.max_total
    }

    /// Open client connections now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Counts a new connection from `client` and judges it.
    pub fn seat(self: &Arc<Self>, client: Option<IpAddr>) -> Seat {
        let before = self.open.fetch_add(1, Ordering::Relaxed);
        let from_client = client.map_or(0, |ip| {
            let mut clients = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
            let n = clients.entry(ip).or_default();
            *n += 1;
            *n
        });
        let verdict = if before >= self.max_total {
            Verdict::Full
        } else if from_client > self.max_per_client {
            Verdict::ClientFull
        } else {
            Verdict::Admitted
        };
        Seat { admission: self.clone(), client, verdict }
    }

    /// The server's `on_connect` hook: seats every TCP connection.
    pub fn on_connect(self: &Arc<Self>, connection: &dyn Any, data: &mut Extensions) {
        let peer = connection.downcast_ref::<actix_web::rt::net::TcpStream>().and_then(|s| s.peer_addr().ok());
        data.insert(self.seat(peer.map(|p| p.ip())));
    }

    /// The answer for a request whose connection is over a cap or whose head
    /// is too large; `None` lets it through.
    pub fn refusal(&self, req: &HttpRequest) -> Option<HttpResponse> {
        let verdict = req.conn_data::<Seat>().map_or(Verdict::Admitted, |seat| seat.verdict);
        let mut answer = match verdict {
            Verdict::Full => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_connections",
                format!("kuma-cluster holds its maximum of {} open connections; retry shortly", self.max_total),
            ),
            Verdict::ClientFull => error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections_from_client",
                format!("at most {} open connections per client address", self.max_per_client),
            ),
            Verdict::Admitted => {
                let head = req.uri().path_and_query().map_or(1, |p| p.as_str().len())
                    + req.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum::<usize>();
                if head <= self.max_header {
                    return None;
                }
                error(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "request_header_too_large",
                    format!("request heads are limited to {} bytes (server.max_header_size)", self.max_header),
                )
            }
        };
        let headers = answer.headers_mut();
        headers.insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        Some(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(total: usize, per_client: usize) -> Arc<Admission> {
        let mut settings = Settings::load_with_env(None, Vec::new()).unwrap();
        settings.server.max_connections = total;
        settings.server.max_connections_per_client = per_client;
        settings.proxy.ws_max_total = total;
        settings.proxy.ws_max_per_node = per_client;
        Arc::new(Admission::new(&settings))
    }

    #[test]
    fn connections_past_either_cap_are_refused_and_closing_gives_the_place_back() {
        let a = admission(3, 2);
        let (x, y) = (Some("10.0.0.1".parse().unwrap()), Some("10.0.0.2".parse().unwrap()));
        let first = a.seat(x);
        let second = a.seat(x);
        assert_eq!(a.seat(x).verdict, Verdict::ClientFull);
        assert_eq!(a.open(), 2, "a refused seat is given back when its connection closes");
        let third = a.seat(y);
        assert_eq!(a.seat(y).verdict, Verdict::Full);
        assert_eq!([first.verdict, second.verdict, third.verdict], [Verdict::Admitted; 3]);
        drop(first);
        assert_eq!(a.seat(x).verdict, Verdict::Admitted);
        drop((second, third));
        assert_eq!(a.open(), 0);
        assert!(a.per_client.lock().unwrap().is_empty(), "no address is remembered after its last connection");
    }

    #[test]
    fn websockets_past_the_total_or_a_nodes_cap_are_refused_and_ending_gives_the_place_back() {
        let a = admission(3, 2);
        let first = a.websocket("node1").unwrap();
        let _second = a.websocket("node1").unwrap();
        let refused = a.websocket("node1").err().unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        let _third = a.websocket("node2").unwrap();
        assert!(a.websocket("node3").is_err(), "the total is reached");
        drop(first);
        let _again = a.websocket("node1").unwrap();
        assert_eq!(a.websockets.load(Ordering::Relaxed), 3);
        drop((_second, _third, _again));
        assert_eq!(a.websockets.load(Ordering::Relaxed), 0);
        assert_eq!(a.closed_websockets(), 4);
        assert_eq!(a.closed_websockets(), 0, "counted once");
        assert!(a.websockets_per_node.lock().unwrap().is_empty());
    }
}
