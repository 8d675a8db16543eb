//! One lock for a whole tree of partitions (issue 18: many namespaces).
//!
//! A process that owns every partition under a directory (a sidecar with
//! every role) takes `<root>/TREE.LOCK` exclusively, once, with
//! [`lock_tree`], and opens its partitions with [`DirLock::Tree`]: they
//! hold no descriptor of their own, so an idle partition costs no fd for
//! its lock. Such an open still takes the partition's own `LOCK` for a
//! moment, so it fails while a tool (salvage) holds it.
//!
//! Every other opener — a partition opened with [`DirLock::Own`], salvage
//! — holds the partition's own `LOCK` as before and, besides, a *shared*
//! lock on the `TREE.LOCK` of each ancestor that has one, so it and a tree
//! owner exclude each other (either side gets [`LogError::Locked`]). Shared
//! tree locks are held once per process and root (a registry of weak
//! handles): a process of a split role pays one descriptor per tree, not
//! per partition.
//!
//! Locks are flock(2) locks: per open file description, dropped by the
//! kernel when the process dies. Inside the tree owner's own process,
//! where no flock is held per partition, a registry of the partition
//! directories open under its trees keeps a second open of the same one
//! out (`Locked`), whatever its mode.
//!
//! Paths are compared canonicalized (symlinks and `..` resolved). Trees
//! exist on the real filesystem only: a partition whose directory is not
//! there (an in-memory [`Storage`]) holds just its own lock.

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use crate::error::LogError;
use crate::options::DirLock;
use crate::storage::{LockGuard, Storage};

/// The tree lock's file name, in the tree's root.
pub const TREE_LOCK_FILE: &str = "TREE.LOCK";

/// A partition's own lock file.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// Takes `<dir>/LOCK` (`Locked` if another opener holds it).
pub(crate) fn lock_dir(st: &dyn Storage, dir: &Path) -> Result<LockGuard, LogError> {
    lock_in(st, dir, LOCK_FILE, || LogError::Locked { dir: dir.to_path_buf() })
}

/// Takes the lock file `name` in `dir`; `held()` is the error when another
/// opener holds it.
pub(crate) fn lock_in(
    st: &dyn Storage,
    dir: &Path,
    name: &str,
    held: impl FnOnce() -> LogError,
) -> Result<LockGuard, LogError> {
    let path = dir.join(name);
    st.lock(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => held(),
        _ => LogError::io("lock", path)(e),
    })
}

/// Roots this process holds exclusively, shared tree locks it holds, and
/// partition directories open under its own roots.
#[derive(Default)]
struct Registry {
    owned: Vec<PathBuf>,
    shared: HashMap<PathBuf, Weak<File>>,
    open: std::collections::HashSet<PathBuf>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn with_registry<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    let mut guard = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Registry::default))
}

/// An exclusive lock on a tree's root; released on drop.
#[derive(Debug)]
pub struct TreeLock {
    root: PathBuf,
    _file: File,
}

impl Drop for TreeLock {
    fn drop(&mut self) {
        with_registry(|r| r.owned.retain(|p| p != &self.root));
    }
}

fn canonical(dir: &Path) -> Result<PathBuf, LogError> {
    std::fs::canonicalize(dir).map_err(LogError::io("canonicalize", dir))
}

fn open_lock_file(path: &Path) -> Result<File, LogError> {
    crate::storage::open_lock_file(path).map_err(LogError::io("open", path))
}

fn locked(dir: &Path, path: &Path, e: TryLockError) -> LogError {
    match e {
        TryLockError::WouldBlock => LogError::Locked { dir: dir.to_path_buf() },
        TryLockError::Error(e) => LogError::io("lock", path)(e),
    }
}

/// Takes `<root>/TREE.LOCK` exclusively (creating `root` if missing).
/// `Locked` if another process holds it or any partition under it.
pub fn lock_tree(root: &Path) -> Result<TreeLock, LogError> {
    std::fs::create_dir_all(root).map_err(LogError::io("create dir", root))?;
    let root = canonical(root)?;
    let path = root.join(TREE_LOCK_FILE);
    let file = open_lock_file(&path)?;
    file.try_lock().map_err(|e| locked(&root, &path, e))?;
    with_registry(|r| r.owned.push(root.clone()));
    Ok(TreeLock { root, _file: file })
}

/// What keeps a second opener out of an open partition; held while open.
#[derive(Debug)]
pub(crate) struct DirHold {
    _lock: Option<LockGuard>,
    _trees: Vec<Arc<File>>,
    _claim: Option<Claim>,
}

/// A partition directory open under a tree this process owns.
#[derive(Debug)]
struct Claim(PathBuf);

impl Drop for Claim {
    fn drop(&mut self) {
        with_registry(|r| r.open.remove(&self.0));
    }
}

/// Keeps every other opener out of the partition in `dir` (see the module
/// docs), or `Locked`.
pub(crate) fn hold(st: &dyn Storage, dir: &Path, mode: DirLock) -> Result<DirHold, LogError> {
    let lock = lock_dir(st, dir)?;
    let canonical_dir = match std::fs::canonicalize(dir) {
        Ok(p) => p,
        // Not on the real filesystem (an in-memory `Storage`): no tree.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && mode == DirLock::Own => {
            return Ok(DirHold { _lock: Some(lock), _trees: Vec::new(), _claim: None });
        }
        Err(e) => return Err(LogError::io("canonicalize", dir)(e)),
    };
    let under_own_tree = with_registry(|r| r.owned.iter().any(|root| canonical_dir.starts_with(root)));
    let claim = match under_own_tree {
        true => Some(claim(dir, canonical_dir.clone())?),
        false => None,
    };
    match mode {
        DirLock::Own => {
            let trees = share_ancestors(dir, &canonical_dir)?;
            Ok(DirHold { _lock: Some(lock), _trees: trees, _claim: claim })
        }
        DirLock::Tree if claim.is_some() => Ok(DirHold { _lock: None, _trees: Vec::new(), _claim: claim }),
        DirLock::Tree => Err(LogError::io("lock", dir)(std::io::Error::other(
            "dir_lock = Tree, but this process holds no tree lock on an ancestor",
        ))),
    }
}

fn claim(dir: &Path, canonical_dir: PathBuf) -> Result<Claim, LogError> {
    with_registry(|r| match r.open.insert(canonical_dir.clone()) {
        true => Ok(Claim(canonical_dir)),
        false => Err(LogError::Locked { dir: dir.to_path_buf() }),
    })
}

/// A shared lock on the tree lock of every ancestor of `dir` that has one
/// and that this process does not own. `Locked` names `dir`.
fn share_ancestors(dir: &Path, canonical_dir: &Path) -> Result<Vec<Arc<File>>, LogError> {
    let mut held = Vec::new();
    for root in canonical_dir.ancestors().skip(1) {
        let path = root.join(TREE_LOCK_FILE);
        if !path.exists() {
            continue;
        }
        let file = with_registry(|r| -> Result<Option<Arc<File>>, LogError> {
            if r.owned.iter().any(|o| o == root) {
                return Ok(None);
            }
            if let Some(f) = r.shared.get(root).and_then(Weak::upgrade) {
                return Ok(Some(f));
            }
            let file = open_lock_file(&path)?;
            file.try_lock_shared().map_err(|e| locked(dir, &path, e))?;
            let file = Arc::new(file);
            r.shared.insert(root.to_path_buf(), Arc::downgrade(&file));
            Ok(Some(file))
        })?;
        held.extend(file);
    }
    Ok(held)
}
