//! Which paths are kuma-cluster's own, judged on the path as a server
//! understands it: percent-decoded, slashes merged, dot segments resolved, and
//! the first segment in any case. The router matches plain spellings into the
//! guarded `/lb` scope; this catches every other spelling, so none reaches a
//! node or slips past the guards.

/// One of kuma-cluster's own paths in its plain spelling, and whether it is
/// under `/lb` (behind the network allow-list).
#[derive(Debug, PartialEq, Eq)]
pub struct OwnPath {
    pub plain: String,
    pub guarded: bool,
}

/// Whether `raw` could spell a path other than itself: only then is the
/// canonical form worth computing (a plain `/api/...` path costs one scan).
fn may_be_disguised(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    let odd = bytes.windows(2).any(|w| w[0] == b'%' || (w[0] == b'/' && matches!(w[1], b'/' | b'.')));
    let first = raw.trim_start_matches('/').split('/').next().unwrap_or("");
    odd || first.eq_ignore_ascii_case("lb") || first.eq_ignore_ascii_case("health")
}

/// Decodes every `%XX` (an invalid escape stays as it is).
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path as a server resolves it (RFC 3986 §5.2.4, with empty segments
/// merged as nginx's `merge_slashes` does); a trailing slash is kept.
pub fn canonical(raw: &str) -> String {
    let decoded = percent_decode(raw);
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut path = format!("/{}", segments.join("/"));
    if trailing && path.len() > 1 {
        path.push('/');
    }
    path
}

/// `Some` when `raw` is a spelling, other than the plain one, of a path under
/// `/lb` or of `/health`.
pub fn disguised_own(raw: &str) -> Option<OwnPath> {
    if !may_be_disguised(raw) {
        return None;
    }
    let path = canonical(raw);
    let mut parts = path[1..].splitn(2, '/');
    let first = parts.next().unwrap_or("");
    let rest = parts.next();
    let own = if first.eq_ignore_ascii_case("lb") {
        OwnPath { plain: rest.map_or_else(|| "/lb".to_owned(), |rest| format!("/lb/{rest}")), guarded: true }
    } else if first.eq_ignore_ascii_case("health") && rest.is_none_or(str::is_empty) {
        OwnPath { plain: "/health".to_owned(), guarded: false }
    } else {
        return None;
    };
    (own.plain != raw).then_some(own)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(raw: &str) -> Option<(String, bool)> {
        disguised_own(raw).map(|o| (o.plain, o.guarded))
    }

    #[test]
    fn every_spelling_of_an_lb_path_is_recognised_with_its_plain_form() {
        for raw in [
            "/%6cb/health",
            "/l%62/health",
            "/%6C%62/health",
            "//lb/health",
            "/lb//health",
            "///lb///health",
            "/lb/./health",
            "/./lb/health",
            "/x/../lb/health",
            "/../lb/health",
            "/%2e%2e/lb/health",
            "/%2E/lb/health",
            "/lb%2fhealth",
            "/LB/health",
            "/Lb/health",
            "/lB/x/../health",
        ] {
            assert_eq!(own(raw), Some(("/lb/health".to_owned(), true)), "{raw}");
        }
        assert_eq!(own("/LB"), Some(("/lb".to_owned(), true)));
        assert_eq!(own("/lb/ready/"), None, "a plain path with a trailing slash is the router's");
        assert_eq!(own("//lb/ready/"), Some(("/lb/ready/".to_owned(), true)));
    }

    #[test]
    fn health_is_recognised_in_every_spelling_and_is_not_guarded() {
        for raw in ["//health", "/HEALTH", "/%68ealth", "/a/../health", "/health/"] {
            assert_eq!(own(raw), Some(("/health".to_owned(), false)), "{raw}");
        }
    }

    #[test]
    fn plain_spellings_and_the_nodes_paths_are_left_to_the_router() {
        for raw in [
            "/lb/health",
            "/lb",
            "/health",
            "/",
            "/api/v1/monitors/7",
            "/dashboard",
            "/lbx/health",
            "/healthz",
            "/health/x",
            "/api/lb/health",
            "/assets/index-%41.js",
            "/x/./y",
            "*",
        ] {
            assert_eq!(own(raw), None, "{raw}");
        }
    }

    #[test]
    fn dot_segments_resolve_and_never_climb_above_the_root() {
        assert_eq!(canonical("/a/b/../../../c"), "/c");
        assert_eq!(canonical("/a/./b/."), "/a/b/");
        assert_eq!(canonical("/a/%2e%2e"), "/");
        assert_eq!(canonical("/%zz/%4"), "/%zz/%4");
        assert_eq!(canonical(""), "/");
    }
}
