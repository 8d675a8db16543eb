//! A target's delivery cursor on one partition, when a namespace has several
//! targets: every sequence below it is delivered or dead-lettered for that
//! target. (With one target the partition's own watermark is the cursor.)
//!
//! File `p<partition>.cursor` in the target's directory
//! (`<data_dir>/<ns>/` for target `default`, `<data_dir>/<ns>/targets/<name>/`
//! for the others), 24 bytes,
//! little-endian: magic `b"WHARFCU1"`, the value (u64), CRC32C of the first
//! 16 bytes (u32), 4 reserved zero bytes. Written crash-safely (temp file,
//! fsync, rename, directory fsync): a reader sees the old or the new value.
//! A missing file means "start at the partition's watermark". A damaged
//! file is a typed error naming the file, never a guess.

use std::io::Write as _;
use std::path::{Path, PathBuf};

const MAGIC: [u8; 8] = *b"WHARFCU1";
const LEN: usize = 24;

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
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CursorError::Io { path: path.to_path_buf(), source }),
    };
    let corrupt = |reason| CursorError::Corrupt { path: path.to_path_buf(), reason };
    if bytes.len() != LEN {
        return Err(corrupt("wrong length"));
    }
    if bytes[0..8] != MAGIC {
        return Err(corrupt("bad magic"));
    }
    let crc = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    if crc32c::crc32c(&bytes[0..16]) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&bytes[8..16]);
    Ok(Some(u64::from_le_bytes(v)))
}

/// Persists `value` durably.
pub fn store(path: &Path, value: u64) -> Result<(), CursorError> {
    let io = |source| CursorError::Io { path: path.to_path_buf(), source };
    let mut b = [0u8; LEN];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..16].copy_from_slice(&value.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..16]);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("cursor-tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&b).map_err(io)?;
    f.sync_data().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
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
