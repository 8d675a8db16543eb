//! Clocks. Ordering never depends on these: sequences do.
//!
//! Wall time ([`now_ms`]) is for absolute times: when a message was written,
//! dead-lettered or audited, and the `deliver_at_ms` a client asked for.
//! Durations in the delivery engine (retry backoff, the breaker's cooldown,
//! due times), the idempotency window and transaction time-outs use
//! [`engine_ms`], the monotonic clock, so that a wall-clock jump neither
//! fires them early nor stalls them (their stored times are on its scale:
//! the wall clock at the process's start plus monotonic time since).

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The delivery engine's clock: milliseconds on the monotonic clock, on the
/// Unix-epoch scale of the first call (so that it reads like a wall time
/// while the wall clock does not jump). Never goes backward.
pub fn engine_ms() -> u64 {
    static START: OnceLock<(Instant, u64)> = OnceLock::new();
    let (at, wall) = START.get_or_init(|| (Instant::now(), now_ms()));
    wall.saturating_add(at.elapsed().as_millis() as u64)
}

/// A wall time (a client's `deliver_at_ms`) on the engine's clock: as far
/// from [`engine_ms`] as it is from [`now_ms`] right now.
pub fn engine_ms_at(wall_ms: u64) -> u64 {
    let (engine, wall) = (engine_ms(), now_ms());
    match wall_ms >= wall {
        true => engine.saturating_add(wall_ms - wall),
        false => engine.saturating_sub(wall - wall_ms),
    }
}
