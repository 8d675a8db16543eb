//! A durable halt: a cursor that stopped and waits for an operator.
//!
//! Two kinds use it, both one small JSON file written crash-safely
//! (`atomic`): a target's cursor on one partition after the plugin answered
//! `halt` (`<target dir>/p<partition>.halt`), and a replica partition that
//! refused a batch it cannot take (`<ns>/replication/p<partition>.halt`).
//! The file exists exactly while the halt stands; only an operator's resume
//! removes it. A damaged file is a typed error naming it.

use std::path::{Path, PathBuf};

use crate::storage::atomic;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Halt {
    pub reason: String,
    pub at_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum HaltError {
    #[error("halt file {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("halt file {path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

impl Halt {
    pub fn new(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), at_ms: crate::clock::now_ms() }
    }

    /// A short, bounded label for metrics: the reason's leading word when
    /// it is `[a-z_]{1,32}` followed by `:` (e.g. `diverged: ...`), else
    /// `other`.
    pub fn code(&self) -> &str {
        match self.reason.split_once(':') {
            Some((w, _))
                if (1..=32).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
            {
                w
            }
            _ => "other",
        }
    }
}

pub fn target_path(target_dir: &Path, partition: u32) -> PathBuf {
    target_dir.join(format!("p{partition}.halt"))
}

pub fn replica_path(ns_dir: &Path, partition: u32) -> PathBuf {
    ns_dir.join("replication").join(format!("p{partition}.halt"))
}

pub fn load(path: &Path) -> Result<Option<Halt>, HaltError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(HaltError::Io { path: path.to_path_buf(), reason: e.to_string() }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| HaltError::Corrupt { path: path.to_path_buf(), reason: e.to_string() })
}

pub fn store(path: &Path, halt: &Halt) -> Result<(), HaltError> {
    let bytes = serde_json::to_vec(halt).unwrap_or_default();
    atomic::replace(path, &bytes)
        .map_err(|e| HaltError::Io { path: path.to_path_buf(), reason: e.to_string() })
}

pub fn clear(path: &Path) -> Result<(), HaltError> {
    atomic::remove(path).map_err(|e| HaltError::Io { path: path.to_path_buf(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_halt_survives_until_cleared_and_names_a_bounded_code() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = target_path(dir.path(), 2);
        assert_eq!(load(&p).expect("none"), None);
        let h = Halt::new("diverged: replica digest 00 at 5");
        store(&p, &h).expect("store");
        assert_eq!(load(&p).expect("load"), Some(h.clone()));
        assert_eq!(h.code(), "diverged");
        assert_eq!(Halt::new("Something Else: x").code(), "other");
        assert_eq!(Halt::new("no colon").code(), "other");
        std::fs::write(&p, b"{").expect("damage");
        assert!(matches!(load(&p), Err(HaltError::Corrupt { .. })));
        clear(&p).expect("clear");
        assert_eq!(load(&p).expect("gone"), None);
    }
}
