//! Policies: durability, segment size, retention.

use std::time::Duration;

/// When an append is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Default. `append` returns only after an fdatasync covered its records
    /// (group commit: concurrent appenders share one fdatasync).
    /// Acks say `synced: true`.
    #[default]
    Fsync,
    /// `append` returns after pwrite(2); nothing is fsync'ed on the append
    /// path, so a crash may lose acknowledged records. Acks say
    /// `synced: false`. (`advance_watermark` still fsyncs the records below
    /// the new watermark first, so the watermark never exceeds the log.)
    Buffered,
}

/// How long delivered segments (wholly below the watermark) are kept.
/// The last (active) segment is never deleted, nor is any segment holding
/// a record at or above the watermark (undelivered) or the history floor
/// ([`crate::Partition::hold_history_from`]), whatever the limits.
/// Retention is applied when the watermark advances, on open, and by
/// [`crate::Partition::apply_retention`] (age limits need a caller that
/// calls it now and then).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Retention {
    /// Default: delete delivered segments as soon as the watermark passes them.
    #[default]
    KeepNothing,
    /// Keep the newest delivered segments whose total size is at most this
    /// many bytes; delete older ones.
    KeepBytes(u64),
    /// Keep delivered segments last written less than this long ago.
    KeepFor(Duration),
    /// Both limits at once (each optional): a delivered segment goes once
    /// it is older than `max_age`, or once the newer delivered segments
    /// already fill `max_bytes`. With neither set, nothing delivered goes.
    Within { max_age: Option<Duration>, max_bytes: Option<u64> },
}

/// How a partition is protected from a second opener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DirLock {
    /// The partition holds `<dir>/LOCK` while open (and a shared lock on
    /// any ancestor's `TREE.LOCK`).
    #[default]
    Own,
    /// This process holds [`crate::lock_tree`] on an ancestor: the partition
    /// holds no lock of its own. Opening fails if no ancestor is locked.
    Tree,
}

/// Options for [`crate::Partition::open`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogOptions {
    /// A segment rolls when the next batch would take it past this size
    /// (a batch is never split; an oversized batch gets a segment alone).
    /// Default 64 MiB.
    pub segment_max_bytes: u64,
    pub durability: Durability,
    pub retention: Retention,
    /// Publish the durable end in the file `durable` (see
    /// `durable_end.rs`) after every fdatasync that makes records durable,
    /// so a [`crate::Follower`] in another process can read the log as it
    /// grows. One pwrite of 40 bytes per group commit (never fsync'ed).
    /// Default false: without a follower nothing reads it. When false,
    /// `open` deletes a `durable` file left by an earlier run, so a
    /// follower falls back to sealed segments instead of a stale value.
    pub publish_durable_end: bool,
    /// GC keeps every segment holding a record at or above this, from open
    /// on (see [`crate::Partition::hold_history_from`]): a rewind that was
    /// running when the process stopped still finds its history.
    pub history_floor: Option<u64>,
    /// How the partition keeps a second opener out (see `tree_lock.rs`).
    /// Default [`DirLock::Own`].
    pub dir_lock: DirLock,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_max_bytes: 64 << 20,
            durability: Durability::Fsync,
            retention: Retention::KeepNothing,
            publish_durable_end: false,
            history_floor: None,
            dir_lock: DirLock::Own,
        }
    }
}
