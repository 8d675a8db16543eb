//! A replica partition's snapshot install (bootstrap and rebuild): built
//! beside the live partition, verified, then switched in by renames whose
//! commit point is one rename (docs/replication.md, "Snapshots").
//!
//! Layout under `<ns>/replication/`:
//! - `p<i>.snapshot/log/`: the staged partition, a wharf-log directory whose
//!   first segment starts at the snapshot's base sequence;
//! - `p<i>.snapshot/READY`: written last, crash-safely, once every record is
//!   verified and fsynced: base and end, each with its chained digest
//!   (magic `b"WHARFSN1"`, base seq, base digest, end seq, end digest, all
//!   u64 LE, then CRC32C of the 40 bytes before, u32 LE);
//! - `p<i>.old/`: the live partition moved aside by the switch.
//!
//! The switch, only with `READY` present:
//! 1. rename `<ns>/p<i>` to `replication/p<i>.old`: **the commit point**;
//! 2. rename `replication/p<i>.snapshot/log` to `<ns>/p<i>`;
//! 3. store the chain base (base seq, base digest), clear the partition's
//!    replication halt and its targets' cursors and rewinds (they restart at
//!    the base);
//! 4. remove `p<i>.old`, then `p<i>.snapshot`.
//!
//! [`recover`] runs before the partition opens: once step 1 happened
//! (`p<i>.old` exists, or `<ns>/p<i>` is missing beside a ready stage) it
//! finishes steps 2–4, which are idempotent; otherwise it removes the stage,
//! and the partition stays exactly as it was (seed 003, row 4.3). A damaged
//! `READY` is a typed error naming the file.

use std::path::{Path, PathBuf};

use crate::storage::{atomic, chain, cursor, fixed, halts, rewind};

const MAGIC: [u8; 8] = *b"WHARFSN1";

/// Where a staged snapshot starts and ends, with the chained digests there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Bounds {
    pub base_seq: u64,
    pub base_digest: u64,
    pub end_seq: u64,
    pub end_digest: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("snapshot stage {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("snapshot stage {path} is damaged at offset 0: {reason}")]
    Corrupt { path: PathBuf, reason: &'static str },
    #[error("snapshot stage: {0}")]
    Chain(#[from] chain::ChainError),
}

/// The paths of one partition's install.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `<ns>/p<i>`: the live partition.
    pub live: PathBuf,
    /// `<ns>/replication/p<i>.snapshot`.
    pub stage: PathBuf,
    /// `<ns>/replication/p<i>.old`.
    pub old: PathBuf,
    ns_dir: PathBuf,
    partition: u32,
}

impl Paths {
    pub fn new(ns_dir: &Path, partition: u32) -> Self {
        let repl = ns_dir.join("replication");
        Self {
            live: ns_dir.join(format!("p{partition}")),
            stage: repl.join(format!("p{partition}.snapshot")),
            old: repl.join(format!("p{partition}.old")),
            ns_dir: ns_dir.to_path_buf(),
            partition,
        }
    }

    /// The staged partition's log directory.
    pub fn stage_log(&self) -> PathBuf {
        self.stage.join("log")
    }

    fn ready(&self) -> PathBuf {
        self.stage.join("READY")
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StageError + '_ {
    move |source| StageError::Io { path: path.to_path_buf(), source }
}

/// Starts a stage: removes any earlier one, and creates an empty log whose
/// first segment starts at `base_seq` (so it hands out the primary's
/// sequences).
pub fn begin(paths: &Paths, base_seq: u64) -> Result<(), StageError> {
    remove_dir(&paths.stage)?;
    let log = paths.stage_log();
    std::fs::create_dir_all(&log).map_err(io(&log))?;
    let seg = log.join(wharf_log::segment::segment_file_name(base_seq));
    atomic::replace(&seg, &wharf_log::segment::encode_header(base_seq)).map_err(io(&seg))
}

/// Marks the stage complete (every record verified and fsynced).
pub fn mark_ready(paths: &Paths, b: Bounds) -> Result<(), StageError> {
    let bytes = fixed::encode::<4>(&MAGIC, [b.base_seq, b.base_digest, b.end_seq, b.end_digest]);
    atomic::replace(&paths.ready(), &bytes).map_err(io(&paths.ready()))
}

fn load_ready(paths: &Paths) -> Result<Option<Bounds>, StageError> {
    let path = paths.ready();
    let Some(bytes) = fixed::read(&path).map_err(io(&path))? else { return Ok(None) };
    let [base_seq, base_digest, end_seq, end_digest] = fixed::decode::<4>(&MAGIC, &bytes)
        .map_err(|reason| StageError::Corrupt { path: path.clone(), reason })?;
    Ok(Some(Bounds { base_seq, base_digest, end_seq, end_digest }))
}

/// Where an interrupted install stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovered {
    /// No stage: nothing to do.
    Nothing,
    /// A stage that never reached the switch was removed; the partition is
    /// as it was.
    Discarded,
    /// A switch that had begun was finished: the snapshot is the partition.
    Finished(Bounds),
}

/// Finishes or discards an interrupted install (see the module doc). Runs
/// before the partition's log opens.
pub fn recover(paths: &Paths, target_dirs: &[PathBuf]) -> Result<Recovered, StageError> {
    let stage_exists = paths.stage.exists();
    let switched = paths.old.exists() || (!paths.live.exists() && stage_exists);
    if switched && let Some(bounds) = load_ready(paths)? {
        finish(paths, bounds, target_dirs)?;
        return Ok(Recovered::Finished(bounds));
    }
    if paths.old.exists() {
        // Step 4 was under way: the stage (and READY) are gone already.
        remove_dir(&paths.old)?;
    }
    if stage_exists {
        remove_dir(&paths.stage)?;
        return Ok(Recovered::Discarded);
    }
    Ok(Recovered::Nothing)
}

/// The switch (steps 1–4). The caller has closed the live partition.
pub fn switch(paths: &Paths, target_dirs: &[PathBuf]) -> Result<Bounds, StageError> {
    let bounds = load_ready(paths)?
        .ok_or_else(|| StageError::Corrupt { path: paths.ready(), reason: "the stage is not ready" })?;
    if paths.live.exists() {
        remove_dir(&paths.old)?;
        rename(&paths.live, &paths.old)?;
    }
    crate::storage::fault_point("snapshot.after_commit");
    finish(paths, bounds, target_dirs)?;
    Ok(bounds)
}

/// Steps 2–4; each is idempotent.
fn finish(paths: &Paths, b: Bounds, target_dirs: &[PathBuf]) -> Result<(), StageError> {
    let staged = paths.stage_log();
    if staged.exists() {
        remove_dir(&paths.live)?;
        rename(&staged, &paths.live)?;
    }
    chain::store_base_at(&paths.ns_dir, paths.partition, b.base_seq, b.base_digest)?;
    let halt = halts::replica_path(&paths.ns_dir, paths.partition);
    halts::clear(&halt)
        .map_err(|e| StageError::Io { path: halt, source: std::io::Error::other(e.to_string()) })?;
    for dir in target_dirs {
        for file in [cursor::path(dir, paths.partition), rewind::path(dir, paths.partition)] {
            atomic::remove(&file).map_err(io(&file))?;
        }
    }
    remove_dir(&paths.old)?;
    remove_dir(&paths.stage)
}

fn rename(from: &Path, to: &Path) -> Result<(), StageError> {
    std::fs::rename(from, to).map_err(io(from))?;
    for dir in [from.parent(), to.parent()].into_iter().flatten() {
        atomic::sync_dir(dir).map_err(io(dir))?;
    }
    Ok(())
}

fn remove_dir(dir: &Path) -> Result<(), StageError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => dir.parent().map_or(Ok(()), |p| atomic::sync_dir(p).map_err(io(p))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> Bounds {
        Bounds { base_seq: 5, base_digest: 7, end_seq: 9, end_digest: 11 }
    }

    fn staged(dir: &Path) -> Paths {
        let paths = Paths::new(dir, 0);
        std::fs::create_dir_all(&paths.live).expect("live");
        std::fs::write(paths.live.join("old-record"), b"old").expect("old");
        begin(&paths, 5).expect("begin");
        paths
    }

    #[test]
    fn a_stage_that_never_switched_is_discarded_and_the_partition_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = staged(dir.path());
        mark_ready(&paths, bounds()).expect("ready");
        assert_eq!(recover(&paths, &[]).expect("recover"), Recovered::Discarded);
        assert!(paths.live.join("old-record").exists() && !paths.stage.exists());
        assert!(chain::load_base_at(dir.path(), 0).expect("base").is_none());
    }

    #[test]
    fn a_switch_interrupted_after_its_commit_point_is_finished() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = staged(dir.path());
        mark_ready(&paths, bounds()).expect("ready");
        let tdir = dir.path().join("t");
        std::fs::create_dir_all(&tdir).expect("target dir");
        cursor::store(&cursor::path(&tdir, 0), 3).expect("cursor");
        rename(&paths.live, &paths.old).expect("step 1");
        assert_eq!(
            recover(&paths, std::slice::from_ref(&tdir)).expect("recover"),
            Recovered::Finished(bounds())
        );
        let seg = wharf_log::segment::segment_file_name(5);
        assert!(paths.live.join(seg).exists() && !paths.old.exists() && !paths.stage.exists());
        assert_eq!(chain::load_base_at(dir.path(), 0).expect("base"), Some((5, 7)));
        assert_eq!(cursor::load(&cursor::path(&tdir, 0)).expect("cursor"), None);
        assert_eq!(recover(&paths, &[]).expect("again"), Recovered::Nothing);
    }

    #[test]
    fn a_damaged_ready_file_is_reported_not_guessed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = staged(dir.path());
        mark_ready(&paths, bounds()).expect("ready");
        let mut b = std::fs::read(paths.ready()).expect("read");
        b[12] ^= 1;
        std::fs::write(paths.ready(), b).expect("damage");
        rename(&paths.live, &paths.old).expect("step 1");
        assert!(matches!(recover(&paths, &[]), Err(StageError::Corrupt { .. })));
    }
}
