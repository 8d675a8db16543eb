//! The chained digest of a partition's history, for replication.
//!
//! `link(prev, seq, bytes)` is the first 8 bytes of
//! SHA-256(prev (u64 BE) ‖ seq (u64 BE) ‖ record bytes): the digest after
//! record `seq` covers every record below it. Two logs hold the same
//! history up to `n` exactly when their digests at `n` agree, which is how
//! a replica proves it is a prefix of its primary (docs/replication.md).
//!
//! A [`Chain`] holds the digest at `base_seq` and one link per record from
//! there to its end, in memory (8 bytes per record). Its base is persisted
//! in `<ns>/chain/p<partition>` (32 bytes: magic `b"WHARFCH1"`, base seq
//! u64 LE, base digest u64 LE, CRC32C of the first 24 bytes u32 LE, 4 zero
//! bytes) *before* the log may delete below it, so that after a restart the
//! chain is rebuilt from the base and the retained records. A missing file
//! means the chain starts at the log's first retained record with digest 0
//! (the empty history for a new log). A damaged file, or a log
//! that no longer holds the records above the base, is a typed error naming
//! where, never a guess.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::storage::atomic;
use crate::storage::part_log::PartLog;

const MAGIC: [u8; 8] = *b"WHARFCH1";
const LEN: usize = 32;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ChainError {
    #[error("chain base {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("chain base {path} is damaged at offset 0: {reason}")]
    Corrupt { path: PathBuf, reason: &'static str },
    #[error(
        "the log of partition {partition} starts at {first_seq}, above its chain base {base_seq}: the records between are gone"
    )]
    Gap { partition: u32, base_seq: u64, first_seq: u64 },
    #[error("reading the log of partition {partition}: {reason}")]
    Log { partition: u32, reason: String },
}

/// The digest after record `seq`, given the digest before it.
pub fn link(prev: u64, seq: u64, bytes: &[u8]) -> u64 {
    let mut h = Sha256::new();
    h.update(prev.to_be_bytes());
    h.update(seq.to_be_bytes());
    h.update(bytes);
    let out = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out[..8]);
    u64::from_be_bytes(first)
}

/// A digest as shipped: 16 lowercase hex digits.
pub fn to_hex(d: u64) -> String {
    format!("{d:016x}")
}

pub fn from_hex(s: &str) -> Option<u64> {
    (s.len() == 16).then(|| u64::from_str_radix(s, 16).ok()).flatten()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    base_seq: u64,
    base: u64,
    /// `links[i]` is the digest after record `base_seq + i`.
    links: VecDeque<u64>,
}

pub fn base_path(ns_dir: &Path, partition: u32) -> PathBuf {
    ns_dir.join("chain").join(format!("p{partition}"))
}

impl Chain {
    #[cfg(test)]
    pub fn empty() -> Self {
        Self { base_seq: 0, base: 0, links: VecDeque::new() }
    }

    /// Loads the base and links every retained record up to the log's end.
    pub fn open(ns_dir: &Path, partition: u32, log: &PartLog) -> Result<Self, ChainError> {
        let path = base_path(ns_dir, partition);
        // No base yet: the chain starts at the first retained record (0 for
        // a new log; later for a log trimmed before it had a chain).
        let first_seq = log.first_seq();
        let (base_seq, base) = load_base(&path)?.unwrap_or((first_seq, 0));
        if first_seq > base_seq && log.next_seq() > base_seq {
            return Err(ChainError::Gap { partition, base_seq, first_seq });
        }
        let mut chain = Self { base_seq, base, links: VecDeque::new() };
        chain.catch_up(partition, log)?;
        Ok(chain)
    }

    /// Links the records appended since the chain's end.
    pub fn catch_up(&mut self, partition: u32, log: &PartLog) -> Result<(), ChainError> {
        while self.end() < log.next_seq() {
            let records = log
                .read(self.end(), 4096, 16 << 20)
                .map_err(|e| ChainError::Log { partition, reason: e.to_string() })?;
            let Some(first) = records.first() else { break };
            if first.seq != self.end() {
                return Err(ChainError::Gap { partition, base_seq: self.end(), first_seq: first.seq });
            }
            for r in &records {
                self.push(r.seq, &r.payload);
            }
        }
        Ok(())
    }

    /// Links record `seq`, which must be the chain's end.
    pub fn push(&mut self, seq: u64, bytes: &[u8]) -> u64 {
        debug_assert_eq!(seq, self.end());
        let d = link(self.head(), seq, bytes);
        self.links.push_back(d);
        d
    }

    /// One past the last linked record.
    pub fn end(&self) -> u64 {
        self.base_seq + self.links.len() as u64
    }

    /// The digest of everything below `end()`.
    pub fn head(&self) -> u64 {
        self.links.back().copied().unwrap_or(self.base)
    }

    pub fn base_seq(&self) -> u64 {
        self.base_seq
    }

    /// The digest of everything below `seq`, if the chain covers it.
    pub fn at(&self, seq: u64) -> Option<u64> {
        match seq {
            s if s == self.base_seq => Some(self.base),
            s if s > self.base_seq && s <= self.end() => {
                self.links.get((s - self.base_seq - 1) as usize).copied()
            }
            _ => None,
        }
    }

    /// Persists the digest at `seq` as the new base and forgets the links
    /// below it. Call before the log may delete below `seq`.
    pub fn rebase(&mut self, ns_dir: &Path, partition: u32, seq: u64) -> Result<(), ChainError> {
        let Some(digest) = self.at(seq) else { return Ok(()) };
        if seq == self.base_seq {
            return Ok(());
        }
        let path = base_path(ns_dir, partition);
        store_base(&path, seq, digest)?;
        let drop = (seq - self.base_seq) as usize;
        self.links.drain(..drop);
        self.base_seq = seq;
        self.base = digest;
        Ok(())
    }
}

/// Stores the chain base of partition `partition` (a snapshot install sets
/// it before the partition opens).
pub fn store_base_at(ns_dir: &Path, partition: u32, seq: u64, digest: u64) -> Result<(), ChainError> {
    store_base(&base_path(ns_dir, partition), seq, digest)
}

/// The stored chain base of partition `partition`, if any.
#[cfg(test)]
pub fn load_base_at(ns_dir: &Path, partition: u32) -> Result<Option<(u64, u64)>, ChainError> {
    load_base(&base_path(ns_dir, partition))
}

fn load_base(path: &Path) -> Result<Option<(u64, u64)>, ChainError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ChainError::Io { path: path.to_path_buf(), reason: e.to_string() }),
    };
    let corrupt = |reason| ChainError::Corrupt { path: path.to_path_buf(), reason };
    if bytes.len() != LEN {
        return Err(corrupt("wrong length"));
    }
    if bytes[0..8] != MAGIC {
        return Err(corrupt("bad magic"));
    }
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(bytes[24..28].try_into().unwrap_or_default());
    if crc32c::crc32c(&bytes[0..24]) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(Some((u64_at(8), u64_at(16))))
}

fn store_base(path: &Path, seq: u64, digest: u64) -> Result<(), ChainError> {
    let mut b = [0u8; LEN];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..16].copy_from_slice(&seq.to_le_bytes());
    b[16..24].copy_from_slice(&digest.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..24]);
    b[24..28].copy_from_slice(&crc.to_le_bytes());
    atomic::replace(path, &b).map_err(|e| ChainError::Io { path: path.to_path_buf(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_chain_and_differ_when_any_byte_or_position_differs() {
        let mut a = Chain::empty();
        a.push(0, b"x");
        a.push(1, b"y");
        let mut b = Chain::empty();
        b.push(0, b"x");
        b.push(1, b"z");
        assert_eq!(a.at(1), b.at(1));
        assert_ne!(a.at(2), b.at(2));
        assert_ne!(link(0, 0, b"x"), link(0, 1, b"x"), "the position is covered");
        assert_eq!(a.at(0), Some(0));
        assert_eq!(a.at(3), None);
        assert_eq!(from_hex(&to_hex(a.head())), Some(a.head()));
        assert_eq!(from_hex("xyz"), None);
    }

    #[test]
    fn a_rebased_chain_keeps_its_digests_and_the_base_survives_damage_checks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = Chain::empty();
        for s in 0..5 {
            c.push(s, format!("r{s}").as_bytes());
        }
        let (at3, head) = (c.at(3), c.head());
        c.rebase(dir.path(), 0, 3).expect("rebase");
        assert_eq!((c.base_seq(), c.at(3), c.head(), c.at(2)), (3, at3, head, None));
        let p = base_path(dir.path(), 0);
        assert_eq!(load_base(&p).expect("load"), Some((3, at3.expect("at 3"))));
        let mut bytes = std::fs::read(&p).expect("read");
        bytes[10] ^= 1;
        std::fs::write(&p, bytes).expect("write");
        assert!(matches!(load_base(&p), Err(ChainError::Corrupt { reason: "checksum mismatch", .. })));
    }
}
