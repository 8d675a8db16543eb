//! Small fixed-size files of `N` u64 values: the cursor and rewind files.
//!
//! Layout, little-endian, `16 + 8 N` bytes: an 8-byte magic, the `N`
//! values, CRC32C of everything before it (u32), 4 reserved zero bytes.
//! Written crash-safely (`storage::atomic`): a reader sees the old or the
//! new content. Decoding names what is wrong, never guesses.

use std::path::Path;

/// The bytes of a file holding `values`.
pub fn encode<const N: usize>(magic: &[u8; 8], values: [u64; N]) -> Vec<u8> {
    let mut b = Vec::with_capacity(16 + 8 * N);
    b.extend_from_slice(magic);
    values.iter().for_each(|v| b.extend_from_slice(&v.to_le_bytes()));
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b
}

/// The values of a file's bytes, or why they are not one.
pub fn decode<const N: usize>(magic: &[u8; 8], bytes: &[u8]) -> Result<[u64; N], &'static str> {
    let body = 8 + 8 * N;
    if bytes.len() != body + 8 {
        return Err("wrong length");
    }
    if bytes[0..8] != magic[..] {
        return Err("bad magic");
    }
    if crc32c::crc32c(&bytes[..body]).to_le_bytes() != bytes[body..body + 4] {
        return Err("checksum mismatch");
    }
    let mut values = [0u64; N];
    for (i, v) in values.iter_mut().enumerate() {
        let at = 8 + 8 * i;
        *v = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
    }
    Ok(values)
}

/// The file's bytes, or `None` when there is none.
pub fn read(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_damage_is_named() {
        let b = encode(b"TESTFIX1", [7, u64::MAX]);
        assert_eq!(b.len(), 32);
        assert_eq!(decode::<2>(b"TESTFIX1", &b), Ok([7, u64::MAX]));
        assert_eq!(decode::<2>(b"OTHERFIX", &b), Err("bad magic"));
        assert_eq!(decode::<1>(b"TESTFIX1", &b), Err("wrong length"));
        let mut bad = b.clone();
        bad[12] ^= 1;
        assert_eq!(decode::<2>(b"TESTFIX1", &bad), Err("checksum mismatch"));
    }
}
