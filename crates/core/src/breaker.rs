//! The circuit breaker of one provider for one bot, as a pure state machine given the
//! time: `threshold` consecutive retryable failures open it for `cooldown`; a provider
//! found broken (revoked token, logged-out session) opens it at once. When the cooldown
//! has passed, one caller is let through as a probe (half-open): its success closes the
//! breaker, its failure opens it for another cooldown. Times are Unix milliseconds.

use serde::{Deserialize, Serialize};

use crate::provider::ErrorClass;

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum BreakerState {
    /// Sending; `failures` consecutive retryable failures so far.
    Closed { failures: u32 },
    /// Not sending until `until_ms`.
    Open { until_ms: i64 },
    /// One probe is under way (since `since_ms`); others wait for its outcome.
    HalfOpen { since_ms: i64 },
}

/// What a breaker answers when asked whether a send may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: send.
    Allowed,
    /// The cooldown is over: this send is the probe.
    Probe,
    /// Open (or a probe is under way): skip this provider.
    Refused,
}

/// A provider's circuit breaker for one bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreaker {
    pub state: BreakerState,
    pub threshold: u32,
    pub cooldown_ms: i64,
}

impl CircuitBreaker {
    /// A closed breaker. A threshold of 0 is taken as 1.
    pub fn new(threshold: u32, cooldown_ms: i64) -> Self {
        Self {
            state: BreakerState::Closed { failures: 0 },
            threshold: threshold.max(1),
            cooldown_ms: cooldown_ms.max(0),
        }
    }

    /// Whether a send may go at `now_ms`; the first caller after the cooldown becomes the
    /// probe. A probe that never reports back (its task died) is given up after a
    /// cooldown, and another caller probes.
    pub fn admit(&mut self, now_ms: i64) -> Admission {
        match self.state {
            BreakerState::Closed { .. } => Admission::Allowed,
            BreakerState::Open { until_ms } if now_ms >= until_ms => {
                self.state = BreakerState::HalfOpen { since_ms: now_ms };
                Admission::Probe
            }
            BreakerState::HalfOpen { since_ms }
                if now_ms.saturating_sub(since_ms) >= self.cooldown_ms.max(1) =>
            {
                self.state = BreakerState::HalfOpen { since_ms: now_ms };
                Admission::Probe
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => Admission::Refused,
        }
    }

    /// Whether a send would be admitted now, without taking the probe.
    pub fn is_available(&self, now_ms: i64) -> bool {
        match self.state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until_ms } => now_ms >= until_ms,
            BreakerState::HalfOpen { since_ms } => {
                now_ms.saturating_sub(since_ms) >= self.cooldown_ms.max(1)
            }
        }
    }

    /// A send (or a probe) succeeded: closed, count reset.
    pub fn on_success(&mut self) {
        self.state = BreakerState::Closed { failures: 0 };
    }

    /// A send failed with `class` at `now_ms`. A permanent failure is the message's
    /// fault, not the provider's: it leaves the breaker as it is (and ends a probe as a
    /// success: the provider answered).
    pub fn on_failure(&mut self, class: ErrorClass, now_ms: i64) {
        let open = BreakerState::Open {
            until_ms: now_ms.saturating_add(self.cooldown_ms),
        };
        self.state = match (class, self.state) {
            (ErrorClass::Permanent, BreakerState::HalfOpen { .. }) => {
                BreakerState::Closed { failures: 0 }
            }
            (ErrorClass::Permanent, state) => state,
            (ErrorClass::ProviderBroken, _) => open,
            (ErrorClass::Retryable, BreakerState::Closed { failures }) => {
                let failures = failures.saturating_add(1);
                if failures >= self.threshold {
                    open
                } else {
                    BreakerState::Closed { failures }
                }
            }
            (ErrorClass::Retryable, BreakerState::HalfOpen { .. }) => open,
            // Failures of sends admitted before it opened: it stays open as it is.
            (ErrorClass::Retryable, state @ BreakerState::Open { .. }) => state,
        };
    }

    /// Opens the breaker now (a health probe found the provider broken).
    pub fn trip(&mut self, now_ms: i64) {
        self.state = BreakerState::Open {
            until_ms: now_ms.saturating_add(self.cooldown_ms),
        };
    }

    /// Takes new settings; the state is kept.
    pub fn configure(&mut self, threshold: u32, cooldown_ms: i64) {
        self.threshold = threshold.max(1);
        self.cooldown_ms = cooldown_ms.max(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn opens_after_threshold_then_probes_once_after_cooldown() {
        let mut b = CircuitBreaker::new(3, 1000);
        for t in 0..2 {
            assert_eq!(b.admit(t), Admission::Allowed);
            b.on_failure(ErrorClass::Retryable, t);
        }
        assert_eq!(b.state, BreakerState::Closed { failures: 2 });
        b.on_failure(ErrorClass::Retryable, 10);
        assert_eq!(b.state, BreakerState::Open { until_ms: 1010 });
        assert_eq!(b.admit(500), Admission::Refused);
        assert!(!b.is_available(1009));
        assert_eq!(b.admit(1010), Admission::Probe);
        // One probe at a time.
        assert_eq!(b.admit(1011), Admission::Refused);
        b.on_failure(ErrorClass::Retryable, 1020);
        assert_eq!(b.state, BreakerState::Open { until_ms: 2020 });
        assert_eq!(b.admit(2020), Admission::Probe);
        b.on_success();
        assert_eq!(b.admit(2021), Admission::Allowed);
    }

    #[test]
    fn a_success_resets_the_count_and_broken_opens_at_once() {
        let mut b = CircuitBreaker::new(3, 1000);
        b.on_failure(ErrorClass::Retryable, 0);
        b.on_failure(ErrorClass::Retryable, 0);
        b.on_success();
        b.on_failure(ErrorClass::Retryable, 0);
        assert_eq!(b.state, BreakerState::Closed { failures: 1 });
        b.on_failure(ErrorClass::ProviderBroken, 5);
        assert_eq!(b.state, BreakerState::Open { until_ms: 1005 });
    }

    #[test]
    fn permanent_failures_do_not_count() {
        let mut b = CircuitBreaker::new(1, 1000);
        for t in 0..10 {
            b.on_failure(ErrorClass::Permanent, t);
        }
        assert_eq!(b.admit(10), Admission::Allowed);
    }

    #[test]
    fn a_lost_probe_is_given_up_after_a_cooldown() {
        let mut b = CircuitBreaker::new(1, 100);
        b.on_failure(ErrorClass::Retryable, 0);
        assert_eq!(b.admit(100), Admission::Probe);
        assert_eq!(b.admit(150), Admission::Refused);
        assert_eq!(b.admit(200), Admission::Probe);
    }

    fn class() -> impl Strategy<Value = ErrorClass> {
        prop_oneof![
            Just(ErrorClass::Retryable),
            Just(ErrorClass::Permanent),
            Just(ErrorClass::ProviderBroken),
        ]
    }

    #[derive(Debug, Clone)]
    enum Step {
        Admit,
        Success,
        Failure(ErrorClass),
        Wait(i64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            Just(Step::Admit),
            Just(Step::Success),
            class().prop_map(Step::Failure),
            (0i64..3000).prop_map(Step::Wait),
        ]
    }

    proptest! {
        /// Whatever happens: a closed breaker never holds `threshold` failures; an open
        /// one never admits before its time and never stays open past `now + cooldown`;
        /// at most one probe runs per cooldown; `threshold` retryable failures in a row
        /// from closed always open it; `is_available` agrees with `admit`.
        #[test]
        fn invariants_hold(threshold in 1u32..6, cooldown in 0i64..2000,
                           steps in proptest::collection::vec(step(), 0..80)) {
            let mut b = CircuitBreaker::new(threshold, cooldown);
            let mut now = 0i64;
            let mut streak = 0u32;
            for step in steps {
                match step {
                    Step::Wait(ms) => now += ms,
                    Step::Admit => {
                        let available = b.is_available(now);
                        let before = b.state;
                        let admission = b.admit(now);
                        prop_assert_eq!(available, admission != Admission::Refused);
                        if admission == Admission::Refused {
                            prop_assert_eq!(before, b.state);
                        }
                        if admission == Admission::Probe && cooldown > 0 {
                            prop_assert_eq!(b.admit(now), Admission::Refused);
                        }
                    }
                    Step::Success => { b.on_success(); streak = 0; }
                    Step::Failure(class) => {
                        let was_closed = matches!(b.state, BreakerState::Closed { .. });
                        b.on_failure(class, now);
                        match class {
                            ErrorClass::ProviderBroken => {
                                prop_assert_eq!(b.state, BreakerState::Open { until_ms: now + cooldown });
                            }
                            ErrorClass::Retryable if was_closed => {
                                streak += 1;
                                if streak >= threshold {
                                    let open = matches!(b.state, BreakerState::Open { .. });
                                    prop_assert!(open, "not open after {} failures", streak);
                                }
                            }
                            _ => {}
                        }
                        if !matches!(b.state, BreakerState::Closed { .. }) { streak = 0; }
                    }
                }
                match b.state {
                    BreakerState::Closed { failures } => prop_assert!(failures < threshold),
                    BreakerState::Open { until_ms } => prop_assert!(until_ms <= now + cooldown),
                    BreakerState::HalfOpen { since_ms } => prop_assert!(since_ms <= now),
                }
            }
        }
    }
}
