//! Polling cadence for tasks, locks and addresses: the first checks come quickly (most simulator and
//! many real tasks end within milliseconds), then the gap doubles up to the configured interval; when
//! a wait of that kind was seen lately, the checks close in around the time it is due instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The first gap between two polls.
const FIRST: Duration = Duration::from_millis(2);

#[derive(Debug, Clone)]
pub struct PollDelay {
    next: Duration,
    max: Duration,
    /// When the wait is due (how long waits of its kind took lately).
    due: Option<Duration>,
}

impl PollDelay {
    /// Gaps of 2 ms, 4 ms, 8 ms, … up to `max`.
    pub fn up_to(max: Duration) -> Self {
        Self { next: FIRST.min(max), max, due: None }
    }

    /// As `up_to`, and when the wait is expected to take about `due`: no gap runs past 90% of it, and
    /// from there until half as long again the gaps are a fortieth of `due` (at least a tenth of `max`,
    /// at most `max`), so a wait that ends on time is seen within that instead of up to `max` late. At
    /// most 24 polls in that window; waits of 40 intervals or more keep the usual cadence.
    pub fn around(max: Duration, due: Option<Duration>) -> Self {
        Self { due, ..Self::up_to(max) }
    }

    /// The gap to wait now.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// The gap to wait now, `elapsed` into the wait.
    pub fn next_delay_at(&mut self, elapsed: Duration) -> Duration {
        let Some(due) = self.due else { return self.next_delay() };
        let (opens, closes) = (due.mul_f64(0.9), due.mul_f64(1.5));
        if elapsed < opens {
            let gap = self.next.min(opens - elapsed);
            if gap == self.next {
                self.next = (self.next * 2).min(self.max);
            }
            gap
        } else if elapsed < closes {
            // A fortieth of the expected time, at least a tenth of `max` (5 ms at least) and at most
            // `max`: at most 24 polls in the window, and none extra for waits of 40 intervals or more.
            let floor = (self.max / 10).max(Duration::from_millis(5)).min(self.max);
            (due / 40).clamp(floor, self.max)
        } else {
            self.next_delay()
        }
    }
}

/// How long waits of each kind (a task type such as `qmclone`, or a named wait such as a guest's
/// address) took lately: a moving average, per client, that `PollDelay::around` polls around.
#[derive(Debug, Default)]
pub struct WaitTimes {
    by_kind: Mutex<HashMap<String, Duration>>,
}

impl WaitTimes {
    /// At most this many kinds are kept (task types are a small fixed set; this only bounds memory).
    const KINDS: usize = 64;

    pub fn expected(&self, kind: &str) -> Option<Duration> {
        self.by_kind.lock().unwrap_or_else(|p| p.into_inner()).get(kind).copied()
    }

    /// Records a wait that was seen under way and then ended after `took`.
    pub fn observe(&self, kind: &str, took: Duration) {
        let mut by_kind = self.by_kind.lock().unwrap_or_else(|p| p.into_inner());
        if by_kind.len() >= Self::KINDS && !by_kind.contains_key(kind) {
            return;
        }
        let avg = by_kind.entry(kind.to_owned()).or_insert(took);
        // A third of each new sample: one slow wait does not move the window far.
        *avg = avg.mul_f64(2.0 / 3.0) + took.mul_f64(1.0 / 3.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_fast_and_caps_at_the_interval() {
        let mut p = PollDelay::up_to(Duration::from_millis(250));
        let gaps: Vec<u128> = (0..9).map(|_| p.next_delay().as_millis()).collect();
        assert_eq!(gaps, [2, 4, 8, 16, 32, 64, 128, 250, 250]);
        assert_eq!(PollDelay::up_to(Duration::from_millis(1)).next_delay(), Duration::from_millis(1));
    }

    /// Walks a wait: the times (ms into it) at which polls happen until `until`.
    fn polls(mut p: PollDelay, until: u64) -> Vec<u64> {
        let mut at = Duration::ZERO;
        let mut out = Vec::new();
        while at.as_millis() < u128::from(until) {
            at += p.next_delay_at(at);
            out.push(at.as_millis() as u64);
        }
        out
    }

    #[test]
    fn a_wait_due_at_one_second_is_polled_closely_around_it() {
        let max = Duration::from_millis(250);
        assert_eq!(polls(PollDelay::up_to(max), 1000), [2, 6, 14, 30, 62, 126, 254, 504, 754, 1004]);
        let due = polls(PollDelay::around(max, Some(Duration::from_secs(1))), 1060);
        assert_eq!(due, [2, 6, 14, 30, 62, 126, 254, 504, 754, 900, 925, 950, 975, 1000, 1025, 1050, 1075]);
        // A long wait keeps the usual cadence in its window (no extra polls).
        let long = polls(PollDelay::around(max, Some(Duration::from_secs(120))), 110_000);
        let in_window: Vec<u64> = long.windows(2).filter(|w| w[0] >= 108_000).map(|w| w[1] - w[0]).collect();
        assert!(!in_window.is_empty() && in_window.iter().all(|&g| g == 250), "{in_window:?}");
        // Past half as long again, back to the usual cadence.
        let late = polls(PollDelay::around(max, Some(Duration::from_millis(100))), 600);
        assert_eq!(late, [2, 6, 14, 30, 62, 90, 115, 140, 165, 229, 357, 607]);
    }

    #[test]
    fn wait_times_move_a_third_of_the_way_to_each_sample() {
        let w = WaitTimes::default();
        assert_eq!(w.expected("qmclone"), None);
        w.observe("qmclone", Duration::from_millis(900));
        assert_eq!(w.expected("qmclone"), Some(Duration::from_millis(900)));
        w.observe("qmclone", Duration::from_millis(1200));
        assert_eq!(w.expected("qmclone"), Some(Duration::from_millis(1000)));
    }
}
