//! NodeActor driven by scripted probe results under paused tokio time.

mod common;

use actix::prelude::*;
use common::{run_paused, settings, Collector, Scripted, ScriptedProbe};
use kuma_cluster::supervisor::actors::node::{GetNodeState, Grace, NodeActor, Retire};
use kuma_cluster::core::health::{Health, Transition};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use tokio::time::Instant;
use Scripted::{Failing, Hang, Healthy, HealthyAhead, Slow};

type Seen = Rc<RefCell<Vec<(Instant, kuma_cluster::supervisor::actors::node::NodeTransition)>>>;

fn start(probe: &ScriptedProbe) -> (Addr<NodeActor>, Seen) {
    let seen: Seen = Rc::default();
    let collector = Collector { seen: seen.clone(), ..Collector::default() }.start();
    let health = settings(&[]).health;
    let actor = NodeActor::new(
        "node1".into(),
        Some("node1:3001".into()),
        Rc::new(health),
        Rc::new(probe.clone()),
        Collector::reports(&collector),
        Default::default(),
    )
    .start();
    (actor, seen)
}

fn transitions(seen: &Seen) -> Vec<Transition> {
    seen.borrow().iter().map(|(_, t)| t.transition).collect()
}

#[test]
fn paused_time_drives_actix_timers_so_probes_follow_the_interval() {
    run_paused(async {
        let probe = ScriptedProbe::new([Healthy]);
        let t0 = Instant::now();
        let (_actor, _seen) = start(&probe);
        tokio::time::sleep(Duration::from_secs(61)).await;
        let calls = probe.calls.borrow();
        // first probe at once, then every 2 s ± 10 %: 28 to 34 probes in 61 s of virtual time
        assert!((28..=34).contains(&calls.len()), "{} probes", calls.len());
        assert_eq!(calls[0], t0);
        for pair in calls.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= Duration::from_millis(1800) && gap <= Duration::from_millis(2200), "gap {gap:?}");
        }
    });
}

#[test]
fn node_goes_down_after_three_consecutive_failures_and_reports_only_transitions() {
    run_paused(async {
        let probe = ScriptedProbe::new([Healthy, Healthy, Healthy, Failing, Failing, Failing]);
        let (_actor, seen) = start(&probe);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            transitions(&seen),
            vec![
                Transition { from: Health::Unknown, to: Health::Up, weak: false },
                Transition { from: Health::Up, to: Health::Down, weak: false },
            ]
        );
        let seen = seen.borrow();
        assert_eq!(seen[1].1.last_error.as_deref(), Some("status 503"));
        // the sixth probe, five intervals after the first
        let detected = seen[1].0 - probe.calls.borrow()[0];
        assert!(detected >= Duration::from_secs(9) && detected <= Duration::from_secs(11), "{detected:?}");
    });
}

#[test]
fn a_node_failing_every_other_probe_never_transitions_after_its_first_verdict() {
    run_paused(async {
        let script: Vec<Scripted> =
            [Healthy, Healthy].into_iter().chain((0..500).map(|i| if i % 2 == 0 { Failing } else { Healthy })).collect();
        let probe = ScriptedProbe::new(script);
        let (_actor, seen) = start(&probe);
        tokio::time::sleep(Duration::from_secs(900)).await;
        assert!(probe.calls.borrow().len() > 400);
        assert_eq!(transitions(&seen), vec![Transition { from: Health::Unknown, to: Health::Up, weak: false }]);
    });
}

#[test]
fn a_hung_probe_fails_at_the_timeout() {
    run_paused(async {
        let probe = ScriptedProbe::new([Hang]);
        let (actor, seen) = start(&probe);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            transitions(&seen),
            vec![Transition { from: Health::Unknown, to: Health::Down, weak: true }],
            "a verdict on timeouts alone"
        );
        assert!(probe.calls.borrow().len() >= 10, "it took health.timeout_fall timeouts");
        let state = actor.send(GetNodeState).await.unwrap();
        assert_eq!(state.last_error.as_deref(), Some("timed out"));
        assert_eq!(state.health, Health::Down);
        // one probe at a time: each hung probe ends at the 1 s timeout before the next starts
        let calls = probe.calls.borrow();
        assert!(calls.windows(2).all(|p| p[1] - p[0] >= Duration::from_secs(1)));
    });
}

#[test]
fn a_node_that_answers_only_after_the_timeout_is_busy_not_dead_and_never_goes_down() {
    run_paused(async {
        // healthy, then every answer takes 8 s: past the 1 s timeout, within the 30 s wait
        let probe = ScriptedProbe::new([Healthy, Healthy, Slow(Duration::from_secs(8))]);
        let (actor, seen) = start(&probe);
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(transitions(&seen), vec![Transition { from: Health::Unknown, to: Health::Up, weak: false }]);
        let state = actor.send(GetNodeState).await.unwrap();
        assert_eq!(state.health, Health::Up);
        assert!(state.consecutive_failures < 10, "the streak never reached health.timeout_fall");
        // one late waiter at a time: a probe every ~3 s, one answer per 8 s wait at most
        assert!(state.late_answers >= 50 && state.late_answers <= 80, "{} late answers", state.late_answers);
        assert!(probe.calls.borrow().len() > 150);
    });
}

#[test]
fn answers_later_than_the_late_wait_do_not_count_and_the_node_goes_down_on_timeouts() {
    run_paused(async {
        let probe = ScriptedProbe::new([Healthy, Healthy, Slow(Duration::from_secs(31))]);
        let (actor, seen) = start(&probe);
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(transitions(&seen)[1], Transition { from: Health::Up, to: Health::Down, weak: true });
        assert_eq!(actor.send(GetNodeState).await.unwrap().late_answers, 0);
    });
}

#[test]
fn a_node_that_answers_only_late_from_the_start_gets_an_up_verdict() {
    run_paused(async {
        let probe = ScriptedProbe::new([Slow(Duration::from_secs(4))]);
        let (_actor, seen) = start(&probe);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(transitions(&seen), vec![Transition { from: Health::Unknown, to: Health::Up, weak: false }]);
    });
}

#[test]
fn a_down_node_is_probed_at_the_down_interval_and_recovers_after_two_successes() {
    run_paused(async {
        let probe = ScriptedProbe::new([Failing, Failing, Failing, Failing, Failing, Healthy]);
        let (actor, seen) = start(&probe);
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert_eq!(
            transitions(&seen),
            vec![
                Transition { from: Health::Unknown, to: Health::Down, weak: false },
                Transition { from: Health::Down, to: Health::Up, weak: false },
            ]
        );
        // probes 3 to 6 follow a down verdict: 5 s ± 10 % apart
        let calls = probe.calls.borrow().clone();
        for pair in calls[2..6].windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= Duration::from_millis(4500) && gap <= Duration::from_millis(5500), "gap {gap:?}");
        }
        let state = actor.send(GetNodeState).await.unwrap();
        assert_eq!((state.health, state.consecutive_failures), (Health::Up, 0));
        assert_eq!(state.failed_probes, 5);
    });
}

#[test]
fn a_retired_node_actor_stops_probing() {
    run_paused(async {
        let probe = ScriptedProbe::new([Healthy]);
        let (actor, _seen) = start(&probe);
        tokio::time::sleep(Duration::from_secs(5)).await;
        actor.send(Retire).await.unwrap();
        let before = probe.calls.borrow().len();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(probe.calls.borrow().len(), before);
    });
}

#[test]
fn a_node_without_a_host_is_declared_down_with_a_clear_error() {
    run_paused(async {
        let seen: Seen = Rc::default();
        let collector = Collector { seen: seen.clone(), ..Collector::default() }.start();
        let probe = ScriptedProbe::new([Healthy]);
        let actor = NodeActor::new(
            "node9".into(),
            None,
            Rc::new(settings(&[]).health),
            Rc::new(probe.clone()),
            Collector::reports(&collector),
            Default::default(),
        )
        .start();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(transitions(&seen), vec![Transition { from: Health::Unknown, to: Health::Down, weak: false }]);
        assert_eq!(seen.borrow()[0].1.last_error.as_deref(), Some("node has no host"));
        assert!(probe.calls.borrow().is_empty(), "nothing to probe");
        assert_eq!(actor.send(GetNodeState).await.unwrap().last_error.as_deref(), Some("node has no host"));
    });
}

#[test]
fn a_passive_report_probes_at_once_without_starting_a_second_timer() {
    run_paused(async {
        let probe = ScriptedProbe::new([Healthy]);
        let (actor, _seen) = start(&probe);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(probe.calls.borrow().len(), 1, "one probe at start, the next is due at about 2 s");
        actor.send(kuma_cluster::supervisor::actors::node::ProbeNow).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(probe.calls.borrow().len(), 2, "the report probed at once");
        actor.send(kuma_cluster::supervisor::actors::node::ProbeNow).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(probe.calls.borrow().len(), 2, "a second report within 250 ms adds nothing");
        tokio::time::sleep(Duration::from_secs(60)).await;
        let calls = probe.calls.borrow().clone();
        // one chain of probes 2 s ± 10 % apart: two chains would halve the gaps
        for pair in calls[1..].windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(1800), "gap {:?}", pair[1] - pair[0]);
        }
    });
}

#[test]
fn timeouts_during_a_push_are_not_evidence_but_refusals_are() {
    run_paused(async {
        let probe = ScriptedProbe::new([Healthy, Healthy, Hang]);
        let (actor, seen) = start(&probe);
        tokio::time::sleep(Duration::from_secs(5)).await;
        actor.send(Grace(true)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(transitions(&seen), vec![Transition { from: Health::Unknown, to: Health::Up, weak: false }]);
        assert!(actor.send(GetNodeState).await.unwrap().graced);
        actor.send(Grace(false)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(transitions(&seen)[1], Transition { from: Health::Up, to: Health::Down, weak: true });

        let probe = ScriptedProbe::new([Healthy, Healthy, Failing]);
        let (actor, seen) = start(&probe);
        tokio::time::sleep(Duration::from_secs(5)).await;
        actor.send(Grace(true)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(transitions(&seen)[1], Transition { from: Health::Up, to: Health::Down, weak: false }, "a push does not hide a dead node");
    });
}

#[test]
fn the_nodes_clock_offset_is_reported_once_and_again_when_it_moves() {
    run_paused(async {
        let seen: Seen = Rc::default();
        let collector = Collector { seen: seen.clone(), ..Collector::default() };
        let clocks = collector.clocks.clone();
        let collector = collector.start();
        let probe = ScriptedProbe::new([HealthyAhead(5_000), HealthyAhead(5_010), HealthyAhead(5_020), HealthyAhead(-2_000)]);
        let actor = NodeActor::new(
            "node1".into(),
            Some("node1:3001".into()),
            Rc::new(settings(&[]).health),
            Rc::new(probe.clone()),
            Collector::reports(&collector),
            Default::default(),
        )
        .start();
        tokio::time::sleep(Duration::from_secs(20)).await;
        let offsets: Vec<i64> = clocks.borrow().iter().map(|c| c.offset_ms).collect();
        assert_eq!(offsets.len(), 2, "small moves are not reported: {offsets:?}");
        assert!((offsets[0] - 5_000).abs() < 500 && (offsets[1] + 2_000).abs() < 500, "{offsets:?}");
        assert!(actor.send(GetNodeState).await.unwrap().clock_offset_ms.is_some());
    });
}
