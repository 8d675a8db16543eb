//! A target's rewind of one partition: re-delivering history it delivered
//! before (`wharf rewind`).
//!
//! File `p<partition>.rewind` in the target's directory (see
//! `storage::cursor` for where that is), 32 bytes, little-endian: magic
//! `b"WHARFRW1"`, `position` (u64: every sequence below it was re-delivered,
//! the lane starts here after a restart), `end` (u64: the lane had read up
//! to here when the rewind began; sequences below it are replays), CRC32C
//! of the first 24 bytes (u32), 4 reserved zero bytes (`storage::fixed`).
//! Written crash-safely (`storage::atomic`). The file exists while the rewind runs and is
//! removed once the lane's watermark reaches `end`; a missing file means no
//! rewind. A damaged file is a typed error naming the file, never a guess.
//!
//! Invariant: `position ≤ end`, and the log keeps every segment holding a
//! record at or above `position` (`Partition::hold_history_from`).

use std::path::{Path, PathBuf};

use super::fixed;

const MAGIC: [u8; 8] = *b"WHARFRW1";

/// Where a lane's rewind stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Rewind {
    /// Every sequence below this was re-delivered.
    pub position: u64,
    /// Sequences below this are replays of history.
    pub end: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RewindError {
    #[error("rewind file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("rewind file {path} is damaged at offset 0: {reason}")]
    Corrupt { path: PathBuf, reason: &'static str },
}

pub fn path(target_dir: &Path, partition: u32) -> PathBuf {
    target_dir.join(format!("p{partition}.rewind"))
}

/// The stored rewind, or `None` when none runs.
pub fn load(path: &Path) -> Result<Option<Rewind>, RewindError> {
    let bytes = fixed::read(path).map_err(|source| RewindError::Io { path: path.to_path_buf(), source })?;
    let Some(bytes) = bytes else { return Ok(None) };
    let corrupt = |reason| RewindError::Corrupt { path: path.to_path_buf(), reason };
    let [position, end] = fixed::decode::<2>(&MAGIC, &bytes).map_err(corrupt)?;
    match position <= end {
        true => Ok(Some(Rewind { position, end })),
        false => Err(corrupt("position beyond end")),
    }
}

/// Persists `rewind` durably.
pub fn store(path: &Path, rewind: Rewind) -> Result<(), RewindError> {
    super::atomic::replace(path, &fixed::encode(&MAGIC, [rewind.position, rewind.end]))
        .map_err(|source| RewindError::Io { path: path.to_path_buf(), source })
}

/// The rewind is over: removes the file durably.
pub fn clear(path: &Path) -> Result<(), RewindError> {
    super::atomic::remove(path).map_err(|source| RewindError::Io { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewind_round_trips_and_damage_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = path(dir.path(), 2);
        assert!(matches!(load(&p), Ok(None)));
        store(&p, Rewind { position: 7, end: 40 }).expect("store");
        assert_eq!(load(&p).expect("load"), Some(Rewind { position: 7, end: 40 }));
        let mut bytes = std::fs::read(&p).expect("read");
        bytes[17] ^= 1;
        std::fs::write(&p, &bytes).expect("write");
        assert!(matches!(load(&p), Err(RewindError::Corrupt { reason: "checksum mismatch", .. })));
        std::fs::write(&p, &bytes[..20]).expect("write");
        assert!(matches!(load(&p), Err(RewindError::Corrupt { reason: "wrong length", .. })));
        clear(&p).expect("clear");
        assert!(matches!(load(&p), Ok(None)));
    }
}
