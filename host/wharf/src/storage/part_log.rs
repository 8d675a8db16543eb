//! A partition's log as this process holds it.
//!
//! - `--role all` and `--role processor`: the writer (`wharf_log::Partition`,
//!   holding the partition's LOCK). A processor publishes its durable end
//!   after every group commit, so that a consumer process can follow, and
//!   picks up the consumer's watermark (for admission control and GC).
//! - `--role consumer`: a follower (`wharf_log::Follower`): it reads only
//!   what the processor made durable and persists the delivered watermark.
//!   It never appends.

use wharf_log::{Follower, LogError, Partition, PartitionStats, Record};

#[derive(Debug)]
#[allow(clippy::large_enum_variant, reason = "one per partition, held behind an Arc")]
pub enum PartLog {
    Writer(Partition),
    Follower(Follower),
}

impl PartLog {
    /// The writer, for appends; `None` in a consumer process.
    pub fn writer(&self) -> Option<&Partition> {
        match self {
            PartLog::Writer(p) => Some(p),
            PartLog::Follower(_) => None,
        }
    }

    /// Every record below is durable and readable.
    pub fn next_seq(&self) -> u64 {
        match self {
            PartLog::Writer(p) => p.next_seq(),
            PartLog::Follower(f) => f.next_seq(),
        }
    }

    pub fn first_seq(&self) -> u64 {
        match self {
            PartLog::Writer(p) => p.first_seq(),
            PartLog::Follower(f) => f.first_seq(),
        }
    }

    /// Every record below is delivered or dead-lettered.
    pub fn watermark(&self) -> u64 {
        match self {
            PartLog::Writer(p) => p.watermark(),
            PartLog::Follower(f) => f.watermark(),
        }
    }

    pub fn read(&self, from_seq: u64, max_records: usize, max_bytes: usize) -> Result<Vec<Record>, LogError> {
        match self {
            PartLog::Writer(p) => p.read(from_seq, max_records, max_bytes),
            PartLog::Follower(f) => f.read(from_seq, max_records, max_bytes),
        }
    }

    /// Whether `seq` is in the writer's active segment (recently written,
    /// so its pages are cached); `false` for a follower.
    pub fn in_active_segment(&self, seq: u64) -> bool {
        match self {
            PartLog::Writer(p) => seq >= p.active_base_seq(),
            PartLog::Follower(_) => false,
        }
    }

    pub fn advance_watermark(&self, to: u64) -> Result<(), LogError> {
        match self {
            PartLog::Writer(p) => p.advance_watermark(to),
            PartLog::Follower(f) => f.advance_watermark(to),
        }
    }

    /// A follower has no append counters: those stay 0.
    pub fn stats(&self) -> PartitionStats {
        match self {
            PartLog::Writer(p) => p.stats(),
            PartLog::Follower(f) => {
                let s = f.stats();
                PartitionStats {
                    next_seq: s.next_seq,
                    first_seq: s.first_seq,
                    acked_seq: s.next_seq,
                    synced_seq: s.next_seq,
                    watermark: s.watermark,
                    segments: s.segments,
                    bytes: 0,
                    delivered_bytes: 0,
                    fsyncs: 0,
                    appends: 0,
                    records: 0,
                    halted: None,
                }
            }
        }
    }
}
