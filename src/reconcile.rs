//! One reconcile decision, pure: the rows read inside the decision's transaction
//! plus the supervisor's knowledge of node health give the writes to make and the
//! routing table to publish. The ClusterActor only does the IO around it.

use crate::config::StaticNode;
use crate::health::Health;
use crate::placement::{self, ClusterView, MonitorId, MonitorView, Move, MoveKind, NodeView};
use crate::routing::{RouteNode, RoutingTable};
use crate::store::{Changes, ClusterRows, NewEvent, NodeSpec, NodeStatus, NodeUpdate};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};

/// What the supervisor knows of one node beyond its row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeInput {
    pub health: Health,
    /// Not flap-damped.
    pub stable: bool,
    /// Up for the whole hold-down and not damped.
    pub settled: bool,
}

impl NodeInput {
    pub const UNKNOWN: NodeInput = NodeInput { health: Health::Unknown, stable: false, settled: false };
}

/// An operator's reason for taking a node out of service. Either way its
/// monitors leave, new sessions avoid it, and nothing returns to it until the
/// state is cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    Drain,
    Maintenance,
}

impl AdminState {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Drain => "drain",
            AdminState::Maintenance => "maintenance",
        }
    }

    pub fn parse(text: &str) -> Option<AdminState> {
        [AdminState::Drain, AdminState::Maintenance].into_iter().find(|s| s.as_str() == text)
    }
}

/// An operator's request, decided and written in one transaction with
/// everything it causes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Take a node out of service (`Some`) or return it (`None`).
    SetAdmin { node: String, state: Option<AdminState> },
    /// Move monitors to a ready node as a manual override.
    Move { monitors: Vec<MonitorId>, to: String, pin: bool },
    /// Even out load over ready nodes; a dry run reports the plan and writes nothing.
    Rebalance { dry_run: bool, max_moves: Option<usize>, from_scratch: bool },
    /// Register a node.
    CreateNode(NodeSpec),
    /// Change a node's row; `active: Some(false)` drains it like any disabled node.
    UpdateNode(NodeUpdate),
    /// Remove a node's row; with `force`, its monitors are moved away first, in
    /// the same transaction.
    DeleteNode { node: String, force: bool },
}

impl Command {
    pub fn is_dry_run(&self) -> bool {
        matches!(self, Command::Rebalance { dry_run: true, .. })
    }
}

/// What a rebalance planned, and how even the ready nodes are before and after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RebalanceReport {
    pub dry_run: bool,
    pub from_scratch: bool,
    pub max_moves: Option<usize>,
    pub planned: usize,
    /// Largest minus smallest load over the ready, stable nodes.
    pub spread_before: usize,
    pub spread_after: usize,
    pub moves: Vec<PlannedMove>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedMove {
    pub monitor_id: MonitorId,
    pub from_node: Option<String>,
    pub to_node: String,
}

/// Why a command was refused; a refused command writes nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no node {0:?} in the cluster")]
    UnknownNode(String),
    #[error("no monitors with ids {0:?}")]
    UnknownMonitors(Vec<MonitorId>),
    #[error("node {0:?} is not ready")]
    NodeNotReady(String),
    #[error("node {0:?} is in service already")]
    InService(String),
    #[error("the supervisor is waiting for every node's first health verdict")]
    NotStarted,
    #[error("node {0:?} exists already")]
    NodeExists(String),
    #[error("node {0:?} still runs {1} monitors; delete with force=true to move them away first")]
    NodeHoldsMonitors(String, usize),
    #[error("node {0:?} is defined in the configuration; remove it there")]
    Configured(String),
}
pub struct Inputs<'a> {
    pub nodes: &'a HashMap<String, NodeInput>,
    pub static_nodes: &'a [StaticNode],
    pub limit: usize,
    /// Latched by the caller once every node has had a first verdict: before that,
    /// nothing is written.
    pub started: bool,
    pub setup_complete: bool,
    pub command: Option<&'a Command>,
}

#[derive(Clone, Debug)]
pub struct Decision {
    pub started: bool,
    /// Open ledger rows with a reason kuma-cluster does not know.
    pub unreadable_moves: usize,
    pub changes: Changes,
    pub stranded: Vec<MonitorId>,
    pub over_capacity: usize,
    /// The routing table as it stands once `changes` have committed.
    pub table: RoutingTable,
    pub rebalance: Option<RebalanceReport>,
    /// Every node that exists once `changes` have committed, with its address.
    pub members: Vec<(String, Option<String>)>,
}

fn spread(view: &ClusterView) -> usize {
    let loads = view.loads();
    let eligible = view.nodes.iter().filter(|n| n.ready() && n.stable).map(|n| loads.get(n.id.as_str()).copied().unwrap_or(0));
    let (min, max) = eligible.fold((usize::MAX, 0), |(lo, hi), l| (lo.min(l), hi.max(l)));
    max.saturating_sub(min.min(max))
}

/// What [`decide`] needs of a node, from its row, from configuration or from a
/// command.
struct NodeFacts {
    id: String,
    host: Option<String>,
    status: Option<String>,
    enabled: bool,
    is_primary: bool,
}

pub fn decide(rows: &ClusterRows, inputs: &Inputs) -> Result<Decision, Refusal> {
    let mut changes = Changes::default();
    let mut facts: Vec<NodeFacts> = rows
        .nodes
        .iter()
        .map(|n| NodeFacts {
            id: n.id.clone(),
            host: n.host.clone(),
            status: n.status.clone(),
            enabled: n.enabled,
            is_primary: n.is_primary,
        })
        .collect();
    for s in inputs.static_nodes.iter().filter(|s| !rows.nodes.iter().any(|n| n.id == s.id)) {
        register(&mut facts, &mut changes, NodeSpec::from(s));
    }
    let mut deleting = None;
    match inputs.command {
        Some(Command::CreateNode(spec)) => {
            if facts.iter().any(|f| f.id == spec.id) {
                return Err(Refusal::NodeExists(spec.id.clone()));
            }
            register(&mut facts, &mut changes, spec.clone());
        }
        Some(Command::UpdateNode(update)) => {
            let fact = facts.iter_mut().find(|f| f.id == update.id).ok_or_else(|| Refusal::UnknownNode(update.id.clone()))?;
            if let Some(host) = &update.host {
                fact.host = Some(host.clone());
            }
            if let Some(active) = update.active {
                fact.enabled = active;
            }
            if update.primary == Some(true) {
                make_only_primary(&mut facts, &mut changes, &update.id);
            }
            changes.updates.push(update.clone());
        }
        Some(Command::DeleteNode { node, force }) => {
            if inputs.static_nodes.iter().any(|s| &s.id == node) {
                return Err(Refusal::Configured(node.clone()));
            }
            let fact = facts.iter_mut().find(|f| &f.id == node).ok_or_else(|| Refusal::UnknownNode(node.clone()))?;
            let holds = rows
                .monitors
                .iter()
                .filter(|m| m.active && m.assigned.as_deref().or(m.home.as_deref()) == Some(node.as_str()))
                .count();
            if holds > 0 && !force {
                return Err(Refusal::NodeHoldsMonitors(node.clone(), holds));
            }
            // planned as disabled, so its monitors leave in this same decision
            fact.enabled = false;
            deleting = Some(node.clone());
        }
        _ => {}
    }
    let input = |id: &str| inputs.nodes.get(id).copied().unwrap_or(NodeInput::UNKNOWN);
    let started = inputs.started || facts.iter().all(|n| input(&n.id).health != Health::Unknown);
    let mut admin: HashMap<&str, AdminState> = rows.admin.iter().map(|(id, s)| (id.as_str(), *s)).collect();
    let mut admin_change = None;
    if let Some(Command::SetAdmin { node, state }) = inputs.command {
        if !facts.iter().any(|n| &n.id == node) {
            return Err(Refusal::UnknownNode(node.clone()));
        }
        let previous = match state {
            Some(state) => admin.insert(node, *state),
            None => Some(admin.remove(node.as_str()).ok_or_else(|| Refusal::InService(node.clone()))?),
        };
        // asking again for the state a node is already in writes nothing
        if previous != *state {
            admin_change = Some((node.clone(), *state));
        }
    }

    let effective: HashMap<MonitorId, Option<&str>> =
        rows.monitors.iter().map(|m| (m.id, m.assigned.as_deref().or(m.home.as_deref()))).collect();
    let mut ledger = placement::read_ledger(&rows.open_moves, |id| effective.get(&id).copied().flatten());
    let mut view = ClusterView {
        nodes: facts
            .iter()
            .map(|n| {
                let i = input(&n.id);
                NodeView {
                    id: n.id.clone(),
                    health: i.health,
                    enabled: n.enabled && !admin.contains_key(n.id.as_str()),
                    stable: i.stable,
                    settled: i.settled,
                    limit: inputs.limit,
                }
            })
            .collect(),
        monitors: rows
            .monitors
            .iter()
            .map(|m| MonitorView {
                id: m.id,
                active: m.active,
                home: m.home.clone(),
                assigned: m.assigned.clone(),
                origin: ledger.origins.remove(&m.id),
                pinned: ledger.pinned.contains(&m.id),
            })
            .collect(),
    };
    // ledger rows for monitors that no longer exist have nothing left to describe
    ledger.stale.extend(ledger.origins.values().flat_map(|o| o.rows.iter().copied()));
    ledger.stale.sort_unstable();

    changes.admin.extend(admin_change);
    let mut manual = Vec::new();
    if let Some(Command::Move { monitors, to, pin }) = inputs.command {
        if !started {
            return Err(Refusal::NotStarted);
        }
        let target = view.nodes.iter().find(|n| &n.id == to).ok_or_else(|| Refusal::UnknownNode(to.clone()))?;
        if !target.ready() {
            return Err(Refusal::NodeNotReady(to.clone()));
        }
        let position: HashMap<MonitorId, usize> = view.monitors.iter().enumerate().map(|(i, m)| (m.id, i)).collect();
        let missing: Vec<MonitorId> = monitors.iter().copied().filter(|id| !position.contains_key(id)).collect();
        if !missing.is_empty() {
            return Err(Refusal::UnknownMonitors(missing));
        }
        for id in monitors {
            let m = &view.monitors[position[id]];
            // an operator's move supersedes the displacements that brought it here
            changes.close.extend(m.origin.iter().flat_map(|o| o.rows.iter().copied()));
            manual.push(Move {
                monitor: m.id,
                from: m.effective().map(str::to_owned),
                to: to.clone(),
                assigned: (m.home.as_deref() != Some(to.as_str())).then(|| to.clone()),
                kind: MoveKind::Manual { pinned: *pin },
            });
        }
        view.apply(&manual);
    }
    let (mut stranded, mut over_capacity, mut rebalance) = (Vec::new(), 0, None);
    if matches!(inputs.command, Some(Command::Rebalance { .. })) && !started {
        return Err(Refusal::NotStarted);
    }
    if started {
        let plan = placement::plan(&view);
        for n in facts.iter().filter(|n| deleting.as_ref() != Some(&n.id)) {
            let wanted = match input(&n.id).health {
                Health::Up => NodeStatus::Online,
                Health::Down => NodeStatus::Offline,
                Health::Unknown => continue,
            };
            if n.status.as_deref() != Some(wanted.as_str()) {
                changes.statuses.push((n.id.clone(), wanted));
            }
        }
        view.apply(&plan.moves);
        manual.extend(plan.moves);
        if let Some(&Command::Rebalance { dry_run, max_moves, from_scratch }) = inputs.command {
            let spread_before = spread(&view);
            let moves = placement::plan_rebalance(&view, max_moves, from_scratch);
            view.apply(&moves);
            rebalance = Some(RebalanceReport {
                dry_run,
                from_scratch,
                max_moves,
                planned: moves.len(),
                spread_before,
                spread_after: spread(&view),
                moves: moves
                    .iter()
                    .map(|m| PlannedMove { monitor_id: m.monitor, from_node: m.from.clone(), to_node: m.to.clone() })
                    .collect(),
            });
            manual.extend(moves);
        }
        if let Some(node) = &deleting {
            let left = view.monitors.iter().filter(|m| m.active && m.effective() == Some(node.as_str())).count();
            if left > 0 {
                return Err(Refusal::NodeHoldsMonitors(node.clone(), left));
            }
        }
        changes.close.extend(ledger.stale);
        changes.events = events(&changes.admin, &changes.statuses, &manual, changes.close.len());
        changes.moves = manual;
        stranded = plan.stranded;
        over_capacity = plan.over_capacity;
    } else if deleting.is_some() {
        return Err(Refusal::NotStarted);
    } else {
        changes.events = events(&changes.admin, &[], &[], 0);
    }
    changes.deletes.extend(deleting);
    changes.events.extend(node_events(&changes));
    facts.retain(|f| !changes.deletes.contains(&f.id));
    view.nodes.retain(|n| !changes.deletes.contains(&n.id));
    let table = routing_table(&view, &facts, inputs.setup_complete);
    let members = facts.into_iter().map(|f| (f.id, f.host)).collect();
    Ok(Decision {
        started,
        unreadable_moves: rows.unreadable_moves,
        changes,
        stranded,
        over_capacity,
        table,
        rebalance,
        members,
    })
}

fn register(facts: &mut Vec<NodeFacts>, changes: &mut Changes, spec: NodeSpec) {
    if spec.primary {
        make_only_primary(facts, changes, &spec.id);
    }
    facts.push(NodeFacts {
        id: spec.id.clone(),
        host: Some(spec.host.clone()),
        status: None,
        enabled: spec.active,
        is_primary: spec.primary,
    });
    changes.register.push(spec);
}

/// One primary at a time: the others stop being primary in the same decision.
fn make_only_primary(facts: &mut [NodeFacts], changes: &mut Changes, id: &str) {
    for f in facts.iter_mut() {
        if f.id == id {
            f.is_primary = true;
        } else if f.is_primary {
            f.is_primary = false;
            changes.updates.push(NodeUpdate { id: f.id.clone(), primary: Some(false), ..NodeUpdate::default() });
        }
    }
}

fn node_events(changes: &Changes) -> Vec<NewEvent> {
    let event = |kind, id: &str, detail| NewEvent { kind, node_id: Some(id.to_owned()), outcome: "committed", detail };
    let created = changes.register.iter().map(|n| event("node_created", &n.id, json!({ "host": n.host })));
    let updated = changes.updates.iter().map(|u| {
        event("node_updated", &u.id, json!({ "host": u.host, "active": u.active, "is_primary": u.primary, "node_name": u.name }))
    });
    let deleted = changes.deletes.iter().map(|id| event("node_deleted", id, json!({})));
    created.chain(updated).chain(deleted).collect()
}

/// One event per administrative change, per node status change, per (reason,
/// source) group of moves, per revert target, and one for ledger rows closed
/// without a move.
fn events(
    admin: &[(String, Option<AdminState>)],
    statuses: &[(String, NodeStatus)],
    moves: &[Move],
    closed: usize,
) -> Vec<NewEvent> {
    let mut events: Vec<NewEvent> = admin
        .iter()
        .map(|(id, state)| NewEvent {
            kind: state.map_or("undrain", AdminState::as_str),
            node_id: Some(id.clone()),
            outcome: "committed",
            detail: json!({ "state": state.map_or("in_service", AdminState::as_str) }),
        })
        .collect();
    events.extend(statuses
        .iter()
        .map(|(id, status)| NewEvent {
            kind: match status {
                NodeStatus::Online => "node_up",
                NodeStatus::Offline => "node_down",
            },
            node_id: Some(id.clone()),
            outcome: "committed",
            detail: json!({ "status": status.as_str() }),
        }));
    let mut groups: BTreeMap<(&'static str, Option<&str>), BTreeMap<&str, usize>> = BTreeMap::new();
    for mv in moves {
        let (kind, node, peer) = match &mv.kind {
            MoveKind::Displace(reason) => (reason.as_str(), mv.from.as_deref(), mv.to.as_str()),
            MoveKind::Manual { .. } => ("manual", Some(mv.to.as_str()), mv.from.as_deref().unwrap_or("")),
            MoveKind::Rebalance => ("rebalance", Some(mv.to.as_str()), mv.from.as_deref().unwrap_or("")),
            MoveKind::Revert { .. } => ("revert", Some(mv.to.as_str()), mv.from.as_deref().unwrap_or("")),
        };
        *groups.entry((kind, node)).or_default().entry(peer).or_default() += 1;
    }
    for ((kind, node), peers) in groups {
        let moved: usize = peers.values().sum();
        let detail = if matches!(kind, "revert" | "manual" | "rebalance") {
            json!({ "moved": moved, "from": peers })
        } else {
            json!({ "moved": moved, "to": peers })
        };
        events.push(NewEvent { kind, node_id: node.map(str::to_owned), outcome: "committed", detail });
    }
    if closed > 0 {
        events.push(NewEvent {
            kind: "ledger_cleanup",
            node_id: None,
            outcome: "committed",
            detail: json!({ "closed": closed }),
        });
    }
    events
}

fn routing_table(view: &ClusterView, facts: &[NodeFacts], setup_complete: bool) -> RoutingTable {
    debug_assert_eq!(view.nodes.len(), facts.len());
    let loads = view.loads();
    let nodes: Vec<RouteNode> = view
        .nodes
        .iter()
        .zip(facts)
        .map(|(n, f)| RouteNode {
            id: n.id.clone(),
            host: f.host.clone(),
            health: n.health,
            ready: n.ready(),
            enabled: n.enabled,
            monitor_count: loads.get(n.id.as_str()).copied().unwrap_or(0),
            limit: n.limit,
        })
        .collect();
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), i)).collect();
    let monitors = view
        .monitors
        .iter()
        .filter(|m| m.active)
        .filter_map(|m| Some((m.id, *index.get(m.effective()?)?)))
        .collect();
    RoutingTable {
        generation: 0,
        nodes,
        monitors,
        primary: facts.iter().find(|f| f.is_primary).map(|f| f.id.clone()),
        setup_complete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{OpenMove, Reason};
    use crate::store::{MonitorRow, NodeRow};

    fn row(id: &str, status: &str) -> NodeRow {
        NodeRow {
            id: id.into(),
            name: id.into(),
            host: Some(format!("{id}:3001")),
            status: Some(status.into()),
            enabled: true,
            is_primary: id == "a",
        }
    }

    fn rows() -> ClusterRows {
        ClusterRows {
            nodes: vec![row("a", "online"), row("b", "online")],
            monitors: (1..=4)
                .map(|id| MonitorRow { id, active: true, home: Some(if id <= 2 { "a" } else { "b" }.into()), assigned: None })
                .collect(),
            open_moves: vec![],
            unreadable_moves: 0,
            admin: vec![],
        }
    }

    fn up() -> NodeInput {
        NodeInput { health: Health::Up, stable: true, settled: true }
    }

    fn down() -> NodeInput {
        NodeInput { health: Health::Down, stable: true, settled: false }
    }

    fn decide_with(rows: &ClusterRows, nodes: &[(&str, NodeInput)], started: bool) -> Decision {
        let nodes: HashMap<String, NodeInput> = nodes.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        decide(rows, &Inputs { nodes: &nodes, static_nodes: &[], limit: 1000, started, setup_complete: true, command: None })
            .unwrap()
    }

    #[test]
    fn nothing_is_written_until_every_node_has_a_verdict() {
        let d = decide_with(&rows(), &[("a", down())], false);
        assert!(!d.started);
        assert!(d.changes.is_empty());
    }

    #[test]
    fn a_settled_cluster_writes_nothing() {
        let d = decide_with(&rows(), &[("a", up()), ("b", up())], false);
        assert!(d.started);
        assert!(d.changes.is_empty(), "{:?}", d.changes);
        assert_eq!(d.table.node("a").unwrap().monitor_count, 2);
        assert_eq!(d.table.primary.as_deref(), Some("a"));
    }

    #[test]
    fn a_down_node_is_marked_offline_and_its_monitors_move_in_one_decision() {
        let d = decide_with(&rows(), &[("a", down()), ("b", up())], true);
        assert_eq!(d.changes.statuses, vec![("a".to_string(), NodeStatus::Offline)]);
        assert_eq!(d.changes.moves.len(), 2);
        assert!(d.changes.moves.iter().all(|m| m.to == "b" && m.kind == MoveKind::Displace(Reason::Failover)));
        let kinds: Vec<&str> = d.changes.events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec!["node_down", "failover"]);
        assert_eq!(d.changes.events[1].detail, json!({ "moved": 2, "to": { "b": 2 } }));
        assert_eq!(d.table.node("b").unwrap().monitor_count, 4);
        assert!(!d.table.node("a").unwrap().ready);
        assert_eq!(d.table.node_of_monitor(1).unwrap().id, "b");
    }

    #[test]
    fn ledger_rows_of_deleted_monitors_are_closed() {
        let mut r = rows();
        r.open_moves.push(OpenMove {
            id: 9,
            monitor: 99,
            from: Some("a".into()),
            to: "b".into(),
            reason: Reason::Failover,
            pinned: false,
        });
        let d = decide_with(&r, &[("a", up()), ("b", up())], true);
        assert_eq!(d.changes.close, vec![9]);
    }

    #[test]
    fn a_node_from_the_configuration_cannot_be_deleted_and_a_busy_one_needs_force() {
        let nodes: HashMap<String, NodeInput> = [("a".to_string(), up()), ("b".to_string(), up())].into();
        let statics = vec![StaticNode { id: "a".into(), host: "a:3001".into(), name: None }];
        let delete = |node: &str, force| Command::DeleteNode { node: node.into(), force };
        let inputs = |command| Inputs { nodes: &nodes, static_nodes: &statics, limit: 1000, started: true, setup_complete: true, command };
        let (configured, busy, forced) = (delete("a", true), delete("b", false), delete("b", true));
        assert_eq!(decide(&rows(), &inputs(Some(&configured))).unwrap_err(), Refusal::Configured("a".into()));
        assert_eq!(decide(&rows(), &inputs(Some(&busy))).unwrap_err(), Refusal::NodeHoldsMonitors("b".into(), 2));
        let d = decide(&rows(), &inputs(Some(&forced))).unwrap();
        assert_eq!(d.changes.deletes, vec!["b".to_string()]);
        assert!(d.changes.moves.iter().all(|m| m.from.as_deref() == Some("b") && m.to == "a"));
        assert!(d.table.node("b").is_none() && d.members.iter().all(|(id, _)| id != "b"));
    }

    #[test]
    fn missing_static_nodes_are_registered() {
        let statics = vec![StaticNode { id: "c".into(), host: "c:3001".into(), name: None }];
        let nodes: HashMap<String, NodeInput> = [("a".to_string(), up()), ("b".to_string(), up())].into();
        let d = decide(
            &rows(),
            &Inputs { nodes: &nodes, static_nodes: &statics, limit: 1000, started: false, setup_complete: true, command: None },
        )
        .unwrap();
        assert_eq!(d.changes.register, vec![NodeSpec::from(&statics[0])]);
        assert!(!d.started, "the registered node has no verdict yet");
    }
}
