//! Many namespaces, one idle sidecar (issue 18): start time, resident
//! memory and open file descriptors of `wharf serve` with 1,000 namespaces
//! of 4 partitions each, none of them written to.
//!
//! ```text
//! make build
//! cargo bench -p wharf-tests --bench namespaces    # -- --namespaces 1000 --partitions 4
//! ```
//!
//! Each namespace has the `log-target` plugin (no network). The process
//! inherits the bench's open-file limit (raise `ulimit -n` if it is below
//! what wharf opens: the start fails otherwise). The first start creates
//! every partition; the figures are those of the restart that follows (the
//! steady case): start time runs from the spawn until the status lists
//! every namespace (the harness first waits for the listening addresses);
//! RSS (`VmRSS`, `VmHWM`) and the entries of `/proc/<pid>/fd` (counted by
//! what they point at) are read right after. Targets: start <= 1 s, RSS <=
//! 150 MB, and open fds bounded by the active partitions (none here), taken
//! as at most 256.

use std::time::{Duration, Instant};

use wharf_tests::{Wharf, eventually, plugin};

const TARGET_START: Duration = Duration::from_secs(1);
const TARGET_RSS_MB: f64 = 150.0;
/// Open fds of an idle sidecar, at most (listeners, logs, runtime).
const TARGET_FDS: usize = 256;

fn args() -> (usize, usize) {
    let (mut namespaces, mut partitions) = (1000, 4);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = || it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{flag} N"));
        match flag.as_str() {
            "--namespaces" => namespaces = num(),
            "--partitions" => partitions = num(),
            _ => {} // cargo bench passes --bench
        }
    }
    (namespaces, partitions)
}

fn config(namespaces: usize, partitions: usize) -> String {
    let log = plugin("log-target");
    (0..namespaces)
        .map(|i| {
            format!(
                "[namespaces.ns{i}]\npartitions = {partitions}\n[namespaces.ns{i}.target]\nplugin = \"{}\"\n",
                log.display()
            )
        })
        .collect()
}

/// A `kB` field of `/proc/<pid>/status`, in MB.
fn status_mb(pid: u32, field: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kb / 1024.0
}

/// Open fds by what they point at: a file's name with digits folded
/// (`<n>.seg`), or the kind of a socket, pipe or anon inode.
fn fd_kinds(pid: u32) -> std::collections::BTreeMap<String, usize> {
    let mut kinds = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("proc fd").filter_map(Result::ok) {
        let target = std::fs::read_link(e.path()).map(|p| p.display().to_string()).unwrap_or_default();
        let name = target.rsplit('/').next().unwrap_or("").to_string();
        let kind = match name.split_once(':') {
            Some((k, _)) => k.to_string(),
            None if name.ends_with(".seg") => "<n>.seg".to_string(),
            None => name.chars().map(|c| if c.is_ascii_digit() { 'n' } else { c }).collect(),
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }
    kinds
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "MISS" }
}

/// How long until the status lists every namespace, counted from `t`.
fn all_up(wharf: &Wharf, namespaces: usize, t: Instant) -> Duration {
    eventually(Duration::from_secs(600), "every namespace in the status", || {
        let st = wharf.status();
        (st["namespaces"].as_object().map_or(0, |m| m.len()) >= namespaces).then_some(())
    });
    t.elapsed()
}

fn main() {
    let (namespaces, partitions) = args();
    let config = config(namespaces, partitions);
    let t = Instant::now();
    let mut wharf = Wharf::start(&config);
    let first = all_up(&wharf, namespaces, t);
    let t = Instant::now();
    wharf.restart();
    let listening = t.elapsed();
    let start = all_up(&wharf, namespaces, t);
    let pid = wharf.pid().expect("wharf runs");
    let (rss, hwm) = (status_mb(pid, "VmRSS:"), status_mb(pid, "VmHWM:"));
    let kinds = fd_kinds(pid);
    let fds: usize = kinds.values().sum();

    println!("\nmany namespaces: {namespaces} x {partitions} partitions, one idle sidecar");
    println!("first start (creates them), all up  {:>10.0} ms", first.as_secs_f64() * 1e3);
    println!("restart, listening after            {:>10.0} ms", listening.as_secs_f64() * 1e3);
    println!("restart, every namespace up after   {:>10.0} ms", start.as_secs_f64() * 1e3);
    println!("RSS after the restart (VmRSS / VmHWM) {rss:>8.1} / {hwm:.1} MB");
    println!("open fds after the restart          {fds:>10}");
    for (kind, n) in &kinds {
        println!("  {kind:<34} {n:>10}");
    }
    println!(
        "target: start <= {} ms: {} ({:.0} ms)",
        TARGET_START.as_millis(),
        verdict(start <= TARGET_START),
        start.as_secs_f64() * 1e3
    );
    println!("target: RSS <= {TARGET_RSS_MB} MB: {} ({rss:.1} MB)", verdict(rss <= TARGET_RSS_MB));
    println!(
        "target: open fds <= {TARGET_FDS} (no active partition): {} ({fds})",
        verdict(fds <= TARGET_FDS)
    );
}
