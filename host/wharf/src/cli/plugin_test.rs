//! `wharf plugin test`: a conformance run of any plugin without a sidecar,
//! through the host's own loading code and sandbox.
//!
//! Checks, in order: the component loads and type-checks; `describe` works
//! on a fresh instance without `init`; `init` succeeds with the given config
//! (its error is shown exactly as the operator would see it); `deliver`
//! returns one outcome per message over batches of 1, 100 and 1,000; a
//! trapped instance is survivable (a call interrupted on purpose poisons
//! its instance, and a fresh instance delivers again). Reports time per
//! message and the memory an instance holds. Retries and rejects are
//! conformant outcomes: what matters is one per message.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::output::{CliError, outln};
use crate::plugin::{self, Batch, Instance, Message, NetPolicy, Outcome, PluginError, PluginSettings};

/// The batch sizes every plugin must handle.
const BATCH_SIZES: [usize; 3] = [1, 100, 1000];

#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// The plugin: a Wasm component (`.wasm`).
    pub file: PathBuf,
    /// A `target.config` entry, `KEY=VALUE`; repeat for more.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub config: Vec<(String, String)>,
    /// A URL the plugin may reach over wasi:http, matched like `allow_http` (scheme, host and port exactly, then a path prefix); repeat for more.
    #[arg(long = "allow-http", value_name = "URL", value_parser = crate::plugin::UrlRule::parse)]
    pub allow_http: Vec<crate::plugin::UrlRule>,
    /// An `ip:port` the plugin may connect to over TCP (like `allow_connect`); repeat for more.
    #[arg(long = "allow-connect", value_name = "ADDR")]
    pub allow_connect: Vec<SocketAddr>,
    /// Linear-memory cap per instance, as a namespace's `memory_limit_mib`.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub memory_limit_mib: usize,
    /// Deadline of one plugin call, as a namespace's `call_timeout_ms`.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub call_timeout_ms: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[derive(Debug, Serialize)]
struct Report {
    plugin: String,
    /// True when every check passed.
    ok: bool,
    size_bytes: u64,
    digest: Option<String>,
    wit: Option<&'static str>,
    /// Compiling (or loading from the cache) and type-checking.
    load_ms: f64,
    describe: Option<Describe>,
    init: Option<Step>,
    batches: Vec<BatchReport>,
    trap: Option<Step>,
    memory: Memory,
    problems: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Describe {
    name: Option<String>,
    version: Option<String>,
}

#[derive(Debug, Serialize)]
struct Step {
    ok: bool,
    ms: f64,
    detail: String,
}

#[derive(Debug, Serialize)]
struct BatchReport {
    size: usize,
    ok: bool,
    delivered: usize,
    retry: usize,
    reject: usize,
    halt: usize,
    /// The first retry, reject or halt reason, if any.
    first_reason: Option<String>,
    /// Why the call failed (trap, deadline, wrong count), if it did.
    error: Option<String>,
    ms: f64,
    us_per_message: f64,
}

#[derive(Debug, Serialize)]
struct Memory {
    /// Linear memory of an instance right after `init`.
    after_init_bytes: usize,
    /// The most any instance held during the run.
    peak_bytes: usize,
    limit_bytes: usize,
}

pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.file).map_err(|e| {
        CliError::new("io", format!("cannot read plugin {}: {e}", args.file.display()))
            .hint("give the path of a Wasm component, e.g. target/plugins/http.wasm")
    })?;
    let cache = std::env::temp_dir().join("wharf-plugin-check-cache");
    let runtime = plugin::Runtime::new(&cache)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = rt.block_on(conformance(&runtime, &args, &bytes));
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        outln!("{}", render(&report).trim_end())?;
    }
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

async fn conformance(runtime: &plugin::Runtime, args: &TestArgs, bytes: &[u8]) -> Report {
    let limit_bytes = args.memory_limit_mib.saturating_mul(1 << 20);
    let mut report = Report {
        plugin: args.file.display().to_string(),
        ok: false,
        size_bytes: bytes.len() as u64,
        digest: None,
        wit: None,
        load_ms: 0.0,
        describe: None,
        init: None,
        batches: Vec::new(),
        trap: None,
        memory: Memory { after_init_bytes: 0, peak_bytes: 0, limit_bytes },
        problems: Vec::new(),
    };
    let settings = PluginSettings {
        namespace: "plugin-test".into(),
        net: NetPolicy { tcp: Arc::new(args.allow_connect.clone()), http: Arc::new(args.allow_http.clone()) },
        memory_limit_bytes: limit_bytes,
        call_timeout: Duration::from_millis(args.call_timeout_ms.max(1)),
        config: args.config.clone(),
    };
    let started = Instant::now();
    let loaded = runtime.load_bytes(bytes, &report.plugin, settings);
    report.load_ms = ms(started.elapsed());
    let plugin = match loaded {
        Ok(p) => p,
        Err(e) => {
            report.problems.push(e.to_string());
            return report;
        }
    };
    report.digest = Some(plugin.digest.clone());
    report.wit = Some(plugin.wit());

    match plugin.describe().await {
        Ok(info) => {
            report.describe = Some(Describe {
                name: info.as_ref().map(|i| i.name.clone()),
                version: info.map(|i| i.version),
            })
        }
        Err(e) => report.problems.push(format!("describe without init failed: {e}")),
    }

    let started = Instant::now();
    let first = plugin.instantiate().await;
    let init_ms = ms(started.elapsed());
    let mut instance = match first {
        Ok(i) => {
            report.memory.after_init_bytes = i.memory_bytes();
            report.init = Some(Step { ok: true, ms: init_ms, detail: "ok".into() });
            Some(i)
        }
        Err(e) => {
            // Exactly what `serve` and `check-config` print for this config.
            report.init = Some(Step { ok: false, ms: init_ms, detail: e.to_string() });
            report.problems.push(e.to_string());
            return report;
        }
    };
    report.memory.peak_bytes = report.memory.after_init_bytes;

    let mut next_seq = 0u64;
    for size in BATCH_SIZES {
        let batch = batch(&mut next_seq, size);
        let mut inst = match instance.take() {
            Some(i) => i,
            None => match plugin.instantiate().await {
                Ok(i) => i,
                Err(e) => {
                    report.problems.push(format!("a fresh instance failed: {e}"));
                    break;
                }
            },
        };
        let started = Instant::now();
        let result = inst.deliver(&batch).await;
        let took = started.elapsed();
        report.memory.peak_bytes = report.memory.peak_bytes.max(inst.memory_bytes());
        let mut b = BatchReport {
            size,
            ok: false,
            delivered: 0,
            retry: 0,
            reject: 0,
            halt: 0,
            first_reason: None,
            error: None,
            ms: ms(took),
            us_per_message: (took.as_secs_f64() * 1e6 / size as f64 * 10.0).round() / 10.0,
        };
        match result {
            Ok(outcomes) => {
                tally(&mut b, &outcomes);
                b.ok = outcomes.len() == size;
                instance = Some(inst);
            }
            // The host drops an instance after any error; so do we.
            Err(e) => {
                report.problems.push(format!("batch of {size}: {e}"));
                b.error = Some(e.to_string());
            }
        }
        report.batches.push(b);
    }

    report.trap = Some(trap_check(&plugin, instance.take(), &mut next_seq).await);
    if let Some(t) = report.trap.as_ref().filter(|t| !t.ok) {
        report.problems.push(format!("trap recovery: {}", t.detail));
    }
    report.ok = report.problems.is_empty();
    report
}

fn tally(b: &mut BatchReport, outcomes: &[Outcome]) {
    for o in outcomes {
        let reason = match o {
            Outcome::Delivered => {
                b.delivered += 1;
                None
            }
            Outcome::Retry(r) => {
                b.retry += 1;
                Some(&r.reason)
            }
            Outcome::Reject(r) => {
                b.reject += 1;
                Some(r)
            }
            Outcome::Halt(r) => {
                b.halt += 1;
                Some(r)
            }
        };
        if b.first_reason.is_none() {
            b.first_reason = reason.cloned();
        }
    }
}

/// Interrupts a call on purpose (its instance is then poisoned, as after any
/// trap), and proves a fresh instance delivers again.
async fn trap_check(plugin: &plugin::Plugin, instance: Option<Instance>, next_seq: &mut u64) -> Step {
    let started = Instant::now();
    let mut inst = match instance {
        Some(i) => i,
        None => match plugin.instantiate().await {
            Ok(i) => i,
            Err(e) => return Step { ok: false, ms: 0.0, detail: format!("no instance to trap: {e}") },
        },
    };
    let trapped = match inst.deliver_interrupted(&batch(next_seq, 1)).await {
        Err(PluginError::Deadline(_)) => "interrupted on purpose (as a deadline overrun)".to_string(),
        Err(e) => format!("interrupted on purpose: {e}"),
        Ok(_) => "the call finished before the interrupt (nothing to recover from)".to_string(),
    };
    drop(inst);
    let detail = match plugin.instantiate().await {
        Err(e) => return step(false, started, format!("{trapped}; then a fresh instance failed: {e}")),
        Ok(mut fresh) => match fresh.deliver(&batch(next_seq, 1)).await {
            Ok(o) if o.len() == 1 => format!("{trapped}; a fresh instance delivered 1 outcome for 1 message"),
            Ok(o) => {
                return step(false, started, format!("{trapped}; then {} outcomes for 1 message", o.len()));
            }
            Err(e) => return step(false, started, format!("{trapped}; then a fresh instance failed: {e}")),
        },
    };
    step(true, started, detail)
}

fn step(ok: bool, started: Instant, detail: String) -> Step {
    Step { ok, ms: ms(started.elapsed()), detail }
}

/// `size` messages in partition 0 with JSON payloads and eight keys, ids and
/// sequences continuing from `next_seq`.
fn batch(next_seq: &mut u64, size: usize) -> Batch {
    let now = crate::clock::now_ms();
    let messages = (0..size)
        .map(|i| {
            let seq = *next_seq;
            *next_seq += 1;
            Message {
                id: format!("0-{seq}"),
                namespace: "plugin-test".into(),
                partition: 0,
                sequence: seq,
                key: Some(format!("k{}", i % 8)),
                payload: format!(r#"{{"type":"wharf-plugin-test","n":{seq}}}"#).into_bytes(),
                headers: vec![("x-wharf-test".into(), "1".into())],
                idempotency_key: None,
                attempt: 1,
                replays: 0,
                written_at_ms: now,
                record: None,
            }
        })
        .collect();
    Batch { messages, transaction_id: None }
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let size = mib(r.size_bytes as usize);
    let _ = writeln!(out, "plugin    {} ({size})", r.plugin);
    match r.wit {
        Some(wit) => {
            let _ = writeln!(out, "load      ok: {wit} in {:.0} ms", r.load_ms);
        }
        None => {
            let _ = writeln!(out, "load      FAILED");
        }
    }
    if let Some(d) = &r.describe {
        let _ = match (&d.name, &d.version) {
            (Some(n), Some(v)) => writeln!(out, "describe  ok: {n} {v} (without init)"),
            _ => writeln!(out, "describe  ok: none (this WIT version predates describe)"),
        };
    }
    if let Some(i) = &r.init {
        let _ = match i.ok {
            true => writeln!(out, "init      ok in {:.0} ms", i.ms),
            false => writeln!(out, "init      FAILED: {}", i.detail),
        };
    }
    for b in &r.batches {
        let head = format!("batch {:<5}", b.size);
        let _ = match &b.error {
            Some(e) => writeln!(out, "{head}  FAILED after {:.0} ms: {e}", b.ms),
            None => {
                let mut counts = Vec::new();
                for (n, what) in
                    [(b.delivered, "delivered"), (b.retry, "retry"), (b.reject, "reject"), (b.halt, "halt")]
                {
                    if n > 0 {
                        counts.push(format!("{n} {what}"));
                    }
                }
                let reason = b.first_reason.as_ref().map(|r| format!(" (first: {r})")).unwrap_or_default();
                writeln!(out, "{head}  ok: {}; {:.1} µs/message{reason}", counts.join(", "), b.us_per_message)
            }
        };
    }
    if let Some(t) = &r.trap {
        let _ = writeln!(out, "trap      {}: {}", if t.ok { "ok" } else { "FAILED" }, t.detail);
    }
    if r.init.as_ref().is_some_and(|i| i.ok) {
        let _ = writeln!(
            out,
            "memory    {} after init, {} peak (limit {})",
            mib(r.memory.after_init_bytes),
            mib(r.memory.peak_bytes),
            mib(r.memory.limit_bytes)
        );
    }
    if r.ok {
        let _ = writeln!(out, "result    conformant");
    } else {
        let _ = writeln!(out, "result    NOT conformant:");
        for p in &r.problems {
            let _ = writeln!(out, "  - {p}");
        }
    }
    out
}
