//! `wharf-log`: the embedded write-ahead log of Wharf.
//!
//! A data directory holds partitions; a partition is a directory of
//! append-only segment files plus a persisted delivered watermark. See
//! `docs/log-format.md` for the on-disk format and every invariant, and the
//! module docs: [`frame`] → [`segment`] → `partition`, `scan` (the torn-tail
//! vs corruption rule), `watermark`, `manifest` (salvage gaps), `verify`,
//! `salvage`, [`storage`] (I/O abstraction) and `fault` (crash simulation).
//! Split roles (one process appends, another delivers): `durable_end` (how
//! the writer publishes what is durable) and `follower` (the read side).
//!
//! No async runtime, no networking: blocking calls, internal locking,
//! `Partition` and `Follower` are `Send + Sync`.

pub mod cli;
mod durable_end;
mod error;
mod fault;
mod follower;
pub mod frame;
mod manifest;
mod options;
mod partition;
mod salvage;
mod scan;
pub mod segment;
pub mod storage;
mod tree_lock;
mod verify;
mod watermark;

pub use durable_end::{DURABLE_END_FILE, DurableEnd};
pub use error::{Corruption, CorruptionKind, LogError, Temporary, temporary};
pub use fault::{FaultStorage, Rng};
pub use follower::{FOLLOWER_LOCK_FILE, Follower, FollowerStats};
pub use frame::MAX_RECORD_LEN;
pub use manifest::{MANIFEST_FILE, SalvageEntry, SalvageManifest};
pub use options::{DirLock, Durability, LogOptions, Retention};
pub use partition::{
    Appended, Commit, CommitStep, FsyncObserver, Partition, PartitionStats, Record, Recovery, Stamp,
};
pub use salvage::{SalvageReport, salvage, salvage_with};
pub use scan::{Progress, TornTail};
pub use storage::{FsStorage, Storage, StorageFile};
pub use tree_lock::{TREE_LOCK_FILE, TreeLock, lock_tree};
pub use verify::{
    DumpRecord, PartitionReport, VerifyProblem, VerifyReport, dump, dump_with, find_partitions, verify,
    verify_with,
};
pub use watermark::WATERMARK_FILE;

/// Name of the directory (inside a partition) where salvage moves regions.
pub const QUARANTINE_DIR: &str = "quarantine";
