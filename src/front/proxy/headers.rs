//! Header rules for forwarding: hop-by-hop stripping (RFC 9110 §7.6.1) and the
//! X-Forwarded-* family.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION};
use std::net::IpAddr;

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes the hop-by-hop headers and every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Headers by which a client names itself or the way it came. Only a trusted
/// proxy's are believed.
const CLIENT_IDENTITY: [&str; 9] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
];

/// How a request reached kuma-cluster.
pub struct Arrival<'a> {
    pub peer: Option<IpAddr>,
    pub host: Option<&'a str>,
    /// The port the client connected to.
    pub port: u16,
    /// The peer is one of `proxy.trusted_proxies`.
    pub trusted: bool,
}

/// Sets the X-Forwarded-* family and X-Real-IP. From a client that is not a
/// trusted proxy, every identity header is removed first, so none it sent
/// reaches a node; a trusted proxy's are kept, X-Forwarded-For and Forwarded
/// extended with the peer.
pub fn set_forwarded(headers: &mut HeaderMap, arrival: &Arrival) {
    let peer = arrival.peer.map(|ip| ip.to_string());
    if !arrival.trusted {
        for name in CLIENT_IDENTITY {
            headers.remove(name);
        }
    }
    let joined = |name: &str, sep: &str, item: Option<String>| {
        let previous: Vec<&str> = headers.get_all(name).filter_map(|v| v.to_str().ok()).collect();
        let all: Vec<String> = previous.iter().map(|p| p.to_string()).chain(item).collect();
        (!all.is_empty()).then(|| all.join(sep))
    };
    let forwarded_for = joined("x-forwarded-for", ", ", peer.clone());
    let forwarded = headers
        .contains_key("forwarded")
        .then(|| joined("forwarded", ", ", peer.as_deref().map(forwarded_node)))
        .flatten();
    let mut put = |name: &'static str, value: Option<String>, keep: bool| {
        if keep && headers.contains_key(name) {
            return;
        }
        headers.remove(name);
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    put("x-forwarded-for", forwarded_for, false);
    if forwarded.is_some() {
        put("forwarded", forwarded, false);
    }
    put("x-real-ip", peer, true);
    put("x-forwarded-proto", Some("http".into()), true);
    put("x-forwarded-host", arrival.host.map(str::to_owned), true);
    put("x-forwarded-port", Some(arrival.port.to_string()), true);
}

/// A `for=` element of the Forwarded header (RFC 7239 §6: IPv6 in brackets, quoted).
fn forwarded_node(ip: &str) -> String {
    if ip.contains(':') {
        format!("for=\"[{ip}]\"")
    } else {
        format!("for={ip}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("x-kept", "yes"),
            ("cookie", "a=b"),
        ]);
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(h.contains_key("x-kept") && h.contains_key("cookie"));
    }

    fn arrival(trusted: bool) -> Arrival<'static> {
        Arrival { peer: Some("10.1.2.3".parse().unwrap()), host: Some("kuma.example"), port: 8080, trusted }
    }

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

    #[test]
    fn an_untrusted_clients_identity_headers_are_all_replaced_or_removed() {
        let mut h = map(&SPOOFED);
        set_forwarded(&mut h, &arrival(false));
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.1.2.3");
        assert_eq!(h.get("x-real-ip").unwrap(), "10.1.2.3");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "kuma.example");
        assert_eq!(h.get("x-forwarded-port").unwrap(), "8080");
        for name in ["forwarded", "x-client-ip", "true-client-ip", "cf-connecting-ip"] {
            assert!(!h.contains_key(name), "{name} reached the node");
        }
        assert!(h.iter().all(|(_, v)| !v.to_str().unwrap().contains("6.6.6.6")), "{h:?}");
    }

    #[test]
    fn a_trusted_proxys_identity_headers_are_kept_and_extended_with_the_peer() {
        let mut h = map(&SPOOFED);
        h.append(HeaderName::from_static("x-forwarded-for"), HeaderValue::from_static("7.7.7.7"));
        set_forwarded(&mut h, &arrival(true));
        assert_eq!(h.get("x-forwarded-for").unwrap(), "6.6.6.6, 7.7.7.7, 10.1.2.3");
        assert_eq!(h.get("forwarded").unwrap(), "for=6.6.6.6;proto=https, for=10.1.2.3");
        assert_eq!(h.get("x-real-ip").unwrap(), "6.6.6.6");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "evil.example");
        assert_eq!(h.get("x-forwarded-port").unwrap(), "443");
        assert_eq!(h.get("cf-connecting-ip").unwrap(), "6.6.6.6");
    }

    #[test]
    fn a_trusted_proxy_without_headers_gets_them_set_from_the_connection() {
        let mut h = HeaderMap::new();
        let v6 = Arrival { peer: Some("::1".parse().unwrap()), host: None, port: 80, trusted: true };
        set_forwarded(&mut h, &v6);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "::1");
        assert_eq!(h.get("x-forwarded-port").unwrap(), "80");
        assert!(!h.contains_key("forwarded") && !h.contains_key("x-forwarded-host"));
        let mut h = map(&[("forwarded", "for=1.1.1.1")]);
        set_forwarded(&mut h, &v6);
        assert_eq!(h.get("forwarded").unwrap(), "for=1.1.1.1, for=\"[::1]\"");
    }
}
