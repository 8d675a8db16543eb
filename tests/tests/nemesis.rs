//! A randomized fault schedule with a checker (Jepsen-style, one node;
//! issue 17). Clients write with idempotency keys, retrying each logical
//! write with the same key until it is acknowledged, while a nemesis mixes
//! SIGKILL and restart, disk full and space back (tmpfs, as root), target
//! outages and slow targets, plugin replacement and config reloads. Then,
//! with every fault healed, a checker verifies the history:
//!
//! - every acknowledged message is delivered, or (a rejected key) in the DLQ;
//! - the idempotency keys deduplicated: one logical write, one message id,
//!   whatever the retries and crashes; and no message id carries two bodies;
//! - per-key order holds on the target (first arrivals in ack order);
//! - the id a write was acknowledged with is the one the target saw.
//!
//! `WHARF_NEMESIS_SECS` (default 15) and `WHARF_NEMESIS_SEED` (default: from
//! the clock) choose the run; `make soak` runs it for 300 s. A failure
//! prints the seed and the schedule, so that it can be replayed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wharf_tests::{HttpSink, Wharf, b64, eventually, fixture, plugin, shared_plugin_cache};

const CLIENTS: usize = 3;
const KEYS_PER_CLIENT: usize = 4;

/// xorshift64*: small, seedable, enough for a schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A tmpfs for the data dir, when this process may mount one.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Option<Self> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", "size=256m", "tmpfs"]).arg(at).status();
        ok.is_ok_and(|s| s.success()).then(|| Self(at.to_path_buf()))
    }

    fn used_bytes(&self) -> u64 {
        let out = Command::new("df").args(["-B1", "--output=used"]).arg(&self.0).output().expect("df");
        String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or(0)
    }

    fn resize(&self, bytes: u64) {
        let ok = Command::new("mount").args(["-o", &format!("remount,size={bytes}")]).arg(&self.0).status();
        assert!(ok.is_ok_and(|s| s.success()), "remount {} to {bytes}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// One acknowledged logical write.
#[derive(Debug, Clone)]
struct Acked {
    key: String,
    body: String,
    message_id: String,
}

/// A client: logical writes `c<i>-<n>` on its own keys, each retried with
/// its idempotency key until acknowledged (or the run ends).
fn client(i: usize, port: Arc<AtomicU16>, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<Acked>>>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let key = match n % 10 {
            9 => format!("c{i}-poison"),
            _ => format!("c{i}-k{}", n % KEYS_PER_CLIENT),
        };
        let body = format!("c{i}-{n:05}");
        let req = json!({"key": key, "payload": b64(body.as_bytes()), "idempotency_key": body});
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let url =
                format!("http://127.0.0.1:{}/v1/namespaces/orders/messages", port.load(Ordering::Relaxed));
            match agent.post(&url).send_json(&req) {
                Ok(mut r) if r.status() == 200 => {
                    let v: Value = r.body_mut().read_json().expect("ack body");
                    assert_eq!(v["durable"], json!(true), "{v}");
                    let message_id = v["message_id"].as_str().expect("message_id").to_string();
                    acked.lock().expect("lock").push(Acked {
                        key: key.clone(),
                        body: body.clone(),
                        message_id,
                    });
                    break;
                }
                // A typed refusal (disk full, backlog) or the process being
                // down: the same logical write again, same idempotency key.
                Ok(r) => assert!([429, 503, 507].contains(&r.status().as_u16()), "unexpected {}", r.status()),
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        n += 1;
    }
}

/// The nemesis's faults.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill,
    TargetDown,
    TargetSlow,
    DiskFull,
    ReplacePlugin,
    Reload,
}

const FAULTS: [Fault; 6] =
    [Fault::Kill, Fault::TargetDown, Fault::TargetSlow, Fault::DiskFull, Fault::ReplacePlugin, Fault::Reload];

struct Nemesis<'a> {
    w: &'a mut Wharf,
    sink: &'a HttpSink,
    disk: Option<&'a Tmpfs>,
    port: Arc<AtomicU16>,
    plugins: [Vec<u8>; 2],
    next_plugin: usize,
    started: Instant,
    schedule: Vec<String>,
}

impl Nemesis<'_> {
    fn note(&mut self, what: String) {
        self.schedule.push(format!("{:>7.2}s {what}", self.started.elapsed().as_secs_f64()));
    }

    /// Applies `fault` for `hold`, then heals it.
    fn apply(&mut self, fault: Fault, hold: Duration) {
        self.note(format!("{fault:?} for {} ms", hold.as_millis()));
        match fault {
            Fault::Kill => {
                self.w.restart();
                self.port.store(self.w.port, Ordering::Relaxed);
            }
            Fault::TargetDown => {
                self.sink.set(|b| b.fail_all = Some(503));
                std::thread::sleep(hold);
                self.sink.set(|b| b.fail_all = None);
            }
            Fault::TargetSlow => {
                self.sink.set(|b| b.delay = Duration::from_millis(150));
                std::thread::sleep(hold);
                self.sink.set(|b| b.delay = Duration::ZERO);
            }
            Fault::DiskFull => {
                let Some(disk) = self.disk else { return self.note("  (no tmpfs: skipped)".into()) };
                disk.resize((disk.used_bytes() + (128 << 10)).max(1 << 20));
                std::thread::sleep(hold);
                disk.resize(256 << 20);
            }
            Fault::ReplacePlugin => {
                let bytes = self.plugins[self.next_plugin].clone();
                self.next_plugin = 1 - self.next_plugin;
                let agent: ureq::Agent =
                    ureq::Agent::config_builder().http_status_as_error(false).build().into();
                let url = self.w.url("/v1/admin/namespaces/orders/plugin");
                let r = agent.put(&url).header("content-type", "application/wasm").send(&bytes[..]);
                let status = r.map(|r| r.status().as_u16()).unwrap_or(0);
                self.note(format!("  plugin register: {status}"));
            }
            Fault::Reload => self.w.hangup(),
        }
    }
}

#[test]
fn acknowledged_writes_survive_a_random_fault_schedule_in_order_and_deduplicated() {
    let secs: u64 = std::env::var("WHARF_NEMESIS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(15);
    let seed: u64 =
        std::env::var("WHARF_NEMESIS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("nemesis: seed {seed}, {secs} s (replay with WHARF_NEMESIS_SEED={seed})");
    let mut rng = Rng(seed);

    let root = tempfile::tempdir().expect("tempdir");
    let disk = Tmpfs::mount(&root.path().join("disk"));
    if disk.is_none() {
        eprintln!("nemesis: cannot mount a tmpfs (needs root): the disk-full fault is skipped");
    }
    let data = disk.as_ref().map_or_else(|| root.path().join("data"), |d| d.0.join("data"));
    let server = format!(
        "data_dir = {:?}\nsegment_max_bytes = 65536\n{}",
        data.display().to_string(),
        shared_plugin_cache()
    );
    let sink = HttpSink::start();
    sink.set(|b| b.reject_keys = (0..CLIENTS).map(|i| format!("c{i}-poison")).collect());
    let extra =
        "[namespaces.orders.retry]\nmax_attempts = 1000000\ninitial_backoff_ms = 10\nmax_backoff_ms = 300\n";
    let mut w = Wharf::start_with_server(&server, &sink.namespace("orders", 2, extra), "all");

    let port = Arc::new(AtomicU16::new(w.port));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (port, stop, acked) = (port.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || client(i, port, stop, acked))
        })
        .collect();

    let plugins = [
        std::fs::read(fixture("wit-0.1.0/http.wasm")).expect("0.1.0 http plugin"),
        std::fs::read(plugin("http")).expect("http plugin"),
    ];
    let mut nemesis = Nemesis {
        w: &mut w,
        sink: &sink,
        disk: disk.as_ref(),
        port: port.clone(),
        plugins,
        next_plugin: 0,
        started: Instant::now(),
        schedule: Vec::new(),
    };
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100 + rng.below(500)));
        let fault = FAULTS[rng.below(FAULTS.len() as u64) as usize];
        nemesis.apply(fault, Duration::from_millis(100 + rng.below(900)));
    }
    let schedule = std::mem::take(&mut nemesis.schedule);
    stop.store(true, Ordering::Relaxed);
    clients.into_iter().for_each(|c| c.join().expect("client thread"));
    let acked = acked.lock().expect("lock").clone();
    let story = || format!("seed {seed}, schedule:\n{}\n", schedule.join("\n"));
    assert!(acked.len() > 20, "too few writes acknowledged ({}): {}", acked.len(), story());

    // Healed: everything acknowledged reaches the target or the DLQ.
    let (delivered, dead): (Vec<_>, Vec<_>) = acked.iter().partition(|a| !a.key.ends_with("-poison"));
    eventually(Duration::from_secs(90), "every acknowledged write delivered", || {
        let got = sink.accepted_bodies();
        delivered.iter().all(|a| got.contains(&a.body)).then_some(())
    });
    let in_dlq: HashSet<String> = eventually(Duration::from_secs(60), "rejected writes in the DLQ", || {
        let ids: HashSet<String> = dlq_ids(&w).into_iter().collect();
        dead.iter().all(|a| ids.contains(&a.message_id)).then_some(ids)
    });
    assert!(dead.iter().all(|a| in_dlq.contains(&a.message_id)));

    check_history(&sink, &delivered, &story);
    eprintln!(
        "nemesis: {} acknowledged ({} dead-lettered), {} faults, {} deliveries seen",
        acked.len(),
        dead.len(),
        schedule.len(),
        sink.accepted().len()
    );
}

/// Every DLQ entry id of `orders` (all pages).
fn dlq_ids(w: &Wharf) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = after.as_ref().map(|a| format!("&after={a}")).unwrap_or_default();
        let r = w.get(&format!("/v1/namespaces/orders/dlq?limit=1000{q}"));
        let page: Vec<String> = r.body["entries"]
            .as_array()
            .map(|e| e.iter().filter_map(|x| x["message_id"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        if page.is_empty() {
            return ids;
        }
        after = page.last().cloned();
        ids.extend(page);
    }
}

/// Dedup, ids and per-key order, from what the target received.
fn check_history(sink: &HttpSink, delivered: &[&Acked], story: &dyn Fn() -> String) {
    let mut ids_of_body: HashMap<String, HashSet<String>> = HashMap::new();
    let mut bodies_of_id: HashMap<String, HashSet<String>> = HashMap::new();
    let mut first_arrivals: HashMap<String, Vec<String>> = HashMap::new();
    for r in sink.accepted() {
        let body = String::from_utf8_lossy(&r.body).into_owned();
        let id = r.header("x-wharf-message-id").unwrap_or("?").to_string();
        ids_of_body.entry(body.clone()).or_default().insert(id.clone());
        bodies_of_id.entry(id).or_default().insert(body.clone());
        let key = r.header("x-wharf-key").unwrap_or("").to_string();
        let seen = first_arrivals.entry(key).or_default();
        if !seen.contains(&body) {
            seen.push(body);
        }
    }
    for (body, ids) in &ids_of_body {
        assert_eq!(ids.len(), 1, "logical write {body} became several messages {ids:?}; {}", story());
    }
    for (id, bodies) in &bodies_of_id {
        assert_eq!(bodies.len(), 1, "message {id} arrived with different contents {bodies:?}; {}", story());
    }
    let mut acked_order: HashMap<&str, Vec<&str>> = HashMap::new();
    for a in delivered {
        let seen = &ids_of_body[&a.body];
        assert!(
            seen.contains(&a.message_id),
            "{} acked as {} but delivered as {seen:?}; {}",
            a.body,
            a.message_id,
            story()
        );
        acked_order.entry(&a.key).or_default().push(&a.body);
    }
    for (key, order) in acked_order {
        let arrived: Vec<&str> =
            first_arrivals[key].iter().map(String::as_str).filter(|b| order.contains(b)).collect();
        assert_eq!(arrived, order, "key {key} out of order at the target; {}", story());
    }
}
