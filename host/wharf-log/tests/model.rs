//! Property test: the log against an in-memory model (a Vec of payloads and
//! a watermark), through random Append / Read / AdvanceWatermark / Reopen /
//! Crash / CrashDuringAppend steps on the fault-injecting storage.

mod common;

use std::path::Path;

use common::*;
use proptest::prelude::*;
use wharf_log::{FaultStorage, LogOptions, Partition, Retention};

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Vec<u8>>),
    Read { from: u64, max: usize },
    Advance(u8),
    Reopen,
    Crash(u64),
    CrashDuringAppend { sync: u64, batch: Vec<Vec<u8>>, seed: u64 },
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

fn opts(retention: Retention) -> LogOptions {
    LogOptions { retention, ..small_opts(200) }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_log_behaves_like_a_vec_across_reopens_and_crashes(
        ops in prop::collection::vec(op(), 1..40),
        keep in prop_oneof![Just(Retention::KeepNothing), Just(Retention::KeepBytes(300))],
    ) {
        let fs = FaultStorage::new();
        let dir = Path::new("/data/p");
        let o = opts(keep);
        let mut m = Model { records: Vec::new(), watermark: 0 };
        let (mut p, _) = mem_open(&fs, dir, o).expect("open");
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
                    drop(p);
                    fs.crash(seed);
                    p = mem_open(&fs, dir, o).expect("recover").0;
                }
                Op::CrashDuringAppend { sync, batch, seed } => {
                    fs.crash_at_sync(sync);
                    let refs: Vec<&[u8]> = batch.iter().map(|x| x.as_slice()).collect();
                    let acked = p.append(&refs).is_ok() && !fs.is_down();
                    fs.clear_crash_points();
                    drop(p);
                    fs.crash(seed);
                    p = mem_open(&fs, dir, o).expect("recover").0;
                    let extra = p.next_seq() - m.records.len() as u64;
                    if acked {
                        prop_assert_eq!(extra, batch.len() as u64, "an acknowledged batch was lost");
                    }
                    // Unacknowledged records may survive, but only as a
                    // prefix of what was being appended.
                    prop_assert!(extra <= batch.len() as u64);
                    m.records.extend(batch.into_iter().take(extra as usize));
                }
            }
            check(&p, &m)?;
        }
    }
}
