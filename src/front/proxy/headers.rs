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

/// Sets X-Forwarded-For/-Proto/-Host and X-Real-IP for a request from `peer` that
/// arrived with `host`. Untrusted clients cannot forge them: their values are
/// replaced; trusted ones (another proxy in front) are appended to or kept.
pub fn set_forwarded(headers: &mut HeaderMap, peer: Option<IpAddr>, host: Option<&str>, trust: bool) {
    let peer = peer.map(|ip| ip.to_string());
    let value = |s: &str| HeaderValue::from_str(s).ok();
    let previous_for = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let forwarded_for = match (trust, previous_for, &peer) {
        (true, Some(prev), Some(ip)) => Some(format!("{prev}, {ip}")),
        (true, Some(prev), None) => Some(prev),
        (_, _, ip) => ip.clone(),
    };
    let real_ip = match (trust, headers.get("x-real-ip").and_then(|v| v.to_str().ok())) {
        (true, Some(kept)) => Some(kept.to_owned()),
        _ => peer,
    };
    let set = |headers: &mut HeaderMap, name: &'static str, v: Option<String>, keep: bool| {
        if keep && headers.contains_key(name) {
            return;
        }
        headers.remove(name);
        if let Some(v) = v.as_deref().and_then(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    set(headers, "x-forwarded-for", forwarded_for, false);
    set(headers, "x-real-ip", real_ip, false);
    set(headers, "x-forwarded-proto", Some("http".into()), trust);
    set(headers, "x-forwarded-host", host.map(str::to_owned), trust);
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

    #[test]
    fn untrusted_forwarded_headers_are_replaced() {
        let mut h = map(&[("x-forwarded-for", "6.6.6.6"), ("x-real-ip", "6.6.6.6"), ("x-forwarded-proto", "https")]);
        set_forwarded(&mut h, Some("10.1.2.3".parse().unwrap()), Some("kuma.example"), false);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.1.2.3");
        assert_eq!(h.get("x-real-ip").unwrap(), "10.1.2.3");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "kuma.example");
    }

    #[test]
    fn trusted_forwarded_headers_are_extended_or_kept() {
        let mut h = map(&[("x-forwarded-for", "1.1.1.1"), ("x-real-ip", "1.1.1.1"), ("x-forwarded-proto", "https")]);
        set_forwarded(&mut h, Some("10.1.2.3".parse().unwrap()), Some("kuma.example"), true);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "1.1.1.1, 10.1.2.3");
        assert_eq!(h.get("x-real-ip").unwrap(), "1.1.1.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "kuma.example");
    }
}
