//! Rate limits as pure functions of time: a sliding window that never lets more than
//! `limit` sends happen in any `window`, and tells when the next send may go, so the
//! dispatcher can sleep exactly that long instead of polling.

use std::collections::VecDeque;
use std::time::Duration;

/// At most `limit` events in any `window`. Keeps the times of the last `limit` events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlidingWindow {
    limit: usize,
    window: Duration,
    /// Event times (any monotonic clock, as durations since its origin), oldest first.
    recent: VecDeque<Duration>,
}

impl SlidingWindow {
    /// A limiter allowing `limit` events per `window` (`limit` 0 allows nothing).
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: limit as usize,
            window,
            recent: VecDeque::with_capacity((limit as usize).min(1024)),
        }
    }

    /// When an event may happen, at or after `now`: `now` itself when allowed.
    pub fn next_allowed(&mut self, now: Duration) -> Option<Duration> {
        if self.limit == 0 {
            return None;
        }
        while self.recent.front().is_some_and(|&t| t + self.window <= now) {
            self.recent.pop_front();
        }
        if self.recent.len() < self.limit {
            Some(now)
        } else {
            self.recent.front().map(|&oldest| oldest + self.window)
        }
    }

    /// Records an event at `now` (call only when [`next_allowed`](Self::next_allowed) said
    /// `now`).
    pub fn record(&mut self, now: Duration) {
        self.recent.push_back(now);
        while self.recent.len() > self.limit {
            self.recent.pop_front();
        }
    }

    /// Changes the limit, keeping history (a lowered limit takes effect at once).
    pub fn set_limit(&mut self, limit: u32) {
        self.limit = limit as usize;
    }

    /// Events within the window ending at `now`.
    pub fn len_at(&self, now: Duration) -> usize {
        self.recent
            .iter()
            .filter(|&&t| t + self.window > now)
            .count()
    }

    /// The oldest event remembered (it leaves the window first).
    pub fn oldest(&self) -> Option<Duration> {
        self.recent.front().copied()
    }
}

/// Delay before retry number `attempt` (1-based): exponential from `base`, capped at
/// `max`, with "full jitter" taken from `random` (any uniformly random u64), so that
/// many failures at once do not retry in lockstep.
pub fn backoff(attempt: u32, base: Duration, max: Duration, random: u64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(32);
    let ceiling = base.saturating_mul(1u32 << exponent.min(31)).min(max);
    let ceiling_ms = u64::try_from(ceiling.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    // Half fixed, half random: never retries at once, never waits past the ceiling.
    Duration::from_millis(ceiling_ms / 2 + random % (ceiling_ms / 2 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_sixty_first_send_in_a_minute_waits() {
        let mut limiter = SlidingWindow::new(60, 60 * S);
        let start = 100 * S;
        for i in 0..60 {
            let now = start + Duration::from_millis(i * 10);
            assert_eq!(limiter.next_allowed(now), Some(now));
            limiter.record(now);
        }
        let now = start + S;
        // The 61st may go when the first leaves the window.
        assert_eq!(limiter.next_allowed(now), Some(start + 60 * S));
        assert_eq!(limiter.next_allowed(start + 60 * S), Some(start + 60 * S));
        limiter.record(start + 60 * S);
        // Never more than 60 in any 60 s window.
        assert_eq!(
            limiter.next_allowed(start + 60 * S),
            Some(start + 60 * S + Duration::from_millis(10))
        );
    }

    #[test]
    fn zero_allows_nothing_and_limits_can_change() {
        let mut limiter = SlidingWindow::new(0, S);
        assert_eq!(limiter.next_allowed(S), None);
        limiter.set_limit(1);
        assert_eq!(limiter.next_allowed(S), Some(S));
        limiter.record(S);
        assert_eq!(limiter.next_allowed(S), Some(2 * S));
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        let base = S;
        let max = 300 * S;
        for attempt in 1..20 {
            let low = backoff(attempt, base, max, 0);
            let high = backoff(attempt, base, max, u64::MAX);
            let ceiling = (base * 2u32.pow(attempt.saturating_sub(1).min(31))).min(max);
            assert!(
                low >= ceiling / 2 && high <= ceiling,
                "{attempt}: {low:?} {high:?} {ceiling:?}"
            );
        }
        assert!(backoff(3, base, max, 0) > backoff(1, base, max, u64::MAX));
        for random in [0, 7, 150_000, u64::MAX] {
            let capped = backoff(40, base, max, random);
            assert!(capped >= max / 2 && capped <= max, "{capped:?}");
        }
    }
}
