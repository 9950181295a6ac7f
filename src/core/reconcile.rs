//! One reconcile decision, pure: the rows read inside the decision's transaction
//! plus the supervisor's knowledge of node health give the writes to make and the
//! routing table to publish. The ClusterActor only does the IO around it.

use crate::core::health::Health;
use crate::core::placement::{self, ClusterView, LedgerReading, MonitorId, MonitorView, Move, MoveKind, NodeView, Whereabouts};
use crate::core::routing::{RouteNode, RoutingTable};
use crate::core::model::{AdminState, Changes, ClusterRows, NewEvent, NodeSpec, NodeStatus, NodeUpdate};
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
    /// New active monitors it may be given in this decision (`core::waves`).
    pub budget: usize,
    /// The part of `budget` for monitors leaving live nodes.
    pub handover_budget: usize,
    /// No reconcile of ours runs on it: what leaves it now is stopped at once.
    pub idle: bool,
    /// The health the last committed decision saw: a status row that differs
    /// while health has not changed since was rewritten by the node itself.
    pub decided: Health,
}

impl NodeInput {
    pub const UNKNOWN: NodeInput =
        NodeInput {
        health: Health::Unknown,
        stable: false,
        settled: false,
        budget: 0,
        handover_budget: 0,
        idle: false,
        decided: Health::Unknown,
    };
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
    #[error("node {node:?} can take only {budget} more monitors now (a reconcile of its is running, or its next cron is near); move fewer, or retry shortly")]
    OverBudget { node: String, budget: usize },
    #[error("node {0:?} is reconciling: monitors leave it once that is done; retry shortly")]
    SourceBusy(String),
}

pub struct Inputs<'a> {
    pub nodes: &'a HashMap<String, NodeInput>,
    /// Nodes from the configuration, registered while the table lacks them.
    pub static_nodes: &'a [NodeSpec],
    pub limit: usize,
    /// Latched by the caller once every node has had a first verdict: before that,
    /// nothing is written.
    pub started: bool,
    pub setup_complete: bool,
    pub command: Option<&'a Command>,
    /// Place active monitors with neither a home nor an override (`placement.place_unassigned`).
    pub place_unassigned: bool,
    /// Unusable node ids the event log has already been told about.
    pub reported_unusable: &'a [String],
}

#[derive(Clone, Debug)]
pub struct Decision {
    pub started: bool,
    /// Open ledger rows with a reason kuma-cluster does not know.
    pub unreadable_moves: usize,
    /// Active monitors with neither a home nor an override: "NA", run nowhere.
    pub unassigned: usize,
    /// Node rows whose id no node can own.
    pub unusable_nodes: Vec<String>,
    pub changes: Changes,
    pub stranded: Vec<MonitorId>,
    pub over_capacity: usize,
    /// Monitors that must move but wait for a later wave: no ready node may
    /// take more work before its next cron.
    pub deferred: usize,
    /// The routing table as it stands once `changes` have committed.
    pub table: RoutingTable,
    pub rebalance: Option<RebalanceReport>,
    /// Every node that exists once `changes` have committed, with its address.
    pub members: Vec<(String, Option<String>)>,
}

/// What a decision did, in numbers, for its caller and the status API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DecisionSummary {
    pub wrote: bool,
    pub moves: usize,
    pub displaced: usize,
    pub reverted: usize,
    pub manual: usize,
    pub ledger_closed: usize,
    pub status_changes: usize,
    pub stranded: usize,
    /// Monitors left for a later wave.
    pub deferred: usize,
    pub duration_ms: u64,
    /// The plan of a rebalance command, applied or (dry run) only reported.
    pub rebalance: Option<RebalanceReport>,
}

impl Decision {
    /// The numbers of this decision, which took `duration_ms` to read, decide and write.
    pub fn summary(&self, duration_ms: u64) -> DecisionSummary {
        let moves = &self.changes.moves;
        let count = |f: fn(&MoveKind) -> bool| moves.iter().filter(|m| f(&m.kind)).count();
        DecisionSummary {
            wrote: !self.changes.is_empty(),
            moves: moves.len(),
            displaced: count(|k| matches!(k, MoveKind::Displace(_))),
            reverted: count(|k| matches!(k, MoveKind::Revert { .. })),
            manual: count(|k| matches!(k, MoveKind::Manual { .. })),
            ledger_closed: self.changes.close.len(),
            status_changes: self.changes.statuses.len(),
            stranded: self.stranded.len(),
            deferred: self.deferred,
            duration_ms,
            rebalance: self.rebalance.clone(),
        }
    }
}

/// Decides once: register configured nodes, apply the operator's command, plan
/// placement, set node statuses, and build the routing table, all from the rows
/// read in the decision's transaction. A refusal writes nothing.
pub fn decide(rows: &ClusterRows, inputs: &Inputs) -> Result<Decision, Refusal> {
    let mut changes = Changes::default();
    let mut facts = register(rows, inputs.static_nodes, &mut changes);
    let deleting = node_command(&mut facts, rows, inputs, &mut changes)?;
    let input = |id: &str| inputs.nodes.get(id).copied().unwrap_or(NodeInput::UNKNOWN);
    let started = inputs.started || facts.iter().all(|n| input(&n.id).health != Health::Unknown);
    let admin = admin_command(rows, &facts, inputs.command, &mut changes)?;
    let (mut view, ledger) = view_of(rows, &facts, &admin, inputs);
    let mut moves = manual_moves(&mut view, inputs.command, started, &mut changes)?;

    let (mut stranded, mut over_capacity, mut deferred, mut rebalance) = (Vec::new(), 0, 0, None);
    if matches!(inputs.command, Some(Command::Rebalance { .. })) && !started {
        return Err(Refusal::NotStarted);
    }
    if started {
        let plan = placement::plan(&view);
        changes.statuses = statuses(&facts, deleting.as_deref(), input);
        view.apply(&plan.moves);
        moves.extend(plan.moves);
        if let Some(&Command::Rebalance { dry_run, max_moves, from_scratch }) = inputs.command {
            let (report, planned) = rebalanced(&mut view, dry_run, max_moves, from_scratch);
            rebalance = Some(report);
            moves.extend(planned);
        }
        if let Some(node) = &deleting {
            let left = view.monitors.iter().filter(|m| m.active && m.effective() == Some(node.as_str())).count();
            if left > 0 {
                return Err(Refusal::NodeHoldsMonitors(node.clone(), left));
            }
        }
        changes.close.extend(&ledger.stale);
        let rewritten: Vec<&str> = changes
            .statuses
            .iter()
            .map(|(id, _)| id.as_str())
            .filter(|id| {
                let i = input(id);
                i.health == i.decided
            })
            .collect();
        changes.events = events(&changes.admin, &changes.statuses, &rewritten, &moves, changes.close.len());
        changes.events.extend(ledger.orphaned.iter().map(|(node, closed)| NewEvent {
            kind: "origin_gone",
            node_id: Some(node.clone()),
            outcome: "committed",
            detail: json!({ "closed": closed }),
        }));
        changes.moves = moves;
        stranded = plan.stranded;
        over_capacity = plan.over_capacity;
        deferred = plan.deferred;
    } else if deleting.is_some() {
        return Err(Refusal::NotStarted);
    } else {
        changes.events = events(&changes.admin, &[], &[], &[], 0);
    }
    changes.deletes.extend(deleting);
    changes.events.extend(node_events(&changes));
    changes.events.extend(rows.unusable_nodes.iter().filter(|id| !inputs.reported_unusable.contains(id)).map(|id| NewEvent {
        kind: "node_id_unusable",
        node_id: Some(id.clone()),
        outcome: "ignored",
        detail: json!({ "reason": "no node can own an empty or blank id: it is never a target, and its monitors are placed elsewhere" }),
    }));
    facts.retain(|f| !changes.deletes.contains(&f.id));
    view.nodes.retain(|n| !changes.deletes.contains(&n.id));
    let table = routing_table(&view, &facts, inputs.setup_complete);
    let members = facts.into_iter().map(|f| (f.id, f.host)).collect();
    Ok(Decision {
        started,
        unreadable_moves: rows.unreadable_moves,
        unassigned: view.monitors.iter().filter(|m| m.active && m.effective().is_none()).count(),
        unusable_nodes: rows.unusable_nodes.clone(),
        changes,
        stranded,
        over_capacity,
        deferred,
        table,
        rebalance,
        members,
    })
}

/// What a replica that does not lead serves: the routing table and the nodes
/// as the committed rows stand, with this replica's own view of node health.
/// Nothing is planned and nothing written: only the leader decides.
pub struct Committed {
    pub table: RoutingTable,
    /// Every node, with its address: the ones this replica probes.
    pub members: Vec<(String, Option<String>)>,
}

pub fn committed(rows: &ClusterRows, inputs: &Inputs) -> Committed {
    let mut unwritten = Changes::default();
    let facts = register(rows, inputs.static_nodes, &mut unwritten);
    let (view, _) = view_of(rows, &facts, &admin_states(rows), inputs);
    let table = routing_table(&view, &facts, inputs.setup_complete);
    Committed { table, members: facts.into_iter().map(|f| (f.id, f.host)).collect() }
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

/// Step 1: the nodes as their rows say, plus every configured node the table
/// lacks, registered in this decision.
fn register(rows: &ClusterRows, static_nodes: &[NodeSpec], changes: &mut Changes) -> Vec<NodeFacts> {
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
    for spec in static_nodes.iter().filter(|s| !rows.nodes.iter().any(|n| n.id == s.id)) {
        add_node(&mut facts, changes, spec.clone());
    }
    facts
}

fn add_node(facts: &mut Vec<NodeFacts>, changes: &mut Changes, spec: NodeSpec) {
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

/// Step 2a, node admin commands: create, update or delete a node row. Returns
/// the node being deleted, planned as disabled so its monitors leave in this
/// same decision.
fn node_command(
    facts: &mut Vec<NodeFacts>,
    rows: &ClusterRows,
    inputs: &Inputs,
    changes: &mut Changes,
) -> Result<Option<String>, Refusal> {
    match inputs.command {
        Some(Command::CreateNode(spec)) => {
            if facts.iter().any(|f| f.id == spec.id) {
                return Err(Refusal::NodeExists(spec.id.clone()));
            }
            add_node(facts, changes, spec.clone());
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
                make_only_primary(facts, changes, &update.id);
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
            fact.enabled = false;
            return Ok(Some(node.clone()));
        }
        _ => {}
    }
    Ok(None)
}

/// Step 2b, drain / maintenance / undrain: the administrative state of every
/// node once the command applies. Asking again for the state a node is in
/// already writes nothing.
fn admin_command<'r>(
    rows: &'r ClusterRows,
    facts: &[NodeFacts],
    command: Option<&'r Command>,
    changes: &mut Changes,
) -> Result<HashMap<&'r str, AdminState>, Refusal> {
    let mut admin = admin_states(rows);
    if let Some(Command::SetAdmin { node, state }) = command {
        if !facts.iter().any(|n| &n.id == node) {
            return Err(Refusal::UnknownNode(node.clone()));
        }
        let previous = match state {
            Some(state) => admin.insert(node, *state),
            None => Some(admin.remove(node.as_str()).ok_or_else(|| Refusal::InService(node.clone()))?),
        };
        if previous != *state {
            changes.admin.push((node.clone(), *state));
        }
    }
    Ok(admin)
}

/// Each node's administrative state as committed.
fn admin_states(rows: &ClusterRows) -> HashMap<&str, AdminState> {
    rows.admin.iter().map(|(id, s)| (id.as_str(), *s)).collect()
}

/// The cluster as placement sees it, and what is left of the ledger's reading:
/// the rows that no longer describe any monitor (to be closed) and the origin
/// nodes that are gone.
fn view_of(
    rows: &ClusterRows,
    facts: &[NodeFacts],
    admin: &HashMap<&str, AdminState>,
    inputs: &Inputs,
) -> (ClusterView, LedgerReading) {
    let whereabouts: HashMap<MonitorId, Whereabouts> = rows
        .monitors
        .iter()
        .map(|m| (m.id, Whereabouts { node: m.assigned.as_deref().or(m.home.as_deref()), overridden: m.assigned.is_some() }))
        .collect();
    let mut ledger = placement::read_ledger(
        &rows.open_moves,
        |id| whereabouts.get(&id).copied(),
        |node| facts.iter().any(|f| f.id == node),
    );
    let view = ClusterView {
        place_unassigned: inputs.place_unassigned,
        nodes: facts
            .iter()
            .map(|n| {
                let i = inputs.nodes.get(&n.id).copied().unwrap_or(NodeInput::UNKNOWN);
                NodeView {
                    id: n.id.clone(),
                    health: i.health,
                    enabled: n.enabled && !admin.contains_key(n.id.as_str()),
                    stable: i.stable,
                    settled: i.settled,
                    limit: inputs.limit,
                    budget: i.budget,
                    handover_budget: i.handover_budget,
                    idle: i.idle,
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
    (view, ledger)
}

/// Step 2c, an operator's move: every named monitor to a ready node, as a
/// manual override that supersedes the displacements that brought it here.
fn manual_moves(
    view: &mut ClusterView,
    command: Option<&Command>,
    started: bool,
    changes: &mut Changes,
) -> Result<Vec<Move>, Refusal> {
    let Some(Command::Move { monitors, to, pin }) = command else { return Ok(Vec::new()) };
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
    // its reconcile must end before its next cron, like any wave's
    let starts = monitors
        .iter()
        .map(|id| &view.monitors[position[id]])
        .filter(|m| m.active && m.effective() != Some(to.as_str()))
        .count();
    // the monitors leave live nodes (or none): they are handovers
    if starts > target.handover_budget {
        return Err(Refusal::OverBudget { node: to.clone(), budget: target.handover_budget });
    }
    // a live old owner must stop them before the target starts them
    let busy_source = monitors.iter().map(|id| &view.monitors[position[id]]).find_map(|m| {
        let from = view.nodes.iter().find(|n| Some(n.id.as_str()) == m.effective())?;
        (m.active && from.id != *to && from.health == Health::Up && !from.idle).then(|| from.id.clone())
    });
    if let Some(node) = busy_source {
        return Err(Refusal::SourceBusy(node));
    }
    let moves: Vec<Move> = monitors
        .iter()
        .map(|id| {
            let m = &view.monitors[position[id]];
            changes.close.extend(m.origin.iter().flat_map(|o| o.rows.iter().copied()));
            Move::new(m, to.clone(), MoveKind::Manual { pinned: *pin })
        })
        .collect();
    view.apply(&moves);
    Ok(moves)
}

/// Step 3, statuses: `node.status` follows health for every node with a
/// verdict, except the one being deleted.
fn statuses(facts: &[NodeFacts], deleting: Option<&str>, input: impl Fn(&str) -> NodeInput) -> Vec<(String, NodeStatus)> {
    facts
        .iter()
        .filter(|n| deleting != Some(n.id.as_str()))
        .filter_map(|n| {
            let wanted = match input(&n.id).health {
                Health::Up => NodeStatus::Online,
                Health::Down => NodeStatus::Offline,
                Health::Unknown => return None,
            };
            (n.status.as_deref() != Some(wanted.as_str())).then(|| (n.id.clone(), wanted))
        })
        .collect()
}

/// Step 4, a rebalance command: plans it on the view as placement left it and
/// applies it to the view (a dry run's caller drops the writes).
fn rebalanced(
    view: &mut ClusterView,
    dry_run: bool,
    max_moves: Option<usize>,
    from_scratch: bool,
) -> (RebalanceReport, Vec<Move>) {
    let spread_before = spread(view);
    let moves = placement::plan_rebalance(view, max_moves, from_scratch);
    view.apply(&moves);
    let report = RebalanceReport {
        dry_run,
        from_scratch,
        max_moves,
        planned: moves.len(),
        spread_before,
        spread_after: spread(view),
        moves: moves
            .iter()
            .map(|m| PlannedMove { monitor_id: m.monitor, from_node: m.from.clone(), to_node: m.to.clone() })
            .collect(),
    };
    (report, moves)
}

fn spread(view: &ClusterView) -> usize {
    let loads = view.loads();
    let eligible = view.nodes.iter().filter(|n| n.ready() && n.stable).map(|n| loads.get(n.id.as_str()).copied().unwrap_or(0));
    let (min, max) = eligible.fold((usize::MAX, 0), |(lo, hi), l| (lo.min(l), hi.max(l)));
    max.saturating_sub(min.min(max))
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

/// One event per administrative change, per node status change, per (kind,
/// node) group of moves, and one for ledger rows closed without a move.
/// Displacements are told from the node they left, every other move from the
/// node it reached. A status a node `rewritten` itself (at its restart) is put
/// back as `node_status_restored`, not told as the node going down or up again.
fn events(
    admin: &[(String, Option<AdminState>)],
    statuses: &[(String, NodeStatus)],
    rewritten: &[&str],
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
    events.extend(statuses.iter().map(|(id, status)| NewEvent {
        kind: match status {
            _ if rewritten.contains(&id.as_str()) => "node_status_restored",
            NodeStatus::Online => "node_up",
            NodeStatus::Offline => "node_down",
        },
        node_id: Some(id.clone()),
        outcome: "committed",
        detail: json!({ "status": status.as_str() }),
    }));
    let mut groups: BTreeMap<(&'static str, Option<&str>), BTreeMap<&str, usize>> = BTreeMap::new();
    for mv in moves {
        let (node, peer) = match mv.kind {
            MoveKind::Displace(_) => (mv.from.as_deref(), mv.to.as_str()),
            _ => (Some(mv.to.as_str()), mv.from.as_deref().unwrap_or("")),
        };
        *groups.entry((mv.kind.label(), node)).or_default().entry(peer).or_default() += 1;
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

/// Step 5, the routing table as it stands once the decision's writes commit.
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
    use crate::core::placement::{OpenMove, Reason};
    use crate::core::model::{MonitorRow, NodeRow};

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
            unusable_nodes: vec![],
        }
    }

    fn spec(id: &str) -> NodeSpec {
        NodeSpec { id: id.into(), name: id.into(), host: format!("{id}:3001"), active: true, primary: false }
    }

    fn up() -> NodeInput {
        NodeInput {
            health: Health::Up,
            stable: true,
            settled: true,
            budget: usize::MAX,
            handover_budget: usize::MAX,
            idle: true,
            decided: Health::Unknown,
        }
    }

    fn down() -> NodeInput {
        NodeInput { health: Health::Down, stable: true, settled: false, budget: 0, handover_budget: 0, idle: true, decided: Health::Unknown }
    }

    fn decide_with(rows: &ClusterRows, nodes: &[(&str, NodeInput)], started: bool) -> Decision {
        let nodes: HashMap<String, NodeInput> = nodes.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        decide(rows, &Inputs { nodes: &nodes, static_nodes: &[], limit: 1000, started, setup_complete: true, command: None, place_unassigned: false, reported_unusable: &[] })
            .unwrap()
    }

    #[test]
    fn nothing_is_written_until_every_node_has_a_verdict() {
        let d = decide_with(&rows(), &[("a", down())], false);
        assert!(!d.started);
        assert!(d.changes.is_empty());
    }

    #[test]
    fn a_follower_serves_the_committed_placement_with_its_own_health_and_plans_nothing() {
        let mut rows = rows();
        rows.monitors[3].assigned = Some("a".into());
        rows.admin = vec![("b".into(), AdminState::Drain)];
        let nodes: HashMap<String, NodeInput> = [("a".to_string(), down()), ("b".to_string(), up())].into();
        let statics = [spec("c")];
        let inputs = Inputs { nodes: &nodes, static_nodes: &statics, limit: 1000, started: true, setup_complete: true, command: None, place_unassigned: false, reported_unusable: &[] };
        let seen = committed(&rows, &inputs);
        let a = seen.table.node("a").unwrap();
        assert_eq!((a.ready, a.monitor_count), (false, 3), "a is down here, and keeps what the leader committed");
        assert_eq!(seen.table.node_of_monitor(1).map(|n| n.id.as_str()), Some("a"));
        assert_eq!(seen.table.node_of_monitor(4).map(|n| n.id.as_str()), Some("a"), "the override as committed");
        assert!(!seen.table.node("b").unwrap().ready, "drained");
        assert_eq!(seen.members.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), vec!["a", "b", "c"], "configured nodes are probed too");
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
        let statics = vec![spec("a")];
        let delete = |node: &str, force| Command::DeleteNode { node: node.into(), force };
        let inputs = |command| Inputs { nodes: &nodes, static_nodes: &statics, limit: 1000, started: true, setup_complete: true, command, place_unassigned: false, reported_unusable: &[] };
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
        let statics = vec![spec("c")];
        let nodes: HashMap<String, NodeInput> = [("a".to_string(), up()), ("b".to_string(), up())].into();
        let d = decide(
            &rows(),
            &Inputs { nodes: &nodes, static_nodes: &statics, limit: 1000, started: false, setup_complete: true, command: None, place_unassigned: false, reported_unusable: &[] },
        )
        .unwrap();
        assert_eq!(d.changes.register, statics);
        assert!(!d.started, "the registered node has no verdict yet");
    }

    #[test]
    fn a_status_the_node_rewrote_itself_is_put_back_without_a_second_node_down() {
        let mut r = rows();
        r.nodes[0].status = Some("online".into());
        let held_down = NodeInput { decided: Health::Down, ..down() };
        let d = decide_with(&r, &[("a", held_down), ("b", up())], true);
        assert_eq!(d.changes.statuses, vec![("a".to_string(), NodeStatus::Offline)]);
        let kinds: Vec<&str> = d.changes.events.iter().map(|e| e.kind).collect();
        assert!(kinds.contains(&"node_status_restored") && !kinds.contains(&"node_down"), "{kinds:?}");
        let newly_down = decide_with(&r, &[("a", down()), ("b", up())], true);
        assert!(newly_down.changes.events.iter().any(|e| e.kind == "node_down"));
    }

    #[test]
    fn a_manual_move_from_a_node_still_reconciling_is_refused_until_it_is_idle() {
        let busy = NodeInput { idle: false, ..up() };
        let nodes: HashMap<String, NodeInput> = [("a".to_string(), busy), ("b".to_string(), up())].into();
        let command = Command::Move { monitors: vec![1], to: "b".into(), pin: false };
        let inputs = Inputs { nodes: &nodes, static_nodes: &[], limit: 1000, started: true, setup_complete: true, command: Some(&command), place_unassigned: false, reported_unusable: &[] };
        assert_eq!(decide(&rows(), &inputs).unwrap_err(), Refusal::SourceBusy("a".into()));
        let nodes: HashMap<String, NodeInput> = [("a".to_string(), up()), ("b".to_string(), up())].into();
        let inputs = Inputs { nodes: &nodes, ..inputs };
        assert_eq!(decide(&rows(), &inputs).unwrap().changes.moves.len(), 1);
    }

    #[test]
    fn a_manual_move_larger_than_the_targets_budget_is_refused() {
        let nodes: HashMap<String, NodeInput> =
            [("a".to_string(), up()), ("b".to_string(), NodeInput { budget: 2, handover_budget: 1, ..up() })].into();
        let command = Command::Move { monitors: vec![1, 2], to: "b".into(), pin: false };
        let inputs = Inputs { nodes: &nodes, static_nodes: &[], limit: 1000, started: true, setup_complete: true, command: Some(&command), place_unassigned: false, reported_unusable: &[] };
        assert_eq!(decide(&rows(), &inputs).unwrap_err(), Refusal::OverBudget { node: "b".into(), budget: 1 });
        let one = Command::Move { monitors: vec![1, 3], to: "b".into(), pin: false };
        let inputs = Inputs { command: Some(&one), ..inputs };
        assert_eq!(decide(&rows(), &inputs).unwrap().changes.moves.len(), 2, "monitor 3 is on b already: one start");
    }

    /// The rows after `changes` commit, as `store::write` leaves them (for the
    /// columns decisions read).
    fn commit(rows: &mut ClusterRows, changes: &Changes, next_row: &mut i64) {
        rows.nodes.retain(|n| !changes.deletes.contains(&n.id));
        let mut closed: std::collections::HashSet<i64> = changes.close.iter().copied().collect();
        for mv in &changes.moves {
            if let MoveKind::Revert { closes } = &mv.kind {
                closed.extend(closes);
            }
        }
        rows.open_moves.retain(|r| !closed.contains(&r.id));
        for mv in &changes.moves {
            if let Some(m) = rows.monitors.iter_mut().find(|m| m.id == mv.monitor) {
                m.assigned = mv.assigned.clone();
            }
            let Some(reason) = mv.kind.reason() else { continue };
            *next_row += 1;
            if !mv.closed_at_once() {
                let pinned = matches!(mv.kind, MoveKind::Manual { pinned: true });
                rows.open_moves.push(OpenMove { id: *next_row, monitor: mv.monitor, from: mv.from.clone(), to: mv.to.clone(), reason, pinned });
            }
        }
    }

    #[test]
    fn a_year_of_operations_keeps_the_open_ledger_bounded_by_the_displaced_monitors() {
        // a deterministic generator: the same year every run
        let mut seed: u64 = 0x2026_1127;
        let mut draw = |n: usize| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) as usize) % n.max(1)
        };
        let mut rows = ClusterRows::default();
        let mut health: HashMap<String, NodeInput> = HashMap::new();
        let mut next_node = 0;
        let mut add_node = |rows: &mut ClusterRows, health: &mut HashMap<String, NodeInput>| {
            next_node += 1;
            let id = format!("n{next_node}");
            rows.nodes.push(row(&id, "online"));
            health.insert(id, up());
        };
        for _ in 0..5 {
            add_node(&mut rows, &mut health);
        }
        let mut next_monitor = 0;
        for i in 0..200 {
            next_monitor += 1;
            rows.monitors.push(MonitorRow { id: next_monitor, active: true, home: Some(rows.nodes[i % 5].id.clone()), assigned: None });
        }
        let (mut next_row, mut written) = (0i64, 0i64);
        // four operations a day, each decided, then a plain decision to settle
        for step in 0..365 * 4 {
            let ids: Vec<String> = rows.nodes.iter().map(|n| n.id.clone()).collect();
            let ready: Vec<String> = ids.iter().filter(|id| health[*id].health == Health::Up).cloned().collect();
            let pick = |draw: &mut dyn FnMut(usize) -> usize, from: &[String]| from[draw(from.len())].clone();
            let command = match draw(8) {
                0 if ready.len() > 2 => {
                    health.insert(pick(&mut draw, &ready), down());
                    None
                }
                1 => {
                    let downed: Vec<String> = ids.iter().filter(|id| health[*id].health == Health::Down).cloned().collect();
                    if !downed.is_empty() {
                        health.insert(pick(&mut draw, &downed), up());
                    }
                    None
                }
                2 | 3 if !ready.is_empty() => {
                    let monitors = (0..1 + draw(3)).map(|_| rows.monitors[draw(rows.monitors.len())].id).collect();
                    Some(Command::Move { monitors, to: pick(&mut draw, &ready), pin: draw(2) == 0 })
                }
                4 => Some(Command::Rebalance { dry_run: false, max_moves: Some(1 + draw(20)), from_scratch: draw(4) == 0 }),
                5 if rows.monitors.len() > 100 => {
                    rows.monitors.remove(draw(rows.monitors.len()));
                    None
                }
                6 => {
                    next_monitor += 1;
                    let home = pick(&mut draw, &ids);
                    rows.monitors.push(MonitorRow { id: next_monitor, active: true, home: Some(home), assigned: None });
                    None
                }
                7 if step % 40 == 7 && ids.len() > 3 => {
                    // a node is retired for good and a new one joins
                    let node = pick(&mut draw, &ids);
                    add_node(&mut rows, &mut health);
                    Some(Command::DeleteNode { node, force: true })
                }
                _ => None,
            };
            for command in [command, None] {
                let inputs = Inputs {
                    nodes: &health,
                    static_nodes: &[],
                    limit: 1000,
                    started: true,
                    setup_complete: true,
                    command: command.as_ref(),
                    place_unassigned: false,
                    reported_unusable: &[],
                };
                // a refused command (say, a node not ready any more) writes nothing
                if let Ok(decision) = decide(&rows, &inputs) {
                    written += decision.changes.moves.iter().filter(|mv| mv.kind.reason().is_some()).count() as i64;
                    commit(&mut rows, &decision.changes, &mut next_row);
                    if let Some(Command::DeleteNode { node, .. }) = &command {
                        health.remove(node);
                    }
                }
            }
            let exists: std::collections::HashSet<MonitorId> = rows.monitors.iter().map(|m| m.id).collect();
            let mut per_monitor: HashMap<MonitorId, (usize, usize)> = HashMap::new();
            for r in &rows.open_moves {
                assert!(exists.contains(&r.monitor), "day {}: an open row of deleted monitor {}", step / 4, r.monitor);
                let counts = per_monitor.entry(r.monitor).or_default();
                if r.reason.is_displacement() { counts.1 += 1 } else { counts.0 += 1 }
            }
            for (monitor, (operator, displacements)) in &per_monitor {
                let m = rows.monitors.iter().find(|m| m.id == *monitor).unwrap();
                assert!(*operator <= 1, "day {}: monitor {monitor} has {operator} operator rows", step / 4);
                // a chain never visits a node twice: fewer rows than nodes it passed
                let chain: Vec<&OpenMove> = rows.open_moves.iter().filter(|r| r.monitor == *monitor && r.reason.is_displacement()).collect();
                let mut visited: Vec<&str> = chain.iter().map(|r| r.to.as_str()).chain(chain.first().and_then(|r| r.from.as_deref())).collect();
                visited.sort_unstable();
                visited.dedup();
                assert_eq!(visited.len(), chain.len() + usize::from(!chain.is_empty()), "day {}: monitor {monitor} revisits a node: {chain:?}", step / 4);
                let pinned = rows.open_moves.iter().any(|r| r.monitor == *monitor && r.pinned);
                assert!(m.assigned.is_some() || pinned || *displacements > 0, "day {}: monitor {monitor} is at home yet has open rows", step / 4);
            }
        }
        let displaced = rows.monitors.iter().filter(|m| m.assigned.is_some()).count();
        assert!(written > 2_000, "the year moved monitors {written} times");
        assert!(rows.open_moves.len() <= 2 * displaced.max(1) + 10, "{} open rows for {displaced} displaced monitors", rows.open_moves.len());
    }
}
