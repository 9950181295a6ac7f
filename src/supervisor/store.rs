//! Every database query kuma-cluster makes. Callers pass a connection or an open
//! transaction, so a decision's reads and writes share one transaction.

use crate::config::DatabaseSettings;
use crate::core::lease::LeaseRow;
use crate::core::placement::{MonitorId, MoveKind, OpenMove, Reason};
use crate::core::model::{AdminState, Changes, ClusterRows, MonitorRow, NewEvent, NodeRow, NodeStatus};
use chrono::{DateTime, Utc};
use entity::{event_log, monitor, move_ledger, node, node_admin};
use migration::{Migrator, MigratorTrait};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, JoinType, Order, Query};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// Rows per statement for `IN (...)` lists and multi-row inserts: far below the
/// placeholder limits of SQLite and MariaDB.
const CHUNK: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error("cannot create the database directory {path}: {source}")]
    Directory { path: String, source: std::io::Error },
    #[error("no answer from the database within {0:?}")]
    Timeout(std::time::Duration),
    #[error("cannot reach the database at {address}: {cause}")]
    Unreachable { address: String, cause: String },
    /// This replica no longer holds the lease: the decision wrote nothing.
    #[error("fenced: {0}")]
    Fenced(String),
}

impl StoreError {
    /// This error as the start-up reports it: where the database is (never
    /// the password) and why it cannot be reached, in a few words. The pool
    /// keeps retrying a refused or unresolvable address until its acquire
    /// timeout and then only says it timed out, so a timeout is looked into
    /// with one plain TCP connect.
    pub async fn unreachable(self, url: &str) -> StoreError {
        let StoreError::Db(e) = self else { return self };
        let Some(cause) = cause_of(&e.to_string()) else { return StoreError::Db(e) };
        let address = address_of(url);
        let cause = match cause {
            NO_ANSWER if sqlite_path(url).is_none() => tcp_cause(&address).await.unwrap_or(cause),
            cause => cause,
        };
        StoreError::Unreachable { address, cause: cause.to_owned() }
    }
}

const NO_ANSWER: &str = "no answer in time, or the connection broke";

/// What one TCP connect to `address` says, when it fails.
async fn tcp_cause(address: &str) -> Option<&'static str> {
    let connect = tokio::net::TcpStream::connect(address);
    match tokio::time::timeout(std::time::Duration::from_secs(1), connect).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => cause_of(&e.to_string()).or(Some("the host does not answer")),
        Err(_) => Some("the host does not answer"),
    }
}

/// `host:port` of a database URL (the file of a SQLite one), without user or password.
pub fn address_of(url: &str) -> String {
    if let Some(path) = sqlite_path(url) {
        return path.to_owned();
    }
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority.rsplit_once('@').map_or(authority, |(_, host)| host).to_owned()
}

/// Why a connection failed, from the driver's message: refused, DNS,
/// authentication, an unknown database or no answer; `None` for any other error.
fn cause_of(message: &str) -> Option<&'static str> {
    let lower = message.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if has(&["refused"]) {
        Some("connection refused")
    } else if has(&["lookup", "name or service not known", "no such host", "resolve"]) {
        Some("the host name does not resolve (DNS)")
    } else if has(&["access denied", "1045", "authentication", "password"]) {
        Some("authentication failed (user or password)")
    } else if has(&["unknown database", "1049"]) {
        Some("no such database")
    } else if has(&["timed out", "timeout", "broken pipe", "connection reset"]) {
        Some(NO_ANSWER)
    } else {
        None
    }
}

/// Opens the database, creating the SQLite file and its directory when missing.
/// Connecting and waiting for a pooled connection are bounded in time: a
/// database that hangs fails the query instead of freezing its caller.
pub async fn connect(database: &DatabaseSettings) -> Result<DatabaseConnection, StoreError> {
    let url = database.url.as_str();
    if let Some(path) = sqlite_path(url) {
        if let Some(dir) = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::Directory { path: dir.display().to_string(), source })?;
        }
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options.sqlx_logging(false).connect_timeout(database.connect_timeout).acquire_timeout(database.acquire_timeout);
    match Database::connect(options).await {
        Ok(db) => Ok(db),
        Err(e) => Err(StoreError::from(e).unreachable(url).await),
    }
}

/// Like [`connect`], without opening a connection: each query connects as
/// needed. `serve` starts with it, so a database that is not up yet leaves
/// kuma-cluster running, not ready, and retrying.
pub async fn connect_lazily(database: &DatabaseSettings) -> Result<DatabaseConnection, StoreError> {
    let mut options = ConnectOptions::new(database.url.clone());
    options
        .sqlx_logging(false)
        .connect_timeout(database.connect_timeout)
        .acquire_timeout(database.acquire_timeout)
        .connect_lazy(true);
    match Database::connect(options).await {
        Ok(db) => Ok(db),
        Err(e) => Err(StoreError::from(e).unreachable(&database.url).await),
    }
}

fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// kuma-cluster's own tables; Kuma's are the nodes' to create.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), StoreError> {
    Ok(Migrator::up(db, None).await?)
}

/// What the supervisor needs of the Kuma nodes' schema and does not find yet:
/// the `node` table, and the `monitor` table with the cluster patch's
/// ownership columns. Empty once the nodes have created them.
pub async fn missing_kuma_tables(db: &DatabaseConnection) -> Result<Vec<&'static str>, StoreError> {
    let manager = migration::SchemaManager::new(db);
    let mut missing = Vec::new();
    if !manager.has_table("node").await? {
        missing.push("node");
    }
    if !manager.has_table("monitor").await? {
        missing.push("monitor");
    } else {
        for (column, name) in [("node_id", "monitor.node_id"), ("assigned_node", "monitor.assigned_node")] {
            if !manager.has_column("monitor", column).await? {
                missing.push(name);
            }
        }
    }
    Ok(missing)
}

/// Creates the Kuma-shaped `node` and `monitor` tables where missing, with the
/// columns kuma-cluster and the simulated node use, as a cluster-patched node's
/// migrations would. Only for the dev mode and the simulated node: a real
/// cluster's nodes create their own, and fail if one exists already.
pub async fn create_kuma_tables(db: &DatabaseConnection) -> Result<(), StoreError> {
    use migration::{ColumnDef, Index, Table};
    let manager = migration::SchemaManager::new(db);
    let name = Alias::new;
    if !manager.has_table("node").await? {
        let now = Expr::current_timestamp();
        manager
            .create_table(
                Table::create()
                    .table(name("node"))
                    .col(ColumnDef::new(name("node_id")).string_len(50).not_null().primary_key())
                    .col(ColumnDef::new(name("node_name")).string_len(100).not_null())
                    .col(ColumnDef::new(name("location")).string_len(200).null())
                    .col(ColumnDef::new(name("host")).string_len(45).null())
                    .col(ColumnDef::new(name("hostname")).string_len(100).null())
                    .col(ColumnDef::new(name("status")).string_len(20).default("online"))
                    .col(ColumnDef::new(name("active")).boolean().default(true))
                    .col(ColumnDef::new(name("is_primary")).boolean().default(false))
                    .col(ColumnDef::new(name("created_date")).timestamp().default(now.clone()))
                    .col(ColumnDef::new(name("modified_date")).timestamp().default(now.clone()))
                    .col(ColumnDef::new(name("last_seen")).timestamp().default(now))
                    .to_owned(),
            )
            .await?;
        for column in ["node_name", "status", "active", "is_primary"] {
            let index = Index::create().name(format!("idx_node_{column}")).table(name("node")).col(name(column)).to_owned();
            manager.create_index(index).await?;
        }
    }
    if !manager.has_table("monitor").await? {
        manager
            .create_table(
                Table::create()
                    .table(name("monitor"))
                    .col(ColumnDef::new(name("id")).unsigned().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(name("name")).string_len(150).null())
                    .col(ColumnDef::new(name("active")).boolean().not_null().default(true))
                    .col(ColumnDef::new(name("node_id")).string_len(50).null())
                    .col(ColumnDef::new(name("assigned_node")).string_len(255).null())
                    .to_owned(),
            )
            .await?;
        let index = Index::create().name("idx_monitor_node_id").table(name("monitor")).col(name("node_id")).to_owned();
        manager.create_index(index).await?;
    }
    Ok(())
}

/// The node columns the supervisor reads, in the order [`load`] takes them.
const NODE_COLUMNS: [node::Column; 6] = [
    node::Column::NodeId,
    node::Column::NodeName,
    node::Column::Host,
    node::Column::Status,
    node::Column::Active,
    node::Column::IsPrimary,
];

pub async fn load(c: &impl ConnectionTrait) -> Result<ClusterRows, StoreError> {
    let (nodes, unusable_nodes): (Vec<NodeRow>, Vec<NodeRow>) = node::Entity::find()
        .select_only()
        .columns(NODE_COLUMNS)
        .order_by_asc(node::Column::NodeId)
        .into_tuple::<(String, String, Option<String>, Option<String>, Option<bool>, Option<bool>)>()
        .all(c)
        .await?
        .into_iter()
        .map(|(id, name, host, status, active, is_primary)| NodeRow {
            id,
            name,
            host: host.filter(|h| !h.trim().is_empty()),
            status,
            enabled: active.unwrap_or(true),
            is_primary: is_primary.unwrap_or(false),
        })
        // a node takes its id from its configuration, and none can own a blank one
        .partition(|n| !n.id.trim().is_empty());
    let monitors = load_monitors(c).await?;
    let rows = move_ledger::Entity::find()
        .filter(move_ledger::Column::UndoneAt.is_null())
        .order_by_asc(move_ledger::Column::Id)
        .all(c)
        .await?;
    let total = rows.len();
    let open_moves: Vec<OpenMove> = rows
        .into_iter()
        .filter_map(|row| {
            let reason = Reason::parse(&row.reason)?;
            Some(OpenMove {
                id: row.id,
                monitor: row.monitor_id,
                from: row.from_node,
                to: row.to_node,
                reason,
                pinned: row.pinned,
            })
        })
        .collect();
    let unreadable_moves = total - open_moves.len();
    let admin = node_admin::Entity::find()
        .order_by_asc(node_admin::Column::NodeId)
        .all(c)
        .await?
        .into_iter()
        .filter_map(|row| Some((row.node_id, AdminState::parse(&row.state)?)))
        .collect();
    let unusable_nodes = unusable_nodes.into_iter().map(|n| n.id).collect();
    Ok(ClusterRows { nodes, monitors, open_moves, unreadable_moves, admin, unusable_nodes })
}

/// The monitor rows, each node column read as the nodes read it: joined to the
/// node table, so the database's own comparison (MariaDB's default collation
/// ignores case and trailing spaces) says which node a value names, and the
/// node row's id stands for it. A value that names no node stays as stored.
async fn load_monitors(c: &impl ConnectionTrait) -> Result<Vec<MonitorRow>, StoreError> {
    let (m, home, assigned) = (Alias::new("m"), Alias::new("home_row"), Alias::new("assigned_row"));
    let query = Query::select()
        .column((m.clone(), monitor::Column::Id))
        .column((m.clone(), monitor::Column::Active))
        .column((m.clone(), monitor::Column::NodeId))
        .column((m.clone(), monitor::Column::AssignedNode))
        .column((home.clone(), node::Column::NodeId))
        .column((assigned.clone(), node::Column::NodeId))
        .from_as(monitor::Entity, m.clone())
        .join_as(
            JoinType::LeftJoin,
            node::Entity,
            home.clone(),
            Expr::col((home.clone(), node::Column::NodeId)).equals((m.clone(), monitor::Column::NodeId)),
        )
        .join_as(
            JoinType::LeftJoin,
            node::Entity,
            assigned.clone(),
            Expr::col((assigned.clone(), node::Column::NodeId)).equals((m.clone(), monitor::Column::AssignedNode)),
        )
        .order_by((m, monitor::Column::Id), Order::Asc)
        .to_owned();
    let rows = c.query_all(&query).await?;
    rows.iter()
        .map(|row| {
            let named = |value: usize, node_row: usize| -> Result<Option<String>, StoreError> {
                let value: Option<String> = row.try_get_by_index(value)?;
                let node_row: Option<String> = row.try_get_by_index(node_row)?;
                Ok(node_row.or(value))
            };
            let active: Option<bool> = row.try_get_by_index(1)?;
            Ok(MonitorRow {
                id: row.try_get_by_index(0)?,
                // nodes run `active = 1` only: a NULL runs nowhere, like a paused monitor
                active: active == Some(true),
                home: named(2, 4)?,
                assigned: named(3, 5)?,
            })
        })
        .collect()
}

/// Applies one decision's writes. The caller owns the transaction and commits it.
/// `epoch`: the lease epoch of the leader writing, recorded on each ledger row and event.
pub async fn write(c: &impl ConnectionTrait, changes: &Changes, now: DateTime<Utc>, epoch: i64) -> Result<(), StoreError> {
    for n in &changes.register {
        let row = node::ActiveModel {
            node_id: Set(n.id.clone()),
            node_name: Set(n.name.clone()),
            host: Set(Some(n.host.clone())),
            status: NotSet,
            active: Set(Some(n.active)),
            is_primary: Set(Some(n.primary)),
            last_seen: NotSet,
        };
        node::Entity::insert(row).exec_without_returning(c).await?;
    }
    for u in &changes.updates {
        let mut update = node::Entity::update_many();
        if let Some(name) = &u.name {
            update = update.col_expr(node::Column::NodeName, Expr::value(name.clone()));
        }
        if let Some(host) = &u.host {
            update = update.col_expr(node::Column::Host, Expr::value(host.clone()));
        }
        if let Some(active) = u.active {
            update = update.col_expr(node::Column::Active, Expr::value(active));
        }
        if let Some(primary) = u.primary {
            update = update.col_expr(node::Column::IsPrimary, Expr::value(primary));
        }
        update.filter(node::Column::NodeId.eq(u.id.as_str())).exec(c).await?;
    }
    for id in &changes.deletes {
        node_admin::Entity::delete_by_id(id.clone()).exec(c).await?;
        node::Entity::delete_by_id(id.clone()).exec(c).await?;
    }
    for (id, state) in &changes.admin {
        node_admin::Entity::delete_by_id(id.clone()).exec(c).await?;
        if let Some(state) = state {
            let row = node_admin::ActiveModel {
                node_id: Set(id.clone()),
                state: Set(state.as_str().to_owned()),
                since: Set(now),
            };
            node_admin::Entity::insert(row).exec_without_returning(c).await?;
        }
    }
    for (id, status) in &changes.statuses {
        let mut update = node::Entity::update_many().col_expr(node::Column::Status, Expr::value(status.as_str()));
        if *status == NodeStatus::Online {
            update = update.col_expr(node::Column::LastSeen, Expr::current_timestamp());
        }
        update.filter(node::Column::NodeId.eq(id.as_str())).exec(c).await?;
    }

    let mut by_assignment: BTreeMap<Option<&str>, Vec<MonitorId>> = BTreeMap::new();
    for mv in &changes.moves {
        by_assignment.entry(mv.assigned.as_deref()).or_default().push(mv.monitor);
    }
    for (assigned, ids) in by_assignment {
        for chunk in ids.chunks(CHUNK) {
            monitor::Entity::update_many()
                .col_expr(monitor::Column::AssignedNode, Expr::value(assigned.map(str::to_owned)))
                .filter(monitor::Column::Id.is_in(chunk.iter().copied()))
                .exec(c)
                .await?;
        }
    }

    let opened: Vec<move_ledger::ActiveModel> = changes
        .moves
        .iter()
        .filter_map(|mv| {
            let reason = mv.kind.reason()?;
            let pinned = matches!(mv.kind, MoveKind::Manual { pinned: true });
            Some(move_ledger::ActiveModel {
                id: NotSet,
                monitor_id: Set(mv.monitor),
                from_node: Set(mv.from.clone()),
                to_node: Set(mv.to.clone()),
                reason: Set(reason.as_str().to_owned()),
                created_at: Set(now),
                undone_at: Set(mv.closed_at_once().then_some(now)),
                pinned: Set(pinned),
                epoch: Set(Some(epoch)),
            })
        })
        .collect();
    for chunk in opened.chunks(CHUNK) {
        move_ledger::Entity::insert_many(chunk.to_vec()).exec_without_returning(c).await?;
    }

    let closed: Vec<i64> = changes
        .moves
        .iter()
        .flat_map(|mv| match &mv.kind {
            MoveKind::Revert { closes } => closes.as_slice(),
            MoveKind::Displace(_) | MoveKind::Manual { .. } | MoveKind::Rebalance => &[],
        })
        .chain(&changes.close)
        .copied()
        .collect();
    for chunk in closed.chunks(CHUNK) {
        move_ledger::Entity::update_many()
            .col_expr(move_ledger::Column::UndoneAt, Expr::value(now))
            .filter(move_ledger::Column::Id.is_in(chunk.iter().copied()))
            .exec(c)
            .await?;
    }

    let events: Vec<event_log::ActiveModel> = changes.events.iter().map(|e| event_row(e, now, epoch)).collect();
    for chunk in events.chunks(CHUNK) {
        event_log::Entity::insert_many(chunk.to_vec()).exec_without_returning(c).await?;
    }
    Ok(())
}

/// Records an event on its own, for outcomes that have no transaction to ride in
/// (a decision that failed).
pub async fn record_event(c: &impl ConnectionTrait, event: &NewEvent, now: DateTime<Utc>, epoch: i64) -> Result<(), StoreError> {
    event_log::Entity::insert(event_row(event, now, epoch)).exec_without_returning(c).await?;
    Ok(())
}

fn event_row(event: &NewEvent, now: DateTime<Utc>, epoch: i64) -> event_log::ActiveModel {
    event_log::ActiveModel {
        id: NotSet,
        created_at: Set(now),
        kind: Set(event.kind.to_owned()),
        node_id: Set(event.node_id.clone()),
        outcome: Set(event.outcome.to_owned()),
        detail: Set(event.detail.to_string()),
        epoch: Set(Some(epoch)),
    }
}

/// Whether Kuma's first-run setup is done: a `user` row exists. A database without
/// Kuma's `user` table has no setup to wait for.
pub async fn setup_complete(db: &DatabaseConnection) -> Result<bool, StoreError> {
    if !migration::SchemaManager::new(db).has_table("user").await? {
        return Ok(true);
    }
    let query = Query::select().expr(Expr::val(1)).from(Alias::new("user")).limit(1).to_owned();
    Ok(db.query_one(&query).await?.is_some())
}

/// One event log row, as the API shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EventRow {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub kind: String,
    pub node_id: Option<String>,
    pub outcome: String,
    pub detail: serde_json::Value,
}

/// One move ledger row, as the API shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MoveRow {
    pub id: i64,
    pub monitor_id: u32,
    pub from_node: Option<String>,
    pub to_node: String,
    pub reason: String,
    pub created_at: DateTime<Utc>,
    pub undone_at: Option<DateTime<Utc>>,
    pub pinned: bool,
}

/// A page of rows and the number of rows on all pages.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: u64,
    pub per_page: u64,
    pub total: u64,
}

/// The event log, newest first; `page` counts from 1.
pub async fn events(c: &impl ConnectionTrait, page: u64, per_page: u64) -> Result<Page<EventRow>, StoreError> {
    let query = event_log::Entity::find().order_by_desc(event_log::Column::Id);
    page_of(c, query, page, per_page, |e| EventRow {
        id: e.id,
        created_at: e.created_at,
        kind: e.kind,
        node_id: e.node_id,
        outcome: e.outcome,
        detail: serde_json::from_str(&e.detail).unwrap_or(serde_json::Value::String(e.detail)),
    })
    .await
}

/// The move ledger, newest first, optionally only moves from or to `node` and
/// only those with `reason`.
pub async fn moves(
    c: &impl ConnectionTrait,
    page: u64,
    per_page: u64,
    node: Option<&str>,
    reason: Option<Reason>,
) -> Result<Page<MoveRow>, StoreError> {
    let mut query = move_ledger::Entity::find().order_by_desc(move_ledger::Column::Id);
    if let Some(node) = node {
        query = query.filter(
            sea_orm::Condition::any()
                .add(move_ledger::Column::FromNode.eq(node))
                .add(move_ledger::Column::ToNode.eq(node)),
        );
    }
    if let Some(reason) = reason {
        query = query.filter(move_ledger::Column::Reason.eq(reason.as_str()));
    }
    page_of(c, query, page, per_page, |m| MoveRow {
        id: m.id,
        monitor_id: m.monitor_id,
        from_node: m.from_node,
        to_node: m.to_node,
        reason: m.reason,
        created_at: m.created_at,
        undone_at: m.undone_at,
        pinned: m.pinned,
    })
    .await
}

/// One page of `query` (`page` counts from 1) and the number of rows on all pages.
async fn page_of<E, T>(
    c: &impl ConnectionTrait,
    query: sea_orm::Select<E>,
    page: u64,
    per_page: u64,
    row: impl Fn(E::Model) -> T,
) -> Result<Page<T>, StoreError>
where
    E: EntityTrait,
    E::Model: sea_orm::FromQueryResult + Send + Sync,
{
    let pages = query.paginate(c, per_page);
    let total = pages.num_items().await?;
    let items = pages.fetch_page(page.saturating_sub(1)).await?.into_iter().map(row).collect();
    Ok(Page { items, page, per_page, total })
}

/// A node's row as the node admin API shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeInfo {
    pub node_id: String,
    pub node_name: String,
    pub host: Option<String>,
    pub status: Option<String>,
    pub active: bool,
    pub is_primary: bool,
    /// As the database renders it: Kuma stores text on SQLite, a timestamp on MariaDB.
    pub last_seen: Option<String>,
    /// `drain` or `maintenance` when an operator took it out of service.
    pub admin_state: Option<String>,
}

pub async fn nodes(c: &impl ConnectionTrait) -> Result<Vec<NodeInfo>, StoreError> {
    let admin: std::collections::HashMap<String, String> =
        node_admin::Entity::find().all(c).await?.into_iter().map(|a| (a.node_id, a.state)).collect();
    let rows = node::Entity::find()
        .select_only()
        .columns(NODE_COLUMNS)
        .column_as(Expr::cust("CAST(last_seen AS CHAR)"), "last_seen")
        .order_by_asc(node::Column::NodeId)
        .into_model::<NodeColumns>()
        .all(c)
        .await?;
    Ok(rows
        .into_iter()
        .map(|n| NodeInfo {
            admin_state: admin.get(&n.node_id).cloned(),
            node_id: n.node_id,
            node_name: n.node_name,
            host: n.host,
            status: n.status,
            active: n.active.unwrap_or(true),
            is_primary: n.is_primary.unwrap_or(false),
            last_seen: n.last_seen,
        })
        .collect())
}

#[derive(sea_orm::FromQueryResult)]
struct NodeColumns {
    node_id: String,
    node_name: String,
    host: Option<String>,
    status: Option<String>,
    active: Option<bool>,
    is_primary: Option<bool>,
    last_seen: Option<String>,
}

/// A node registering itself at start-up, as a Kuma node does: its row is
/// created, or its address refreshed, with status `online`. Used only by the
/// simulated node, never by the supervisor.
pub async fn register_self(c: &impl ConnectionTrait, id: &str, host: &str) -> Result<(), StoreError> {
    let exists = node::Entity::find_by_id(id.to_owned()).one(c).await?.is_some();
    if exists {
        node::Entity::update_many()
            .col_expr(node::Column::Host, Expr::value(host))
            .col_expr(node::Column::Status, Expr::value("online"))
            .col_expr(node::Column::LastSeen, Expr::current_timestamp())
            .filter(node::Column::NodeId.eq(id))
            .exec(c)
            .await?;
    } else {
        let row = node::ActiveModel {
            node_id: Set(id.to_owned()),
            node_name: Set(id.to_owned()),
            host: Set(Some(host.to_owned())),
            status: Set(Some("online".to_owned())),
            active: NotSet,
            is_primary: NotSet,
            last_seen: NotSet,
        };
        node::Entity::insert(row).exec_without_returning(c).await?;
    }
    Ok(())
}

/// The monitors a node runs, by the contract's rule: active, and assigned to it,
/// or unassigned and homed on it.
pub async fn runnable(c: &impl ConnectionTrait, id: &str) -> Result<Vec<MonitorId>, StoreError> {
    Ok(monitor::Entity::find()
        .select_only()
        .column(monitor::Column::Id)
        .filter(monitor::Column::Active.eq(true))
        .filter(
            sea_orm::Condition::any().add(monitor::Column::AssignedNode.eq(id)).add(
                sea_orm::Condition::all()
                    .add(monitor::Column::AssignedNode.is_null())
                    .add(monitor::Column::NodeId.eq(id)),
            ),
        )
        .order_by_asc(monitor::Column::Id)
        .into_tuple()
        .all(c)
        .await?)
}

/// The online node with the fewest active monitors homed on it, as a Kuma node
/// chooses a home for a monitor created through REST.
pub async fn least_loaded_online_node(c: &impl ConnectionTrait) -> Result<Option<String>, StoreError> {
    let nodes: Vec<String> = node::Entity::find()
        .select_only()
        .column(node::Column::NodeId)
        .filter(node::Column::Status.eq("online"))
        .order_by_asc(node::Column::NodeId)
        .into_tuple()
        .all(c)
        .await?;
    let mut best: Option<(u64, String)> = None;
    for id in nodes {
        let load = monitor::Entity::find()
            .filter(monitor::Column::NodeId.eq(id.as_str()))
            .filter(monitor::Column::Active.eq(true))
            .count(c)
            .await?;
        if best.as_ref().is_none_or(|(least, _)| load < *least) {
            best = Some((load, id));
        }
    }
    Ok(best.map(|(_, id)| id))
}

/// A monitor row as Kuma's REST create writes it (the columns kuma-cluster knows).
pub async fn insert_monitor(c: &impl ConnectionTrait, name: &str, home: &str, active: bool) -> Result<MonitorId, StoreError> {
    let row = monitor::ActiveModel {
        id: NotSet,
        name: Set(Some(name.to_owned())),
        active: Set(active),
        node_id: Set(Some(home.to_owned())),
        assigned_node: NotSet,
    };
    Ok(monitor::Entity::insert(row).exec(c).await?.last_insert_id)
}

/// Active monitors homed on `node`, for the dev mode's demo cluster.
pub async fn seed_monitors(c: &impl ConnectionTrait, node: &str, count: usize) -> Result<(), StoreError> {
    let rows: Vec<monitor::ActiveModel> = (1..=count)
        .map(|i| monitor::ActiveModel {
            id: NotSet,
            name: Set(Some(format!("{node} demo monitor {i}"))),
            active: Set(true),
            node_id: Set(Some(node.to_owned())),
            assigned_node: NotSet,
        })
        .collect();
    for chunk in rows.chunks(CHUNK) {
        monitor::Entity::insert_many(chunk.to_vec()).exec_without_returning(c).await?;
    }
    Ok(())
}

/// The database's own clock in milliseconds since the epoch, as SQL: the
/// lease's expiry is on it, so replicas' clocks may differ.
fn db_now_ms(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Sqlite => "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)",
        _ => "CAST(ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000) AS SIGNED)",
    }
}

fn statement(c: &impl ConnectionTrait, sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    let backend = c.get_database_backend();
    Statement::from_sql_and_values(backend, sql.replace("{now}", db_now_ms(backend)), values)
}

/// The lease row with the database's clock. kuma-cluster's migrations create
/// the row; a missing one is an error that says so.
pub async fn read_lease(c: &impl ConnectionTrait) -> Result<LeaseRow, StoreError> {
    let sql = "SELECT holder, address, epoch, expires_ms, generation, pushes_until_ms, {now} FROM kc_lease WHERE id = 1";
    let row = c
        .query_one_raw(statement(c, sql, vec![]))
        .await?
        .ok_or_else(|| sea_orm::DbErr::RecordNotFound("the lease row of kc_lease (run `kuma-cluster migrate`)".to_owned()))?;
    Ok(LeaseRow {
        holder: row.try_get_by_index(0)?,
        address: row.try_get_by_index(1)?,
        epoch: row.try_get_by_index(2)?,
        expires_ms: row.try_get_by_index(3)?,
        generation: row.try_get_by_index(4)?,
        pushes_until_ms: row.try_get_by_index(5)?,
        now_ms: row.try_get_by_index(6)?,
    })
}

/// Takes the lease for `me` if it is free or expired, raising the epoch; the
/// epoch won, or `None` when another replica holds it.
pub async fn acquire_lease(db: &DatabaseConnection, me: &str, address: Option<&str>, ttl: Duration) -> Result<Option<i64>, StoreError> {
    let txn = db.begin().await?;
    let sql = "UPDATE kc_lease SET holder = ?, address = ?, epoch = epoch + 1, expires_ms = {now} + ? \
               WHERE id = 1 AND (holder IS NULL OR expires_ms <= {now})";
    let values = vec![me.into(), address.map(str::to_owned).into(), (ttl.as_millis() as i64).into()];
    if txn.execute_raw(statement(&txn, sql, values)).await?.rows_affected() != 1 {
        return Ok(None);
    }
    let epoch = read_lease(&txn).await?.epoch;
    txn.commit().await?;
    Ok(Some(epoch))
}

/// Extends `me`'s lease of `epoch` by `ttl` and records how long its pushes may
/// still run; `false` when it no longer holds it (expired or taken).
pub async fn renew_lease(db: &DatabaseConnection, me: &str, epoch: i64, ttl: Duration, pushes_left: Duration) -> Result<bool, StoreError> {
    let sql = "UPDATE kc_lease SET expires_ms = {now} + ?, pushes_until_ms = {now} + ? \
               WHERE id = 1 AND holder = ? AND epoch = ? AND expires_ms > {now}";
    let values = vec![(ttl.as_millis() as i64).into(), (pushes_left.as_millis() as i64).into(), me.into(), epoch.into()];
    Ok(db.execute_raw(statement(db, sql, values)).await?.rows_affected() == 1)
}

/// Gives the lease up at once, so a follower takes over at its next poll
/// rather than after the lease's expiry; the pushes' deadline stays for it.
pub async fn release_lease(db: &DatabaseConnection, me: &str, epoch: i64, pushes_left: Duration) -> Result<(), StoreError> {
    let sql = "UPDATE kc_lease SET holder = NULL, address = NULL, expires_ms = 0, pushes_until_ms = {now} + ? \
               WHERE id = 1 AND holder = ? AND epoch = ?";
    db.execute_raw(statement(db, sql, vec![(pushes_left.as_millis() as i64).into(), me.into(), epoch.into()])).await?;
    Ok(())
}

/// The first statement of every decision's transaction: locks the lease row
/// and checks that `me` still holds it with `epoch`, unexpired. Anything else
/// is [`StoreError::Fenced`] and the transaction writes nothing. SQLite has no
/// row locks: a write that changes nothing takes the database's write lock
/// first, so no renewal or takeover can commit until this transaction ends
/// (and a later write of this transaction never has to wait for one).
pub async fn fence(txn: &DatabaseTransaction, me: &str, epoch: i64) -> Result<(), StoreError> {
    let lock = if txn.get_database_backend() == DbBackend::Sqlite {
        txn.execute_raw(statement(txn, "UPDATE kc_lease SET epoch = epoch WHERE id = 1", vec![])).await?;
        ""
    } else {
        " FOR UPDATE"
    };
    let sql = format!("SELECT holder, epoch, expires_ms > {{now}} FROM kc_lease WHERE id = 1{lock}");
    let row = txn.query_one_raw(statement(txn, &sql, vec![])).await?;
    let (holder, held, live) = match row {
        Some(row) => (row.try_get_by_index::<Option<String>>(0)?, row.try_get_by_index::<i64>(1)?, row.try_get_by_index::<i64>(2)? != 0),
        None => (None, 0, false),
    };
    if holder.as_deref() == Some(me) && held == epoch && live {
        return Ok(());
    }
    Err(StoreError::Fenced(match holder {
        Some(holder) if live => format!("the lease belongs to {holder} with epoch {held}, not to this replica with epoch {epoch}"),
        _ => format!("the lease of epoch {epoch} expired"),
    }))
}

/// Marks a written decision, so followers load it.
pub async fn next_generation(txn: &DatabaseTransaction) -> Result<(), StoreError> {
    txn.execute_raw(statement(txn, "UPDATE kc_lease SET generation = generation + 1 WHERE id = 1", vec![])).await?;
    Ok(())
}

/// A round trip to the database.
pub async fn ping(db: &DatabaseConnection) -> Result<(), StoreError> {
    Ok(db.ping().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_are_read_from_urls() {
        assert_eq!(sqlite_path("sqlite://./data/kc.db?mode=rwc"), Some("./data/kc.db"));
        assert_eq!(sqlite_path("sqlite:/tmp/kc.db"), Some("/tmp/kc.db"));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("mysql://root@localhost/test"), None);
    }

    #[test]
    fn the_database_address_names_host_and_port_and_never_the_password() {
        assert_eq!(address_of("mysql://kuma:s3cret@db.internal:3307/kuma?ssl-mode=disabled"), "db.internal:3307");
        assert_eq!(address_of("mysql://root@127.0.0.1:3306"), "127.0.0.1:3306");
        assert_eq!(address_of("sqlite://./data/kuma-cluster.db?mode=rwc"), "./data/kuma-cluster.db");
    }

    #[test]
    fn a_failed_connection_says_why_in_a_few_words() {
        let cases = [
            ("error communicating with database: Connection refused (os error 111)", "connection refused"),
            ("error communicating with database: failed to lookup address information: Name or service not known", "the host name does not resolve (DNS)"),
            ("error returned from database: 1045 (28000): Access denied for user 'kuma'@'10.0.0.2' (using password: YES)", "authentication failed (user or password)"),
            ("error returned from database: 1049 (42000): Unknown database 'kuma'", "no such database"),
            ("pool timed out while waiting for an open connection", "no answer in time, or the connection broke"),
        ];
        for (message, cause) in cases {
            assert_eq!(cause_of(message), Some(cause), "{message}");
        }
        assert_eq!(cause_of("1064 (42000): You have an error in your SQL syntax"), None, "not a connection failure");
    }
}
