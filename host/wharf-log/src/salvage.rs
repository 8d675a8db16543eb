//! Salvage: the explicit, logged repair that lets a corrupt partition open.
//!
//! Salvage runs offline (it takes the partition lock and the follower lock,
//! and deletes a published durable end before repairing) and repeats, until the
//! scan is clean (a torn tail is left for `open`):
//!
//! 1. take the first problem: segment `S`, offset `X`, sequence `E` that was
//!    due there; find the first valid frame `Y > X` in `S` (the resync rule
//!    of `scan.rs`), with sequence `sY`;
//! 2. copy the unreadable bytes `[X, Y)` (or `[X, EOF)`) of `S` to
//!    `quarantine/<segment file name>-<X>.bin` (atomic write);
//! 3. if `Y` exists, write bytes `[Y, EOF)` under a fresh header as segment
//!    `{sY:020}.seg` (atomic write) — records keep their original sequences;
//! 4. append an entry to `salvage.json` recording the missing range
//!    `[E, sY)` (or `[E, base of the next segment)` if nothing in `S` was
//!    readable after `X`); `open` accepts exactly this jump, with a warning;
//! 5. truncate `S` to `X` (fdatasync), or delete it if nothing valid
//!    precedes `X`.
//!
//! Every step is an atomic file replacement or an idempotent truncation, in
//! that order, so a salvage interrupted by a crash is completed by running
//! it again (it finds the same first problem and redoes the same steps).
//! Sequences stay dense for everything that follows: nothing is renumbered,
//! the hole is explicit in the manifest.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::QUARANTINE_DIR;
use crate::durable_end;
use crate::error::{CorruptionKind, LogError};
use crate::follower::FOLLOWER_LOCK_FILE;
use crate::manifest::{self, SalvageEntry};
use crate::scan::{self, Progress, ScanArgs, TornTail};
use crate::segment::{self, HEADER_LEN};
use crate::storage::{FsStorage, OpenMode, Storage, read_all, write_atomic};

/// What salvage did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SalvageReport {
    pub dir: PathBuf,
    /// One entry per region handled (also appended to `salvage.json`).
    pub actions: Vec<SalvageEntry>,
    /// A torn tail that was left in place (`open` truncates it).
    pub torn_tail: Option<TornTail>,
}

const MAX_ROUNDS: usize = 100_000;

/// [`salvage_with`] on the real filesystem.
pub fn salvage(
    partition_dir: &Path,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<SalvageReport, LogError> {
    salvage_with(&FsStorage, partition_dir, progress)
}

/// Moves unreadable regions aside until the partition opens again.
/// Fails with `Locked` if the partition is open.
pub fn salvage_with(
    storage: &dyn Storage,
    dir: &Path,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<SalvageReport, LogError> {
    if !storage.exists(dir) {
        return Err(LogError::io("open", dir)(std::io::ErrorKind::NotFound.into()));
    }
    // Also a sidecar holding the tree this partition is in may have it open.
    let _hold = crate::tree_lock::hold(storage, dir, crate::options::DirLock::Own)?;
    // A follower reading a log that is being rewritten could take the
    // repair for corruption: salvage waits until it is gone.
    let _follower_guard = crate::tree_lock::lock_in(storage, dir, FOLLOWER_LOCK_FILE, || LogError::Locked {
        dir: dir.to_path_buf(),
    })?;
    let io = |op, p: &Path| LogError::io(op, p.to_path_buf());
    let mut actions = Vec::new();
    let mut last_problem = None;
    for _ in 0..MAX_ROUNDS {
        let mut m = manifest::load(storage, dir)?;
        let scan = scan::scan_partition(
            storage,
            dir,
            ScanArgs {
                phase: "salvage",
                manifest: &m,
                stop_at_first: true,
                progress: &mut *progress,
                on_record: &mut |_| true,
            },
        )?;
        let Some(p) = scan.problems.into_iter().next() else {
            return Ok(SalvageReport { dir: dir.to_path_buf(), actions, torn_tail: scan.torn });
        };
        if last_problem.as_ref() == Some(&p.corruption) {
            return Err(LogError::Unsalvageable { dir: dir.to_path_buf(), reason: p.corruption.to_string() });
        }
        last_problem = Some(p.corruption.clone());
        // Salvage removes records: a published durable end may no longer
        // hold. The writer publishes afresh on its next open.
        durable_end::remove(storage, dir)?;
        let (base, path) = scan.files[p.segment].clone();
        let next_base = scan.files.get(p.segment + 1).map(|f| f.0);
        let bytes = read_all(storage, &path).map_err(io("read", &path))?;
        let x = p.corruption.offset as usize;
        let due = p.expected.unwrap_or(base);
        let mut resync = p.resync;
        if let CorruptionKind::SequenceGap { expected, found } = p.corruption.kind
            && x == 0
        {
            resync = if found > expected {
                // Chain gap (a segment is missing): nothing to move, only
                // the gap to record.
                Some((0, found))
            } else {
                // Overlapping segment: drop the records already seen.
                segment::find_resync(&bytes, HEADER_LEN, expected)
            };
        }
        let end = resync.map_or(bytes.len(), |(y, _)| y as usize);
        let seg_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();

        // 2. quarantine
        let mut quarantine = None;
        if end > x {
            let qdir = dir.join(QUARANTINE_DIR);
            if !storage.exists(&qdir) {
                storage.create_dir_all(&qdir).map_err(io("create dir", &qdir))?;
                storage.sync_dir(dir).map_err(io("fsync dir", dir))?;
            }
            let rel = format!("{QUARANTINE_DIR}/{seg_name}-{x}.bin");
            let qpath = dir.join(&rel);
            write_atomic(storage, &qpath, &bytes[x..end]).map_err(io("write quarantine", &qpath))?;
            quarantine = Some(rel);
        }
        // 3. the readable rest becomes its own segment
        let mut rewritten_in_place = false;
        if let Some((y, sy)) = resync {
            let new_path = dir.join(segment::segment_file_name(sy));
            rewritten_in_place = new_path == path;
            if !(rewritten_in_place && end == x) {
                let mut seg = segment::encode_header(sy).to_vec();
                seg.extend_from_slice(&bytes[y as usize..]);
                write_atomic(storage, &new_path, &seg).map_err(io("write segment", &new_path))?;
            }
        }
        // 4. record the explicit gap
        let to_seq = match resync {
            Some((_, sy)) => sy.max(due),
            None => next_base.unwrap_or(due).max(due),
        };
        let entry = SalvageEntry {
            from_seq: due,
            to_seq,
            segment: seg_name,
            offset: x as u64,
            bytes_moved: (end - x) as u64,
            quarantine,
            kind: p.corruption.kind.code().to_string(),
            at_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        };
        let known = m.entries.iter().any(|e| {
            e.from_seq == entry.from_seq
                && e.to_seq == entry.to_seq
                && e.segment == entry.segment
                && e.offset == entry.offset
        });
        if !known {
            m.entries.push(entry.clone());
            manifest::store(storage, dir, &m)?;
        }
        // 5. cut the bad region off the original segment
        if !rewritten_in_place {
            if x <= HEADER_LEN {
                storage.remove_file(&path).map_err(io("remove", &path))?;
                storage.sync_dir(dir).map_err(io("fsync dir", dir))?;
            } else {
                let f = storage.open(&path, OpenMode::Write).map_err(io("open", &path))?;
                f.set_len(x as u64).map_err(io("truncate", &path))?;
                f.sync_data().map_err(io("fdatasync", &path))?;
            }
        }
        tracing::warn!(
            file = %path.display(),
            offset = x,
            kind = entry.kind,
            bytes_moved = entry.bytes_moved,
            skipped_from = entry.from_seq,
            skipped_to = entry.to_seq,
            quarantine = entry.quarantine.as_deref().unwrap_or(""),
            "salvaged unreadable region"
        );
        actions.push(entry);
    }
    Err(LogError::Unsalvageable {
        dir: dir.to_path_buf(),
        reason: format!("gave up after {MAX_ROUNDS} rounds"),
    })
}
