//! The persisted delivered watermark.
//!
//! File `watermark` in the partition directory, 24 bytes, little-endian:
//!
//! ```text
//! 0   8  magic  b"WHARFWM1"
//! 8   8  value  all seq < value are delivered
//! 16  4  crc    CRC32C of bytes [0..16)
//! 20  4  reserved (0)
//! ```
//!
//! Written crash-safely: `watermark.tmp` is written and fdatasync'ed, renamed
//! over `watermark`, then the directory is fsync'ed. A reader therefore sees
//! the old or the new value, never a torn one; a missing file means 0.
//! Monotonicity (a lower value is ignored) is enforced by the partition.
//! A follower (split roles) writes it the same way through its own
//! temporary file `watermark.follower-tmp`.

use std::path::{Path, PathBuf};

use crate::error::{Corruption, CorruptionKind, LogError};
use crate::storage::{Storage, read_all, write_atomic, write_atomic_via};

pub const WATERMARK_FILE: &str = "watermark";
/// The follower's temporary file for the watermark (removed by the follower
/// on open if a crash left it behind).
pub(crate) const FOLLOWER_TMP_FILE: &str = "watermark.follower-tmp";
const MAGIC: [u8; 8] = *b"WHARFWM1";
const LEN: usize = 24;

pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(WATERMARK_FILE)
}

pub(crate) fn encode(value: u64) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..16].copy_from_slice(&value.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..16]);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    b
}

pub(crate) fn decode(bytes: &[u8]) -> Result<u64, String> {
    if bytes.len() != LEN {
        return Err(format!("expected {LEN} bytes, found {}", bytes.len()));
    }
    if bytes[0..8] != MAGIC {
        return Err("bad magic".into());
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[16..20]);
    if crc32c::crc32c(&bytes[0..16]) != u32::from_le_bytes(crc) {
        return Err("checksum mismatch".into());
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&bytes[8..16]);
    Ok(u64::from_le_bytes(v))
}

/// Loads the watermark; 0 if the file does not exist.
pub(crate) fn load(storage: &dyn Storage, dir: &Path) -> Result<u64, LogError> {
    let p = path(dir);
    if !storage.exists(&p) {
        return Ok(0);
    }
    let bytes = read_all(storage, &p).map_err(LogError::io("read", &p))?;
    decode(&bytes).map_err(|reason| {
        LogError::Corrupt(Corruption { file: p, offset: 0, kind: CorruptionKind::BadWatermark { reason } })
    })
}

/// Persists `value` durably (temp file + fdatasync + rename + dir fsync).
pub(crate) fn store(storage: &dyn Storage, dir: &Path, value: u64) -> Result<(), LogError> {
    let p = path(dir);
    write_atomic(storage, &p, &encode(value)).map_err(LogError::io("persist watermark", p))
}

/// Same, through the follower's own temporary file: the writer's `open`
/// deletes `*.tmp` files, which must not race with a follower's write.
pub(crate) fn store_as_follower(storage: &dyn Storage, dir: &Path, value: u64) -> Result<(), LogError> {
    let p = path(dir);
    let tmp = dir.join(FOLLOWER_TMP_FILE);
    write_atomic_via(storage, &p, &tmp, &encode(value)).map_err(LogError::io("persist watermark", p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watermark_round_trips_and_rejects_damage() {
        let b = encode(123);
        assert_eq!(decode(&b), Ok(123));
        let mut bad = b;
        bad[9] ^= 1;
        assert!(decode(&bad).is_err());
        assert!(decode(&b[..10]).is_err());
    }
}
