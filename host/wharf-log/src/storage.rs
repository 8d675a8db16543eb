//! The I/O abstraction.
//!
//! Everything the log does to the disk goes through [`Storage`] and
//! [`StorageFile`]. [`FsStorage`] is the real implementation (std::fs, pread,
//! pwrite for segments, `O_APPEND` for new files written whole, `fdatasync`
//! via [`std::fs::File::sync_data`]).
//! [`crate::FaultStorage`] is an in-memory implementation that models what a
//! crash keeps and drops, used by the tests.
//!
//! Durability contract the log relies on (and the fault storage models):
//! - bytes written to a file survive a crash only once `sync_data` on that
//!   file returned Ok; un-synced bytes may survive partially (a prefix, whose
//!   last bytes may be garbage: a torn write);
//! - creating, renaming or removing a directory entry survives a crash only
//!   once `sync_dir` on the parent directory returned Ok.

use std::any::Any;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

/// How to open a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Existing file, reads only.
    Read,
    /// Existing file, reads and positioned writes ([`StorageFile::write_at`];
    /// no O_APPEND: the active segment's frames land on pre-zeroed space).
    Write,
    /// Create (or truncate) for reads and appends.
    Create,
    /// Create if missing, never truncate; reads and positioned writes
    /// ([`StorageFile::write_at`]) only, no appends. For small files
    /// rewritten in place (the published durable end).
    Overwrite,
}

/// A directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
}

/// An exclusive lock; released on drop.
pub type LockGuard = Box<dyn Any + Send + Sync>;

/// Filesystem operations used by the log.
pub trait Storage: Send + Sync + fmt::Debug {
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>>;
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// fsync a directory so entry creations/renames/removals in it persist.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    fn modified(&self, path: &Path) -> io::Result<SystemTime>;
    /// Takes an exclusive advisory lock on `path` (creating it).
    /// Fails with `ErrorKind::WouldBlock` if someone else holds it.
    fn lock(&self, path: &Path) -> io::Result<LockGuard>;
}

/// An open file.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send + Sync + fmt::Debug {
    fn len(&self) -> io::Result<u64>;
    /// Reads at `offset`; returns fewer bytes only at end of file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Appends all of `buf` at the end of the file.
    fn append(&self, buf: &[u8]) -> io::Result<()>;
    /// Writes all of `buf` at `offset` (pwrite), for files opened with
    /// [`OpenMode::Write`] or [`OpenMode::Overwrite`].
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// fdatasync.
    fn sync_data(&self) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// Opens (creating) a lock file for flock(2), its contents untouched.
pub(crate) fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)
}

/// A file opened on its first use, so that an idle partition holds no
/// descriptor for its active segment (issue 18: many namespaces). An open
/// that fails then (out of descriptors, say) fails that read or append
/// with the open's error, which the caller treats like any I/O error of
/// the call.
#[derive(Debug)]
pub(crate) struct LazyFile {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    mode: OpenMode,
    file: OnceLock<Arc<dyn StorageFile>>,
}

impl LazyFile {
    pub fn new(storage: Arc<dyn Storage>, path: PathBuf, mode: OpenMode) -> Self {
        Self { storage, path, mode, file: OnceLock::new() }
    }

    fn get(&self) -> io::Result<&Arc<dyn StorageFile>> {
        if let Some(f) = self.file.get() {
            return Ok(f);
        }
        let opened = self.storage.open(&self.path, self.mode)?;
        // Two first uses may race: one handle wins, the other is closed.
        Ok(self.file.get_or_init(|| opened))
    }
}

impl StorageFile for LazyFile {
    fn len(&self) -> io::Result<u64> {
        self.get()?.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.get()?.read_at(buf, offset)
    }
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        self.get()?.append(buf)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.get()?.write_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.get()?.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.get()?.set_len(len)
    }
}

/// Reads as many bytes as available at `offset` into `buf` (short only at EOF).
pub(crate) fn read_full_at(f: &dyn StorageFile, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Reads a whole file.
pub(crate) fn read_all(storage: &dyn Storage, path: &Path) -> io::Result<Vec<u8>> {
    let f = storage.open(path, OpenMode::Read)?;
    let len = usize::try_from(f.len()?).map_err(|_| io::Error::other("file too large"))?;
    let mut buf = vec![0u8; len];
    let n = read_full_at(&*f, &mut buf, 0)?;
    buf.truncate(n);
    Ok(buf)
}

/// Crash-safe replace: write `name.tmp`, fdatasync, rename over `name`,
/// fsync the directory. After a crash the file holds the old or the new
/// contents, never a mix.
pub(crate) fn write_atomic(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_via(storage, path, &tmp_path(path), bytes)
}

/// [`write_atomic`] through a given temporary file (in the same directory).
pub(crate) fn write_atomic_via(
    storage: &dyn Storage,
    path: &Path,
    tmp: &Path,
    bytes: &[u8],
) -> io::Result<()> {
    let f = storage.open(tmp, OpenMode::Create)?;
    f.append(bytes)?;
    f.sync_data()?;
    drop(f);
    storage.rename(tmp, path)?;
    storage.sync_dir(parent(path))
}

pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

pub(crate) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The real filesystem.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsStorage;

#[derive(Debug)]
struct FsFile {
    file: File,
}

impl StorageFile for FsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        (&self.file).write_all(buf)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

impl Storage for FsStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for e in fs::read_dir(path)? {
            let e = e?;
            out.push(DirEntry {
                name: e.file_name().to_string_lossy().into_owned(),
                is_dir: e.file_type()?.is_dir(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut o = OpenOptions::new();
        match mode {
            OpenMode::Read => o.read(true),
            OpenMode::Write => o.read(true).write(true),
            // O_APPEND excludes O_TRUNC in std; truncate explicitly.
            OpenMode::Create => o.read(true).append(true).create(true),
            OpenMode::Overwrite => o.read(true).write(true).create(true).truncate(false),
        };
        let file = o.open(path)?;
        if mode == OpenMode::Create {
            file.set_len(0)?;
        }
        Ok(Arc::new(FsFile { file }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
    fn modified(&self, path: &Path) -> io::Result<SystemTime> {
        fs::metadata(path)?.modified()
    }
    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        let f = open_lock_file(path)?;
        match f.try_lock() {
            Ok(()) => Ok(Box::new(f)),
            Err(TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}
