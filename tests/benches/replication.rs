//! Replication benchmark (issue 14): records replicated per second between
//! two local `wharf` processes, as a ratio of the primary's own durable
//! ingest rate measured in the same run, and the replication lag while the
//! primary takes half that load.
//!
//! ```text
//! make build
//! cargo bench -p wharf-tests --bench replication
//! cargo bench -p wharf-tests --bench replication -- --messages 50000 --payload 1024 --seconds 10
//! ```
//!
//! 1. **Ingest**: `--writers` threads post batches of 100 messages of
//!    `--payload` bytes to the primary for `--seconds`, fsynced (the
//!    default durability); the replica link is held shut by the proxy, so
//!    only ingest runs. Rate = acked messages / s.
//! 2. **Replication**: the link opens; the time until the replica's chain
//!    equals the primary's gives the replication rate of that backlog.
//! 3. **Lag at half load**: the writers are paced at half the ingest rate
//!    for `--seconds`; the replica target's lag (status `lag_ms` and
//!    `backlog`) is sampled every 50 ms.
//!
//! Both processes share this machine's cores (and the disk), so the ratio
//! is what one machine can do, not two regions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wharf_tests::proxy::{Fault, FaultProxy};
use wharf_tests::{HttpSink, Wharf, b64, plugin};

const NS: &str = "orders";
const PARTITIONS: u32 = 4;
const BATCH: usize = 100;

struct Args {
    seconds: f64,
    writers: usize,
    payload: usize,
}

fn args() -> Args {
    let mut a = Args { seconds: 5.0, writers: 8, payload: 1024 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = |name: &str| -> f64 {
            it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} takes a number"))
        };
        match flag.as_str() {
            "--seconds" => a.seconds = num("--seconds"),
            "--writers" => a.writers = num("--writers") as usize,
            "--payload" => a.payload = num("--payload") as usize,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn chains(w: &Wharf) -> Vec<Value> {
    w.partitions(NS).iter().map(|p| p["chain"].clone()).collect()
}

/// Posts batches from `writers` threads until `stop`; with `pace`, each
/// writer waits so that all together write about `pace` messages/s.
///
/// Hand-built requests on purpose, not `wharf-client`: the ingest rate is
/// the ratio's denominator, measured without idempotency keys. The client
/// gives every message one, and the primary records each key of a batch
/// with its own durable append, which cut ingest about tenfold in a run
/// here (92k to 9.7k msg/s) and would change what the ratio means.
fn write_load(
    url: String,
    writers: usize,
    payload: usize,
    stop: Arc<AtomicBool>,
    pace: Option<f64>,
) -> (Arc<AtomicU64>, Vec<std::thread::JoinHandle<()>>) {
    let acked = Arc::new(AtomicU64::new(0));
    let body = json!({"messages": (0..BATCH).map(|i| json!({"key": format!("k{i}"), "payload": b64(&vec![b'x'; payload])})).collect::<Vec<_>>()}).to_string();
    let handles = (0..writers)
        .map(|_| {
            let (url, body, stop, acked) = (url.clone(), body.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent =
                    ureq::Agent::config_builder().http_status_as_error(false).build().into();
                let per_writer = pace.map(|p| Duration::from_secs_f64(BATCH as f64 * writers as f64 / p));
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(r) = agent.post(&url).header("content-type", "application/json").send(&body)
                        && r.status() == 200
                    {
                        acked.fetch_add(BATCH as u64, Ordering::Relaxed);
                    }
                    if let Some(every) = per_writer {
                        next += every;
                        if let Some(wait) = next.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                }
            })
        })
        .collect();
    (acked, handles)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted.get(((sorted.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0)
}

fn main() {
    let a = args();
    let remote = HttpSink::start();
    let replica = Wharf::start(&format!(
        "{}[namespaces.{NS}.limits]\nmax_backlog_messages = 100000000\nmax_backlog_bytes = 100000000000\n",
        remote.namespace(NS, PARTITIONS, "mode = \"replica\"\n")
    ));
    let proxy = FaultProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], replica.port)));
    let primary = Wharf::start(&format!(
        "[namespaces.{NS}]\npartitions = {PARTITIONS}\n[namespaces.{NS}.limits]\nmax_backlog_messages = 100000000\nmax_backlog_bytes = 100000000000\n[namespaces.{NS}.delivery]\nbatch_max = 500\nmax_in_flight = 2000\n[namespaces.{NS}.targets.replica]\nplugin = \"{}\"\nordering = \"partition\"\nallow_http = [\"{url}\"]\nconfig = {{ url = \"{url}\" }}\n",
        plugin("replica").display(),
        url = proxy.url()
    ));
    let url = primary.url(&format!("/v1/namespaces/{NS}/messages/batch"));

    // 1. Ingest alone.
    proxy.set(Fault::Drop);
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, handles) = write_load(url.clone(), a.writers, a.payload, stop.clone(), None);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(a.seconds));
    stop.store(true, Ordering::Relaxed);
    handles.into_iter().for_each(|h| h.join().expect("writer"));
    let ingest_secs = started.elapsed().as_secs_f64();
    let backlog = acked.load(Ordering::Relaxed);
    let ingest_rate = backlog as f64 / ingest_secs;

    // 2. Replicate that backlog.
    proxy.set(Fault::Pass);
    let started = Instant::now();
    let heads: Vec<u64> =
        primary.partitions(NS).iter().map(|p| p["head_sequence"].as_u64().unwrap_or(0)).collect();
    let ends = |w: &Wharf| -> Vec<u64> { chains(w).iter().map(|c| c["end"].as_u64().unwrap_or(0)).collect() };
    while ends(&replica) != heads {
        assert!(started.elapsed() < Duration::from_secs(600), "replication did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let repl_secs = started.elapsed().as_secs_f64();
    let repl_rate = backlog as f64 / repl_secs;

    // 3. Lag at half load.
    let stop = Arc::new(AtomicBool::new(false));
    let (_, handles) = write_load(url, a.writers, a.payload, stop.clone(), Some(ingest_rate / 2.0));
    let (mut lag_ms, mut lag_msgs) = (Vec::new(), Vec::new());
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < a.seconds {
        let lanes = primary.target_partitions(NS, "replica");
        lag_ms.push(lanes.iter().filter_map(|l| l["lag_ms"].as_u64()).max().unwrap_or(0));
        lag_msgs.push(lanes.iter().filter_map(|l| l["backlog"].as_u64()).sum::<u64>());
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    handles.into_iter().for_each(|h| h.join().expect("writer"));
    lag_ms.sort_unstable();
    lag_msgs.sort_unstable();

    println!(
        "replication, {PARTITIONS} partitions, {} B payloads, {} writers x {BATCH}-message batches",
        a.payload, a.writers
    );
    println!("{:<44} {:>12}", "primary durable ingest (msg/s)", format!("{ingest_rate:.0}"));
    println!("{:<44} {:>12}", "replication of that backlog (msg/s)", format!("{repl_rate:.0}"));
    println!("{:<44} {:>12}", "ratio replication / ingest", format!("{:.2}", repl_rate / ingest_rate));
    println!(
        "{:<44} {:>12}",
        "lag at half load, ms p50 / p99 / max",
        format!(
            "{} / {} / {}",
            percentile(&lag_ms, 0.5),
            percentile(&lag_ms, 0.99),
            lag_ms.last().copied().unwrap_or(0)
        )
    );
    println!(
        "{:<44} {:>12}",
        "lag at half load, messages p50 / p99",
        format!("{} / {}", percentile(&lag_msgs, 0.5), percentile(&lag_msgs, 0.99))
    );
}
