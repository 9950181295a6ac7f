//! The cluster's model as decisions see it: the rows a decision reads and the
//! writes it makes. Shared by `reconcile` (which decides) and the supervisor's
//! store (which reads and writes them); plain data, no IO.

use crate::core::placement::{MonitorId, Move, OpenMove};
use serde::Serialize;

/// A node row as the supervisor reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    pub id: String,
    pub name: String,
    pub host: Option<String>,
    pub status: Option<String>,
    pub enabled: bool,
    pub is_primary: bool,
}

/// A monitor row as the nodes read it. `home` and `assigned` are the node
/// row's own id when the value matches one under the database's comparison
/// (so `'N1 '` reads as `n1` on MariaDB), else the value as stored: `''` is a
/// value, not NULL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitorRow {
    pub id: MonitorId,
    pub active: bool,
    pub home: Option<String>,
    pub assigned: Option<String>,
}

/// Everything a decision reads, taken inside its transaction.
#[derive(Clone, Debug, Default)]
pub struct ClusterRows {
    pub nodes: Vec<NodeRow>,
    pub monitors: Vec<MonitorRow>,
    pub open_moves: Vec<OpenMove>,
    /// Open ledger rows whose reason is not one kuma-cluster writes: left untouched
    /// and out of planning, rather than failing every decision.
    pub unreadable_moves: usize,
    /// Nodes an operator has taken out of service.
    pub admin: Vec<(String, AdminState)>,
    /// Node rows whose id no node can own (empty, or only spaces): left out of
    /// `nodes`, so they are never a target and their monitors are placed elsewhere.
    pub unusable_nodes: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    Online,
    Offline,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Online => "online",
            NodeStatus::Offline => "offline",
        }
    }
}

/// One row for the event log; written in the transaction of the action it records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: &'static str,
    pub node_id: Option<String>,
    pub outcome: &'static str,
    pub detail: serde_json::Value,
}

/// A node row to insert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    pub id: String,
    pub name: String,
    pub host: String,
    pub active: bool,
    pub primary: bool,
}

/// Columns of a node row to change; `None` leaves a column as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeUpdate {
    pub id: String,
    pub name: Option<String>,
    pub host: Option<String>,
    pub active: Option<bool>,
    pub primary: Option<bool>,
}

/// All writes of one decision.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    pub register: Vec<NodeSpec>,
    pub updates: Vec<NodeUpdate>,
    pub deletes: Vec<String>,
    /// A node's administrative state: set, or cleared with `None`.
    pub admin: Vec<(String, Option<AdminState>)>,
    pub statuses: Vec<(String, NodeStatus)>,
    pub moves: Vec<Move>,
    pub close: Vec<i64>,
    pub events: Vec<NewEvent>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.register.is_empty()
            && self.updates.is_empty()
            && self.deletes.is_empty()
            && self.admin.is_empty()
            && self.statuses.is_empty()
            && self.moves.is_empty()
            && self.close.is_empty()
            && self.events.is_empty()
    }
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

