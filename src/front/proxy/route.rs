//! Which node serves a request: pure over the routing snapshot, plus the
//! balancer's per-worker state (each actix worker is one thread, so no lock).
//!
//! Order: (1) until first-run setup is complete, the primary; (2) the
//! `KUMA_FIXED_NODE` cookie while that node is ready; (3) requests about one
//! monitor go to its effective node; (4) the sticky session cookie while its node
//! is ready; otherwise a new session, spread by smooth weighted round-robin with
//! each ready node weighted by its free capacity, so the least-loaded gets most.

use crate::core::placement::MonitorId;
use crate::core::routing::RoutingTable;

pub const FIXED_COOKIE: &str = "KUMA_FIXED_NODE";
pub const STICKY_COOKIE: &str = "KUMA_CLUSTER_NODE";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Setup,
    FixedNode,
    MonitorOwner,
    Sticky,
    LoadBalancer,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Setup => "setup",
            Via::FixedNode => "fixed-node",
            Via::MonitorOwner => "monitor-owner",
            Via::Sticky => "sticky",
            Via::LoadBalancer => "load-balancer",
        }
    }
}

pub struct RouteInput<'a> {
    pub path: &'a str,
    pub fixed: Option<&'a str>,
    pub sticky: Option<&'a str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Index into the snapshot's nodes.
    pub node: usize,
    pub via: Via,
    /// The fixed-node cookie names an unknown or unready node: clear it.
    pub clear_fixed: bool,
    /// A new session: pin the browser to this node.
    pub set_sticky: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unroutable {
    #[error("no Kuma node is ready")]
    NoReadyNode,
    #[error("first-run setup is only served by the primary node {0}, which is not ready")]
    PrimaryDown(String),
}

/// The monitor a path is about: `/api/v1/monitors/<id>[/...]` or `/api/badge/<id>/...`.
pub fn monitor_of_path(path: &str) -> Option<MonitorId> {
    let rest = path.strip_prefix("/api/v1/monitors/").or_else(|| path.strip_prefix("/api/badge/"))?;
    rest.split('/').next()?.parse().ok()
}

/// The value of cookie `name` in `Cookie` header values (RFC 6265 §5.4: pairs
/// separated by `;`), read in place: nothing is allocated or decoded.
pub fn cookie<'a>(values: impl Iterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    values.flat_map(|v| v.split(';')).find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches('"'))
    })
}

fn ready_index(table: &RoutingTable, id: &str) -> Option<usize> {
    table.nodes.iter().position(|n| n.id == id && n.ready && n.host.is_some())
}

pub fn choose(
    table: &RoutingTable,
    input: &RouteInput,
    balancer: &mut Balancer,
    fail_open: bool,
) -> Result<Route, Unroutable> {
    let fixed = input.fixed.and_then(|id| ready_index(table, id));
    let clear_fixed = input.fixed.is_some() && fixed.is_none();
    let route = |node, via| Route { node, via, clear_fixed, set_sticky: false };
    if !table.setup_complete {
        if let Some(primary) = &table.primary {
            if let Some(i) = ready_index(table, primary) {
                return Ok(route(i, Via::Setup));
            }
            match table.nodes.iter().position(|n| &n.id == primary && n.host.is_some()) {
                Some(i) if fail_open => return Ok(route(i, Via::Setup)),
                _ => return Err(Unroutable::PrimaryDown(primary.clone())),
            }
        }
    }
    if let Some(i) = fixed {
        return Ok(route(i, Via::FixedNode));
    }
    if let Some(i) = monitor_of_path(input.path)
        .and_then(|m| table.node_of_monitor(m))
        .and_then(|n| ready_index(table, &n.id))
    {
        return Ok(route(i, Via::MonitorOwner));
    }
    if let Some(i) = input.sticky.and_then(|id| ready_index(table, id)) {
        return Ok(route(i, Via::Sticky));
    }
    let node = balancer.pick(table, &[], fail_open).ok_or(Unroutable::NoReadyNode)?;
    Ok(Route { node, via: Via::LoadBalancer, clear_fixed, set_sticky: true })
}

/// Smooth weighted round-robin (as in nginx): deterministic, spreads evenly in
/// proportion to the weights, never sends a burst to one node.
#[derive(Debug, Default)]
pub struct Balancer {
    generation: u64,
    /// Current weight per node index of the snapshot `generation`.
    current: Vec<i64>,
}

impl Balancer {
    /// A ready node with a host, not in `exclude`; with `fail_open` and none
    /// ready, any node with a host.
    pub fn pick(&mut self, table: &RoutingTable, exclude: &[usize], fail_open: bool) -> Option<usize> {
        if table.generation != self.generation || self.current.len() != table.nodes.len() {
            self.generation = table.generation;
            self.current = vec![0; table.nodes.len()];
        }
        let usable = |i: usize| table.nodes[i].host.is_some() && !exclude.contains(&i);
        let any_ready = (0..table.nodes.len()).any(|i| usable(i) && table.nodes[i].ready);
        let eligible = |i: &usize| usable(*i) && (table.nodes[*i].ready || (!any_ready && fail_open));
        let weight = |i: usize| table.nodes[i].limit.saturating_sub(table.nodes[i].monitor_count).max(1) as i64;
        let total: i64 = (0..table.nodes.len()).filter(eligible).map(weight).sum();
        let mut best: Option<usize> = None;
        for i in (0..table.nodes.len()).filter(eligible) {
            self.current[i] += weight(i);
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let chosen = best?;
        self.current[chosen] -= total;
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::health::Health;
    use crate::core::routing::RouteNode;

    fn node(id: &str, ready: bool, monitors: usize) -> RouteNode {
        RouteNode {
            id: id.into(),
            host: Some(format!("{id}:3001")),
            health: if ready { Health::Up } else { Health::Down },
            ready,
            enabled: true,
            monitor_count: monitors,
            limit: 1000,
        }
    }

    fn table(nodes: Vec<RouteNode>) -> RoutingTable {
        RoutingTable {
            generation: 1,
            monitors: [(7, 1)].into(),
            nodes,
            primary: Some("a".into()),
            setup_complete: true,
        }
    }

    fn input<'a>(path: &'a str, fixed: Option<&'a str>, sticky: Option<&'a str>) -> RouteInput<'a> {
        RouteInput { path, fixed, sticky }
    }

    fn pick(t: &RoutingTable, i: &RouteInput) -> Result<Route, Unroutable> {
        choose(t, i, &mut Balancer::default(), false)
    }

    #[test]
    fn cookies_are_found_by_exact_name_in_every_cookie_header() {
        let headers = ["theme=dark; KUMA_CLUSTER_NODE=node2", "KUMA_FIXED_NODE=\"node1\" ;x=1"];
        assert_eq!(cookie(headers.into_iter(), "KUMA_CLUSTER_NODE"), Some("node2"));
        assert_eq!(cookie(headers.into_iter(), "KUMA_FIXED_NODE"), Some("node1"));
        assert_eq!(cookie(headers.into_iter(), "KUMA_FIXED"), None);
        assert_eq!(cookie(["broken; =v; a"].into_iter(), "a"), None);
        assert_eq!(cookie(std::iter::empty(), "a"), None);
    }

    #[test]
    fn monitor_paths_name_their_monitor() {
        assert_eq!(monitor_of_path("/api/v1/monitors/42"), Some(42));
        assert_eq!(monitor_of_path("/api/v1/monitors/42/heartbeats"), Some(42));
        assert_eq!(monitor_of_path("/api/badge/9/status"), Some(9));
        assert_eq!(monitor_of_path("/api/v1/monitors"), None);
        assert_eq!(monitor_of_path("/api/v1/monitors/abc"), None);
        assert_eq!(monitor_of_path("/dashboard/42"), None);
    }

    #[test]
    fn before_setup_everything_goes_to_the_primary() {
        let mut t = table(vec![node("a", true, 0), node("b", true, 0)]);
        t.setup_complete = false;
        let r = pick(&t, &input("/api/v1/monitors/7", Some("b"), Some("b"))).unwrap();
        assert_eq!((r.node, r.via), (0, Via::Setup));
        t.nodes[0].ready = false;
        assert_eq!(pick(&t, &input("/", None, None)), Err(Unroutable::PrimaryDown("a".into())));
        let r = choose(&t, &input("/", None, None), &mut Balancer::default(), true).unwrap();
        assert_eq!((r.node, r.via), (0, Via::Setup), "fail-open still tries the primary");
    }

    #[test]
    fn the_fixed_node_cookie_wins_while_its_node_is_ready() {
        let t = table(vec![node("a", true, 0), node("b", true, 0)]);
        let r = pick(&t, &input("/api/v1/monitors/7", Some("a"), Some("b"))).unwrap();
        assert_eq!((r.node, r.via, r.clear_fixed), (0, Via::FixedNode, false));
    }

    #[test]
    fn a_fixed_cookie_naming_a_down_or_unknown_node_is_ignored_and_cleared() {
        let t = table(vec![node("a", false, 0), node("b", true, 0)]);
        for fixed in ["a", "nowhere"] {
            let r = pick(&t, &input("/", Some(fixed), None)).unwrap();
            assert_eq!((r.node, r.via, r.clear_fixed), (1, Via::LoadBalancer, true));
        }
    }

    #[test]
    fn requests_about_a_monitor_go_to_its_node() {
        let t = table(vec![node("a", true, 0), node("b", true, 0)]);
        let r = pick(&t, &input("/api/v1/monitors/7/heartbeats", None, Some("a"))).unwrap();
        assert_eq!((r.node, r.via, r.set_sticky), (1, Via::MonitorOwner, false));
        let r = pick(&t, &input("/api/badge/7/uptime", None, None)).unwrap();
        assert_eq!(r.via, Via::MonitorOwner);
    }

    #[test]
    fn a_sticky_session_stays_while_its_node_is_ready() {
        let mut t = table(vec![node("a", true, 0), node("b", true, 0)]);
        let r = pick(&t, &input("/dashboard", None, Some("b"))).unwrap();
        assert_eq!((r.node, r.via, r.set_sticky), (1, Via::Sticky, false));
        t.nodes[1].ready = false;
        let r = pick(&t, &input("/dashboard", None, Some("b"))).unwrap();
        assert_eq!((r.node, r.via, r.set_sticky), (0, Via::LoadBalancer, true));
    }

    #[test]
    fn new_sessions_spread_by_free_capacity() {
        let t = table(vec![node("a", true, 900), node("b", true, 500), node("c", true, 0), node("d", false, 0)]);
        let mut balancer = Balancer::default();
        let mut counts = [0; 4];
        for _ in 0..1600 {
            counts[balancer.pick(&t, &[], false).unwrap()] += 1;
        }
        // weights 100 : 500 : 1000 of 1600
        assert_eq!(counts, [100, 500, 1000, 0]);
        let first: Vec<usize> = (0..3).map(|_| balancer.pick(&t, &[], false).unwrap()).collect();
        assert!(first.contains(&1) || first.contains(&0), "no burst to one node: {first:?}");
    }

    #[test]
    fn excluded_nodes_are_skipped_and_fail_open_uses_unready_nodes() {
        let t = table(vec![node("a", true, 0), node("b", false, 0)]);
        let mut balancer = Balancer::default();
        assert_eq!(balancer.pick(&t, &[0], false), None);
        assert_eq!(balancer.pick(&t, &[0], true), Some(1));
        let none = table(vec![node("a", false, 0)]);
        assert_eq!(pick(&none, &input("/", None, None)), Err(Unroutable::NoReadyNode));
    }
}
