//! Pre-zeroed space at the end of the active segment, so that a group
//! commit's fdatasync has no metadata to write.
//!
//! Appending to a file changes its size, and then every fdatasync also
//! writes the inode and waits for it: one more synchronous device write per
//! commit round. Frames are instead written with pwrite into space that was
//! already written with zeros, ahead of the end, in chunks: the file's size
//! changes once per chunk, not once per round. Measured here, 4 KiB
//! pwrite + fdatasync: 4,561-5,074 rounds/s appending, 7,111-7,493 into a
//! pre-zeroed file; one writer on the log, 5,517 -> 7,785 acks/s
//! (`docs/benchmarks.md`, "Pre-zeroed segments").
//!
//! Invariants (`docs/log-format.md`, "Pre-zeroed tail"):
//! - only the active segment has zeros after its last frame; `roll` cuts
//!   the file to its last frame before the seal's fdatasync, so a sealed
//!   segment's length is still its end;
//! - zeros never overwrite a frame: they go after the frames about to be
//!   written, which fill the file up to their end, and one fdatasync covers
//!   both, so an acknowledged frame never has unwritten bytes before it;
//! - recovery reads an all-zero remainder of the last segment as this
//!   space, not as a torn tail (`scan.rs`), and keeps it;
//! - zeroing is best effort: if it fails (a full disk), the frames are
//!   written as before and fail or succeed on their own.
//!
//! A chunk is a quarter of what the segment holds, between 64 KiB and
//! 256 KiB, and never past `segment_max_bytes`: an idle partition with one
//! small write holds 64 KiB of zeros. The zeros are flushed by the next
//! fdatasync, so a chunk is also a latency bump for that round: with 1 MiB
//! and 4 MiB chunks p99 at half load rose to 1.9 and 5.1 ms, with 64 KiB
//! and 256 KiB it stayed at 1.2-1.3 ms (`docs/benchmarks.md`).

use crate::storage::StorageFile;

const MIN_CHUNK: u64 = 64 << 10;
const MAX_CHUNK: u64 = 256 << 10;
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// How far the active segment's file is written (frames, then zeros);
/// `None` until asked of the file (an unopened segment stays unopened).
#[derive(Debug, Default)]
pub(super) struct Zeroed {
    to: Option<u64>,
}

impl Zeroed {
    /// Forget what is known (a new segment, or after a failed write).
    pub fn reset(&mut self) {
        self.to = None;
    }

    /// Whether bytes past `end` are zeros that `roll` must cut.
    pub fn beyond(&mut self, file: &dyn StorageFile, end: u64) -> bool {
        self.known(file).is_some_and(|to| to > end)
    }

    /// Before frames ending at `end` are written: zeros past `end`, so
    /// that the next writes leave the file's size alone.
    pub fn ahead_of(&mut self, file: &dyn StorageFile, end: u64, segment_max: u64) {
        let Some(zeroed) = self.known(file) else { return };
        if end <= zeroed {
            return;
        }
        let chunk = (end / 4).clamp(MIN_CHUNK, MAX_CHUNK);
        let target = (end + chunk).min(segment_max).max(end);
        // Zeros after the frames about to be written (which fill the file
        // up to `end` themselves), never over a frame.
        let mut at = end;
        while at < target {
            let n = (target - at).min(ZEROS.len() as u64);
            if let Err(e) = file.write_at(&ZEROS[..n as usize], at) {
                tracing::debug!(error = %e, offset = at, "pre-zeroing the segment failed; appending as is");
                self.to = None;
                return;
            }
            at += n;
        }
        self.to = Some(at);
    }

    /// The frames `[.., end)` were written: the file is at least that long.
    pub fn wrote(&mut self, end: u64) {
        self.to = self.to.map(|to| to.max(end));
    }

    fn known(&mut self, file: &dyn StorageFile) -> Option<u64> {
        if self.to.is_none() {
            self.to = file.len().ok();
        }
        self.to
    }
}
