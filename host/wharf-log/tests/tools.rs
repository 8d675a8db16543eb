//! Operator tools: verify, dump, salvage, and the CLI logic on top.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use wharf_log::cli;
use wharf_log::{FaultStorage, LogError, LogOptions, Partition, Storage, salvage_with, verify_with};

fn offsets(fs: &FaultStorage, dir: &Path) -> Vec<(u64, PathBuf, u64)> {
    let mut v = Vec::new();
    wharf_log::dump_with(fs, dir, 0, &mut |_| {}, &mut |r| {
        v.push((r.seq, r.file.to_path_buf(), r.offset));
        true
    })
    .expect("dump");
    v
}

fn build(fs: &FaultStorage, dir: &Path, n: u64, max: u64) {
    let (p, _) = mem_open(fs, dir, small_opts(max)).expect("open");
    append_n(&p, n);
}

#[test]
fn verify_finds_every_partition_under_a_data_dir_and_reports_clean() {
    let fs = FaultStorage::new();
    build(&fs, Path::new("/data/orders/0"), 5, 1 << 20);
    build(&fs, Path::new("/data/orders/1"), 7, 200);
    build(&fs, Path::new("/data/audit/0"), 0, 1 << 20);
    let r = verify_with(&fs, Path::new("/data"), &mut |_| {}).expect("verify");
    assert!(r.is_clean());
    let dirs: Vec<_> = r.partitions.iter().map(|p| p.dir.to_string_lossy().into_owned()).collect();
    assert_eq!(dirs, ["/data/audit/0", "/data/orders/0", "/data/orders/1"]);
    assert_eq!(r.partitions.iter().map(|p| p.records).sum::<u64>(), 12);
    assert_eq!(r.partitions[2].next_seq, Some(7));
}

#[test]
fn verify_reports_every_problem_with_file_offset_and_kind_and_keeps_going() {
    let fs = FaultStorage::new();
    let dir = Path::new("/data/p");
    build(&fs, dir, 40, 300);
    build(&fs, Path::new("/data/q"), 3, 300);
    let o = offsets(&fs, dir);
    flip_bit(&fs, &o[2].1, o[2].2 as usize + 20);
    flip_bit(&fs, &o[30].1, o[30].2 as usize + 20);
    let r = verify_with(&fs, Path::new("/data"), &mut |_| {}).expect("verify");
    assert!(!r.is_clean());
    let got: Vec<_> = r.problems().map(|c| (c.file.clone(), c.offset, c.kind.code())).collect();
    assert_eq!(
        got,
        vec![(o[2].1.clone(), o[2].2, "checksum_mismatch"), (o[30].1.clone(), o[30].2, "checksum_mismatch")]
    );
    // The damaged partition still reports the right end, resynchronised.
    assert_eq!(r.partitions[0].next_seq, Some(40));
    assert_eq!(r.partitions[0].records, 38);
}

#[test]
fn dump_lists_records_from_a_sequence() {
    let fs = FaultStorage::new();
    let dir = Path::new("/p");
    build(&fs, dir, 10, 200);
    let mut seqs = Vec::new();
    let n = wharf_log::dump_with(&fs, dir, 4, &mut |_| {}, &mut |r| {
        assert_eq!(r.payload, payload(r.seq).as_slice());
        seqs.push(r.seq);
        seqs.len() < 3
    })
    .expect("dump");
    assert_eq!((n, seqs), (3, vec![4, 5, 6]));
}

#[test]
fn salvage_moves_a_corrupt_middle_record_aside_and_the_partition_opens_with_an_explicit_gap() {
    let fs = FaultStorage::new();
    let dir = Path::new("/p");
    build(&fs, dir, 10, 1 << 20);
    let o = offsets(&fs, dir);
    flip_bit(&fs, &o[5].1, o[5].2 as usize + 20);
    assert!(mem_open(&fs, dir, LogOptions::default()).is_err());

    let report = salvage_with(&fs, dir, &mut |_| {}).expect("salvage");
    assert_eq!(report.actions.len(), 1);
    let a = &report.actions[0];
    assert_eq!((a.from_seq, a.to_seq, a.offset, a.kind.as_str()), (5, 6, o[5].2, "checksum_mismatch"));
    assert_eq!(a.bytes_moved, o[6].2 - o[5].2);
    let q = dir.join(a.quarantine.as_deref().expect("quarantined"));
    assert_eq!(q, dir.join(format!("quarantine/00000000000000000000.seg-{}.bin", o[5].2)));
    assert_eq!(fs.read(&q).expect("quarantine file").len() as u64, a.bytes_moved);

    let (p, rec) = mem_open(&fs, dir, LogOptions::default()).expect("opens after salvage");
    assert_eq!(rec.salvage_gaps, vec![(5, 6)]);
    assert_eq!(rec.next_seq, 10);
    let seqs: Vec<u64> = read_all(&p).into_iter().map(|r| r.0).collect();
    assert_eq!(seqs, vec![0, 1, 2, 3, 4, 6, 7, 8, 9]);
    assert_eq!(p.append(&[b"next"]).expect("append").first_seq, 10);
    drop(p);
    // Verify accepts the explicit gap; a second salvage has nothing to do.
    assert!(verify_with(&fs, dir, &mut |_| {}).expect("verify").is_clean());
    assert!(salvage_with(&fs, dir, &mut |_| {}).expect("salvage").actions.is_empty());
}

#[test]
fn salvage_splits_a_segment_at_a_sequence_jump_and_keeps_the_later_sequences() {
    let fs = FaultStorage::new();
    let dir = Path::new("/p");
    build(&fs, dir, 5, 1 << 20);
    let seg = segments(&fs, dir).pop().expect("segment");
    let mut b = frames_only(&fs, dir, &seg);
    let cut = b.len() as u64;
    for s in [8u64, 9, 10] {
        wharf_log::frame::encode(s, &payload(s), &mut b);
    }
    fs.overwrite(&seg, b);
    match mem_open(&fs, dir, LogOptions::default()) {
        Err(LogError::Corrupt(c)) => assert_eq!((c.offset, c.kind.code()), (cut, "sequence_gap")),
        other => panic!("expected a sequence gap, got {other:?}"),
    }
    let r = salvage_with(&fs, dir, &mut |_| {}).expect("salvage");
    assert_eq!(r.actions.len(), 1);
    assert_eq!((r.actions[0].from_seq, r.actions[0].to_seq, r.actions[0].bytes_moved), (5, 8, 0));
    assert_eq!(r.actions[0].quarantine, None);
    assert!(fs.exists(&dir.join("00000000000000000008.seg")));
    let (p, rec) = mem_open(&fs, dir, LogOptions::default()).expect("open");
    assert_eq!((rec.next_seq, rec.salvage_gaps.clone()), (11, vec![(5, 8)]));
    let seqs: Vec<u64> = read_all(&p).into_iter().map(|r| r.0).collect();
    assert_eq!(seqs, vec![0, 1, 2, 3, 4, 8, 9, 10]);
    assert_eq!(p.read(6, 1, 1 << 20).expect("read")[0].seq, 8, "reading inside the gap starts after it");
}

#[test]
fn salvage_repairs_a_bad_header_and_a_lost_segment() {
    let fs = FaultStorage::new();
    let dir = Path::new("/p");
    build(&fs, dir, 40, 300);
    let segs = segments(&fs, dir);
    flip_bit(&fs, &segs[1], 2);
    fs.remove_file(&segs[3]).expect("remove");
    let report = salvage_with(&fs, dir, &mut |_| {}).expect("salvage");
    assert_eq!(report.actions.len(), 2, "{report:?}");
    assert_eq!(report.actions[0].kind, "bad_header");
    assert_eq!(report.actions[0].bytes_moved, 32);
    assert_eq!(report.actions[1].kind, "sequence_gap");
    assert_eq!((report.actions[1].bytes_moved, report.actions[1].quarantine.clone()), (0, None));
    let (p, rec) = mem_open(&fs, dir, LogOptions::default()).expect("open");
    assert_eq!(rec.next_seq, 40);
    let got = read_all(&p);
    assert!(got.iter().all(|(s, pl)| pl == &payload(*s)));
    assert_eq!(got.len() as u64, 40 - (report.actions[1].to_seq - report.actions[1].from_seq));
}

#[test]
fn a_salvage_interrupted_by_a_crash_completes_when_run_again() {
    for k in 0..40u64 {
        let fs = FaultStorage::new();
        let dir = Path::new("/p");
        build(&fs, dir, 30, 300);
        let o = offsets(&fs, dir);
        flip_bit(&fs, &o[4].1, o[4].2 as usize + 20);
        fs.crash_at_op(k);
        let first = salvage_with(&fs, dir, &mut |_| {});
        let crashed = fs.is_down();
        fs.clear_crash_points();
        if crashed {
            fs.crash(k);
            salvage_with(&fs, dir, &mut |_| {})
                .unwrap_or_else(|e| panic!("rerun after crash at op {k}: {e}"));
        } else {
            first.expect("salvage");
        }
        let (p, rec) =
            mem_open(&fs, dir, LogOptions::default()).unwrap_or_else(|e| panic!("crash at op {k}: {e}"));
        assert_eq!(rec.next_seq, 30);
        let seqs: Vec<u64> = read_all(&p).into_iter().map(|r| r.0).collect();
        assert_eq!(seqs, (0..30).filter(|s| *s != 4).collect::<Vec<_>>(), "crash at op {k}");
    }
}

#[test]
fn salvage_refuses_to_run_on_an_open_partition() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_p, _) = Partition::open(tmp.path(), LogOptions::default()).expect("open");
    assert!(matches!(wharf_log::salvage(tmp.path(), &mut |_| {}), Err(LogError::Locked { .. })));
}

#[test]
fn the_cli_verify_exits_zero_when_clean_and_one_naming_file_offset_and_kind() {
    let fs = FaultStorage::new();
    let dir = Path::new("/data/p");
    build(&fs, dir, 10, 1 << 20);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(cli::verify_cmd_with(&fs, Path::new("/data"), false, &mut out, &mut err).expect("verify"), 0);
    assert!(String::from_utf8_lossy(&out).ends_with("clean\n"));
    let o = offsets(&fs, dir);
    flip_bit(&fs, &o[3].1, o[3].2 as usize + 20);
    out.clear();
    assert_eq!(cli::verify_cmd_with(&fs, Path::new("/data"), false, &mut out, &mut err).expect("verify"), 1);
    let text = String::from_utf8_lossy(&out);
    let want =
        format!("problem: {} offset {}: checksum mismatch [checksum_mismatch]", o[3].1.display(), o[3].2);
    assert!(text.contains(&want), "{text}");
    out.clear();
    assert_eq!(cli::verify_cmd_with(&fs, Path::new("/data"), true, &mut out, &mut err).expect("verify"), 1);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("one json line");
    assert_eq!(v["clean"], false);
    assert_eq!(v["partitions"][0]["problems"][0]["kind"], "checksum_mismatch");
    assert_eq!(v["partitions"][0]["problems"][0]["offset"], o[3].2);
}

#[test]
fn the_cli_dump_prints_records_as_text_or_json_lines_with_from_and_limit() {
    let fs = FaultStorage::new();
    let dir = Path::new("/p");
    let (p, _) = mem_open(&fs, dir, LogOptions::default()).expect("open");
    p.append(&[b"hello", &[0xff, 0x00], b"third"]).expect("append");
    drop(p);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    cli::dump_cmd_with(&fs, dir, Some(1), Some(1), false, &mut out, &mut err).expect("dump");
    assert_eq!(String::from_utf8_lossy(&out).lines().count(), 1);
    assert!(String::from_utf8_lossy(&out).starts_with("seq=1 len=2 "), "{}", String::from_utf8_lossy(&out));
    assert!(String::from_utf8_lossy(&out).contains("payload=hex:ff00"));
    out.clear();
    cli::dump_cmd_with(&fs, dir, None, None, true, &mut out, &mut err).expect("dump");
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out).lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!((lines[0]["seq"].as_u64(), lines[0]["payload"].as_str()), (Some(0), Some("hello")));
}

#[test]
fn the_cli_salvage_reports_what_it_moved() {
    let fs = FaultStorage::new();
    let dir = Path::new("/p");
    build(&fs, dir, 6, 1 << 20);
    let o = offsets(&fs, dir);
    flip_bit(&fs, &o[2].1, o[2].2 as usize + 20);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    cli::salvage_cmd_with(&fs, dir, true, &mut out, &mut err).expect("salvage");
    let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(v["actions"][0]["from_seq"], 2);
    assert_eq!(v["actions"][0]["to_seq"], 3);
    out.clear();
    cli::salvage_cmd_with(&fs, dir, false, &mut out, &mut err).expect("salvage");
    assert!(String::from_utf8_lossy(&out).starts_with("nothing to salvage"));
}

#[test]
fn after_random_damage_salvage_always_lets_the_partition_open_with_only_intact_records() {
    for seed in 0..300u64 {
        let fs = FaultStorage::new();
        let dir = Path::new("/p");
        build(&fs, dir, 60, 300);
        let mut rng = wharf_log::Rng::new(seed);
        let segs = segments(&fs, dir);
        for _ in 0..1 + rng.below(5) {
            let f = &segs[rng.below(segs.len() as u64) as usize];
            let len = fs.read(f).expect("file").len() as u64;
            let at = rng.below(len) as usize;
            let mut b = fs.read(f).expect("file");
            match rng.below(4) {
                0 => b.truncate(at),                             // cut short
                1 => b[at..(at + 40).min(len as usize)].fill(0), // zeroed run
                _ => b[at] ^= 1 << rng.below(8),                 // bit flip
            }
            fs.overwrite(f, b);
        }
        let report =
            salvage_with(&fs, dir, &mut |_| {}).unwrap_or_else(|e| panic!("seed {seed}: salvage: {e}"));
        let (p, rec) =
            mem_open(&fs, dir, LogOptions::default()).unwrap_or_else(|e| panic!("seed {seed}: open: {e}"));
        let got = read_all(&p);
        let mut prev = None;
        for (seq, pl) in &got {
            assert_eq!(pl, &payload(*seq), "seed {seed}: seq {seq} damaged");
            assert!(prev.is_none_or(|p| p < *seq), "seed {seed}: order");
            prev = Some(*seq);
        }
        // Everything missing is accounted for: a salvage gap, or a torn tail.
        let gaps = (0..60u64)
            .filter(|s| report.actions.iter().any(|a| a.from_seq <= *s && *s < a.to_seq))
            .count() as u64;
        let torn = 60 - rec.next_seq;
        assert_eq!(got.len() as u64 + gaps + torn, 60, "seed {seed}: {report:?} {rec:?}");
        drop(p);
        assert!(verify_with(&fs, dir, &mut |_| {}).expect("verify").is_clean(), "seed {seed}");
    }
}
