//! Header rules for forwarding, on the header maps hyper sends to and receives
//! from the nodes: hop-by-hop stripping (RFC 9110 §7.6.1) and the
//! X-Forwarded-* family.

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Whether a (lower-case) header name is hop-by-hop: it is about one
/// connection and never passed on.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Whether a header is one by which a client names itself or the way it
/// came. Only a trusted proxy's are believed.
fn identity(name: &str) -> bool {
    matches!(
        name,
        "forwarded"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "x-forwarded-port"
            | "x-real-ip"
            | "x-client-ip"
            | "true-client-ip"
            | "cf-connecting-ip"
    )
}

/// The end-to-end headers of a message whose (lower-case name, value) pairs
/// `headers` lists: without the hop-by-hop ones and those its `Connection`
/// header names.
pub fn end_to_end<'a, I>(headers: impl Fn() -> I) -> impl Iterator<Item = (&'a str, &'a [u8])>
where
    I: Iterator<Item = (&'a str, &'a [u8])>,
{
    let named: Vec<&str> = headers()
        .filter(|(name, _)| *name == "connection")
        .flat_map(|(_, value)| std::str::from_utf8(value).unwrap_or("").split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .collect();
    headers().filter(move |(name, _)| !hop_by_hop(name) && !named.iter().any(|n| n.eq_ignore_ascii_case(name)))
}

/// How a request reached kuma-cluster.
pub struct Arrival<'a> {
    pub peer: Option<IpAddr>,
    pub host: Option<&'a str>,
    /// The port the client connected to.
    pub port: u16,
    /// The peer is one of `proxy.trusted_proxies`.
    pub trusted: bool,
}

/// The headers a node gets for a client's request, built in one pass: the
/// end-to-end ones, without the client's identity headers unless it is a
/// trusted proxy, then X-Forwarded-For/-Proto/-Host/-Port and X-Real-IP. A
/// trusted proxy's are kept, X-Forwarded-For and Forwarded extended with the
/// peer; nobody else's reach a node.
pub fn for_node<'a, I>(client: impl Fn() -> I, arrival: &Arrival) -> HeaderMap
where
    I: Iterator<Item = (&'a str, &'a [u8])>,
{
    let mut headers = HeaderMap::with_capacity(client().size_hint().0 + 5);
    for (name, value) in end_to_end(client) {
        if identity(name) && !arrival.trusted {
            continue;
        }
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    let peer = arrival.peer.map(|ip| ip.to_string());
    let peer_value = peer.as_deref().and_then(|ip| HeaderValue::from_str(ip).ok());
    if arrival.trusted {
        let forwarded_for = joined(&headers, "x-forwarded-for", peer.clone());
        put(&mut headers, "x-forwarded-for", forwarded_for.and_then(|v| HeaderValue::from_str(&v).ok()), false);
        if headers.contains_key("forwarded") {
            let forwarded = joined(&headers, "forwarded", peer.as_deref().map(forwarded_node));
            put(&mut headers, "forwarded", forwarded.and_then(|v| HeaderValue::from_str(&v).ok()), false);
        }
    } else {
        put(&mut headers, "x-forwarded-for", peer_value.clone(), false);
    }
    put(&mut headers, "x-real-ip", peer_value, true);
    put(&mut headers, "x-forwarded-proto", Some(HeaderValue::from_static("http")), true);
    put(&mut headers, "x-forwarded-host", arrival.host.and_then(|h| HeaderValue::from_str(h).ok()), true);
    put(&mut headers, "x-forwarded-port", Some(HeaderValue::from(arrival.port)), true);
    headers
}

/// Every value of `name`, then `item`, as one comma-separated list.
fn joined(headers: &HeaderMap, name: &str, item: Option<String>) -> Option<String> {
    let all: Vec<String> =
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).chain(item).collect();
    (!all.is_empty()).then(|| all.join(", "))
}

/// Sets `name` to `value`, or leaves a present one when `keep`.
fn put(headers: &mut HeaderMap, name: &'static str, value: Option<HeaderValue>, keep: bool) {
    if keep && headers.contains_key(name) {
        return;
    }
    if let Some(value) = value {
        headers.insert(HeaderName::from_static(name), value);
    }
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

    /// The headers a node gets for a request with `pairs`.
    fn sent(pairs: &[(&'static str, &'static str)], arrival: &Arrival) -> HeaderMap {
        for_node(|| pairs.iter().map(|(k, v)| (*k, v.as_bytes())), arrival)
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let message = [
            ("connection", "keep-alive, X-Secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("x-kept", "yes"),
            ("cookie", "a=b"),
        ];
        let kept: Vec<&str> = end_to_end(|| message.iter().map(|(k, v)| (*k, v.as_bytes()))).map(|(k, _)| k).collect();
        assert_eq!(kept, ["x-kept", "cookie"]);
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
        let h = sent(&SPOOFED, &arrival(false));
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
        let mut spoofed = SPOOFED.to_vec();
        spoofed.push(("x-forwarded-for", "7.7.7.7"));
        let h = sent(&spoofed, &arrival(true));
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
        let v6 = Arrival { peer: Some("::1".parse().unwrap()), host: None, port: 80, trusted: true };
        let h = sent(&[], &v6);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "::1");
        assert_eq!(h.get("x-forwarded-port").unwrap(), "80");
        assert!(!h.contains_key("forwarded") && !h.contains_key("x-forwarded-host"));
        let h = sent(&[("forwarded", "for=1.1.1.1")], &v6);
        assert_eq!(h.get("forwarded").unwrap(), "for=1.1.1.1, for=\"[::1]\"");
    }
}
