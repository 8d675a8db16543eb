//! Error types.
//!
//! Every failure that concerns bytes on disk names the file and, where it
//! makes sense, the byte offset. Corruption is a distinct, typed variant so
//! the host can halt a partition (and keep running) instead of crashing.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// What is wrong at a corrupt location. `code()` is stable and snake_case,
/// for machine-readable output (`wharf log verify --json`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorruptionKind {
    /// The CRC32C stored in a record frame does not match its contents.
    ChecksumMismatch,
    /// A record (or a segment's base) carries `found` where `expected` was due
    /// and no salvage manifest entry explains the jump.
    SequenceGap { expected: u64, found: u64 },
    /// The segment header is unreadable: bad magic, unknown format version,
    /// bad header checksum, or a base sequence that disagrees with the name.
    BadHeader { reason: String },
    /// A record frame declares a length larger than the format allows.
    BadLength { len: u64 },
    /// A record frame is cut short in a segment that is not the last one
    /// (in the last segment this is a torn tail, not corruption).
    TruncatedRecord,
    /// The persisted watermark file is unreadable or lies beyond the log end.
    BadWatermark { reason: String },
    /// The salvage manifest is unreadable.
    BadManifest { reason: String },
    /// A sealed segment holds a record at `next_base` or beyond, which the
    /// next segment starts with (found by a read of a segment recovery did
    /// not scan; `verify` reports it as a `sequence_gap` at the next segment).
    SegmentOverlap { next_base: u64 },
}

impl CorruptionKind {
    /// Stable machine-readable name.
    pub fn code(&self) -> &'static str {
        match self {
            CorruptionKind::ChecksumMismatch => "checksum_mismatch",
            CorruptionKind::SequenceGap { .. } => "sequence_gap",
            CorruptionKind::BadHeader { .. } => "bad_header",
            CorruptionKind::BadLength { .. } => "bad_length",
            CorruptionKind::TruncatedRecord => "truncated_record",
            CorruptionKind::BadWatermark { .. } => "bad_watermark",
            CorruptionKind::BadManifest { .. } => "bad_manifest",
            CorruptionKind::SegmentOverlap { .. } => "segment_overlap",
        }
    }
}

impl fmt::Display for CorruptionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptionKind::ChecksumMismatch => f.write_str("checksum mismatch"),
            CorruptionKind::SequenceGap { expected, found } => {
                write!(f, "sequence gap: expected seq {expected}, found {found}")
            }
            CorruptionKind::BadHeader { reason } => write!(f, "bad segment header: {reason}"),
            CorruptionKind::BadLength { len } => write!(f, "bad record length {len}"),
            CorruptionKind::TruncatedRecord => f.write_str("truncated record in a sealed segment"),
            CorruptionKind::BadWatermark { reason } => write!(f, "bad watermark: {reason}"),
            CorruptionKind::BadManifest { reason } => write!(f, "bad salvage manifest: {reason}"),
            CorruptionKind::SegmentOverlap { next_base } => {
                write!(f, "records at or beyond seq {next_base}, where the next segment starts")
            }
        }
    }
}

/// A corrupt location: file, byte offset within it, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("corruption in {} at offset {offset}: {kind}", file.display())]
pub struct Corruption {
    pub file: PathBuf,
    pub offset: u64,
    pub kind: CorruptionKind,
}

/// Errors returned by this crate.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O call failed. `op` names the call (e.g. `"fdatasync"`).
    #[error("{op} {}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// Stored data is corrupt; the partition must be halted (or salvaged).
    #[error(transparent)]
    Corrupt(#[from] Corruption),
    /// An earlier write or fdatasync failed; the partition accepts no more
    /// appends until it is reopened (reopen runs recovery).
    #[error("partition {} is halted: {reason}", dir.display())]
    Halted { dir: PathBuf, reason: String },
    /// Another process or `Partition` holds the partition lock.
    #[error("partition {} is locked by another user", dir.display())]
    Locked { dir: PathBuf },
    /// Another [`crate::Follower`] holds the partition's follower lock
    /// (one follower per partition).
    #[error("partition {} already has a follower", dir.display())]
    FollowerLocked { dir: PathBuf },
    /// `append` was called with no records.
    #[error("append called with an empty batch")]
    EmptyBatch,
    /// A record exceeds [`crate::MAX_RECORD_LEN`].
    #[error("record of {len} bytes exceeds the maximum of {max}")]
    RecordTooLarge { len: usize, max: usize },
    /// `advance_watermark` beyond the acknowledged end of the log.
    #[error("watermark {requested} is beyond the acknowledged end {acked}")]
    WatermarkBeyondEnd { requested: u64, acked: u64 },
    /// Salvage could not make progress (the problem is not one it repairs).
    #[error("salvage of {} cannot repair: {reason}", dir.display())]
    Unsalvageable { dir: PathBuf, reason: String },
}

/// A failure that goes away by itself: the partition stays healthy, the
/// failed append is rolled back, and a later one may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temporary {
    /// ENOSPC or EDQUOT: no space (or quota) left on the device.
    DiskFull,
    /// EMFILE or ENFILE: no file descriptor left (process or system).
    TooManyOpenFiles,
}

/// Linux errno values of the temporary conditions (`<errno.h>`).
const ENFILE: i32 = 23;
const EMFILE: i32 = 24;
const ENOSPC: i32 = 28;
const EDQUOT: i32 = 122;

/// Whether an I/O error is a temporary condition rather than damage.
pub fn temporary(e: &io::Error) -> Option<Temporary> {
    match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded, _) => Some(Temporary::DiskFull),
        (_, Some(ENOSPC | EDQUOT)) => Some(Temporary::DiskFull),
        (_, Some(EMFILE | ENFILE)) => Some(Temporary::TooManyOpenFiles),
        _ => None,
    }
}

impl LogError {
    /// The temporary condition this error is, if it is one (an I/O error
    /// on a full disk or with no file descriptor left).
    pub fn temporary(&self) -> Option<Temporary> {
        match self {
            LogError::Io { source, .. } => temporary(source),
            _ => None,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io { path, op, source }
    }

    /// The corruption, if this error is one.
    pub fn corruption(&self) -> Option<&Corruption> {
        match self {
            LogError::Corrupt(c) => Some(c),
            _ => None,
        }
    }
}
