//! In-memory [`Storage`] with crash and fault injection, for tests.
//!
//! Model (see the contract in `storage.rs`):
//! - each file keeps its live bytes and its *durable* bytes (as of the last
//!   successful `sync_data`);
//! - the directory namespace has a live view and a durable view; `sync_dir`
//!   copies the live entries of that directory into the durable view.
//!   Directories themselves are always durable (a simplification);
//! - [`FaultStorage::crash`] replaces the live state by the durable one. Of
//!   the un-synced appended bytes of each file, a random prefix survives and
//!   with some probability its last bytes are garbage (a torn write);
//! - [`FaultStorage::crash_at_sync`] / [`FaultStorage::crash_at_op`] make the
//!   n-th sync (or mutating operation) fail and every later call fail too, as
//!   if the machine had stopped there; then call `crash`.
//! - `set_sync_delay` makes every sync sleep, to observe group commit.
//! - [`FaultStorage::set_capacity`] makes the store hold at most so many
//!   bytes: an append that does not fit writes what fits and fails with
//!   ENOSPC, like a full disk; [`FaultStorage::fail_creates_with`] makes
//!   file creation fail with an errno (EMFILE, say). Both are temporary:
//!   lift them and the store works again.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::storage::{DirEntry, LockGuard, OpenMode, Storage, StorageFile};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Default)]
struct NodeData {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Lowest offset rewritten (by truncation) since the last sync.
    dirty_from: Option<usize>,
    mtime: Option<SystemTime>,
}

#[derive(Debug, Default)]
struct Node(Mutex<NodeData>);

#[derive(Debug, Default)]
struct Namespace {
    live: BTreeMap<PathBuf, Arc<Node>>,
    durable: BTreeMap<PathBuf, Arc<Node>>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
}

#[derive(Debug, Default)]
struct Faults {
    crashed: bool,
    syncs: u64,
    ops: u64,
    /// Bytes returned by `read_at` (every read goes through it).
    bytes_read: u64,
    crash_at_sync: Option<u64>,
    crash_at_op: Option<u64>,
    sync_delay: Duration,
    capacity: Option<u64>,
    create_errno: Option<i32>,
}

#[derive(Debug, Default)]
struct Shared {
    ns: Mutex<Namespace>,
    faults: Mutex<Faults>,
}

impl Shared {
    fn crashed_err() -> io::Error {
        io::Error::other("injected crash: storage is down")
    }
    fn op(&self) -> io::Result<()> {
        let mut f = lock(&self.faults);
        if f.crashed {
            return Err(Self::crashed_err());
        }
        let n = f.ops;
        f.ops += 1;
        if f.crash_at_op == Some(n) {
            f.crashed = true;
            return Err(Self::crashed_err());
        }
        Ok(())
    }
    fn sync(&self) -> io::Result<Duration> {
        self.op()?;
        let mut f = lock(&self.faults);
        let n = f.syncs;
        f.syncs += 1;
        if f.crash_at_sync == Some(n) {
            f.crashed = true;
            return Err(Self::crashed_err());
        }
        Ok(f.sync_delay)
    }
    /// Bytes an append may still add under the capacity, if one is set.
    fn room(&self) -> Option<u64> {
        let capacity = lock(&self.faults).capacity?;
        let used: u64 = lock(&self.ns).live.values().map(|n| lock(&n.0).data.len() as u64).sum();
        Some(capacity.saturating_sub(used))
    }
    fn read_op(&self) -> io::Result<()> {
        if lock(&self.faults).crashed { Err(Self::crashed_err()) } else { Ok(()) }
    }
}

/// In-memory storage with crash simulation. Cloning gives another handle to
/// the same state.
#[derive(Clone, Debug, Default)]
pub struct FaultStorage {
    shared: Arc<Shared>,
}

fn not_found(p: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", p.display()))
}

fn parent_of(p: &Path) -> PathBuf {
    p.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Tiny deterministic PRNG (xorshift64*), so tests need no extra crate.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

impl FaultStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// The `n`-th sync call from now on (0-based, file or directory) fails,
    /// and the storage is down afterwards until [`FaultStorage::crash`].
    pub fn crash_at_sync(&self, n: u64) {
        let mut f = lock(&self.shared.faults);
        f.crash_at_sync = Some(f.syncs + n);
    }

    /// Same, counting every mutating operation (writes, syncs, truncations,
    /// renames, removals, creations).
    pub fn crash_at_op(&self, n: u64) {
        let mut f = lock(&self.shared.faults);
        f.crash_at_op = Some(f.ops + n);
    }

    /// Cancels pending crash points (does not revive a downed storage).
    pub fn clear_crash_points(&self) {
        let mut f = lock(&self.shared.faults);
        f.crash_at_op = None;
        f.crash_at_sync = None;
    }

    /// An independent deep copy of the whole state (live and durable).
    pub fn deep_copy(&self) -> FaultStorage {
        let ns = lock(&self.shared.ns);
        let mut copies: BTreeMap<*const Node, Arc<Node>> = BTreeMap::new();
        let mut copy = |n: &Arc<Node>| {
            copies
                .entry(Arc::as_ptr(n))
                .or_insert_with(|| {
                    let d = lock(&n.0);
                    Arc::new(Node(Mutex::new(NodeData {
                        data: d.data.clone(),
                        durable: d.durable.clone(),
                        dirty_from: d.dirty_from,
                        mtime: d.mtime,
                    })))
                })
                .clone()
        };
        let live = ns.live.iter().map(|(p, n)| (p.clone(), copy(n))).collect();
        let durable = ns.durable.iter().map(|(p, n)| (p.clone(), copy(n))).collect();
        let out = FaultStorage::new();
        {
            let mut o = lock(&out.shared.ns);
            o.live = live;
            o.durable = durable;
            o.dirs = ns.dirs.clone();
        }
        out
    }

    /// Every sync sleeps this long (to make group commit observable).
    /// At most `bytes` in all files together (`None`: unlimited).
    pub fn set_capacity(&self, bytes: Option<u64>) {
        lock(&self.shared.faults).capacity = bytes;
    }

    /// Creating a file fails with `errno` (`None`: it works again).
    pub fn fail_creates_with(&self, errno: Option<i32>) {
        lock(&self.shared.faults).create_errno = errno;
    }

    /// Bytes held by all files together.
    pub fn used_bytes(&self) -> u64 {
        lock(&self.shared.ns).live.values().map(|n| lock(&n.0).data.len() as u64).sum()
    }

    pub fn set_sync_delay(&self, d: Duration) {
        lock(&self.shared.faults).sync_delay = d;
    }

    /// Whether an injected crash point was hit.
    pub fn is_down(&self) -> bool {
        lock(&self.shared.faults).crashed
    }

    /// Bytes read from files so far (to tell what recovery reads).
    pub fn bytes_read(&self) -> u64 {
        lock(&self.shared.faults).bytes_read
    }

    /// Number of syncs (file + directory) performed so far.
    pub fn syncs(&self) -> u64 {
        lock(&self.shared.faults).syncs
    }

    /// Simulates power loss: only durable state survives, plus a random torn
    /// prefix of each file's un-synced appended bytes (chosen by `seed`).
    /// Handles opened before the crash become detached from the namespace.
    pub fn crash(&self, seed: u64) {
        let mut rng = Rng::new(seed);
        let mut ns = lock(&self.shared.ns);
        let mut fresh = BTreeMap::new();
        for (path, node) in &ns.durable {
            let d = lock(&node.0);
            let mut data = d.durable.clone();
            let appended_only = d.dirty_from.is_none_or(|x| x >= d.durable.len());
            if appended_only && d.data.len() > d.durable.len() {
                let tail = &d.data[d.durable.len()..];
                let keep = rng.below(tail.len() as u64 + 1) as usize;
                data.extend_from_slice(&tail[..keep]);
                if keep > 0 && rng.below(3) == 0 {
                    let g = keep.min(8);
                    let n = data.len();
                    for b in &mut data[n - g..] {
                        *b = rng.next_u64() as u8;
                    }
                }
            }
            let node =
                Node(Mutex::new(NodeData { durable: data.clone(), data, dirty_from: None, mtime: d.mtime }));
            fresh.insert(path.clone(), Arc::new(node));
        }
        ns.live = fresh.clone();
        ns.durable = fresh;
        ns.locks.clear();
        let mut f = lock(&self.shared.faults);
        f.crashed = false;
        f.crash_at_op = None;
        f.crash_at_sync = None;
    }

    /// Live contents of a file (for tests that corrupt bytes on "disk").
    pub fn read(&self, path: &Path) -> Option<Vec<u8>> {
        let ns = lock(&self.shared.ns);
        ns.live.get(path).map(|n| lock(&n.0).data.clone())
    }

    /// Overwrites a file's bytes, live and durable (simulated bit rot).
    pub fn overwrite(&self, path: &Path, bytes: Vec<u8>) {
        let ns = lock(&self.shared.ns);
        if let Some(n) = ns.live.get(path) {
            let mut d = lock(&n.0);
            d.durable = bytes.clone();
            d.data = bytes;
            d.dirty_from = None;
        }
    }
}

#[derive(Debug)]
struct MemFile {
    node: Arc<Node>,
    shared: Arc<Shared>,
    writable: bool,
}

impl MemFile {
    /// Writes `buf` at `off` (the end for an append), filling any gap with
    /// zeros. Growing the file takes room on the disk: without enough, a
    /// short write, then ENOSPC; rewriting bytes in place needs none.
    fn write(&self, buf: &[u8], off: Option<usize>) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only handle"));
        }
        self.shared.op()?;
        let room = self.shared.room();
        let mut d = lock(&self.node.0);
        let off = off.unwrap_or(d.data.len());
        let limit = room
            .map_or(usize::MAX, |r| d.data.len().saturating_add(usize::try_from(r).unwrap_or(usize::MAX)));
        let fits = limit.saturating_sub(off).min(buf.len());
        if off < d.data.len() {
            // Rewriting bytes in place: like a truncation, the rewritten
            // range is not durable until the next sync.
            d.dirty_from = Some(d.dirty_from.map_or(off, |x| x.min(off)));
        }
        if fits > 0 {
            let end = off + fits;
            if d.data.len() < end {
                d.data.resize(end, 0);
            }
            d.data[off..end].copy_from_slice(&buf[..fits]);
        }
        d.mtime = Some(SystemTime::now());
        if fits < buf.len() {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC, after a short write
        }
        Ok(())
    }
}

impl StorageFile for MemFile {
    fn len(&self) -> io::Result<u64> {
        self.shared.read_op()?;
        Ok(lock(&self.node.0).data.len() as u64)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.shared.read_op()?;
        let d = lock(&self.node.0);
        let off = usize::try_from(offset).unwrap_or(usize::MAX);
        if off >= d.data.len() {
            return Ok(0);
        }
        let n = buf.len().min(d.data.len() - off);
        buf[..n].copy_from_slice(&d.data[off..off + n]);
        lock(&self.shared.faults).bytes_read += n as u64;
        Ok(n)
    }
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        self.write(buf, None)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let off = usize::try_from(offset).map_err(|_| io::Error::other("too large"))?;
        self.write(buf, Some(off))
    }
    fn sync_data(&self) -> io::Result<()> {
        let delay = self.shared.sync()?;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut d = lock(&self.node.0);
        let keep = d.dirty_from.unwrap_or(usize::MAX).min(d.durable.len()).min(d.data.len());
        d.durable.truncate(keep);
        let more = d.data[keep..].to_vec();
        d.durable.extend_from_slice(&more);
        d.dirty_from = None;
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.shared.op()?;
        let mut d = lock(&self.node.0);
        let len = usize::try_from(len).map_err(|_| io::Error::other("too large"))?;
        d.data.resize(len, 0);
        d.dirty_from = Some(d.dirty_from.map_or(len, |x| x.min(len)));
        Ok(())
    }
}

struct MemLock {
    shared: Arc<Shared>,
    path: PathBuf,
}

impl Drop for MemLock {
    fn drop(&mut self) {
        lock(&self.shared.ns).locks.remove(&self.path);
    }
}

impl Storage for FaultStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.shared.op()?;
        let mut ns = lock(&self.shared.ns);
        let mut p = PathBuf::new();
        for c in path.components() {
            p.push(c);
            ns.dirs.insert(p.clone());
        }
        Ok(())
    }
    fn exists(&self, path: &Path) -> bool {
        let ns = lock(&self.shared.ns);
        ns.live.contains_key(path) || ns.dirs.contains(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        self.shared.read_op()?;
        let ns = lock(&self.shared.ns);
        if !ns.dirs.contains(path) {
            return Err(not_found(path));
        }
        let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
        let mut out: Vec<DirEntry> = ns
            .live
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| name(p).map(|name| DirEntry { name, is_dir: false }))
            .chain(
                ns.dirs
                    .iter()
                    .filter(|p| p.parent() == Some(path))
                    .filter_map(|p| name(p).map(|name| DirEntry { name, is_dir: true })),
            )
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let existing = mode == OpenMode::Overwrite && lock(&self.shared.ns).live.contains_key(path);
        let node = if mode == OpenMode::Create || (mode == OpenMode::Overwrite && !existing) {
            self.shared.op()?;
            if let Some(errno) = lock(&self.shared.faults).create_errno {
                return Err(io::Error::from_raw_os_error(errno));
            }
            let mut ns = lock(&self.shared.ns);
            if !ns.dirs.contains(&parent_of(path)) {
                return Err(not_found(&parent_of(path)));
            }
            let node = ns.live.entry(path.to_path_buf()).or_default().clone();
            {
                let mut d = lock(&node.0);
                d.data.clear();
                d.dirty_from = Some(0);
                d.mtime = Some(SystemTime::now());
            }
            node
        } else {
            self.shared.read_op()?;
            let ns = lock(&self.shared.ns);
            ns.live.get(path).cloned().ok_or_else(|| not_found(path))?
        };
        Ok(Arc::new(MemFile { node, shared: self.shared.clone(), writable: mode != OpenMode::Read }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.shared.op()?;
        let mut ns = lock(&self.shared.ns);
        let node = ns.live.remove(from).ok_or_else(|| not_found(from))?;
        ns.live.insert(to.to_path_buf(), node);
        Ok(())
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.shared.op()?;
        let mut ns = lock(&self.shared.ns);
        ns.live.remove(path).map(|_| ()).ok_or_else(|| not_found(path))
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let delay = self.shared.sync()?;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut ns = lock(&self.shared.ns);
        ns.durable.retain(|p, _| p.parent() != Some(path));
        let entries: Vec<_> = ns
            .live
            .iter()
            .filter(|(p, _)| p.parent() == Some(path))
            .map(|(p, n)| (p.clone(), n.clone()))
            .collect();
        ns.durable.extend(entries);
        Ok(())
    }
    fn modified(&self, path: &Path) -> io::Result<SystemTime> {
        let ns = lock(&self.shared.ns);
        let n = ns.live.get(path).ok_or_else(|| not_found(path))?;
        Ok(lock(&n.0).mtime.unwrap_or(SystemTime::UNIX_EPOCH))
    }
    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        let mut ns = lock(&self.shared.ns);
        if !ns.locks.insert(path.to_path_buf()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(Box::new(MemLock { shared: self.shared.clone(), path: path.to_path_buf() }))
    }
}
