//! A writer and a follower in two real processes over the same directory,
//! as `wharf serve --role processor` and `--role consumer` run. The test
//! executable runs itself as the writer process (see `writer_child`).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wharf_log::{Follower, LogOptions, Partition, Record};

const ENV_DIR: &str = "WHARF_TEST_WRITER_DIR";
const ENV_MODE: &str = "WHARF_TEST_WRITER_MODE";
const THREADS: u64 = 3;
const FINITE_PER_THREAD: u64 = 400;

fn opts() -> LogOptions {
    LogOptions { segment_max_bytes: 8 << 10, publish_durable_end: true, ..LogOptions::default() }
}

/// Self-checking payload: generation, thread, index, and a filler whose
/// length follows from them.
fn payload(g: u64, t: u64, i: u64) -> Vec<u8> {
    format!("g{g}-t{t}-i{i}-{}", "x".repeat(((g * 13 + t * 7 + i) % 90) as usize)).into_bytes()
}

fn parse(p: &[u8]) -> (u64, u64, u64) {
    let s = std::str::from_utf8(p).expect("utf8 payload");
    let mut it = s.split('-');
    let mut num = |prefix: char| -> u64 {
        it.next().and_then(|x| x.strip_prefix(prefix)).and_then(|x| x.parse().ok()).expect("payload field")
    };
    let (g, t, i) = (num('g'), num('t'), num('i'));
    assert_eq!(p, payload(g, t, i).as_slice(), "payload bytes differ");
    (g, t, i)
}

/// Entry point of the writer process; a no-op unless a test spawned it.
/// Modes: `finite` appends `THREADS * FINITE_PER_THREAD` records, then
/// follows the follower's watermark (GC) until everything is delivered;
/// `forever:<generation>` appends until killed.
#[test]
fn writer_child() {
    let (Some(dir), Some(mode)) = (std::env::var_os(ENV_DIR), std::env::var(ENV_MODE).ok()) else {
        return;
    };
    let dir = Path::new(&dir);
    let (p, _) = Partition::open(dir, opts()).expect("writer open");
    let p = Arc::new(p);
    let (generation, per) = match mode.strip_prefix("forever:") {
        Some(g) => (g.parse().expect("generation"), u64::MAX),
        None => (0, FINITE_PER_THREAD),
    };
    let hs: Vec<_> = (0..THREADS)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    p.append(&[&payload(generation, t, i)]).expect("append");
                }
            })
        })
        .collect();
    for h in hs {
        h.join().expect("writer thread");
    }
    // Everything appended: follow the follower's watermark and GC.
    let total = p.next_seq();
    let segments = p.stats().segments;
    let deadline = Instant::now() + Duration::from_secs(120);
    while p.refresh_watermark().expect("refresh watermark") < total {
        assert!(Instant::now() < deadline, "the follower never delivered everything");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(segments > 3, "the writer should have rolled segments ({segments})");
    assert_eq!(p.stats().segments, 1, "delivered segments are deleted");
}

fn spawn_writer(dir: &Path, mode: &str) -> Child {
    Command::new(std::env::current_exe().expect("test executable"))
        .args(["writer_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(ENV_DIR, dir)
        .env(ENV_MODE, mode)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the writer process")
}

/// Reads everything new, checking order and content.
fn tail(f: &Follower, seen: &mut Vec<Record>) -> usize {
    let recs = f.read(seen.len() as u64, 100, 1 << 20).expect("follower read");
    let n = recs.len();
    for r in recs {
        assert_eq!(r.seq, seen.len() as u64, "records arrive once, in order");
        parse(&r.payload);
        seen.push(r);
    }
    n
}

/// Per writer thread, records come in the order they were appended, once.
fn check_order(seen: &[Record]) {
    let mut last: HashMap<(u64, u64), u64> = HashMap::new();
    for r in seen {
        let (g, t, i) = parse(&r.payload);
        if let Some(prev) = last.insert((g, t), i) {
            assert_eq!(i, prev + 1, "g{g} t{t}: {prev} then {i}");
        } else {
            assert_eq!(i, 0, "g{g} t{t} starts at {i}");
        }
    }
}

#[test]
fn a_follower_process_reads_everything_a_writer_process_appends_and_its_watermark_drives_gc() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("ns/0");
    // The consumer may well start before the processor.
    let f = Follower::open(&dir).expect("follower");
    let mut child = spawn_writer(&dir, "finite");
    let total = (THREADS * FINITE_PER_THREAD) as usize;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < total {
        assert!(Instant::now() < deadline, "follower stuck at {}", seen.len());
        if tail(&f, &mut seen) == 0 {
            if let Some(status) = child.try_wait().expect("wait") {
                panic!("the writer exited early: {status}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if seen.len().is_multiple_of(7) {
            f.advance_watermark(seen.len() as u64).expect("advance");
        }
    }
    check_order(&seen);
    f.advance_watermark(total as u64).expect("advance");
    let status = child.wait().expect("wait for the writer");
    assert!(status.success(), "writer process: {status}");
    let s = f.stats();
    assert_eq!((s.next_seq, s.watermark, s.segments, s.published), (total as u64, total as u64, 1, true));
}

#[test]
fn a_follower_keeps_reading_across_a_writer_process_killed_and_restarted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let f = Follower::open(&dir).expect("follower");
    let mut seen = Vec::new();
    for generation in 0..3u64 {
        let mut child = spawn_writer(&dir, &format!("forever:{generation}"));
        let target = seen.len() + 300;
        let deadline = Instant::now() + Duration::from_secs(120);
        while seen.len() < target {
            assert!(Instant::now() < deadline, "follower stuck at {}", seen.len());
            if tail(&f, &mut seen) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        child.kill().expect("SIGKILL the writer");
        child.wait().expect("reap");
        // Whatever it published before dying is readable, nothing else.
        while tail(&f, &mut seen) > 0 {}
        f.advance_watermark(seen.len() as u64 / 2).expect("advance");
    }
    check_order_across_restarts(&seen);
    // The writer's recovery kept every record the follower was given.
    let (p, _) = Partition::open(&dir, opts()).expect("writer open");
    assert!(p.next_seq() >= seen.len() as u64);
    let mut from = seen.len() as u64 / 2;
    while from < seen.len() as u64 {
        let recs = p.read(from, 500, 1 << 20).expect("writer read");
        for r in &recs {
            if let Some(s) = seen.get(r.seq as usize) {
                assert_eq!(r, s, "seq {}", r.seq);
            }
        }
        from = recs.last().map_or(u64::MAX, |r| r.seq + 1);
    }
}

/// Each writer generation's threads in append order, once; a killed
/// writer's in-flight appends may or may not have survived.
fn check_order_across_restarts(seen: &[Record]) {
    check_order(seen);
    let last: HashMap<(u64, u64), ()> =
        seen.iter().map(|r| parse(&r.payload)).map(|(g, t, _)| ((g, t), ())).collect();
    let gens: std::collections::BTreeSet<u64> = last.keys().map(|k| k.0).collect();
    assert_eq!(gens.into_iter().collect::<Vec<_>>(), vec![0, 1, 2]);
}
