//! Partition scanning: the single place that decides what is a valid
//! record, a torn tail, an explicit salvage gap, or corruption. Recovery
//! (`Partition::open`), `verify`, `dump` and `salvage` all use it, so they
//! always agree. Recovery scans only the last segment ([`scan_files`] from
//! its index); `Partition::read` checks the sealed ones it did not scan.
//!
//! # The torn-tail rule
//!
//! Walk the segments in sequence order, and the frames of each segment from
//! offset 32, expecting dense sequences (the first segment may start
//! anywhere; each later segment's base must equal the previous end, or the
//! jump must be an explicit salvage-manifest gap). At the first *bad* frame
//! at offset `X` (cut short, length out of bounds, CRC mismatch):
//!
//! - it is a **torn tail** iff the segment is the **last** one and no offset
//!   `Y > X` in it starts a plausible valid frame (see
//!   `segment::find_resync`: in bounds, complete, sequence in
//!   `[expected, expected + (Y-X-1)/16 + 1]`, CRC ok). Bytes `[X, EOF)` were
//!   never acknowledged (an ack requires fdatasync of every byte before it
//!   and of the frame itself), so recovery truncates them;
//! - otherwise it is **corruption** (`ChecksumMismatch`, `BadLength`,
//!   `TruncatedRecord`), reported with file and offset.
//!
//! Explicit salvage gaps are honoured only at segment boundaries (salvage
//! splits the segment at the gap), so inside a segment sequences are dense.
//!
//! A CRC-valid frame with an unexpected sequence is always corruption
//! (`SequenceGap`), wherever it is: a complete frame is not a torn write.
//! A last segment whose header is unreadable and that contains no valid frame
//! is a torn tail too (whole file dropped); otherwise a bad header is
//! `BadHeader` corruption.

use std::path::{Path, PathBuf};

use crate::error::{Corruption, CorruptionKind, LogError};
use crate::manifest::SalvageManifest;
use crate::segment::{self, FrameProblem, HEADER_LEN, HeaderError, Step, Walker};
use crate::storage::{Storage, read_all};

/// A torn, never-acknowledged tail that recovery drops.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TornTail {
    pub file: PathBuf,
    /// Offset of the first dropped byte (0: the whole file is dropped).
    pub offset: u64,
    pub bytes_dropped: u64,
}

/// Progress of a long operation, reported once per segment.
#[derive(Debug)]
pub struct Progress<'a> {
    /// "open", "verify", "dump" or "salvage".
    pub phase: &'static str,
    pub file: &'a Path,
    /// Index of this segment and number of segments in the partition.
    pub segment: usize,
    pub segments: usize,
    /// Bytes scanned so far in this partition.
    pub bytes_done: u64,
}

/// One record seen by a scan.
#[derive(Debug)]
pub struct ScannedRecord<'a> {
    pub file: &'a Path,
    pub offset: u64,
    pub seq: u64,
    pub crc: u32,
    pub payload: &'a [u8],
}

#[derive(Debug)]
pub(crate) struct ScannedSegment {
    pub base_seq: u64,
    pub path: PathBuf,
    /// End of the last good frame (or of the header).
    pub valid_len: u64,
    pub end_seq: u64,
    pub index: Vec<(u64, u64)>,
}

#[derive(Debug)]
pub(crate) struct Problem {
    pub corruption: Corruption,
    /// Index of the segment in the directory listing.
    pub segment: usize,
    /// Sequence that was due where the problem starts (if known).
    pub expected: Option<u64>,
    /// First valid frame after the problem in the same segment: (offset, seq).
    pub resync: Option<(u64, u64)>,
}

#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub segments: Vec<ScannedSegment>,
    /// All segment files found, in order: (base from name, path).
    pub files: Vec<(u64, PathBuf)>,
    pub problems: Vec<Problem>,
    pub torn: Option<TornTail>,
    /// Salvage gaps crossed: (from, to).
    pub gaps_crossed: Vec<(u64, u64)>,
    /// Sequence after the last good record (None if the log has no segment).
    pub next_seq: Option<u64>,
    pub bytes: u64,
    /// The record callback asked to stop.
    pub stopped: bool,
}

/// Lists `*.seg` files of a partition, sorted by base sequence.
pub(crate) fn list_segments(storage: &dyn Storage, dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut v: Vec<(u64, PathBuf)> = storage
        .list_dir(dir)
        .map_err(LogError::io("list", dir))?
        .into_iter()
        .filter(|e| !e.is_dir)
        .filter_map(|e| segment::parse_segment_file_name(&e.name).map(|b| (b, dir.join(&e.name))))
        .collect();
    v.sort();
    Ok(v)
}

pub(crate) struct ScanArgs<'a> {
    pub phase: &'static str,
    pub manifest: &'a SalvageManifest,
    /// Stop at the first corruption (open, salvage) or report all (verify).
    pub stop_at_first: bool,
    pub progress: &'a mut dyn FnMut(&Progress<'_>),
    /// Called for every valid record in order; return false to stop.
    pub on_record: &'a mut dyn FnMut(&ScannedRecord<'_>) -> bool,
}

fn frame_kind(p: &FrameProblem) -> CorruptionKind {
    match p {
        FrameProblem::Incomplete => CorruptionKind::TruncatedRecord,
        FrameProblem::BadLength(len) => CorruptionKind::BadLength { len: *len },
        FrameProblem::ChecksumMismatch => CorruptionKind::ChecksumMismatch,
        FrameProblem::WrongSeq { expected, found } => {
            CorruptionKind::SequenceGap { expected: *expected, found: *found }
        }
    }
}

/// Whether `rest` holds only zero bytes (pre-zeroed segment space).
fn all_zero(rest: &[u8]) -> bool {
    rest.iter().all(|b| *b == 0)
}

/// Scans a partition directory. Read-only.
pub(crate) fn scan_partition(
    storage: &dyn Storage,
    dir: &Path,
    args: ScanArgs<'_>,
) -> Result<Scan, LogError> {
    let files = list_segments(storage, dir)?;
    scan_files(storage, files, 0, args)
}

/// Scans `files` (a partition's segments, in order) from index `from` on:
/// the segments before it are left unread, and the first one scanned may
/// start at any sequence (as the first segment of a partition may).
/// Recovery scans only the tail this way (see `Partition::open`).
pub(crate) fn scan_files(
    storage: &dyn Storage,
    files: Vec<(u64, PathBuf)>,
    from: usize,
    args: ScanArgs<'_>,
) -> Result<Scan, LogError> {
    let mut scan = Scan { files: files.clone(), ..Scan::default() };
    let mut expected: Option<u64> = None;
    let n = files.len();
    for (i, (name_base, path)) in files.iter().enumerate().skip(from) {
        let is_last = i + 1 == n;
        (args.progress)(&Progress {
            phase: args.phase,
            file: path,
            segment: i,
            segments: n,
            bytes_done: scan.bytes,
        });
        let bytes = read_all(storage, path).map_err(LogError::io("read", path))?;
        scan.bytes += bytes.len() as u64;
        let problem = |offset: u64, kind: CorruptionKind, expected: Option<u64>, resync| Problem {
            corruption: Corruption { file: path.clone(), offset, kind },
            segment: i,
            expected,
            resync,
        };

        // Header and chain checks decide where (and whether) frames start.
        let header = match segment::decode_header(&bytes) {
            Ok(b) if b == *name_base => Ok(b),
            Ok(b) => Err(format!("base seq {b} disagrees with the file name")),
            Err(HeaderError::Short) => Err("short header".to_string()),
            Err(HeaderError::Bad(r)) => Err(r),
        };
        let mut walker = match header {
            Err(reason) => {
                let min = expected.unwrap_or(*name_base);
                let resync = segment::find_resync(&bytes, HEADER_LEN.min(bytes.len()), min);
                if is_last && resync.is_none() {
                    scan.torn =
                        Some(TornTail { file: path.clone(), offset: 0, bytes_dropped: bytes.len() as u64 });
                    break;
                }
                scan.problems.push(problem(0, CorruptionKind::BadHeader { reason }, expected, resync));
                if args.stop_at_first {
                    return Ok(scan);
                }
                match resync {
                    Some((o, s)) => Walker::new(&bytes, o as usize, s),
                    None => {
                        expected = None;
                        continue;
                    }
                }
            }
            Ok(base) => {
                if let Some(e) = expected
                    && base != e
                {
                    if args.manifest.allows_gap(e, base) {
                        tracing::warn!(from = e, to = base, file = %path.display(), "crossing salvaged sequence gap");
                        scan.gaps_crossed.push((e, base));
                    } else {
                        let kind = CorruptionKind::SequenceGap { expected: e, found: base };
                        scan.problems.push(problem(0, kind, Some(e), Some((HEADER_LEN as u64, base))));
                        if args.stop_at_first {
                            return Ok(scan);
                        }
                    }
                }
                Walker::new(&bytes, HEADER_LEN, base)
            }
        };

        let mut seg = ScannedSegment {
            base_seq: *name_base,
            path: path.clone(),
            valid_len: walker.pos as u64,
            end_seq: walker.expected,
            index: Vec::new(),
        };
        let mut chain_broken = false;
        loop {
            match walker.step() {
                Step::Record { offset, seq, crc, payload } => {
                    segment::maybe_index(&mut seg.index, seq, offset);
                    seg.valid_len = walker.pos as u64;
                    seg.end_seq = walker.expected;
                    let rec = ScannedRecord { file: path, offset, seq, crc, payload };
                    if !(args.on_record)(&rec) {
                        scan.stopped = true;
                        scan.segments.push(seg);
                        scan.next_seq = Some(walker.expected);
                        return Ok(scan);
                    }
                }
                Step::End => break,
                // The active segment's pre-zeroed space (`partition/zeroed.rs`):
                // the log ends here; nothing was torn.
                Step::Bad { offset, .. } if is_last && all_zero(&bytes[offset as usize..]) => break,
                Step::Bad { offset, problem: p } => {
                    // Salvage gaps exist only between segments (salvage
                    // splits a segment at the gap), never inside one.
                    let resync = match p {
                        FrameProblem::WrongSeq { expected: e, found } if found > e => Some((offset, found)),
                        _ => segment::find_resync(&bytes, offset as usize + 1, walker.expected),
                    };
                    let is_frame_valid = matches!(p, FrameProblem::WrongSeq { .. });
                    if is_last && resync.is_none() && !is_frame_valid {
                        scan.torn = Some(TornTail {
                            file: path.clone(),
                            offset,
                            bytes_dropped: bytes.len() as u64 - offset,
                        });
                        break;
                    }
                    scan.problems.push(problem(offset, frame_kind(&p), Some(walker.expected), resync));
                    if args.stop_at_first {
                        return Ok(scan);
                    }
                    match resync {
                        Some((o, s)) => walker = Walker::new(&bytes, o as usize, s),
                        None => {
                            chain_broken = true;
                            break;
                        }
                    }
                }
            }
        }
        expected = if chain_broken { None } else { Some(seg.end_seq) };
        scan.next_seq = Some(seg.end_seq);
        scan.segments.push(seg);
    }
    if scan.next_seq.is_none() {
        // Only a torn, header-less last segment (or nothing): the log
        // continues at the sequence that was due.
        scan.next_seq = expected.or_else(|| scan.torn.as_ref().and(files.last().map(|f| f.0)));
    }
    Ok(scan)
}
