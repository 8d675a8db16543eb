#![allow(dead_code)]
//! Shared helpers for the integration tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wharf_log::{FaultStorage, Follower, LogOptions, Partition, Recovery, Storage};

pub fn small_opts(segment_max_bytes: u64) -> LogOptions {
    LogOptions { segment_max_bytes, ..LogOptions::default() }
}

/// Options of a writer with a follower in another process.
pub fn publishing(segment_max_bytes: u64) -> LogOptions {
    LogOptions { segment_max_bytes, publish_durable_end: true, ..LogOptions::default() }
}

pub fn mem_follow(fs: &FaultStorage, dir: &Path) -> Result<Follower, wharf_log::LogError> {
    Follower::open_with(Arc::new(fs.clone()) as Arc<dyn Storage>, dir)
}

/// Everything a follower can read, from 0.
pub fn follow_all(f: &Follower) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let recs = f.read(from, 1000, 1 << 20).expect("follower read");
        let Some(last) = recs.last() else { break };
        from = last.seq + 1;
        out.extend(recs.into_iter().map(|r| (r.seq, r.payload)));
    }
    out
}

pub fn mem_open(
    fs: &FaultStorage,
    dir: &Path,
    opts: LogOptions,
) -> Result<(Partition, Recovery), wharf_log::LogError> {
    Partition::open_with(Arc::new(fs.clone()) as Arc<dyn Storage>, dir, opts)
}

pub fn payload(seq: u64) -> Vec<u8> {
    format!("record-{seq}-{}", "x".repeat((seq % 37) as usize)).into_bytes()
}

pub fn append_n(p: &Partition, n: u64) {
    for _ in 0..n {
        let s = p.next_seq();
        p.append(&[&payload(s)]).expect("append");
    }
}

pub fn read_all(p: &Partition) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let recs = p.read(from, 1000, 1 << 20).expect("read");
        let Some(last) = recs.last() else { break };
        from = last.seq + 1;
        out.extend(recs.into_iter().map(|r| (r.seq, r.payload)));
    }
    out
}

pub fn segments(fs: &FaultStorage, dir: &Path) -> Vec<PathBuf> {
    fs.list_dir(dir)
        .expect("list")
        .into_iter()
        .filter(|e| e.name.ends_with(".seg"))
        .map(|e| dir.join(e.name))
        .collect()
}

pub fn flip_bit(fs: &FaultStorage, file: &Path, offset: usize) {
    let mut b = fs.read(file).expect("file exists");
    b[offset] ^= 0x10;
    fs.overwrite(file, b);
}

/// The segment `file` cut to its last frame: without the pre-zeroed space
/// that follows the frames of the active segment.
pub fn frames_only(fs: &FaultStorage, dir: &Path, file: &Path) -> Vec<u8> {
    let mut end = wharf_log::segment::HEADER_LEN as u64;
    wharf_log::dump_with(fs, dir, 0, &mut |_| {}, &mut |r| {
        if r.file == file {
            end = r.offset + (wharf_log::frame::FRAME_HEADER_LEN + r.payload.len()) as u64;
        }
        true
    })
    .expect("dump");
    let mut b = fs.read(file).expect("file");
    b.truncate(end as usize);
    b
}
