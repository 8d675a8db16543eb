//! Torn tails versus corruption, named as the behaviour they pin down.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use wharf_log::{CorruptionKind, FaultStorage, LogError, LogOptions, Storage};

const DIR: &str = "/data/p";

/// Offsets of every record: (seq, file, offset, frame length).
fn layout(fs: &FaultStorage) -> Vec<(u64, PathBuf, u64, u64)> {
    let mut v = Vec::new();
    wharf_log::dump_with(fs, Path::new(DIR), 0, &mut |_| {}, &mut |r| {
        v.push((r.seq, r.file.to_path_buf(), r.offset, 16 + r.payload.len() as u64));
        true
    })
    .expect("dump");
    v
}

fn build(n: u64, segment_max_bytes: u64) -> FaultStorage {
    let fs = FaultStorage::new();
    let (p, _) = mem_open(&fs, Path::new(DIR), small_opts(segment_max_bytes)).expect("open");
    append_n(&p, n);
    fs
}

fn open_err(fs: &FaultStorage, max: u64) -> wharf_log::Corruption {
    match mem_open(fs, Path::new(DIR), small_opts(max)) {
        Err(LogError::Corrupt(c)) => c,
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("expected corruption, open succeeded"),
    }
}

/// The first corruption a read of every record meets, after an open that
/// succeeds: recovery scans only the last segment, and a sealed one is
/// checked record by record as it is read.
fn read_err(fs: &FaultStorage, max: u64) -> wharf_log::Corruption {
    let (p, _) = mem_open(fs, Path::new(DIR), small_opts(max)).expect("open scans only the tail");
    let mut from = 0;
    loop {
        match p.read(from, 7, 1 << 20) {
            Err(LogError::Corrupt(c)) => return c,
            Err(e) => panic!("expected corruption, got {e}"),
            Ok(recs) => from = recs.last().expect("corruption before the end").seq + 1,
        }
    }
}

#[test]
fn a_sealed_segment_is_not_rescanned_on_open_yet_a_corrupt_record_in_it_is_reported_when_read() {
    let fs = build(60, 300);
    let l = layout(&fs);
    let first = &l[0].1;
    let (bad_seq, file, off, _) = l.iter().filter(|r| &r.1 == first).nth(2).expect("record").clone();
    flip_bit(&fs, &file, off as usize + 20);
    let segs = segments(&fs, Path::new(DIR));
    let tail = segs.last().expect("tail");
    let tail_len = fs.read(tail).expect("tail").len() as u64;
    let sealed: u64 = segs[..segs.len() - 1].iter().map(|s| fs.read(s).expect("seg").len() as u64).sum();
    assert!(sealed > 4 * tail_len, "the sealed segments outweigh the tail");

    let before = fs.bytes_read();
    let (p, rec) = mem_open(&fs, Path::new(DIR), small_opts(300)).expect("open");
    let read_by_open = fs.bytes_read() - before;
    assert!(read_by_open <= tail_len + 64, "open read {read_by_open} bytes, the tail has {tail_len}");
    assert_eq!((rec.next_seq, rec.segments), (60, segs.len()));

    let good = p.read(0, bad_seq as usize, 1 << 20).expect("the records before the damage");
    assert_eq!(good.iter().map(|r| r.seq).collect::<Vec<_>>(), (0..bad_seq).collect::<Vec<_>>());
    for from in [0, bad_seq] {
        match p.read(from, 100, 1 << 20) {
            Err(LogError::Corrupt(c)) => {
                assert_eq!((c.file, c.offset, c.kind), (file.clone(), off, CorruptionKind::ChecksumMismatch));
            }
            other => panic!("reading from {from}: expected the checksum mismatch, got {other:?}"),
        }
    }
    let after = p.read(l.iter().find(|r| &r.1 != first).expect("next segment").0, 100, 1 << 20);
    assert!(after.is_ok_and(|r| !r.is_empty()), "later segments stay readable");
    assert_eq!(p.append(&[b"next"]).expect("append").first_seq, 60);
}

#[test]
fn a_sealed_segment_holding_the_next_segments_first_record_is_reported_when_read() {
    let fs = build(30, 300);
    let segs = segments(&fs, Path::new(DIR));
    let l = layout(&fs);
    let next_base = l.iter().find(|r| r.1 == segs[1]).expect("rec").0;
    let mut b = fs.read(&segs[0]).expect("file");
    let at = b.len() as u64;
    wharf_log::frame::encode(next_base, &common::payload(next_base), &mut b);
    fs.overwrite(&segs[0], b);
    let c = read_err(&fs, 300);
    assert_eq!(
        (c.file, c.offset, c.kind),
        (segs[0].clone(), at, CorruptionKind::SegmentOverlap { next_base })
    );
}

#[test]
fn a_flipped_bit_in_a_middle_record_halts_with_file_and_offset() {
    let fs = build(10, 1 << 20);
    let l = layout(&fs);
    let (_, file, off, _) = &l[5];
    flip_bit(&fs, file, *off as usize + 20);
    let c = open_err(&fs, 1 << 20);
    assert_eq!((&c.file, c.offset, &c.kind), (file, *off, &CorruptionKind::ChecksumMismatch));
    assert_eq!(c.kind.code(), "checksum_mismatch");
    let msg = LogError::Corrupt(c).to_string();
    assert!(msg.starts_with("corruption in /data/p/00000000000000000000.seg at offset"), "{msg}");
}

#[test]
fn a_torn_last_record_is_truncated_and_was_never_acknowledged() {
    let fs = build(10, 1 << 20);
    let l = layout(&fs);
    let (_, file, off, len) = l[9].clone();
    let mut b = fs.read(&file).expect("file");
    b.truncate((off + len / 2) as usize);
    fs.overwrite(&file, b);
    let (p, rec) = mem_open(&fs, Path::new(DIR), LogOptions::default()).expect("open");
    let t = rec.truncated_tail.expect("torn tail");
    assert_eq!((t.file, t.offset, t.bytes_dropped), (file.clone(), off, len / 2));
    assert_eq!(rec.next_seq, 9);
    assert_eq!(read_all(&p).len(), 9);
    assert_eq!(fs.read(&file).expect("file").len() as u64, off, "the tail is gone from disk");
    assert_eq!(p.append(&[b"x"]).expect("append").first_seq, 9);
}

#[test]
fn garbage_after_the_last_record_is_a_torn_tail() {
    let fs = build(10, 1 << 20);
    let file = segments(&fs, Path::new(DIR)).pop().expect("segment");
    let (_, _, off, len) = layout(&fs).pop().expect("last record");
    let end = off + len;
    let mut b = fs.read(&file).expect("file");
    // The garbage lands in the segment's pre-zeroed space, after the last record.
    let zeros = b.len() as u64 - end;
    b.extend((0..100u32).map(|i| (i * 7919 % 251) as u8));
    fs.overwrite(&file, b);
    let (_, rec) = mem_open(&fs, Path::new(DIR), LogOptions::default()).expect("open");
    assert_eq!(rec.truncated_tail.map(|t| (t.offset, t.bytes_dropped)), Some((end, zeros + 100)));
    assert_eq!(rec.next_seq, 10);
}

#[test]
fn a_damaged_last_record_with_nothing_valid_after_it_is_a_torn_tail() {
    let fs = build(10, 1 << 20);
    let l = layout(&fs);
    let (_, file, off, _) = &l[9];
    flip_bit(&fs, file, *off as usize + 17);
    let (_, rec) = mem_open(&fs, Path::new(DIR), LogOptions::default()).expect("open");
    assert_eq!(rec.truncated_tail.map(|t| t.offset), Some(*off));
    assert_eq!(rec.next_seq, 9);
}

#[test]
fn a_damaged_record_at_the_end_of_a_sealed_segment_is_corruption() {
    let fs = build(30, 300);
    let l = layout(&fs);
    let first = &l[0].1;
    let (_, file, off, _) = l.iter().rfind(|r| &r.1 == first).expect("record").clone();
    flip_bit(&fs, &file, off as usize + 18);
    let c = read_err(&fs, 300);
    assert_eq!((c.file, c.offset, c.kind), (file, off, CorruptionKind::ChecksumMismatch));
}

#[test]
fn a_cut_short_sealed_segment_is_a_truncated_record() {
    let fs = build(30, 300);
    let l = layout(&fs);
    let (_, file, off, _) = l[1].clone();
    let mut b = fs.read(&file).expect("file");
    b.truncate(off as usize + 5);
    fs.overwrite(&file, b);
    let c = read_err(&fs, 300);
    assert_eq!((c.file, c.offset, c.kind), (file, off, CorruptionKind::TruncatedRecord));
}

#[test]
fn a_missing_middle_segment_is_a_sequence_gap_at_the_next_segment() {
    let fs = build(40, 300);
    let segs = segments(&fs, Path::new(DIR));
    assert!(segs.len() >= 4);
    let l = layout(&fs);
    let missing_first = l.iter().find(|r| r.1 == segs[1]).expect("rec").0;
    fs.remove_file(&segs[1]).expect("remove");
    let c = read_err(&fs, 300);
    assert_eq!(c.file, segs[2]);
    assert_eq!(c.offset, 0);
    assert!(
        matches!(c.kind, CorruptionKind::SequenceGap { expected, .. } if expected == missing_first),
        "{:?}",
        c.kind
    );
}

#[test]
fn a_valid_frame_with_the_wrong_sequence_is_a_sequence_gap_even_at_the_tail() {
    let fs = build(10, 1 << 20);
    let l = layout(&fs);
    let (seq, file, off, _) = l[9].clone();
    let mut b = fs.read(&file).expect("file");
    b.truncate(off as usize);
    wharf_log::frame::encode(seq + 5, &common::payload(seq), &mut b);
    fs.overwrite(&file, b);
    let c = open_err(&fs, 1 << 20);
    assert_eq!((c.offset, c.kind), (off, CorruptionKind::SequenceGap { expected: 9, found: 14 }));
}

#[test]
fn a_damaged_segment_header_is_a_bad_header() {
    let fs = build(30, 300);
    let segs = segments(&fs, Path::new(DIR));
    flip_bit(&fs, &segs[1], 3);
    let c = read_err(&fs, 300);
    assert_eq!((c.file.clone(), c.offset, c.kind.code()), (segs[1].clone(), 0, "bad_header"));
}

#[test]
fn a_huge_length_field_in_a_middle_record_is_corruption_not_a_torn_tail() {
    let fs = build(10, 1 << 20);
    let l = layout(&fs);
    let (_, file, off, _) = &l[3];
    let mut b = fs.read(file).expect("file");
    b[*off as usize + 3] = 0x7f;
    fs.overwrite(file, b);
    let c = open_err(&fs, 1 << 20);
    assert_eq!((c.offset, c.kind.code()), (*off, "bad_length"));
}

#[test]
fn a_corrupt_watermark_file_is_reported_not_ignored() {
    let fs = build(3, 1 << 20);
    {
        let (p, _) = mem_open(&fs, Path::new(DIR), LogOptions::default()).expect("open");
        p.advance_watermark(2).expect("advance");
    }
    let wm = Path::new(DIR).join(wharf_log::WATERMARK_FILE);
    flip_bit(&fs, &wm, 9);
    let c = open_err(&fs, 1 << 20);
    assert_eq!((c.file, c.kind.code()), (wm, "bad_watermark"));
}

#[test]
fn corruption_that_appears_after_open_is_returned_by_read_with_file_and_offset() {
    let fs = build(10, 1 << 20);
    let l = layout(&fs);
    let (p, _) = mem_open(&fs, Path::new(DIR), LogOptions::default()).expect("open");
    let (_, file, off, _) = &l[4];
    flip_bit(&fs, file, *off as usize + 16);
    let e = p.read(0, 100, 1 << 20).expect_err("corrupt read");
    let c = e.corruption().expect("typed corruption");
    assert_eq!((&c.file, c.offset, &c.kind), (file, *off, &CorruptionKind::ChecksumMismatch));
    // Records before the damage are still readable.
    assert_eq!(p.read(0, 4, 1 << 20).expect("read").len(), 4);
}

#[test]
fn leftover_temporary_files_from_an_interrupted_write_are_removed_on_open() {
    let fs = build(3, 1 << 20);
    let tmp = Path::new(DIR).join("watermark.tmp");
    let f = fs.open(&tmp, wharf_log::storage::OpenMode::Create).expect("create");
    f.append(b"partial").expect("write");
    drop(f);
    let (_, rec) = mem_open(&fs, Path::new(DIR), LogOptions::default()).expect("open");
    assert_eq!(rec.removed_temp_files, vec![tmp.clone()]);
    assert!(!fs.exists(&tmp));
}
