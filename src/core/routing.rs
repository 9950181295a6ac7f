//! The routing table: where traffic and monitors go, as one immutable value.
//! The ClusterActor builds it with each decision; the supervisor's publisher
//! hands it to the request path.

use crate::core::health::Health;
use crate::core::placement::MonitorId;
use serde::Serialize;
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteNode {
    pub id: String,
    pub host: Option<String>,
    pub health: Health,
    /// `health == Up && enabled`: may receive traffic.
    pub ready: bool,
    pub enabled: bool,
    pub monitor_count: usize,
    pub limit: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RoutingTable {
    /// Raised by one on every publish that changed something; never on a no-op.
    pub generation: u64,
    pub nodes: Vec<RouteNode>,
    /// Active monitor id → index into `nodes` of its effective node.
    pub monitors: HashMap<MonitorId, usize>,
    pub primary: Option<String>,
    pub setup_complete: bool,
}

impl RoutingTable {
    pub fn node(&self, id: &str) -> Option<&RouteNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn node_of_monitor(&self, monitor: MonitorId) -> Option<&RouteNode> {
        self.monitors.get(&monitor).map(|&i| &self.nodes[i])
    }

    /// Equal but for the generation: publishing it again would change nothing.
    pub fn same_content(&self, other: &RoutingTable) -> bool {
        self.nodes == other.nodes
            && self.monitors == other.monitors
            && self.primary == other.primary
            && self.setup_complete == other.setup_complete
    }
}
