//! A secret key kept in a file: 32 random bytes, created once with mode
//! 0600 and read back on every start.
//!
//! Creation is atomic (written to a temporary file, fsynced, then linked
//! into place without replacing), so two processes starting at once agree
//! on one key and a crash never leaves a short key behind.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rand::RngCore;

/// Key length in bytes.
pub const KEY_LEN: usize = 32;

/// The key at `path`, created if missing.
pub fn load_or_create(path: &Path) -> std::io::Result<[u8; KEY_LEN]> {
    if let Some(key) = read(path)? {
        return Ok(key);
    }
    let mut key = [0u8; KEY_LEN];
    rand::rng().fill_bytes(&mut key);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(&key)?;
    f.sync_all()?;
    let linked = std::fs::hard_link(&tmp, path);
    std::fs::remove_file(&tmp)?;
    match linked {
        Ok(()) => Ok(key),
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(path)?.ok_or_else(|| std::io::Error::other("key file vanished"))
        }
        Err(e) => Err(e),
    }
}

fn read(path: &Path) -> std::io::Result<Option<[u8; KEY_LEN]>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut key = [0u8; KEY_LEN];
    f.read_exact(&mut key)
        .map_err(|e| std::io::Error::new(e.kind(), format!("key file {} is damaged: {e}", path.display())))?;
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_key_is_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.key");
        let first = load_or_create(&path).expect("create");
        assert_eq!(load_or_create(&path).expect("read"), first);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1, "no temporary file left");
    }
}
