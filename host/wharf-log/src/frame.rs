//! Record framing.
//!
//! Every record is stored as one frame, all integers little-endian:
//!
//! ```text
//! offset  size  field
//! 0       4     len    payload length in bytes (u32, <= MAX_RECORD_LEN)
//! 4       4     crc    CRC32C over bytes [0..4) ++ [8..16) ++ payload
//!                      (i.e. len, seq and payload; everything but itself)
//! 8       8     seq    sequence number of this record (u64)
//! 16      len   payload
//! ```
//!
//! Invariants: a frame is valid iff its length is within bounds, all its
//! bytes are present, and the CRC matches. A valid frame is never "partly"
//! valid: decoding either yields the whole record or says exactly why not.
//! Decoding never panics on arbitrary input.

/// Bytes before the payload.
pub const FRAME_HEADER_LEN: usize = 16;

/// Largest payload a single record may carry (64 MiB).
pub const MAX_RECORD_LEN: usize = 64 << 20;

/// Total on-disk size of a frame for a payload of `payload_len` bytes.
pub fn frame_len(payload_len: usize) -> usize {
    FRAME_HEADER_LEN + payload_len
}

fn checksum(len: u32, seq: u64, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &seq.to_le_bytes());
    crc32c::crc32c_append(crc, payload)
}

/// Appends the frame for (`seq`, `payload`) to `out`.
/// The caller guarantees `payload.len() <= MAX_RECORD_LEN`.
pub fn encode(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(payload.len() <= MAX_RECORD_LEN);
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(len, seq, payload).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Result of decoding a frame at the start of a byte slice.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid frame. `frame_len` is the number of bytes it occupies.
    Record { seq: u64, crc: u32, payload: &'a [u8], frame_len: usize },
    /// The slice ends before the frame does (header or payload cut short).
    Incomplete,
    /// The declared length exceeds `MAX_RECORD_LEN`.
    BadLength { len: u64 },
    /// All bytes present but the CRC does not match.
    ChecksumMismatch,
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Header fields without any validation (for cheap filtering).
pub(crate) fn peek(buf: &[u8]) -> Option<(u32, u32, u64)> {
    let h = buf.get(..FRAME_HEADER_LEN)?;
    Some((le_u32(&h[0..4]), le_u32(&h[4..8]), le_u64(&h[8..16])))
}

/// Decodes the frame starting at `buf[0]`.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    let Some((len, crc, seq)) = peek(buf) else {
        return Decoded::Incomplete;
    };
    if len as usize > MAX_RECORD_LEN {
        return Decoded::BadLength { len: u64::from(len) };
    }
    let total = frame_len(len as usize);
    let Some(payload) = buf.get(FRAME_HEADER_LEN..total) else {
        return Decoded::Incomplete;
    };
    if checksum(len, seq, payload) != crc {
        return Decoded::ChecksumMismatch;
    }
    Decoded::Record { seq, crc, payload, frame_len: total }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode(seq, payload, &mut v);
        v
    }

    #[test]
    fn a_frame_round_trips_with_its_sequence_and_payload() {
        let f = frame(42, b"hello");
        assert_eq!(f.len(), frame_len(5));
        match decode(&f) {
            Decoded::Record { seq, payload, frame_len, .. } => {
                assert_eq!(seq, 42);
                assert_eq!(payload, b"hello");
                assert_eq!(frame_len, f.len());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn an_empty_payload_is_a_valid_record() {
        let f = frame(0, b"");
        assert!(matches!(decode(&f), Decoded::Record { seq: 0, frame_len: 16, .. }));
    }

    #[test]
    fn the_layout_is_len_crc_seq_payload_little_endian() {
        let f = frame(0x0102_0304_0506_0708, b"ab");
        assert_eq!(&f[0..4], &2u32.to_le_bytes());
        assert_eq!(&f[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&f[16..], b"ab");
    }

    #[test]
    fn every_prefix_of_a_frame_is_incomplete() {
        let f = frame(7, b"payload bytes");
        for cut in 0..f.len() {
            assert_eq!(decode(&f[..cut]), Decoded::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let f = frame(7, b"payload bytes");
        for byte in 0..f.len() {
            for bit in 0..8 {
                let mut g = f.clone();
                g[byte] ^= 1 << bit;
                assert!(
                    !matches!(decode(&g), Decoded::Record { .. }),
                    "flip at byte {byte} bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn a_huge_declared_length_is_a_bad_length_not_an_allocation() {
        let mut f = frame(1, b"x");
        f[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&f), Decoded::BadLength { len: u64::from(u32::MAX) });
    }

    #[test]
    fn trailing_bytes_after_a_frame_are_ignored_by_decode() {
        let mut f = frame(3, b"abc");
        f.extend_from_slice(b"garbage");
        assert!(matches!(decode(&f), Decoded::Record { seq: 3, frame_len: 19, .. }));
    }

    #[test]
    fn zeroes_are_not_a_valid_frame() {
        assert_eq!(decode(&[0u8; 64]), Decoded::ChecksumMismatch);
    }
}
