//! A partition: one append-only log in one directory.
//!
//! Directory layout:
//!
//! ```text
//! <dir>/LOCK                      advisory lock held while open
//! <dir>/{base:020}.seg            segments (see segment.rs)
//! <dir>/watermark                 delivered watermark (see watermark.rs)
//! <dir>/durable                   published durable end, if enabled (see durable_end.rs)
//! <dir>/FOLLOWER.LOCK             held by a follower (see follower.rs)
//! <dir>/salvage.json              salvage manifest, if ever salvaged
//! <dir>/quarantine/               regions moved aside by salvage
//! ```
//!
//! # Concurrency and group commit
//!
//! `Fsync` appends never write themselves. Under the short, I/O-free `sync`
//! mutex an appender takes its sequences, encodes its frames onto the
//! pending queue, and then either
//! - *leads* a round, if none is in flight: it first *gathers* (while other
//!   appenders are in flight but not yet queued — typically the followers
//!   the previous round just woke, coming straight back — it waits for them,
//!   at most half the smoothed fdatasync time and 200 µs), takes the whole
//!   queue, writes it with one pwrite(2) under the `writer` mutex (onto space
//!   zeroed ahead, `partition/zeroed.rs`), fdatasyncs
//!   the active segment, sets `synced`, and wakes exactly the followers it
//!   covered (they return without touching the lock) plus one remaining
//!   follower to lead the next round (unparking happens after the lock is
//!   dropped); or
//! - *follows*: parks until a round covers it or it is picked to lead.
//!
//! Appends keep queueing while a round's fdatasync is in flight, so one
//! fdatasync covers everybody who arrived during the previous one.
//! `Buffered` appends pwrite(2) directly under the `writer` mutex.
//! Lock order: `writer` → `sync`, `writer` → `segments`,
//! `watermark` → `segments`; `sync` is never held across I/O or parking.
//!
//! Sealing: before a new segment is created the old one is fdatasync'ed
//! completely, so a sync of the active segment covers all earlier records.
//!
//! Visibility: readers see records `< acked` (`synced` for `Fsync`,
//! `written` for `Buffered`), read with pread from the segment files.
//!
//! Failure: if a write or fdatasync fails the partition is *halted*: no
//! more appends (the file may hold a partial frame and the kernel may have
//! dropped dirty pages), until it is reopened, which runs recovery.
//! Except a *temporary* failure of a write or of a segment creation (disk
//! full: ENOSPC, EDQUOT; no descriptor left: EMFILE, ENFILE; see
//! [`crate::Temporary`]): the segment is truncated back to its last whole
//! frame, and every record not yet written — the failed round's and those
//! queued behind it — is *discarded*: its appender gets the error, and the
//! sequences are handed out again (a generation counter tells discarded
//! appenders apart; one woken late asks where the first discard after it
//! cut, never `synced`, which may by then cover the records of whoever got
//! its sequences). Nothing of a failed append was acknowledged, so the
//! log stays contiguous and the partition healthy; the next append tries
//! again. A failed fdatasync still halts: its pages may be gone.
//!
//! Watermark and GC: `advance_watermark(to)` ignores `to <= current`,
//! rejects `to > acked`, persists crash-safely, then deletes segments whose
//! records are all `< watermark` (oldest first, with a directory fsync after
//! each removal so a crash never leaves a hole), subject to `Retention`.
//!
//! Split roles (a [`crate::Follower`] in another process delivers): with
//! `LogOptions::publish_durable_end` the partition publishes its durable
//! end after every fdatasync that made records durable (group-commit
//! rounds, segment seals, and once on open), outside every other lock.
//! The follower persists the watermark; the writer must then never call
//! `advance_watermark` but `refresh_watermark`, which reloads the file
//! (only forward, never beyond the durable end) and runs the same GC.
//!
//! Recovery scans only the last segment (see `scan_tail`): the sealed ones
//! are adopted unread ([`Segment::adopted`]) and checked by `read` as it
//! walks them, record by record, with their header and the chain to the
//! next segment, so damage in them is reported with file and offset when a
//! record there is read, never skipped.
//!
//! Open makes the surviving tail durable (one fdatasync of the last
//! segment): after a process crash, as opposed to a power loss, frames
//! that were written but never fdatasync'ed are still in the page cache and
//! would otherwise be acknowledged (readable, deliverable) without being
//! durable.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime};

use crate::durable_end::{self, DurableEnd, Publisher};
use crate::error::{Corruption, CorruptionKind, LogError};
use crate::frame::{self, Decoded, FRAME_HEADER_LEN, MAX_RECORD_LEN};
use crate::manifest::{self, SalvageManifest};
use crate::options::{Durability, LogOptions, Retention};
use crate::scan::{self, Scan, ScanArgs, TornTail};
use crate::segment::{self, Segment};
use crate::storage::{FsStorage, LazyFile, OpenMode, Storage, StorageFile, parent, read_full_at};
use crate::tree_lock::{self, DirHold};
use crate::watermark;

mod commit;
mod zeroed;
pub use commit::{Commit, CommitStep};

/// Largest pread of a read; a read wanting fewer records reads less
/// ([`read_size`]).
const READ_CHUNK: usize = 256 << 10;
/// Smallest pread of a read.
const MIN_READ: usize = 4 << 10;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates `dir` (and missing ancestors) if needed, making each new entry
/// durable.
pub(crate) fn create_dir_durably(st: &dyn Storage, dir: &Path) -> Result<(), LogError> {
    if !st.exists(dir) {
        let missing: Vec<&Path> =
            dir.ancestors().take_while(|a| !a.as_os_str().is_empty() && !st.exists(a)).collect();
        st.create_dir_all(dir).map_err(LogError::io("create dir", dir))?;
        for d in missing.iter().rev() {
            st.sync_dir(parent(d)).map_err(LogError::io("fsync dir", parent(d)))?;
        }
    }
    Ok(())
}

/// A segment's end as a durable position (valid once it is fdatasync'ed).
fn segment_end(seg: &Segment) -> DurableEnd {
    DurableEnd { base_seq: seg.base_seq, offset: seg.len(), next_seq: seg.end_seq() }
}

/// What recovery's scan found.
struct TailScan {
    /// Every segment file, in order: (base from the name, path).
    files: Vec<(u64, PathBuf)>,
    /// Index in `files` of the first segment scanned.
    from: usize,
    scan: Scan,
}

/// Recovery's scan: only the last segment (the only one ever appended to),
/// or the last two when the last one is a torn, header-less file.
/// The segments before it were sealed (fdatasync'ed whole before the next
/// one existed) and are adopted unread (see [`Segment::adopted`]).
fn scan_tail(st: &dyn Storage, dir: &Path, manifest: &SalvageManifest) -> Result<TailScan, LogError> {
    let files = scan::list_segments(st, dir)?;
    let mut from = files.len().saturating_sub(1);
    loop {
        let args = ScanArgs {
            phase: "open",
            manifest,
            stop_at_first: true,
            progress: &mut |_| {},
            on_record: &mut |_| true,
        };
        let scan = scan::scan_files(st, files.clone(), from, args)?;
        if scan.segments.is_empty() && scan.problems.is_empty() && scan.torn.is_some() && from > 0 {
            from -= 1; // the torn file goes: the one before it becomes the tail
            continue;
        }
        return Ok(TailScan { files, from, scan });
    }
}

/// Opens the sealed segments `files[..n-1]` unread; each one's end is the
/// next one's base (a claim reads check).
fn adopt_sealed(st: &dyn Storage, files: &[(u64, PathBuf)]) -> Result<Vec<Arc<Segment>>, LogError> {
    files
        .windows(2)
        .map(|w| {
            let ((base, path), (next_base, _)) = (&w[0], &w[1]);
            let file = st.open(path, OpenMode::Read).map_err(LogError::io("open", path))?;
            let len = file.len().map_err(LogError::io("stat", path))?;
            Ok(Arc::new(Segment::adopted(*base, path.clone(), file, len, *next_base)))
        })
        .collect()
}

/// The salvage gaps the manifest records before each segment up to the
/// first scanned one (`files[from]`); the scan reports those after it.
fn adopted_gaps(manifest: &SalvageManifest, files: &[(u64, PathBuf)], from: usize) -> Vec<(u64, u64)> {
    let gaps: Vec<(u64, u64)> =
        files.windows(2).take(from).filter_map(|w| manifest.gap_before(w[0].0, w[1].0)).collect();
    for (from, to) in &gaps {
        tracing::warn!(from, to, "log has a salvaged sequence gap");
    }
    gaps
}

/// Acknowledgement of an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub first_seq: u64,
    pub last_seq: u64,
    /// True iff an fdatasync covered these records before `append` returned.
    pub synced: bool,
    /// Every record with seq < this was fdatasync'ed when the ack was made.
    pub synced_through: u64,
}

/// A record read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// What `open` found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    pub next_seq: u64,
    pub first_seq: u64,
    pub watermark: u64,
    pub segments: usize,
    /// A torn (never acknowledged) tail that was truncated.
    pub truncated_tail: Option<TornTail>,
    /// Explicit salvage gaps `[from, to)` crossed (from the manifest).
    pub salvage_gaps: Vec<(u64, u64)>,
    /// Leftover `*.tmp` files removed.
    pub removed_temp_files: Vec<PathBuf>,
    /// Segments deleted because they were below the watermark.
    pub deleted_segments: Vec<PathBuf>,
}

/// Counters and positions.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PartitionStats {
    pub next_seq: u64,
    pub first_seq: u64,
    /// Records `< acked_seq` are acknowledged and readable.
    pub acked_seq: u64,
    /// Records `< synced_seq` are fdatasync'ed.
    pub synced_seq: u64,
    pub watermark: u64,
    pub segments: usize,
    /// Bytes in segment files (headers included).
    pub bytes: u64,
    /// Of those, the bytes of segments wholly below the watermark: delivered
    /// history kept by retention (or not collected yet).
    pub delivered_bytes: u64,
    /// fdatasync calls on segment data (group commits and segment seals).
    pub fsyncs: u64,
    /// Successful `append` calls.
    pub appends: u64,
    /// Records appended since open.
    pub records: u64,
    pub halted: Option<String>,
}

/// An empty batch or an oversized record is refused before anything else.
fn check_batch(records: &[&[u8]]) -> Result<(), LogError> {
    if records.is_empty() {
        return Err(LogError::EmptyBatch);
    }
    match records.iter().find(|r| r.len() > MAX_RECORD_LEN) {
        Some(r) => Err(LogError::RecordTooLarge { len: r.len(), max: MAX_RECORD_LEN }),
        None => Ok(()),
    }
}

/// Counts an `Fsync` append as in flight for the gathering leader.
struct InAppend<'a>(&'a AtomicUsize);

impl<'a> InAppend<'a> {
    fn enter(c: &'a AtomicUsize) -> Self {
        c.fetch_add(1, Ordering::AcqRel);
        InAppend(c)
    }
}

impl Drop for InAppend<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The write side: only the current group-commit leader (`Fsync`) or a
/// `Buffered` appender holds it, across pwrite(2) and segment rolls.
#[derive(Debug)]
struct Writer {
    active: Arc<Segment>,
    buf: Vec<u8>,
    /// The active segment's pre-zeroed space (`partition/zeroed.rs`).
    zeroed: zeroed::Zeroed,
}

/// The commit queue; held only for short, I/O-free critical sections.
#[derive(Debug)]
struct SyncState {
    /// Next sequence to assign.
    next_seq: u64,
    /// Encoded frames of enqueued, not yet written records
    /// `[pending_from, next_seq)` (`Fsync` mode only).
    pending: Vec<u8>,
    pending_from: u64,
    /// Number of `append` calls whose records are in `pending`.
    pending_appends: usize,
    /// A leader waiting for stragglers to join its round.
    gathering: Option<Thread>,
    /// Records `< written` are in the file (pwrite(2) returned).
    written: u64,
    /// Records `< synced` are fdatasync'ed.
    synced: u64,
    /// A leader round is in flight.
    syncing: bool,
    /// A thread keeps leading rounds while records are queued
    /// ([`Partition::lead`]): nobody else is picked to lead, and an
    /// async appender waits for its round instead of starting one.
    committer: bool,
    /// Parked followers.
    waiters: Vec<Waiter>,
    /// Bumped when unwritten records are discarded (a temporary failure):
    /// an appender of an older generation lost its records.
    generation: u64,
    /// Why the last generation was discarded.
    discarded: Option<Discard>,
    /// Where each discard cut, run-length encoded: `(generation, from)`
    /// says that the discards ending `generation` and every later one up to
    /// the next entry dropped the records `>= from`. A full disk fails
    /// round after round at the same `from`, so this stays short; at most
    /// [`DISCARD_RUNS_KEPT`] runs are kept.
    discard_runs: VecDeque<(u64, u64)>,
}

/// Runs of discards remembered to tell a kept appender of an older
/// generation from a dropped one. One lagging further back is told its
/// append failed (it may still be durable: never a false ack).
const DISCARD_RUNS_KEPT: usize = 4096;

/// A temporary write failure, kept to tell every discarded appender.
#[derive(Debug, Clone)]
struct Discard {
    path: PathBuf,
    op: &'static str,
    errno: Option<i32>,
    kind: std::io::ErrorKind,
    message: String,
}

impl Discard {
    fn of(e: &LogError) -> Self {
        match e {
            LogError::Io { path, op, source } => Discard {
                path: path.clone(),
                op,
                errno: source.raw_os_error(),
                kind: source.kind(),
                message: source.to_string(),
            },
            other => Discard {
                path: PathBuf::new(),
                op: "append",
                errno: None,
                kind: std::io::ErrorKind::Other,
                message: other.to_string(),
            },
        }
    }

    fn error(&self) -> LogError {
        let source = match self.errno {
            Some(errno) => std::io::Error::from_raw_os_error(errno),
            None => std::io::Error::new(self.kind, self.message.clone()),
        };
        LogError::Io { path: self.path.clone(), op: self.op, source }
    }
}

/// A parked follower: released as covered (its records are durable, it
/// returns without touching the lock) or to re-check (lead the next round,
/// or the partition halted).
#[derive(Debug)]
struct Waiter {
    end: u64,
    /// A parked thread, or `None`: an async appender, woken through the
    /// waker in its slot (see `commit.rs`).
    thread: Option<Thread>,
    slot: Arc<WaitSlot>,
}

const WAITING: u8 = 0;
const COVERED: u8 = 1;
const RECHECK: u8 = 2;

#[derive(Debug, Default)]
struct WaitSlot {
    state: AtomicU8,
    synced: AtomicU64,
    /// An async appender's latest waker. The poll stores it before reading
    /// `state`, the wake stores `state` before taking it: one of the two
    /// sees the other.
    waker: Mutex<Option<std::task::Waker>>,
}

impl Waiter {
    fn wake(self, state: u8, synced: u64) {
        self.slot.synced.store(synced, Ordering::Relaxed);
        self.slot.state.store(state, Ordering::Release);
        match self.thread {
            Some(t) => t.unpark(),
            None => {
                if let Some(w) = lock(&self.slot.waker).take() {
                    w.wake();
                }
            }
        }
    }
}

/// Followers to unpark, after the `sync` lock is dropped (so they do not
/// wake into a convoy on it).
#[must_use]
struct Wakeups {
    list: Vec<(Waiter, u8)>,
    synced: u64,
}

impl Wakeups {
    fn run(self) {
        for (w, state) in self.list {
            w.wake(state, self.synced);
        }
    }
}

impl SyncState {
    /// Whether the records `< end` of an appender enqueued in `generation`
    /// survived every discard since. The first discard after it decides:
    /// it dropped every record `>= from`, and later discards drop only
    /// higher sequences (each round starts where the last one ended).
    fn kept_since(&self, generation: u64, end: u64) -> bool {
        let runs = &self.discard_runs;
        if runs.front().is_none_or(|&(g, _)| g > generation) {
            return false; // forgotten: say it failed
        }
        let i = runs.partition_point(|&(g, _)| g <= generation) - 1;
        end <= runs[i].1
    }

    /// Takes the followers whose records are now durable and, if others
    /// remain and no sync is in flight, exactly one of them to lead the next
    /// round (targeted wake-ups: no thundering herd, and covered followers
    /// return without touching the lock). `all` makes everyone re-check (the
    /// partition halted).
    fn release(&mut self, all: bool) -> Wakeups {
        let synced = self.synced;
        let mut list = Vec::new();
        let mut i = 0;
        while i < self.waiters.len() {
            if all {
                list.push((self.waiters.swap_remove(i), RECHECK));
            } else if self.waiters[i].end <= synced {
                list.push((self.waiters.swap_remove(i), COVERED));
            } else {
                i += 1;
            }
        }
        if !self.syncing
            && !self.committer
            && let Some(pos) = (0..self.waiters.len()).min_by_key(|&i| self.waiters[i].end)
        {
            // Woken first: the next round starts while the covered ones
            // are still being woken.
            list.insert(0, (self.waiters.swap_remove(pos), RECHECK));
        }
        Wakeups { list, synced }
    }
}

/// Rewrites a record once its sequence is known: see
/// [`Partition::append_stamped`].
pub type Stamp<'a> = dyn FnMut(u64, &mut Vec<u8>) + 'a;

/// Frames `records` from sequence `first` into `out`, through `stamp`.
fn encode_frames(first: u64, records: &[&[u8]], stamp: Option<&mut Stamp<'_>>, out: &mut Vec<u8>) {
    let Some(stamp) = stamp else {
        for (i, r) in records.iter().enumerate() {
            frame::encode(first + i as u64, r, out);
        }
        return;
    };
    let mut scratch = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let seq = first + i as u64;
        scratch.clear();
        scratch.extend_from_slice(r);
        stamp(seq, &mut scratch);
        debug_assert_eq!(scratch.len(), r.len(), "a stamp changed the record's length");
        frame::encode(seq, &scratch, out);
    }
}

/// One partition's log. `Send + Sync`; share it with `Arc`.
/// Called after each group-commit fdatasync with its duration and the number
/// of records it made durable (the group-commit size). Must be cheap.
pub type FsyncObserver = Arc<dyn Fn(Duration, u64) + Send + Sync>;

pub struct Partition {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    opts: LogOptions,
    writer: Mutex<Writer>,
    /// Shared with the async appenders' [`Commit`]s (they deregister on drop).
    sync: Arc<Mutex<SyncState>>,
    segments: Mutex<Vec<Arc<Segment>>>,
    next_seq: AtomicU64,
    acked: AtomicU64,
    watermark: Mutex<u64>,
    watermark_cache: AtomicU64,
    /// GC never deletes a segment holding a record at or above this
    /// (`u64::MAX`: no floor). Set by a reader that re-reads history.
    history_floor: AtomicU64,
    halted: OnceLock<String>,
    fsyncs: AtomicU64,
    /// Told about every group-commit fdatasync (for metrics).
    fsync_observer: std::sync::OnceLock<FsyncObserver>,
    appends: AtomicU64,
    records: AtomicU64,
    /// `Fsync` appends in progress (enqueued, waiting, or on their way out).
    in_append: Arc<AtomicUsize>,
    /// Smoothed fdatasync duration (µs), to bound the gathering delay.
    fsync_ewma_us: AtomicU64,
    /// Rewrites `durable` (with `publish_durable_end`); innermost lock.
    publisher: Option<Mutex<Publisher>>,
    /// Salvage gaps, checked by reads at the end of an adopted segment.
    manifest: SalvageManifest,
    /// Keeps a second opener out (see `tree_lock.rs`).
    _hold: DirHold,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("dir", &self.dir)
            .field("opts", &self.opts)
            .field("next_seq", &self.next_seq())
            .field("watermark", &self.watermark())
            .finish_non_exhaustive()
    }
}

impl Partition {
    /// Opens (creating if missing) the partition in `dir` on the real
    /// filesystem and runs recovery.
    pub fn open(dir: &Path, opts: LogOptions) -> Result<(Partition, Recovery), LogError> {
        Self::open_with(Arc::new(FsStorage), dir, opts)
    }

    /// Same, on any [`Storage`].
    pub fn open_with(
        storage: Arc<dyn Storage>,
        dir: &Path,
        opts: LogOptions,
    ) -> Result<(Partition, Recovery), LogError> {
        let st = &*storage;
        create_dir_durably(st, dir)?;
        let hold = tree_lock::hold(st, dir, opts.dir_lock)?;

        // Leftovers of interrupted atomic writes / segment creations.
        let mut removed_temp_files = Vec::new();
        for e in st.list_dir(dir).map_err(LogError::io("list", dir))? {
            if !e.is_dir && e.name.ends_with(".tmp") {
                let p = dir.join(&e.name);
                st.remove_file(&p).map_err(LogError::io("remove", &p))?;
                removed_temp_files.push(p);
            }
        }
        if !removed_temp_files.is_empty() {
            st.sync_dir(dir).map_err(LogError::io("fsync dir", dir))?;
        }

        let wm = watermark::load(st, dir)?;
        let manifest = manifest::load(st, dir)?;
        let TailScan { files, from, scan } = scan_tail(st, dir, &manifest)?;
        if let Some(p) = scan.problems.into_iter().next() {
            return Err(LogError::Corrupt(p.corruption));
        }
        let next_seq = scan.next_seq.unwrap_or(wm);
        if wm > next_seq {
            return Err(LogError::Corrupt(Corruption {
                file: watermark::path(dir),
                offset: 0,
                kind: CorruptionKind::BadWatermark {
                    reason: format!("watermark {wm} is beyond the log end {next_seq}"),
                },
            }));
        }
        if let Some(t) = &scan.torn {
            tracing::warn!(
                file = %t.file.display(),
                offset = t.offset,
                bytes_dropped = t.bytes_dropped,
                "truncating torn tail of the log (never acknowledged)"
            );
            if t.offset == 0 {
                st.remove_file(&t.file).map_err(LogError::io("remove", &t.file))?;
                st.sync_dir(dir).map_err(LogError::io("fsync dir", dir))?;
            } else {
                let f = st.open(&t.file, OpenMode::Write).map_err(LogError::io("open", &t.file))?;
                f.set_len(t.offset).map_err(LogError::io("truncate", &t.file))?;
                f.sync_data().map_err(LogError::io("fdatasync", &t.file))?;
            }
        }

        let mut segments = adopt_sealed(st, &files[..(from + 1).min(files.len())])?;
        let mut salvage_gaps = adopted_gaps(&manifest, &files, from);
        salvage_gaps.extend(scan.gaps_crossed);
        let n = scan.segments.len();
        for (i, s) in scan.segments.into_iter().enumerate() {
            let file: Arc<dyn StorageFile> = if i + 1 == n {
                if s.end_seq > s.base_seq {
                    // The surviving tail may only be in the page cache (a
                    // process crash); it is acknowledged from now on, so
                    // make it durable.
                    let f = st.open(&s.path, OpenMode::Write).map_err(LogError::io("open", &s.path))?;
                    f.sync_data().map_err(LogError::io("fdatasync", &s.path))?;
                }
                // The active segment: opened on the first append or read.
                // Written with pwrite: frames land on pre-zeroed space.
                Arc::new(LazyFile::new(storage.clone(), s.path.clone(), OpenMode::Write))
            } else {
                st.open(&s.path, OpenMode::Read).map_err(LogError::io("open", &s.path))?
            };
            segments.push(Arc::new(Segment::new(s.base_seq, s.path, file, s.valid_len, s.end_seq, s.index)));
        }
        if segments.is_empty() {
            let seg =
                segment::create_segment(st, dir, next_seq).map_err(LogError::io("create segment", dir))?;
            segments.push(Arc::new(seg));
        }
        let active = segments
            .last()
            .cloned()
            .ok_or_else(|| LogError::Halted { dir: dir.to_path_buf(), reason: "no active segment".into() })?;

        let mut p = Partition {
            dir: dir.to_path_buf(),
            storage: storage.clone(),
            opts,
            sync: Arc::new(Mutex::new(SyncState {
                next_seq,
                pending: Vec::new(),
                pending_from: next_seq,
                written: next_seq,
                synced: next_seq,
                syncing: false,
                committer: false,
                waiters: Vec::new(),
                pending_appends: 0,
                gathering: None,
                generation: 0,
                discarded: None,
                discard_runs: VecDeque::new(),
            })),
            writer: Mutex::new(Writer { active, buf: Vec::new(), zeroed: zeroed::Zeroed::default() }),
            segments: Mutex::new(segments),
            next_seq: AtomicU64::new(next_seq),
            acked: AtomicU64::new(next_seq),
            watermark: Mutex::new(wm),
            watermark_cache: AtomicU64::new(wm),
            history_floor: AtomicU64::new(opts.history_floor.unwrap_or(u64::MAX)),
            halted: OnceLock::new(),
            fsyncs: AtomicU64::new(0),
            fsync_observer: std::sync::OnceLock::new(),
            appends: AtomicU64::new(0),
            records: AtomicU64::new(0),
            in_append: Arc::new(AtomicUsize::new(0)),
            fsync_ewma_us: AtomicU64::new(0),
            publisher: None,
            manifest,
            _hold: hold,
        };
        let deleted_segments = p.gc(wm)?;
        if opts.publish_durable_end {
            let mut publisher = Publisher::create(st, dir)?;
            publisher.publish(p.writer_end());
            p.publisher = Some(Mutex::new(publisher));
        } else if durable_end::remove(st, dir)? {
            tracing::info!(dir = %dir.display(), "removed the durable end published by an earlier run");
        }
        let recovery = Recovery {
            next_seq,
            first_seq: p.first_seq(),
            watermark: wm,
            segments: lock(&p.segments).len(),
            truncated_tail: scan.torn,
            salvage_gaps,
            removed_temp_files,
            deleted_segments,
        };
        tracing::info!(
            dir = %dir.display(),
            next_seq = recovery.next_seq,
            first_seq = recovery.first_seq,
            watermark = recovery.watermark,
            segments = recovery.segments,
            "partition opened"
        );
        Ok((p, recovery))
    }

    /// Registers the fdatasync observer (once; later calls are ignored).
    pub fn set_fsync_observer(&self, observer: FsyncObserver) {
        let _ = self.fsync_observer.set(observer);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> &LogOptions {
        &self.opts
    }

    /// The durable end as of the last write, under the `writer` lock (or
    /// before any append): everything written is durable when it is taken
    /// right before the fdatasync that publishes it, or on open.
    fn writer_end(&self) -> DurableEnd {
        let w = lock(&self.writer);
        segment_end(&w.active)
    }

    fn publish(&self, end: DurableEnd) {
        if let Some(p) = &self.publisher {
            lock(p).publish(end);
        }
    }

    fn halted_err(&self) -> Option<LogError> {
        self.halted.get().map(|r| LogError::Halted { dir: self.dir.clone(), reason: r.clone() })
    }

    fn halt(&self, reason: String) {
        tracing::error!(dir = %self.dir.display(), reason = %reason, "partition halted");
        let _ = self.halted.set(reason);
    }

    /// Appends all records contiguously and in order; blocks until durable
    /// per the policy. On `Err` nothing of the batch is acknowledged.
    pub fn append(&self, records: &[&[u8]]) -> Result<Appended, LogError> {
        self.append_inner(records, None)
    }

    /// [`Partition::append`], letting `stamp` rewrite each record once its
    /// sequence is known (`stamp(seq, bytes)`), in sequence order and
    /// serialized with every other append of the partition: e.g. a write
    /// time that never goes back along the log. `stamp` may change bytes
    /// but not the record's length (it was checked against
    /// `MAX_RECORD_LEN` before). It runs under the partition's append lock:
    /// keep it to a few stores, and never call into this partition from it.
    pub fn append_stamped(&self, records: &[&[u8]], stamp: &mut Stamp<'_>) -> Result<Appended, LogError> {
        self.append_inner(records, Some(stamp))
    }

    fn append_inner(
        &self,
        records: &[&[u8]],
        mut stamp: Option<&mut Stamp<'_>>,
    ) -> Result<Appended, LogError> {
        check_batch(records)?;
        let n = records.len() as u64;
        let (first, synced, synced_through) = match self.opts.durability {
            Durability::Fsync => {
                // Enqueue (seqs assigned, frames encoded) and let a leader
                // write + fdatasync the whole queue in one go.
                let _inside = InAppend::enter(&self.in_append);
                let (s, first, generation) = self.enqueue(records, stamp.as_deref_mut())?;
                let through = self.wait_durable(s, first + n, generation)?;
                (first, true, through)
            }
            Durability::Buffered => {
                let first = self.append_buffered(records, stamp)?;
                (first, false, lock(&self.sync).synced)
            }
        };
        self.appends.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(n, Ordering::Relaxed);
        Ok(Appended { first_seq: first, last_seq: first + n - 1, synced, synced_through })
    }

    /// `Fsync`: takes the sequences of `records` and queues their frames for
    /// the next round. Returns the held queue lock, the first sequence and
    /// the generation the records were queued in.
    fn enqueue(
        &self,
        records: &[&[u8]],
        stamp: Option<&mut Stamp<'_>>,
    ) -> Result<(MutexGuard<'_, SyncState>, u64, u64), LogError> {
        let n = records.len() as u64;
        let mut s = lock(&self.sync);
        if let Some(e) = self.halted_err() {
            return Err(e);
        }
        let first = s.next_seq;
        encode_frames(first, records, stamp, &mut s.pending);
        s.next_seq = first + n;
        s.pending_appends += 1;
        if s.pending_appends >= self.in_append.load(Ordering::Acquire)
            && let Some(t) = s.gathering.take()
        {
            t.unpark(); // everybody in flight has joined the round
        }
        self.next_seq.store(first + n, Ordering::Release);
        let generation = s.generation;
        Ok((s, first, generation))
    }

    /// `Buffered`: pwrite(2) under the writer lock, no fdatasync.
    fn append_buffered(&self, records: &[&[u8]], stamp: Option<&mut Stamp<'_>>) -> Result<u64, LogError> {
        let n = records.len() as u64;
        let mut w = lock(&self.writer);
        if let Some(e) = self.halted_err() {
            return Err(e);
        }
        let first = {
            let mut s = lock(&self.sync);
            let first = s.next_seq;
            s.next_seq = first + n;
            first
        };
        self.next_seq.store(first + n, Ordering::Release);
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        encode_frames(first, records, stamp, &mut buf);
        let res = self.write_frames(&mut w, &buf, first, first + n);
        w.buf = buf;
        if let Err(e) = res {
            if e.temporary().is_some() && self.halted.get().is_none() {
                // Nothing of it was written: hand the sequences out again.
                lock(&self.sync).next_seq = first;
                self.next_seq.store(first, Ordering::Release);
            }
            return Err(e);
        }
        lock(&self.sync).written = first + n;
        self.acked.fetch_max(first + n, Ordering::AcqRel);
        Ok(first)
    }

    /// Writes encoded frames for `[from, to)` to the active segment (rolling
    /// first if they would overflow it), updating the segment's index, length
    /// and end. A temporary failure leaves the segment as it was (truncated
    /// back if a part was written); any other failure halts the partition.
    fn write_frames(&self, w: &mut Writer, frames: &[u8], from: u64, to: u64) -> Result<(), LogError> {
        let active = w.active.clone();
        if active.len() + frames.len() as u64 > self.opts.segment_max_bytes
            && active.end_seq() > active.base_seq
            && let Err(e) = self.roll(w, from)
        {
            if e.temporary().is_none() {
                self.halt_and_wake(e.to_string());
            }
            return Err(e);
        }
        let active = w.active.clone();
        let start = active.len();
        let end = start + frames.len() as u64;
        w.zeroed.ahead_of(&*active.file, end, self.opts.segment_max_bytes);
        if let Err(e) = active.file.write_at(frames, start) {
            w.zeroed.reset();
            let err = LogError::Io { path: active.path.clone(), op: "write", source: e };
            if err.temporary().is_none() {
                self.halt_and_wake(err.to_string());
            } else if let Err(t) = active.file.set_len(start) {
                self.halt_and_wake(format!("{err}; truncating back to {start} failed: {t}"));
            }
            return Err(err);
        }
        w.zeroed.wrote(end);
        {
            let mut idx = lock(&active.index);
            let (mut off, mut seq, mut p) = (start, from, 0usize);
            while seq < to {
                segment::maybe_index(&mut idx, seq, off);
                let len = frame::peek(&frames[p..]).map_or(0, |(len, _, _)| len as usize);
                let fl = frame::frame_len(len);
                p += fl;
                off += fl as u64;
                seq += 1;
            }
        }
        active.len.store(start + frames.len() as u64, Ordering::Release);
        active.end_seq.store(to, Ordering::Release);
        Ok(())
    }

    fn halt_and_wake(&self, reason: String) {
        self.halt(reason);
        let wake = lock(&self.sync).release(true);
        wake.run();
    }

    /// Whether an appender of `[.., end)` queued in `generation` is done:
    /// its records are durable (`Ok(synced)`), were discarded, or the
    /// partition halted (then everybody must re-check: run the wake-ups
    /// once the lock is dropped). `None`: not yet.
    fn settled(
        &self,
        s: &mut SyncState,
        end: u64,
        generation: u64,
    ) -> Option<(Result<u64, LogError>, Option<Wakeups>)> {
        if s.generation != generation && !s.kept_since(generation, end) {
            // A temporary failure discarded these records (every waiter was
            // woken then; nobody waits on this appender). Checked before
            // `synced`: the sequences were handed out again, so `synced >=
            // end` may now cover somebody else's records. `discarded` is
            // set with every generation bump.
            let e = s.discarded.as_ref().map_or_else(
                || LogError::Io {
                    path: self.dir.clone(),
                    op: "append",
                    source: std::io::Error::other("records discarded after a temporary write failure"),
                },
                Discard::error,
            );
            return Some((Err(e), None));
        }
        if s.synced >= end {
            return Some((Ok(s.synced), None));
        }
        let e = self.halted_err()?;
        Some((Err(e), Some(s.release(true))))
    }

    /// Group commit: returns once every record `< end` is fdatasync'ed.
    /// If no round is in flight the caller leads one: it takes the whole
    /// queue, writes it, fdatasyncs, and wakes the followers it covered.
    /// Otherwise it parks until a leader covers it or picks it to lead.
    /// Returns `synced`.
    fn wait_durable<'a>(
        &'a self,
        mut s: MutexGuard<'a, SyncState>,
        end: u64,
        generation: u64,
    ) -> Result<u64, LogError> {
        loop {
            if let Some((result, wake)) = self.settled(&mut s, end, generation) {
                drop(s);
                if let Some(w) = wake {
                    w.run();
                }
                return result;
            }
            if s.syncing {
                let slot = Arc::new(WaitSlot::default());
                s.waiters.push(Waiter { end, thread: Some(std::thread::current()), slot: slot.clone() });
                drop(s);
                loop {
                    std::thread::park();
                    match slot.state.load(Ordering::Acquire) {
                        COVERED => return Ok(slot.synced.load(Ordering::Relaxed)),
                        WAITING => {} // spurious wake-up: still registered
                        _ => break,
                    }
                }
                s = lock(&self.sync);
                continue;
            }
            // Lead a round. First gather: while other appenders are in
            // flight but not yet enqueued (typically the followers the last
            // round just woke, coming straight back), wait for them, at most
            // half an fdatasync and 200 µs. One fdatasync then covers
            // everybody instead of alternating between two half groups.
            s.syncing = true;
            let deadline = Instant::now() + self.gather_wait();
            while s.pending_appends < self.in_append.load(Ordering::Acquire) {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                s.gathering = Some(std::thread::current());
                drop(s);
                std::thread::park_timeout(deadline - now);
                s = lock(&self.sync);
                s.gathering = None;
            }
            s.pending_appends = 0;
            let from = s.pending_from;
            let to = s.next_seq;
            let mut batch = std::mem::take(&mut s.pending);
            s.pending_from = to;
            drop(s);

            let mut w = lock(&self.writer);
            let wrote = if batch.is_empty() { Ok(()) } else { self.write_frames(&mut w, &batch, from, to) };
            let (file, path) = (w.active.file.clone(), w.active.path.clone());
            let end_written = segment_end(&w.active);
            let target = {
                let mut s = lock(&self.sync);
                if !batch.is_empty() && wrote.is_ok() && to > s.written {
                    s.written = to;
                }
                s.written
            };
            drop(w);
            if let Err(e) = wrote {
                let mut s = lock(&self.sync);
                s.syncing = false;
                if e.temporary().is_some() && self.halted.get().is_none() {
                    self.discard_unwritten(&mut s, from, &e);
                }
                let wake = s.release(true);
                drop(s);
                wake.run();
                return Err(e);
            }
            let t0 = Instant::now();
            let res = file.sync_data();
            let took = t0.elapsed();
            let us = took.as_micros() as u64;
            let old = self.fsync_ewma_us.load(Ordering::Relaxed);
            self.fsync_ewma_us.store(if old == 0 { us } else { (old * 7 + us) / 8 }, Ordering::Relaxed);
            self.fsyncs.fetch_add(1, Ordering::Relaxed);

            s = lock(&self.sync);
            s.syncing = false;
            if s.pending.is_empty() {
                // Reuse the allocation for the next queue.
                batch.clear();
                s.pending = batch;
            }
            match res {
                Ok(()) => {
                    let covered = target.saturating_sub(s.synced);
                    s.synced = s.synced.max(target);
                    self.acked.fetch_max(s.synced, Ordering::AcqRel);
                    let synced = s.synced;
                    let wake = s.release(false);
                    drop(s);
                    wake.run();
                    self.publish(end_written);
                    if let Some(observe) = self.fsync_observer.get() {
                        observe(took, covered);
                    }
                    if synced >= end {
                        return Ok(synced);
                    }
                    s = lock(&self.sync);
                }
                Err(e) => {
                    self.halt(format!("fdatasync {}: {e}", path.display()));
                    let wake = s.release(true);
                    drop(s);
                    wake.run();
                    return Err(LogError::Io { path, op: "fdatasync", source: e });
                }
            }
        }
    }

    /// How long a leader gathers stragglers, or a committer waits for the
    /// appenders it woke: half the smoothed fdatasync time, at most 200 µs.
    fn gather_wait(&self) -> Duration {
        Duration::from_micros((self.fsync_ewma_us.load(Ordering::Relaxed) / 2).min(200))
    }

    /// After a temporary write failure: every record from `from` on (the
    /// failed round's and those queued behind it) is dropped, its sequence
    /// handed out again, and its appender told (next generation).
    fn discard_unwritten(&self, s: &mut SyncState, from: u64, e: &LogError) {
        tracing::warn!(dir = %self.dir.display(), error = %e, discarded = s.next_seq - from, "append failed for now; its records were rolled back");
        s.next_seq = from;
        s.pending.clear();
        s.pending_from = from;
        s.pending_appends = 0;
        if s.discard_runs.back().is_none_or(|&(_, f)| f != from) {
            if s.discard_runs.len() == DISCARD_RUNS_KEPT {
                s.discard_runs.pop_front();
            }
            s.discard_runs.push_back((s.generation, from));
        }
        s.generation += 1;
        s.discarded = Some(Discard::of(e));
        self.next_seq.store(from, Ordering::Release);
    }

    /// Seals the active segment (fdatasync) and starts a new one at `base`.
    fn roll(&self, w: &mut Writer, base: u64) -> Result<(), LogError> {
        let old = w.active.clone();
        if w.zeroed.beyond(&*old.file, old.len()) {
            // A sealed segment ends at its last frame (`zeroed.rs`).
            old.file.set_len(old.len()).map_err(LogError::io("truncate", &old.path))?;
        }
        old.file.sync_data().map_err(LogError::io("fdatasync", &old.path))?;
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.publish(segment_end(&old));
        let wake = {
            let mut s = lock(&self.sync);
            s.synced = s.synced.max(old.end_seq());
            self.acked.fetch_max(s.synced, Ordering::AcqRel);
            s.release(false)
        };
        wake.run();
        let seg = segment::create_segment(&*self.storage, &self.dir, base)
            .map_err(LogError::io("create segment", &self.dir))?;
        let seg = Arc::new(seg);
        lock(&self.segments).push(seg.clone());
        tracing::debug!(file = %seg.path.display(), base_seq = seg.base_seq, "rolled segment");
        w.active = seg;
        w.zeroed.reset();
        Ok(())
    }

    /// fdatasyncs everything written so far (useful with `Buffered`).
    /// Returns the sequence below which everything is durable.
    pub fn flush(&self) -> Result<u64, LogError> {
        let s = lock(&self.sync);
        let (end, generation) = (s.next_seq, s.generation);
        self.wait_durable(s, end, generation)
    }

    /// Records with seq in `[from_seq, acked)`: at most `max_records`, and
    /// stopping before `max_bytes` of payload would be exceeded (but at
    /// least one record if any). Sequences below `first_seq()` no longer
    /// exist and are skipped; records carry their seq, so a caller sees any
    /// skipped range (GC or salvage gap) by the first seq it gets.
    pub fn read(&self, from_seq: u64, max_records: usize, max_bytes: usize) -> Result<Vec<Record>, LogError> {
        let limit = self.acked.load(Ordering::Acquire);
        let segs: Vec<Arc<Segment>> = lock(&self.segments).clone();
        let mut r = ReadOut { out: Vec::new(), bytes: 0, max_records, max_bytes, limit };
        let Some(first) = segs.first() else { return Ok(r.out) };
        let mut seq = from_seq.max(first.base_seq);
        let mut i = segs.partition_point(|s| s.base_seq <= seq).saturating_sub(1);
        while i < segs.len() && !r.done(seq) {
            let seg = &segs[i];
            seq = seq.max(seg.base_seq);
            if seq >= seg.end_seq() {
                i += 1;
                continue;
            }
            if seg.adopted {
                seg.check_header().map_err(LogError::Corrupt)?;
            }
            let w = walk_segment(seg, seq, &mut r)?;
            if w.stop == Stop::Limit {
                break;
            }
            if seg.adopted {
                self.check_adopted_end(seg, segs.get(i + 1), &w)?;
            }
            seq = w.cur;
            i += 1;
        }
        Ok(r.out)
    }

    /// A read went through an adopted segment: it must end exactly where
    /// the next one starts, or at a salvage gap the manifest records.
    fn check_adopted_end(
        &self,
        seg: &Segment,
        next: Option<&Arc<Segment>>,
        w: &Walked,
    ) -> Result<(), LogError> {
        let corrupt = |file: &Path, offset, kind| {
            LogError::Corrupt(Corruption { file: file.to_path_buf(), offset, kind })
        };
        match w.stop {
            Stop::SegmentEnd if w.offset < seg.len() => {
                Err(corrupt(&seg.path, w.offset, CorruptionKind::SegmentOverlap { next_base: seg.end_seq() }))
            }
            Stop::FileEnd if w.cur < seg.end_seq() => match next {
                Some(n) if self.manifest.allows_gap(w.cur, n.base_seq) => Ok(()),
                Some(n) => Err(corrupt(
                    &n.path,
                    0,
                    CorruptionKind::SequenceGap { expected: w.cur, found: n.base_seq },
                )),
                None => Err(corrupt(&seg.path, w.offset, CorruptionKind::TruncatedRecord)),
            },
            _ => Ok(()),
        }
    }

    /// The first sequence of the active segment (the one being written).
    pub fn active_base_seq(&self) -> u64 {
        lock(&self.segments).last().map_or(0, |s| s.base_seq)
    }

    /// The sequence the next append will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Acquire)
    }

    /// Lowest sequence still stored.
    pub fn first_seq(&self) -> u64 {
        lock(&self.segments).first().map_or(0, |s| s.base_seq)
    }

    /// All seq < watermark are delivered.
    pub fn watermark(&self) -> u64 {
        self.watermark_cache.load(Ordering::Acquire)
    }

    /// Persists a new delivered watermark (crash-safe; a value not above the
    /// current one is ignored), then deletes segments wholly below it
    /// subject to retention. Errors if `to` exceeds the acknowledged end.
    pub fn advance_watermark(&self, to: u64) -> Result<(), LogError> {
        let mut wm = lock(&self.watermark);
        if to <= *wm {
            return Ok(());
        }
        let acked = self.acked.load(Ordering::Acquire);
        if to > acked {
            return Err(LogError::WatermarkBeyondEnd { requested: to, acked });
        }
        if self.opts.durability == Durability::Buffered {
            // Never let the persisted watermark get ahead of durable records.
            let s = lock(&self.sync);
            let generation = s.generation;
            self.wait_durable(s, to, generation)?;
        }
        watermark::store(&*self.storage, &self.dir, to)?;
        *wm = to;
        self.watermark_cache.store(to, Ordering::Release);
        self.gc(to)?;
        Ok(())
    }

    /// Split roles: picks up the watermark a [`crate::Follower`] persisted
    /// and runs the same GC as `advance_watermark`. Only moves forward (a
    /// lower or equal value is ignored); a value beyond the durable end is
    /// `BadWatermark` corruption, as in `open`. Returns the watermark.
    pub fn refresh_watermark(&self) -> Result<u64, LogError> {
        let mut wm = lock(&self.watermark);
        let stored = watermark::load(&*self.storage, &self.dir)?;
        if stored <= *wm {
            return Ok(*wm);
        }
        let synced = lock(&self.sync).synced;
        if stored > synced {
            return Err(LogError::Corrupt(Corruption {
                file: watermark::path(&self.dir),
                offset: 0,
                kind: CorruptionKind::BadWatermark {
                    reason: format!("watermark {stored} is beyond the durable end {synced}"),
                },
            }));
        }
        *wm = stored;
        self.watermark_cache.store(stored, Ordering::Release);
        self.gc(stored)?;
        Ok(stored)
    }

    /// Keeps every segment holding a record at or above `floor` (`None`:
    /// no floor), whatever the watermark and retention say: a reader that
    /// re-reads delivered history (a rewind) needs it. Takes effect at the
    /// next GC.
    pub fn hold_history_from(&self, floor: Option<u64>) {
        self.history_floor.store(floor.unwrap_or(u64::MAX), Ordering::Release);
    }

    /// Runs GC at the current watermark: deletes what retention no longer
    /// keeps (an age limit expires with no delivery going on). Returns how
    /// many segments went.
    pub fn apply_retention(&self) -> Result<usize, LogError> {
        let wm = lock(&self.watermark);
        Ok(self.gc(*wm)?.len())
    }

    /// Deletes delivered segments (all records < `wm` and below the history
    /// floor) per retention; never the last one. Oldest first, fsyncing the
    /// directory after each.
    fn gc(&self, wm: u64) -> Result<Vec<PathBuf>, LogError> {
        let victims: Vec<Arc<Segment>> = {
            let mut segs = lock(&self.segments);
            // Read under the lock: a reader that set the floor and then
            // looked at `first_seq` (same lock) is never outrun.
            let wm = wm.min(self.history_floor.load(Ordering::Acquire));
            let mut delivered = 0;
            while delivered + 1 < segs.len() && segs[delivered + 1].base_seq <= wm {
                delivered += 1;
            }
            let count = match self.opts.retention {
                Retention::KeepNothing => delivered,
                Retention::KeepBytes(keep) => beyond_bytes(&segs[..delivered], keep),
                Retention::KeepFor(age) => self.older_than(&segs[..delivered], age),
                Retention::Within { max_age, max_bytes } => {
                    let by_bytes = max_bytes.map_or(0, |keep| beyond_bytes(&segs[..delivered], keep));
                    let by_age = max_age.map_or(0, |age| self.older_than(&segs[..delivered], age));
                    by_bytes.max(by_age)
                }
            };
            segs.drain(..count).collect()
        };
        let mut deleted = Vec::new();
        for s in victims {
            self.storage.remove_file(&s.path).map_err(LogError::io("remove", &s.path))?;
            self.storage.sync_dir(&self.dir).map_err(LogError::io("fsync dir", &self.dir))?;
            tracing::debug!(file = %s.path.display(), "deleted delivered segment");
            deleted.push(s.path.clone());
        }
        Ok(deleted)
    }

    /// How many of the oldest `delivered` segments were last written at
    /// least `age` ago (a clock that went back keeps them).
    fn older_than(&self, delivered: &[Arc<Segment>], age: Duration) -> usize {
        let now = SystemTime::now();
        delivered
            .iter()
            .take_while(|s| {
                self.storage
                    .modified(&s.path)
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|d| d >= age)
            })
            .count()
    }

    pub fn stats(&self) -> PartitionStats {
        let wm = self.watermark();
        let segs = lock(&self.segments);
        PartitionStats {
            next_seq: self.next_seq(),
            first_seq: segs.first().map_or(0, |s| s.base_seq),
            acked_seq: self.acked.load(Ordering::Acquire),
            synced_seq: lock(&self.sync).synced,
            watermark: self.watermark(),
            segments: segs.len(),
            bytes: segs.iter().map(|s| s.len()).sum(),
            delivered_bytes: segs.windows(2).filter(|w| w[1].base_seq <= wm).map(|w| w[0].len()).sum(),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            appends: self.appends.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            halted: self.halted.get().cloned(),
        }
    }
}

/// The records one `read` collects, and its limits.
struct ReadOut {
    out: Vec<Record>,
    bytes: usize,
    max_records: usize,
    max_bytes: usize,
    /// Records `< limit` are acknowledged.
    limit: u64,
}

impl ReadOut {
    /// Whether the read is over once it reaches sequence `cur`.
    fn done(&self, cur: u64) -> bool {
        cur >= self.limit || self.out.len() >= self.max_records
    }

    /// Takes the record unless it would pass `max_bytes` (the first one is
    /// always taken); false: the read is over.
    fn take(&mut self, seq: u64, payload: &[u8]) -> bool {
        if !self.out.is_empty() && self.bytes + payload.len() > self.max_bytes {
            return false;
        }
        self.bytes += payload.len();
        self.out.push(Record { seq, payload: payload.to_vec() });
        true
    }
}

/// Why a walk over one segment stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// The read has what it may take.
    Limit,
    /// Every byte of the file was walked.
    FileEnd,
    /// The segment's end sequence was reached (adopted segments only).
    SegmentEnd,
}

/// Where a walk over one segment stopped: before the record `cur`, at
/// `offset`.
#[derive(Clone, Copy, Debug)]
struct Walked {
    cur: u64,
    offset: u64,
    stop: Stop,
}

/// How many bytes to pread for the records `r` still wants, after
/// `skip` records before them (from the sparse index's entry to the first
/// wanted one): at the segment's mean frame size, plus one frame, within
/// [`MIN_READ`]..=[`READ_CHUNK`]. A lane asking for 100 records of a
/// backlog reads about 100 frames, not 256 KiB (a copy from the page cache
/// and a zeroed buffer of that size per pull). A guess too small costs one
/// more pread: the walk reads on from where the last whole frame ended.
fn read_size(seg: &Segment, r: &ReadOut, skip: u64) -> usize {
    let records = seg.end_seq().saturating_sub(seg.base_seq).max(1);
    let mean = usize::try_from(seg.len() / records).unwrap_or(READ_CHUNK).max(FRAME_HEADER_LEN);
    let skip = usize::try_from(skip).unwrap_or(usize::MAX);
    let wanted = r.max_records.saturating_sub(r.out.len()).saturating_add(skip).saturating_add(1);
    wanted.saturating_mul(mean).clamp(MIN_READ, READ_CHUNK)
}

/// Walks the frames of `seg` from the index entry before `seq`, collecting
/// the records `>= seq` into `r`. Every frame is checked (length, CRC,
/// sequence); a problem is corruption with the segment and the offset.
/// Walking an adopted segment records index entries on the way.
fn walk_segment(seg: &Segment, seq: u64, r: &mut ReadOut) -> Result<Walked, LogError> {
    let (mut cur, mut off) = seg.seek(seq);
    let seg_len = seg.len();
    let end = if seg.adopted { seg.end_seq() } else { u64::MAX };
    let mut next_index = if seg.adopted { seg.next_index_offset() } else { u64::MAX };
    let mut buf = Vec::new();
    'seg: while off < seg_len {
        let mut want = read_size(seg, r, seq.saturating_sub(cur)).min((seg_len - off) as usize);
        'fill: loop {
            buf.resize(want, 0);
            let got = read_full_at(&*seg.file, &mut buf, off).map_err(LogError::io("read", &seg.path))?;
            buf.truncate(got);
            let corrupt =
                |at: u64, kind| LogError::Corrupt(Corruption { file: seg.path.clone(), offset: at, kind });
            if got == 0 {
                return Err(corrupt(off, CorruptionKind::TruncatedRecord));
            }
            let mut p = 0usize;
            loop {
                let at = off + p as u64;
                if r.done(cur) {
                    return Ok(Walked { cur, offset: at, stop: Stop::Limit });
                }
                if cur >= end {
                    return Ok(Walked { cur, offset: at, stop: Stop::SegmentEnd });
                }
                match frame::decode(&buf[p..]) {
                    Decoded::Record { seq: s, payload, frame_len, .. } => {
                        if s != cur {
                            return Err(corrupt(at, CorruptionKind::SequenceGap { expected: cur, found: s }));
                        }
                        if s >= seq && !r.take(s, payload) {
                            return Ok(Walked { cur, offset: at, stop: Stop::Limit });
                        }
                        if at >= next_index {
                            next_index = seg.learn_index(s, at);
                        }
                        cur += 1;
                        p += frame_len;
                    }
                    Decoded::Incomplete if p > 0 => {
                        off = at;
                        continue 'seg;
                    }
                    Decoded::Incomplete => {
                        let need = frame::peek(&buf).map_or(FRAME_HEADER_LEN, |(len, _, _)| {
                            frame::frame_len((len as usize).min(MAX_RECORD_LEN))
                        });
                        if need <= buf.len() || off + need as u64 > seg_len {
                            return Err(corrupt(at, CorruptionKind::TruncatedRecord));
                        }
                        want = need;
                        continue 'fill;
                    }
                    Decoded::BadLength { len } => return Err(corrupt(at, CorruptionKind::BadLength { len })),
                    Decoded::ChecksumMismatch => return Err(corrupt(at, CorruptionKind::ChecksumMismatch)),
                }
            }
        }
    }
    let stop = if cur >= end { Stop::SegmentEnd } else { Stop::FileEnd };
    Ok(Walked { cur, offset: off, stop })
}

/// How many of the oldest `delivered` segments fall outside the newest
/// `keep` bytes of them.
fn beyond_bytes(delivered: &[Arc<Segment>], keep: u64) -> usize {
    let mut kept = 0u64;
    let mut keep_from = delivered.len();
    while keep_from > 0 && kept + delivered[keep_from - 1].len() <= keep {
        kept += delivered[keep_from - 1].len();
        keep_from -= 1;
    }
    keep_from
}
