//! The salvage manifest: explicit, audited sequence gaps.
//!
//! File `salvage.json` in the partition directory (JSON, written crash-safely
//! like the watermark: temp + fdatasync + rename + dir fsync). Each entry
//! records one region salvage moved aside and the sequence range
//! `[from_seq, to_seq)` that is therefore missing. Sequences are never
//! renumbered: the records after a salvaged region keep their original
//! sequences, and recovery/verify accept a jump from `expected` straight to
//! `found` between two consecutive segments *only* if the recorded ranges
//! together cover exactly `[expected, found)` without a hole (logged with `tracing::warn!` on every open). Any
//! other jump is corruption.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Corruption, CorruptionKind, LogError};
use crate::storage::{Storage, read_all, write_atomic};

pub const MANIFEST_FILE: &str = "salvage.json";
const VERSION: u32 = 1;

/// One salvage action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalvageEntry {
    /// First missing sequence.
    pub from_seq: u64,
    /// First sequence present again (exclusive end of the gap).
    pub to_seq: u64,
    /// Segment file name the region was cut from.
    pub segment: String,
    /// Byte offset of the region in that segment.
    pub offset: u64,
    /// Bytes moved into quarantine.
    pub bytes_moved: u64,
    /// Quarantine file, relative to the partition dir, if bytes were moved.
    pub quarantine: Option<String>,
    /// `CorruptionKind::code()` of the problem.
    pub kind: String,
    /// Wall-clock time of the salvage, ms since the Unix epoch.
    pub at_unix_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalvageManifest {
    pub version: u32,
    pub entries: Vec<SalvageEntry>,
}

impl SalvageManifest {
    /// Whether a jump from `expected` to `found` is an explicit salvage gap:
    /// the union of the recorded ranges covers `[expected, found)`.
    pub fn allows_gap(&self, expected: u64, found: u64) -> bool {
        if expected >= found {
            return false;
        }
        let mut cur = expected;
        while cur < found {
            let next =
                self.entries.iter().filter(|e| e.from_seq <= cur && cur < e.to_seq).map(|e| e.to_seq).max();
            match next {
                Some(n) => cur = n,
                None => return false,
            }
        }
        true
    }

    /// The gap the manifest records right before a segment starting at
    /// `base`, within the segment before it (starting at `prev_base`):
    /// `(from, base)` with `from` as low as the recorded ranges reach.
    /// Recovery reports these for the segments it does not scan; reads
    /// check them when they get there.
    pub fn gap_before(&self, prev_base: u64, base: u64) -> Option<(u64, u64)> {
        let mut from = base;
        while let Some(f) = self
            .entries
            .iter()
            .filter(|e| e.from_seq < from && from <= e.to_seq && e.from_seq >= prev_base)
            .map(|e| e.from_seq)
            .min()
        {
            from = f;
        }
        (from < base).then_some((from, base))
    }
}

pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(MANIFEST_FILE)
}

pub(crate) fn load(storage: &dyn Storage, dir: &Path) -> Result<SalvageManifest, LogError> {
    let p = path(dir);
    if !storage.exists(&p) {
        return Ok(SalvageManifest { version: VERSION, entries: Vec::new() });
    }
    let bytes = read_all(storage, &p).map_err(LogError::io("read", &p))?;
    let bad = |reason: String| {
        LogError::Corrupt(Corruption {
            file: p.clone(),
            offset: 0,
            kind: CorruptionKind::BadManifest { reason },
        })
    };
    let m: SalvageManifest = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if m.version != VERSION {
        return Err(bad(format!("unsupported version {}", m.version)));
    }
    Ok(m)
}

pub(crate) fn store(storage: &dyn Storage, dir: &Path, m: &SalvageManifest) -> Result<(), LogError> {
    let p = path(dir);
    let bytes = serde_json::to_vec_pretty(m)
        .map_err(|e| LogError::io("encode manifest", &p)(std::io::Error::other(e)))?;
    write_atomic(storage, &p, &bytes).map_err(LogError::io("persist manifest", p))
}
