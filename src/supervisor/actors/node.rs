//! NodeActor: supervises one Kuma node. It probes on its own timer, feeds the
//! results to a [`HealthMachine`] and reports transitions only, never single probe
//! results, plus the node's clock offset when it moves. While the ClusterActor
//! has a reconcile push in flight to the node, its timeouts do not count: the
//! node is busy with the work kuma-cluster gave it. A probe that timed out keeps
//! waiting (one at a time, up to `health.late_answer_wait` after it was sent):
//! a healthy answer that comes late forgives the timeouts, whoever made the
//! node busy (its cold start, its cron, a push). It holds no database handle.

use crate::config::HealthSettings;
use crate::core::health::{Health, HealthMachine, Probed, Transition};
use crate::metrics::Metrics;
use crate::supervisor::probe::{Healthy, Probe, ProbeError};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use futures_util::future::LocalBoxFuture;
use serde::Serialize;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Sent to the ClusterActor when this node's health changes.
#[derive(Clone, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct NodeTransition {
    pub node_id: String,
    pub transition: Transition,
    /// The failure that tipped a node down, for the log.
    pub last_error: Option<String>,
}

/// Sent to the ClusterActor when the node's clock offset (its health
/// `timestamp` against ours) moved by more than [`OFFSET_REPORT_STEP_MS`].
#[derive(Clone, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct ClockSeen {
    pub node_id: String,
    /// Node clock minus ours, in milliseconds.
    pub offset_ms: i64,
}

/// A reconcile push to the node is in flight (`true`) or over: timeouts during
/// one are not evidence against the node.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Grace(pub bool);

/// Where a NodeActor reports.
#[derive(Clone)]
pub struct Reports {
    pub transitions: Recipient<NodeTransition>,
    pub clocks: Recipient<ClockSeen>,
}

/// Offsets within this of the last one reported are not reported again.
const OFFSET_REPORT_STEP_MS: i64 = 250;

/// Asks for the actor's observable state.
#[derive(Message)]
#[rtype(result = "NodeState")]
pub struct GetNodeState;

/// The node's address changed in its row; counters carry on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetHost(pub Option<String>);

/// Passive health: a request could not connect to this node; probe now rather
/// than at the next tick. Only the probe's result counts.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ProbeNow;

/// The node left the cluster: stop probing.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

#[derive(Clone, Debug, Serialize)]
pub struct NodeState {
    pub node_id: String,
    pub host: Option<String>,
    pub health: Health,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub probes: u64,
    pub failed_probes: u64,
    pub last_probe_at: Option<DateTime<Utc>>,
    pub last_latency_ms: Option<f64>,
    pub last_error: Option<String>,
    /// Node clock minus ours, in milliseconds, from its last health answer.
    pub clock_offset_ms: Option<i64>,
    /// A push is in flight: timeouts do not count.
    pub graced: bool,
    /// Probes that timed out and were answered healthy later.
    pub late_answers: u64,
}

/// Self-tick: time for the next probe.
struct ProbeTick;

impl Message for ProbeTick {
    type Result = ();
}

pub struct NodeActor {
    id: String,
    host: Option<String>,
    settings: Rc<HealthSettings>,
    probe: Rc<dyn Probe>,
    report: Reports,
    metrics: Arc<Metrics>,
    machine: HealthMachine,
    graced: bool,
    clock_offset_ms: Option<i64>,
    reported_offset_ms: Option<i64>,
    /// At most one probe is in flight; the next is scheduled when it ends.
    probing: bool,
    /// A timed-out probe is still waiting for its answer; others are dropped.
    waiting_late: bool,
    late_answers: u64,
    /// The one scheduled probe, replaced when a passive report probes early, so
    /// there is never more than one timer chain.
    next_probe: Option<SpawnHandle>,
    last_probe_started: Option<tokio::time::Instant>,
    probes: u64,
    failed_probes: u64,
    last_probe_at: Option<DateTime<Utc>>,
    last_latency: Option<Duration>,
    last_error: Option<String>,
    rng: fastrand::Rng,
}

impl NodeActor {
    pub fn new(
        id: String,
        host: Option<String>,
        settings: Rc<HealthSettings>,
        probe: Rc<dyn Probe>,
        report: Reports,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        NodeActor {
            machine: HealthMachine::new(settings.fall, settings.timeout_fall, settings.rise),
            graced: false,
            clock_offset_ms: None,
            reported_offset_ms: None,
            rng: fastrand::Rng::with_seed(hasher.finish()),
            id,
            host,
            settings,
            probe,
            report,
            metrics,
            probing: false,
            waiting_late: false,
            late_answers: 0,
            next_probe: None,
            last_probe_started: None,
            probes: 0,
            failed_probes: 0,
            last_probe_at: None,
            last_latency: None,
            last_error: None,
        }
    }

    /// The base interval for the current state with ±10 % jitter, so probes of
    /// many nodes do not stay in lockstep.
    fn next_delay(&mut self) -> Duration {
        let base = match self.machine.state() {
            Health::Down => self.settings.down_interval,
            Health::Up | Health::Unknown => self.settings.interval,
        };
        base.mul_f64(0.9 + 0.2 * self.rng.f64())
    }

    /// Books one probe result. `sent_ms`: our wall clock when it was sent.
    fn record(&mut self, result: Result<Healthy, ProbeError>, sent_ms: i64, latency: Duration) -> Option<NodeTransition> {
        self.probes += 1;
        self.metrics.probed(&self.id, latency);
        self.last_probe_at = Some(Utc::now());
        self.last_latency = Some(latency);
        let probed = match &result {
            Ok(healthy) => {
                if let Some(node_time) = healthy.node_time {
                    self.clock_offset_ms = Some(node_time.timestamp_millis() - sent_ms - latency.as_millis() as i64 / 2);
                }
                Probed::Healthy
            }
            Err(e) => {
                self.failed_probes += 1;
                self.last_error = Some(e.to_string());
                if e.is_timeout() { Probed::TimedOut } else { Probed::Failed }
            }
        };
        if probed == Probed::TimedOut && self.graced {
            return None;
        }
        let transition = self.machine.observe(probed)?;
        Some(NodeTransition {
            node_id: self.id.clone(),
            transition,
            last_error: (probed != Probed::Healthy).then(|| self.last_error.clone()).flatten(),
        })
    }

    /// A timed-out probe was answered healthy after all.
    fn answered_late(&mut self) {
        self.late_answers += 1;
        tracing::debug!(node_id = %self.id, "a timed-out probe was answered late: the node is busy, not dead");
        if let Some(transition) = self.machine.answered_late() {
            self.report(NodeTransition { node_id: self.id.clone(), transition, last_error: None });
        }
    }

    fn report(&self, transition: NodeTransition) {
        tracing::info!(
            node_id = %transition.node_id,
            from = ?transition.transition.from,
            to = ?transition.transition.to,
            on_timeouts_alone = transition.transition.weak,
            last_error = transition.last_error.as_deref().unwrap_or(""),
            "node health changed"
        );
        self.report.transitions.do_send(transition);
    }

    /// Keeps a timed-out probe waiting for its answer until `late_answer_wait`
    /// after it was sent, unless another one already waits.
    fn wait_late(&mut self, check: LocalBoxFuture<'static, Result<Healthy, ProbeError>>, ctx: &mut Context<Self>) {
        let left = self.settings.late_answer_wait.saturating_sub(self.settings.timeout);
        if self.waiting_late || left.is_zero() {
            return;
        }
        self.waiting_late = true;
        ctx.spawn(tokio::time::timeout(left, check).into_actor(self).map(|answer, act, _| {
            act.waiting_late = false;
            if matches!(answer, Ok(Ok(_))) {
                act.answered_late();
            }
        }));
    }

    /// Reports the clock offset when it moved enough to matter for the cron.
    fn report_clock(&mut self) {
        let Some(offset) = self.clock_offset_ms else { return };
        if self.reported_offset_ms.is_none_or(|r| (r - offset).abs() > OFFSET_REPORT_STEP_MS) {
            self.reported_offset_ms = Some(offset);
            self.report.clocks.do_send(ClockSeen { node_id: self.id.clone(), offset_ms: offset });
        }
    }
}

impl Actor for NodeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify(ProbeTick);
    }
}

impl Handler<ProbeTick> for NodeActor {
    type Result = ();

    fn handle(&mut self, _: ProbeTick, ctx: &mut Self::Context) {
        if self.probing {
            return;
        }
        self.probing = true;
        self.next_probe = None;
        self.last_probe_started = Some(tokio::time::Instant::now());
        let timeout = self.settings.timeout;
        let check = self.host.as_deref().map(|host| self.probe.check(host, &self.settings.path));
        let started = tokio::time::Instant::now();
        let sent_ms = Utc::now().timestamp_millis();
        let run = async move {
            let Some(mut check) = check else { return (Err(ProbeError::NoHost), started.elapsed(), None) };
            match tokio::time::timeout(timeout, &mut check).await {
                Ok(result) => (result, started.elapsed(), None),
                Err(_) => (Err(ProbeError::Timeout), started.elapsed(), Some(check)),
            }
        };
        ctx.spawn(run.into_actor(self).map(move |(result, latency, unanswered), act, ctx| {
            act.probing = false;
            let transition = act.record(result, sent_ms, latency);
            act.report_clock();
            if let Some(transition) = transition {
                act.report(transition);
            }
            if let Some(check) = unanswered {
                act.wait_late(check, ctx);
            }
            let delay = act.next_delay();
            act.next_probe = Some(ctx.notify_later(ProbeTick, delay));
        }));
    }
}

/// Passive reports closer together than this add no probe: one is enough.
const PASSIVE_MIN_GAP: Duration = Duration::from_millis(250);

impl Handler<ProbeNow> for NodeActor {
    type Result = ();

    fn handle(&mut self, _: ProbeNow, ctx: &mut Self::Context) {
        let recent = self.last_probe_started.is_some_and(|t| t.elapsed() < PASSIVE_MIN_GAP);
        if self.probing || recent {
            return;
        }
        if let Some(handle) = self.next_probe.take() {
            ctx.cancel_future(handle);
        }
        ctx.notify(ProbeTick);
    }
}

impl Handler<GetNodeState> for NodeActor {
    type Result = MessageResult<GetNodeState>;

    fn handle(&mut self, _: GetNodeState, _: &mut Self::Context) -> Self::Result {
        MessageResult(NodeState {
            node_id: self.id.clone(),
            host: self.host.clone(),
            health: self.machine.state(),
            consecutive_failures: self.machine.consecutive_failures(),
            consecutive_successes: self.machine.consecutive_successes(),
            probes: self.probes,
            failed_probes: self.failed_probes,
            last_probe_at: self.last_probe_at,
            last_latency_ms: self.last_latency.map(|d| d.as_secs_f64() * 1000.0),
            last_error: self.last_error.clone(),
            clock_offset_ms: self.clock_offset_ms,
            graced: self.graced,
            late_answers: self.late_answers,
        })
    }
}

impl Handler<SetHost> for NodeActor {
    type Result = ();

    fn handle(&mut self, SetHost(host): SetHost, _: &mut Self::Context) {
        self.host = host;
    }
}

impl Handler<Grace> for NodeActor {
    type Result = ();

    fn handle(&mut self, Grace(on): Grace, _: &mut Self::Context) {
        self.graced = on;
    }
}

impl Handler<Retire> for NodeActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
