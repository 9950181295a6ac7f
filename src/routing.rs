//! The routing snapshot: an immutable table of where traffic and monitors go,
//! published by the ClusterActor and read lock-free by the request path.

use crate::health::Health;
use crate::placement::MonitorId;
use arc_swap::ArcSwap;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;

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

    fn same_content(&self, other: &RoutingTable) -> bool {
        self.nodes == other.nodes
            && self.monitors == other.monitors
            && self.primary == other.primary
            && self.setup_complete == other.setup_complete
    }
}

/// The single writer of the snapshot. Not `Clone`: only the ClusterActor holds one.
pub struct RoutingPublisher {
    current: Arc<ArcSwap<RoutingTable>>,
    /// Announces each new generation to long-lived connections (websockets),
    /// which must end when their node leaves; requests never wait on it.
    generations: watch::Sender<u64>,
}

/// A cheap, cloneable, lock-free view of the latest published snapshot.
#[derive(Clone)]
pub struct RoutingReader {
    current: Arc<ArcSwap<RoutingTable>>,
    generations: watch::Receiver<u64>,
}

impl RoutingPublisher {
    pub fn new() -> Self {
        RoutingPublisher {
            current: Arc::new(ArcSwap::from_pointee(RoutingTable::default())),
            generations: watch::Sender::new(0),
        }
    }

    pub fn reader(&self) -> RoutingReader {
        RoutingReader { current: self.current.clone(), generations: self.generations.subscribe() }
    }

    /// Publishes `table` under the next generation if it differs from the current
    /// snapshot; returns whether it did.
    pub fn publish(&self, mut table: RoutingTable) -> bool {
        let current = self.current.load();
        if current.same_content(&table) {
            return false;
        }
        table.generation = current.generation + 1;
        let generation = table.generation;
        self.current.store(Arc::new(table));
        self.generations.send_replace(generation);
        true
    }
}

impl Default for RoutingPublisher {
    fn default() -> Self {
        Self::new()
    }
}

impl RoutingReader {
    pub fn load(&self) -> Arc<RoutingTable> {
        self.current.load_full()
    }

    /// A receiver that wakes on every new generation.
    pub fn generations(&self) -> watch::Receiver<u64> {
        self.generations.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(count: usize) -> RoutingTable {
        RoutingTable {
            nodes: vec![RouteNode {
                id: "a".into(),
                host: Some("h:1".into()),
                health: Health::Up,
                ready: true,
                enabled: true,
                monitor_count: count,
                limit: 10,
            }],
            ..RoutingTable::default()
        }
    }

    #[test]
    fn publishing_the_same_content_keeps_the_generation() {
        let publisher = RoutingPublisher::new();
        let reader = publisher.reader();
        assert!(publisher.publish(table(1)));
        assert_eq!(reader.load().generation, 1);
        assert!(!publisher.publish(table(1)));
        assert_eq!(reader.load().generation, 1);
        assert!(publisher.publish(table(2)));
        assert_eq!(reader.load().generation, 2);
        assert_eq!(reader.load().node("a").unwrap().monitor_count, 2);
    }
}
