//! The published durable end: how a writer tells a follower in another
//! process how far the log is durable.
//!
//! File `durable` in the partition directory, 40 bytes, little-endian:
//!
//! ```text
//! 0   8  magic     b"WHARFDE1"
//! 8   8  base_seq  base of the segment holding the durable end
//! 16  8  offset    end of the last durable frame in that segment
//! 24  8  next_seq  every record < next_seq is durable
//! 32  4  crc       CRC32C of bytes [0..32)
//! 36  4  reserved  (0)
//! ```
//!
//! The writer (a `Partition` opened with `publish_durable_end`) rewrites it
//! in place with one pwrite after every fdatasync that made records durable
//! (group-commit rounds, segment seals) and once on open after recovery.
//! It is never fsync'ed: it is a *hint* of what is already durable, never a
//! promise. Invariants:
//!
//! - every value ever written describes records that were fdatasync'ed
//!   before the write, so any value that decodes (magic and CRC) is a lower
//!   bound of the durable log, whether it is the newest one, an older one
//!   that a crash brought back, or one read while the writer is gone;
//! - values only grow while a writer runs (`(next_seq, base_seq)` order);
//! - a torn value (a crash, or a read racing the pwrite) fails its CRC and
//!   is ignored, as is a missing file;
//! - recovery never removes durable records, so a stale value stays valid
//!   across writer restarts. Salvage, which does remove records, deletes
//!   the file first (and refuses to run while a follower holds the
//!   partition). A writer opened without `publish_durable_end` deletes the
//!   file on open, so a stale value cannot freeze a follower.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::LogError;
use crate::storage::{OpenMode, Storage, StorageFile, read_full_at};

pub const DURABLE_END_FILE: &str = "durable";
const MAGIC: [u8; 8] = *b"WHARFDE1";
pub(crate) const LEN: usize = 40;
/// Re-reads of a value that fails its CRC (it may be mid-rewrite).
const TORN_READ_RETRIES: usize = 3;

/// A durable position of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurableEnd {
    /// Segment holding the position.
    pub base_seq: u64,
    /// Byte offset in that segment of the end of the last durable frame
    /// (the header length when it holds none).
    pub offset: u64,
    /// Every record with a smaller sequence is durable.
    pub next_seq: u64,
}

impl DurableEnd {
    /// Order in which published values grow.
    pub(crate) fn key(&self) -> (u64, u64) {
        (self.next_seq, self.base_seq)
    }
}

pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(DURABLE_END_FILE)
}

pub(crate) fn encode(e: &DurableEnd) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..16].copy_from_slice(&e.base_seq.to_le_bytes());
    b[16..24].copy_from_slice(&e.offset.to_le_bytes());
    b[24..32].copy_from_slice(&e.next_seq.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..32]);
    b[32..36].copy_from_slice(&crc.to_le_bytes());
    b
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Decodes a value; `None` if it is short, foreign or torn.
pub(crate) fn decode(bytes: &[u8]) -> Option<DurableEnd> {
    let b = bytes.get(..LEN)?;
    if b[0..8] != MAGIC {
        return None;
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&b[32..36]);
    if crc32c::crc32c(&b[0..32]) != u32::from_le_bytes(crc) {
        return None;
    }
    let e =
        DurableEnd { base_seq: le_u64(&b[8..16]), offset: le_u64(&b[16..24]), next_seq: le_u64(&b[24..32]) };
    (e.next_seq >= e.base_seq).then_some(e)
}

/// Reads the value from an open handle, re-reading a few times if it does
/// not decode (the writer may be rewriting it). `None`: nothing valid.
pub(crate) fn read(file: &dyn StorageFile) -> io::Result<Option<DurableEnd>> {
    let mut buf = [0u8; LEN];
    for _ in 0..TORN_READ_RETRIES {
        let n = read_full_at(file, &mut buf, 0)?;
        if n < LEN {
            return Ok(None);
        }
        if let Some(e) = decode(&buf) {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

/// Opens the published file for reading; `None` if there is none.
pub(crate) fn open(storage: &dyn Storage, dir: &Path) -> Result<Option<Arc<dyn StorageFile>>, LogError> {
    let p = path(dir);
    match storage.open(&p, OpenMode::Read) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::Io { path: p, op: "open", source: e }),
    }
}

/// Removes a published file, if any (durably: the caller may rely on the
/// value never coming back).
pub(crate) fn remove(storage: &dyn Storage, dir: &Path) -> Result<bool, LogError> {
    let p = path(dir);
    if !storage.exists(&p) {
        return Ok(false);
    }
    storage.remove_file(&p).map_err(LogError::io("remove", &p))?;
    storage.sync_dir(dir).map_err(LogError::io("fsync dir", dir))?;
    Ok(true)
}

/// The writer's side: rewrites the file with each newer value.
#[derive(Debug)]
pub(crate) struct Publisher {
    path: PathBuf,
    file: Arc<dyn StorageFile>,
    last: Option<(u64, u64)>,
    /// The last publication failed (logged once until one succeeds).
    failing: bool,
}

impl Publisher {
    pub fn create(storage: &dyn Storage, dir: &Path) -> Result<Publisher, LogError> {
        let path = path(dir);
        let file = storage.open(&path, OpenMode::Overwrite).map_err(LogError::io("open", &path))?;
        Ok(Publisher { path, file, last: None, failing: false })
    }

    /// Publishes `end` unless a value at least as new was published.
    /// A failure is logged, not returned: the records are durable either
    /// way, and the next publication retries.
    pub fn publish(&mut self, end: DurableEnd) {
        if self.last.is_some_and(|l| l >= end.key()) {
            return;
        }
        match self.file.write_at(&encode(&end), 0) {
            Ok(()) => {
                self.last = Some(end.key());
                self.failing = false;
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(file = %self.path.display(), error = %e, "durable end not published");
                }
                self.failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_durable_end_round_trips_and_rejects_damage() {
        let e = DurableEnd { base_seq: 10, offset: 4096, next_seq: 77 };
        let b = encode(&e);
        assert_eq!(decode(&b), Some(e));
        for i in 0..36 {
            let mut g = b;
            g[i] ^= 0x08;
            assert_eq!(decode(&g), None, "flip at {i}");
        }
        assert_eq!(decode(&b[..39]), None);
        assert_eq!(decode(&[0u8; LEN]), None);
    }
}
