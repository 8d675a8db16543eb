//! Sidecar restart to the first acked write (issue 18), the whole process
//! rather than the log alone (`wharf-log`'s `--bench restart` times
//! `Partition::open`): process start, every partition's tail scan, the
//! idempotency window, the plugin, the listener, one durable write.
//!
//! ```text
//! make build
//! cargo bench -p wharf-tests --bench sidecar_restart    # -- --mib 1024 --rounds 3
//! ```
//!
//! Three sidecars, one namespace of 4 partitions each, whose target never
//! loads (nothing is delivered, so the log keeps everything): the big log
//! (`--mib`, 1 GiB by default, 64 MiB segments); "same tail", loaded with
//! as much as the big log's last segments hold (one segment each: what a
//! clean start reads of the big log); and empty. Loaded over HTTP (1 KiB messages with distinct keys, batches
//! of 500, `durability = "buffered"`, not timed), then run with the default
//! `fsync`. Each row is the median of `--rounds` restarts, timed from the
//! spawn until a 1-message write is acknowledged as fdatasync'ed:
//! - after a clean stop (SIGTERM): the idempotency window's covered mark
//!   holds the heads, so the start reads no message for keys;
//! - after a crash (SIGKILL) right after a restart and one write: the start
//!   reads the messages appended since the last covered mark (the one
//!   written at the previous start, so one message), for keys the window
//!   may lack. Under load the mark trails the heads by at most a couple of
//!   seconds of writes (`services/node.rs`, `mark_covered_loop`).
//!
//! Targets: a clean restart on the big log <= 1 s, and within 1.5x of the
//! same-tail sidecar's (independent of the log's size).

use std::time::{Duration, Instant};

use serde_json::json;
use wharf_tests::{Wharf, b64};

const PARTITIONS: usize = 4;
const RECORD: usize = 1024;
const BATCH: usize = 500;
const TARGET_RESTART: Duration = Duration::from_secs(1);
const TARGET_RATIO: f64 = 1.5;

fn args() -> (usize, usize) {
    let (mut mib, mut rounds) = (1024, 3);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = || it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{flag} N"));
        match flag.as_str() {
            "--mib" => mib = num(),
            "--rounds" => rounds = num(),
            _ => {} // cargo bench passes --bench
        }
    }
    assert!(rounds >= 1, "--rounds must be at least 1");
    (mib, rounds)
}

fn config() -> String {
    // Not a component: the target never loads, and the log keeps every record.
    let not_a_plugin =
        std::env::temp_dir().join(format!("wharf-bench-not-a-plugin-{}.wasm", std::process::id()));
    std::fs::write(&not_a_plugin, b"not wasm").expect("write");
    format!(
        "[namespaces.bench]\npartitions = {PARTITIONS}\n[namespaces.bench.limits]\n\
         max_backlog_messages = 1000000000\nmax_backlog_bytes = 1000000000000\n\
         [namespaces.bench.target]\nplugin = \"{}\"\n",
        not_a_plugin.display()
    )
}

/// Writes `mib` MiB of 1 KiB records, keys spread over the partitions.
fn load(w: &Wharf, mib: usize) {
    let n = mib * (1 << 20) / RECORD;
    let payload = b64(&vec![b'x'; RECORD]);
    let batches: Vec<usize> = (0..n).step_by(BATCH).collect();
    std::thread::scope(|s| {
        for lane in 0..4 {
            let (batches, payload) = (&batches, &payload);
            s.spawn(move || {
                for &start in batches.iter().skip(lane).step_by(4) {
                    let messages: Vec<_> = (start..n.min(start + BATCH))
                        .map(|i| json!({"key": format!("k{i}"), "payload": payload}))
                        .collect();
                    let r = w.post("/v1/namespaces/bench/messages/batch", &json!({"messages": messages}));
                    assert_eq!(r.status, 200, "load: {:?}", r.body);
                }
            });
        }
    });
}

/// A sidecar holding `mib` MiB, loaded buffered, left running with fsync.
fn sidecar(mib: usize) -> Wharf {
    let mut w = Wharf::start(&config());
    if mib > 0 {
        w.kill();
        w.set_buffered(true);
        w.restart();
        load(&w, mib);
        w.terminate();
        w.wait_exit(Duration::from_secs(60)).expect("a clean stop after the load");
        w.set_buffered(false);
        w.restart();
    }
    w
}

/// Spawn until one durable write is acknowledged.
fn timed_start(w: &mut Wharf) -> Duration {
    let t = Instant::now();
    w.restart();
    let r = w.post("/v1/namespaces/bench/messages", &json!({"payload": b64(b"after the restart")}));
    assert_eq!((r.status, r.body["durable"].clone()), (200, json!(true)), "{:?}", r.body);
    t.elapsed()
}

/// Median restart after a clean stop, then after a crash.
fn restarts(w: &mut Wharf, rounds: usize) -> (Duration, Duration) {
    let mut clean = Vec::new();
    let mut crash = Vec::new();
    for _ in 0..rounds {
        w.terminate();
        w.wait_exit(Duration::from_secs(60)).expect("a clean stop");
        clean.push(timed_start(w));
        w.kill();
        crash.push(timed_start(w));
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    (median(clean), median(crash))
}

fn logged_mib(w: &Wharf) -> f64 {
    let bytes: u64 = walk(&w.data_dir().join("bench")).iter().sum();
    bytes as f64 / f64::from(1 << 20)
}

fn walk(dir: &std::path::Path) -> Vec<u64> {
    let entries = std::fs::read_dir(dir).expect("read data dir");
    entries
        .flatten()
        .flat_map(|e| match e.file_type().is_ok_and(|t| t.is_dir()) {
            true => walk(&e.path()),
            false => vec![e.metadata().map_or(0, |m| m.len())],
        })
        .collect()
}

/// The bytes in each partition's last segment (what a start scans), in MiB.
fn tail_mib(w: &Wharf) -> usize {
    let bytes: u64 = (0..PARTITIONS)
        .map(|p| {
            let dir = w.data_dir().join(format!("bench/p{p}"));
            let mut segments: Vec<_> = std::fs::read_dir(&dir)
                .expect("partition dir")
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .collect();
            segments.sort_by_key(|e| e.file_name());
            segments.last().and_then(|e| e.metadata().ok()).map_or(0, |m| m.len())
        })
        .sum();
    (bytes >> 20) as usize
}

fn main() {
    let (mib, rounds) = args();
    eprintln!("sidecar restart bench: loading {mib} MiB ...");
    let big = sidecar(mib);
    let tail = tail_mib(&big).max(1);
    eprintln!("sidecar restart bench: its tail segments hold {tail} MiB; loading as much into another ...");
    let sidecars = [("empty", sidecar(0)), ("same tail", sidecar(tail)), ("big log", big)];
    let mut rows = Vec::new();
    for (name, mut w) in sidecars {
        eprintln!("sidecar restart bench: restarting {name} ...");
        let (clean, crash) = restarts(&mut w, rounds);
        rows.push((name, logged_mib(&w), clean, crash));
    }
    println!(
        "\nsidecar restart to the first acked (fdatasync'ed) write, {PARTITIONS} partitions, median of {rounds}"
    );
    println!("{:<12} {:>10} {:>18} {:>18}", "log", "MiB", "after SIGTERM ms", "after SIGKILL ms");
    for (name, logged, clean, crash) in &rows {
        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        println!("{name:<12} {logged:>10.1} {:>18.1} {:>18.1}", ms(clean), ms(crash));
    }
    let (big, same) = (rows[2].2, rows[1].2);
    let ratio = big.as_secs_f64() / same.as_secs_f64().max(1e-9);
    let verdict = |met: bool| if met { "MET" } else { "MISS" };
    println!("ratio clean restart big log / same tail: {ratio:.2}");
    println!(
        "target: clean restart on the big log <= {} ms: {} ({:.1} ms)",
        TARGET_RESTART.as_millis(),
        verdict(big <= TARGET_RESTART),
        big.as_secs_f64() * 1000.0
    );
    println!(
        "target: independent of the log's size (vs the same tail) <= {TARGET_RATIO}: {} ({ratio:.2})",
        verdict(ratio <= TARGET_RATIO)
    );
    println!(
        "after SIGKILL the start also reads the messages appended since the last covered mark for idempotency keys"
    );
}
