//! Property test: the log against an in-memory model (a Vec of payloads and
//! a watermark), through random Append / Read / AdvanceWatermark / Reopen /
//! Crash / CrashDuringAppend steps on the fault-injecting storage, with a
//! follower beside the writer (as in another process: it stays open across
//! writer reopens, and restarts with it after a crash) that reads and
//! advances the watermark, which the writer picks up.

mod common;

use std::path::Path;

use common::*;
use proptest::prelude::*;
use wharf_log::{FaultStorage, Follower, LogError, LogOptions, Partition, Retention};

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Vec<u8>>),
    Read { from: u64, max: usize },
    Advance(u8),
    Reopen,
    Crash(u64),
    CrashDuringAppend { sync: u64, batch: Vec<Vec<u8>>, seed: u64 },
    FollowerRead { from: u64, max: usize },
    FollowerAdvance(u8),
}

fn batch() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 1..4)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => batch().prop_map(Op::Append),
        2 => (0u64..60, 1usize..20).prop_map(|(from, max)| Op::Read { from, max }),
        2 => any::<u8>().prop_map(Op::Advance),
        1 => Just(Op::Reopen),
        1 => any::<u64>().prop_map(Op::Crash),
        1 => (0u64..3, batch(), any::<u64>()).prop_map(|(sync, batch, seed)| Op::CrashDuringAppend { sync, batch, seed }),
        2 => (0u64..60, 1usize..20).prop_map(|(from, max)| Op::FollowerRead { from, max }),
        2 => any::<u8>().prop_map(Op::FollowerAdvance),
    ]
}

struct Model {
    records: Vec<Vec<u8>>,
    watermark: u64,
}

fn check(p: &Partition, m: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(p.next_seq(), m.records.len() as u64);
    prop_assert_eq!(p.watermark(), m.watermark);
    prop_assert!(p.first_seq() <= m.watermark || p.first_seq() == 0);
    let got = read_all(p);
    let first = p.first_seq() as usize;
    prop_assert_eq!(got.len(), m.records.len() - first);
    for (seq, payload) in got {
        prop_assert_eq!(&payload, &m.records[seq as usize]);
    }
    Ok(())
}

/// The follower's records are the model's, consecutive, up to its durable
/// end: everything with a publishing writer, sealed segments without.
fn check_follower(f: &Follower, m: &Model, publish: bool) -> Result<(), TestCaseError> {
    let end = f.next_seq();
    if publish {
        prop_assert_eq!(end, m.records.len() as u64);
    } else {
        prop_assert!(end <= m.records.len() as u64);
    }
    prop_assert!(f.watermark() <= m.watermark);
    let got = follow_all(f);
    if let (Some(first), Some(last)) = (got.first(), got.last()) {
        prop_assert_eq!(last.0 + 1, end);
        prop_assert_eq!(got.len() as u64, end - first.0);
    }
    for (seq, payload) in got {
        prop_assert_eq!(&payload, &m.records[seq as usize]);
    }
    Ok(())
}

fn opts(retention: Retention, publish_durable_end: bool) -> LogOptions {
    LogOptions { retention, publish_durable_end, ..small_opts(200) }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_log_behaves_like_a_vec_across_reopens_and_crashes(
        ops in prop::collection::vec(op(), 1..40),
        keep in prop_oneof![Just(Retention::KeepNothing), Just(Retention::KeepBytes(300))],
        publish in any::<bool>(),
    ) {
        let fs = FaultStorage::new();
        let dir = Path::new("/data/p");
        let o = opts(keep, publish);
        let mut m = Model { records: Vec::new(), watermark: 0 };
        let (mut p, _) = mem_open(&fs, dir, o).expect("open");
        let mut f = mem_follow(&fs, dir).expect("follower");
        for op in ops {
            match op {
                Op::Append(b) => {
                    let refs: Vec<&[u8]> = b.iter().map(|x| x.as_slice()).collect();
                    let a = p.append(&refs).expect("append");
                    prop_assert_eq!(a.first_seq, m.records.len() as u64);
                    prop_assert!(a.synced && a.synced_through > a.last_seq);
                    m.records.extend(b);
                }
                Op::Read { from, max } => {
                    let r = p.read(from, max, 1 << 20).expect("read");
                    let start = from.max(p.first_seq());
                    let want: Vec<u64> = (start..m.records.len() as u64).take(max).collect();
                    prop_assert_eq!(r.iter().map(|r| r.seq).collect::<Vec<_>>(), want);
                }
                Op::Advance(x) => {
                    let to = (m.records.len() as u64 * u64::from(x)) / 255;
                    p.advance_watermark(to).expect("advance");
                    m.watermark = m.watermark.max(to);
                }
                Op::Reopen => {
                    drop(p);
                    p = mem_open(&fs, dir, o).expect("reopen").0;
                }
                Op::Crash(seed) => {
                    drop((p, f));
                    fs.crash(seed);
                    p = mem_open(&fs, dir, o).expect("recover").0;
                    f = mem_follow(&fs, dir).expect("follower");
                }
                Op::CrashDuringAppend { sync, batch, seed } => {
                    fs.crash_at_sync(sync);
                    let refs: Vec<&[u8]> = batch.iter().map(|x| x.as_slice()).collect();
                    let acked = p.append(&refs).is_ok() && !fs.is_down();
                    fs.clear_crash_points();
                    drop((p, f));
                    fs.crash(seed);
                    p = mem_open(&fs, dir, o).expect("recover").0;
                    f = mem_follow(&fs, dir).expect("follower");
                    let extra = p.next_seq() - m.records.len() as u64;
                    if acked {
                        prop_assert_eq!(extra, batch.len() as u64, "an acknowledged batch was lost");
                    }
                    // Unacknowledged records may survive, but only as a
                    // prefix of what was being appended.
                    prop_assert!(extra <= batch.len() as u64);
                    m.records.extend(batch.into_iter().take(extra as usize));
                }
                Op::FollowerRead { from, max } => {
                    let r = f.read(from, max, 1 << 20).expect("follower read");
                    let end = f.next_seq();
                    // Records below the writer's first_seq may still be
                    // served through a handle the follower holds.
                    if let Some(first) = r.first() {
                        prop_assert!(first.seq >= from && first.seq <= from.max(p.first_seq()));
                        let want: Vec<u64> = (first.seq..end).take(max).collect();
                        prop_assert_eq!(r.iter().map(|r| r.seq).collect::<Vec<_>>(), want);
                    } else {
                        // Nothing left in [from, end): beyond it, or
                        // delivered and deleted.
                        prop_assert!(from >= end || end <= p.first_seq());
                    }
                    for rec in r {
                        prop_assert_eq!(&rec.payload, &m.records[rec.seq as usize]);
                    }
                }
                Op::FollowerAdvance(x) => {
                    let to = (m.records.len() as u64 * u64::from(x)) / 255;
                    match f.advance_watermark(to) {
                        Ok(()) => m.watermark = m.watermark.max(to),
                        Err(LogError::WatermarkBeyondEnd { .. }) => prop_assert!(!publish && to > f.next_seq()),
                        Err(e) => return Err(TestCaseError::fail(format!("follower advance: {e}"))),
                    }
                    prop_assert_eq!(p.refresh_watermark().expect("refresh"), m.watermark);
                }
            }
            check(&p, &m)?;
            check_follower(&f, &m, publish)?;
        }
    }
}
