//! Restart time against the log's size (issue 18): the time from
//! `Partition::open` to the first acknowledged (fdatasync'ed) write, on a
//! large log and on a small one, in the same run.
//!
//! Run: `cargo bench -p wharf-log --bench restart`
//! Env: `WHARF_BENCH_DIR` (default: the system temp dir) picks the disk;
//! `WHARF_BENCH_RESTART_GIB` (default 1) the large log's size.
//!
//! Both logs use the default 64 MiB segments and are written with buffered
//! appends of 1 KiB records, then flushed. The large log's last segment is
//! left nearly full (the worst case: recovery scans the last segment whole).
//! Each restart is measured 5 times and the median printed; the page cache
//! is warm (the files were just written or read), as after a process
//! restart. Beside it, `full scan` times `verify` on the same log: it reads
//! and checks every segment, as recovery did before it read only the tail.
//! Target: restart on the large log <= 1 s and at most twice the small log's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wharf_log::{Durability, LogOptions, Partition};

const RECORD: usize = 1024;
const ROUNDS: usize = 5;
const TARGET: Duration = Duration::from_secs(1);
/// Restart on the large log / on a log of its last segment alone, at most.
const TARGET_RATIO: f64 = 1.5;

fn bench_dir() -> PathBuf {
    std::env::var_os("WHARF_BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir)
}

/// Writes about `bytes` of 1 KiB records into a new partition in `dir`.
fn build(dir: &Path, bytes: u64) {
    let opts = LogOptions { durability: Durability::Buffered, ..LogOptions::default() };
    let (p, _) = Partition::open(dir, opts).expect("open");
    let record = vec![0x5au8; RECORD];
    let batch: Vec<&[u8]> = vec![&record[..]; 256];
    let per_batch = (256 * (RECORD + 16)) as u64;
    for _ in 0..bytes / per_batch {
        p.append(&batch).expect("append");
    }
    p.flush().expect("flush");
}

/// One restart: open, then one durable append. Returns its duration.
fn restart(dir: &Path) -> Duration {
    let record = vec![0xa5u8; RECORD];
    let t = Instant::now();
    let (p, _) = Partition::open(dir, LogOptions::default()).expect("reopen");
    let ack = p.append(&[&record]).expect("first write");
    let took = t.elapsed();
    assert!(ack.synced, "the first write is durable");
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// A log and its figures.
struct Measured {
    name: String,
    bytes: u64,
    segments: usize,
    tail: u64,
    restart: Duration,
    full_scan: Duration,
}

fn measure(name: &str, dir: &Path) -> Measured {
    let restart = median((0..ROUNDS).map(|_| restart(dir)).collect());
    let t = Instant::now();
    let report = wharf_log::verify(dir, &mut |_| {}).expect("verify");
    let full_scan = t.elapsed();
    assert!(report.is_clean(), "the bench log verifies clean");
    let mut segs: Vec<u64> = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .collect();
    segs.sort_unstable();
    Measured {
        name: name.to_string(),
        bytes: segs.iter().sum(),
        segments: segs.len(),
        tail: tail_len(dir),
        restart,
        full_scan,
    }
}

/// Size of the segment with the highest base (the one recovery scans).
fn tail_len(dir: &Path) -> u64 {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    names.sort();
    names.last().and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len())
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "MISS" }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("restart: bench");
        return;
    }
    let gib: f64 = std::env::var("WHARF_BENCH_RESTART_GIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1.0);
    let root = tempfile::tempdir_in(bench_dir()).expect("bench dir");
    let large_bytes = (gib * (1u64 << 30) as f64) as u64 - (1 << 20);
    let tail_bytes = large_bytes % (64 << 20);
    let logs = [
        ("small".to_string(), 1 << 20),
        ("same tail".to_string(), tail_bytes),
        (format!("{gib} GiB"), large_bytes),
    ];
    let rows: Vec<Measured> = logs
        .iter()
        .map(|(name, bytes)| {
            let dir = root.path().join(name.replace(' ', "-"));
            build(&dir, *bytes);
            measure(name, &dir)
        })
        .collect();
    print_table(&rows);
    let (small, same_tail, large) = (&rows[0], &rows[1], &rows[2]);
    let ratio = large.restart.as_secs_f64() / same_tail.restart.as_secs_f64();
    println!(
        "ratio restart {} / small: {:.2}",
        large.name,
        large.restart.as_secs_f64() / small.restart.as_secs_f64()
    );
    println!("ratio restart {} / same tail (one segment): {ratio:.2}", large.name);
    println!(
        "target: restart on {} <= {} ms: {} ({:.1} ms)",
        large.name,
        TARGET.as_millis(),
        verdict(large.restart <= TARGET),
        ms(large.restart)
    );
    println!(
        "target: independent of the log's size (vs the same tail alone) <= {TARGET_RATIO}: {} ({ratio:.2})",
        verdict(ratio <= TARGET_RATIO)
    );
}

fn print_table(rows: &[Measured]) {
    println!("restart to the first acked write (open + one durable 1 KiB append), median of {ROUNDS}");
    println!(
        "{:<10} {:>10} {:>9} {:>10} {:>12} {:>14}",
        "log", "MiB", "segments", "tail MiB", "restart ms", "full scan ms"
    );
    for r in rows {
        println!(
            "{:<10} {:>10.1} {:>9} {:>10.1} {:>12.1} {:>14.1}",
            r.name,
            mib(r.bytes),
            r.segments,
            mib(r.tail),
            ms(r.restart),
            ms(r.full_scan)
        );
    }
}
