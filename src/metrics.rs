//! Prometheus metrics, rendered in the text exposition format at `/lb/metrics`.
//!
//! Writers never share a lock: the supervisor's counters are written from the
//! actors' thread only, and each proxy worker owns a shard of atomics that it
//! alone writes (a lock is taken only to add a node and status pair the worker
//! has not seen before, or by a scrape).

use crate::core::health::Health;
use crate::core::routing::RoutingTable;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Upper bounds, in seconds, of the latency histogram buckets.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Clone, Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, value: Duration) {
        let seconds = value.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&upper| seconds <= upper) {
            self.counts[i] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    /// `labels` is empty or `key="value",`-style pairs without braces.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (upper, count) in BUCKETS.iter().zip(self.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{upper}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = |l: &str| if l.is_empty() { String::new() } else { format!("{{{l}}}") };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
}

#[derive(Default)]
struct Supervision {
    transitions: BTreeMap<(String, &'static str), u64>,
    /// Down verdicts on timeouts alone held back by the ejection budget, by node.
    held: BTreeMap<String, u64>,
    moves: BTreeMap<&'static str, u64>,
    probe_latency: BTreeMap<String, Histogram>,
    decisions: Histogram,
    failed_decisions: u64,
    /// This replica holds the leader lease.
    leading: bool,
    leader_changes: u64,
    fenced_decisions: u64,
}

/// A latency histogram that one writer fills with atomics and a scrape reads.
#[derive(Default)]
struct AtomicHistogram {
    counts: [AtomicU64; BUCKETS.len()],
    nanos: AtomicU64,
    count: AtomicU64,
}

impl AtomicHistogram {
    fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&upper| seconds <= upper) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.nanos.fetch_add(u64::try_from(value.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self) -> Histogram {
        Histogram {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum: self.nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// One proxy worker's counters, as the scrape reads them.
#[derive(Default)]
struct ProxyShard {
    /// Each node and status pair the worker has answered, with its count.
    requests: Mutex<Vec<(String, u16, Arc<AtomicU64>)>>,
    latency: AtomicHistogram,
}

/// A proxy worker's handle on its shard (one thread: no lock on the request path).
pub struct ProxyStats {
    shard: Arc<ProxyShard>,
    counters: RefCell<HashMap<String, Vec<(u16, Arc<AtomicU64>)>>>,
}

impl ProxyStats {
    pub fn request(&self, node: &str, status: u16, took: Duration) {
        self.shard.latency.observe(took);
        let mut counters = self.counters.borrow_mut();
        if let Some((_, count)) = counters.get(node).and_then(|by_status| by_status.iter().find(|(s, _)| *s == status)) {
            count.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let count = Arc::new(AtomicU64::new(1));
        lock(&self.shard.requests).push((node.to_owned(), status, count.clone()));
        counters.entry(node.to_owned()).or_default().push((status, count));
    }
}

#[derive(Default)]
pub struct Metrics {
    supervision: Mutex<Supervision>,
    shards: Mutex<Vec<Arc<ProxyShard>>>,
    websockets: AtomicI64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn health_label(h: Health) -> &'static str {
    match h {
        Health::Up => "up",
        Health::Down => "down",
        Health::Unknown => "unknown",
    }
}

/// Escapes a label value for the text format.
fn escaped(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    pub fn transition(&self, node: &str, to: Health) {
        *lock(&self.supervision).transitions.entry((node.to_owned(), health_label(to))).or_default() += 1;
    }

    pub fn held(&self, node: &str) {
        *lock(&self.supervision).held.entry(node.to_owned()).or_default() += 1;
    }

    pub fn moved(&self, reason: &'static str, count: usize) {
        *lock(&self.supervision).moves.entry(reason).or_default() += count as u64;
    }

    pub fn probed(&self, node: &str, took: Duration) {
        lock(&self.supervision).probe_latency.entry(node.to_owned()).or_default().observe(took);
    }

    /// This replica started or stopped leading.
    pub fn leading(&self, leading: bool) {
        let mut s = lock(&self.supervision);
        s.leading = leading;
        s.leader_changes += 1;
    }

    /// A decision the lease refused: nothing was written.
    pub fn fenced(&self) {
        lock(&self.supervision).fenced_decisions += 1;
    }

    pub fn decided(&self, took: Duration, committed: bool) {
        let mut s = lock(&self.supervision);
        s.decisions.observe(took);
        if !committed {
            s.failed_decisions += 1;
        }
    }

    /// A new shard for one proxy worker.
    /// A new proxy worker's counters.
    pub fn shard(&self) -> ProxyStats {
        let shard = Arc::new(ProxyShard::default());
        lock(&self.shards).push(shard.clone());
        ProxyStats { shard, counters: RefCell::default() }
    }

    /// Counts an open websocket until the returned guard is dropped.
    pub fn websocket(self: &Arc<Self>) -> WebsocketGuard {
        self.websockets.fetch_add(1, Ordering::Relaxed);
        WebsocketGuard(self.clone())
    }

    pub fn render(&self, table: &RoutingTable) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP kuma_cluster_node_up Whether probes find the node healthy.");
        let _ = writeln!(out, "# TYPE kuma_cluster_node_up gauge");
        for n in &table.nodes {
            let _ = writeln!(out, "kuma_cluster_node_up{{node=\"{}\"}} {}", escaped(&n.id), u8::from(n.health == Health::Up));
        }
        let _ = writeln!(out, "# HELP kuma_cluster_node_ready Whether the node takes traffic and monitors.");
        let _ = writeln!(out, "# TYPE kuma_cluster_node_ready gauge");
        for n in &table.nodes {
            let _ = writeln!(out, "kuma_cluster_node_ready{{node=\"{}\"}} {}", escaped(&n.id), u8::from(n.ready));
        }
        let _ = writeln!(out, "# HELP kuma_cluster_node_monitors Active monitors the node runs.");
        let _ = writeln!(out, "# TYPE kuma_cluster_node_monitors gauge");
        for n in &table.nodes {
            let _ = writeln!(out, "kuma_cluster_node_monitors{{node=\"{}\"}} {}", escaped(&n.id), n.monitor_count);
        }
        {
            let s = lock(&self.supervision);
            let _ = writeln!(out, "# HELP kuma_cluster_node_transitions_total Health transitions by node and new state.");
            let _ = writeln!(out, "# TYPE kuma_cluster_node_transitions_total counter");
            for ((node, to), count) in &s.transitions {
                let _ = writeln!(out, "kuma_cluster_node_transitions_total{{node=\"{}\",to=\"{to}\"}} {count}", escaped(node));
            }
            let _ = writeln!(out, "# HELP kuma_cluster_ejections_held_total Down verdicts on timeouts alone held back: too many nodes looked dead at once.");
            let _ = writeln!(out, "# TYPE kuma_cluster_ejections_held_total counter");
            for (node, count) in &s.held {
                let _ = writeln!(out, "kuma_cluster_ejections_held_total{{node=\"{}\"}} {count}", escaped(node));
            }
            let _ = writeln!(out, "# HELP kuma_cluster_moves_total Monitor moves committed, by reason.");
            let _ = writeln!(out, "# TYPE kuma_cluster_moves_total counter");
            for (reason, count) in &s.moves {
                let _ = writeln!(out, "kuma_cluster_moves_total{{reason=\"{reason}\"}} {count}");
            }
            let _ = writeln!(out, "# HELP kuma_cluster_probe_duration_seconds Health probe latency by node.");
            let _ = writeln!(out, "# TYPE kuma_cluster_probe_duration_seconds histogram");
            for (node, h) in &s.probe_latency {
                h.render(&mut out, "kuma_cluster_probe_duration_seconds", &format!("node=\"{}\"", escaped(node)));
            }
            let _ = writeln!(out, "# HELP kuma_cluster_decision_duration_seconds Decision transactions, read to commit.");
            let _ = writeln!(out, "# TYPE kuma_cluster_decision_duration_seconds histogram");
            s.decisions.render(&mut out, "kuma_cluster_decision_duration_seconds", "");
            let _ = writeln!(out, "# HELP kuma_cluster_decisions_failed_total Decisions rolled back by a database error.");
            let _ = writeln!(out, "# TYPE kuma_cluster_decisions_failed_total counter");
            let _ = writeln!(out, "kuma_cluster_decisions_failed_total {}", s.failed_decisions);
            let _ = writeln!(out, "# HELP kuma_cluster_is_leader Whether this replica holds the leader lease.");
            let _ = writeln!(out, "# TYPE kuma_cluster_is_leader gauge");
            let _ = writeln!(out, "kuma_cluster_is_leader {}", u8::from(s.leading));
            let _ = writeln!(out, "# HELP kuma_cluster_leader_changes_total Times this replica started or stopped leading.");
            let _ = writeln!(out, "# TYPE kuma_cluster_leader_changes_total counter");
            let _ = writeln!(out, "kuma_cluster_leader_changes_total {}", s.leader_changes);
            let _ = writeln!(out, "# HELP kuma_cluster_fenced_decisions_total Decisions the lease refused because this replica no longer led: nothing written.");
            let _ = writeln!(out, "# TYPE kuma_cluster_fenced_decisions_total counter");
            let _ = writeln!(out, "kuma_cluster_fenced_decisions_total {}", s.fenced_decisions);
        }
        let (mut requests, mut latency) = (BTreeMap::<(String, u16), u64>::new(), Histogram::default());
        for shard in lock(&self.shards).iter() {
            for (node, status, count) in lock(&shard.requests).iter() {
                *requests.entry((node.clone(), *status)).or_default() += count.load(Ordering::Relaxed);
            }
            latency.merge(&shard.latency.read());
        }
        let _ = writeln!(out, "# HELP kuma_cluster_proxy_requests_total Proxied requests by node and status.");
        let _ = writeln!(out, "# TYPE kuma_cluster_proxy_requests_total counter");
        for ((node, status), count) in &requests {
            let _ = writeln!(out, "kuma_cluster_proxy_requests_total{{node=\"{}\",status=\"{status}\"}} {count}", escaped(node));
        }
        let _ = writeln!(out, "# HELP kuma_cluster_proxy_duration_seconds Time to the response head of proxied requests.");
        let _ = writeln!(out, "# TYPE kuma_cluster_proxy_duration_seconds histogram");
        latency.render(&mut out, "kuma_cluster_proxy_duration_seconds", "");
        let _ = writeln!(out, "# HELP kuma_cluster_websockets_open Websocket connections being proxied.");
        let _ = writeln!(out, "# TYPE kuma_cluster_websockets_open gauge");
        let _ = writeln!(out, "kuma_cluster_websockets_open {}", self.websockets.load(Ordering::Relaxed));
        out
    }
}

pub struct WebsocketGuard(Arc<Metrics>);

impl Drop for WebsocketGuard {
    fn drop(&mut self) {
        self.0.websockets.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets_with_sum_and_count() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(9));
        let mut out = String::new();
        h.render(&mut out, "x", "node=\"a\"");
        assert!(out.contains("x_bucket{node=\"a\",le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{node=\"a\",le=\"0.005\"} 2\n"));
        assert!(out.contains("x_bucket{node=\"a\",le=\"5\"} 2\n"));
        assert!(out.contains("x_bucket{node=\"a\",le=\"+Inf\"} 3\n"));
        assert!(out.contains("x_count{node=\"a\"} 3\n"));
    }

    #[test]
    fn proxy_shards_are_merged_at_scrape_time() {
        let metrics = Arc::new(Metrics::default());
        let (a, b) = (metrics.shard(), metrics.shard());
        a.request("node1", 200, Duration::from_millis(1));
        b.request("node1", 200, Duration::from_millis(1));
        b.request("node2", 502, Duration::from_millis(1));
        b.request("node2", 502, Duration::from_millis(1));
        let guard = metrics.websocket();
        let out = metrics.render(&RoutingTable::default());
        assert!(out.contains("kuma_cluster_proxy_requests_total{node=\"node1\",status=\"200\"} 2\n"), "{out}");
        assert!(out.contains("kuma_cluster_proxy_requests_total{node=\"node2\",status=\"502\"} 2\n"));
        assert!(out.contains("kuma_cluster_proxy_duration_seconds_count 4\n"));
        assert!(out.contains("kuma_cluster_proxy_duration_seconds_sum 0.004\n"), "{out}");
        assert!(out.contains("kuma_cluster_websockets_open 1\n"));
        drop(guard);
        assert!(metrics.render(&RoutingTable::default()).contains("kuma_cluster_websockets_open 0\n"));
    }
}
