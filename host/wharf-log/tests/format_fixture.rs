//! The on-disk format is a promise: a partition written by format version 1
//! (kept in `tests/fixtures/v1/`) must open and read the same forever.
//! Regenerate only for a new format version, in a new folder:
//! `WHARF_WRITE_FIXTURES=1 cargo test -p wharf-log --test format_fixture`.

use std::path::{Path, PathBuf};

use wharf_log::{LogOptions, Partition};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/p0")
}

fn expected() -> Vec<Vec<u8>> {
    (0..5u8)
        .map(|i| format!("fixture record {i}").into_bytes())
        .chain([Vec::new(), vec![0, 255, 7]])
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read fixture") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

#[test]
fn a_version_1_partition_still_opens_and_reads_the_same_records() {
    if std::env::var_os("WHARF_WRITE_FIXTURES").is_some() {
        let _ = std::fs::remove_dir_all(fixture());
        let (log, _) = Partition::open(&fixture(), LogOptions::default()).expect("create");
        let records = expected();
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        log.append(&refs[..4]).expect("append");
        log.append(&refs[4..]).expect("append");
        log.advance_watermark(2).expect("watermark");
        drop(log);
        let _ = std::fs::remove_file(fixture().join("LOCK"));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture(), dir.path());
    let (log, recovery) = Partition::open(dir.path(), LogOptions::default()).expect("the v1 fixture opens");
    assert!(recovery.truncated_tail.is_none());
    assert_eq!(log.next_seq(), 7);
    assert_eq!(log.watermark(), 2);
    let read = log.read(0, 100, 1 << 20).expect("read");
    let payloads: Vec<Vec<u8>> = read.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(payloads, expected());
    assert_eq!(read.iter().map(|r| r.seq).collect::<Vec<_>>(), (0..7).collect::<Vec<_>>());
}

#[test]
fn a_version_1_partition_reads_the_same_through_a_follower_once_a_writer_publishes() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture(), dir.path());
    // No `durable` file in version 1: only sealed segments would be
    // readable, and the fixture has a single, active one.
    let f = wharf_log::Follower::open(dir.path()).expect("a follower opens the v1 fixture");
    let s = f.stats();
    assert_eq!((s.next_seq, s.watermark, s.published), (0, 2, false));
    let opts = LogOptions { publish_durable_end: true, ..LogOptions::default() };
    let (_log, recovery) = Partition::open(dir.path(), opts).expect("the v1 fixture opens");
    assert!(recovery.truncated_tail.is_none());
    assert_eq!(f.next_seq(), 7);
    let read = f.read(0, 100, 1 << 20).expect("read");
    assert_eq!(read.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(), expected());
    assert_eq!(read.iter().map(|r| r.seq).collect::<Vec<_>>(), (0..7).collect::<Vec<_>>());
}
