//! The peer row (issue 18): durable single writes, 64 connections, 1 KiB
//! messages, Wharf's HTTP API under `wrk` beside Redis Streams `XADD` with
//! the AOF on and `appendfsync always` under `redis-benchmark`, in the same
//! run, on the same disk (both data dirs in the system temp dir).
//!
//! ```text
//! make build && scripts/bench-deps.sh     # redis-server, redis-tools, wrk (Debian)
//! cargo bench -p wharf-tests --bench peers
//! cargo bench -p wharf-tests --bench peers -- --seconds 5 --connections 64 --payload 1024
//! ```
//!
//! Wharf: `durability = "fsync"` (the default: a reply means fdatasync'ed),
//! 4 partitions, a plugin that does not load (nothing delivers, so delivery
//! does not compete for the CPU), backlog limits out of the way. `wrk` posts
//! one message per request (the 1 KiB payload, base64 in the JSON body) on
//! `--connections` keep-alive connections over 2 threads; a reply other than
//! 2xx fails the bench. Redis: its own `redis-server` on a free loopback port
//! with its own data dir, `appendonly yes`, `appendfsync always` (one
//! fsync per event-loop turn before replies go out), no RDB snapshots;
//! `redis-benchmark` sends `XADD` with a 1 KiB field on as many connections,
//! no pipelining, for about as long (the request count comes from a short
//! calibration run). Targets: Wharf's rate >= Redis's, and
//! Wharf's p99 <= 2 ms.

use std::path::Path;
use std::process::Command;

use wharf_tests::redis::{Redis, bench_tool};
use wharf_tests::{Wharf, b64};

/// Wharf's rate over Redis's, at least.
const TARGET_RATIO: f64 = 1.0;
/// Wharf's p99 reply latency, at most.
const TARGET_P99_MS: f64 = 2.0;

#[derive(Clone, Debug)]
struct Args {
    seconds: u64,
    connections: u32,
    payload: usize,
}

fn args() -> Args {
    let mut a = Args { seconds: 5, connections: 64, payload: 1024 };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(k) = it.next() {
        let mut num = || it.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or_else(|| panic!("{k} N"));
        match k.as_str() {
            "--seconds" => a.seconds = num(),
            "--connections" => a.connections = num() as u32,
            "--payload" => a.payload = num() as usize,
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

/// One side's figures.
#[derive(Clone, Copy, Debug)]
struct Figures {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `wrk` durations: `812.00us`, `3.10ms`, `1.02s`.
fn wrk_ms(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1e3,
        "ms" => v,
        "s" => v * 1e3,
        "m" => v * 60e3,
        _ => return None,
    })
}

/// Parses `wrk --latency` output; panics if any reply was not 2xx/3xx.
fn parse_wrk(out: &str) -> Figures {
    let field = |prefix: &str| {
        out.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix).map(|r| r.trim().to_string()))
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk's output:\n{out}"))
    };
    assert!(!out.contains("Non-2xx"), "wharf refused writes:\n{out}");
    let per_s = field("Requests/sec:").parse().expect("requests/s");
    let p50_ms = wrk_ms(&field("50%")).expect("p50");
    let p99_ms = wrk_ms(&field("99%")).expect("p99");
    Figures { per_s, p50_ms, p99_ms }
}

fn run_wrk(wharf: &Wharf, a: &Args, dir: &Path) -> Figures {
    let script = dir.join("post.lua");
    let body = format!("{{\"payload\":\"{}\"}}", b64(&vec![b'x'; a.payload]));
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = '{body}'\n"
        ),
    )
    .expect("wrk script");
    let out = Command::new(bench_tool("wrk"))
        .args(["-t2", &format!("-c{}", a.connections), &format!("-d{}s", a.seconds), "--latency", "-s"])
        .arg(&script)
        .arg(wharf.url("/v1/namespaces/bench/messages"))
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    parse_wrk(&text)
}

/// Parses `redis-benchmark --csv`: the last row's rps and p50/p99 (ms).
fn parse_redis_csv(out: &str) -> Figures {
    let row = out.lines().rfind(|l| l.contains("XADD")).unwrap_or_else(|| panic!("no XADD row:\n{out}"));
    let cols: Vec<f64> =
        row.rsplit(',').take(7).filter_map(|c| c.trim_matches('"').parse().ok()).collect::<Vec<_>>();
    // From the end: max, p99, p95, p50, min, avg, rps.
    assert_eq!(cols.len(), 7, "unexpected redis-benchmark row: {row}");
    Figures { per_s: cols[6], p50_ms: cols[3], p99_ms: cols[1] }
}

fn run_redis(redis: &Redis, a: &Args, requests: u64) -> Figures {
    let field = "x".repeat(a.payload);
    let out = Command::new(bench_tool("redis-benchmark"))
        .args(["-h", "127.0.0.1", "-p", &redis.port.to_string()])
        .args(["-c", &a.connections.to_string(), "-n", &requests.to_string(), "--csv"])
        .args(["XADD", "wharfbench", "*", "payload", &field])
        .output()
        .expect("run redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "redis-benchmark failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    parse_redis_csv(&text)
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "MISS" }
}

fn main() {
    let a = args();
    let scratch = tempfile::tempdir().expect("tempdir");
    let not_a_plugin = scratch.path().join("not-a-plugin.wasm");
    std::fs::write(&not_a_plugin, b"not wasm").expect("write");
    let wharf = Wharf::start(&format!(
        "[namespaces.bench]\npartitions = 4\n[namespaces.bench.limits]\nmax_backlog_messages = 1000000000\n\
         max_backlog_bytes = 1000000000000\n[namespaces.bench.target]\nplugin = \"{}\"\n",
        not_a_plugin.display()
    ));
    let redis_dir = scratch.path().join("redis");
    std::fs::create_dir_all(&redis_dir).expect("redis dir");
    let redis = Redis::start(&redis_dir);
    let policy = redis.appendfsync();
    assert_eq!(policy, "always", "redis runs with appendfsync always");

    eprintln!("wharf: wrk, {} connections, {} s ...", a.connections, a.seconds);
    let w = run_wrk(&wharf, &a, scratch.path());
    // About as long as wharf ran: a short calibration run sets the count.
    let probe = run_redis(&redis, &a, u64::from(a.connections) * 100);
    let requests = ((probe.per_s * a.seconds as f64) as u64).max(10_000);
    eprintln!("redis: redis-benchmark, {requests} XADD ...");
    let r = run_redis(&redis, &a, requests);

    println!(
        "\npeer row: durable single writes, {} connections, {} B payloads, same run, same disk",
        a.connections, a.payload
    );
    println!("{:<58} {:>10} {:>8} {:>8}", "", "writes/s", "p50 ms", "p99 ms");
    let row = |name: &str, f: &Figures| {
        println!("{name:<58} {:>10.0} {:>8.2} {:>8.2}", f.per_s, f.p50_ms, f.p99_ms);
    };
    row("Wharf HTTP POST .../messages, fsync (wrk)", &w);
    row(&format!("Redis Streams XADD, AOF appendfsync {policy} (redis-benchmark)"), &r);
    let ratio = w.per_s / r.per_s.max(1e-9);
    println!("ratio wharf / redis: {ratio:.2}");
    println!("target: wharf >= {TARGET_RATIO:.2} of redis: {} ({ratio:.2})", verdict(ratio >= TARGET_RATIO));
    println!(
        "target: wharf p99 <= {TARGET_P99_MS} ms: {} ({:.2} ms)",
        verdict(w.p99_ms <= TARGET_P99_MS),
        w.p99_ms
    );
    // The same bound for the peer, on the same disk and cores: whether the
    // machine gives the p99 target to a server that does nothing but this.
    println!(
        "redis p99 against the same bound: {} ({:.2} ms)",
        if r.p99_ms <= TARGET_P99_MS { "within" } else { "over" },
        r.p99_ms
    );
}
