//! ClusterActor: the only writer. Every trigger (a node transition, the reconcile
//! tick, a request) runs one decision: read the rows, decide with
//! [`reconcile::decide`], write the difference and commit, all in one transaction;
//! then publish the routing snapshot and ask the affected nodes to reconcile.
//! Decisions never overlap: a trigger during one makes exactly one more follow it.
//!
//! With several replicas on one database, only the one holding the leader
//! lease decides, writes and pushes; each decision's transaction first checks
//! the lease (`store::fence`). The others follow: they probe every node with
//! their own NodeActors, so traffic leaves a dead node at once, and load the
//! committed rows whenever the lease says a newer decision was written.

use crate::config::{HealthSettings, Settings};
use crate::core::health::{FlapDamper, Health};
use crate::core::model::{NewEvent, NodeSpec};
use crate::core::placement::{MonitorId, Move};
use crate::core::reconcile::{self, Command, Decision, DecisionSummary, Inputs, NodeInput, RebalanceReport, Refusal};
use crate::core::lease::LeaseRow;
use crate::core::routing::RoutingTable;
use crate::metrics::Metrics;
use crate::core::waves::Pace;
use crate::supervisor::actors::node::{
    ClockSeen, GetNodeState, Grace, NodeActor, NodeState, NodeTransition, ProbeNow, Reports, Retire, SetHost,
};
use crate::supervisor::clock::Clock;
use crate::supervisor::leadership::{base_url, HaState, Leadership};
use crate::supervisor::probe::Probe;
use crate::supervisor::publisher::RoutingPublisher;
use crate::supervisor::push::{PushError, ReconcilePush};
use crate::supervisor::pushes::{Ask, Handovers, Pushes};
use crate::supervisor::queue::{DecisionQueue, Next, Outcome};
use crate::supervisor::reports::FrontReport;
use crate::supervisor::store::{self, StoreError};
use crate::supervisor::vitals::VitalSigns;
use actix::prelude::*;
use sea_orm::{DatabaseConnection, TransactionTrait};
use serde::Serialize;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

pub use crate::supervisor::queue::ApplyError;

/// Run a decision now and answer once one that started after this request has
/// finished.
#[derive(Message)]
#[rtype(result = "Result<DecisionSummary, String>")]
pub struct Reconcile;

#[derive(Message)]
#[rtype(result = "ClusterState")]
pub struct GetClusterState;

/// Apply an operator's command in one transaction; answers once it committed or
/// was refused.
#[derive(Message)]
#[rtype(result = "Result<DecisionSummary, ApplyError>")]
pub struct Apply(pub Command);

/// Every member with its NodeActor's probe state, for the status API.
#[derive(Message)]
#[rtype(result = "Vec<NodeDetail>")]
pub struct GetNodeDetails;

#[derive(Clone, Debug, Serialize)]
pub struct NodeDetail {
    #[serde(flatten)]
    pub member: MemberState,
    /// `None` if the NodeActor did not answer (it is being replaced).
    pub probe: Option<NodeState>,
}

/// Finish the decision in flight, start no other, stop the NodeActors.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// A report from the front door: this replica's, or (through the operations
/// API) a follower's that the leader acts on.
pub struct Reported(pub FrontReport);

impl Message for Reported {
    type Result = ();
}

/// A reconcile push to this node ended (`Ok`), or failed.
struct PushEnded {
    node_id: String,
    /// Its number among the pushes to the node.
    push: u64,
    starts: usize,
    result: Result<(), PushError>,
}

impl Message for PushEnded {
    type Result = ();
}

/// A held push to a new owner may have reached its deadline.
struct HandoverDue;

impl Message for HandoverDue {
    type Result = ();
}

/// A push queued behind a failed one may be due now.
struct PushDue(String);

impl Message for PushDue {
    type Result = ();
}

/// Self-tick: renew the lease (the leader) or read it (a follower).
struct LeaseTick;

impl Message for LeaseTick {
    type Result = ();
}

/// Self-tick: look again whether the Kuma nodes have created their tables.
struct CheckSchema;

impl Message for CheckSchema {
    type Result = ();
}

/// How often the supervisor looks for the nodes' tables while they are missing,
/// and how often it says that it still waits.
const SCHEMA_RETRY: Duration = Duration::from_secs(2);
const SCHEMA_LOG_EVERY: Duration = Duration::from_secs(30);
/// The longest wait between two attempts to reach the database at start-up.
const CONNECT_RETRY_MAX: Duration = Duration::from_secs(30);
/// How long a follower waits for the leader to take a monitor write's report.
const RELAY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the database is pinged while decisions fail.
const DATABASE_WATCH: Duration = Duration::from_millis(500);

/// Self-tick: periodic repair, end of a hold-down, or a retry after a failure.
struct ReconcileTick;

impl Message for ReconcileTick {
    type Result = ();
}

/// The last rebalance, for `/lb/rebalancing-status`.
#[derive(Clone, Debug, Serialize)]
pub struct RebalanceStatus {
    pub at: chrono::DateTime<chrono::Utc>,
    pub dry_run: bool,
    pub from_scratch: bool,
    pub max_moves: Option<usize>,
    pub moves: usize,
    pub spread_before: usize,
    pub spread_after: usize,
    pub duration_ms: u64,
}

impl RebalanceStatus {
    fn of(report: &RebalanceReport, took: Duration) -> Self {
        RebalanceStatus {
            at: chrono::Utc::now(),
            dry_run: report.dry_run,
            from_scratch: report.from_scratch,
            max_moves: report.max_moves,
            moves: report.planned,
            spread_before: report.spread_before,
            spread_after: report.spread_after,
            duration_ms: took.as_millis() as u64,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct MemberState {
    pub node_id: String,
    pub host: Option<String>,
    pub health: Health,
    pub settled: bool,
    pub damped: bool,
    pub flap_count: usize,
    /// Down on timeouts alone while too many nodes looked dead at once: the
    /// verdict is held and the node kept in service.
    pub held: bool,
    /// A reconcile of ours may run on it: it gets no new monitors.
    pub busy: bool,
    /// New monitors it may be given now, before its next cron.
    pub budget: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClusterState {
    /// Every node has had its first verdict; nothing is written before.
    pub started: bool,
    /// Kuma tables (or columns) the nodes have not created yet; the supervisor
    /// decides nothing until this is empty.
    pub waiting_for: Vec<String>,
    pub generation: u64,
    pub nodes: Vec<MemberState>,
    pub stranded: usize,
    /// Active monitors with neither a home nor an override (the nodes' "NA"),
    /// left unplaced unless `placement.place_unassigned`.
    pub unassigned: usize,
    /// Node rows whose id no node can own (empty or blank): never a target.
    pub unusable_nodes: Vec<String>,
    /// Monitors the last decision left for a later wave.
    pub deferred: usize,
    /// Down verdicts on timeouts alone held back, since start.
    pub held_verdicts: u64,
    /// Open ledger rows with a reason kuma-cluster does not know; left alone.
    pub unreadable_moves: usize,
    pub decisions: u64,
    pub failed_decisions: u64,
    /// Failed decisions whose commit was under way: they may have committed,
    /// so their nodes were told to reconcile and the model was read again.
    pub uncertain_commits: u64,
    pub moves: u64,
    pub last_decision: Option<DecisionSummary>,
    pub last_error: Option<String>,
    pub retry_in_ms: Option<u64>,
    pub last_rebalance: Option<RebalanceStatus>,
    /// A rebalance command is running or queued.
    pub rebalancing: bool,
    /// This replica's part in the leader lease.
    pub ha: HaState,
}

/// What the ClusterActor needs from the outside world.
pub struct ClusterDeps {
    pub db: DatabaseConnection,
    pub settings: Arc<Settings>,
    pub clock: Arc<dyn Clock>,
    pub probe: Rc<dyn Probe>,
    pub publisher: RoutingPublisher,
    /// What the front door reports: failed connects, monitor writes.
    pub reports: mpsc::Receiver<FrontReport>,
    pub metrics: Arc<Metrics>,
    /// What readiness reads: written here as decisions commit or fail.
    pub vitals: VitalSigns,
}

struct Member {
    host: Option<String>,
    /// As decisions see it: a held weak verdict leaves it `Up`.
    health: Health,
    /// The NodeActor's verdict is down on timeouts alone.
    weak_down: bool,
    up_since: Option<Instant>,
    flap: FlapDamper,
    /// Node clock minus ours, in milliseconds.
    offset_ms: i64,
    /// The health the last committed decision saw.
    decided: Health,
    actor: Addr<NodeActor>,
}

impl Member {
    fn held(&self) -> bool {
        self.weak_down && self.health == Health::Up
    }
}

pub struct ClusterActor {
    db: DatabaseConnection,
    settings: Arc<Settings>,
    health_settings: Rc<HealthSettings>,
    /// `nodes.static` as rows to register, converted once.
    static_nodes: Arc<Vec<NodeSpec>>,
    clock: Arc<dyn Clock>,
    probe: Rc<dyn Probe>,
    publisher: RoutingPublisher,
    reports: Option<mpsc::Receiver<FrontReport>>,
    metrics: Arc<Metrics>,
    push: Rc<ReconcilePush>,
    pushes: Pushes,
    handovers: Handovers,
    pace: Pace,
    members: BTreeMap<String, Member>,
    /// What the nodes' schema still lacks: `None` until first looked at, then
    /// empty once everything is there.
    missing_tables: Option<Vec<&'static str>>,
    schema_logged: Option<Instant>,
    started: bool,
    setup_complete: bool,
    queue: DecisionQueue,
    last_rebalance: Option<RebalanceStatus>,
    /// The tick that decides the next wave, while one is planned.
    wave_timer: Option<SpawnHandle>,
    /// kuma-cluster's own tables exist (its migrations ran in this process).
    migrated: bool,
    /// A failed decision waits for its retry, and the database is pinged meanwhile.
    watching_database: bool,
    /// Failed attempts in a row to reach the database before it first answered.
    connect_attempts: u32,
    stranded: usize,
    unassigned: usize,
    /// Unusable node ids as last committed: the event log has been told.
    unusable_nodes: Arc<Vec<String>>,
    deferred: usize,
    held_verdicts: u64,
    decisions: u64,
    failed_decisions: u64,
    moves: u64,
    last_decision: Option<DecisionSummary>,
    last_error: Option<String>,
    /// The routing table of the last commit: what a failed decision falls back to.
    committed_table: RoutingTable,
    /// Last count of unreadable ledger rows, so the warning is logged once per change.
    unreadable_moves: usize,
    uncertain_commits: u64,
    vitals: VitalSigns,
    leadership: Leadership,
    /// The lease loop runs (it starts once kuma-cluster's tables exist).
    leasing: bool,
    /// A shutdown began: the lease is released and not taken again.
    shutting_down: bool,
    /// The next lease tick, replaced when one is scheduled sooner.
    lease_timer: Option<SpawnHandle>,
}

/// What a decision's transaction produced: the decision, whether Kuma's setup is
/// complete, how long it took, and whether it committed (a dry run does not).
struct Decided {
    decision: Decision,
    /// The health of each node the decision saw.
    healths: Vec<(String, Health)>,
    setup_complete: bool,
    took: Duration,
    committed: bool,
}

impl ClusterActor {
    pub fn new(deps: ClusterDeps) -> Self {
        let settings = deps.settings;
        ClusterActor {
            db: deps.db,
            health_settings: Rc::new(settings.health.clone()),
            static_nodes: Arc::new(settings.nodes.static_nodes.iter().map(|s| s.spec()).collect()),
            push: Rc::new(ReconcilePush::new(settings.nodes.auth_header.clone())),
            pushes: Pushes::default(),
            handovers: Handovers::default(),
            pace: settings.nodes.pace,
            leadership: Leadership::new(settings.ha.replica_id.clone(), settings.ha.advertise.clone()),
            leasing: false,
            shutting_down: false,
            lease_timer: None,
            settings,
            clock: deps.clock,
            probe: deps.probe,
            publisher: deps.publisher,
            reports: Some(deps.reports),
            metrics: deps.metrics,
            vitals: deps.vitals,
            members: BTreeMap::new(),
            missing_tables: None,
            schema_logged: None,
            started: false,
            setup_complete: false,
            queue: DecisionQueue::new(),
            last_rebalance: None,
            wave_timer: None,
            migrated: false,
            watching_database: false,
            connect_attempts: 0,
            stranded: 0,
            unassigned: 0,
            unusable_nodes: Arc::default(),
            deferred: 0,
            held_verdicts: 0,
            decisions: 0,
            failed_decisions: 0,
            moves: 0,
            last_decision: None,
            last_error: None,
            committed_table: RoutingTable::default(),
            unreadable_moves: 0,
            uncertain_commits: 0,
        }
    }

    fn input(&self, id: &str, member: &Member, now: Instant) -> NodeInput {
        let window = self.settings.cluster.flap_window;
        let stable = !member.flap.is_damped(now, window);
        let settled = stable
            && member.health == Health::Up
            && member.up_since.is_some_and(|t| now.saturating_duration_since(t) >= self.settings.cluster.hold_down);
        let (node_ms, busy) = (self.clock.wall_ms() + member.offset_ms, self.busy(id, now));
        NodeInput {
            health: member.health,
            stable,
            settled,
            budget: self.pace.budget(node_ms, busy),
            handover_budget: self.pace.handover_budget(node_ms, busy),
            idle: !busy,
            decided: member.decided,
        }
    }

    /// A reconcile of ours may run on `node`, or its push is held for a
    /// handover: it takes no new work.
    fn busy(&self, node: &str, now: Instant) -> bool {
        self.pushes.busy(node, now) || self.handovers.holds(node)
    }

    /// Asks `node` to reconcile a change that starts `starts` monitors there,
    /// one push at a time.
    fn push_to(&mut self, node: &str, starts: usize, ctx: &mut Context<Self>) {
        if self.leadership.leading(Instant::now()).is_none() {
            return;
        }
        match self.pushes.request(node, starts, self.clock.now()) {
            Ask::Send => self.send_push(node, starts, ctx),
            Ask::Queued => {}
            Ask::After(wait) => {
                ctx.notify_later(PushDue(node.to_owned()), wait);
            }
        }
    }

    /// Sends a push the bookkeeping marked in flight. The node answers when its
    /// reconcile is done: the timeout grows with the work. The lease is renewed
    /// first, with the push's deadline in it: a replica that lost the lease
    /// pushes nothing, and a successor waits for this push to end.
    fn send_push(&mut self, node: &str, starts: usize, ctx: &mut Context<Self>) {
        let Some(member) = self.members.get(node) else {
            self.pushes.forget(node);
            return;
        };
        let (Some(host), Some(epoch)) = (member.host.clone(), self.leadership.leading(Instant::now())) else {
            self.pushes.finished(node, Duration::ZERO, self.clock.now());
            return;
        };
        member.actor.do_send(Grace(true));
        let timeout = self.settings.nodes.reconcile_timeout + self.pace.reconcile_time(starts) * 2;
        let sent = Instant::now();
        self.leadership.push_sent(sent + timeout);
        let renewal = self.renewal(epoch, sent);
        let (node_id, push) = (node.to_owned(), self.pushes.last(node));
        let request = self.push.send(&host, timeout);
        let guarded = async move {
            match renewal.await {
                Ok(true) => (Some(true), request.await),
                Ok(false) => (Some(false), Err(PushError::Lease("this replica no longer holds the lease".to_owned()))),
                Err(error) => (None, Err(PushError::Lease(format!("the lease could not be renewed first: {error}")))),
            }
        };
        ctx.spawn(guarded.into_actor(self).map(move |(renewed, result), act, ctx| {
            match renewed {
                Some(true) => act.leadership.renewed(sent, act.settings.ha.lease_ttl),
                Some(false) => act.step_down("the lease expired or another replica took it", ctx),
                None => {}
            }
            ctx.notify(PushEnded { node_id, push, starts, result });
        }));
    }

    /// How long `node` may be busy when its own cron does a reconcile that
    /// starts `starts` monitors: until the tick, then the starts, then the margin.
    fn cron_work(&self, node: &str, starts: usize) -> Duration {
        let offset = self.members.get(node).map_or(0, |m| m.offset_ms);
        self.pace.until_cron(self.clock.wall_ms() + offset) + self.pace.reconcile_time(starts) + self.pace.margin
    }

    /// Why this replica decides nothing, if it does not hold the lease. Before
    /// the lease is first looked at, requests wait instead.
    fn not_leading(&self) -> Option<String> {
        let unknown = !self.leadership.looked();
        (!unknown && self.leadership.leading(Instant::now()).is_none()).then(|| match self.leadership.state(Instant::now()).leader_id {
            Some(leader) => format!("this replica does not lead; {leader} does"),
            None => "no replica leads yet".to_owned(),
        })
    }

    /// Why nothing can be decided, if so: the nodes' tables are missing. While
    /// they are not yet looked at, requests wait in the queue instead.
    fn not_ready(&self) -> Option<String> {
        match &self.missing_tables {
            Some(missing) if !missing.is_empty() => {
                Some(format!("waiting for the Kuma nodes to create {}", missing.join(", ")))
            }
            _ => None,
        }
    }

    /// Creates kuma-cluster's own tables once, then looks whether the nodes
    /// have created theirs; decides once they have. A database that cannot be
    /// reached is tried again with backoff, one log line per attempt.
    fn check_schema(&mut self, ctx: &mut Context<Self>) {
        let (db, migrated, url) = (self.db.clone(), self.migrated, self.settings.database.url.clone());
        let look = async move {
            let looked = async {
                if !migrated {
                    store::migrate(&db).await?;
                }
                store::missing_kuma_tables(&db).await
            };
            match looked.await {
                Ok(missing) => Ok(missing),
                Err(error) => Err(error.unreachable(&url).await),
            }
        };
        ctx.spawn(look.into_actor(self).map(|result, act, ctx| {
            let now = act.clock.now();
            let say = act.schema_logged.is_none_or(|t| now.saturating_duration_since(t) >= SCHEMA_LOG_EVERY);
            let result = match result {
                Ok(missing) => {
                    act.migrated = true;
                    act.connect_attempts = 0;
                    if !act.leasing {
                        act.leasing = true;
                        ctx.notify(LeaseTick);
                    }
                    Ok(missing)
                }
                Err(error @ StoreError::Unreachable { .. }) => {
                    act.connect_attempts += 1;
                    let wait = (SCHEMA_RETRY * 2u32.pow(act.connect_attempts.min(5) - 1)).min(CONNECT_RETRY_MAX);
                    tracing::warn!(attempt = act.connect_attempts, retry_in_s = wait.as_secs(), "{error}; not ready");
                    act.vitals.update(|v| v.failing = Some(error.to_string()));
                    ctx.notify_later(CheckSchema, wait);
                    return;
                }
                Err(error) => Err(error),
            };
            if let Ok(missing) = &result {
                act.vitals.update(|v| {
                    v.last_contact = Some(Instant::now());
                    v.failing = None;
                    v.waiting_for = missing.iter().map(|t| t.to_string()).collect();
                });
            }
            match result {
                Ok(missing) if missing.is_empty() => {
                    if act.missing_tables.as_ref().is_some_and(|m| !m.is_empty()) {
                        tracing::info!("the Kuma nodes have created their tables; supervision starts");
                    }
                    act.missing_tables = Some(missing);
                    act.request(ctx, None);
                    return;
                }
                Ok(missing) => {
                    if say {
                        tracing::warn!(missing = %missing.join(", "), "waiting for the Kuma nodes to create their tables; not ready");
                        act.schema_logged = Some(now);
                    }
                    act.missing_tables = Some(missing);
                }
                Err(error) => {
                    act.vitals.update(|v| v.failing = Some(format!("cannot read the schema: {error}")));
                    if say {
                        tracing::warn!(error = %error, "cannot look for the Kuma nodes' tables; not ready");
                        act.schema_logged = Some(now);
                    }
                }
            }
            ctx.notify_later(CheckSchema, SCHEMA_RETRY);
        }));
    }

    fn request(&mut self, ctx: &mut Context<Self>, waiter: Option<oneshot::Sender<Result<DecisionSummary, String>>>) {
        if let Some(reason) = self.refusal() {
            if let Some(waiter) = waiter {
                let _ = waiter.send(Err(reason));
            }
            return;
        }
        if self.queue.trigger(waiter) && self.may_decide() {
            self.start_decision(ctx);
        }
    }

    /// Why a request or command is answered at once, without a decision: the
    /// nodes' tables are missing, or another replica leads (while shutting
    /// down, the queue says so instead).
    fn refusal(&self) -> Option<String> {
        self.not_ready().or_else(|| (!self.shutting_down).then(|| self.not_leading()).flatten())
    }

    /// The nodes' tables and the lease have been looked at: a decision can
    /// start, or be refused for a reason.
    fn may_decide(&self) -> bool {
        self.missing_tables.is_some() && self.leadership.looked()
    }

    /// Reads, decides and writes in one transaction, off the actor; its end
    /// comes back to [`ClusterActor::decided`].
    fn start_decision(&mut self, ctx: &mut Context<Self>) {
        let Some(epoch) = self.leadership.leading(Instant::now()) else {
            // the lease was lost while this decision waited: it ends unwritten
            let reason = self.not_leading().unwrap_or_default();
            self.queue.start();
            if self.queue.finish(Outcome::Failed(reason), self.clock.now()) == Next::Start {
                self.start_decision(ctx);
            }
            return;
        };
        let me = self.leadership.me().to_owned();
        let command = self.queue.start();
        let now = self.clock.now();
        let nodes: HashMap<String, NodeInput> =
            self.members.iter().map(|(id, m)| (id.clone(), self.input(id, m, now))).collect();
        let db = self.db.clone();
        let settings = self.settings.clone();
        let static_nodes = self.static_nodes.clone();
        let reported_unusable = self.unusable_nodes.clone();
        let (started, setup_known) = (self.started, self.setup_complete);
        let healths: Vec<(String, Health)> = nodes.iter().map(|(id, i)| (id.clone(), i.health)).collect();
        // the moves of a commit under way: if it ends in an error or the
        // deadline, it may have happened all the same
        let committing: Rc<Cell<Option<Vec<Move>>>> = Rc::default();
        let under_way = committing.clone();
        let deadline = self.settings.cluster.decision_timeout;
        let run = async move {
            let begun = Instant::now();
            let setup_complete = setup_known || store::setup_complete(&db).await?;
            let txn = db.begin().await?;
            store::fence(&txn, &me, epoch).await?;
            let rows = store::load(&txn).await?;
            let inputs = Inputs {
                nodes: &nodes,
                static_nodes: &static_nodes,
                limit: settings.placement.limit_per_node,
                started,
                setup_complete,
                command: command.as_ref(),
                place_unassigned: settings.placement.place_unassigned,
                reported_unusable: &reported_unusable,
            };
            // a refusal drops the transaction unwritten: it rolls back
            let decision = match reconcile::decide(&rows, &inputs) {
                Ok(decision) => decision,
                Err(refusal) => return Ok(Err(refusal)),
            };
            // a dry run only reports: its transaction is dropped unwritten
            let committed = !command.as_ref().is_some_and(Command::is_dry_run);
            if committed {
                if !decision.changes.is_empty() {
                    store::write(&txn, &decision.changes, chrono::Utc::now(), epoch).await?;
                    store::next_generation(&txn).await?;
                }
                under_way.set(Some(decision.changes.moves.clone()));
                txn.commit().await?;
            }
            Ok::<_, StoreError>(Ok(Decided { decision, healths, setup_complete, took: begun.elapsed(), committed }))
        };
        let bounded = async move {
            let result = actix_rt::time::timeout(deadline, run).await.unwrap_or(Err(StoreError::Timeout(deadline)));
            let uncertain = if result.is_err() { committing.take() } else { None };
            (result, uncertain)
        };
        ctx.spawn(bounded.into_actor(self).map(|(result, uncertain), act, ctx| {
            if let Some(moves) = uncertain {
                act.may_have_committed(&moves, ctx);
            }
            act.decided(result, ctx)
        }));
    }

    /// A commit ended in an error or the deadline: it may have happened. It is
    /// not taken for a rollback: every node its moves touch is told to
    /// reconcile (a node finds nothing new if it did not happen), and the retry
    /// reads the whole model from the database again.
    fn may_have_committed(&mut self, moves: &[Move], ctx: &mut Context<Self>) {
        tracing::warn!(moves = moves.len(), "a commit was under way when the decision failed: it may have happened; its nodes reconcile");
        self.uncertain_commits += 1;
        self.push_moves(moves, ctx);
    }

    fn decided(&mut self, result: Result<Result<Decided, Refusal>, StoreError>, ctx: &mut Context<Self>) {
        let outcome = match result {
            Ok(Ok(Decided { decision, healths, setup_complete, took, committed })) => {
                self.setup_complete = setup_complete;
                if committed {
                    for (id, health) in healths {
                        if let Some(member) = self.members.get_mut(&id) {
                            member.decided = health;
                        }
                    }
                }
                if let Some(report) = &decision.rebalance {
                    self.last_rebalance = Some(RebalanceStatus::of(report, took));
                }
                if committed {
                    Outcome::Committed(self.committed(decision, took, ctx))
                } else {
                    Outcome::DryRun(decision.summary(took.as_millis() as u64))
                }
            }
            Ok(Err(refusal)) => Outcome::Refused(refusal),
            Err(error) => Outcome::Failed(self.failed(error, ctx)),
        };
        let failed = matches!(outcome, Outcome::Failed(_));
        let next = self.queue.finish(outcome, self.clock.now());
        if failed {
            if let Some(retry) = self.queue.retry_in(self.clock.now()) {
                ctx.notify_later(ReconcileTick, retry);
                if !self.watching_database {
                    self.watching_database = true;
                    ctx.run_later(DATABASE_WATCH, Self::look_at_database);
                }
            }
        }
        if next == Next::Start {
            self.start_decision(ctx);
        }
    }

    /// While the last decision failed, looks every [`DATABASE_WATCH`] whether
    /// the database answers again, and decides at once when it does: a failover
    /// held up by an outage commits moments after the database is back, not at
    /// the end of a back-off that grew during the outage.
    fn look_at_database(&mut self, ctx: &mut Context<Self>) {
        if self.queue.retry_in(self.clock.now()).is_none() {
            self.watching_database = false;
            return;
        }
        let db = self.db.clone();
        let ping = async move { actix_rt::time::timeout(DATABASE_WATCH, store::ping(&db)).await };
        ctx.spawn(ping.into_actor(self).map(|answer, act, ctx| {
            if matches!(answer, Ok(Ok(()))) {
                act.watching_database = false;
                act.request(ctx, None);
            } else {
                ctx.run_later(DATABASE_WATCH, Self::look_at_database);
            }
        }));
    }

    fn committed(&mut self, decision: Decision, took: Duration, ctx: &mut Context<Self>) -> DecisionSummary {
        self.decisions += 1;
        self.last_error = None;
        self.vitals.update(|v| {
            v.last_contact = Some(Instant::now());
            v.failing = None;
        });
        if decision.started && !self.started {
            self.started = true;
            tracing::info!(nodes = self.members.len(), "every node has a verdict; supervision begins");
        }
        let summary = decision.summary(took.as_millis() as u64);
        self.sync_members(&decision.members, ctx);
        self.committed_table = decision.table;
        self.publish_with_current_health();

        self.push_moves(&decision.changes.moves, ctx);

        self.moves += summary.moves as u64;
        self.metrics.decided(took, true);
        for mv in &decision.changes.moves {
            self.metrics.moved(mv.kind.label(), 1);
        }
        if summary.wrote {
            tracing::info!(
                displaced = summary.displaced,
                reverted = summary.reverted,
                ledger_closed = summary.ledger_closed,
                status_changes = summary.status_changes,
                duration_ms = summary.duration_ms,
                "decision committed"
            );
        }
        if decision.over_capacity > 0 {
            tracing::warn!(monitors = decision.over_capacity, "every ready node is at its limit; placed beyond it");
        }
        match (self.stranded, decision.stranded.len()) {
            (0, n) if n > 0 => tracing::error!(monitors = n, "no ready node: monitors are not running anywhere"),
            (was, 0) if was > 0 => tracing::info!(monitors = was, "a node is ready again; stranded monitors placed"),
            _ => {}
        }
        self.stranded = decision.stranded.len();
        self.unassigned = decision.unassigned;
        if *self.unusable_nodes != decision.unusable_nodes {
            if !decision.unusable_nodes.is_empty() {
                tracing::warn!(node_ids = ?decision.unusable_nodes, "node rows with an id no node can own are never a target");
            }
            self.unusable_nodes = Arc::new(decision.unusable_nodes.clone());
        }
        self.deferred = decision.deferred;
        if decision.deferred > 0 {
            self.next_wave(ctx);
        }
        if decision.unreadable_moves != self.unreadable_moves {
            self.unreadable_moves = decision.unreadable_moves;
            if decision.unreadable_moves > 0 {
                tracing::warn!(rows = decision.unreadable_moves, "open ledger rows with an unknown reason are left alone");
            }
        }
        self.last_decision = Some(summary.clone());
        summary
    }

    /// Asks both ends of every move to reconcile: the old owner stops it (a node
    /// held down that still answers stops it too; a dead one refuses), the new
    /// one starts it. Where the old owner is alive, the new owner's push waits
    /// until the old owner's ended, so the monitor never runs on both; but no
    /// longer than its own reconcile still fits before its next cron. Past
    /// that, no push: its cron starts them, after the old owner stopped them.
    fn push_moves(&mut self, moves: &[Move], ctx: &mut Context<Self>) {
        // each node's work, in starts: Kuma stops about twice as fast as it starts
        let mut starts: BTreeMap<&str, usize> = BTreeMap::new();
        let mut stops: BTreeMap<&str, usize> = BTreeMap::new();
        // each old owner's stops ride on its next push, numbered before any is sent
        let mut live_sources: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
        // a move to where the monitor runs already (a pin) changes no node's work
        for mv in moves.iter().filter(|mv| mv.from.as_deref() != Some(mv.to.as_str())) {
            *starts.entry(mv.to.as_str()).or_default() += 1;
            if let Some(from) = mv.from.as_deref() {
                starts.entry(from).or_default();
                *stops.entry(from).or_default() += 1;
                if self.members.get(from).is_some_and(|m| m.health == Health::Up && m.host.is_some()) {
                    live_sources.entry(mv.to.as_str()).or_default().insert(from.to_owned(), self.pushes.next(from));
                }
            }
        }
        let losing: BTreeSet<String> = live_sources.values().flat_map(|s| s.keys()).cloned().collect();
        let (now, wall) = (self.clock.now(), self.clock.wall_ms());
        for (node, gained) in starts {
            let work = gained + stops.get(node).map_or(0, |n| n.div_ceil(2));
            let sources = live_sources.remove(node).filter(|_| !losing.contains(node));
            let Some(sources) = sources else {
                self.push_to(node, work, ctx);
                continue;
            };
            let offset = self.members.get(node).map_or(0, |m| m.offset_ms);
            let slack = self.pace.time_left(wall + offset).saturating_sub(self.pace.reconcile_time(work));
            self.handovers.hold(node, work, sources, now + slack);
            ctx.notify_later(HandoverDue, slack);
        }
    }

    /// Some monitors wait for a node with budget: decide again when the ready
    /// nodes' windows are open ([`Pace::next_wave`]; a push ending also
    /// triggers a decision).
    fn next_wave(&mut self, ctx: &mut Context<Self>) {
        let now = self.clock.now();
        let wall = self.clock.wall_ms();
        let wait = self.pace.next_wave(
            self.members
                .iter()
                .filter(|(id, m)| m.health == Health::Up && !self.busy(id, now))
                .map(|(_, m)| self.pace.until_open(wall + m.offset_ms)),
        );
        if let Some(wait) = wait {
            tracing::info!(monitors = self.deferred, next_wave_in_ms = wait.as_millis() as u64, "monitors wait for the next wave");
            // the latest plan, made with the most nodes idle, replaces earlier ones
            if let Some(earlier) = self.wave_timer.replace(ctx.notify_later(ReconcileTick, wait.max(Duration::from_millis(20)))) {
                ctx.cancel_future(earlier);
            }
        }
    }

    fn failed(&mut self, error: StoreError, ctx: &mut Context<Self>) -> String {
        let message = error.to_string();
        if let StoreError::Fenced(reason) = &error {
            self.leadership.fenced();
            self.metrics.fenced();
            tracing::warn!(reason = %reason, "decision fenced by the lease: nothing written");
            self.step_down(reason, ctx);
            return message;
        }
        self.failed_decisions += 1;
        self.metrics.decided(Duration::ZERO, false);
        tracing::error!(error = %message, "decision failed and rolled back");
        self.last_error = Some(message.clone());
        self.vitals.update(|v| v.failing = Some(message.clone()));
        self.record(NewEvent {
            kind: "decision",
            node_id: None,
            outcome: "failed",
            detail: serde_json::json!({ "error": message }),
        });
        message
    }

    /// Records an event that rides in no decision, with this replica's epoch:
    /// only while it leads.
    fn record(&self, event: NewEvent) {
        let Some(epoch) = self.leadership.leading(Instant::now()) else { return };
        let db = self.db.clone();
        actix_rt::spawn(async move {
            if let Err(e) = store::record_event(&db, &event, chrono::Utc::now(), epoch).await {
                tracing::debug!(kind = event.kind, error = %e, "could not record an event");
            }
        });
    }

    /// This replica stops acting as the leader: no decision, write or push
    /// from now on; it follows and loads the committed rows at its next poll.
    fn step_down(&mut self, reason: &str, ctx: &mut Context<Self>) {
        if !self.leadership.lost() {
            return;
        }
        self.next_lease_tick(ctx);
        tracing::warn!(replica = %self.leadership.me(), reason, "this replica no longer leads; it follows");
        self.metrics.leading(false);
        self.vitals.update(|v| {
            v.leading = false;
            v.leader_id = None;
            v.leader_address = None;
            v.failing = None;
        });
    }

    /// Traffic leaves a dead node at its transition, whatever the database
    /// does: the last committed table is published with each node's current
    /// health (a decision may have read an older one), its monitor map as
    /// committed.
    fn publish_with_current_health(&self) {
        let mut table = self.committed_table.clone();
        for node in &mut table.nodes {
            if let Some(member) = self.members.get(&node.id) {
                node.health = member.health;
                node.ready = member.health == Health::Up && node.enabled;
            }
        }
        self.publisher.publish(table);
    }

    /// Starts a NodeActor for each new node, stops those of removed nodes, and
    /// passes address changes on.
    fn sync_members(&mut self, hosts: &[(String, Option<String>)], ctx: &mut Context<Self>) {
        let mut wanted: BTreeMap<&str, Option<&str>> = hosts.iter().map(|(id, h)| (id.as_str(), h.as_deref())).collect();
        for s in self.static_nodes.iter() {
            wanted.entry(&s.id).or_insert(Some(&s.host));
        }
        self.members.retain(|id, member| {
            let keep = wanted.contains_key(id.as_str());
            if !keep {
                tracing::info!(node_id = %id, "node removed; supervision ends");
                member.actor.do_send(Retire);
            }
            keep
        });
        for (id, host) in wanted {
            let host = host.map(str::to_owned);
            match self.members.get_mut(id) {
                Some(member) if member.host != host => {
                    tracing::info!(node_id = %id, host = host.as_deref().unwrap_or(""), "node address changed");
                    member.host = host.clone();
                    member.actor.do_send(SetHost(host));
                }
                Some(_) => {}
                None => {
                    tracing::info!(node_id = %id, host = host.as_deref().unwrap_or(""), "supervising node");
                    let reports = Reports { transitions: ctx.address().recipient(), clocks: ctx.address().recipient() };
                    let actor = NodeActor::new(
                        id.to_owned(),
                        host.clone(),
                        self.health_settings.clone(),
                        self.probe.clone(),
                        reports,
                        self.metrics.clone(),
                    )
                    .start();
                    self.members.insert(
                        id.to_owned(),
                        Member {
                            host,
                            health: Health::Unknown,
                            weak_down: false,
                            up_since: None,
                            flap: FlapDamper::default(),
                            offset_ms: 0,
                            decided: Health::Unknown,
                            actor,
                        },
                    );
                }
            }
        }
    }
}

impl Actor for ClusterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(reports) = self.reports.take() {
            ctx.add_message_stream(futures_util::stream::unfold(reports, |mut rx| async move {
                rx.recv().await.map(|report| (Reported(report), rx))
            }));
        }
        ctx.run_interval(self.settings.cluster.reconcile_interval, |act, ctx| {
            if act.queue.tick_due(act.clock.now()) {
                act.request(ctx, None);
            }
        });
        self.check_schema(ctx);
    }
}

impl ClusterActor {
    /// Whether a down verdict on timeouts alone may take `node` out now: at most
    /// `max_ejection_percent` of the nodes may be down on such verdicts, and
    /// never the last ready one. Past that, a shared cause (this process, the
    /// network, the database) is more likely than so many dead nodes.
    fn may_eject(&self, node: &str) -> bool {
        let total = self.members.len();
        let down = self.members.iter().filter(|(id, m)| id.as_str() != node && m.health == Health::Down).count();
        let ready = self.members.iter().filter(|(id, m)| id.as_str() != node && m.health == Health::Up).count();
        let allowed = total * usize::from(self.settings.cluster.max_ejection_percent) / 100;
        ready > 0 && down < allowed
    }

    /// Applies a health change to a member, with flap damping and the hold-down
    /// timer.
    fn apply_health(&mut self, node: &str, from: Health, to: Health, ctx: &mut Context<Self>) {
        let now = self.clock.now();
        let cluster = &self.settings.cluster;
        let Some(member) = self.members.get_mut(node) else { return };
        if from != Health::Unknown {
            member.flap.record(now, cluster.flap_window, cluster.flap_max_transitions);
        }
        member.health = to;
        self.metrics.transition(node, to);
        member.up_since = (to == Health::Up).then_some(now);
        if member.flap.is_damped(now, cluster.flap_window) {
            tracing::warn!(node_id = %node, transitions = member.flap.recent(), "node is flapping; returns to it are held");
        }
        if to == Health::Up {
            ctx.notify_later(ReconcileTick, cluster.hold_down);
        }
    }

    /// Records a held verdict in the log, the event log and the metrics.
    fn hold(&mut self, node: &str) {
        self.held_verdicts += 1;
        self.metrics.held(node);
        let down = self.members.values().filter(|m| m.health == Health::Down).count();
        tracing::warn!(
            node_id = %node,
            nodes = self.members.len(),
            down,
            max_ejection_percent = self.settings.cluster.max_ejection_percent,
            "node times out, but too many nodes look dead at once: suspecting a shared cause, it stays in service"
        );
        self.record(NewEvent {
            kind: "ejection_held",
            node_id: Some(node.to_owned()),
            outcome: "held",
            detail: serde_json::json!({ "nodes": self.members.len(), "down": down }),
        });
    }
}

impl Handler<NodeTransition> for ClusterActor {
    type Result = ();

    fn handle(&mut self, msg: NodeTransition, ctx: &mut Self::Context) {
        let node = msg.node_id.as_str();
        let Some(member) = self.members.get(node) else {
            tracing::debug!(node_id = %node, "transition from a node no longer supervised");
            return;
        };
        let (held, current) = (member.held(), member.health);
        let tr = msg.transition;
        match tr.to {
            Health::Down if tr.weak && current != Health::Down && !self.may_eject(node) => {
                if let Some(m) = self.members.get_mut(node) {
                    m.weak_down = true;
                }
                self.hold(node);
                return;
            }
            // a held node recovered: nothing changed as far as decisions go
            Health::Up if held => {
                if let Some(m) = self.members.get_mut(node) {
                    m.weak_down = false;
                }
                tracing::info!(node_id = %node, "a held node answers in time again");
                return;
            }
            _ => {}
        }
        if let Some(m) = self.members.get_mut(node) {
            m.weak_down = tr.to == Health::Down && tr.weak;
        }
        if current != tr.to {
            self.apply_health(node, current, tr.to, ctx);
        }
        // a recovery frees ejection budget: held verdicts that still stand apply now
        let held: Vec<String> = self.members.iter().filter(|(_, m)| m.held()).map(|(id, _)| id.clone()).collect();
        for id in held {
            if self.may_eject(&id) {
                tracing::info!(node_id = %id, "the held verdict applies now: the node still times out");
                self.apply_health(&id, Health::Up, Health::Down, ctx);
            }
        }
        self.publish_with_current_health();
        self.request(ctx, None);
    }
}

impl Handler<ClockSeen> for ClusterActor {
    type Result = ();

    fn handle(&mut self, msg: ClockSeen, _: &mut Self::Context) {
        if let Some(member) = self.members.get_mut(&msg.node_id) {
            if (member.offset_ms - msg.offset_ms).abs() > 1000 {
                tracing::info!(node_id = %msg.node_id, offset_ms = msg.offset_ms, "node clock differs from ours");
            }
            member.offset_ms = msg.offset_ms;
        }
    }
}

impl Handler<PushEnded> for ClusterActor {
    type Result = ();

    fn handle(&mut self, msg: PushEnded, ctx: &mut Self::Context) {
        let now = self.clock.now();
        let busy_for = match &msg.result {
            Ok(()) => {
                tracing::debug!(node_id = %msg.node_id, starts = msg.starts, "node reconciled");
                Duration::ZERO
            }
            Err(error @ PushError::Unreachable(_)) => {
                tracing::debug!(node_id = %msg.node_id, error = %error, "reconcile push found nothing listening");
                Duration::ZERO
            }
            // not sent: while this replica still leads, it asks again shortly
            Err(error @ PushError::Lease(_)) => {
                tracing::warn!(node_id = %msg.node_id, error = %error, "reconcile push not sent");
                let (node, starts) = (msg.node_id.clone(), msg.starts);
                ctx.run_later(self.settings.ha.renew_interval, move |act, ctx| act.push_to(&node, starts, ctx));
                Duration::ZERO
            }
            Err(error) => {
                // its reconcile may still run, or its cron does the work: neither
                // may overlap with a reconcile of ours
                let busy = self.cron_work(&msg.node_id, msg.starts);
                tracing::warn!(node_id = %msg.node_id, error = %error, busy_ms = busy.as_millis() as u64, "reconcile push failed; the node's cron takes over");
                busy
            }
        };
        if let Some(member) = self.members.get(&msg.node_id) {
            member.actor.do_send(Grace(false));
        }
        // the old owner has stopped what it handed over: the new owners start it
        for (target, starts) in self.handovers.source_done(&msg.node_id, msg.push) {
            self.push_to(&target, starts, ctx);
        }
        match self.pushes.finished(&msg.node_id, busy_for, now) {
            Some(starts) => self.send_push(&msg.node_id, starts, ctx),
            None => {
                if let Some(wait) = self.pushes.busy_for(&msg.node_id, now) {
                    ctx.notify_later(PushDue(msg.node_id.clone()), wait);
                }
            }
        }
        // the node may take work again: a waiting wave goes now
        if self.deferred > 0 {
            self.request(ctx, None);
        }
    }
}

impl Handler<HandoverDue> for ClusterActor {
    type Result = ();

    fn handle(&mut self, _: HandoverDue, ctx: &mut Self::Context) {
        let now = self.clock.now();
        for (target, starts) in self.handovers.due(now) {
            // a push now could start them while the old owner still runs them,
            // or run into the cron: the cron starts them, after the old owner stopped
            let busy = self.cron_work(&target, starts);
            tracing::info!(node_id = %target, starts, busy_ms = busy.as_millis() as u64, "old owners still busy: the new owner's cron starts its monitors");
            self.pushes.leave_to_cron(&target, busy, now);
            ctx.notify_later(PushDue(target), busy);
        }
    }
}

impl Handler<PushDue> for ClusterActor {
    type Result = ();

    fn handle(&mut self, PushDue(node): PushDue, ctx: &mut Self::Context) {
        if let Some(starts) = self.pushes.due(&node, self.clock.now()) {
            self.send_push(&node, starts, ctx);
        }
    }
}

impl Handler<Reported> for ClusterActor {
    type Result = ();

    fn handle(&mut self, Reported(report): Reported, ctx: &mut Self::Context) {
        match report {
            // a request could not connect: have the node's NodeActor probe now
            FrontReport::Unreachable(node_id) => {
                if let Some(member) = self.members.get(&node_id) {
                    member.actor.do_send(ProbeNow);
                }
            }
            // the node that answered may run a monitor that belongs elsewhere (a
            // create starts it there) or one that is paused or gone: it and the
            // node the monitor belongs on reconcile, one push at a time each;
            // a decision places a new monitor whose home cannot run it
            FrontReport::MonitorWritten { served, monitor, home } if self.leadership.leading(Instant::now()).is_none() => {
                self.relay_to_leader(served, monitor, home);
            }
            FrontReport::MonitorWritten { served, monitor, home } => {
                let owner = home.or_else(|| {
                    let table = self.publisher.reader().load();
                    monitor.and_then(|id| table.node_of_monitor(id).map(|n| n.id.clone()))
                });
                tracing::debug!(node_id = %served, monitor = ?monitor, owner = ?owner, "monitor written through the front door");
                self.push_to(&served, 0, ctx);
                if let Some(owner) = owner.filter(|o| *o != served) {
                    self.push_to(&owner, 1, ctx);
                }
                self.request(ctx, None);
            }
        }
    }
}

impl ClusterActor {
    /// The leader renews its lease; a renewal that fails for longer than the
    /// tenure lasts ends its leadership.
    fn renew(&mut self, epoch: i64, ctx: &mut Context<Self>) {
        let sent = Instant::now();
        ctx.spawn(self.renewal(epoch, sent).into_actor(self).map(move |result, act, ctx| {
            match result {
                Ok(true) => {
                    act.leadership.renewed(sent, act.settings.ha.lease_ttl);
                    act.vitals.update(|v| {
                        v.last_contact = Some(Instant::now());
                        v.lease_error = None;
                    });
                }
                Ok(false) => act.step_down("the lease expired or another replica took it", ctx),
                Err(error) => {
                    act.vitals.update(|v| v.lease_error = Some(error.to_string()));
                    if act.leadership.leading(Instant::now()).is_none() {
                        act.step_down(&format!("the lease could not be renewed in time: {error}"), ctx);
                    } else {
                        tracing::warn!(error = %error, "could not renew the lease; retrying");
                    }
                }
            }
            act.next_lease_tick(ctx);
        }));
    }

    /// Renews the lease of `epoch` with this replica's pushes' deadline, as of
    /// `sent`; bounded by the renew interval.
    fn renewal(&self, epoch: i64, sent: Instant) -> impl std::future::Future<Output = Result<bool, StoreError>> + 'static {
        let (db, me, ha, pushes_left) =
            (self.db.clone(), self.leadership.me().to_owned(), self.settings.ha.clone(), self.leadership.pushes_left(sent));
        async move {
            actix_rt::time::timeout(ha.renew_interval, store::renew_lease(&db, &me, epoch, ha.lease_ttl, pushes_left))
                .await
                .unwrap_or(Err(StoreError::Timeout(ha.renew_interval)))
        }
    }

    /// A follower reads the lease: it takes it when free or expired, and
    /// otherwise loads the committed rows when a newer decision was written.
    fn poll_lease(&mut self, ctx: &mut Context<Self>) {
        let (db, me, address, ttl) =
            (self.db.clone(), self.leadership.me().to_owned(), self.leadership.address().map(str::to_owned), self.settings.ha.lease_ttl);
        let limit = self.settings.ha.poll_interval.max(Duration::from_secs(1));
        let look = async move {
            let row = store::read_lease(&db).await?;
            if !row.is_free() {
                return Ok((row, None));
            }
            let sent = Instant::now();
            match store::acquire_lease(&db, &me, address.as_deref(), ttl).await? {
                Some(epoch) => Ok((row, Some((epoch, sent)))),
                // another replica was quicker: who, it says
                None => Ok::<_, StoreError>((store::read_lease(&db).await?, None)),
            }
        };
        let bounded = async move { actix_rt::time::timeout(limit, look).await.unwrap_or(Err(StoreError::Timeout(limit))) };
        ctx.spawn(bounded.into_actor(self).map(|result, act, ctx| {
            match result {
                Ok((_, Some((epoch, _)))) if act.shutting_down => {
                    actix_rt::spawn(act.release(epoch, Duration::ZERO));
                }
                Ok((row, Some((epoch, sent)))) => act.lead(epoch, sent, row, ctx),
                Ok((row, None)) => {
                    let first = !act.leadership.looked();
                    let (leader, address) = (row.leader().map(str::to_owned), row.leader().and(row.address.clone()));
                    act.vitals.update(|v| {
                        v.last_contact = Some(Instant::now());
                        v.leader_id = leader;
                        v.leader_address = address;
                        v.lease_error = None;
                    });
                    let version = row.version();
                    if act.leadership.seen(row) {
                        act.reload(version, ctx);
                    }
                    // requests that waited for the first look are told who leads
                    if first && act.may_decide() && act.queue.trigger(None) {
                        act.start_decision(ctx);
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, "could not read the leader lease");
                    act.vitals.update(|v| v.lease_error = Some(error.to_string()));
                }
            }
            act.next_lease_tick(ctx);
        }));
    }

    /// Gives the lease of `epoch` up, bounded in time: one not released
    /// expires by itself.
    fn release(&self, epoch: i64, pushes_left: Duration) -> impl std::future::Future<Output = ()> + 'static {
        let (db, me, limit) = (self.db.clone(), self.leadership.me().to_owned(), self.settings.ha.renew_interval);
        async move {
            match actix_rt::time::timeout(limit, store::release_lease(&db, &me, epoch, pushes_left)).await {
                Ok(Ok(())) => tracing::info!(replica = %me, epoch, "lease released"),
                Ok(Err(error)) => tracing::warn!(error = %error, "could not release the lease; it expires by itself"),
                Err(_) => tracing::warn!("the lease release got no answer; it expires by itself"),
            }
        }
    }

    /// Schedules the next lease tick: the leader's renewal or the follower's
    /// poll, whichever this replica is now; one timer at a time.
    fn next_lease_tick(&mut self, ctx: &mut Context<Self>) {
        let ha = &self.settings.ha;
        let wait = if self.leadership.holds_tenure().is_some() { ha.renew_interval } else { ha.poll_interval };
        if let Some(earlier) = self.lease_timer.replace(ctx.notify_later(LeaseTick, wait)) {
            ctx.cancel_future(earlier);
        }
    }

    /// This replica won the lease with `epoch`. It acts on its own NodeActors'
    /// verdicts only (the first decision waits for every node's, as at
    /// start-up), and pushes no node before the former leader's pushes may
    /// have ended.
    fn lead(&mut self, epoch: i64, sent: Instant, before: LeaseRow, ctx: &mut Context<Self>) {
        let wait = before.pushes_left();
        self.leadership.won(epoch, sent, self.settings.ha.lease_ttl);
        tracing::info!(replica = %self.leadership.me(), epoch, former_pushes_ms = wait.as_millis() as u64, "this replica leads now");
        self.metrics.leading(true);
        let (me, address) = (self.leadership.me().to_owned(), self.leadership.address().map(str::to_owned));
        self.vitals.update(|v| {
            v.leading = true;
            v.leader_id = Some(me);
            v.leader_address = address;
            v.last_contact = Some(Instant::now());
            v.lease_error = None;
        });
        let now = self.clock.now();
        self.pushes = Pushes::default();
        self.handovers = Handovers::default();
        if !wait.is_zero() {
            let nodes: Vec<String> = self.members.keys().cloned().collect();
            for node in nodes {
                self.pushes.leave_to_cron(&node, wait, now);
                ctx.notify_later(PushDue(node), wait);
            }
        }
        self.request(ctx, None);
    }

    /// A follower loads the rows the leader committed (lease `version`) and
    /// serves them with its own view of node health.
    fn reload(&mut self, version: (i64, i64), ctx: &mut Context<Self>) {
        if self.not_ready().is_some() || self.missing_tables.is_none() {
            return;
        }
        let now = self.clock.now();
        let nodes: HashMap<String, NodeInput> = self.members.iter().map(|(id, m)| (id.clone(), self.input(id, m, now))).collect();
        let (db, settings, static_nodes, known) =
            (self.db.clone(), self.settings.clone(), self.static_nodes.clone(), self.setup_complete);
        let load = async move {
            let setup_complete = known || store::setup_complete(&db).await?;
            let txn = db.begin().await?;
            let rows = store::load(&txn).await?;
            let inputs = Inputs {
                nodes: &nodes,
                static_nodes: &static_nodes,
                limit: settings.placement.limit_per_node,
                started: false,
                setup_complete,
                command: None,
                place_unassigned: settings.placement.place_unassigned,
                reported_unusable: &[],
            };
            Ok::<_, StoreError>((reconcile::committed(&rows, &inputs), setup_complete))
        };
        ctx.spawn(load.into_actor(self).map(move |result, act, ctx| match result {
            // a replica that took the lease meanwhile decides for itself
            Ok(_) if act.leadership.holds_tenure().is_some() => {}
            Ok((committed, setup_complete)) => {
                act.setup_complete = setup_complete;
                act.sync_members(&committed.members, ctx);
                act.committed_table = committed.table;
                act.publish_with_current_health();
                act.leadership.loaded(version);
                tracing::debug!(epoch = version.0, generation = version.1, "loaded the leader's committed decisions");
            }
            Err(error) => tracing::warn!(error = %error, "could not load the leader's decisions; retrying at the next poll"),
        }));
    }
}

impl ClusterActor {
    /// A monitor write went through this replica's front door, but only the
    /// leader pushes: it is told, with the first API token (replicas share
    /// their settings), and pushes the nodes as for a write through its own.
    fn relay_to_leader(&self, served: String, monitor: Option<MonitorId>, home: Option<String>) {
        let Some(leader) = self.leadership.state(Instant::now()).leader_address else {
            tracing::warn!(node_id = %served, "a monitor was written while no replica leads: the nodes' cron reconciles it");
            return;
        };
        let Some(token) = self.settings.api.tokens.first().cloned() else {
            tracing::warn!(node_id = %served, "a monitor was written through a follower, which has no api.tokens to tell the leader with");
            return;
        };
        let url = format!("{}/lb/monitor-written", base_url(&leader));
        let body = serde_json::json!({ "served": served, "monitor": monitor, "home": home });
        actix_rt::spawn(async move {
            let client = awc::Client::builder().timeout(RELAY_TIMEOUT).finish();
            match client.post(&url).bearer_auth(token).send_json(&body).await {
                Ok(answer) if answer.status().is_success() => tracing::debug!(leader, "told the leader of a monitor write"),
                Ok(answer) => tracing::warn!(leader, status = answer.status().as_u16(), "the leader refused a monitor write's report"),
                Err(error) => tracing::warn!(leader, error = %error, "could not tell the leader of a monitor write; the nodes' cron reconciles it"),
            }
        });
    }
}

impl Handler<LeaseTick> for ClusterActor {
    type Result = ();

    fn handle(&mut self, _: LeaseTick, ctx: &mut Self::Context) {
        if self.shutting_down {
            return;
        }
        match self.leadership.holds_tenure() {
            Some(epoch) => self.renew(epoch, ctx),
            None => self.poll_lease(ctx),
        }
    }
}

impl Handler<CheckSchema> for ClusterActor {
    type Result = ();

    fn handle(&mut self, _: CheckSchema, ctx: &mut Self::Context) {
        self.check_schema(ctx);
    }
}

impl Handler<ReconcileTick> for ClusterActor {
    type Result = ();

    fn handle(&mut self, _: ReconcileTick, ctx: &mut Self::Context) {
        self.request(ctx, None);
    }
}

impl Handler<Reconcile> for ClusterActor {
    type Result = ResponseFuture<Result<DecisionSummary, String>>;

    fn handle(&mut self, _: Reconcile, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.request(ctx, Some(tx));
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err("supervisor stopped".to_owned())) })
    }
}

impl Handler<GetClusterState> for ClusterActor {
    type Result = MessageResult<GetClusterState>;

    fn handle(&mut self, _: GetClusterState, _: &mut Self::Context) -> Self::Result {
        let now = self.clock.now();
        let nodes = self
            .members
            .iter()
            .map(|(id, m)| {
                let input = self.input(id, m, now);
                MemberState {
                    node_id: id.clone(),
                    host: m.host.clone(),
                    health: m.health,
                    settled: input.settled,
                    damped: !input.stable,
                    flap_count: m.flap.recent(),
                    held: m.held(),
                    busy: self.busy(id, now),
                    budget: input.budget,
                }
            })
            .collect();
        MessageResult(ClusterState {
            started: self.started,
            waiting_for: self.missing_tables.iter().flatten().map(|t| t.to_string()).collect(),
            generation: self.publisher.reader().load().generation,
            nodes,
            stranded: self.stranded,
            unassigned: self.unassigned,
            unusable_nodes: self.unusable_nodes.to_vec(),
            deferred: self.deferred,
            held_verdicts: self.held_verdicts,
            unreadable_moves: self.unreadable_moves,
            decisions: self.decisions,
            failed_decisions: self.failed_decisions,
            uncertain_commits: self.uncertain_commits,
            moves: self.moves,
            last_decision: self.last_decision.clone(),
            last_error: self.last_error.clone(),
            retry_in_ms: self.queue.retry_in(now).map(|d| d.as_millis() as u64),
            last_rebalance: self.last_rebalance.clone(),
            rebalancing: self.queue.rebalancing(),
            ha: self.leadership.state(Instant::now()),
        })
    }
}

impl Handler<Apply> for ClusterActor {
    type Result = ResponseFuture<Result<DecisionSummary, ApplyError>>;

    fn handle(&mut self, Apply(command): Apply, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if let Some(reason) = self.refusal() {
            let _ = tx.send(Err(ApplyError::Failed(reason)));
        } else if self.queue.command(command, tx) && self.may_decide() {
            self.start_decision(ctx);
        }
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(ApplyError::Failed("supervisor stopped".to_owned()))) })
    }
}

impl Handler<GetNodeDetails> for ClusterActor {
    type Result = ResponseFuture<Vec<NodeDetail>>;

    fn handle(&mut self, _: GetNodeDetails, ctx: &mut Self::Context) -> Self::Result {
        let MessageResult(state) = <Self as Handler<GetClusterState>>::handle(self, GetClusterState, ctx);
        let asks: Vec<_> = state
            .nodes
            .into_iter()
            .map(|member| {
                let ask = self.members.get(&member.node_id).map(|m| m.actor.send(GetNodeState));
                async move {
                    let probe = match ask {
                        Some(ask) => ask.await.ok(),
                        None => None,
                    };
                    NodeDetail { member, probe }
                }
            })
            .collect();
        Box::pin(futures_util::future::join_all(asks))
    }
}

impl Handler<Shutdown> for ClusterActor {
    type Result = ResponseFuture<()>;

    /// Ends the decision in flight, then gives the lease up at once, so a
    /// follower takes over at its next poll instead of after the lease's expiry.
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        for member in self.members.values() {
            member.actor.do_send(Retire);
        }
        let (tx, rx) = oneshot::channel();
        self.queue.shutdown(tx);
        let (done_tx, done_rx) = oneshot::channel();
        let ended = async move {
            let _ = rx.await;
        };
        self.shutting_down = true;
        ctx.spawn(ended.into_actor(self).map(|(), act, ctx| {
            let epoch = act.leadership.holds_tenure();
            let pushes_left = act.leadership.pushes_left(Instant::now());
            act.step_down("shutting down", ctx);
            let release = epoch.map(|epoch| act.release(epoch, pushes_left));
            actix_rt::spawn(async move {
                if let Some(release) = release {
                    release.await;
                }
                let _ = done_tx.send(());
            });
        }));
        Box::pin(async move {
            let _ = done_rx.await;
        })
    }
}
