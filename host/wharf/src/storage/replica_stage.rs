//! The replica's staged batch: what makes a replicated batch land whole or
//! not at all.
//!
//! Before appending a batch of shipped records, the replica writes them to
//! `<ns>/replication/p<partition>.stage` (crash-safely). Then it appends
//! them to the log, fsyncs, and removes the stage. At start, a stage that is
//! still there is rolled forward: the records the log does not hold yet are
//! appended (the log holds a prefix of the stage, possibly empty, because
//! nothing else appends to a replica partition).
//!
//! Format, little-endian: magic `b"WHARFST1"`, record count (u32), then per
//! record its sequence (u64), length (u32) and bytes, then CRC32C (u32) of
//! everything before it. A damaged stage is a typed error naming the file.

use std::path::{Path, PathBuf};

use crate::storage::atomic;

const MAGIC: [u8; 8] = *b"WHARFST1";

/// Staged records: `(sequence, bytes)` in order.
pub type Staged = Vec<(u64, Vec<u8>)>;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("replication stage {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("replication stage {path} is damaged at offset {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: usize, reason: &'static str },
}

pub fn path(ns_dir: &Path, partition: u32) -> PathBuf {
    ns_dir.join("replication").join(format!("p{partition}.stage"))
}

/// Stages `(seq, bytes)` records durably.
pub fn stage(path: &Path, records: &[(u64, Vec<u8>)]) -> Result<(), StageError> {
    let mut b = Vec::with_capacity(16 + records.iter().map(|(_, r)| r.len() + 12).sum::<usize>());
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for (seq, bytes) in records {
        b.extend_from_slice(&seq.to_le_bytes());
        b.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        b.extend_from_slice(bytes);
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    atomic::replace(path, &b).map_err(|e| StageError::Io { path: path.to_path_buf(), reason: e.to_string() })
}

/// The staged records, or `None` when nothing is staged.
pub fn load(path: &Path) -> Result<Option<Staged>, StageError> {
    let b = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StageError::Io { path: path.to_path_buf(), reason: e.to_string() }),
    };
    let corrupt = |offset, reason| StageError::Corrupt { path: path.to_path_buf(), offset, reason };
    if b.len() < 16 || b[..8] != MAGIC {
        return Err(corrupt(0, "bad magic or too short"));
    }
    let body = b.len() - 4;
    let crc = u32::from_le_bytes(b[body..].try_into().unwrap_or_default());
    if crc32c::crc32c(&b[..body]) != crc {
        return Err(corrupt(body, "checksum mismatch"));
    }
    let count = u32::from_le_bytes(b[8..12].try_into().unwrap_or_default()) as usize;
    let mut at = 12;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        if at + 12 > body {
            return Err(corrupt(at, "record header past the end"));
        }
        let seq = u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap_or_default()) as usize;
        at += 12;
        if at + len > body {
            return Err(corrupt(at, "record bytes past the end"));
        }
        out.push((seq, b[at..at + len].to_vec()));
        at += len;
    }
    if at != body {
        return Err(corrupt(at, "bytes after the last record"));
    }
    Ok(Some(out))
}

pub fn clear(path: &Path) -> Result<(), StageError> {
    atomic::remove(path).map_err(|e| StageError::Io { path: path.to_path_buf(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_round_trips_and_damage_is_reported_with_its_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = path(dir.path(), 1);
        assert!(load(&p).expect("nothing").is_none());
        let records = vec![(7, b"seven".to_vec()), (8, Vec::new())];
        stage(&p, &records).expect("stage");
        assert_eq!(load(&p).expect("load"), Some(records));
        let mut b = std::fs::read(&p).expect("read");
        b[21] ^= 0xff;
        std::fs::write(&p, b).expect("damage");
        assert!(matches!(load(&p), Err(StageError::Corrupt { reason: "checksum mismatch", .. })));
        clear(&p).expect("clear");
        assert!(load(&p).expect("cleared").is_none());
    }
}
