//! The logic behind `wharf log verify|dump|salvage`, kept here so it is
//! tested with the crate. The host's `cmd_log.rs` only parses arguments and
//! calls these with stdout/stderr.
//!
//! Output: human-readable by default; with `json`, verify and salvage print
//! one JSON object on one line and dump prints one JSON object per record
//! (JSON lines). Progress lines go to `err`, at most once a second and only
//! once an operation has run for a second ([`Throttle`], which the host's
//! other CLI commands share). Return value: the exit code
//! (verify: 0 clean, 1 problems found; others 0); `Err` for failures
//! (I/O, or corruption met by dump).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::error::{Corruption, LogError};
use crate::scan::{Progress, TornTail};
use crate::storage::{FsStorage, Storage};
use crate::{SalvageReport, VerifyReport};

fn out_err(e: std::io::Error) -> LogError {
    LogError::Io { path: "<stdout>".into(), op: "write", source: e }
}

/// How long an operation runs before it shows progress, and the least time
/// between two progress lines.
pub const PROGRESS_AFTER: Duration = Duration::from_secs(1);

/// When a progress line is due: the first once the work has run for
/// `every`, then at most one per `every`. Times are passed in, so the rule
/// is tested without waiting.
#[derive(Debug, Clone, Copy)]
pub struct Throttle {
    start: Instant,
    last: Option<Instant>,
    every: Duration,
}

impl Throttle {
    /// Work that starts now, throttled to one line per [`PROGRESS_AFTER`].
    pub fn new() -> Self {
        Self::starting_at(Instant::now(), PROGRESS_AFTER)
    }

    pub fn starting_at(start: Instant, every: Duration) -> Self {
        Throttle { start, last: None, every }
    }

    /// Whether to print a line at `now`; a `true` counts as printed.
    pub fn due(&mut self, now: Instant) -> bool {
        let since = |t: Instant| now.saturating_duration_since(t) >= self.every;
        let due = since(self.start) && self.last.is_none_or(since);
        if due {
            self.last = Some(now);
        }
        due
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

/// Prints throttled progress lines.
struct Progressor<'a> {
    err: &'a mut dyn Write,
    throttle: Throttle,
}

impl<'a> Progressor<'a> {
    fn new(err: &'a mut dyn Write) -> Self {
        Progressor { err, throttle: Throttle::new() }
    }
    fn report(&mut self, p: &Progress<'_>) {
        if self.throttle.due(Instant::now()) {
            let _ = writeln!(
                self.err,
                "{}: segment {}/{} {} ({} MiB scanned)",
                p.phase,
                p.segment + 1,
                p.segments,
                p.file.display(),
                p.bytes_done >> 20
            );
        }
    }
}

fn corruption_json(c: &Corruption) -> Value {
    json!({ "file": c.file, "offset": c.offset, "kind": c.kind.code(), "detail": c.kind.to_string() })
}

fn torn_json(t: &Option<TornTail>) -> Value {
    match t {
        Some(t) => json!({ "file": t.file, "offset": t.offset, "bytes_dropped": t.bytes_dropped }),
        None => Value::Null,
    }
}

/// JSON form of a verify report.
pub fn verify_json(r: &VerifyReport) -> Value {
    json!({
        "clean": r.is_clean(),
        "data_dir": r.data_dir,
        "partitions": r.partitions.iter().map(|p| json!({
            "dir": p.dir,
            "segments": p.segments,
            "records": p.records,
            "bytes": p.bytes,
            "first_seq": p.first_seq,
            "next_seq": p.next_seq,
            "watermark": p.watermark,
            "torn_tail": torn_json(&p.torn_tail),
            "salvage_gaps": p.salvage_gaps,
            "problems": p.problems.iter().map(corruption_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// `wharf log verify DATA_DIR [--json]`.
pub fn verify_cmd(
    data_dir: &Path,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, LogError> {
    verify_cmd_with(&FsStorage, data_dir, json, out, err)
}

pub fn verify_cmd_with(
    storage: &dyn Storage,
    data_dir: &Path,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, LogError> {
    let mut prog = Progressor::new(err);
    let report = crate::verify_with(storage, data_dir, &mut |p| prog.report(p))?;
    let code = if report.is_clean() { 0 } else { 1 };
    if json {
        writeln!(out, "{}", verify_json(&report)).map_err(out_err)?;
        return Ok(code);
    }
    let (segs, bytes, recs) =
        report.partitions.iter().fold((0, 0, 0), |(s, b, r), p| (s + p.segments, b + p.bytes, r + p.records));
    writeln!(
        out,
        "verified {} partition(s) under {}: {segs} segment(s), {bytes} bytes, {recs} record(s)",
        report.partitions.len(),
        data_dir.display()
    )
    .map_err(out_err)?;
    for p in &report.partitions {
        for c in &p.problems {
            writeln!(
                out,
                "problem: {} offset {}: {} [{}]",
                c.file.display(),
                c.offset,
                c.kind,
                c.kind.code()
            )
            .map_err(out_err)?;
        }
        if let Some(t) = &p.torn_tail {
            writeln!(
                out,
                "note: torn tail in {} at offset {} ({} bytes, never acknowledged; dropped on next open)",
                t.file.display(),
                t.offset,
                t.bytes_dropped
            )
            .map_err(out_err)?;
        }
        for (a, b) in &p.salvage_gaps {
            writeln!(out, "note: {}: salvaged sequence gap [{a}, {b})", p.dir.display()).map_err(out_err)?;
        }
    }
    let n = report.problems().count();
    if n == 0 {
        writeln!(out, "clean").map_err(out_err)?;
    } else {
        writeln!(out, "{n} problem(s) found").map_err(out_err)?;
    }
    Ok(code)
}

fn payload_repr(payload: &[u8]) -> (&'static str, String) {
    match std::str::from_utf8(payload) {
        Ok(s) => ("utf8", s.to_string()),
        Err(_) => ("hex", payload.iter().map(|b| format!("{b:02x}")).collect()),
    }
}

/// `wharf log dump PARTITION_DIR [--from N] [--limit N] [--json]`.
pub fn dump_cmd(
    partition_dir: &Path,
    from: Option<u64>,
    limit: Option<u64>,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, LogError> {
    dump_cmd_with(&FsStorage, partition_dir, from, limit, json, out, err)
}

pub fn dump_cmd_with(
    storage: &dyn Storage,
    partition_dir: &Path,
    from: Option<u64>,
    limit: Option<u64>,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, LogError> {
    let limit = limit.unwrap_or(u64::MAX);
    if limit == 0 {
        return Ok(0);
    }
    let mut prog = Progressor::new(err);
    let mut printed = 0u64;
    let mut write_err = None;
    let res =
        crate::dump_with(storage, partition_dir, from.unwrap_or(0), &mut |p| prog.report(p), &mut |r| {
            let (enc, text) = payload_repr(r.payload);
            let line = if json {
                json!({
                    "seq": r.seq,
                    "file": r.file,
                    "offset": r.offset,
                    "len": r.payload.len(),
                    "crc": r.crc,
                    "payload_encoding": enc,
                    "payload": text,
                })
                .to_string()
            } else {
                let seg = r.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let shown = if enc == "utf8" { format!("{text:?}") } else { format!("hex:{text}") };
                format!(
                    "seq={} len={} crc={:08x} segment={seg} offset={} payload={shown}",
                    r.seq,
                    r.payload.len(),
                    r.crc,
                    r.offset
                )
            };
            if let Err(e) = writeln!(out, "{line}") {
                write_err = Some(e);
                return false;
            }
            printed += 1;
            printed < limit
        });
    if let Some(e) = write_err {
        return Err(out_err(e));
    }
    res?;
    Ok(0)
}

/// JSON form of a salvage report.
pub fn salvage_json(r: &SalvageReport) -> Value {
    json!({
        "dir": r.dir,
        "actions": r.actions,
        "torn_tail": torn_json(&r.torn_tail),
    })
}

/// `wharf log salvage PARTITION_DIR [--json]`.
pub fn salvage_cmd(
    partition_dir: &Path,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, LogError> {
    salvage_cmd_with(&FsStorage, partition_dir, json, out, err)
}

pub fn salvage_cmd_with(
    storage: &dyn Storage,
    partition_dir: &Path,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, LogError> {
    let mut prog = Progressor::new(err);
    let report = crate::salvage_with(storage, partition_dir, &mut |p| prog.report(p))?;
    if json {
        writeln!(out, "{}", salvage_json(&report)).map_err(out_err)?;
        return Ok(0);
    }
    if report.actions.is_empty() {
        writeln!(out, "nothing to salvage in {}", partition_dir.display()).map_err(out_err)?;
    }
    for a in &report.actions {
        let moved = match &a.quarantine {
            Some(q) => format!("moved {} bytes to {q}", a.bytes_moved),
            None => "moved nothing".to_string(),
        };
        let gap = if a.to_seq > a.from_seq {
            format!("sequences [{}, {}) are now an explicit gap", a.from_seq, a.to_seq)
        } else {
            "no sequences skipped".to_string()
        };
        writeln!(out, "salvaged {} offset {} ({}): {moved}; {gap}", a.segment, a.offset, a.kind)
            .map_err(out_err)?;
    }
    if let Some(t) = &report.torn_tail {
        writeln!(
            out,
            "note: torn tail in {} at offset {} is dropped on next open",
            t.file.display(),
            t.offset
        )
        .map_err(out_err)?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_due_only_after_the_delay_then_at_most_once_per_delay() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut t = Throttle::starting_at(t0, Duration::from_millis(1000));
        let due = [0, 500, 999, 1000, 1001, 1999, 2000, 2500, 3100].map(|ms| t.due(at(ms)));
        assert_eq!(due, [false, false, false, true, false, false, true, false, true]);
    }

    #[test]
    fn a_clock_before_the_start_is_not_due() {
        let t0 = Instant::now() + Duration::from_secs(5);
        let mut t = Throttle::starting_at(t0, Duration::from_millis(10));
        assert!(!t.due(Instant::now()));
    }
}
