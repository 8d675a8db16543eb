//! The active segment's pre-zeroed space (`partition/zeroed.rs`): frames
//! land on zeros written ahead of them, a restart takes the zeros for the
//! end of the log (not a torn tail), and a seal cuts them off.

mod common;

use std::path::Path;

use common::*;
use wharf_log::FaultStorage;

const MIB: u64 = 1 << 20;
const DIR: &str = "/data/p";

/// A partition with `n` records in 64 MiB segments, and its active segment.
fn with_records(n: u64) -> (FaultStorage, wharf_log::Partition, std::path::PathBuf) {
    let fs = FaultStorage::new();
    let (p, _) = mem_open(&fs, Path::new(DIR), small_opts(64 * MIB)).expect("open");
    append_n(&p, n);
    let seg = segments(&fs, Path::new(DIR)).pop().expect("segment");
    (fs, p, seg)
}

#[test]
fn the_active_segment_is_zeroed_ahead_and_a_restart_keeps_its_records_and_its_zeros() {
    let (fs, p, seg) = with_records(10);
    let dir = Path::new(DIR);
    let frames = frames_only(&fs, dir, &seg).len();
    let file = fs.read(&seg).expect("file");
    assert!(
        file.len() > frames && file.len() >= 64 << 10,
        "{frames} bytes of frames, file {} bytes",
        file.len()
    );
    assert!(file[frames..].iter().all(|b| *b == 0), "zeros after the frames");
    drop(p);

    fs.crash(7);
    let (p, rec) = mem_open(&fs, dir, small_opts(64 * MIB)).expect("reopen");
    assert_eq!(rec.truncated_tail, None, "pre-zeroed space is not a torn tail");
    assert_eq!(rec.next_seq, 10);
    assert_eq!(fs.read(&seg).expect("file").len(), file.len(), "the zeros are kept for the next frames");
    assert_eq!(p.append(&[b"after"]).expect("append").first_seq, 10);
    let got = read_all(&p);
    assert_eq!(got.len(), 11);
    assert_eq!(got[10], (10, b"after".to_vec()));
    assert_eq!(
        frames_only(&fs, dir, &seg).len(),
        frames + wharf_log::frame::FRAME_HEADER_LEN + 5,
        "the frame landed right after the others"
    );
    assert!(wharf_log::verify_with(&fs, dir, &mut |_| {}).expect("verify").is_clean());
}

#[test]
fn a_sealed_segment_ends_at_its_last_frame() {
    let fs = FaultStorage::new();
    let dir = Path::new(DIR);
    // 8 KiB segments: zeros are written ahead up to the segment's size.
    let (p, _) = mem_open(&fs, dir, small_opts(8 << 10)).expect("open");
    for i in 0..400u64 {
        p.append(&[&payload(i)]).expect("append");
    }
    let segs = segments(&fs, dir);
    assert!(segs.len() > 2, "{} segments", segs.len());
    for s in &segs[..segs.len() - 1] {
        let len = fs.read(s).expect("file").len();
        assert_eq!(len, frames_only(&fs, dir, s).len(), "{} has bytes after its last frame", s.display());
    }
    drop(p);
    let (p, rec) = mem_open(&fs, dir, small_opts(8 << 10)).expect("reopen");
    assert_eq!((rec.next_seq, rec.truncated_tail), (400, None));
    assert_eq!(read_all(&p).len(), 400);
}

#[test]
fn a_frame_torn_inside_the_zeroed_space_is_a_torn_tail() {
    let (fs, p, seg) = with_records(5);
    let dir = Path::new(DIR);
    drop(p);
    let end = frames_only(&fs, dir, &seg).len();
    let mut b = fs.read(&seg).expect("file");
    b[end..end + 10].fill(0xab); // half a frame header, zeros after it
    fs.overwrite(&seg, b);
    let (p, rec) = mem_open(&fs, dir, small_opts(64 * MIB)).expect("reopen");
    let t = rec.truncated_tail.expect("torn tail");
    assert_eq!(t.offset, end as u64);
    assert_eq!(rec.next_seq, 5);
    assert_eq!(p.append(&[b"x"]).expect("append").first_seq, 5);
}
