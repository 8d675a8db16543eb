//! A target's delivery cursor on one partition, when a namespace has several
//! targets: every sequence below it is delivered or dead-lettered for that
//! target. (With one target the partition's own watermark is the cursor.)
//!
//! File `p<partition>.cursor` in the target's directory
//! (`<data_dir>/<ns>/` for target `default`, `<data_dir>/<ns>/targets/<name>/`
//! for the others), 24 bytes,
//! little-endian: magic `b"WHARFCU1"`, the value (u64), CRC32C of the first
//! 16 bytes (u32), 4 reserved zero bytes (`storage::fixed`). Written crash-safely (temp file,
//! fsync, rename, directory fsync): a reader sees the old or the new value.
//! A missing file means "start at the partition's watermark". A damaged
//! file is a typed error naming the file, never a guess.

use std::path::{Path, PathBuf};

use super::fixed;

const MAGIC: [u8; 8] = *b"WHARFCU1";

#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error("cursor {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cursor {path} is damaged at offset 0: {reason}")]
    Corrupt { path: PathBuf, reason: &'static str },
}

pub fn path(target_dir: &Path, partition: u32) -> PathBuf {
    target_dir.join(format!("p{partition}.cursor"))
}

/// The stored value, or `None` when there is no file yet.
pub fn load(path: &Path) -> Result<Option<u64>, CursorError> {
    let bytes = fixed::read(path).map_err(|source| CursorError::Io { path: path.to_path_buf(), source })?;
    let Some(bytes) = bytes else { return Ok(None) };
    let [value] = fixed::decode::<1>(&MAGIC, &bytes)
        .map_err(|reason| CursorError::Corrupt { path: path.to_path_buf(), reason })?;
    Ok(Some(value))
}

/// Persists `value` durably.
pub fn store(path: &Path, value: u64) -> Result<(), CursorError> {
    super::atomic::replace(path, &fixed::encode(&MAGIC, [value]))
        .map_err(|source| CursorError::Io { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_damage_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = path(dir.path(), 3);
        assert!(matches!(load(&p), Ok(None)));
        store(&p, 42).expect("store");
        assert_eq!(load(&p).expect("load"), Some(42));
        let mut bytes = std::fs::read(&p).expect("read");
        bytes[9] ^= 1;
        std::fs::write(&p, bytes).expect("write");
        assert!(matches!(load(&p), Err(CursorError::Corrupt { reason: "checksum mismatch", .. })));
    }
}
