//! The tree lock (tree_lock.rs): partitions opened under a tree this
//! process locked hold no descriptor of their own, and still keep a second
//! opener out.

use std::path::Path;

use wharf_log::{DirLock, LogError, LogOptions, Partition, lock_tree};

/// The tests run one at a time: a child process spawned by one holds
/// copies of every descriptor of this process between its fork and its
/// exec (flock locks included), which another test would see as a holder.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn tree() -> LogOptions {
    LogOptions { dir_lock: DirLock::Tree, ..LogOptions::default() }
}

/// A data dir `root` in a temporary dir, and a partition dir under it.
fn layout() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("data");
    let dir = root.join("ns").join("p0");
    (tmp, root, dir)
}

/// This process's open descriptors that point at `path`.
fn fds_on(path: &Path) -> usize {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(Result::ok)
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == path))
        .count()
}

#[test]
fn a_partition_under_a_locked_tree_keeps_no_lock_fd_and_excludes_a_second_open() {
    let _serial = serial();
    let (_tmp, root, dir) = layout();
    let tree_lock = lock_tree(&root).expect("lock the tree");

    let (p, _) = Partition::open(&dir, tree()).expect("open under the tree");
    p.append(&[b"one"]).expect("append");
    assert_eq!(fds_on(&dir.join("LOCK")), 0, "no descriptor for the partition's own lock");
    assert_eq!(fds_on(&root.join("TREE.LOCK")), 1, "one descriptor for the whole tree");

    // A second open in this process, in either mode, is refused.
    assert!(matches!(Partition::open(&dir, tree()), Err(LogError::Locked { .. })));
    assert!(matches!(Partition::open(&dir, LogOptions::default()), Err(LogError::Locked { .. })));
    assert!(matches!(wharf_log::salvage(&dir, &mut |_| {}), Err(LogError::Locked { .. })));

    // Closed, it opens again and kept its record.
    drop(p);
    let (p, rec) = Partition::open(&dir, tree()).expect("reopen");
    assert_eq!(rec.next_seq, 1);
    drop(p);
    drop(tree_lock);
    // Without the tree lock, a Tree open is refused; an Own one works.
    assert!(Partition::open(&dir, tree()).is_err());
    let (p, _) = Partition::open(&dir, LogOptions::default()).expect("own lock");
    assert_eq!(fds_on(&dir.join("LOCK")), 1);
    // And the tree cannot be locked while a partition under it holds a
    // shared lock on it.
    assert!(matches!(lock_tree(&root), Err(LogError::Locked { .. })));
    drop(p);
    drop(lock_tree(&root).expect("free again"));
}

#[test]
fn a_tree_held_by_another_process_keeps_own_openers_and_salvage_out() {
    let _serial = serial();
    let (_tmp, root, dir) = layout();
    drop(Partition::open(&dir, LogOptions::default()).expect("create"));
    // `flock(1)` holds the tree exclusively from another process until its
    // stdin closes; it says so on stdout once it holds it.
    let mut holder = std::process::Command::new("flock")
        .args(["-x", "-n"])
        .arg(root.join("TREE.LOCK"))
        .args(["sh", "-c", "echo held; read _"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("flock(1) from util-linux");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.take().expect("test")), &mut line)
        .expect("test");
    assert_eq!(line.trim(), "held");

    assert!(matches!(Partition::open(&dir, LogOptions::default()), Err(LogError::Locked { .. })));
    assert!(matches!(wharf_log::salvage(&dir, &mut |_| {}), Err(LogError::Locked { .. })));
    assert!(matches!(lock_tree(&root), Err(LogError::Locked { .. })));

    drop(holder.stdin.take());
    holder.wait().expect("test");
    drop(Partition::open(&dir, LogOptions::default()).expect("free again"));
}
