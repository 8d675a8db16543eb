//! How often each message trapped a target's plugin when delivered alone,
//! kept across restarts so that a crash loop cannot reset the count of a
//! poison message (`target.poison_after`).
//!
//! Counts belong to one plugin build: when a different digest takes over,
//! they start again from zero (a fixed plugin is not charged for traps of
//! the broken one). A restart with the same digest keeps them.
//!
//! File `traps.json` in the target's directory: `{"version": 1, "digest":
//! "<plugin digest>", "traps": {"<message id>": <count>}}`, rewritten crash-safely (temp file, fsync,
//! rename, directory fsync) on every change. Traps are rare and a message's
//! entry goes when it is finished, so the file stays small. A file that
//! does not parse is an error naming it, never a guess.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum TrapsError {
    #[error("trap counts {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("trap counts {path} are damaged (offset 0): {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct File {
    version: u32,
    #[serde(default)]
    digest: Option<String>,
    traps: BTreeMap<String, u32>,
}

#[derive(Debug)]
pub struct Traps {
    path: PathBuf,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    digest: Option<String>,
    traps: BTreeMap<String, u32>,
}

impl Traps {
    pub fn open(dir: &Path) -> Result<Self, TrapsError> {
        let path = dir.join("traps.json");
        let counts = match std::fs::read(&path) {
            Ok(bytes) => {
                let f: File = serde_json::from_slice(&bytes)
                    .map_err(|e| TrapsError::Corrupt { path: path.clone(), reason: e.to_string() })?;
                if f.version != 1 {
                    let reason = format!("unknown version {}", f.version);
                    return Err(TrapsError::Corrupt { path, reason });
                }
                Counts { digest: f.digest, traps: f.traps }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Counts::default(),
            Err(source) => return Err(TrapsError::Io { path, source }),
        };
        Ok(Self { path, counts: Mutex::new(counts) })
    }

    /// Whether no message has a trap counted (the common case: the
    /// delivery loop then skips the per-message lookup).
    pub fn is_empty(&self) -> bool {
        self.lock().traps.is_empty()
    }

    pub fn get(&self, id: &str) -> u32 {
        self.lock().traps.get(id).copied().unwrap_or(0)
    }

    /// The plugin with `digest` delivers from now on: counts made against
    /// another build are dropped.
    pub fn plugin_is(&self, digest: &str) -> Result<(), TrapsError> {
        let mut counts = self.lock();
        if counts.digest.as_deref() == Some(digest) {
            return Ok(());
        }
        counts.digest = Some(digest.to_string());
        counts.traps.clear();
        self.persist(&counts)
    }

    /// One more trap of `id`, durable before it returns; the new count.
    pub fn record(&self, id: &str) -> Result<u32, TrapsError> {
        let mut counts = self.lock();
        let n = counts.traps.get(id).copied().unwrap_or(0) + 1;
        counts.traps.insert(id.to_string(), n);
        self.persist(&counts)?;
        Ok(n)
    }

    /// The message is finished: its count goes.
    pub fn forget(&self, id: &str) -> Result<(), TrapsError> {
        let mut counts = self.lock();
        if counts.traps.remove(id).is_some() {
            self.persist(&counts)?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, counts: &Counts) -> Result<(), TrapsError> {
        let io = |source| TrapsError::Io { path: self.path.clone(), source };
        let file = File { version: 1, digest: counts.digest.clone(), traps: counts.traps.clone() };
        let bytes = serde_json::to_vec(&file).map_err(std::io::Error::other).map_err(io)?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = self.path.with_extension("json-tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_data().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_survive_a_reopen_and_damage_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Traps::open(dir.path()).expect("open");
        t.plugin_is("d1").expect("digest");
        assert_eq!(t.record("0-1").expect("record"), 1);
        assert_eq!(t.record("0-1").expect("record"), 2);
        t.record("0-2").expect("record");
        t.forget("0-2").expect("forget");
        let t = Traps::open(dir.path()).expect("reopen");
        assert_eq!((t.get("0-1"), t.get("0-2")), (2, 0));
        t.plugin_is("d1").expect("same digest");
        assert_eq!(t.get("0-1"), 2, "a restart with the same plugin keeps the counts");
        t.plugin_is("d2").expect("new digest");
        assert_eq!(Traps::open(dir.path()).expect("reopen").get("0-1"), 0, "a new plugin starts from zero");
        std::fs::write(dir.path().join("traps.json"), b"{\"version\":1,\"tr").expect("damage");
        assert!(matches!(Traps::open(dir.path()), Err(TrapsError::Corrupt { .. })));
    }
}
