//! Delivery benchmark (issue 4): end-to-end delivery rate to memcached
//! through the Wasm plugin, against the same plugin code run natively,
//! sending the same batches to the same memcached in the same run.
//! Target: Wasm end to end >= 80 % of native.
//!
//! ```text
//! make build
//! cargo bench -p wharf-tests --bench delivery               # table
//! cargo bench -p wharf-tests --bench delivery -- --json     # one JSON line
//! cargo bench -p wharf-tests --bench delivery -- --messages 50000 --payload 100 --partitions 4 --rounds 3
//! ```
//!
//! What runs, in order (progress lines go to stderr):
//! 1. Load: a `wharf` with one memcached namespace (default 4 partitions,
//!    the host's default batch_max 100) whose memcached port is not
//!    listening yet. N messages with distinct keys are written through the
//!    HTTP API by 8 threads. Loading uses `durability = "buffered"` (the
//!    load is not what is measured); the host is then killed with SIGKILL
//!    (written data survives in the page cache) and its data dir is copied
//!    aside as a snapshot.
//! 2. memcached starts on that port (the harness's `-m 64`, 4 threads).
//! 3. Rounds (default 3), interleaving the paths so that drifting load on
//!    the machine hits all of them alike; before each path memcached gets
//!    `flush_all`, and after it every key is read back and compared with
//!    its payload (untimed). The native paths send exactly the batches the
//!    host forms from a full backlog (per partition, 100 messages each, in
//!    sequence order):
//!    - the memcached plugin crate (rlib, the code the Wasm component is
//!      built from) through `wharf_sdk::testing::Harness`, with 1 thread
//!      and with one thread per partition (the host's concurrency);
//!    - the memcached Wasm component's `deliver` calls alone: the same
//!      component the host loads, in the host's own plugin runtime
//!      (`wharf::benching`), in process, one instance and one tokio worker
//!      per partition, with no engine around it (no log reads, no delivery
//!      window, no watermark): the cost of the Wasm call itself;
//!    - a hand-written pipelined client, one thread per partition;
//!    - Wasm end to end: the data dir is restored from the snapshot, the
//!      host restarts with the default `durability = "fsync"`, and the
//!      clock runs from spawning the process until `/v1/status` shows
//!      `delivered_watermark == head_sequence` on every partition (polled
//!      every 20 ms; the watermark is persisted when a partition runs out
//!      of work, so this is at most one poll late). Nothing is subtracted;
//!      the start-up time (spawn until the API port answers; the delivery
//!      loops start just before the port is bound) is reported separately.
//!      Afterwards `delivered_total` must equal N (no redelivery, no miss).
//! 4. Each row is the median of the rounds. The ratio is against the faster
//!    native plugin-code row, the strictest baseline of the same code. The
//!    gap between it and the Wasm-calls row is what the Wasm boundary
//!    costs; the gap between the Wasm-calls row and Wharf end to end is the
//!    host engine's own work (and its start-up).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wharf::benching;
use wharf_plugin_memcached::Memcached as McTarget;
use wharf_sdk::testing::Harness;
use wharf_sdk::{Batch, Message};
use wharf_tests::redis::{Redis, bench_tool};
use wharf_tests::{Memcached, Wharf, free_port, plugin};

const NS: &str = "bench";
/// The host's default `delivery.batch_max`.
const BATCH: usize = 100;
const WRITERS: usize = 8;
const TARGET: f64 = 0.80;
/// Width of the table's path column.
const NAME_WIDTH: usize = 58;

#[derive(Clone, Copy)]
struct Opts {
    messages: usize,
    payload: usize,
    partitions: usize,
    rounds: usize,
    /// Messages the peer rows drain (a BullMQ job costs tens of
    /// microseconds of Redis work, so it gets a smaller backlog).
    peer_messages: usize,
    json: bool,
}

fn opts() -> Opts {
    let mut o = Opts {
        messages: 100_000,
        payload: 100,
        partitions: 4,
        rounds: 3,
        peer_messages: 20_000,
        json: false,
    };
    let mut args = std::env::args().skip(1);
    let num = |args: &mut dyn Iterator<Item = String>, what: &str| -> usize {
        args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{what} needs a number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => o.json = true,
            "--messages" => o.messages = num(&mut args, "--messages"),
            "--payload" => o.payload = num(&mut args, "--payload"),
            "--partitions" => o.partitions = num(&mut args, "--partitions"),
            "--rounds" => o.rounds = num(&mut args, "--rounds"),
            "--peer-messages" => o.peer_messages = num(&mut args, "--peer-messages"),
            // `cargo bench` passes `--bench`; name filters do not apply.
            _ => {}
        }
    }
    assert!(o.messages >= BATCH, "--messages must be at least {BATCH}");
    assert!(o.payload >= 16, "--payload must be at least 16 bytes");
    assert!((1..=64).contains(&o.partitions), "--partitions must be 1..=64");
    assert!(o.rounds >= 1, "--rounds must be at least 1");
    // memcached runs with `-m 64`: an eviction would fail the read-back.
    assert!(
        o.messages * (o.payload + 96) <= 48 << 20,
        "--messages x --payload too large for the 64 MiB memcached the harness starts"
    );
    o
}

fn key_of(i: usize) -> String {
    format!("bench-{i:08}")
}

/// Printable, distinct per message, exactly `len` bytes.
fn payload_of(i: usize, len: usize) -> Vec<u8> {
    let mut p = format!("{i:08}:").into_bytes();
    p.extend((0..len).map(|j| b'a' + ((i + j) % 26) as u8));
    p.truncate(len);
    p
}

/// The host's partitioner: FNV-1a of the key, modulo the partition count.
fn partition_of(key: &str, partitions: usize) -> usize {
    let h =
        key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (h % partitions as u64) as usize
}

/// Per partition, the batches the host forms from a full backlog: the
/// messages in sequence order, `BATCH` at a time.
fn host_batches(o: &Opts) -> Vec<Vec<Batch>> {
    let mut per_part: Vec<Vec<Message>> = vec![Vec::new(); o.partitions];
    for i in 0..o.messages {
        let key = key_of(i);
        let p = partition_of(&key, o.partitions);
        let seq = per_part[p].len() as u64;
        let mut m =
            Message::new(format!("{p}-{seq}"), payload_of(i, o.payload)).with_namespace(NS).with_key(key);
        m.partition = p as u32;
        m.sequence = seq;
        m.written_at_ms = wharf_sdk::now_ms();
        per_part[p].push(m);
    }
    per_part.into_iter().map(|msgs| msgs.chunks(BATCH).map(|c| Batch::new(c.to_vec())).collect()).collect()
}

// ------------------------------------------------------------ memcached I/O

struct Conn {
    r: BufReader<TcpStream>,
}

impl Conn {
    fn open(port: u16) -> Self {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect memcached");
        s.set_nodelay(true).expect("nodelay");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        Self { r: BufReader::new(s) }
    }

    fn line(&mut self, buf: &mut String) {
        buf.clear();
        let n = self.r.read_line(buf).expect("read from memcached");
        assert!(n > 0, "memcached closed the connection");
    }

    fn flush_all(&mut self) {
        self.r.get_mut().write_all(b"flush_all\r\n").expect("write to memcached");
        let mut l = String::new();
        self.line(&mut l);
        assert_eq!(l, "OK\r\n", "flush_all");
    }

    /// Pipelined `set`s of one batch, then one `STORED` per message.
    fn set_batch(&mut self, batch: &Batch, buf: &mut Vec<u8>, line: &mut String) {
        buf.clear();
        for m in &batch.messages {
            let key = m.key.as_deref().expect("bench messages have keys");
            write!(buf, "set {key} 0 0 {}\r\n", m.payload.len()).expect("buffer");
            buf.extend_from_slice(&m.payload);
            buf.extend_from_slice(b"\r\n");
        }
        self.r.get_mut().write_all(buf).expect("write to memcached");
        for _ in &batch.messages {
            self.line(line);
            assert_eq!(line, "STORED\r\n", "raw client: unexpected reply");
        }
    }
}

/// Reads keys `0..n` back with multi-gets; returns how many are missing or
/// hold the wrong value.
fn count_bad(port: u16, n: usize, o: &Opts) -> usize {
    let mut c = Conn::open(port);
    let mut bad = 0;
    let mut line = String::new();
    for start in (0..n).step_by(100) {
        let keys: Vec<String> = (start..n.min(start + 100)).map(key_of).collect();
        c.r.get_mut().write_all(format!("get {}\r\n", keys.join(" ")).as_bytes()).expect("write");
        let mut good = 0;
        loop {
            c.line(&mut line);
            if line == "END\r\n" {
                break;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            assert!(f.len() >= 4 && f[0] == "VALUE", "unexpected get reply {line:?}");
            let i: usize = f[1].trim_start_matches("bench-").parse().expect("key");
            let len: usize = f[3].parse().expect("length");
            let mut v = vec![0; len + 2];
            c.r.read_exact(&mut v).expect("value");
            v.truncate(len);
            if v == payload_of(i, o.payload) {
                good += 1;
            }
        }
        bad += keys.len() - good;
    }
    bad
}

// ------------------------------------------------------------ peer: BullMQ

/// The peer's concurrency per queue: 1 keeps each queue in order (Wharf's
/// per-key guarantee); 64 lets a queue's jobs overtake each other.
const PEER_CONCURRENCY: [usize; 2] = [1, 64];

/// `tests/benches/delivery-peer`: BullMQ's worker and its `node_modules`.
fn peer_dir() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/delivery-peer");
    assert!(
        dir.join("node_modules/bullmq").is_dir(),
        "the delivery peer is not installed: run scripts/bench-deps.sh (make bench does)"
    );
    dir
}

/// One drain of `o.peer_messages` jobs by BullMQ into memcached: the
/// drain's time (from starting the workers to the last job completed; the
/// load and node's start-up are not counted).
fn peer_run(redis: &Redis, mc_port: u16, o: &Opts, concurrency: usize) -> Duration {
    let dir = peer_dir();
    let mut args = vec!["drain.mjs".to_string()];
    for (k, v) in [
        ("--redis", usize::from(redis.port)),
        ("--memcached", usize::from(mc_port)),
        ("--messages", o.peer_messages),
        ("--payload", o.payload),
        ("--partitions", o.partitions),
        ("--concurrency", concurrency),
    ] {
        args.extend([k.to_string(), v.to_string()]);
    }
    let out = std::process::Command::new(bench_tool("node"))
        .args(&args)
        .current_dir(&dir)
        .output()
        .expect("run node drain.mjs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the BullMQ drain failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    let line: Value = serde_json::from_str(text.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("the BullMQ drain printed {text:?}: {e}"));
    assert_eq!(line["completed"], json!(o.peer_messages), "BullMQ completed jobs: {line}");
    Duration::from_secs_f64(line["drain_ms"].as_f64().expect("drain_ms") / 1000.0)
}

// ------------------------------------------------------------ native paths

/// Partitions' batch lists spread over `threads` lanes (partition p goes to
/// lane p % threads), each lane interleaving its partitions batch by batch.
fn lanes(batches: &[Vec<Batch>], threads: usize) -> Vec<Vec<&Batch>> {
    let mut lanes: Vec<Vec<&Batch>> = vec![Vec::new(); threads];
    let longest = batches.iter().map(Vec::len).max().unwrap_or(0);
    for round in 0..longest {
        for (p, part) in batches.iter().enumerate() {
            if let Some(b) = part.get(round) {
                lanes[p % threads].push(b);
            }
        }
    }
    lanes
}

/// Runs `work` on one thread per lane after `setup` (connect, init), timing
/// from a common start until the last lane is done.
fn timed_lanes<S>(
    lanes: &[Vec<&Batch>],
    setup: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, &Batch) + Sync,
) -> Duration {
    let barrier = std::sync::Barrier::new(lanes.len() + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = lanes
            .iter()
            .map(|lane| {
                let (barrier, setup, work) = (&barrier, &setup, &work);
                s.spawn(move || {
                    let mut state = setup();
                    barrier.wait();
                    for b in lane {
                        work(&mut state, b);
                    }
                })
            })
            .collect();
        barrier.wait();
        let t = Instant::now();
        for h in handles {
            h.join().expect("bench thread panicked");
        }
        t.elapsed()
    })
}

/// The memcached plugin's own code, natively, as the host would drive it.
fn native_plugin(port: u16, batches: &[Vec<Batch>], threads: usize) -> Duration {
    let servers = format!("127.0.0.1:{port}");
    timed_lanes(
        &lanes(batches, threads),
        || Harness::<McTarget>::init(&[("servers", servers.as_str())]).expect("plugin init"),
        |h, b| {
            let outcomes = h.deliver_batch(b);
            assert!(outcomes.iter().all(|o| o.is_delivered()), "native plugin: {:?}", outcomes[0]);
        },
    )
}

/// A minimal pipelined client: the floor for any memcached client.
fn native_raw(port: u16, batches: &[Vec<Batch>], threads: usize) -> Duration {
    timed_lanes(
        &lanes(batches, threads),
        || (Conn::open(port), Vec::new(), String::new()),
        |(c, buf, line), b| c.set_batch(b, buf, line),
    )
}

// ------------------------------------------------------------ wasm calls

/// The memcached component, compiled by the host's own plugin runtime with
/// the settings the host gives it (`LoadedTarget::plugin_settings`: the
/// namespace's `allow_connect` and config, the default memory limit and
/// call timeout). Compiling is not timed; `cache` holds the compiled code.
fn wasm_plugin(port: u16, cache: &Path) -> benching::Plugin {
    let runtime = benching::Runtime::new(cache).expect("wasmtime runtime");
    let server = format!("127.0.0.1:{port}");
    let settings = benching::PluginSettings {
        namespace: NS.into(),
        net: benching::NetPolicy {
            tcp: Arc::new(vec![server.parse().expect("memcached address")]),
            http: Arc::new(vec![]),
        },
        memory_limit_bytes: 64 << 20,
        call_timeout: Duration::from_secs(10),
        config: vec![("servers".into(), server)],
    };
    let bytes = std::fs::read(plugin("memcached")).expect("read memcached.wasm");
    runtime.load_bytes(&bytes, "memcached.wasm", settings).expect("load memcached.wasm")
}

/// The host's message (the `wharf:target@0.4.0` record) for an SDK one.
fn host_message(m: &Message) -> benching::Message {
    assert!(m.record.is_none(), "bench messages carry no log record");
    benching::Message {
        id: m.id.clone(),
        namespace: m.namespace.clone(),
        partition: m.partition,
        sequence: m.sequence,
        key: m.key.clone(),
        payload: m.payload.clone(),
        headers: m.headers.clone(),
        idempotency_key: m.idempotency_key.clone(),
        attempt: m.attempt,
        replays: m.replays,
        written_at_ms: m.written_at_ms,
        record: None,
    }
}

fn host_batch(b: &Batch) -> benching::Batch {
    benching::Batch {
        messages: b.messages.iter().map(host_message).collect(),
        transaction_id: b.transaction_id.clone(),
    }
}

/// The Wasm call's own cost: component-model lowering/lifting of the batch
/// and the guest's memcached I/O through WASI sockets, without the engine's
/// log reads, window and watermark. `Instance::deliver` on the same batches
/// as the native rows, one instance per lane on a tokio runtime with one
/// worker per lane (timers for the host's `tokio::time::timeout` around
/// each call, I/O for the WASI sockets).
///
/// Instances are made and initialised before the common start, untimed, as
/// the native rows' `Harness::init`; the clock stops when the last lane is
/// done.
fn wasm_calls(plugin: &benching::Plugin, batches: &[Vec<Batch>], threads: usize) -> Duration {
    let lanes: Vec<Vec<benching::Batch>> =
        lanes(batches, threads).into_iter().map(|l| l.into_iter().map(host_batch).collect()).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let barrier = Arc::new(tokio::sync::Barrier::new(lanes.len() + 1));
        let handles: Vec<_> = lanes
            .into_iter()
            .map(|lane| tokio::spawn(wasm_lane(plugin.clone(), lane, barrier.clone())))
            .collect();
        barrier.wait().await;
        let t = Instant::now();
        for h in handles {
            h.await.expect("wasm lane panicked");
        }
        t.elapsed()
    })
}

/// One lane of [`wasm_calls`]: instantiate (and `init`), wait for the
/// start, deliver the lane's batches in order. A lane whose instance failed
/// still reaches the start, so the failure panics instead of hanging.
async fn wasm_lane(plugin: benching::Plugin, lane: Vec<benching::Batch>, start: Arc<tokio::sync::Barrier>) {
    let instance = plugin.instantiate().await;
    start.wait().await;
    let mut instance = instance.expect("instantiate memcached.wasm");
    for b in &lane {
        let outcomes = instance.deliver(b).await.expect("wasm deliver");
        let bad = outcomes.iter().find(|o| !matches!(o, benching::Outcome::Delivered));
        assert!(bad.is_none(), "wasm plugin: {bad:?}");
    }
}

// ------------------------------------------------------------ wharf path

fn config(o: &Opts, mc_port: u16) -> String {
    format!(
        r#"[namespaces.{NS}]
partitions = {}

[namespaces.{NS}.retry]
max_attempts = 100000
initial_backoff_ms = 10
max_backoff_ms = 100

[namespaces.{NS}.target]
plugin = "{}"
allow_connect = ["127.0.0.1:{mc_port}"]
config = {{ servers = "127.0.0.1:{mc_port}" }}
"#,
        o.partitions,
        plugin("memcached").display()
    )
}

/// Writes the N messages with the harness's hand-built requests, not
/// `wharf-client`, on purpose: the client gives every message an
/// idempotency key, and a log of keyed messages takes longer to restart
/// (start-up folds the retained keys into the dedup window before the API
/// opens), which is inside the timed wasm run. Measured back to back, a
/// client-loaded log drained in 1.2-1.3 s instead of 1.0 s (start-up
/// 0.8-0.9 s instead of 0.3-0.6 s), and the ratio would no longer compare
/// with earlier runs.
fn load(w: &Wharf, o: &Opts) -> Duration {
    let t = Instant::now();
    std::thread::scope(|s| {
        for lane in 0..WRITERS {
            s.spawn(move || {
                for i in (lane..o.messages).step_by(WRITERS) {
                    let r = w.write(NS, Some(&key_of(i)), &payload_of(i, o.payload));
                    assert_eq!(r.status, 200, "write {i}: {}", r.body);
                }
            });
        }
    });
    t.elapsed()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("dir entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).expect("copy");
        }
    }
}

struct Progress {
    head: u64,
    watermark_done: bool,
    delivered: u64,
    dead: u64,
}

fn progress(status: &Value, partitions: usize) -> Progress {
    let parts = status["namespaces"][NS]["partitions"].as_array().cloned().unwrap_or_default();
    // Counters sit on the partition or, in newer hosts, under `delivery`.
    let field = |p: &Value, f: &str| p[f].as_u64().or_else(|| p["delivery"][f].as_u64()).unwrap_or(0);
    Progress {
        head: parts.iter().map(|p| field(p, "head_sequence")).sum(),
        watermark_done: parts.len() == partitions
            && parts.iter().all(|p| field(p, "delivered_watermark") == field(p, "head_sequence")),
        delivered: parts.iter().map(|p| field(p, "delivered_total")).sum(),
        dead: parts.iter().map(|p| field(p, "dead_lettered_total")).sum(),
    }
}

#[derive(Clone, Copy, Default)]
struct WasmRun {
    total: Duration,
    startup: Duration,
    /// Delivered by the first status poll, and when that poll was made.
    first_poll: (u64, Duration),
}

/// Restores the loaded data dir, restarts the host and times the drain.
fn wasm_run(w: &mut Wharf, snapshot: &Path, o: &Opts) -> WasmRun {
    w.kill();
    let data = w.data_dir();
    std::fs::remove_dir_all(&data).expect("remove data dir");
    copy_dir(snapshot, &data);
    let t0 = Instant::now();
    w.restart();
    let startup = t0.elapsed();
    let mut first_poll = None;
    let total = loop {
        let now = t0.elapsed();
        let p = progress(&w.status(), o.partitions);
        first_poll.get_or_insert((p.delivered, now));
        assert_eq!(p.dead, 0, "messages were dead-lettered: {}", w.status());
        if p.watermark_done && p.head == o.messages as u64 {
            break t0.elapsed();
        }
        assert!(now < Duration::from_secs(60), "not delivered after 60 s: {}\n{}", w.status(), w.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    let delivered = progress(&w.status(), o.partitions).delivered;
    assert_eq!(delivered, o.messages as u64, "delivered_total after the drain (a redelivery or a miss)");
    WasmRun { total, startup, first_poll: first_poll.unwrap_or_default() }
}

// ------------------------------------------------------------ main

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn median<T: Copy>(mut v: Vec<T>, key: impl Fn(&T) -> Duration) -> T {
    v.sort_by_key(|x| key(x));
    v[v.len() / 2]
}

fn main() {
    let o = opts();
    let start = Instant::now();
    let step = |what: &str| eprintln!("[delivery bench {:>5.1} s] {what}", start.elapsed().as_secs_f64());
    let mc_port = free_port();
    let batches = host_batches(&o);

    // 1. Load the log while memcached is down.
    step("starting wharf");
    let mut w = Wharf::start(&config(&o, mc_port));
    w.kill();
    w.set_buffered(true);
    w.restart();
    step(&format!("loading {} messages over HTTP", o.messages));
    let load_time = load(&w, &o);
    assert_eq!(progress(&w.status(), o.partitions).head, o.messages as u64, "head sequences after the load");
    w.kill();
    w.set_buffered(false);
    let snapshot = w.dir.path().join("snapshot");
    copy_dir(&w.data_dir(), &snapshot);
    step(&format!("loaded in {:.1} s", load_time.as_secs_f64()));

    // 2. memcached up.
    let mc = Memcached::start_on(mc_port);
    let flush = || Conn::open(mc_port).flush_all();
    let check = |what: &str| {
        let bad = count_bad(mc_port, o.messages, &o);
        assert_eq!(bad, 0, "{what}: {bad} of {} keys missing or wrong in memcached", o.messages);
    };
    native_plugin(mc_port, &batches, 1); // warm-up: memcached's slabs, caches
    let cache = tempfile::tempdir().expect("plugin cache dir");
    let component = wasm_plugin(mc_port, cache.path());
    let redis_dir = tempfile::tempdir().expect("redis data dir");
    let redis = Redis::start(redis_dir.path());
    assert_eq!(redis.appendfsync(), "always", "the peer's Redis must fsync every write");

    // 3. Interleaved rounds.
    let threads = if o.partitions > 1 { vec![1, o.partitions] } else { vec![1] };
    let mut plugin_runs: Vec<Vec<Duration>> = vec![Vec::new(); threads.len()];
    let mut raw_runs = Vec::new();
    let mut call_runs = Vec::new();
    let mut wasm_runs = Vec::new();
    let mut peer_runs: Vec<Vec<Duration>> = vec![Vec::new(); PEER_CONCURRENCY.len()];
    for round in 1..=o.rounds {
        step(&format!("round {round} of {}", o.rounds));
        for (k, &t) in threads.iter().enumerate() {
            flush();
            plugin_runs[k].push(native_plugin(mc_port, &batches, t));
            check("native plugin code");
        }
        flush();
        call_runs.push(wasm_calls(&component, &batches, o.partitions));
        check("wasm plugin calls");
        flush();
        raw_runs.push(native_raw(mc_port, &batches, o.partitions));
        check("raw client");
        flush();
        wasm_runs.push(wasm_run(&mut w, &snapshot, &o));
        check("wharf reported everything delivered, but");
        for (k, &c) in PEER_CONCURRENCY.iter().enumerate() {
            flush();
            peer_runs[k].push(peer_run(&redis, mc_port, &o, c));
            let bad = count_bad(mc_port, o.peer_messages, &o);
            assert_eq!(bad, 0, "BullMQ: {bad} of {} keys missing or wrong in memcached", o.peer_messages);
        }
    }
    if let Some(path) = std::env::var_os("WHARF_BENCH_LOG") {
        std::fs::write(path, w.log()).expect("write WHARF_BENCH_LOG");
    }
    drop(w);
    drop(mc);
    drop(redis);

    let plugin: Vec<(usize, Duration)> =
        threads.iter().zip(plugin_runs).map(|(t, runs)| (*t, median(runs, |d| *d))).collect();
    let raw = median(raw_runs, |d| *d);
    let calls = median(call_runs, |d| *d);
    let wasm = median(wasm_runs, |r| r.total);
    let peer: Vec<(usize, Duration)> =
        PEER_CONCURRENCY.iter().zip(peer_runs).map(|(c, runs)| (*c, median(runs, |d| *d))).collect();
    report(&o, &Medians { plugin, raw, calls, wasm, peer }, load_time, start.elapsed());
}

/// Every path's median time, for [`report`].
struct Medians {
    /// Per thread count, the native plugin code.
    plugin: Vec<(usize, Duration)>,
    raw: Duration,
    calls: Duration,
    wasm: WasmRun,
    /// Per concurrency, the BullMQ peer.
    peer: Vec<(usize, Duration)>,
}

fn report(o: &Opts, m: &Medians, load: Duration, wall: Duration) {
    let Medians { plugin, raw, calls, wasm: w, peer } = m;
    let (raw, calls) = (*raw, *calls);
    let n = o.messages;
    let native = plugin.iter().map(|(_, d)| rate(n, *d)).fold(0.0, f64::max);
    let wasm = rate(n, w.total);
    let ratio = wasm / native;
    let calls = rate(n, calls);
    // Rate once the API answered: excludes process start and plugin load,
    // and whatever was delivered before the first poll.
    let (early, at) = w.first_poll;
    let rest = n as f64 - early as f64;
    let steady = (rest >= n as f64 * 0.5 && w.total > at).then(|| rest / (w.total - at).as_secs_f64());
    let threads = |t: usize| if t == 1 { "1 thread".to_string() } else { format!("{t} threads") };
    if o.json {
        let native_rows: serde_json::Map<String, Value> = plugin
            .iter()
            .map(|(t, d)| (format!("native_plugin_{t}_threads_msgs_per_s"), json!(rate(n, *d).round())))
            .collect();
        let line = json!({
            "bench": "delivery", "messages": n, "payload_bytes": o.payload, "batch": BATCH,
            "partitions": o.partitions, "rounds": o.rounds,
            "native": native_rows,
            "native_raw_msgs_per_s": rate(n, raw).round(),
            "wasm_calls_alone_msgs_per_s": calls.round(),
            "wasm_calls_alone_ratio": (calls / native * 1000.0).round() / 1000.0,
            "wasm_end_to_end_msgs_per_s": wasm.round(),
            "wasm_after_api_up_msgs_per_s": steady.map(f64::round),
            "wasm_total_ms": w.total.as_millis() as u64,
            "wasm_startup_ms": w.startup.as_millis() as u64,
            "peer": {
                "name": "BullMQ 6.7 over redis-server (appendonly, appendfsync always), memjs",
                "messages": o.peer_messages, "queues": o.partitions,
                "msgs_per_s": peer.iter().map(|(c, d)| (format!("concurrency_{c}"), json!(rate(o.peer_messages, *d).round())))
                    .collect::<serde_json::Map<String, Value>>(),
            },
            "ratio": (ratio * 1000.0).round() / 1000.0,
            "target": TARGET, "pass": ratio >= TARGET,
            "load_ms": load.as_millis() as u64,
            "wall_ms": wall.as_millis() as u64,
        });
        println!("{line}");
        return;
    }
    println!();
    println!(
        "delivery to memcached, {n} msgs of {} bytes, batch {BATCH}, {} partitions, median of {} rounds",
        o.payload, o.partitions, o.rounds
    );
    println!("{:<NAME_WIDTH$} {:>10} {:>7}", "path", "msgs/s", "ratio");
    let row = |name: &str, r: f64| println!("{name:<NAME_WIDTH$} {r:>10.0} {:>7.2}", r / native);
    for (t, d) in plugin {
        row(&format!("native plugin code (rlib), {}", threads(*t)), rate(n, *d));
    }
    row(&format!("wasm plugin calls alone (in-process wasmtime), {}", threads(o.partitions)), calls);
    row(&format!("native raw pipelined client, {}", threads(o.partitions)), rate(n, raw));
    row("wharf end-to-end (wasm)", wasm);
    if let Some(s) = steady {
        row("  wharf, from the first status poll", s);
    }
    for (c, d) in peer {
        let order = if *c == 1 { "in order".to_string() } else { format!("x {c}, unordered") };
        row(
            &format!("peer: BullMQ + Redis AOF always, {} queues, {order}", o.partitions),
            rate(o.peer_messages, *d),
        );
    }
    println!(
        "wharf: {} ms from spawn until every watermark reached its head; start-up (spawn until the API \
         answered) {} ms; {early} delivered at the first poll ({} ms)",
        w.total.as_millis(),
        w.startup.as_millis(),
        at.as_millis()
    );
    println!(
        "ratio: against the faster native plugin-code row; load: {n} HTTP writes in {:.1} s ({WRITERS} writers, \
         buffered); bench wall time {:.1} s",
        load.as_secs_f64(),
        wall.as_secs_f64()
    );
    if let Some((_, d)) = peer.first() {
        println!(
            "peer: BullMQ (npm) jobs in its own redis-server (appendfsync always), one worker per queue setting \
             each job into the same memcached with memjs; {} msgs; timed from starting the workers to the last \
             job completed (node's start-up and the load not counted); wharf end to end / peer in order: {:.1}x",
            o.peer_messages,
            wasm / rate(o.peer_messages, *d)
        );
    }
    println!(
        "target: wasm >= {TARGET:.2} of native: {} ({ratio:.2})",
        if ratio >= TARGET { "MET" } else { "MISS" }
    );
}
