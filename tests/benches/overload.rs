//! Overload bench (issue 17): memory stays bounded when clients offer ten
//! times the rate the target can take. Admission control answers `429
//! backlog_full` once the backlog limit is reached, and nothing is queued
//! without bound.
//!
//! ```text
//! make build
//! cargo bench -p wharf-tests --bench overload [-- --seconds 20 --factor 10]
//! ```
//!
//! Run in one process, against the real binary:
//! 1. The target is an HTTP sink that takes 2 ms per message. The sustainable
//!    rate is measured by draining a pre-filled backlog.
//! 2. For `--seconds`, 32 client threads offer `--factor` times that rate,
//!    open loop, 1 KiB payloads. The namespace's backlog limit is 20,000
//!    messages.
//! 3. Wharf's RSS is sampled from `/proc/<pid>/status` every 50 ms. The
//!    bench prints the peak (VmHWM), RSS before and after, and the replies
//!    by status.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wharf_tests::{HttpSink, Wharf, b64, eventually};

const BACKLOG: u64 = 20_000;
const THREADS: usize = 32;

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `VmRSS` or `VmHWM` of a process, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn delivered(w: &Wharf) -> u64 {
    w.status()["namespaces"]["orders"]["targets"]["default"]["partitions"][0]["delivery"]["delivered_total"]
        .as_u64()
        .unwrap_or(0)
}

fn main() {
    let seconds = arg("--seconds", 20.0);
    let factor = arg("--factor", 10.0);
    let sink = HttpSink::start();
    sink.set(|b| b.delay = Duration::from_millis(2));
    let limits = format!("[namespaces.orders.limits]\nmax_backlog_messages = {BACKLOG}\n");
    let w = Wharf::start(&sink.namespace("orders", 1, &limits));
    let pid = w.pid().expect("wharf runs");
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = w.url("/v1/namespaces/orders/messages");
    let body = serde_json::json!({"key": "k", "payload": b64(&[b'x'; 1024])}).to_string();

    // 1. The sustainable rate: how fast the target drains a backlog.
    let prefill = 2000u64;
    for _ in 0..prefill {
        agent.post(&url).header("content-type", "application/json").send(&body).expect("prefill");
    }
    let (start, before) = (Instant::now(), delivered(&w));
    eventually(Duration::from_secs(120), "the prefill drained", || (delivered(&w) >= prefill).then_some(()));
    let drained = delivered(&w) - before;
    let sustainable = drained as f64 / start.elapsed().as_secs_f64();
    let rss_before = status_kib(pid, "VmRSS");

    // 2. Offer `factor` times that, open loop, for `seconds`.
    let offered = sustainable * factor;
    let interval = Duration::from_secs_f64(THREADS as f64 / offered);
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 3]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (stop, counts, url, body) = (stop.clone(), counts.clone(), url.clone(), body.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent =
                    ureq::Agent::config_builder().http_status_as_error(false).build().into();
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let slot = match agent.post(&url).header("content-type", "application/json").send(&body) {
                        Ok(r) if r.status() == 200 => 0,
                        Ok(r) if r.status() == 429 => 1,
                        _ => 2,
                    };
                    counts[slot].fetch_add(1, Ordering::Relaxed);
                    next += interval;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
            })
        })
        .collect();
    let (run, mut peak_sampled) = (Instant::now(), 0u64);
    while run.elapsed().as_secs_f64() < seconds {
        peak_sampled = peak_sampled.max(status_kib(pid, "VmRSS"));
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    threads.into_iter().for_each(|t| t.join().expect("client"));
    let elapsed = run.elapsed().as_secs_f64();
    let (ok, busy, other) = (
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
        counts[2].load(Ordering::Relaxed),
    );
    let backlog = w.status()["namespaces"]["orders"]["partitions"][0]["backlog"].as_u64().unwrap_or(0);
    let hwm = status_kib(pid, "VmHWM");

    println!("overload: the target takes 2 ms per message; backlog limit {BACKLOG} messages; 1 KiB payloads");
    println!("| figure | value |");
    println!("| --- | --- |");
    println!("| sustainable rate (target drain) | {sustainable:.0} msg/s |");
    println!("| offered ({factor}x), {THREADS} clients, {elapsed:.0} s | {offered:.0} msg/s |");
    println!("| answered 200 | {ok} ({:.0}/s) |", ok as f64 / elapsed);
    println!("| answered 429 backlog_full | {busy} ({:.0}/s) |", busy as f64 / elapsed);
    println!("| other replies or errors | {other} |");
    println!("| backlog at the end | {backlog} messages |");
    println!("| RSS before the flood | {:.1} MiB |", rss_before as f64 / 1024.0);
    println!(
        "| peak RSS during it (sampled / VmHWM) | {:.1} / {:.1} MiB |",
        peak_sampled as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!("| RSS after it | {:.1} MiB |", status_kib(pid, "VmRSS") as f64 / 1024.0);
}
