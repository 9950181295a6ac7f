//! Waves: how much work a node may be handed now. A node reconciles on its own
//! cron (every minute, at second 0 of its clock) and when pushed; it starts
//! monitors one by one at about `start_rate` per second and answers only when
//! done; two reconciles that overlap start monitors twice and leak the first
//! copy. So kuma-cluster hands a node new monitors only when
//! - no reconcile of ours runs on it,
//! - its last cron's reconcile is over (`margin` after the tick), and
//! - the reconcile those monitors need ends `margin` before its next cron,
//!
//! and pushes at once. Whatever does not fit waits for the next wave. Node clocks
//! come in as epoch milliseconds: nothing here reads a clock.
//!
//! Required properties (unit tests below; placement's property tests check that
//! no node gains more than its budget and that waves converge):
//! 1. a busy node gets nothing;
//! 2. a node in the margin after its cron gets nothing;
//! 3. otherwise its budget is the starts that fit before its next cron's margin;
//! 4. a node with no budget now has one after [`until_open`].

use std::time::Duration;

/// The nodes' pace and cron, from settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pace {
    /// Monitors a node starts per second (Kuma: one per 100–300 ms, about 5).
    pub start_rate: f64,
    /// The nodes' reconcile cron (Kuma: one minute).
    pub cron_period: Duration,
    /// Kept clear after a cron tick (its reconcile may run) and before the next.
    pub margin: Duration,
}

impl Pace {
    fn period_ms(&self) -> i64 {
        (self.cron_period.as_millis() as i64).max(1)
    }

    fn margin_ms(&self) -> i64 {
        self.margin.as_millis() as i64
    }

    /// Milliseconds since the last cron tick at node time `now_ms`.
    fn into_period(&self, now_ms: i64) -> i64 {
        now_ms.rem_euclid(self.period_ms())
    }

    /// New monitors a node may be given now. `busy`: a reconcile of ours runs on
    /// it, or may still run.
    pub fn budget(&self, now_ms: i64, busy: bool) -> usize {
        if busy || self.into_period(now_ms) < self.margin_ms() {
            return 0;
        }
        (self.time_left(now_ms).as_secs_f64() * self.start_rate).floor() as usize
    }

    /// New monitors a node may be given now by handovers from live nodes: the
    /// old owners stop them first (Kuma stops about twice as fast as it
    /// starts), then this node starts them, all before its next cron. Two
    /// thirds of [`Pace::budget`].
    pub fn handover_budget(&self, now_ms: i64, busy: bool) -> usize {
        self.budget(now_ms, busy) * 2 / 3
    }

    /// Time from `now_ms` until the margin before the node's next cron tick:
    /// a reconcile started now must end within it.
    pub fn time_left(&self, now_ms: i64) -> Duration {
        let left_ms = self.period_ms() - self.margin_ms() - self.into_period(now_ms);
        Duration::from_millis(left_ms.max(0) as u64)
    }

    /// Time until a node that is not busy has a budget again; zero when it has
    /// one now.
    pub fn until_open(&self, now_ms: i64) -> Duration {
        let into = self.into_period(now_ms);
        let wait = if into < self.margin_ms() {
            self.margin_ms() - into
        } else if self.budget(now_ms, false) == 0 {
            self.period_ms() - into + self.margin_ms()
        } else {
            0
        };
        Duration::from_millis(wait as u64)
    }

    /// How long a reconcile that starts `starts` monitors takes, at the pace.
    pub fn reconcile_time(&self, starts: usize) -> Duration {
        Duration::from_secs_f64(starts as f64 / self.start_rate.max(f64::MIN_POSITIVE))
    }

    /// How long a node that is not busy at node time `now_ms` takes to start
    /// `count` new monitors handed to it in waves: each wave waits for its
    /// window and gets at most [`Pace::budget`] (for handovers from live nodes,
    /// [`Pace::handover_budget`], and the old owners stop them first, at about
    /// twice the start rate). The bound the wave plan promises; `None` when this
    /// pace never leaves room for a start.
    pub fn time_to_start(&self, now_ms: i64, count: usize, handover: bool) -> Option<Duration> {
        let mut at = now_ms;
        let mut left = count;
        let mut empty_windows = 0;
        while left > 0 {
            at += self.until_open(at).as_millis() as i64;
            let room = if handover { self.handover_budget(at, false) } else { self.budget(at, false) };
            if room >= left {
                let starts = self.reconcile_time(left);
                at += (if handover { starts + starts / 2 } else { starts }).as_millis() as i64;
                break;
            }
            empty_windows = if room == 0 { empty_windows + 1 } else { 0 };
            if empty_windows > 1 {
                return None;
            }
            left -= room;
            // this wave ends by the margin before the cron; the next opens after it
            at += self.time_left(at).as_millis() as i64 + 1;
        }
        Some(Duration::from_millis((at - now_ms) as u64))
    }

    /// When to decide the next wave, given how long each idle ready node waits
    /// for its window ([`Pace::until_open`]): once the windows that open within
    /// `margin` of the first are all open, so one wave is shared by the nodes
    /// whose clocks differ only by measurement noise instead of going all to
    /// the first. `None` when no node waits.
    pub fn next_wave(&self, waits: impl IntoIterator<Item = Duration>) -> Option<Duration> {
        let mut waits: Vec<Duration> = waits.into_iter().collect();
        waits.sort_unstable();
        let first = *waits.first()?;
        waits.into_iter().take_while(|&w| w <= first + self.margin).last()
    }

    /// Time until the node's next cron tick.
    pub fn until_cron(&self, now_ms: i64) -> Duration {
        Duration::from_millis((self.period_ms() - self.into_period(now_ms)) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    fn kuma() -> Pace {
        Pace { start_rate: 5.0, cron_period: Duration::from_secs(60), margin: Duration::from_secs(3) }
    }

    #[test]
    fn the_time_left_ends_at_the_margin_before_the_next_cron() {
        let pace = kuma();
        assert_eq!(pace.time_left(MINUTE * 10 + 30_000), Duration::from_secs(27));
        assert_eq!(pace.time_left(MINUTE * 10 + 58_000), Duration::ZERO);
    }

    #[test]
    fn a_handover_leaves_room_for_the_old_owners_to_stop_first() {
        let pace = kuma();
        let now = MINUTE * 10 + 30_000;
        let n = pace.handover_budget(now, false);
        assert_eq!(n, 90);
        // one old owner stopping all of them at 10/s, then the starts at 5/s
        let stop_then_start = Duration::from_secs_f64(n as f64 / 10.0) + pace.reconcile_time(n);
        assert!(stop_then_start <= pace.time_left(now), "{stop_then_start:?}");
    }

    #[test]
    fn a_busy_node_gets_nothing() {
        assert_eq!(kuma().budget(MINUTE * 10 + 20_000, true), 0);
    }

    #[test]
    fn right_after_its_cron_a_node_gets_nothing_until_the_margin_passed() {
        let pace = kuma();
        assert_eq!(pace.budget(MINUTE * 10 + 1_000, false), 0);
        assert_eq!(pace.until_open(MINUTE * 10 + 1_000), Duration::from_secs(2));
        assert!(pace.budget(MINUTE * 10 + 3_000, false) > 0);
    }

    #[test]
    fn the_budget_is_the_starts_that_end_before_the_next_crons_margin() {
        let pace = kuma();
        // at :03 there are 54 s before :57: 270 starts at 5/s
        assert_eq!(pace.budget(MINUTE * 10 + 3_000, false), 270);
        // at :30, 27 s: 135 starts, which take 27 s
        assert_eq!(pace.budget(MINUTE * 10 + 30_000, false), 135);
        assert_eq!(pace.reconcile_time(135), Duration::from_secs(27));
        assert_eq!(pace.budget(MINUTE * 10 + 56_900, false), 0);
    }

    #[test]
    fn a_node_without_budget_has_one_after_until_open() {
        let pace = kuma();
        for now in [MINUTE + 500, MINUTE + 56_999, MINUTE + 57_000, MINUTE + 59_999, -1] {
            let wait = pace.until_open(now);
            if pace.budget(now, false) > 0 {
                assert_eq!(wait, Duration::ZERO, "at {now}");
            } else {
                assert!(pace.budget(now + wait.as_millis() as i64, false) > 0, "at {now}, after {wait:?}");
            }
        }
    }

    #[test]
    fn the_promised_time_to_start_counts_the_windows_the_waves_wait_for() {
        let pace = kuma();
        // at :30, 100 starts fit: 20 s
        assert_eq!(pace.time_to_start(MINUTE * 10 + 30_000, 100, false), Some(Duration::from_secs(20)));
        // at :50 only 35 fit before :57; the other 65 start at :03 and take 13 s
        assert_eq!(pace.time_to_start(MINUTE * 10 + 50_000, 100, false), Some(Duration::from_secs(26)));
        // in the margin after a tick, the first wave waits for it to pass
        assert_eq!(pace.time_to_start(MINUTE * 10 + 1_000, 10, false), Some(Duration::from_secs(4)));
        // a handover of 90 at :30: 9 s of stops, then 18 s of starts
        assert_eq!(pace.time_to_start(MINUTE * 10 + 30_000, 90, true), Some(Duration::from_secs(27)));
        assert_eq!(pace.time_to_start(MINUTE * 10 + 30_000, 0, true), Some(Duration::ZERO));
    }

    #[test]
    fn a_wave_waits_for_the_windows_that_open_within_the_margin_of_the_first() {
        let pace = kuma();
        let ms = Duration::from_millis;
        assert_eq!(pace.next_wave([]), None);
        assert_eq!(pace.next_wave([ms(5_499), ms(5_705), ms(5_976)]), Some(ms(5_976)));
        // a node whose window opens much later gets the wave after
        assert_eq!(pace.next_wave([ms(40_000), ms(1_000), ms(3_900)]), Some(ms(3_900)));
        assert_eq!(pace.next_wave([ms(0), ms(4_000)]), Some(ms(0)));
    }

    #[test]
    fn a_pace_without_room_promises_nothing() {
        let pace = Pace { start_rate: 0.1, cron_period: Duration::from_secs(8), margin: Duration::from_secs(1) };
        assert_eq!(pace.time_to_start(0, 1, false), None);
    }

    #[test]
    fn at_any_second_more_monitors_never_start_sooner_and_no_wave_runs_into_a_cron() {
        let pace = kuma();
        for second in 0..60 {
            let now = MINUTE * 10 + second * 1_000;
            let mut before = Duration::ZERO;
            for count in 1..=600 {
                let promised = pace.time_to_start(now, count, false).unwrap();
                assert!(promised >= before, "{count} at :{second}");
                assert!(promised >= pace.reconcile_time(count));
                let end = (now + promised.as_millis() as i64).rem_euclid(MINUTE);
                assert!((3_000..=57_000).contains(&end), "{count} at :{second} end at {end} ms into the minute");
                before = promised;
            }
        }
    }

    #[test]
    fn node_clocks_before_the_epoch_and_short_periods_work() {
        let pace = Pace { start_rate: 100.0, cron_period: Duration::from_millis(600), margin: Duration::from_millis(50) };
        assert_eq!(pace.budget(-300, false), 25);
        assert_eq!(pace.until_cron(-300), Duration::from_millis(300));
    }
}
