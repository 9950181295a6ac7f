//! Placement: which node each monitor should run on. Pure functions over a
//! [`ClusterView`]; nothing here does IO or reads a clock.
//!
//! Required properties (checked by the property tests at the bottom):
//! 1. **Coverage.** When at least one node is ready, every active monitor ends on
//!    exactly one ready node, except monitors whose node awaits its first verdict
//!    (they stay put until it has one).
//! 2. **Capacity.** A node is given monitors beyond its limit only when every
//!    candidate node is already at or above its own limit.
//! 3. **No needless moves.** A monitor moves only when its node is not ready, or
//!    when it returns to the node it was displaced from; each moves at most once.
//! 4. **Stability.** Planning again on the result of a plan changes nothing.
//! 5. **No ready node, no moves.** The monitors that need a node are reported as
//!    stranded instead, so the caller can say so once.
//!
//! Rebalancing ([`plan_rebalance`]) has its own:
//! 6. **Only free monitors move**: active, not pinned, not waiting to return to
//!    a displaced origin, and only between ready, stable nodes.
//! 7. **Even**: without a move cap, no node ends more than one above the least
//!    loaded while it still holds a monitor that could move.
//! 8. **Few moves**: never more than each node's load above the even share,
//!    summed; never fewer than its load above the rounded-up share, summed.
//! 9. **Stable**: rebalancing a balanced cluster moves nothing.

use crate::core::health::Health;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

pub type MonitorId = u32;

/// Why a monitor left the node it ran on; stored in the move ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    Failover,
    Drain,
    Manual,
    Rebalance,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Failover => "failover",
            Reason::Drain => "drain",
            Reason::Manual => "manual",
            Reason::Rebalance => "rebalance",
        }
    }

    pub fn parse(text: &str) -> Option<Reason> {
        [Reason::Failover, Reason::Drain, Reason::Manual, Reason::Rebalance]
            .into_iter()
            .find(|r| r.as_str() == text)
    }

    /// Displacements are undone when their origin recovers; operator choices are not.
    pub fn is_displacement(self) -> bool {
        matches!(self, Reason::Failover | Reason::Drain)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub id: String,
    pub health: Health,
    /// Administrative flag (`node.active`); probes never change it.
    pub enabled: bool,
    /// Not flap-damped: may be given monitors that are moved.
    pub stable: bool,
    /// Up for the whole hold-down and not damped: may get its displaced monitors back.
    pub settled: bool,
    pub limit: usize,
    /// New active monitors it may be given in this decision: its reconcile must
    /// end before its next cron (see `core::waves`). `usize::MAX` is no bound.
    pub budget: usize,
    /// The part of `budget` that monitors leaving a live node may take: they
    /// are stopped there before they start here, so they need more time.
    pub handover_budget: usize,
    /// No reconcile of ours runs on it: monitors handed over from it now are
    /// stopped at once, before their new node starts them. Handovers from a
    /// node that is not idle wait for a later wave.
    pub idle: bool,
}

impl NodeView {
    pub fn ready(&self) -> bool {
        self.health == Health::Up && self.enabled
    }
}

/// Where a displaced monitor came from and the open ledger rows that say so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub node: String,
    /// The open rows of its failover chain, oldest first.
    pub rows: Vec<i64>,
    /// The nodes the chain passed through before the current one: `rows[k]`
    /// took the monitor to `via[k]`.
    pub via: Vec<String>,
}

impl Origin {
    /// The chain's rows to close when the monitor goes back to `node`: all of
    /// them for the origin, those after its stop for a node the chain passed
    /// through; `None` when `node` is not on the chain. Going back is never a
    /// new displacement, so a chain never visits a node twice and has fewer
    /// rows than there are nodes.
    pub fn back_to(&self, node: &str) -> Option<Vec<i64>> {
        if node == self.node {
            return Some(self.rows.clone());
        }
        let stop = self.via.iter().position(|v| v == node)?;
        Some(self.rows.get(stop + 1..).unwrap_or_default().to_vec())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitorView {
    pub id: MonitorId,
    pub active: bool,
    pub home: Option<String>,
    pub assigned: Option<String>,
    pub origin: Option<Origin>,
    /// An operator pinned it where it is: rebalancing leaves it.
    pub pinned: bool,
}

impl MonitorView {
    /// `COALESCE(assigned_node, node_id)`: the node that runs this monitor.
    pub fn effective(&self) -> Option<&str> {
        self.assigned.as_deref().or(self.home.as_deref())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub nodes: Vec<NodeView>,
    pub monitors: Vec<MonitorView>,
    /// Place active monitors with neither a home nor an override. Off by
    /// default: in the nodes' UI that is the operator's "NA", run nowhere.
    pub place_unassigned: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoveKind {
    /// Leaves a node that cannot run it; opens a ledger row with this reason.
    Displace(Reason),
    /// Returns to its origin; closes the origin's ledger rows.
    Revert { closes: Vec<i64> },
    /// An operator's choice; opens a `manual` ledger row, which recovery never
    /// reverts. A pinned one is also left alone by rebalancing.
    Manual { pinned: bool },
    /// Evening out load; opens a `rebalance` ledger row, never reverted.
    Rebalance,
}

impl MoveKind {
    /// The reason of the ledger row this move opens; a revert opens none.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            MoveKind::Displace(reason) => Some(*reason),
            MoveKind::Manual { .. } => Some(Reason::Manual),
            MoveKind::Rebalance => Some(Reason::Rebalance),
            MoveKind::Revert { .. } => None,
        }
    }

    /// Its name in metrics and in the event log.
    pub fn label(&self) -> &'static str {
        self.reason().map_or("revert", Reason::as_str)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub monitor: MonitorId,
    pub from: Option<String>,
    pub to: String,
    /// The new `assigned_node`: `None` when the monitor returns to its home node.
    pub assigned: Option<String>,
    pub kind: MoveKind,
}

impl Move {
    /// Moves `m` from where it runs now to `to`; the override is cleared when
    /// `to` is its home, so a monitor at home never carries one.
    pub fn new(m: &MonitorView, to: String, kind: MoveKind) -> Move {
        Move {
            monitor: m.id,
            from: m.effective().map(str::to_owned),
            assigned: (m.home.as_deref() != Some(to.as_str())).then(|| to.clone()),
            to,
            kind,
        }
    }

    /// Its ledger row is recorded closed: a displaced monitor that had no node
    /// has nowhere to return to, and an operator's unpinned move home leaves
    /// nothing to remember ([`read_ledger`] would close it).
    pub fn closed_at_once(&self) -> bool {
        match self.kind {
            MoveKind::Displace(_) => self.from.is_none(),
            MoveKind::Manual { pinned } => self.assigned.is_none() && !pinned,
            MoveKind::Rebalance => self.assigned.is_none(),
            MoveKind::Revert { .. } => false,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub moves: Vec<Move>,
    /// Active monitors that need a node while none is ready.
    pub stranded: Vec<MonitorId>,
    /// Moves that had to exceed a limit because every candidate was full.
    pub over_capacity: usize,
    /// Monitors that must move but no ready node has budget left in this
    /// decision: a later wave moves them.
    pub deferred: usize,
}

/// One open ledger row, as the placement needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenMove {
    pub id: i64,
    pub monitor: MonitorId,
    pub from: Option<String>,
    pub to: String,
    pub reason: Reason,
    pub pinned: bool,
}

/// What the open ledger rows say about each monitor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerReading {
    pub origins: HashMap<MonitorId, Origin>,
    /// Monitors whose latest operator move pinned them where they still are.
    pub pinned: std::collections::HashSet<MonitorId>,
    /// Rows that no longer describe where a monitor is (it was moved by someone
    /// else, a later operator move superseded them, its monitor was deleted, or
    /// its origin node was): closed without moving anything.
    pub stale: Vec<i64>,
    /// Origin nodes that no longer exist, with the rows closed for each: their
    /// monitors now belong where they run.
    pub orphaned: BTreeMap<String, usize>,
}

/// Where an existing monitor runs, as the ledger needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Whereabouts<'a> {
    /// Its node, if any.
    pub node: Option<&'a str>,
    /// It runs there by an override, not at home.
    pub overridden: bool,
}

/// Reads open ledger rows (any order). A monitor's origin is the `from` of the
/// first displacement after the last operator move, valid only while the latest
/// row still names the node the monitor runs on and the origin still exists.
/// Only the last operator move stays open, and only while it still describes
/// the monitor: it is where the monitor runs by an override (or pinned there),
/// or where its failover chain began. So each open row belongs to a monitor
/// that exists and is displaced (by an override, a pin or a failover), with at
/// most one operator row plus one displacement per node it failed over from.
/// `whereabouts` is `None` for a monitor that no longer exists.
pub fn read_ledger<'a>(
    rows: &[OpenMove],
    whereabouts: impl Fn(MonitorId) -> Option<Whereabouts<'a>>,
    node_exists: impl Fn(&str) -> bool,
) -> LedgerReading {
    let mut by_monitor: HashMap<MonitorId, Vec<&OpenMove>> = HashMap::new();
    for row in rows {
        by_monitor.entry(row.monitor).or_default().push(row);
    }
    let mut reading = LedgerReading::default();
    for (monitor, mut rows) in by_monitor {
        rows.sort_by_key(|r| r.id);
        let Some(Whereabouts { node: current, overridden }) = whereabouts(monitor) else {
            reading.stale.extend(rows.iter().map(|r| r.id));
            continue;
        };
        let tail_start = rows.iter().rposition(|r| !r.reason.is_displacement()).map_or(0, |i| i + 1);
        let (head, tail) = rows.split_at(tail_start);
        let (operator, superseded) = match head.split_last() {
            Some((last, earlier)) => (Some(*last), earlier),
            None => (None, &[][..]),
        };
        reading.stale.extend(superseded.iter().map(|r| r.id));
        let chain = match (tail.first(), tail.last()) {
            (Some(first), Some(last)) if current == Some(last.to.as_str()) => first.from.as_deref(),
            _ => None,
        };
        let valid = chain.filter(|origin| node_exists(origin));
        match chain {
            Some(origin) if valid.is_some() => {
                reading.origins.insert(
                    monitor,
                    Origin {
                        node: origin.to_owned(),
                        rows: tail.iter().map(|r| r.id).collect(),
                        via: tail[..tail.len() - 1].iter().map(|r| r.to.clone()).collect(),
                    },
                );
            }
            Some(origin) => {
                *reading.orphaned.entry(origin.to_owned()).or_default() += tail.len();
                reading.stale.extend(tail.iter().map(|r| r.id));
            }
            None => reading.stale.extend(tail.iter().map(|r| r.id)),
        }
        let Some(operator) = operator else { continue };
        // the operator's choice is where the monitor runs, or where its failover chain began
        let chose = Some(operator.to.as_str());
        let describes = if tail.is_empty() {
            current == chose && (overridden || operator.pinned)
        } else {
            valid.is_some() && valid == chose
        };
        if !describes {
            reading.stale.push(operator.id);
        } else if operator.pinned && tail.is_empty() {
            reading.pinned.insert(monitor);
        }
    }
    reading.stale.sort_unstable();
    reading
}

/// Computes every move the cluster needs now: returns to recovered origins
/// first (those leaving a node that cannot run them before the others, and
/// again while one return makes room for another), then moves off nodes that
/// cannot run monitors (failover, drain).
///
/// A node gets at most its remaining [`NodeView::budget`] of new active
/// monitors, and of those leaving a live node at most its
/// [`NodeView::handover_budget`]; what does not fit waits for a later decision
/// (`deferred`).
pub fn plan(view: &ClusterView) -> Plan {
    let index: HashMap<&str, usize> = view.nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), i)).collect();
    let mut loads = vec![0usize; view.nodes.len()];
    for m in view.monitors.iter().filter(|m| m.active) {
        if let Some(&i) = m.effective().and_then(|id| index.get(id)) {
            loads[i] += 1;
        }
    }
    let mut gained = vec![0usize; view.nodes.len()];
    let mut releases = Releases::new(view.nodes.len());
    let mut plan = Plan::default();
    let mut moved = vec![false; view.monitors.len()];
    let current_of = |m: &MonitorView| m.effective().and_then(|id| index.get(id)).copied();
    let cannot_run = |m: &MonitorView| {
        current_of(m).map_or(true, |i| !view.nodes[i].ready() && view.nodes[i].health != Health::Unknown)
    };

    // returns the monitors it moved back; one return can make room for another
    let revert = |urgent: bool,
                  plan: &mut Plan,
                  loads: &mut Vec<usize>,
                  gained: &mut Vec<usize>,
                  releases: &mut Releases,
                  moved: &mut Vec<bool>| {
        let before = plan.moves.len();
        for (k, m) in view.monitors.iter().enumerate() {
            if moved[k] || (m.active && cannot_run(m)) != urgent {
                continue;
            }
            let Some(origin) = &m.origin else { continue };
            let Some(&o) = index.get(origin.node.as_str()) else { continue };
            let node = &view.nodes[o];
            if !(node.ready() && node.stable && node.settled) || m.effective() == Some(node.id.as_str()) {
                continue;
            }
            // one leaving a live node (in service or drained) is stopped there
            // first, once no reconcile runs there; one leaving a dead node is not
            let live = current_of(m).filter(|&i| view.nodes[i].health == Health::Up);
            if m.active && live.is_some_and(|i| !view.nodes[i].idle || !releases.allow(i, node)) {
                continue;
            }
            let budget = if live.is_some() { node.handover_budget } else { node.budget };
            if m.active && (loads[o] >= node.limit || gained[o] >= budget) {
                continue;
            }
            if m.active {
                if let Some(i) = live {
                    releases.book(i, node);
                }
                shift_load(loads, current_of(m), o);
                gained[o] += 1;
            }
            moved[k] = true;
            plan.moves.push(Move::new(m, node.id.clone(), MoveKind::Revert { closes: origin.rows.clone() }));
        }
        plan.moves.len() > before
    };
    revert(true, &mut plan, &mut loads, &mut gained, &mut releases, &mut moved);
    // a return home frees room on the node it leaves: repeat until none is left
    while revert(false, &mut plan, &mut loads, &mut gained, &mut releases, &mut moved) {}

    let stable: Vec<usize> = (0..view.nodes.len()).filter(|&i| view.nodes[i].ready() && view.nodes[i].stable).collect();
    let candidates = if stable.is_empty() {
        (0..view.nodes.len()).filter(|&i| view.nodes[i].ready()).collect()
    } else {
        stable
    };

    for (k, m) in view.monitors.iter().enumerate() {
        if !m.active || moved[k] || (m.effective().is_none() && !view.place_unassigned) {
            continue;
        }
        let current = current_of(m).map(|i| &view.nodes[i]);
        let reason = match current {
            Some(n) if n.ready() || n.health == Health::Unknown => continue,
            Some(n) if n.health == Health::Up => Reason::Drain,
            _ => Reason::Failover,
        };
        if candidates.is_empty() {
            plan.stranded.push(m.id);
            continue;
        }
        // a drained node still runs them, and stops them first, once idle
        if reason == Reason::Drain && !current.is_some_and(|n| n.idle) {
            plan.deferred += 1;
            continue;
        }
        let drained = current_of(m).filter(|_| reason == Reason::Drain);
        let open: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&i| match drained {
                Some(from) => gained[i] < view.nodes[i].handover_budget && releases.allow(from, &view.nodes[i]),
                None => gained[i] < view.nodes[i].budget,
            })
            .collect();
        let Some(target) = pick_target(&open, &loads, &view.nodes) else {
            plan.deferred += 1;
            continue;
        };
        if loads[target] >= view.nodes[target].limit {
            plan.over_capacity += 1;
        }
        if let Some(from) = drained {
            releases.book(from, &view.nodes[target]);
        }
        shift_load(&mut loads, current_of(m), target);
        gained[target] += 1;
        moved[k] = true;
        // back to a node on its failover chain: the rows since close, none opens
        let to = view.nodes[target].id.clone();
        let kind = match m.origin.as_ref().and_then(|o| o.back_to(&to)) {
            Some(closes) => MoveKind::Revert { closes },
            None => MoveKind::Displace(reason),
        };
        plan.moves.push(Move::new(m, to, kind));
    }

    plan
}

/// Monitors handed over by live nodes in one decision. A live old owner stops
/// all it hands over in one reconcile, at about twice the start rate, before
/// any new owner starts its share; a new owner's handover budget leaves a
/// third of its window for those stops. So a node hands over no more monitors
/// than the handover budget of any node it hands them to.
struct Releases {
    released: Vec<usize>,
    cap: Vec<usize>,
}

impl Releases {
    fn new(nodes: usize) -> Self {
        Releases { released: vec![0; nodes], cap: vec![usize::MAX; nodes] }
    }

    /// Whether `from` may hand one more monitor to `to`.
    fn allow(&self, from: usize, to: &NodeView) -> bool {
        self.released[from] < self.cap[from].min(to.handover_budget)
    }

    fn book(&mut self, from: usize, to: &NodeView) {
        self.released[from] += 1;
        self.cap[from] = self.cap[from].min(to.handover_budget);
    }
}

/// Books one active monitor moving from `from` (when it was on a known node) to `to`.
fn shift_load(loads: &mut [usize], from: Option<usize>, to: usize) {
    loads[to] += 1;
    if let Some(from) = from {
        loads[from] -= 1;
    }
}

/// The least-loaded candidate below its limit, or the least-loaded of all when
/// every candidate is full. Ties go to the earlier node, so plans are repeatable.
fn pick_target(candidates: &[usize], loads: &[usize], nodes: &[NodeView]) -> Option<usize> {
    let below = candidates.iter().copied().filter(|&i| loads[i] < nodes[i].limit).min_by_key(|&i| loads[i]);
    below.or_else(|| candidates.iter().copied().min_by_key(|&i| loads[i]))
}

/// Evens out active monitors over the ready, stable nodes with as few moves as
/// possible (properties 6 to 9), at most `max_moves` of them. `from_scratch`
/// first sends every free monitor whose home can take it back home, clearing
/// overrides, then evens out the rest.
/// Each eligible node's even share of the load on them, by water-filling: a
/// node whose limit is below the share gets its limit, the others split the
/// rest, and the heaviest of them keep the spare monitors, which needs the
/// fewest moves. Planning again after the moves gives the same targets.
fn even_targets(nodes: &[usize], loads: &[usize], view: &ClusterView) -> Vec<usize> {
    let mut target = vec![0usize; view.nodes.len()];
    let mut total: usize = nodes.iter().map(|&i| loads[i]).sum();
    let mut by_limit = nodes.to_vec();
    by_limit.sort_by_key(|&i| (view.nodes[i].limit, i));
    let mut open = by_limit.as_slice();
    while let Some((&i, rest)) = open.split_first() {
        if view.nodes[i].limit >= total.div_ceil(open.len()) {
            break;
        }
        target[i] = view.nodes[i].limit;
        total -= view.nodes[i].limit;
        open = rest;
    }
    let mut by_load = open.to_vec();
    by_load.sort_by_key(|&i| (std::cmp::Reverse(loads[i]), i));
    let (share, extra) = (total / by_load.len().max(1), total % by_load.len().max(1));
    for (rank, &i) in by_load.iter().enumerate() {
        target[i] = share + usize::from(rank < extra);
    }
    target
}

pub fn plan_rebalance(view: &ClusterView, max_moves: Option<usize>, from_scratch: bool) -> Vec<Move> {
    let index: HashMap<&str, usize> = view.nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), i)).collect();
    let eligible: Vec<bool> = view.nodes.iter().map(|n| n.ready() && n.stable).collect();
    let node_of = |name: Option<&str>| name.and_then(|id| index.get(id)).copied();
    let cap = max_moves.unwrap_or(usize::MAX);
    // where each active monitor is now, and whether it may move: only from a
    // node that stops it at once
    let current: Vec<Option<usize>> = view.monitors.iter().map(|m| node_of(m.effective())).collect();
    let free = |k: usize| {
        let m = &view.monitors[k];
        m.active && !m.pinned && m.origin.is_none() && current[k].is_some_and(|i| eligible[i] && view.nodes[i].idle)
    };
    let mut placed = current.clone();
    let mut loads = vec![0usize; view.nodes.len()];
    for (k, m) in view.monitors.iter().enumerate() {
        if let (true, Some(i)) = (m.active, current[k]) {
            loads[i] += 1;
        }
    }
    let mut moves = 0;
    let mut gained = vec![0usize; view.nodes.len()];
    let mut releases = Releases::new(view.nodes.len());
    // rebalanced monitors leave a live node, which stops them first
    let room = |gained: &[usize], releases: &Releases, from: usize, i: usize| {
        gained[i] < view.nodes[i].handover_budget && releases.allow(from, &view.nodes[i])
    };
    if from_scratch {
        for k in (0..view.monitors.len()).filter(|&k| free(k)) {
            let home = node_of(view.monitors[k].home.as_deref());
            if let (Some(h), Some(c)) = (home, placed[k]) {
                if h != c && eligible[h] && loads[h] < view.nodes[h].limit && room(&gained, &releases, c, h) && moves < cap {
                    shift_load(&mut loads, Some(c), h);
                    releases.book(c, &view.nodes[h]);
                    gained[h] += 1;
                    placed[k] = Some(h);
                    moves += 1;
                }
            }
        }
    }

    let nodes: Vec<usize> = (0..view.nodes.len()).filter(|&i| eligible[i]).collect();
    if !nodes.is_empty() {
        let target = even_targets(&nodes, &loads, view);
        let mut by_load = nodes.clone();
        by_load.sort_by_key(|&i| (std::cmp::Reverse(loads[i]), i));
        for &from in &by_load {
            let mut candidates: Vec<usize> =
                (0..view.monitors.len()).filter(|&k| free(k) && placed[k] == Some(from)).collect();
            // monitors whose home is short of its share go first: they go home
            candidates.sort_by_key(|&k| {
                let home = node_of(view.monitors[k].home.as_deref());
                (!home.is_some_and(|h| h != from && eligible[h] && loads[h] < target[h]), view.monitors[k].id)
            });
            for k in candidates {
                if loads[from] <= target[from] || moves >= cap {
                    break;
                }
                let home = node_of(view.monitors[k].home.as_deref())
                    .filter(|&h| eligible[h] && loads[h] < target[h] && room(&gained, &releases, from, h));
                let to = home.or_else(|| {
                    nodes
                        .iter()
                        .copied()
                        .filter(|&i| loads[i] < target[i] && room(&gained, &releases, from, i))
                        .max_by_key(|&i| (target[i] - loads[i], std::cmp::Reverse(i)))
                });
                let Some(to) = to else { break };
                shift_load(&mut loads, Some(from), to);
                releases.book(from, &view.nodes[to]);
                gained[to] += 1;
                placed[k] = Some(to);
                moves += 1;
            }
        }
    }

    (0..view.monitors.len())
        .filter(|&k| placed[k] != current[k])
        .filter_map(|k| Some(Move::new(&view.monitors[k], view.nodes[placed[k]?].id.clone(), MoveKind::Rebalance)))
        .collect()
}

impl ClusterView {
    /// The view as it will be once `moves` have committed: assignments changed,
    /// reverted origins cleared and new displacements recorded.
    pub fn apply(&mut self, moves: &[Move]) {
        let position: HashMap<MonitorId, usize> = self.monitors.iter().enumerate().map(|(i, m)| (m.id, i)).collect();
        for mv in moves {
            let Some(&i) = position.get(&mv.monitor) else { continue };
            let m = &mut self.monitors[i];
            m.assigned = mv.assigned.clone();
            if let MoveKind::Manual { pinned } = mv.kind {
                m.pinned = pinned;
            } else if mv.kind == MoveKind::Rebalance {
                m.pinned = false;
            }
            match &mv.kind {
                MoveKind::Revert { closes } => match m.origin.as_mut() {
                    Some(o) if o.node != mv.to => match o.via.iter().position(|v| *v == mv.to) {
                        Some(stop) => {
                            o.via.truncate(stop);
                            o.rows.retain(|r| !closes.contains(r));
                        }
                        None => m.origin = None,
                    },
                    _ => m.origin = None,
                },
                MoveKind::Manual { .. } | MoveKind::Rebalance => m.origin = None,
                MoveKind::Displace(_) => match (m.origin.as_mut(), mv.from.clone()) {
                    (Some(o), Some(from)) => o.via.push(from),
                    (None, from) => m.origin = from.map(|node| Origin { node, rows: Vec::new(), via: Vec::new() }),
                    (Some(_), None) => {}
                },
            }
        }
    }

    /// Active monitors per node id, counted on effective nodes.
    pub fn loads(&self) -> HashMap<&str, usize> {
        let mut loads = HashMap::new();
        for m in self.monitors.iter().filter(|m| m.active) {
            if let Some(node) = m.effective() {
                *loads.entry(node).or_insert(0) += 1;
            }
        }
        loads
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(id: &str, health: Health) -> NodeView {
        NodeView {
            id: id.into(),
            health,
            enabled: true,
            stable: true,
            settled: true,
            limit: 1000,
            budget: usize::MAX,
            handover_budget: usize::MAX,
            idle: true,
        }
    }

    fn at_home(id: MonitorId, home: &str) -> MonitorView {
        MonitorView { id, active: true, home: Some(home.into()), assigned: None, origin: None, pinned: false }
    }

    /// Homed on `home`, running on `at`, displaced from `origin` by ledger row `row`.
    fn displaced(id: MonitorId, home: &str, at: &str, origin: &str, row: i64) -> MonitorView {
        MonitorView {
            assigned: Some(at.into()),
            origin: Some(Origin { node: origin.into(), rows: vec![row], via: Vec::new() }),
            ..at_home(id, home)
        }
    }

    #[test]
    fn a_down_nodes_monitors_spread_evenly_over_ready_nodes() {
        let mut view = ClusterView {
            place_unassigned: false,
            nodes: vec![node("a", Health::Down), node("b", Health::Up), node("c", Health::Up)],
            monitors: (0..10).map(|i| at_home(i, "a")).collect(),
        };
        view.monitors.push(at_home(100, "b"));
        let plan = plan(&view);
        assert_eq!(plan.moves.len(), 10);
        assert!(plan.moves.iter().all(|m| m.kind == MoveKind::Displace(Reason::Failover)));
        view.apply(&plan.moves);
        let loads = view.loads();
        assert_eq!((loads["b"], loads["c"]), (6, 5));
    }

    #[test]
    fn a_recovered_settled_origin_gets_its_monitors_back_home() {
        let mut view = ClusterView {
            place_unassigned: false,
            nodes: vec![node("a", Health::Up), node("b", Health::Up)],
            monitors: vec![displaced(1, "a", "b", "a", 7)],
        };
        let plan = plan(&view);
        assert_eq!(
            plan.moves,
            vec![Move {
                monitor: 1,
                from: Some("b".into()),
                to: "a".into(),
                assigned: None,
                kind: MoveKind::Revert { closes: vec![7] },
            }]
        );
        view.apply(&plan.moves);
        assert_eq!(view.monitors[0].effective(), Some("a"));
    }

    #[test]
    fn an_unsettled_origin_waits() {
        let mut a = node("a", Health::Up);
        a.settled = false;
        let view = ClusterView {
            place_unassigned: false,
            nodes: vec![a, node("b", Health::Up)],
            monitors: vec![displaced(1, "a", "b", "a", 7)],
        };
        assert_eq!(plan(&view), Plan::default());
    }

    #[test]
    fn a_revert_to_an_override_restores_the_override() {
        let view = ClusterView {
            place_unassigned: false,
            nodes: vec![node("a", Health::Up), node("b", Health::Up), node("c", Health::Up)],
            monitors: vec![displaced(1, "b", "c", "a", 3)],
        };
        assert_eq!(plan(&view).moves[0].assigned.as_deref(), Some("a"));
    }

    #[test]
    fn with_no_ready_node_nothing_moves_and_the_monitors_are_stranded() {
        let view = ClusterView {
            place_unassigned: false,
            nodes: vec![node("a", Health::Down), node("b", Health::Down)],
            monitors: vec![at_home(1, "a"), at_home(2, "b")],
        };
        let plan = plan(&view);
        assert!(plan.moves.is_empty());
        assert_eq!(plan.stranded, vec![1, 2]);
    }

    #[test]
    fn monitors_on_a_node_without_a_verdict_stay_put() {
        let view = ClusterView {
            place_unassigned: false,
            nodes: vec![node("a", Health::Unknown), node("b", Health::Up)],
            monitors: vec![at_home(1, "a")],
        };
        assert_eq!(plan(&view), Plan::default());
    }

    #[test]
    fn monitors_on_an_unknown_node_are_placed_and_unassigned_ones_only_when_asked() {
        let mut view = ClusterView {
            place_unassigned: false,
            nodes: vec![node("b", Health::Up)],
            monitors: vec![
                MonitorView { id: 1, active: true, home: None, assigned: None, origin: None, pinned: false },
                at_home(2, "ghost"),
            ],
        };
        let left = plan(&view);
        assert_eq!(left.moves.len(), 1, "the operator's NA stays");
        assert_eq!(left.moves[0].from.as_deref(), Some("ghost"));
        view.place_unassigned = true;
        let placed = plan(&view);
        assert_eq!(placed.moves.len(), 2);
        assert_eq!(placed.moves[0].from, None);
    }

    #[test]
    fn a_disabled_node_is_drained() {
        let mut a = node("a", Health::Up);
        a.enabled = false;
        let view = ClusterView { nodes: vec![a, node("b", Health::Up)], monitors: vec![at_home(1, "a")], place_unassigned: false };
        assert_eq!(plan(&view).moves[0].kind, MoveKind::Displace(Reason::Drain));
    }

    #[test]
    fn paused_monitors_are_not_moved_off_a_down_node() {
        let mut paused = at_home(1, "a");
        paused.active = false;
        let view = ClusterView { nodes: vec![node("a", Health::Down), node("b", Health::Up)], monitors: vec![paused], place_unassigned: false };
        assert_eq!(plan(&view), Plan::default());
    }

    #[test]
    fn a_damped_node_is_a_target_only_when_no_stable_node_is_ready() {
        let mut b = node("b", Health::Up);
        b.stable = false;
        let view = ClusterView {
            place_unassigned: false,
            nodes: vec![node("a", Health::Down), b.clone(), node("c", Health::Up)],
            monitors: (0..4).map(|i| at_home(i, "a")).collect(),
        };
        assert!(plan(&view).moves.iter().all(|m| m.to == "c"));
        let view = ClusterView { nodes: vec![node("a", Health::Down), b], monitors: vec![at_home(1, "a")], place_unassigned: false };
        assert_eq!(plan(&view).moves[0].to, "b");
    }

    #[test]
    fn full_nodes_are_skipped_while_another_has_room() {
        let mut b = node("b", Health::Up);
        b.limit = 1;
        let view = ClusterView {
            place_unassigned: false,
            nodes: vec![node("a", Health::Down), b, node("c", Health::Up)],
            monitors: vec![at_home(1, "a"), at_home(2, "a"), at_home(3, "b"), at_home(4, "c"), at_home(5, "c")],
        };
        let plan = plan(&view);
        assert!(plan.moves.iter().all(|m| m.to == "c"));
        assert_eq!(plan.over_capacity, 0);
    }

    #[test]
    fn rebalancing_moves_exactly_the_surplus_and_sends_monitors_home_first() {
        let mut monitors: Vec<MonitorView> = (0..10).map(|i| at_home(i, "a")).collect();
        // two of a's monitors are homed on c, where they go first
        for m in &mut monitors[8..] {
            m.home = Some("c".into());
            m.assigned = Some("a".into());
        }
        monitors.push(at_home(20, "c"));
        monitors.push(at_home(21, "c"));
        let view = ClusterView { nodes: vec![node("a", Health::Up), node("b", Health::Up), node("c", Health::Up)], monitors, place_unassigned: false };
        let moves = plan_rebalance(&view, None, false);
        assert_eq!(moves.len(), 6, "12 over 3 nodes: a gives up 6");
        assert!(moves.iter().all(|m| m.kind == MoveKind::Rebalance && m.from.as_deref() == Some("a")));
        let home: Vec<&Move> = moves.iter().filter(|m| m.to == "c").collect();
        assert_eq!(home.len(), 2);
        assert!(home.iter().all(|m| m.assigned.is_none()), "going home clears the override");
        let mut after = view.clone();
        after.apply(&moves);
        let loads = after.loads();
        assert_eq!((loads["a"], loads["b"], loads["c"]), (4, 4, 4));
        assert_eq!(plan_rebalance(&view, Some(2), false).len(), 2, "the cap holds");
    }

    #[test]
    fn rebalancing_leaves_pinned_and_returning_monitors_and_unready_nodes_alone() {
        let mut monitors: Vec<MonitorView> = (0..6).map(|i| at_home(i, "a")).collect();
        monitors[0].pinned = true;
        monitors[1].origin = Some(Origin { node: "c".into(), rows: vec![1], via: Vec::new() });
        let mut damped = node("d", Health::Up);
        damped.stable = false;
        let view = ClusterView {
            place_unassigned: false,
            nodes: vec![node("a", Health::Up), node("b", Health::Up), node("c", Health::Down), damped],
            monitors,
        };
        let moves = plan_rebalance(&view, None, false);
        assert_eq!(moves.len(), 3);
        assert!(moves.iter().all(|m| m.to == "b" && m.monitor > 1));
    }

    #[test]
    fn a_node_held_to_a_low_limit_leaves_the_rest_to_the_others_and_a_second_rebalance_moves_nothing() {
        // a: 9, b: 3, c: 5 but limited to 3; the even split is 7, 7, 3
        let limited = NodeView { limit: 3, ..node("c", Health::Up) };
        let monitors: Vec<MonitorView> = (0..17)
            .map(|i| at_home(i, match i { 0..=8 => "a", 9..=11 => "b", _ => "c" }))
            .collect();
        let mut view = ClusterView { nodes: vec![node("a", Health::Up), node("b", Health::Up), limited], monitors, place_unassigned: false };
        let moves = plan_rebalance(&view, None, false);
        view.apply(&moves);
        let loads = view.loads();
        assert_eq!((loads["a"], loads["b"], loads["c"]), (7, 7, 3));
        assert_eq!(moves.len(), 4, "the fewest moves");
        assert!(plan_rebalance(&view, None, false).is_empty(), "a balanced cluster stays put");
    }

    #[test]
    fn rebalancing_from_scratch_sends_free_monitors_home_first() {
        // even load, but every monitor away from home: swapped between a and b
        let monitors: Vec<MonitorView> = (0..4)
            .map(|i| {
                let (home, away) = if i < 2 { ("a", "b") } else { ("b", "a") };
                MonitorView { assigned: Some(away.into()), ..at_home(i, home) }
            })
            .collect();
        let view = ClusterView { nodes: vec![node("a", Health::Up), node("b", Health::Up)], monitors, place_unassigned: false };
        assert!(plan_rebalance(&view, None, false).is_empty(), "already even");
        let moves = plan_rebalance(&view, None, true);
        assert_eq!(moves.len(), 4);
        assert!(moves.iter().all(|m| m.assigned.is_none()), "every monitor goes home");
        assert_eq!(plan_rebalance(&view, Some(1), true).len(), 1, "the cap holds from scratch too");
    }

    fn open(id: i64, monitor: MonitorId, from: &str, to: &str, reason: Reason) -> OpenMove {
        OpenMove { id, monitor, from: Some(from.into()), to: to.into(), reason, pinned: false }
    }

    /// A monitor running on `node` by an override.
    fn away(node: &str) -> Whereabouts<'_> {
        Whereabouts { node: Some(node), overridden: true }
    }

    #[test]
    fn an_unpinned_operator_move_that_brought_a_monitor_home_leaves_nothing_open() {
        let rows = vec![open(1, 1, "a", "h", Reason::Rebalance), OpenMove { pinned: true, ..open(2, 2, "a", "h", Reason::Manual) }];
        let home = Whereabouts { node: Some("h"), overridden: false };
        let reading = read_ledger(&rows, |_| Some(home), |_| true);
        assert_eq!(reading.stale, vec![1], "a pin at home is remembered");
        assert!(reading.pinned.contains(&2));
    }

    #[test]
    fn the_ledger_origin_is_the_first_displacement_of_a_chain() {
        let rows = vec![open(2, 1, "b", "c", Reason::Failover), open(1, 1, "a", "b", Reason::Failover)];
        let reading = read_ledger(&rows, |_| Some(away("c")), |_| true);
        assert_eq!(reading.origins[&1], Origin { node: "a".into(), rows: vec![1, 2], via: vec!["b".into()] });
        assert!(reading.stale.is_empty());
    }

    #[test]
    fn an_operator_move_supersedes_earlier_displacements() {
        let rows = vec![open(1, 1, "a", "b", Reason::Failover), open(2, 1, "b", "c", Reason::Manual)];
        let reading = read_ledger(&rows, |_| Some(away("c")), |_| true);
        assert!(reading.origins.is_empty());
        assert_eq!(reading.stale, vec![1]);
    }

    #[test]
    fn a_displacement_after_an_operator_move_returns_to_the_operators_choice() {
        let rows = vec![open(1, 1, "a", "c", Reason::Manual), open(2, 1, "c", "d", Reason::Failover)];
        let reading = read_ledger(&rows, |_| Some(away("d")), |_| true);
        assert_eq!(reading.origins[&1].node, "c");
    }

    #[test]
    fn rows_that_no_longer_match_the_monitor_are_stale() {
        let rows = vec![open(1, 1, "a", "b", Reason::Failover)];
        let reading = read_ledger(&rows, |_| Some(away("z")), |_| true);
        assert!(reading.origins.is_empty());
        assert_eq!(reading.stale, vec![1]);
    }

    #[test]
    fn only_the_last_operator_move_stays_open_while_it_still_says_where_the_monitor_runs() {
        let rows = vec![
            open(1, 1, "a", "b", Reason::Manual),
            open(2, 1, "b", "c", Reason::Rebalance),
            open(3, 2, "a", "b", Reason::Manual),
        ];
        let reading = read_ledger(&rows, |id| Some(away(if id == 1 { "c" } else { "d" })), |_| true);
        assert_eq!(reading.stale, vec![1, 3], "row 1 is superseded, row 3 no longer says where monitor 2 runs");
    }

    #[test]
    fn an_operator_move_under_a_failover_chain_stays_open_with_the_chain() {
        let rows = vec![open(1, 1, "a", "c", Reason::Manual), open(2, 1, "c", "d", Reason::Failover)];
        let reading = read_ledger(&rows, |_| Some(away("d")), |_| true);
        assert!(reading.stale.is_empty());
        assert_eq!(reading.origins[&1].node, "c");
    }

    #[test]
    fn every_row_of_a_deleted_monitor_is_stale() {
        let rows = vec![open(1, 7, "a", "c", Reason::Manual), open(2, 7, "c", "d", Reason::Failover)];
        let reading = read_ledger(&rows, |_| None, |_| true);
        assert_eq!(reading.stale, vec![1, 2]);
        assert!(reading.origins.is_empty());
    }

    #[test]
    fn a_chain_whose_origin_node_is_gone_is_closed_and_its_monitor_stays_where_it_runs() {
        let rows = vec![open(1, 1, "gone", "b", Reason::Failover), open(2, 1, "b", "c", Reason::Failover)];
        let reading = read_ledger(&rows, |_| Some(away("c")), |node| node != "gone");
        assert!(reading.origins.is_empty());
        assert_eq!(reading.stale, vec![1, 2]);
        assert_eq!(reading.orphaned, BTreeMap::from([("gone".to_owned(), 2)]));
    }

    fn arb_view() -> impl Strategy<Value = ClusterView> {
        let health = prop_oneof![Just(Health::Up), Just(Health::Up), Just(Health::Down), Just(Health::Unknown)];
        let nodes = prop::collection::vec((health, any::<bool>(), any::<bool>(), any::<bool>(), 1usize..40), 1..7);
        nodes.prop_flat_map(|nodes| {
            let n = nodes.len();
            let nodes: Vec<NodeView> = nodes
                .into_iter()
                .enumerate()
                .map(|(i, (health, disabled, damped, unsettled, limit))| NodeView {
                    id: format!("n{i}"),
                    health,
                    enabled: !(disabled && i % 2 == 0),
                    stable: !damped,
                    settled: !unsettled,
                    limit,
                    budget: usize::MAX,
                    handover_budget: usize::MAX,
                    idle: true,
                })
                .collect();
            // indexes past n name nodes that are not in the view
            let slot = prop::option::of(0..n + 2);
            let monitor = (any::<bool>(), slot.clone(), prop::option::weighted(0.3, 0..n + 2), prop::option::weighted(0.3, 0..n));
            (prop::collection::vec(monitor, 0..120), any::<bool>()).prop_map(move |(ms, place_unassigned)| ClusterView {
                place_unassigned,
                nodes: nodes.clone(),
                monitors: ms
                    .into_iter()
                    .enumerate()
                    .map(|(id, (paused, home, assigned, origin))| {
                        let name = |i: usize| format!("n{i}");
                        let home = home.map(name);
                        let assigned = assigned.map(name);
                        let effective = assigned.clone().or(home.clone());
                        MonitorView {
                            pinned: id % 7 == 6,
                            id: id as MonitorId,
                            active: !paused || id % 3 != 0,
                            origin: origin
                                .map(name)
                                .filter(|o| Some(o) != effective.as_ref())
                                .map(|node| Origin { node, rows: vec![id as i64], via: Vec::new() }),
                            home,
                            assigned,
                        }
                    })
                    .collect(),
            })
        })
    }

    /// A view whose nodes each may gain only a few monitors (at least `least`)
    /// in this decision, some of them reconciling (not idle).
    fn arb_budgeted_view(least: usize) -> impl Strategy<Value = ClusterView> {
        (arb_view(), prop::collection::vec((least..6, prop::bool::weighted(0.8)), 7)).prop_map(move |(mut view, budgets)| {
            for (n, (b, idle)) in view.nodes.iter_mut().zip(budgets) {
                n.budget = b;
                n.handover_budget = (b * 2 / 3).max(least).min(b);
                n.idle = idle;
            }
            view
        })
    }

    /// Active monitors each node gains in `moves`.
    fn gains(view: &ClusterView, moves: &[Move]) -> HashMap<String, usize> {
        let mut gains = HashMap::new();
        for mv in moves {
            if view.monitors.iter().any(|m| m.id == mv.monitor && m.active) {
                *gains.entry(mv.to.clone()).or_default() += 1;
            }
        }
        gains
    }

    fn health_of<'a>(view: &'a ClusterView, id: Option<&str>) -> Option<&'a NodeView> {
        id.and_then(|id| view.nodes.iter().find(|n| n.id == id))
    }

    proptest! {
        #[test]
        fn every_active_monitor_ends_on_a_ready_node_when_one_exists(view in arb_view()) {
            let mut after = view.clone();
            let plan = plan(&view);
            after.apply(&plan.moves);
            let any_ready = view.nodes.iter().any(NodeView::ready);
            for m in after.monitors.iter().filter(|m| m.active) {
                let node = health_of(&after, m.effective());
                let waiting = node.is_some_and(|n| n.health == Health::Unknown);
                let left_unassigned = m.effective().is_none() && !view.place_unassigned;
                if any_ready && !waiting && !left_unassigned {
                    prop_assert!(node.is_some_and(NodeView::ready), "monitor {} on {:?}", m.id, m.effective());
                }
            }
            if !any_ready {
                prop_assert!(plan.moves.is_empty());
            }
        }

        #[test]
        fn limits_are_exceeded_only_when_every_candidate_is_full(view in arb_view()) {
            let plan = plan(&view);
            let mut after = view.clone();
            after.apply(&plan.moves);
            let loads = after.loads();
            let before = view.loads();
            let ready_stable: Vec<&NodeView> = after.nodes.iter().filter(|n| n.ready() && n.stable).collect();
            let candidates: Vec<&NodeView> = if ready_stable.is_empty() {
                after.nodes.iter().filter(|n| n.ready()).collect()
            } else {
                ready_stable
            };
            for n in &after.nodes {
                let load = loads.get(n.id.as_str()).copied().unwrap_or(0);
                let was = before.get(n.id.as_str()).copied().unwrap_or(0);
                if load > n.limit && load > was {
                    prop_assert!(plan.over_capacity > 0, "{} grew past its limit", n.id);
                    prop_assert!(candidates.iter().all(|c| loads.get(c.id.as_str()).copied().unwrap_or(0) >= c.limit));
                }
            }
        }

        #[test]
        fn only_monitors_that_must_move_do_and_each_moves_once(view in arb_view()) {
            let plan = plan(&view);
            let mut seen = std::collections::HashSet::new();
            for mv in &plan.moves {
                prop_assert!(seen.insert(mv.monitor), "monitor {} moved twice", mv.monitor);
                let m = view.monitors.iter().find(|m| m.id == mv.monitor).unwrap();
                let current_ready = health_of(&view, m.effective()).is_some_and(NodeView::ready);
                match &mv.kind {
                    MoveKind::Displace(_) => prop_assert!(!current_ready && m.active),
                    MoveKind::Manual { .. } | MoveKind::Rebalance => prop_assert!(false, "planning never makes {:?}", mv.kind),
                    MoveKind::Revert { closes } => {
                        let origin = m.origin.as_ref().unwrap();
                        prop_assert_eq!(origin.back_to(&mv.to), Some(closes.clone()), "back along its own chain");
                        let node = health_of(&view, Some(&mv.to)).unwrap();
                        // a return when the origin is settled; otherwise a failover
                        // that happens to land on the chain
                        prop_assert!(node.ready());
                        prop_assert!((node.stable && node.settled) || (!current_ready && m.active));
                    }
                }
            }
        }

        #[test]
        fn no_node_gains_more_than_its_budget_and_nothing_waits_while_a_candidate_has_room(view in arb_budgeted_view(0)) {
            let plan = plan(&view);
            let gains = gains(&view, &plan.moves);
            for n in &view.nodes {
                prop_assert!(gains.get(&n.id).copied().unwrap_or(0) <= n.budget, "{} gained past its budget", n.id);
            }
            if plan.deferred > 0 {
                let candidates: Vec<&NodeView> = if view.nodes.iter().any(|n| n.ready() && n.stable) {
                    view.nodes.iter().filter(|n| n.ready() && n.stable).collect()
                } else {
                    view.nodes.iter().filter(|n| n.ready()).collect()
                };
                // a monitor leaving a dead node waits only while every candidate is
                // full; one leaving an idle drained node, while every one is full for
                // handovers; one leaving a node still reconciling waits for it
                let waiting = |m: &&MonitorView| {
                    m.active && (m.effective().is_some() || view.place_unassigned) && !plan.moves.iter().any(|mv| mv.monitor == m.id)
                };
                let failover_waits = view
                    .monitors
                    .iter()
                    .filter(waiting)
                    .any(|m| health_of(&view, m.effective()).is_none_or(|n| n.health == Health::Down));
                // (or while it has handed over all it may to that candidate)
                let drained_waiting: Vec<&str> = view
                    .monitors
                    .iter()
                    .filter(waiting)
                    .filter_map(|m| health_of(&view, m.effective()))
                    .filter(|n| n.health == Health::Up && !n.enabled && n.idle)
                    .map(|n| n.id.as_str())
                    .collect();
                for n in candidates.into_iter().filter(|_| failover_waits || !drained_waiting.is_empty()) {
                    let gained = gains.get(&n.id).copied().unwrap_or(0);
                    let full = if failover_waits { n.budget } else { n.handover_budget };
                    let released_enough = !failover_waits && drained_waiting.iter().all(|from| {
                        let out: Vec<&Move> = plan.moves.iter().filter(|mv| mv.from.as_deref() == Some(*from)).collect();
                        let cap = out.iter().filter_map(|mv| health_of(&view, Some(&mv.to))).map(|t| t.handover_budget).min();
                        out.len() >= cap.unwrap_or(usize::MAX).min(n.handover_budget)
                    });
                    prop_assert!(gained >= full || released_enough, "{} had room ({gained} of {full}) while monitors waited", n.id);
                }
            }
        }

        #[test]
        fn waves_converge_and_a_monitor_moves_again_only_to_return_to_its_origin(view in arb_budgeted_view(1)) {
            let mut waved = view.clone();
            let mut moved = std::collections::HashSet::new();
            for _ in 0..200 {
                let wave = plan(&waved);
                // the reconciles that kept nodes busy end before the next wave
                let busy = waved.nodes.iter().any(|n| !n.idle);
                waved.nodes.iter_mut().for_each(|n| n.idle = true);
                if wave.moves.is_empty() && busy {
                    continue;
                }
                if wave.moves.is_empty() {
                    prop_assert_eq!(wave.deferred, 0, "monitors wait but nothing can move");
                    break;
                }
                for mv in &wave.moves {
                    let first = moved.insert(mv.monitor);
                    prop_assert!(first || matches!(mv.kind, MoveKind::Revert { .. }), "monitor {} moved again: {:?}", mv.monitor, mv.kind);
                }
                waved.apply(&wave.moves);
            }
            prop_assert!(plan(&waved).moves.is_empty(), "the waves converge");
            for m in waved.monitors.iter().filter(|m| m.active) {
                let node = health_of(&waved, m.effective());
                let left_unassigned = m.effective().is_none() && !view.place_unassigned;
                if view.nodes.iter().any(NodeView::ready) && node.is_none_or(|n| n.health != Health::Unknown) && !left_unassigned {
                    prop_assert!(node.is_some_and(NodeView::ready), "monitor {} left on {:?}", m.id, m.effective());
                }
            }
        }

        #[test]
        fn no_monitor_leaves_a_live_node_while_a_reconcile_of_ours_runs_there(view in arb_budgeted_view(0), cap in prop::option::of(0usize..20), scratch in any::<bool>()) {
            let planned = plan(&view).moves;
            let mut rebalanced = view.clone();
            rebalanced.apply(&planned);
            let moves = planned.iter().chain(plan_rebalance(&rebalanced, cap, scratch).iter()).cloned().collect::<Vec<_>>();
            for mv in moves {
                let m = view.monitors.iter().find(|m| m.id == mv.monitor).unwrap();
                if let Some(from) = health_of(&view, mv.from.as_deref()) {
                    prop_assert!(!m.active || from.health != Health::Up || from.idle, "monitor {} left {} while it reconciles", m.id, from.id);
                }
            }
        }

        #[test]
        fn a_live_node_hands_over_no_more_than_the_handover_budget_of_any_node_it_hands_to(view in arb_budgeted_view(0), cap in prop::option::of(0usize..20), scratch in any::<bool>()) {
            let planned = plan(&view).moves;
            let mut rebalanced = view.clone();
            rebalanced.apply(&planned);
            for moves in [planned, plan_rebalance(&rebalanced, cap, scratch)] {
                let mut out: HashMap<&str, Vec<&Move>> = HashMap::new();
                for mv in &moves {
                    let active = view.monitors.iter().any(|m| m.id == mv.monitor && m.active);
                    let from = health_of(&view, mv.from.as_deref()).filter(|n| n.health == Health::Up);
                    if let (true, Some(from)) = (active, from) {
                        out.entry(from.id.as_str()).or_default().push(mv);
                    }
                }
                for (from, handed) in out {
                    for mv in &handed {
                        let to = health_of(&view, Some(&mv.to)).unwrap();
                        prop_assert!(handed.len() <= to.handover_budget, "{from} handed over {} monitors, {} may take {}", handed.len(), to.id, to.handover_budget);
                    }
                }
            }
        }

        #[test]
        fn planning_twice_changes_nothing(view in arb_view()) {
            let mut after = view.clone();
            after.apply(&plan(&view).moves);
            let again = plan(&after);
            prop_assert!(again.moves.is_empty(), "second plan moved {:?}", again.moves);
        }

        #[test]
        fn rebalancing_moves_only_free_monitors_between_ready_stable_nodes(view in arb_view(), cap in prop::option::of(0usize..20), scratch in any::<bool>()) {
            let moves = plan_rebalance(&view, cap, scratch);
            prop_assert!(moves.len() <= cap.unwrap_or(usize::MAX));
            let mut seen = std::collections::HashSet::new();
            for mv in &moves {
                prop_assert!(seen.insert(mv.monitor));
                let m = view.monitors.iter().find(|m| m.id == mv.monitor).unwrap();
                prop_assert!(m.active && !m.pinned && m.origin.is_none(), "{:?} is not free", m);
                for end in [m.effective(), Some(mv.to.as_str())] {
                    let node = health_of(&view, end).unwrap();
                    prop_assert!(node.ready() && node.stable, "{} is not ready and stable", node.id);
                }
            }
        }

        #[test]
        fn rebalancing_evens_out_load_with_few_moves_and_then_moves_nothing(view in arb_view()) {
            let moves = plan_rebalance(&view, None, false);
            let mut after = view.clone();
            after.apply(&moves);
            let eligible: Vec<&NodeView> = view.nodes.iter().filter(|n| n.ready() && n.stable).collect();
            if eligible.is_empty() {
                prop_assert!(moves.is_empty());
                return Ok(());
            }
            let load = |v: &ClusterView, id: &str| v.loads().get(id).copied().unwrap_or(0);
            let total: usize = eligible.iter().map(|n| load(&view, &n.id)).sum();
            let (floor, ceil) = (total / eligible.len(), total.div_ceil(eligible.len()));
            // a node over its limit sheds down to it, even below the even share
            let upper: usize = eligible.iter().map(|n| load(&view, &n.id).saturating_sub(floor.min(n.limit))).sum();
            prop_assert!(moves.len() <= upper, "{} moves, more than the {} above the even share or limit", moves.len(), upper);
            let limited = eligible.iter().any(|n| n.limit < ceil);
            let all_free = view.monitors.iter().filter(|m| m.active).all(|m| !m.pinned && m.origin.is_none()
                && health_of(&view, m.effective()).is_some_and(|n| n.ready() && n.stable));
            if all_free && !limited {
                let lower: usize = eligible.iter().map(|n| load(&view, &n.id).saturating_sub(ceil)).sum();
                prop_assert!(moves.len() >= lower);
                let min = eligible.iter().map(|n| load(&after, &n.id)).min().unwrap();
                let max = eligible.iter().map(|n| load(&after, &n.id)).max().unwrap();
                prop_assert!(max - min <= 1, "spread {} after rebalancing", max - min);
            }
            prop_assert!(plan_rebalance(&after, None, false).is_empty(), "a balanced cluster moved again");
        }
    }
}
