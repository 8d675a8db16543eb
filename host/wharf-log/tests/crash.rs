//! Crash safety against the fault-injecting storage: a crash is injected at
//! every fsync point (and at every mutating operation of recovery and
//! salvage); un-synced bytes are dropped or torn. Every acknowledged record
//! must survive, and nothing unacknowledged may appear unless it is exactly
//! what was being appended. With a publishing writer, a follower tails the
//! workload: every record it was given must survive too (the published
//! durable end is never ahead of the disk), including through a follower
//! opened on the crashed state before the writer recovers.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use wharf_log::{FaultStorage, LogOptions, Rng};

struct Outcome {
    acked: Vec<Vec<u8>>,
    attempted: Vec<Vec<u8>>,
    watermark: u64,
    /// What a follower read while the workload ran (publishing writers).
    followed: Vec<(u64, Vec<u8>)>,
}

/// Reads what the follower has not seen yet; stops quietly once the
/// storage is down.
fn follow(f: Option<&wharf_log::Follower>, seen: &mut Vec<(u64, Vec<u8>)>) {
    let Some(f) = f else { return };
    if let Ok(recs) = f.read(seen.len() as u64, 1000, 1 << 20) {
        for r in recs {
            assert_eq!(r.seq, seen.len() as u64, "the follower got records out of order");
            seen.push((r.seq, r.payload));
        }
    }
}

/// Every record a follower was given is in the recovered log, unchanged.
fn check_followed(fs: &FaultStorage, dir: &Path, opts: LogOptions, followed: &[(u64, Vec<u8>)], ctx: &str) {
    let (p, _) = mem_open(fs, dir, opts).unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
    let got: HashMap<u64, Vec<u8>> = read_all(&p).into_iter().collect();
    for (seq, pl) in followed {
        if *seq >= p.first_seq() {
            assert_eq!(got.get(seq), Some(pl), "{ctx}: the follower saw seq {seq}, recovery lost it");
        } else {
            assert!(*seq < p.watermark(), "{ctx}: seq {seq} gone but not delivered");
        }
    }
}

/// Appends random batches, advancing the watermark now and then, until an
/// injected crash stops it (or 40 steps are done).
fn workload(fs: &FaultStorage, dir: &Path, opts: LogOptions, seed: u64) -> Outcome {
    let mut out = Outcome { acked: Vec::new(), attempted: Vec::new(), watermark: 0, followed: Vec::new() };
    let Ok((p, _)) = mem_open(fs, dir, opts) else { return out };
    let f = if opts.publish_durable_end { mem_follow(fs, dir).ok() } else { None };
    let base = p.next_seq() as usize;
    assert_eq!(base, 0);
    let mut rng = Rng::new(seed);
    for step in 0..40u64 {
        let n = 1 + rng.below(3) as usize;
        let batch: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("s{step}-{i}-{}", "z".repeat(rng.below(60) as usize)).into_bytes())
            .collect();
        let refs: Vec<&[u8]> = batch.iter().map(|b| b.as_slice()).collect();
        out.attempted.extend(batch.iter().cloned());
        match p.append(&refs) {
            Ok(a) => {
                assert!(a.synced);
                assert_eq!(a.first_seq as usize, out.acked.len());
                out.acked.extend(batch);
            }
            Err(_) => {
                follow(f.as_ref(), &mut out.followed);
                return out;
            }
        }
        follow(f.as_ref(), &mut out.followed);
        if step % 7 == 6 {
            let to = out.acked.len() as u64 - rng.below(3).min(out.acked.len() as u64);
            if p.advance_watermark(to).is_err() {
                return out;
            }
            out.watermark = out.watermark.max(to);
        }
    }
    out
}

fn check_recovered(fs: &FaultStorage, dir: &Path, opts: LogOptions, o: &Outcome, ctx: &str) {
    let (p, rec) = mem_open(fs, dir, opts).unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
    let next = rec.next_seq as usize;
    assert!(next >= o.acked.len(), "{ctx}: lost acked records: next_seq {next} < acked {}", o.acked.len());
    assert!(next <= o.attempted.len(), "{ctx}: records that were never appended appeared");
    assert!(
        rec.watermark >= o.watermark && rec.watermark as usize <= next,
        "{ctx}: watermark {}",
        rec.watermark
    );
    for (seq, payload) in read_all(&p) {
        assert!(seq >= rec.first_seq);
        assert_eq!(payload, o.attempted[seq as usize], "{ctx}: seq {seq} has foreign content");
    }
    let first = p.first_seq() as usize;
    assert_eq!(read_all(&p).len(), next - first, "{ctx}: holes in the log");
    let a = p.append(&[b"after"]).unwrap_or_else(|e| panic!("{ctx}: append after recovery: {e}"));
    assert_eq!(a.first_seq as usize, next);
}

fn every_acknowledged_record_survives_a_crash_at_every_point(opts: LogOptions, at_op: bool) {
    let dir = Path::new("/data/p");
    let mut k = 0;
    let mut followed = 0;
    loop {
        for seed in 0..3 {
            let fs = FaultStorage::new();
            if at_op {
                fs.crash_at_op(k);
            } else {
                fs.crash_at_sync(k);
            }
            let o = workload(&fs, dir, opts, seed);
            if !fs.is_down() {
                assert!(k > 50, "the workload should sync many times");
                if opts.publish_durable_end {
                    assert!(followed > 1000, "the follower should have read along ({followed})");
                }
                return;
            }
            fs.crash(k * 31 + seed);
            let ctx = format!("crash at {} {k}, seed {seed}", if at_op { "op" } else { "sync" });
            if opts.publish_durable_end {
                // A follower started on the crashed state, before the
                // writer recovers, must not get anything recovery drops.
                let before = mem_follow(&fs, dir).map(|f| follow_all(&f)).unwrap_or_default();
                assert!(before.len() <= o.attempted.len(), "{ctx}");
                check_followed(&fs, dir, opts, &before, &format!("{ctx}, follower before recovery"));
                check_followed(&fs, dir, opts, &o.followed, &ctx);
                followed += o.followed.len();
            }
            check_recovered(&fs, dir, opts, &o, &ctx);
        }
        k += 1;
    }
}

#[test]
fn every_acknowledged_record_survives_a_crash_at_every_fsync_point() {
    every_acknowledged_record_survives_a_crash_at_every_point(small_opts(256), false);
}

#[test]
fn a_follower_only_ever_gets_records_that_survive_a_crash_at_any_fsync_point() {
    every_acknowledged_record_survives_a_crash_at_every_point(publishing(256), false);
}

#[test]
fn a_follower_only_ever_gets_records_that_survive_a_crash_at_any_write() {
    // Every mutating operation, the durable-end pwrites included.
    every_acknowledged_record_survives_a_crash_at_every_point(publishing(256), true);
}

#[test]
fn a_crash_at_any_operation_during_recovery_still_recovers_deterministically() {
    crash_during_recovery(small_opts(256));
}

#[test]
fn a_crash_at_any_operation_during_recovery_with_publication_still_recovers_deterministically() {
    crash_during_recovery(publishing(256));
}

fn crash_during_recovery(opts: LogOptions) {
    let dir = Path::new("/data/p");
    let mut worked = 0;
    for seed in 0..8u64 {
        // Build a log with an un-synced, torn tail.
        let fs = FaultStorage::new();
        fs.crash_at_sync(25 + seed);
        let o = workload(&fs, dir, opts, seed);
        fs.crash(seed + 100);
        // Recovery is deterministic: every interrupted attempt must end
        // where an uninterrupted one on a copy of the same state ends.
        let reference = {
            let copy = fs.deep_copy();
            let (p, rec) = mem_open(&copy, dir, opts).expect("reference open");
            (rec.next_seq, read_all(&p))
        };
        let mut k = 0;
        loop {
            fs.crash_at_op(k);
            let r = mem_open(&fs, dir, opts);
            let done = r.is_ok() && !fs.is_down();
            if done {
                fs.clear_crash_points();
                let (p, rec) = r.expect("checked");
                assert_eq!((rec.next_seq, read_all(&p)), reference, "seed {seed}: crash at op {k}");
                break;
            }
            drop(r);
            fs.crash(k);
            k += 1;
        }
        worked += usize::from(k > 0);
        check_recovered(&fs, dir, opts, &o, &format!("seed {seed}"));
    }
    assert!(worked >= 3, "recovery should have had work to do in most cases ({worked})");
}

#[test]
fn concurrent_writers_lose_no_acknowledged_record_when_the_machine_crashes() {
    let opts = small_opts(512);
    let dir = Path::new("/data/p");
    for k in [3u64, 10, 17, 40, 77] {
        let fs = FaultStorage::new();
        let (p, _) = mem_open(&fs, dir, opts).expect("open");
        let p = Arc::new(p);
        fs.crash_at_sync(k);
        let acked = Arc::new(Mutex::new(HashMap::new()));
        let hs: Vec<_> = (0..6)
            .map(|t| {
                let (p, acked) = (p.clone(), acked.clone());
                std::thread::spawn(move || {
                    for i in 0..40 {
                        let pl = format!("t{t}-i{i}").into_bytes();
                        match p.append(&[&pl]) {
                            Ok(a) => {
                                acked.lock().expect("lock").insert(a.first_seq, pl);
                            }
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().expect("join");
        }
        drop(p);
        fs.crash(k);
        let (p, _) = mem_open(&fs, dir, opts).expect("reopen");
        let got: HashMap<u64, Vec<u8>> = read_all(&p).into_iter().collect();
        let acked = acked.lock().expect("lock");
        for (seq, pl) in acked.iter() {
            assert_eq!(got.get(seq), Some(pl), "crash at sync {k}: acked seq {seq} lost");
        }
        for (seq, pl) in &got {
            let s = String::from_utf8(pl.clone()).expect("utf8");
            assert!(s.starts_with('t') && s.contains("-i"), "seq {seq}: foreign content {s:?}");
        }
    }
}

#[test]
fn records_a_restarted_writer_acknowledges_survive_a_later_power_loss() {
    // A process crash leaves written, never fdatasync'ed frames in the page
    // cache; the next open acknowledges (and publishes) them, so it must
    // make them durable first.
    let dir = Path::new("/data/p");
    let buffered = LogOptions { durability: wharf_log::Durability::Buffered, ..publishing(1 << 20) };
    for seed in 0..20u64 {
        let fs = FaultStorage::new();
        {
            let (p, _) = mem_open(&fs, dir, buffered).expect("open");
            append_n(&p, 10);
        } // the process dies: nothing was fdatasync'ed, the page cache stays
        let (_p, rec) = mem_open(&fs, dir, publishing(1 << 20)).expect("restart");
        assert_eq!(rec.next_seq, 10);
        let f = mem_follow(&fs, dir).expect("follower");
        let seen = follow_all(&f);
        assert_eq!(seen.len(), 10);
        drop((f, _p));
        fs.crash(seed);
        check_followed(&fs, dir, publishing(1 << 20), &seen, &format!("seed {seed}"));
    }
}
