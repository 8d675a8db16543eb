//! Segment files.
//!
//! A partition's records live in segment files named `{base_seq:020}.seg`
//! (zero-padded decimal, so lexical order is sequence order), where
//! `base_seq` is the sequence of the first record the segment holds (or
//! will hold). A segment is a 32-byte header followed by back-to-back
//! frames (see `frame.rs`). All integers little-endian:
//!
//! ```text
//! offset  size  field
//! 0       8     magic          b"WHARFSEG"
//! 8       4     version        format version, currently 1
//! 12      4     header_len     32
//! 16      8     base_seq       must equal the number in the file name
//! 24      4     reserved       0
//! 28      4     header_crc     CRC32C of bytes [0..28)
//! 32      ...   frames
//! ```
//!
//! Invariants:
//! - records inside one segment have dense sequences `base_seq, base_seq+1, ..`;
//! - only the last segment of a partition is ever appended to; earlier
//!   segments are sealed (fdatasync'ed completely before the next one exists);
//! - a segment file only appears under its final name once its header is
//!   durable (it is written as `NAME.seg.tmp`, synced, renamed, dir synced),
//!   so a `.seg` file with a short header can only be the product of
//!   external damage; a leftover `.seg.tmp` is deleted by recovery.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Corruption, CorruptionKind};
use crate::frame::{self, Decoded, FRAME_HEADER_LEN};
use crate::storage::{OpenMode, Storage, StorageFile, parent, read_full_at, tmp_path};

pub const SEGMENT_MAGIC: [u8; 8] = *b"WHARFSEG";
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 32;
pub(crate) const SEGMENT_EXT: &str = ".seg";

/// Sparse index spacing: one (seq, offset) entry per this many bytes.
pub(crate) const INDEX_EVERY_BYTES: u64 = 64 << 10;

pub fn segment_file_name(base_seq: u64) -> String {
    format!("{base_seq:020}{SEGMENT_EXT}")
}

/// Parses `{base:020}.seg`; anything else is not a segment.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_EXT)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub fn encode_header(base_seq: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&base_seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a header is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Fewer than HEADER_LEN bytes.
    Short,
    Bad(String),
}

/// Decodes and validates a header; returns its base sequence.
pub(crate) fn decode_header(bytes: &[u8]) -> Result<u64, HeaderError> {
    let h = bytes.get(..HEADER_LEN).ok_or(HeaderError::Short)?;
    if h[0..8] != SEGMENT_MAGIC {
        return Err(HeaderError::Bad("bad magic".into()));
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&h[28..32]);
    if crc32c::crc32c(&h[0..28]) != u32::from_le_bytes(crc) {
        return Err(HeaderError::Bad("header checksum mismatch".into()));
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&h[8..12]);
    let version = u32::from_le_bytes(v);
    if version != FORMAT_VERSION {
        return Err(HeaderError::Bad(format!("unsupported format version {version}")));
    }
    v.copy_from_slice(&h[12..16]);
    if u32::from_le_bytes(v) as usize != HEADER_LEN {
        return Err(HeaderError::Bad("unexpected header length".into()));
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[16..24]);
    Ok(u64::from_le_bytes(b))
}

/// Why the frame at some offset is not the record that was due there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameProblem {
    Incomplete,
    BadLength(u64),
    ChecksumMismatch,
    /// A valid frame, but with the wrong sequence.
    WrongSeq {
        expected: u64,
        found: u64,
    },
}

/// One step of walking a segment's frames.
#[derive(Debug)]
pub(crate) enum Step<'a> {
    Record { offset: u64, seq: u64, crc: u32, payload: &'a [u8] },
    End,
    Bad { offset: u64, problem: FrameProblem },
}

/// Walks frames in `bytes` starting at `pos`, expecting dense sequences
/// from `expected`. After a `Bad` step the caller decides where to resume
/// (by building a new walker); stepping again repeats the same `Bad`.
#[derive(Debug)]
pub(crate) struct Walker<'a> {
    bytes: &'a [u8],
    pub pos: usize,
    pub expected: u64,
}

impl<'a> Walker<'a> {
    pub fn new(bytes: &'a [u8], pos: usize, expected: u64) -> Self {
        Walker { bytes, pos, expected }
    }

    pub fn step(&mut self) -> Step<'a> {
        let offset = self.pos as u64;
        if self.pos >= self.bytes.len() {
            return Step::End;
        }
        let problem = match frame::decode(&self.bytes[self.pos..]) {
            Decoded::Record { seq, crc, payload, frame_len } if seq == self.expected => {
                self.pos += frame_len;
                self.expected += 1;
                return Step::Record { offset, seq, crc, payload };
            }
            Decoded::Record { seq, .. } => FrameProblem::WrongSeq { expected: self.expected, found: seq },
            Decoded::Incomplete => FrameProblem::Incomplete,
            Decoded::BadLength { len } => FrameProblem::BadLength(len),
            Decoded::ChecksumMismatch => FrameProblem::ChecksumMismatch,
        };
        Step::Bad { offset, problem }
    }
}

/// The resynchronisation rule shared by recovery, verify and salvage.
///
/// Returns the first offset `o >= from` at which a *plausible valid frame*
/// starts: header fits, length within bounds, the whole frame is present,
/// its sequence is in `[min_seq, min_seq + (o - from) / 16 + 1]` (records
/// are dense and at least 16 bytes, so a genuine later record cannot carry
/// a larger sequence), and its CRC matches. The sequence filter makes the
/// scan cheap on garbage: the CRC is only computed for candidates.
pub(crate) fn find_resync(bytes: &[u8], from: usize, min_seq: u64) -> Option<(u64, u64)> {
    let mut o = from;
    while o + FRAME_HEADER_LEN <= bytes.len() {
        if let Some((len, _, seq)) = frame::peek(&bytes[o..]) {
            let max_seq = min_seq.saturating_add(((o - from) / FRAME_HEADER_LEN) as u64 + 1);
            let fits =
                (len as usize) <= frame::MAX_RECORD_LEN && o + frame::frame_len(len as usize) <= bytes.len();
            if fits
                && seq >= min_seq
                && seq <= max_seq
                && let Decoded::Record { seq, .. } = frame::decode(&bytes[o..])
            {
                return Some((o as u64, seq));
            }
        }
        o += 1;
    }
    None
}

/// A segment of an open partition.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base_seq: u64,
    pub path: PathBuf,
    pub file: Arc<dyn StorageFile>,
    /// Bytes of complete frames written (header included).
    pub len: AtomicU64,
    /// Sequence after the last record written (== base_seq when empty).
    pub end_seq: AtomicU64,
    /// Sparse (seq, offset) index, ascending.
    pub index: Mutex<Vec<(u64, u64)>>,
    /// A sealed segment taken on at open by its name, unread (see
    /// [`Segment::adopted`]); false for a scanned or a created one.
    pub adopted: bool,
    /// The header was checked (always true unless `adopted`).
    pub header_checked: AtomicBool,
}

impl Segment {
    pub fn new(
        base_seq: u64,
        path: PathBuf,
        file: Arc<dyn StorageFile>,
        len: u64,
        end_seq: u64,
        index: Vec<(u64, u64)>,
    ) -> Self {
        Segment {
            base_seq,
            path,
            file,
            len: AtomicU64::new(len),
            end_seq: AtomicU64::new(end_seq),
            index: Mutex::new(index),
            adopted: false,
            header_checked: AtomicBool::new(true),
        }
    }

    /// A sealed segment recovery did not read: `len` is the file's size and
    /// `end_seq` the next segment's base, a claim that reads check when
    /// they reach the end of the file (`Partition::read`); its header is
    /// checked on the first read and its index is learnt by reads. Every
    /// record is still checked (CRC, sequence) as it is read.
    pub fn adopted(base_seq: u64, path: PathBuf, file: Arc<dyn StorageFile>, len: u64, end_seq: u64) -> Self {
        Segment {
            adopted: true,
            header_checked: AtomicBool::new(false),
            ..Segment::new(base_seq, path, file, len, end_seq, Vec::new())
        }
    }

    /// Checks the header of an adopted segment once: a readable header
    /// whose base sequence is the one in the file name.
    pub fn check_header(&self) -> Result<(), Corruption> {
        if self.header_checked.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut h = [0u8; HEADER_LEN];
        let reason = match read_full_at(&*self.file, &mut h, 0) {
            Err(e) => format!("unreadable: {e}"),
            Ok(n) => match decode_header(&h[..n]) {
                Ok(b) if b == self.base_seq => {
                    self.header_checked.store(true, Ordering::Release);
                    return Ok(());
                }
                Ok(b) => format!("base seq {b} disagrees with the file name"),
                Err(HeaderError::Short) => "short header".to_string(),
                Err(HeaderError::Bad(r)) => r,
            },
        };
        Err(Corruption { file: self.path.clone(), offset: 0, kind: CorruptionKind::BadHeader { reason } })
    }

    /// Where the index would take its next entry (reads of an adopted
    /// segment add entries as they pass this offset).
    pub fn next_index_offset(&self) -> u64 {
        let idx = self.index.lock().unwrap_or_else(|e| e.into_inner());
        idx.last().map_or(HEADER_LEN as u64, |&(_, o)| o) + INDEX_EVERY_BYTES
    }

    /// Records an index entry learnt by a read; returns the next offset.
    pub fn learn_index(&self, seq: u64, offset: u64) -> u64 {
        let mut idx = self.index.lock().unwrap_or_else(|e| e.into_inner());
        maybe_index(&mut idx, seq, offset);
        idx.last().map_or(HEADER_LEN as u64, |&(_, o)| o) + INDEX_EVERY_BYTES
    }

    /// Where to start scanning for `seq`: the closest index entry at or
    /// before it, else the first frame.
    pub fn seek(&self, seq: u64) -> (u64, u64) {
        let idx = self.index.lock().unwrap_or_else(|e| e.into_inner());
        let i = idx.partition_point(|&(s, _)| s <= seq);
        if i == 0 { (self.base_seq, HEADER_LEN as u64) } else { idx[i - 1] }
    }

    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    pub fn end_seq(&self) -> u64 {
        self.end_seq.load(Ordering::Acquire)
    }
}

/// Adds an index entry if `offset` is far enough past the last one.
pub(crate) fn maybe_index(index: &mut Vec<(u64, u64)>, seq: u64, offset: u64) {
    let last = index.last().map_or(HEADER_LEN as u64, |&(_, o)| o);
    if offset >= last + INDEX_EVERY_BYTES {
        index.push((seq, offset));
    }
}

/// Creates a new, empty, durable segment `dir/{base:020}.seg`.
pub(crate) fn create_segment(storage: &dyn Storage, dir: &Path, base_seq: u64) -> std::io::Result<Segment> {
    let path = dir.join(segment_file_name(base_seq));
    let tmp = tmp_path(&path);
    let f = storage.open(&tmp, OpenMode::Create)?;
    if let Err(e) = f.append(&encode_header(base_seq)).and_then(|()| f.sync_data()) {
        drop(f);
        let _ = storage.remove_file(&tmp); // best effort: open removes leftovers
        return Err(e);
    }
    drop(f);
    storage.rename(&tmp, &path)?;
    storage.sync_dir(parent(&path))?;
    // Written with pwrite: frames land on pre-zeroed space (`partition/zeroed.rs`).
    let file = storage.open(&path, OpenMode::Write)?;
    Ok(Segment::new(base_seq, path, file, HEADER_LEN as u64, base_seq, Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_by_sequence_and_round_trip() {
        assert_eq!(segment_file_name(5), "00000000000000000005.seg");
        assert_eq!(parse_segment_file_name(&segment_file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_file_name("5.seg"), None);
        assert_eq!(parse_segment_file_name("00000000000000000005.seg.tmp"), None);
    }

    #[test]
    fn a_header_round_trips_and_rejects_damage() {
        let h = encode_header(77);
        assert_eq!(decode_header(&h), Ok(77));
        assert_eq!(decode_header(&h[..31]), Err(HeaderError::Short));
        for i in 0..HEADER_LEN {
            let mut g = h;
            g[i] ^= 0x40;
            assert!(decode_header(&g).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn resync_finds_the_next_valid_frame_after_garbage() {
        let mut b = vec![0xAB; 37];
        let at = b.len();
        frame::encode(10, b"x", &mut b);
        assert_eq!(find_resync(&b, 0, 8), Some((at as u64, 10)));
        // A sequence below the minimum is not a resync point.
        assert_eq!(find_resync(&b, 0, 11), None);
    }
}
