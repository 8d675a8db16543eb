//! The circuit breaker and the AIMD batch size of one lane.
//!
//! A call *failed* when nothing in it was delivered or rejected (every
//! message is to be retried: a retry outcome, a trap, a deadline). After
//! `breaker.failures` failed calls in a row the breaker opens: no calls for
//! `cooldown_ms`, then one probe message (half-open). A probe that succeeds
//! closes it; one that fails opens it again.
//!
//! Telling a target-wide outage from one failing key: the probe is taken
//! from the key that failed least ([`crate::engine::window::Window::select_probe`]),
//! so while healthy keys have messages waiting, the probe is one of theirs
//! and succeeds. A key that fails on its own can open the breaker only while
//! it is all the traffic, and then costs the other keys at most one cooldown.
//! A target-wide outage fails the probe whatever key it comes from.

use crate::config::{Breaker as BreakerPolicy, Delivery};

/// The circuit breaker in front of a target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum BreakerState {
    #[default]
    Closed,
    /// No calls until `until_ms`; then one probe.
    Open { until_ms: u64 },
    /// The next call is a probe of one message.
    HalfOpen,
}

/// What one plugin call amounted to, for the breaker and AIMD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallSummary {
    /// Nothing was delivered or rejected: every message is to be retried.
    pub failed: bool,
    /// The target pushed back: retry-after, a slow call, or a failure.
    pub throttled: bool,
}

impl CallSummary {
    /// A call that settled its messages (delivered, rejected, dead-lettered).
    pub const SETTLED: Self = Self { failed: false, throttled: false };
    /// A call that failed as a whole (trap, deadline, init).
    pub const FAILED: Self = Self { failed: true, throttled: true };
}

/// What changed, for the log line the caller writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    Opened { failed_calls: u32 },
    Closed,
}

/// Consecutive failed calls, the breaker state and the batch size.
#[derive(Debug, Clone, Default)]
pub struct Breaker {
    failed_calls: u32,
}

impl Breaker {
    /// While open: how long until the probe (ms). Moves an expired open
    /// breaker to half-open.
    pub fn wait_ms(state: &mut BreakerState, now: u64) -> Option<u64> {
        match *state {
            BreakerState::Open { until_ms } if now < until_ms => Some(until_ms - now),
            BreakerState::Open { .. } => {
                *state = BreakerState::HalfOpen;
                None
            }
            _ => None,
        }
    }

    /// Feeds one call's result to the breaker and the AIMD batch size.
    pub fn adapt(
        &mut self,
        call: CallSummary,
        state: &mut BreakerState,
        batch_limit: &mut usize,
        policy: (&BreakerPolicy, &Delivery),
        now: u64,
    ) -> Transition {
        let (breaker, delivery) = policy;
        self.failed_calls = if call.failed { self.failed_calls + 1 } else { 0 };
        *batch_limit = if call.throttled {
            (*batch_limit / 2).max(1)
        } else {
            (*batch_limit + 1).min(delivery.batch_max)
        };
        let open = call.failed && (*state == BreakerState::HalfOpen || self.failed_calls >= breaker.failures);
        if open {
            let was_open = matches!(state, BreakerState::Open { .. });
            *state = BreakerState::Open { until_ms: now + breaker.cooldown_ms };
            return match was_open {
                true => Transition::None,
                false => Transition::Opened { failed_calls: self.failed_calls },
            };
        }
        if !call.failed && *state != BreakerState::Closed {
            *state = BreakerState::Closed;
            return Transition::Closed;
        }
        Transition::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> (BreakerPolicy, Delivery) {
        let b: BreakerPolicy = toml::from_str("failures = 2\ncooldown_ms = 100").expect("breaker");
        let d: Delivery = toml::from_str("batch_max = 8").expect("delivery");
        (b, d)
    }

    #[test]
    fn opens_after_failed_calls_probes_and_closes() {
        let (b, d) = policy();
        let (mut br, mut st, mut limit) = (Breaker::default(), BreakerState::Closed, 8);
        assert_eq!(br.adapt(CallSummary::FAILED, &mut st, &mut limit, (&b, &d), 0), Transition::None);
        assert_eq!(limit, 4);
        assert_eq!(
            br.adapt(CallSummary::FAILED, &mut st, &mut limit, (&b, &d), 0),
            Transition::Opened { failed_calls: 2 }
        );
        assert_eq!(Breaker::wait_ms(&mut st, 50), Some(50));
        assert_eq!(Breaker::wait_ms(&mut st, 100), None);
        assert_eq!(st, BreakerState::HalfOpen);
        // A failed probe opens it again at once.
        br.adapt(CallSummary::FAILED, &mut st, &mut limit, (&b, &d), 100);
        assert_eq!(st, BreakerState::Open { until_ms: 200 });
        Breaker::wait_ms(&mut st, 200);
        assert_eq!(br.adapt(CallSummary::SETTLED, &mut st, &mut limit, (&b, &d), 200), Transition::Closed);
        assert_eq!(st, BreakerState::Closed);
        assert_eq!(limit, 2);
    }
}
