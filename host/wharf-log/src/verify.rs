//! Read-only operator tools: `verify` (every segment of every partition under
//! a data dir) and `dump` (the records of one partition).
//!
//! Both use the same scan as recovery (see `scan.rs`), so `verify` reports
//! exactly what `open` would refuse, plus everything after it: after a
//! problem, verify resynchronises at the next valid frame and continues.
//! A torn tail is reported separately (it is not a problem: `open` drops it).
//! Neither tool takes the partition lock or writes anything, so they can run
//! beside a live writer (which may then show up as a torn tail).

use std::path::{Path, PathBuf};

use crate::error::{Corruption, CorruptionKind, LogError};
use crate::manifest;
use crate::scan::{self, Progress, ScanArgs, ScannedRecord, TornTail};
use crate::storage::{FsStorage, Storage};
use crate::{QUARANTINE_DIR, watermark};

/// A problem found by verify.
pub type VerifyProblem = Corruption;

/// A record as `dump` shows it.
pub type DumpRecord<'a> = ScannedRecord<'a>;

/// Verify result for one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionReport {
    pub dir: PathBuf,
    pub segments: usize,
    pub records: u64,
    pub bytes: u64,
    pub first_seq: Option<u64>,
    /// Sequence after the last valid record.
    pub next_seq: Option<u64>,
    pub watermark: Option<u64>,
    pub problems: Vec<VerifyProblem>,
    pub torn_tail: Option<TornTail>,
    pub salvage_gaps: Vec<(u64, u64)>,
}

/// Verify result for a data dir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub data_dir: PathBuf,
    pub partitions: Vec<PartitionReport>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.partitions.iter().all(|p| p.problems.is_empty())
    }
    pub fn problems(&self) -> impl Iterator<Item = &VerifyProblem> {
        self.partitions.iter().flat_map(|p| p.problems.iter())
    }
}

/// Finds partition directories under `data_dir` (itself included): any
/// directory holding a segment file or a watermark. `quarantine`
/// directories are not descended into. Sorted.
pub fn find_partitions(storage: &dyn Storage, data_dir: &Path) -> Result<Vec<PathBuf>, LogError> {
    let mut out = Vec::new();
    let mut stack = vec![data_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = storage.list_dir(&d).map_err(LogError::io("list", &d))?;
        let is_partition = entries.iter().any(|e| {
            !e.is_dir
                && (crate::segment::parse_segment_file_name(&e.name).is_some()
                    || e.name == watermark::WATERMARK_FILE)
        });
        if is_partition {
            out.push(d);
            continue;
        }
        for e in entries.iter().filter(|e| e.is_dir && e.name != QUARANTINE_DIR) {
            stack.push(d.join(&e.name));
        }
    }
    out.sort();
    Ok(out)
}

/// [`verify_with`] on the real filesystem.
pub fn verify(data_dir: &Path, progress: &mut dyn FnMut(&Progress<'_>)) -> Result<VerifyReport, LogError> {
    verify_with(&FsStorage, data_dir, progress)
}

/// Checks every segment of every partition under `data_dir`. `Err` only for
/// I/O failures; corruption is reported in the `VerifyReport`.
pub fn verify_with(
    storage: &dyn Storage,
    data_dir: &Path,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<VerifyReport, LogError> {
    let mut partitions = Vec::new();
    for dir in find_partitions(storage, data_dir)? {
        partitions.push(verify_partition(storage, &dir, progress)?);
    }
    Ok(VerifyReport { data_dir: data_dir.to_path_buf(), partitions })
}

/// Ok(None) and the corruption recorded, for corrupt side files.
fn corrupt_or<T>(r: Result<T, LogError>, problems: &mut Vec<Corruption>) -> Result<Option<T>, LogError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(LogError::Corrupt(c)) => {
            problems.push(c);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn verify_partition(
    storage: &dyn Storage,
    dir: &Path,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<PartitionReport, LogError> {
    let mut problems = Vec::new();
    let wm = corrupt_or(watermark::load(storage, dir), &mut problems)?;
    let manifest = corrupt_or(manifest::load(storage, dir), &mut problems)?.unwrap_or_default();
    let mut records = 0u64;
    let mut first_seq = None;
    let scan = scan::scan_partition(
        storage,
        dir,
        ScanArgs {
            phase: "verify",
            manifest: &manifest,
            stop_at_first: false,
            progress,
            on_record: &mut |r| {
                records += 1;
                first_seq.get_or_insert(r.seq);
                true
            },
        },
    )?;
    problems.extend(scan.problems.into_iter().map(|p| p.corruption));
    if let (Some(w), Some(n)) = (wm, scan.next_seq)
        && w > n
        && problems.is_empty()
    {
        problems.push(Corruption {
            file: watermark::path(dir),
            offset: 0,
            kind: CorruptionKind::BadWatermark { reason: format!("watermark {w} is beyond the log end {n}") },
        });
    }
    Ok(PartitionReport {
        dir: dir.to_path_buf(),
        segments: scan.files.len(),
        records,
        bytes: scan.bytes,
        first_seq: first_seq.or(scan.segments.first().map(|s| s.base_seq)),
        next_seq: scan.next_seq,
        watermark: wm,
        problems,
        torn_tail: scan.torn,
        salvage_gaps: scan.gaps_crossed,
    })
}

/// [`dump_with`] on the real filesystem.
pub fn dump(
    partition_dir: &Path,
    from_seq: u64,
    progress: &mut dyn FnMut(&Progress<'_>),
    on_record: &mut dyn FnMut(&DumpRecord<'_>) -> bool,
) -> Result<u64, LogError> {
    dump_with(&FsStorage, partition_dir, from_seq, progress, on_record)
}

/// Calls `on_record` for every valid record with seq >= `from_seq`, in
/// order, until it returns false. Stops with `Err(Corrupt)` at the first
/// corruption; stops silently at a torn tail. Returns records emitted.
pub fn dump_with(
    storage: &dyn Storage,
    partition_dir: &Path,
    from_seq: u64,
    progress: &mut dyn FnMut(&Progress<'_>),
    on_record: &mut dyn FnMut(&DumpRecord<'_>) -> bool,
) -> Result<u64, LogError> {
    if !storage.exists(partition_dir) {
        return Err(LogError::io("open", partition_dir)(std::io::ErrorKind::NotFound.into()));
    }
    let manifest = manifest::load(storage, partition_dir)?;
    let mut emitted = 0u64;
    let scan = scan::scan_partition(
        storage,
        partition_dir,
        ScanArgs {
            phase: "dump",
            manifest: &manifest,
            stop_at_first: true,
            progress,
            on_record: &mut |r| {
                if r.seq < from_seq {
                    return true;
                }
                emitted += 1;
                on_record(r)
            },
        },
    )?;
    if let Some(p) = scan.problems.into_iter().next() {
        return Err(LogError::Corrupt(p.corruption));
    }
    Ok(emitted)
}
