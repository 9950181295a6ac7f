//! Publishes the routing snapshot: one writer (the ClusterActor), lock-free
//! readers on the request path.

use crate::core::routing::RoutingTable;
use arc_swap::ArcSwap;
use std::sync::Arc;
use tokio::sync::watch;

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

    /// The current snapshot without taking a reference on it (no count that
    /// every thread shares is touched): for a quick look or comparison.
    pub fn peek(&self) -> arc_swap::Guard<Arc<RoutingTable>> {
        self.current.load()
    }

    /// A receiver that wakes on every new generation.
    pub fn generations(&self) -> watch::Receiver<u64> {
        self.generations.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::health::Health;
    use crate::core::routing::RouteNode;

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
