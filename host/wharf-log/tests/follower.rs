//! A follower reading a partition that a writer appends to (split roles):
//! only durable records, every one exactly once, across segment rolls and
//! GC; corruption below the durable end is typed, a tail beyond it is not
//! looked at.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use wharf_log::storage::OpenMode;
use wharf_log::{
    CorruptionKind, DURABLE_END_FILE, Durability, FaultStorage, Follower, LogError, LogOptions, Partition,
    Storage,
};

const DIR: &str = "/data/p";

fn layout(fs: &FaultStorage) -> Vec<(u64, PathBuf, u64)> {
    let mut v = Vec::new();
    wharf_log::dump_with(fs, Path::new(DIR), 0, &mut |_| {}, &mut |r| {
        v.push((r.seq, r.file.to_path_buf(), r.offset));
        true
    })
    .expect("dump");
    v
}

#[test]
fn a_follower_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Follower>();
}

#[test]
fn a_follower_tails_a_group_commit_writer_and_sees_every_record_once_in_order_with_identical_bytes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let (p, _) = Partition::open(&dir, publishing(4096)).expect("open");
    let p = Arc::new(p);
    let f = Arc::new(Follower::open(&dir).expect("follower"));
    let (writers, per) = (4u64, 300u64);
    let done = Arc::new(AtomicBool::new(false));
    // The writer side also picks up the follower's watermark and GCs
    // while the follower reads.
    let gc = {
        let (p, done) = (p.clone(), done.clone());
        std::thread::spawn(move || {
            let mut deleted = 0;
            while !done.load(Ordering::Acquire) {
                let before = p.stats().segments;
                p.refresh_watermark().expect("refresh watermark");
                deleted += before.saturating_sub(p.stats().segments);
                std::thread::sleep(Duration::from_millis(1));
            }
            deleted
        })
    };
    let hs: Vec<_> = (0..writers)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..per {
                    let pl = format!("t{t}-i{i}-{}", "w".repeat((i % 50) as usize)).into_bytes();
                    let n = if i % 3 == 0 { 2 } else { 1 };
                    let batch: Vec<&[u8]> = (0..n).map(|_| pl.as_slice()).collect();
                    let a = p.append(&batch).expect("append");
                    for s in a.first_seq..=a.last_seq {
                        acked.push((s, pl.clone()));
                    }
                }
                acked
            })
        })
        .collect();
    let total: u64 = writers * (per + per.div_ceil(3));
    let mut seen: Vec<(u64, Vec<u8>)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (seen.len() as u64) < total {
        assert!(Instant::now() < deadline, "follower stuck at {}", seen.len());
        let from = seen.len() as u64;
        let recs = f.read(from, 37, 4096).expect("follower read");
        for r in recs {
            assert_eq!(r.seq, seen.len() as u64, "records arrive once, in order");
            seen.push((r.seq, r.payload));
        }
        if seen.len().is_multiple_of(5) {
            f.advance_watermark(seen.len() as u64).expect("advance");
        }
    }
    let acked: HashMap<u64, Vec<u8>> = hs.into_iter().flat_map(|h| h.join().expect("join")).collect();
    assert_eq!(acked.len() as u64, total);
    for (seq, pl) in &seen {
        assert_eq!(acked.get(seq), Some(pl), "seq {seq}");
    }
    f.advance_watermark(total).expect("advance");
    assert_eq!(p.refresh_watermark().expect("refresh"), total);
    done.store(true, Ordering::Release);
    let deleted = gc.join().expect("join");
    assert!(deleted > 0, "the writer deleted delivered segments while the follower read");
    assert_eq!(p.stats().segments, 1);
    assert_eq!(f.read(total, 10, 1 << 20).expect("read").len(), 0);
}

#[test]
fn a_follower_follows_segment_rolls_and_reads_from_anywhere() {
    let fs = FaultStorage::new();
    let (p, _) = mem_open(&fs, Path::new(DIR), publishing(300)).expect("open");
    let f = mem_follow(&fs, Path::new(DIR)).expect("follower");
    assert_eq!((f.next_seq(), f.first_seq()), (0, 0));
    let mut read = 0;
    for round in 0..10 {
        append_n(&p, 7);
        let recs = f.read(read, 1000, 1 << 20).expect("read");
        assert_eq!(recs.len(), 7, "round {round}");
        for r in recs {
            assert_eq!((r.seq, &r.payload), (read, &payload(read)));
            read += 1;
        }
    }
    let s = f.stats();
    assert!(s.segments > 5, "{s:?}");
    assert!(s.published);
    assert_eq!(s.next_seq, 70);
    for from in 0..70 {
        let r = f.read(from, 3, 1 << 20).expect("read");
        let want: Vec<u64> = (from..(from + 3).min(70)).collect();
        assert_eq!(r.iter().map(|r| r.seq).collect::<Vec<_>>(), want, "from {from}");
    }
    assert_eq!(follow_all(&f), read_all(&p));
}

#[test]
fn reads_respect_max_records_and_max_bytes_but_return_at_least_one_record() {
    let fs = FaultStorage::new();
    let (p, _) = mem_open(&fs, Path::new(DIR), publishing(1 << 20)).expect("open");
    let big = vec![7u8; 1000];
    for _ in 0..10 {
        p.append(&[&big]).expect("append");
    }
    let f = mem_follow(&fs, Path::new(DIR)).expect("follower");
    assert_eq!(f.read(0, 3, 1 << 20).expect("read").len(), 3);
    assert_eq!(f.read(0, 100, 2500).expect("read").len(), 2);
    assert_eq!(f.read(0, 100, 10).expect("read").len(), 1);
    assert_eq!(f.read(10, 100, 1 << 20).expect("read").len(), 0);
    assert_eq!(f.read(0, 0, 1 << 20).expect("read").len(), 0);
    // A record larger than the read buffer.
    let huge = vec![3u8; 600 << 10];
    p.append(&[&huge, b"after"]).expect("append");
    let r = f.read(10, 10, 1 << 30).expect("read");
    assert_eq!(r.iter().map(|r| r.payload.len()).collect::<Vec<_>>(), vec![600 << 10, 5]);
}

#[test]
fn a_follower_never_sees_records_before_they_are_durable() {
    let fs = FaultStorage::new();
    let opts = LogOptions { durability: Durability::Buffered, ..publishing(1 << 20) };
    let (p, _) = mem_open(&fs, Path::new(DIR), opts).expect("open");
    let f = mem_follow(&fs, Path::new(DIR)).expect("follower");
    p.append(&[b"a", b"b"]).expect("append");
    assert_eq!(p.read(0, 10, 1 << 20).expect("read").len(), 2, "the writer's own reads see them");
    assert_eq!(f.next_seq(), 0, "written, not fdatasync'ed: not for the follower");
    assert!(f.read(0, 10, 1 << 20).expect("read").is_empty());
    assert!(matches!(f.advance_watermark(1), Err(LogError::WatermarkBeyondEnd { requested: 1, acked: 0 })));
    assert_eq!(p.flush().expect("flush"), 2);
    assert_eq!(f.next_seq(), 2);
    assert_eq!(f.read(0, 10, 1 << 20).expect("read").len(), 2);
}

#[test]
fn the_writer_picks_up_the_followers_watermark_and_deletes_delivered_segments() {
    let fs = FaultStorage::new();
    let (p, _) = mem_open(&fs, Path::new(DIR), publishing(300)).expect("open");
    append_n(&p, 40);
    let f = mem_follow(&fs, Path::new(DIR)).expect("follower");
    let before = p.stats().segments;
    f.advance_watermark(25).expect("advance");
    assert_eq!(f.watermark(), 25);
    f.advance_watermark(10).expect("lower is ignored");
    assert_eq!(f.watermark(), 25);
    assert_eq!(p.stats().segments, before, "the follower deletes nothing");
    assert_eq!(p.refresh_watermark().expect("refresh"), 25);
    let s = p.stats();
    assert_eq!(s.watermark, 25);
    assert!(s.segments < before, "{before} -> {}", s.segments);
    assert!(p.first_seq() > 0 && p.first_seq() <= 25);
    assert_eq!(p.refresh_watermark().expect("refresh again"), 25);
    // The follower skips what was deleted below the watermark.
    assert_eq!(f.first_seq(), p.first_seq());
    assert_eq!(f.read(0, 1, 1 << 20).expect("read")[0].seq, p.first_seq());
    assert_eq!(f.read(25, 100, 1 << 20).expect("read").len(), 15);
    assert!(matches!(
        f.advance_watermark(41),
        Err(LogError::WatermarkBeyondEnd { requested: 41, acked: 40 })
    ));
    // Both reopen with the persisted value.
    drop((p, f));
    let (p, rec) = mem_open(&fs, Path::new(DIR), publishing(300)).expect("reopen");
    let f = mem_follow(&fs, Path::new(DIR)).expect("follower");
    assert_eq!((rec.watermark, p.watermark(), f.watermark()), (25, 25, 25));
    assert_eq!(follow_all(&f), read_all(&p));
}

#[test]
fn refresh_watermark_ignores_a_lower_value_and_rejects_one_beyond_the_durable_end() {
    let fs = FaultStorage::new();
    // A watermark file from a longer log, to plant in a shorter one.
    let (other, _) = mem_open(&fs, Path::new("/data/other"), publishing(1 << 20)).expect("open");
    append_n(&other, 50);
    other.advance_watermark(50).expect("advance");
    let beyond = fs.read(&Path::new("/data/other").join(wharf_log::WATERMARK_FILE)).expect("watermark");
    let (p, _) = mem_open(&fs, Path::new(DIR), publishing(1 << 20)).expect("open");
    append_n(&p, 10);
    p.advance_watermark(5).expect("advance");
    assert_eq!(p.refresh_watermark().expect("same value"), 5);
    let wm = Path::new(DIR).join(wharf_log::WATERMARK_FILE);
    fs.overwrite(&wm, beyond);
    let e = p.refresh_watermark().expect_err("beyond the end");
    let c = e.corruption().expect("typed corruption");
    assert_eq!((&c.file, c.kind.code()), (&wm, "bad_watermark"));
    assert_eq!(p.watermark(), 5, "not taken");
}

#[test]
fn a_corrupt_frame_below_the_durable_end_is_reported_with_segment_and_offset() {
    let fs = FaultStorage::new();
    let (p, _) = mem_open(&fs, Path::new(DIR), publishing(300)).expect("open");
    append_n(&p, 30);
    let f = mem_follow(&fs, Path::new(DIR)).expect("follower");
    assert_eq!(follow_all(&f).len(), 30);
    let l = layout(&fs);
    for i in [3usize, 29] {
        // One in a sealed segment, one in the active one, right below the end.
        let (_, file, off) = &l[i];
        flip_bit(&fs, file, *off as usize + 17);
        let e = f.read(0, 100, 1 << 20).expect_err("corrupt read");
        let c = e.corruption().expect("typed corruption");
        assert_eq!(
            (&c.file, c.offset, &c.kind),
            (file, *off, &CorruptionKind::ChecksumMismatch),
            "record {i}"
        );
        flip_bit(&fs, file, *off as usize + 17);
    }
    assert_eq!(follow_all(&f).len(), 30);
}

#[test]
fn bytes_beyond_the_durable_end_are_not_looked_at() {
    let fs = FaultStorage::new();
    let (p, _) = mem_open(&fs, Path::new(DIR), publishing(1 << 20)).expect("open");
    append_n(&p, 10);
    let f = mem_follow(&fs, Path::new(DIR)).expect("follower");
    let seg = segments(&fs, Path::new(DIR)).pop().expect("segment");
    // A write in progress: half a frame, then garbage.
    let mut half = Vec::new();
    wharf_log::frame::encode(10, &payload(10), &mut half);
    half.truncate(half.len() / 2);
    half.extend_from_slice(&[0xEE; 40]);
    let h = fs.open(&seg, OpenMode::Write).expect("open segment");
    h.append(&half).expect("append garbage");
    assert_eq!(f.next_seq(), 10);
    assert_eq!(follow_all(&f).len(), 10);
    f.advance_watermark(10).expect("advance");
}

#[test]
fn a_segment_shorter_than_the_published_end_is_a_truncated_record() {
    let fs = FaultStorage::new();
    let (p, _) = mem_open(&fs, Path::new(DIR), publishing(1 << 20)).expect("open");
    append_n(&p, 10);
    let l = layout(&fs);
    let (_, file, off) = l[6].clone();
    let f = mem_follow(&fs, Path::new(DIR)).expect("follower");
    let mut b = fs.read(&file).expect("file");
    b.truncate(off as usize + 9);
    fs.overwrite(&file, b);
    let c = f.read(0, 100, 1 << 20).expect_err("short").corruption().cloned().expect("typed");
    assert_eq!((c.file, c.kind.code()), (file, "truncated_record"));
    assert!(c.offset >= off, "{}", c.offset);
}

#[test]
fn a_missing_segment_at_or_above_the_read_position_is_a_sequence_gap() {
    let fs = FaultStorage::new();
    let (p, _) = mem_open(&fs, Path::new(DIR), publishing(300)).expect("open");
    append_n(&p, 40);
    let f = mem_follow(&fs, Path::new(DIR)).expect("follower");
    assert_eq!(f.read(0, 2, 1 << 20).expect("read").len(), 2);
    let segs = segments(&fs, Path::new(DIR));
    let l = layout(&fs);
    let lost = l.iter().find(|r| r.1 == segs[1]).expect("record").0;
    fs.remove_file(&segs[1]).expect("remove");
    let c = f.read(0, 1000, 1 << 20).expect_err("gap").corruption().cloned().expect("typed");
    assert_eq!((c.file, c.offset), (segs[2].clone(), 0));
    assert!(
        matches!(c.kind, CorruptionKind::SequenceGap { expected, .. } if expected == lost),
        "{:?}",
        c.kind
    );
    // The first segment vanishing (above the watermark) after the follower
    // listed it is a gap too.
    drop(f);
    let f = mem_follow(&fs, Path::new(DIR)).expect("follower");
    fs.remove_file(&segs[0]).expect("remove");
    let c = f.read(0, 1000, 1 << 20).expect_err("gap").corruption().cloned().expect("typed");
    assert_eq!((c.file, c.offset), (segs[2].clone(), 0));
    assert!(matches!(c.kind, CorruptionKind::SequenceGap { expected: 0, .. }), "{:?}", c.kind);
}

#[test]
fn a_second_follower_is_refused_while_the_first_is_alive() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let f = Follower::open(tmp.path()).expect("follower");
    assert!(matches!(Follower::open(tmp.path()), Err(LogError::FollowerLocked { .. })));
    // The writer's lock is a different one.
    let (_p, _) = Partition::open(tmp.path(), publishing(1 << 20)).expect("writer beside a follower");
    drop(f);
    let _f = Follower::open(tmp.path()).expect("follower after the first is gone");
}

#[test]
fn without_a_publishing_writer_a_follower_reads_only_sealed_segments() {
    let fs = FaultStorage::new();
    let dir = Path::new(DIR);
    let f = mem_follow(&fs, dir).expect("follower before any writer");
    assert_eq!(f.stats().next_seq, 0);
    {
        // An earlier run published, the next one does not: the stale value
        // is removed so it cannot hold the follower back.
        let (p, _) = mem_open(&fs, dir, publishing(300)).expect("open");
        append_n(&p, 3);
        assert!(fs.exists(&dir.join(DURABLE_END_FILE)));
    }
    let (p, _) = mem_open(&fs, dir, small_opts(300)).expect("open");
    assert!(!fs.exists(&dir.join(DURABLE_END_FILE)));
    append_n(&p, 37);
    let segs = segments(&fs, dir);
    let last = segs.last().expect("segment");
    let base: u64 =
        last.file_name().and_then(|n| n.to_str()).and_then(|n| n[..20].parse().ok()).expect("base");
    assert!(base > 3 && base < 40);
    let s = f.stats();
    assert_eq!((s.next_seq, s.published), (base, false));
    let got = follow_all(&f);
    assert_eq!(got.len() as u64, base);
    assert!(got.iter().all(|(s, pl)| pl == &payload(*s)));
    drop(p);
    // A publishing writer makes the rest visible.
    let (p, _) = mem_open(&fs, dir, publishing(300)).expect("open");
    assert_eq!(f.next_seq(), 40);
    assert!(f.stats().published);
    assert_eq!(follow_all(&f), read_all(&p));
}

#[test]
fn a_stale_published_end_never_goes_backward_or_past_the_log() {
    let fs = FaultStorage::new();
    let dir = Path::new(DIR);
    let (p, _) = mem_open(&fs, dir, publishing(300)).expect("open");
    append_n(&p, 20);
    let old = fs.read(&dir.join(DURABLE_END_FILE)).expect("published");
    append_n(&p, 20);
    let f = mem_follow(&fs, dir).expect("follower");
    assert_eq!(f.next_seq(), 40);
    // An older value (as a crash may bring back) is ignored.
    fs.overwrite(&dir.join(DURABLE_END_FILE), old);
    assert_eq!(f.next_seq(), 40);
    // A torn one too.
    let mut torn = fs.read(&dir.join(DURABLE_END_FILE)).expect("published");
    torn[20] ^= 0xff;
    fs.overwrite(&dir.join(DURABLE_END_FILE), torn);
    assert_eq!(f.next_seq(), 40);
    assert_eq!(follow_all(&f).len(), 40);
    append_n(&p, 1);
    assert_eq!(f.next_seq(), 41);
}

#[test]
fn salvage_refuses_to_run_while_a_follower_is_open_and_removes_the_published_end() {
    let fs = FaultStorage::new();
    let dir = Path::new(DIR);
    {
        let (p, _) = mem_open(&fs, dir, publishing(1 << 20)).expect("open");
        append_n(&p, 10);
    }
    let l = layout(&fs);
    flip_bit(&fs, &l[4].1, l[4].2 as usize + 20);
    let f = mem_follow(&fs, dir).expect("follower");
    assert!(matches!(wharf_log::salvage_with(&fs, dir, &mut |_| {}), Err(LogError::Locked { .. })));
    drop(f);
    wharf_log::salvage_with(&fs, dir, &mut |_| {}).expect("salvage");
    assert!(!fs.exists(&dir.join(DURABLE_END_FILE)));
    let (p, _) = mem_open(&fs, dir, publishing(1 << 20)).expect("open after salvage");
    let f = mem_follow(&fs, dir).expect("follower");
    assert_eq!(follow_all(&f), read_all(&p));
}
