//! Polling cadence for tasks, locks and addresses: the first checks come quickly (most simulator and
//! many real tasks end within milliseconds), then the gap doubles up to the configured interval.

use std::time::Duration;

/// The first gap between two polls.
const FIRST: Duration = Duration::from_millis(2);

#[derive(Debug, Clone)]
pub struct PollDelay {
    next: Duration,
    max: Duration,
}

impl PollDelay {
    /// Gaps of 2 ms, 4 ms, 8 ms, … up to `max`.
    pub fn up_to(max: Duration) -> Self {
        Self { next: FIRST.min(max), max }
    }

    /// The gap to wait now.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
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
}
