//! Behaviour of an open partition: append, read, reopen, roll, watermark,
//! GC and retention, group commit, halting.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use wharf_log::{Durability, FaultStorage, LogError, LogOptions, Partition, Retention};

#[test]
fn a_partition_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Partition>();
}

#[test]
fn a_new_partition_starts_at_sequence_zero_and_reads_back_what_was_appended() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p0");
    let (p, rec) = Partition::open(&dir, LogOptions::default()).expect("open");
    assert_eq!((rec.next_seq, rec.watermark, rec.truncated_tail.clone()), (0, 0, None));
    let a = p.append(&[b"a", b"bb", b"ccc"]).expect("append");
    assert_eq!((a.first_seq, a.last_seq, a.synced, a.synced_through), (0, 2, true, 3));
    let b = p.append(&[b"d"]).expect("append");
    assert_eq!(b.first_seq, 3);
    let recs = p.read(1, 10, 1 << 20).expect("read");
    assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(recs[0].payload, b"bb");
    drop(p);
    let (p, rec) = Partition::open(&dir, LogOptions::default()).expect("reopen");
    assert_eq!(rec.next_seq, 4);
    assert_eq!(p.next_seq(), 4);
    assert_eq!(read_all(&p).len(), 4);
}

#[test]
fn a_second_open_of_the_same_partition_is_refused_while_the_first_is_alive() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_p, _) = Partition::open(tmp.path(), LogOptions::default()).expect("open");
    assert!(matches!(Partition::open(tmp.path(), LogOptions::default()), Err(LogError::Locked { .. })));
}

#[test]
fn reads_respect_max_records_and_max_bytes_but_return_at_least_one_record() {
    let fs = FaultStorage::new();
    let (p, _) = mem_open(&fs, Path::new("/d"), LogOptions::default()).expect("open");
    let big = vec![7u8; 1000];
    for _ in 0..10 {
        p.append(&[&big]).expect("append");
    }
    assert_eq!(p.read(0, 3, 1 << 20).expect("read").len(), 3);
    assert_eq!(p.read(0, 100, 2500).expect("read").len(), 2);
    assert_eq!(p.read(0, 100, 10).expect("read").len(), 1);
    assert_eq!(p.read(10, 100, 1 << 20).expect("read").len(), 0);
    assert_eq!(p.read(99, 100, 1 << 20).expect("read").len(), 0);
}

#[test]
fn segments_roll_by_size_and_sequences_stay_dense_across_them() {
    let fs = FaultStorage::new();
    let dir = Path::new("/d");
    let (p, _) = mem_open(&fs, dir, small_opts(300)).expect("open");
    append_n(&p, 50);
    assert!(p.stats().segments > 5, "{:?}", p.stats());
    let all = read_all(&p);
    assert_eq!(all.len(), 50);
    for (i, (seq, pl)) in all.iter().enumerate() {
        assert_eq!(*seq, i as u64);
        assert_eq!(pl, &payload(*seq));
    }
    // Reading from the middle of any segment works.
    for from in 0..50 {
        let r = p.read(from, 1, 1 << 20).expect("read");
        assert_eq!(r[0].seq, from);
    }
    drop(p);
    let (p, rec) = mem_open(&fs, dir, small_opts(300)).expect("reopen");
    assert_eq!(rec.next_seq, 50);
    assert_eq!(read_all(&p), all);
}

#[test]
fn a_batch_larger_than_a_segment_gets_a_segment_of_its_own() {
    let fs = FaultStorage::new();
    let (p, _) = mem_open(&fs, Path::new("/d"), small_opts(100)).expect("open");
    let big = vec![1u8; 500];
    p.append(&[b"x"]).expect("append");
    p.append(&[&big, &big]).expect("append");
    p.append(&[b"y"]).expect("append");
    assert_eq!(read_all(&p).len(), 4);
    assert_eq!(p.stats().segments, 3);
}

#[test]
fn the_watermark_is_persisted_never_moves_backward_and_gcs_delivered_segments() {
    let fs = FaultStorage::new();
    let dir = Path::new("/d");
    let (p, _) = mem_open(&fs, dir, small_opts(300)).expect("open");
    append_n(&p, 40);
    let before = p.stats().segments;
    p.advance_watermark(25).expect("advance");
    assert_eq!(p.watermark(), 25);
    p.advance_watermark(10).expect("lower is ignored");
    assert_eq!(p.watermark(), 25);
    let after = p.stats().segments;
    assert!(after < before, "{before} -> {after}");
    assert!(p.first_seq() <= 25 && p.first_seq() > 0);
    // Everything from the watermark on is still readable.
    let r = p.read(25, 100, 1 << 20).expect("read");
    assert_eq!(r.first().map(|r| r.seq), Some(25));
    assert!(matches!(
        p.advance_watermark(41),
        Err(LogError::WatermarkBeyondEnd { requested: 41, acked: 40 })
    ));
    drop(p);
    let (p, rec) = mem_open(&fs, dir, small_opts(300)).expect("reopen");
    assert_eq!((rec.watermark, p.watermark()), (25, 25));
    assert_eq!(rec.first_seq, p.first_seq());
    // Reading below first_seq skips to what exists.
    assert_eq!(p.read(0, 1, 1 << 20).expect("read")[0].seq, p.first_seq());
    p.advance_watermark(40).expect("advance to end");
    assert_eq!(p.stats().segments, 1, "the active segment always stays");
    append_n(&p, 1);
    assert_eq!(p.next_seq(), 41);
}

#[test]
fn retention_by_bytes_keeps_the_newest_delivered_segments() {
    let fs = FaultStorage::new();
    let opts = LogOptions { retention: Retention::KeepBytes(700), ..small_opts(300) };
    let (p, _) = mem_open(&fs, Path::new("/d"), opts).expect("open");
    append_n(&p, 60);
    p.advance_watermark(60).expect("advance");
    let s = p.stats();
    assert!(s.segments >= 2 && s.segments <= 5, "{s:?}");
    assert!(s.first_seq > 0);
}

#[test]
fn retention_by_age_keeps_recent_segments_until_they_age() {
    let fs = FaultStorage::new();
    let opts = LogOptions { retention: Retention::KeepFor(Duration::from_secs(3600)), ..small_opts(300) };
    let (p, _) = mem_open(&fs, Path::new("/d"), opts).expect("open");
    append_n(&p, 60);
    let n = p.stats().segments;
    p.advance_watermark(60).expect("advance");
    assert_eq!(p.stats().segments, n, "nothing is an hour old yet");
    drop(p);
    let opts = LogOptions { retention: Retention::KeepFor(Duration::ZERO), ..small_opts(300) };
    let (p, rec) = mem_open(&fs, Path::new("/d"), opts).expect("open");
    assert_eq!(p.stats().segments, 1);
    assert_eq!(rec.deleted_segments.len(), n - 1);
}

#[test]
fn retention_within_both_limits_deletes_what_either_limit_no_longer_keeps() {
    let fs = FaultStorage::new();
    let within = |max_age, max_bytes| LogOptions {
        retention: Retention::Within { max_age, max_bytes },
        ..small_opts(300)
    };
    let (p, _) =
        mem_open(&fs, Path::new("/d"), within(Some(Duration::from_secs(3600)), Some(700))).expect("open");
    append_n(&p, 60);
    p.advance_watermark(60).expect("advance");
    let s = p.stats();
    assert!(s.segments >= 2 && s.segments <= 5 && s.first_seq > 0, "the byte limit applies: {s:?}");
    drop(p);
    // No byte limit, an hour of age: everything delivered stays ...
    let (p, _) = mem_open(&fs, Path::new("/d"), within(Some(Duration::from_secs(3600)), None)).expect("open");
    let kept = p.stats().segments;
    append_n(&p, 60);
    p.advance_watermark(120).expect("advance");
    assert!(p.stats().segments > kept, "nothing is an hour old");
    drop(p);
    // ... until the age limit passes, without any new delivery.
    let (p, _) = mem_open(&fs, Path::new("/d"), within(None, None)).expect("open");
    assert_eq!(p.apply_retention().expect("apply"), 0, "no limit: nothing delivered goes");
    drop(p);
    let (p, _) = mem_open(&fs, Path::new("/d"), within(Some(Duration::from_secs(3600)), None)).expect("open");
    let n = p.stats().segments;
    assert_eq!(p.apply_retention().expect("apply"), 0);
    drop(p);
    let (p, _) = mem_open(&fs, Path::new("/d"), within(Some(Duration::ZERO), None)).expect("open");
    assert_eq!(p.stats().segments, 1, "{n} segments aged out at open");
}

#[test]
fn the_history_floor_keeps_delivered_segments_a_rewind_still_reads() {
    let fs = FaultStorage::new();
    let (p, _) = mem_open(&fs, Path::new("/d"), small_opts(300)).expect("open");
    append_n(&p, 60);
    p.hold_history_from(Some(10));
    p.advance_watermark(60).expect("advance");
    assert!(p.first_seq() <= 10, "record 10 is still readable: first {}", p.first_seq());
    assert_eq!(p.read(10, 1, 1 << 20).expect("read")[0].seq, 10);
    p.hold_history_from(Some(40));
    assert!(p.apply_retention().expect("apply") > 0, "the floor moved: older segments go");
    assert!(p.first_seq() > 10 && p.first_seq() <= 40, "first {}", p.first_seq());
    p.hold_history_from(None);
    p.apply_retention().expect("apply");
    assert_eq!(p.stats().segments, 1);
}

#[test]
fn buffered_appends_say_they_are_not_synced_and_advancing_the_watermark_syncs_first() {
    let fs = FaultStorage::new();
    let opts = LogOptions { durability: Durability::Buffered, ..LogOptions::default() };
    let (p, _) = mem_open(&fs, Path::new("/d"), opts).expect("open");
    let a = p.append(&[b"a", b"b"]).expect("append");
    assert!(!a.synced);
    assert_eq!(a.synced_through, 0);
    assert_eq!(p.read(0, 10, 1 << 20).expect("read").len(), 2, "buffered acks are readable");
    assert_eq!(p.stats().fsyncs, 0);
    p.advance_watermark(2).expect("advance");
    assert_eq!(p.stats().synced_seq, 2);
    drop(p);
    fs.crash(1);
    let (p, rec) = mem_open(&fs, Path::new("/d"), opts).expect("open");
    assert_eq!((rec.next_seq, rec.watermark), (2, 2));
    assert_eq!(p.next_seq(), 2);
}

#[test]
fn many_concurrent_writers_share_fsyncs_through_group_commit() {
    let fs = FaultStorage::new();
    fs.set_sync_delay(Duration::from_millis(2));
    let (p, _) = mem_open(&fs, Path::new("/d"), LogOptions::default()).expect("open");
    let p = Arc::new(p);
    let threads = 16;
    let per = 25;
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut seqs = Vec::new();
                for i in 0..per {
                    let a = p.append(&[format!("t{t}-{i}").as_bytes()]).expect("append");
                    assert!(a.synced && a.synced_through > a.last_seq);
                    seqs.push(a.first_seq);
                }
                seqs
            })
        })
        .collect();
    let mut all: Vec<u64> = hs.into_iter().flat_map(|h| h.join().expect("join")).collect();
    all.sort();
    assert_eq!(all, (0..(threads * per) as u64).collect::<Vec<_>>());
    let s = p.stats();
    assert_eq!(s.appends, (threads * per) as u64);
    assert!(s.fsyncs * 3 < s.appends, "expected shared fsyncs: {} fsyncs for {} acks", s.fsyncs, s.appends);
    assert_eq!(read_all(&p).len(), threads * per);
}

#[test]
fn a_failed_group_commit_wakes_every_waiting_writer_with_an_error() {
    let fs = FaultStorage::new();
    fs.set_sync_delay(Duration::from_millis(2));
    let (p, _) = mem_open(&fs, Path::new("/d"), LogOptions::default()).expect("open");
    let p = Arc::new(p);
    append_n(&p, 1);
    fs.crash_at_sync(3);
    let (tx, rx) = std::sync::mpsc::channel();
    for t in 0..16 {
        let (p, tx) = (p.clone(), tx.clone());
        std::thread::spawn(move || {
            let mut ok = 0;
            for i in 0..20 {
                match p.append(&[format!("{t}-{i}").as_bytes()]) {
                    Ok(_) => ok += 1,
                    Err(_) => break,
                }
            }
            tx.send(ok).expect("send");
        });
    }
    let mut acked = 0;
    for _ in 0..16 {
        acked += rx.recv_timeout(Duration::from_secs(20)).expect("a writer hung after the failed fdatasync");
    }
    assert!(p.stats().halted.is_some());
    assert!(acked < 16 * 20);
    assert_eq!(p.stats().synced_seq, 1 + acked as u64, "every ack is covered by a successful fdatasync");
}

#[test]
fn readers_running_beside_writers_only_see_acknowledged_records_in_order() {
    let fs = FaultStorage::new();
    let (p, _) = mem_open(&fs, Path::new("/d"), small_opts(4096)).expect("open");
    let p = Arc::new(p);
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    p.append(&[b"0123456789abcdef0123456789abcdef"]).expect("append");
                }
            })
        })
        .collect();
    let reader = {
        let p = p.clone();
        std::thread::spawn(move || {
            let mut next = 0;
            while next < 800 {
                let acked = p.stats().acked_seq;
                for r in p.read(next, 50, 1 << 20).expect("read") {
                    assert_eq!(r.seq, next);
                    assert!(r.seq < p.stats().acked_seq.max(acked));
                    next += 1;
                }
            }
        })
    };
    for w in writers {
        w.join().expect("join");
    }
    reader.join().expect("join");
}

#[test]
fn a_failed_fdatasync_halts_the_partition_and_reopening_recovers() {
    let fs = FaultStorage::new();
    let dir = Path::new("/d");
    let (p, _) = mem_open(&fs, dir, LogOptions::default()).expect("open");
    append_n(&p, 3);
    fs.crash_at_sync(0);
    assert!(p.append(&[b"lost"]).is_err());
    assert!(matches!(p.append(&[b"more"]), Err(LogError::Halted { .. })));
    assert!(p.stats().halted.is_some());
    drop(p);
    fs.crash(7);
    let (p, rec) = mem_open(&fs, dir, LogOptions::default()).expect("reopen");
    assert!(rec.next_seq >= 3);
    let all = read_all(&p);
    assert_eq!(&all[..3], &[(0, payload(0)), (1, payload(1)), (2, payload(2))]);
    p.append(&[b"again"]).expect("append after reopen");
}

#[test]
fn records_larger_than_the_read_buffer_read_back_intact() {
    let fs = FaultStorage::new();
    let (p, _) = mem_open(&fs, Path::new("/d"), LogOptions::default()).expect("open");
    let big: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    p.append(&[b"small", &big, b"after"]).expect("append");
    p.append(&[&big]).expect("append");
    let r = p.read(0, 10, usize::MAX).expect("read");
    assert_eq!(r.len(), 4);
    assert_eq!(r[1].payload, big);
    assert_eq!(r[2].payload, b"after");
    assert_eq!(p.read(3, 10, 1).expect("read")[0].payload, big);
}

/// Reads size their pread from the records wanted and the segment's mean
/// frame: every start and count over records of very different sizes
/// (tiny ones around big ones, so a guess is both too large and too small)
/// reads back exactly the records asked for, in the active segment and in
/// sealed, adopted ones after a reopen.
#[test]
fn reads_of_any_start_and_count_over_mixed_sizes_return_exactly_those_records() {
    let fs = FaultStorage::new();
    let dir = Path::new("/d");
    let opts = LogOptions { segment_max_bytes: 1 << 20, ..LogOptions::default() };
    let sizes = [5usize, 3_000, 70_000, 1, 300_000, 40, 9_000, 120_000, 2, 17];
    let body = |i: usize| -> Vec<u8> { vec![(i % 251) as u8; sizes[i % sizes.len()]] };
    let n = 40;
    {
        let (p, _) = mem_open(&fs, dir, opts).expect("open");
        for i in 0..n {
            p.append(&[&body(i)]).expect("append");
        }
        check_every_read(&p, n, &body);
    }
    let (p, _) = mem_open(&fs, dir, opts).expect("reopen");
    check_every_read(&p, n, &body);
}

fn check_every_read(p: &Partition, n: usize, body: &dyn Fn(usize) -> Vec<u8>) {
    for from in 0..n {
        for max in [1, 2, 3, 7, n] {
            let got = p.read(from as u64, max, usize::MAX).expect("read");
            let want: Vec<usize> = (from..n.min(from + max)).collect();
            let seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
            assert_eq!(seqs, want.iter().map(|&i| i as u64).collect::<Vec<_>>(), "from {from}, max {max}");
            for (r, i) in got.iter().zip(want) {
                assert!(r.payload == body(i), "record {i} read from {from}, max {max}");
            }
        }
    }
}

#[test]
fn empty_and_oversized_batches_are_rejected() {
    let fs = FaultStorage::new();
    let (p, _) = mem_open(&fs, Path::new("/d"), LogOptions::default()).expect("open");
    assert!(matches!(p.append(&[]), Err(LogError::EmptyBatch)));
    let huge = vec![0u8; wharf_log::MAX_RECORD_LEN + 1];
    assert!(matches!(p.append(&[&huge]), Err(LogError::RecordTooLarge { .. })));
    assert_eq!(p.next_seq(), 0);
}

/// `append_stamped` hands each record its sequence, in sequence order
/// across concurrent appenders, and stores what the stamp wrote.
#[test]
fn stamps_run_in_sequence_order_across_concurrent_appenders_and_are_stored() {
    for durability in [Durability::Fsync, Durability::Buffered] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let opts = LogOptions { durability, ..LogOptions::default() };
        let (p, _) = Partition::open(&tmp.path().join("p0"), opts).expect("open");
        let p = Arc::new(p);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (p, seen) = (p.clone(), seen.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let mut stamp = |seq: u64, bytes: &mut Vec<u8>| {
                            seen.lock().expect("lock").push(seq);
                            bytes[..8].copy_from_slice(&seq.to_le_bytes());
                        };
                        p.append_stamped(&[&[0u8; 12], &[0u8; 12]], &mut stamp).expect("append");
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().expect("join"));
        p.flush().expect("flush");
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen, (0..400).collect::<Vec<u64>>(), "{durability:?}: one call per record, in order");
        for (seq, payload) in read_all(&p) {
            assert_eq!(payload[..8], seq.to_le_bytes(), "{durability:?}: seq {seq} stored as stamped");
        }
    }
}
