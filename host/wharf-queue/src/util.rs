use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Unix time in milliseconds `delay` from now.
pub(crate) fn not_before(delay: Duration) -> u64 {
    now_ms().saturating_add(delay.as_millis() as u64)
}

/// A random 128-bit hex string.
pub(crate) fn nonce() -> String {
    let a: u64 = rand::random();
    let b: u64 = rand::random();
    format!("{a:016x}{b:016x}")
}
