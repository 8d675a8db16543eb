//! When to send a call again, and after how long: pure functions of the
//! policy, the attempt number and what went wrong, so they are tested
//! without a server.
//!
//! - Statuses `429`, `503` and `507` are temporary: Wharf wrote nothing and
//!   says when to come back (`Retry-After: 1`). The wait is that many
//!   seconds, capped by [`RetryPolicy::max_wait`].
//! - Without `Retry-After`, and after a transport failure, the wait is an
//!   exponential backoff from [`FIRST_BACKOFF`], capped by `max_wait`, then
//!   scaled by a jitter factor in `[0.5, 1]` so clients refused together do
//!   not come back together.
//! - A transport failure is retried only for a call that is safe to repeat,
//!   unless the request certainly never reached Wharf.
//! - Nothing is retried once `max_attempts` attempts were made.

use std::time::Duration;

/// How often and how long a call is retried. The default: 6 attempts,
/// waits of at most 5 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (`1`, or `0`: never retry).
    pub max_attempts: u32,
    /// The longest wait between two attempts (a longer `Retry-After` is cut
    /// to it).
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 6, max_wait: Duration::from_secs(5) }
    }
}

impl RetryPolicy {
    /// One attempt, no retry.
    pub fn never() -> Self {
        Self { max_attempts: 1, max_wait: Duration::ZERO }
    }
}

/// The first backoff; each next one doubles.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// What went wrong with one attempt, as far as retrying goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Wharf answered this status, with this `Retry-After`.
    Status { status: u16, retry_after: Option<Duration> },
    /// No reply. `sent: false` when the request certainly never reached
    /// Wharf (connection refused, name not resolved, connect timeout).
    Transport { sent: bool },
    /// Some messages of a batch were refused for a temporary reason.
    Messages,
    /// A failure no retry can fix (a malformed URL).
    Permanent,
}

/// Whether a call may be sent again once its request may have arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    /// Repeating it changes nothing (reads, keyed writes, chunks, commits).
    Safe,
    /// Repeating it could act twice (`begin`, DLQ replay): only if Wharf
    /// never saw it or refused it.
    OnlyUnsent,
}

/// The statuses that mean "nothing was done, try again later".
pub(crate) fn retryable_status(status: u16) -> bool {
    matches!(status, 429 | 503 | 507)
}

/// The codes of a batch's per-message refusals that are temporary (the
/// codes Wharf answers with 429, 503 or 507 on a single write).
pub(crate) fn retryable_code(code: &str) -> bool {
    matches!(
        code,
        "backlog_full" | "disk_full" | "too_many_open_files" | "partition_halted" | "queue_unavailable"
    )
}

/// A `Retry-After` in seconds (the form Wharf sends); `None` otherwise.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The backoff after attempt `attempt` (1-based): `FIRST_BACKOFF` doubled
/// per attempt, capped by `max_wait`, scaled by `0.5 + jitter / 2`
/// (`jitter` in `[0, 1]`).
pub(crate) fn backoff(attempt: u32, max_wait: Duration, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(20);
    let full = FIRST_BACKOFF.saturating_mul(1 << doublings).min(max_wait);
    full.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
}

/// How long to wait before attempt `attempt + 1`, or `None` to give up.
pub(crate) fn next_wait(
    policy: &RetryPolicy,
    attempt: u32,
    failure: Failure,
    replay: Replay,
    jitter: f64,
) -> Option<Duration> {
    if attempt >= policy.max_attempts {
        return None;
    }
    match failure {
        Failure::Status { status, retry_after } if retryable_status(status) => Some(
            retry_after.map_or_else(|| backoff(attempt, policy.max_wait, jitter), |d| d.min(policy.max_wait)),
        ),
        Failure::Transport { sent } if !sent || replay == Replay::Safe => {
            Some(backoff(attempt, policy.max_wait, jitter))
        }
        Failure::Messages => Some(backoff(attempt, policy.max_wait, jitter)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy(max_attempts: u32, max_wait_ms: u64) -> RetryPolicy {
        RetryPolicy { max_attempts, max_wait: ms(max_wait_ms) }
    }

    fn status(status: u16, retry_after: Option<u64>) -> Failure {
        Failure::Status { status, retry_after: retry_after.map(Duration::from_secs) }
    }

    #[test]
    fn only_429_503_and_507_are_retried_among_statuses() {
        let p = policy(5, 5000);
        for s in [429, 503, 507] {
            assert!(next_wait(&p, 1, status(s, None), Replay::Safe, 0.0).is_some(), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 410, 413, 422, 500, 502] {
            assert_eq!(next_wait(&p, 1, status(s, None), Replay::Safe, 0.0), None, "{s}");
        }
    }

    #[test]
    fn retry_after_is_honoured_and_capped_by_max_wait() {
        assert_eq!(next_wait(&policy(5, 5000), 1, status(429, Some(1)), Replay::Safe, 0.3), Some(ms(1000)));
        assert_eq!(next_wait(&policy(5, 5000), 1, status(503, Some(0)), Replay::Safe, 0.3), Some(ms(0)));
        assert_eq!(next_wait(&policy(5, 2000), 3, status(507, Some(60)), Replay::Safe, 0.9), Some(ms(2000)));
    }

    #[test]
    fn without_retry_after_the_backoff_doubles_up_to_max_wait() {
        let p = policy(20, 1000);
        let waits: Vec<_> = (1..=6)
            .map(|a| next_wait(&p, a, status(503, None), Replay::Safe, 1.0).map(|d| d.as_millis()))
            .collect();
        assert_eq!(waits, [Some(100), Some(200), Some(400), Some(800), Some(1000), Some(1000)]);
        // A huge attempt number neither overflows nor passes the cap.
        assert_eq!(backoff(u32::MAX, ms(1000), 1.0), ms(1000));
    }

    #[test]
    fn jitter_scales_the_backoff_between_half_and_all_of_it() {
        assert_eq!(backoff(3, ms(10_000), 0.0), ms(200));
        assert_eq!(backoff(3, ms(10_000), 0.5), ms(300));
        assert_eq!(backoff(3, ms(10_000), 1.0), ms(400));
        assert_eq!(backoff(3, ms(10_000), 7.0), ms(400), "jitter is clamped");
    }

    #[test]
    fn no_attempt_is_made_past_max_attempts() {
        let p = policy(3, 5000);
        assert!(next_wait(&p, 2, status(429, Some(1)), Replay::Safe, 0.0).is_some());
        assert_eq!(next_wait(&p, 3, status(429, Some(1)), Replay::Safe, 0.0), None);
        for never in [RetryPolicy::never(), policy(0, 5000)] {
            assert_eq!(next_wait(&never, 1, status(503, None), Replay::Safe, 0.0), None);
            assert_eq!(next_wait(&never, 1, Failure::Transport { sent: false }, Replay::Safe, 0.0), None);
        }
    }

    #[test]
    fn a_transport_failure_is_retried_unless_the_call_may_have_acted_and_is_not_safe_to_repeat() {
        let p = policy(5, 5000);
        let wait = |sent, replay| next_wait(&p, 1, Failure::Transport { sent }, replay, 1.0);
        assert_eq!(wait(true, Replay::Safe), Some(ms(100)));
        assert_eq!(wait(false, Replay::Safe), Some(ms(100)));
        assert_eq!(wait(false, Replay::OnlyUnsent), Some(ms(100)));
        assert_eq!(wait(true, Replay::OnlyUnsent), None);
        // A refusal means nothing was done: retried even when not safe to repeat.
        assert!(next_wait(&p, 1, status(429, Some(1)), Replay::OnlyUnsent, 0.0).is_some());
    }

    #[test]
    fn temporary_batch_refusals_back_off_and_permanent_failures_stop() {
        let p = policy(5, 5000);
        assert_eq!(next_wait(&p, 2, Failure::Messages, Replay::Safe, 1.0), Some(ms(200)));
        assert_eq!(next_wait(&p, 1, Failure::Permanent, Replay::Safe, 1.0), None);
        assert!(retryable_code("backlog_full") && retryable_code("disk_full"));
        assert!(!retryable_code("invalid_base64") && !retryable_code("payload_too_large"));
    }

    #[test]
    fn retry_after_is_read_as_whole_seconds() {
        assert_eq!(parse_retry_after("1"), Some(ms(1000)));
        assert_eq!(parse_retry_after(" 2 "), Some(ms(2000)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
