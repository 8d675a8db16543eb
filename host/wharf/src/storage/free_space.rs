//! The free-space reserve (`server.min_free_bytes`): appends of client
//! writes stop while the data dir's filesystem has less free space than
//! this, so that what must still be written to recover — DLQ entries,
//! watermarks and cursors, the idempotency window, the audit log — keeps
//! room. A write refused for it changes nothing and answers `507
//! disk_full`; appends resume by themselves once space returns.
//!
//! Free space is read with statvfs (blocks available to unprivileged
//! users), at most every [`RECHECK`], so the check costs a write nothing.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a reading of the free space is trusted.
const RECHECK: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct Reserve {
    dir: PathBuf,
    /// 0: no reserve.
    pub min_free: u64,
    last: Mutex<Option<(Instant, u64)>>,
}

/// The reserve is not met: this many bytes are free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Short {
    pub free: u64,
    pub min_free: u64,
}

impl Reserve {
    pub fn new(dir: &Path, min_free: u64) -> Self {
        Self { dir: dir.to_path_buf(), min_free, last: Mutex::new(None) }
    }

    /// `Some` while free space is under the reserve. A filesystem that
    /// cannot be asked counts as having room (the append itself then tells).
    pub fn short(&self) -> Option<Short> {
        if self.min_free == 0 {
            return None;
        }
        let free = self.free_bytes()?;
        (free < self.min_free).then_some(Short { free, min_free: self.min_free })
    }

    /// Free bytes of the data dir's filesystem (cached for [`RECHECK`]).
    pub fn free_bytes(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, free)) = *last
            && at.elapsed() < RECHECK
        {
            return Some(free);
        }
        let st = rustix::fs::statvfs(&self.dir).ok()?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        *last = Some((Instant::now(), free));
        Some(free)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_reserve_never_refuses_and_an_impossible_one_always_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(Reserve::new(dir.path(), 0).short(), None);
        let all = Reserve::new(dir.path(), u64::MAX);
        let short = all.short().expect("nobody has 16 EiB free");
        assert!(short.free > 0 && short.min_free == u64::MAX);
        assert_eq!(Reserve::new(dir.path(), 1).short(), None, "a byte is free");
    }
}
