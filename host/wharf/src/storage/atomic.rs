//! Crash-safe small files: a reader sees the old content or the new one,
//! never a mix (temp file, fsync, rename, directory fsync).

use std::io::Write as _;
use std::path::Path;

/// Replaces the file at `path` with `bytes`, durably.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Removes the file at `path` durably; a missing file is not an error.
pub fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    sync_dir(parent_dir(path))
}

/// The directory holding `path`: `.` for a bare file name (whose
/// `parent()` is the empty path, which cannot be opened).
fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Makes a directory's entries (creations, renames, removals) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_and_removed_idempotently() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sub").join("f.json");
        replace(&p, b"one").expect("first");
        replace(&p, b"two").expect("second");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        assert_eq!(std::fs::read_dir(p.parent().expect("dir")).expect("ls").count(), 1, "no temp file left");
        remove(&p).expect("remove");
        remove(&p).expect("remove again");
        assert!(!p.exists());
    }

    #[test]
    fn a_bare_file_name_is_replaced_in_the_working_directory() {
        assert_eq!(parent_dir(Path::new("addr.json")), Path::new("."));
        assert_eq!(parent_dir(Path::new("/addr.json")), Path::new("/"));
        assert_eq!(parent_dir(Path::new("run/addr.json")), Path::new("run"));
    }
}
