//! The access path's own limits: open client connections, in all and per
//! client address, counted when a connection opens and closes (never per
//! request), and the size of a request head. A connection over a cap is
//! answered once, clearly, and closed: it is not left waiting in the backlog.

use crate::config::ServerSettings;
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

impl Admission {
    pub fn new(settings: &ServerSettings) -> Self {
        Admission {
            open: AtomicUsize::new(0),
            per_client: Mutex::default(),
            max_total: settings.max_connections,
            max_per_client: settings.max_connections_per_client,
            max_header: settings.max_header_size,
        }
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
        Arc::new(Admission::new(&ServerSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            max_connections: total,
            max_connections_per_client: per_client,
            max_header_size: 1024,
        }))
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
}
