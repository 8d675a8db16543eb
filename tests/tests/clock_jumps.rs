//! Wall-clock jumps (issue 17): the delivery engine's durations (retry
//! backoff, the breaker's cooldown, a delayed message's wait) run on the
//! monotonic clock, so a jump of the wall clock by an hour neither fires
//! them early nor stalls them.
//!
//! The sidecar runs under libfaketime (Debian `faketime`, installed by
//! `scripts/install-deps.sh`) reading its offset from a file on every call
//! (`FAKETIME_TIMESTAMP_FILE`, `FAKETIME_NO_CACHE=1`), with the monotonic
//! clock left alone (`FAKETIME_DONT_FAKE_MONOTONIC=1`): only the wall clock
//! jumps.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use wharf_tests::{HttpSink, Wharf, b64, eventually};

const NS: &str = "hooks";

fn libfaketime() -> PathBuf {
    ["/usr/lib/x86_64-linux-gnu/faketime", "/usr/lib/aarch64-linux-gnu/faketime", "/usr/lib/faketime"]
        .iter()
        .map(|d| Path::new(d).join("libfaketimeMT.so.1"))
        .find(|p| p.is_file())
        .expect("libfaketime is not installed: run scripts/install-deps.sh (Debian package faketime)")
}

/// A sidecar whose wall clock is offset by what [`Clock::jump`] wrote.
struct Clock {
    dir: tempfile::TempDir,
}

impl Clock {
    fn new() -> Self {
        let clock = Self { dir: tempfile::tempdir().expect("tempdir") };
        clock.jump("+0");
        clock
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("faketime.rc")
    }

    /// Sets the wall-clock offset (libfaketime syntax: `+3600`, `-3600`).
    fn jump(&self, offset: &str) {
        let tmp = self.dir.path().join("faketime.rc.tmp");
        std::fs::write(&tmp, format!("{offset}\n")).expect("write faketime file");
        std::fs::rename(&tmp, self.file()).expect("rename faketime file");
    }

    /// `failures` failed calls open the breaker for `backoff_ms`; the sink's
    /// Retry-After holds a message as long (capped at max_backoff_ms).
    fn start(&self, sink: &HttpSink, backoff_ms: u64, failures: u32) -> Wharf {
        self.start_with(sink, backoff_ms, backoff_ms, failures)
    }

    /// [`Clock::start`] with the retry backoff (`max_backoff_ms`) and the
    /// breaker's `cooldown_ms` set apart.
    fn start_with(&self, sink: &HttpSink, backoff_ms: u64, cooldown_ms: u64, failures: u32) -> Wharf {
        let extra = format!(
            "[namespaces.{NS}.retry]\nmax_attempts = 1000\ninitial_backoff_ms = 1\nmax_backoff_ms = {backoff_ms}\n\
             [namespaces.{NS}.breaker]\nfailures = {failures}\ncooldown_ms = {cooldown_ms}\n\
             [namespaces.{NS}.idempotency]\nwindow_ms = 3600000\n"
        );
        let (lib, file) = (libfaketime(), self.file());
        let env = [
            ("LD_PRELOAD", lib.to_str().expect("path")),
            ("FAKETIME_TIMESTAMP_FILE", file.to_str().expect("path")),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ];
        let wharf = Wharf::start_with_env(&sink.namespace(NS, 1, &extra), &env);
        // The process does see the offset, read at run time: 40 days back,
        // a write due now is further ahead than `limits.max_delay_ms` (30 days).
        self.jump("-40d");
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis();
        let due_now = json!({"key": "probe", "payload": b64(b"probe"), "deliver_at_ms": now_ms as u64});
        let r = wharf.post(&format!("/v1/namespaces/{NS}/messages"), &due_now);
        assert_eq!(
            (r.status, &r.body["error"]["code"]),
            (400, &json!("invalid_delay")),
            "libfaketime not in effect: {:?}",
            r.body
        );
        self.jump("+0");
        wharf
    }
}

/// Fails everything with `Retry-After: <secs>` until told otherwise.
fn failing_sink(retry_after_secs: u64) -> HttpSink {
    let sink = HttpSink::start();
    sink.set(|b| {
        b.fail_all = Some(503);
        b.retry_after = Some(retry_after_secs.to_string());
    });
    sink
}

fn attempts_of(sink: &HttpSink, body: &str) -> usize {
    let refused = sink.refused().iter().filter(|(_, r)| r.body == body.as_bytes()).count();
    refused + sink.accepted().iter().filter(|r| r.body == body.as_bytes()).count()
}

/// Waits up to `secs` for `done`; on timeout, panics with what the sink got
/// and the end of the sidecar's log.
fn wait_for(wharf: &Wharf, sink: &HttpSink, secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        if Instant::now() > deadline {
            let log = wharf.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
            panic!(
                "timed out after {secs} s waiting for {what}; accepted {:?}, {} refused\n{}",
                sink.accepted_bodies(),
                sink.refused().len(),
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_delayed(wharf: &Wharf, key: &str, payload: &str, delay_ms: u64) {
    let r = wharf.post(
        &format!("/v1/namespaces/{NS}/messages"),
        &json!({"key": key, "payload": b64(payload.as_bytes()), "delay_ms": delay_ms}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
}

/// Writes `payload` (key `a`), waits for its first, failed attempt, then
/// jumps the wall clock an hour ahead and lets the sink accept. Returns when
/// the attempt was seen.
fn fail_once_then_jump_ahead(clock: &Clock, wharf: &Wharf, sink: &HttpSink, payload: &str) -> Instant {
    wharf.write_id(NS, "a", payload.as_bytes());
    wait_for(wharf, sink, 30, "the first attempt", || attempts_of(sink, payload) == 1);
    let failed = Instant::now();
    clock.jump("+3600");
    sink.set(|b| b.fail_all = None);
    failed
}

#[test]
fn a_wall_clock_jump_forward_fires_no_backoff_or_delay_early() {
    let clock = Clock::new();
    let sink = failing_sink(8);
    // The breaker stays closed: only the retry's backoff holds the message.
    let wharf = clock.start(&sink, 8_000, 1000);
    // The delayed message first: by the first attempt of the other, the
    // lane has taken it (its due time is on the monotonic clock from then).
    write_delayed(&wharf, "b", "delayed", 8_000);
    let written = Instant::now();
    let first = fail_once_then_jump_ahead(&clock, &wharf, &sink, "retried");
    // The message backs off for 8 s (Retry-After) and the delayed one waits
    // 8 s: an hour more of wall clock changes neither.
    wait_for(&wharf, &sink, 60, "the retry delivered", || sink.accepted_bodies().contains("retried"));
    let retried_after = first.elapsed();
    wait_for(&wharf, &sink, 60, "the delayed message delivered", || {
        sink.accepted_bodies().contains("delayed")
    });
    let delayed_after = written.elapsed();
    assert!(
        retried_after >= Duration::from_secs(5),
        "retried {retried_after:?} after a failure with an 8 s backoff"
    );
    assert!(delayed_after >= Duration::from_secs(5), "delivered {delayed_after:?} after a write delayed 8 s");
    assert_eq!(attempts_of(&sink, "retried"), 2, "{:?}", sink.refused().len());
}

#[test]
fn a_wall_clock_jump_backward_stalls_no_backoff_cooldown_or_delay() {
    let clock = Clock::new();
    let sink = failing_sink(1);
    // One failed call opens the breaker for 1 s.
    let wharf = clock.start(&sink, 1_000, 1);
    write_delayed(&wharf, "b", "delayed", 2_000);
    wharf.write_id(NS, "a", b"retried");
    wait_for(&wharf, &sink, 30, "the first attempt", || attempts_of(&sink, "retried") >= 1);
    clock.jump("-3600");
    sink.set(|b| b.fail_all = None);
    // Due a second (the retry, the breaker's probe) or two (the delay) from
    // now on the monotonic clock, not in an hour.
    wait_for(&wharf, &sink, 30, "the retry and the delayed message delivered", || {
        let got = sink.accepted_bodies();
        got.contains("retried") && got.contains("delayed")
    });
    // And new writes flow.
    wharf.write_id(NS, "c", b"after");
    wait_for(&wharf, &sink, 30, "a write after the jump delivered", || {
        sink.accepted_bodies().contains("after")
    });
}

/// The breaker's cooldown is on the monotonic clock: one failed call opens
/// it for 8 s, and an hour more of wall clock neither closes it early (the
/// probe comes no sooner than the cooldown allows, the retry backoff being
/// only 50 ms) nor keeps it open: the probe comes and delivers.
#[test]
fn a_wall_clock_jump_forward_neither_closes_the_breaker_early_nor_keeps_it_open() {
    let clock = Clock::new();
    let sink = failing_sink(0);
    let wharf = clock.start_with(&sink, 50, 8_000, 1);
    let failed = fail_once_then_jump_ahead(&clock, &wharf, &sink, "probed");
    wait_for(&wharf, &sink, 60, "the probe delivered", || sink.accepted_bodies().contains("probed"));
    let probed_after = failed.elapsed();
    assert!(
        probed_after >= Duration::from_secs(5),
        "the breaker let a probe through {probed_after:?} after it opened for 8 s"
    );
    assert_eq!(attempts_of(&sink, "probed"), 2, "one failure, then one probe: {:?}", sink.refused().len());
    wait_for(&wharf, &sink, 30, "a closed breaker", || {
        wharf.breaker_states(NS, "default").iter().all(|s| s == "closed")
    });
    // And new writes flow.
    wharf.write_id(NS, "c", b"after");
    wait_for(&wharf, &sink, 30, "a write after the jump delivered", || {
        sink.accepted_bodies().contains("after")
    });
}

/// The write time stamped on a partition's records never goes back, even
/// when the wall clock does, and `written_at_ms * 1000 + sequence % 1000`
/// (the Cassandra plugin's `USING TIMESTAMP`) strictly increases along the
/// partition: an older write can never win last-write-wins (issue 15).
#[test]
fn write_times_never_go_back_along_a_partition_when_the_wall_clock_does() {
    let clock = Clock::new();
    let sink = HttpSink::start();
    // Every delivery is rejected: the messages land in the DLQ, which
    // shows each one's stored write time.
    sink.set(|b| b.fail_all = Some(400));
    let wharf = clock.start(&sink, 50, 1000);
    let write = |i: u32| {
        let r = wharf.post(
            &format!("/v1/namespaces/{NS}/messages"),
            &json!({"key": "k", "payload": b64(format!("m{i}").as_bytes())}),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
    };
    (0..3).for_each(write);
    clock.jump("-1h");
    (3..6).for_each(write);
    clock.jump("+0");
    (6..8).for_each(write);
    let entries = eventually(Duration::from_secs(60), "8 dead letters", || {
        let body = wharf.dlq(NS, None).body;
        let entries = body["entries"].as_array().cloned().unwrap_or_default();
        (entries.len() == 8).then_some(entries)
    });
    let mut stamps: Vec<(u64, u64)> = entries
        .iter()
        .map(|e| {
            (e["sequence"].as_u64().expect("sequence"), e["written_at_ms"].as_u64().expect("written_at_ms"))
        })
        .collect();
    stamps.sort_unstable();
    for pair in stamps.windows(2) {
        let ((s0, t0), (s1, t1)) = (pair[0], pair[1]);
        assert!(t1 >= t0, "the write time went back from {s0} to {s1}: {stamps:?}");
        assert!(t1 * 1000 + s1 % 1000 > t0 * 1000 + s0 % 1000, "USING TIMESTAMP did not grow: {stamps:?}");
    }
}

/// The idempotency window is a duration on the monotonic clock: a wall
/// clock jumping two hours ahead does not forget a key remembered for one
/// (`window_ms = 3600000` in `Clock::start`).
#[test]
fn a_wall_clock_jump_forward_does_not_expire_idempotency_keys_early() {
    let clock = Clock::new();
    let sink = HttpSink::start();
    let wharf = clock.start(&sink, 50, 1000);
    let write = || {
        let r = wharf.post(
            &format!("/v1/namespaces/{NS}/messages"),
            &json!({"key": "k", "payload": b64(b"once"), "idempotency_key": "pay-1"}),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body
    };
    let first = write();
    clock.jump("+2h");
    let again = write();
    clock.jump("+0");
    assert_eq!(again["message_id"], first["message_id"], "{again:?}");
    assert_eq!(again["duplicate"], json!(true), "the key was forgotten after a wall-clock jump: {again:?}");
}
