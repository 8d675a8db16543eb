//! A follower: the read side of a partition whose writer is another process
//! (split roles: the processor appends, the consumer delivers).
//!
//! A follower holds `<dir>/FOLLOWER.LOCK` (one follower per partition; a
//! second one gets [`LogError::FollowerLocked`]), never the writer's `LOCK`.
//! It never writes, truncates or deletes segment files; the only file it
//! writes is the watermark (crash-safely, through its own temporary file
//! `watermark.follower-tmp`).
//!
//! # What it reads: the durable end
//!
//! The follower reads only below its *durable end* ([`DurableEnd`]: a
//! segment, an offset in it, and the sequence there), which only grows:
//!
//! - the value the writer publishes in `durable` (see `durable_end.rs`;
//!   the writer needs `LogOptions::publish_durable_end`), re-read on every
//!   `read`, `refresh` and `next_seq`;
//! - if there is no valid publication (no publishing writer yet, or a crash
//!   lost the unsynced file), the base of the last segment: a segment only
//!   exists once every earlier one was sealed (fdatasync'ed completely), so
//!   whatever precedes the last segment is durable. The last segment itself
//!   stays unread until a writer publishes.
//!
//! Bytes at or beyond the durable end are never interpreted: they may be a
//! write in progress or a torn tail, and the writer's recovery decides
//! about them. Below it, every frame is validated as in `Partition::read`
//! and every problem is corruption, with segment and offset: a bad CRC or
//! length, a frame crossing the durable end or the end of a sealed segment
//! (`truncated_record`), a wrong sequence, a segment chain that jumps
//! without a salvage-manifest entry, or a durable end that disagrees with
//! the frames before it (`sequence_gap`).
//!
//! # Segments coming and going
//!
//! The segment list is re-read when the durable end names a segment the
//! follower does not know (a roll) and when a segment it needs is gone.
//! The writer deletes segments wholly below the watermark (GC); a follower
//! skips a gone range when it lies below the watermark (or below the first
//! segment seen at open, as `Partition::read` does), and reports
//! `sequence_gap` corruption when a segment at or above its read position
//! is missing. An open handle keeps a deleted segment readable, so a read
//! racing GC returns the right bytes or skips; after `advance_watermark`
//! the follower closes its handles on segments wholly below the watermark,
//! so their space is freed once the writer deletes them.
//!
//! # Watermark
//!
//! `advance_watermark(to)` persists like `Partition::advance_watermark`
//! (ignores `to <= current`, rejects `to` beyond the durable end), but
//! never deletes anything: the writer picks the value up with
//! `Partition::refresh_watermark` and runs GC. One process owns the
//! watermark: in split roles the writer must not call `advance_watermark`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::durable_end::{self, DurableEnd};
use crate::error::{Corruption, CorruptionKind, LogError};
use crate::frame::{self, Decoded, FRAME_HEADER_LEN, MAX_RECORD_LEN};
use crate::manifest::{self, SalvageManifest};
use crate::partition::{Record, create_dir_durably, lock};
use crate::scan;
use crate::segment::{self, HEADER_LEN, HeaderError};
use crate::storage::{FsStorage, LockGuard, OpenMode, Storage, StorageFile, read_full_at};
use crate::watermark;

/// The follower's lock file in the partition directory.
pub const FOLLOWER_LOCK_FILE: &str = "FOLLOWER.LOCK";
const READ_CHUNK: usize = 256 << 10;
/// Re-listings of the segment directory tolerated within one read while
/// files disappear under it (GC racing the read).
const MAX_RELISTS: usize = 4;

/// Positions of a follower.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FollowerStats {
    /// Records `< next_seq` are durable and readable (the durable end).
    pub next_seq: u64,
    pub first_seq: u64,
    pub watermark: u64,
    /// Segment files last seen in the directory.
    pub segments: usize,
    /// The durable end comes from a writer's publication. False: no writer
    /// has published (or a crash lost it), only sealed segments are read;
    /// a writer without `publish_durable_end` keeps it false.
    pub published: bool,
}

/// The follower's view of the durable end.
#[derive(Debug)]
struct View {
    end: DurableEnd,
    published: bool,
    /// Handle on `durable` (re-opened by path when it shows nothing newer:
    /// the file may have been replaced).
    file: Option<Arc<dyn StorageFile>>,
}

/// A segment file as the follower knows it.
#[derive(Debug)]
struct Seg {
    base: u64,
    path: PathBuf,
    /// Opened (and its header checked) on first use.
    file: Option<Arc<dyn StorageFile>>,
    /// Length, once known to be sealed.
    sealed_len: Option<u64>,
    /// Sequence after its last record, once read to its sealed end.
    end_seq: Option<u64>,
    /// Sparse (seq, offset) index, ascending, built while reading.
    index: Vec<(u64, u64)>,
}

impl Seg {
    fn new(base: u64, path: PathBuf) -> Seg {
        Seg { base, path, file: None, sealed_len: None, end_seq: None, index: Vec::new() }
    }

    fn seek(&self, seq: u64) -> (u64, u64) {
        let i = self.index.partition_point(|&(s, _)| s <= seq);
        if i == 0 { (self.base, HEADER_LEN as u64) } else { self.index[i - 1] }
    }
}

/// Where the previous read stopped: the frame of `seq` is at `offset` in
/// segment `base`.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    seq: u64,
    base: u64,
    offset: u64,
}

#[derive(Debug)]
struct Reader {
    segs: Vec<Seg>,
    /// Sequences below it are gone by design (below the first segment at
    /// open, or deleted below the watermark); reads skip them.
    floor: u64,
    cursor: Option<Cursor>,
    buf: Vec<u8>,
}

/// What a read needs besides the reader state.
struct Ctx<'a> {
    storage: &'a dyn Storage,
    dir: &'a Path,
    manifest: &'a SalvageManifest,
    watermark: u64,
    end: DurableEnd,
}

/// The read side of a partition written by another process.
/// `Send + Sync`; share it with `Arc`.
pub struct Follower {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    manifest: SalvageManifest,
    view: Mutex<View>,
    reader: Mutex<Reader>,
    watermark: Mutex<u64>,
    watermark_cache: AtomicU64,
    _lock: LockGuard,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("dir", &self.dir)
            .field("durable_end", &lock(&self.view).end)
            .field("watermark", &self.watermark())
            .finish_non_exhaustive()
    }
}

fn corrupt(file: &Path, offset: u64, kind: CorruptionKind) -> LogError {
    LogError::Corrupt(Corruption { file: file.to_path_buf(), offset, kind })
}

impl Follower {
    /// Opens the follower of the partition in `dir` on the real filesystem
    /// (creating the directory if the writer has not yet).
    pub fn open(dir: &Path) -> Result<Follower, LogError> {
        Self::open_with(Arc::new(FsStorage), dir)
    }

    /// Same, on any [`Storage`].
    pub fn open_with(storage: Arc<dyn Storage>, dir: &Path) -> Result<Follower, LogError> {
        let st = &*storage;
        create_dir_durably(st, dir)?;
        let guard = crate::tree_lock::lock_in(st, dir, FOLLOWER_LOCK_FILE, || LogError::FollowerLocked {
            dir: dir.to_path_buf(),
        })?;
        let tmp = dir.join(watermark::FOLLOWER_TMP_FILE);
        if st.exists(&tmp) {
            st.remove_file(&tmp).map_err(LogError::io("remove", &tmp))?;
        }
        let wm = watermark::load(st, dir)?;
        let manifest = manifest::load(st, dir)?;
        let segs: Vec<Seg> =
            scan::list_segments(st, dir)?.into_iter().map(|(base, path)| Seg::new(base, path)).collect();
        let floor = segs.first().map_or(0, |s| s.base);
        let f = Follower {
            dir: dir.to_path_buf(),
            storage: storage.clone(),
            manifest,
            view: Mutex::new(View {
                // Nothing is known durable yet: segment 0 up to its header.
                end: DurableEnd { base_seq: 0, offset: HEADER_LEN as u64, next_seq: 0 },
                published: false,
                file: None,
            }),
            reader: Mutex::new(Reader { segs, floor, cursor: None, buf: Vec::new() }),
            watermark: Mutex::new(wm),
            watermark_cache: AtomicU64::new(wm),
            _lock: guard,
        };
        let end = f.refresh_end()?;
        tracing::info!(
            dir = %dir.display(),
            next_seq = end.next_seq,
            watermark = wm,
            published = lock(&f.view).published,
            "follower opened"
        );
        Ok(f)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-reads what the writer has made durable; returns the durable end
    /// (every record `<` it is readable).
    pub fn refresh(&self) -> Result<u64, LogError> {
        self.refresh_end().map(|e| e.next_seq)
    }

    /// [`Follower::refresh`], keeping the last known value (and logging) if
    /// it fails; `read` reports the error.
    pub fn next_seq(&self) -> u64 {
        match self.refresh_end() {
            Ok(e) => e.next_seq,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "follower could not refresh the durable end");
                lock(&self.view).end.next_seq
            }
        }
    }

    fn refresh_end(&self) -> Result<DurableEnd, LogError> {
        let st = &*self.storage;
        let mut v = lock(&self.view);
        let path = durable_end::path(&self.dir);
        if let Some(f) = v.file.clone()
            && let Some(e) = durable_end::read(&*f).map_err(LogError::io("read", &path))?
            && e.key() > v.end.key()
        {
            v.end = e;
            v.published = true;
            return Ok(e);
        }
        // Nothing newer through the handle: the file may have appeared or
        // been replaced since, look it up again.
        v.file = durable_end::open(st, &self.dir)?;
        let published = match &v.file {
            Some(f) => durable_end::read(&**f).map_err(LogError::io("read", &path))?,
            None => None,
        };
        match published {
            Some(e) => {
                if e.key() > v.end.key() {
                    v.end = e;
                }
                v.published = true;
            }
            None => {
                // No valid publication: everything before the last segment
                // is sealed, hence durable.
                v.published = false;
                if let Some(&(base, _)) = scan::list_segments(st, &self.dir)?.last() {
                    let e = DurableEnd { base_seq: base, offset: HEADER_LEN as u64, next_seq: base };
                    if e.key() > v.end.key() {
                        v.end = e;
                    }
                }
            }
        }
        Ok(v.end)
    }

    /// Lowest sequence still stored (the first segment file's base; the
    /// durable end if there is none).
    pub fn first_seq(&self) -> u64 {
        let mut r = lock(&self.reader);
        if let Err(e) = r.relist(&*self.storage, &self.dir, self.watermark()) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "follower could not list segments");
        }
        r.segs.first().map_or_else(|| lock(&self.view).end.next_seq, |s| s.base)
    }

    /// All seq < watermark are delivered.
    pub fn watermark(&self) -> u64 {
        self.watermark_cache.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> FollowerStats {
        let next_seq = self.next_seq();
        let first_seq = self.first_seq();
        let segments = lock(&self.reader).segs.len();
        FollowerStats {
            next_seq,
            first_seq,
            watermark: self.watermark(),
            segments,
            published: lock(&self.view).published,
        }
    }

    /// Records with seq in `[from_seq, durable end)`: at most
    /// `max_records`, stopping before `max_bytes` of payload would be
    /// exceeded (but at least one record if any). Same contract as
    /// `Partition::read`: sequences that no longer exist are skipped and
    /// records carry their seq.
    pub fn read(&self, from_seq: u64, max_records: usize, max_bytes: usize) -> Result<Vec<Record>, LogError> {
        let end = self.refresh_end()?;
        let mut r = lock(&self.reader);
        let ctx = Ctx {
            storage: &*self.storage,
            dir: &self.dir,
            manifest: &self.manifest,
            watermark: self.watermark(),
            end,
        };
        r.read(&ctx, from_seq, max_records, max_bytes)
    }

    /// Persists a new delivered watermark crash-safely (a value not above
    /// the current one is ignored). Errors if `to` exceeds the durable end.
    /// Deletes nothing: the writer's `refresh_watermark` does the GC.
    pub fn advance_watermark(&self, to: u64) -> Result<(), LogError> {
        let mut wm = lock(&self.watermark);
        if to <= *wm {
            return Ok(());
        }
        let stored = watermark::load(&*self.storage, &self.dir)?;
        let to = if stored >= to {
            stored
        } else {
            let end = self.refresh_end()?;
            if to > end.next_seq {
                return Err(LogError::WatermarkBeyondEnd { requested: to, acked: end.next_seq });
            }
            watermark::store_as_follower(&*self.storage, &self.dir, to)?;
            to
        };
        *wm = to;
        self.watermark_cache.store(to, Ordering::Release);
        drop(wm);
        lock(&self.reader).close_below(to);
        Ok(())
    }
}

impl Reader {
    /// Re-reads the segment list, keeping what is known about segments
    /// still there. Raises the floor over segments gone below the
    /// watermark (GC); other disappearances are left for `read` to report.
    fn relist(&mut self, st: &dyn Storage, dir: &Path, wm_cached: u64) -> Result<(), LogError> {
        let listed = scan::list_segments(st, dir)?;
        let mut old = std::mem::take(&mut self.segs).into_iter().peekable();
        for (base, path) in listed {
            while old.peek().is_some_and(|s| s.base < base) {
                old.next();
            }
            match old.peek() {
                Some(s) if s.base == base => self.segs.extend(old.next()),
                _ => self.segs.push(Seg::new(base, path)),
            }
        }
        if let Some(first) = self.segs.first().map(|s| s.base)
            && first > self.floor
        {
            let wm = wm_cached.max(watermark::load(st, dir)?);
            if first <= wm {
                self.floor = first;
            }
        }
        if let Some(c) = self.cursor
            && !self.segs.iter().any(|s| s.base == c.base)
        {
            self.cursor = None;
        }
        Ok(())
    }

    /// Closes handles on segments wholly below `wm` (the writer may delete
    /// them; an open handle would keep their space allocated).
    fn close_below(&mut self, wm: u64) {
        for i in 1..self.segs.len() {
            if self.segs[i].base <= wm {
                self.segs[i - 1].file = None;
            }
        }
    }

    fn read(
        &mut self,
        ctx: &Ctx<'_>,
        from_seq: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        let end = ctx.end;
        let limit = end.next_seq;
        let mut out = Vec::new();
        if max_records == 0 || from_seq >= limit {
            return Ok(out);
        }
        let mut relists = 0;
        if self.segs.last().is_none_or(|s| s.base < end.base_seq) {
            self.relist(ctx.storage, ctx.dir, ctx.watermark)?;
            relists += 1;
        }
        let mut bytes = 0usize;
        let mut pos = from_seq.max(self.floor);
        while out.len() < max_records && pos < limit {
            let Some(i) = self.segs.partition_point(|s| s.base <= pos).checked_sub(1) else {
                // At or above the floor but before every segment: gone.
                if relists < MAX_RELISTS {
                    relists += 1;
                    self.relist(ctx.storage, ctx.dir, ctx.watermark)?;
                    pos = pos.max(self.floor);
                    continue;
                }
                return Err(self.missing(ctx, pos, 0));
            };
            if let Some(e) = self.segs[i].end_seq
                && pos >= e
            {
                // Wholly read before: go on at the next segment.
                match self.next_base(ctx, i, e)? {
                    Some(next) => pos = pos.max(next),
                    None if relists < MAX_RELISTS => {
                        relists += 1;
                        self.relist(ctx.storage, ctx.dir, ctx.watermark)?;
                    }
                    None => return Err(self.missing(ctx, e, i + 1)),
                }
                continue;
            }
            let seg_base = self.segs[i].base;
            if seg_base > end.base_seq {
                break; // not published yet (cannot hold pos < limit)
            }
            let file = match self.segs[i].file.clone() {
                Some(f) => f,
                None => match open_segment(ctx.storage, &self.segs[i])? {
                    Some(f) => {
                        self.segs[i].file = Some(f.clone());
                        f
                    }
                    None if relists < MAX_RELISTS => {
                        // Deleted since we listed: find out what is left.
                        relists += 1;
                        self.relist(ctx.storage, ctx.dir, ctx.watermark)?;
                        pos = pos.max(self.floor);
                        continue;
                    }
                    None => {
                        return Err(LogError::io("open", &self.segs[i].path)(
                            std::io::ErrorKind::NotFound.into(),
                        ));
                    }
                },
            };
            // How far this segment may be read.
            let (bound, bound_seq) = if seg_base < end.base_seq {
                let len = match self.segs[i].sealed_len {
                    Some(l) => l,
                    None => {
                        let l = file.len().map_err(LogError::io("stat", &self.segs[i].path))?;
                        self.segs[i].sealed_len = Some(l);
                        l
                    }
                };
                (len, None)
            } else {
                (end.offset, Some(end.next_seq))
            };
            let start = match self.cursor {
                Some(c) if c.seq == pos && c.base == seg_base && c.offset <= bound => (c.seq, c.offset),
                _ => self.segs[i].seek(pos),
            };
            let walked = self.walk(
                &*file,
                i,
                start,
                Walk { pos, limit, bound, max_records, max_bytes },
                &mut out,
                &mut bytes,
            )?;
            self.cursor = Some(Cursor { seq: walked.cur, base: seg_base, offset: walked.offset });
            if !walked.at_bound {
                break; // a limit was reached
            }
            match bound_seq {
                Some(n) => {
                    if walked.cur != n {
                        // The published end disagrees with the frames.
                        return Err(corrupt(
                            &self.segs[i].path,
                            bound,
                            CorruptionKind::SequenceGap { expected: n, found: walked.cur },
                        ));
                    }
                    break;
                }
                None => {
                    self.segs[i].end_seq = Some(walked.cur);
                    pos = pos.max(walked.cur);
                }
            }
        }
        Ok(out)
    }

    /// The base of the segment after `i`, checking the chain from `end`
    /// (the end of segment `i`); `None` if no later segment is known.
    fn next_base(&self, ctx: &Ctx<'_>, i: usize, end: u64) -> Result<Option<u64>, LogError> {
        let Some(next) = self.segs.get(i + 1) else { return Ok(None) };
        if next.base != end && !ctx.manifest.allows_gap(end, next.base) {
            return Err(corrupt(
                &next.path,
                0,
                CorruptionKind::SequenceGap { expected: end, found: next.base },
            ));
        }
        Ok(Some(next.base))
    }

    /// A segment holding `pos` (at or above the floor) is gone: the chain
    /// jumps from `pos` to the segment at index `i` (or to the durable end).
    fn missing(&self, ctx: &Ctx<'_>, pos: u64, i: usize) -> LogError {
        let (file, found) = match self.segs.get(i) {
            Some(s) => (s.path.clone(), s.base),
            None => (ctx.dir.join(segment::segment_file_name(pos)), ctx.end.next_seq),
        };
        corrupt(&file, 0, CorruptionKind::SequenceGap { expected: pos, found })
    }

    /// Walks the frames of segment `i` from `start` = (seq, offset) up to
    /// `w.bound`, returning records `>= w.pos` and `< w.limit`.
    fn walk(
        &mut self,
        file: &dyn StorageFile,
        i: usize,
        start: (u64, u64),
        w: Walk,
        out: &mut Vec<Record>,
        bytes: &mut usize,
    ) -> Result<Walked, LogError> {
        let seg = &mut self.segs[i];
        let buf = &mut self.buf;
        let (mut cur, mut off) = start;
        let mut want = READ_CHUNK;
        while off < w.bound {
            want = want.min((w.bound - off) as usize).max(1);
            buf.resize(want, 0);
            let got = read_full_at(file, buf, off).map_err(LogError::io("read", &seg.path))?;
            if got < want {
                // Bytes below the durable end (or a sealed length) are gone.
                return Err(corrupt(&seg.path, off + got as u64, CorruptionKind::TruncatedRecord));
            }
            let mut p = 0usize;
            loop {
                let at = off + p as u64;
                if out.len() >= w.max_records || cur >= w.limit {
                    return Ok(Walked { cur, offset: at, at_bound: false });
                }
                if p == buf.len() {
                    off = at;
                    want = READ_CHUNK;
                    break;
                }
                match frame::decode(&buf[p..]) {
                    Decoded::Record { seq, payload, frame_len, .. } => {
                        if seq != cur {
                            return Err(corrupt(
                                &seg.path,
                                at,
                                CorruptionKind::SequenceGap { expected: cur, found: seq },
                            ));
                        }
                        if seq >= w.pos {
                            if !out.is_empty() && *bytes + payload.len() > w.max_bytes {
                                return Ok(Walked { cur, offset: at, at_bound: false });
                            }
                            *bytes += payload.len();
                            out.push(Record { seq, payload: payload.to_vec() });
                        }
                        segment::maybe_index(&mut seg.index, seq, at);
                        cur += 1;
                        p += frame_len;
                    }
                    Decoded::Incomplete => {
                        let need = frame::peek(&buf[p..]).map_or(FRAME_HEADER_LEN, |(len, _, _)| {
                            frame::frame_len((len as usize).min(MAX_RECORD_LEN))
                        });
                        if at + need as u64 > w.bound {
                            // A frame crossing the durable end or the end of
                            // a sealed segment.
                            return Err(corrupt(&seg.path, at, CorruptionKind::TruncatedRecord));
                        }
                        off = at;
                        want = need.max(READ_CHUNK);
                        break;
                    }
                    Decoded::BadLength { len } => {
                        return Err(corrupt(&seg.path, at, CorruptionKind::BadLength { len }));
                    }
                    Decoded::ChecksumMismatch => {
                        return Err(corrupt(&seg.path, at, CorruptionKind::ChecksumMismatch));
                    }
                }
            }
        }
        Ok(Walked { cur, offset: off, at_bound: true })
    }
}

/// Limits of one walk over a segment.
#[derive(Clone, Copy, Debug)]
struct Walk {
    pos: u64,
    limit: u64,
    bound: u64,
    max_records: usize,
    max_bytes: usize,
}

/// Where a walk stopped: before the frame of `cur`, at `offset`;
/// `at_bound` if it read everything up to the bound.
#[derive(Clone, Copy, Debug)]
struct Walked {
    cur: u64,
    offset: u64,
    at_bound: bool,
}

/// Opens a segment and checks its header; `None` if the file is gone.
fn open_segment(st: &dyn Storage, seg: &Seg) -> Result<Option<Arc<dyn StorageFile>>, LogError> {
    let file = match st.open(&seg.path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::Io { path: seg.path.clone(), op: "open", source: e }),
    };
    let mut h = [0u8; HEADER_LEN];
    let n = read_full_at(&*file, &mut h, 0).map_err(LogError::io("read", &seg.path))?;
    let reason = match segment::decode_header(&h[..n]) {
        Ok(b) if b == seg.base => return Ok(Some(file)),
        Ok(b) => format!("base seq {b} disagrees with the file name"),
        Err(HeaderError::Short) => "short header".to_string(),
        Err(HeaderError::Bad(r)) => r,
    };
    Err(corrupt(&seg.path, 0, CorruptionKind::BadHeader { reason }))
}
