//! Retained history and rewinds (issue 16), against the real binary and a
//! real HTTP target: retention keeps delivered segments within its limits,
//! status says where history starts, a rewind re-delivers it in per-key
//! order flagged as replays (CLI with progress, and the admin API), goes on
//! after a crash, and history that is gone is a clear error naming the
//! oldest point.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use wharf_tests::{HttpSink, Wharf, eventually, wharf_bin};

const SMALL_SEGMENTS: &str = "segment_max_bytes = 4096";
const KEEP: &str = "[namespaces.orders.retention]\nmax_bytes = 10000000\n\n[namespaces.orders.retry]\nmax_attempts = 100000\ninitial_backoff_ms = 20\nmax_backoff_ms = 200\n";

/// A namespace `orders` posting to `sink`, with `extra` tables after it.
fn orders(sink: &HttpSink, partitions: u32, extra: &str) -> String {
    format!("{}\n{extra}", sink.namespace("orders", partitions, ""))
}

/// Writes `per_key` messages for each of `keys` keys, interleaved; the
/// payloads in write order per key.
fn write_keys(w: &Wharf, keys: usize, per_key: usize, tag: &str) -> HashMap<String, Vec<String>> {
    let mut written: HashMap<String, Vec<String>> = HashMap::new();
    for n in 0..per_key {
        for k in 0..keys {
            let (key, body) = (format!("k{k}"), format!("{tag}-k{k}-{n:03}-{}", "x".repeat(150)));
            let r = w.write("orders", Some(&key), body.as_bytes());
            assert_eq!(r.status, 200, "{:?}", r.body);
            written.entry(key).or_default().push(body);
        }
    }
    written
}

/// Every lane of `orders` has delivered everything written.
fn all_delivered(w: &Wharf) -> bool {
    let s = w.status();
    let ns = &s["namespaces"]["orders"];
    ns["targets"].as_object().expect("targets").values().all(|t| {
        t["partitions"].as_array().expect("lanes").iter().all(|l| {
            let head =
                ns["partitions"][l["partition"].as_u64().expect("p") as usize]["head_sequence"].clone();
            l["delivered_watermark"] == head && l["rewind"].is_null()
        })
    })
}

fn wait_delivered(w: &Wharf) {
    eventually(Duration::from_secs(30), "everything delivered", || all_delivered(w).then_some(()));
}

fn retained_from(w: &Wharf, ns: &str, partition: usize) -> Value {
    w.status()["namespaces"][ns]["partitions"][partition]["retained_from"].clone()
}

/// Per key, the bodies the sink accepted, in arrival order.
fn arrivals(sink: &HttpSink) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for r in sink.accepted() {
        let key = r.header("x-wharf-key").unwrap_or("").to_string();
        out.entry(key).or_default().push(String::from_utf8_lossy(&r.body).into_owned());
    }
    out
}

fn replays(sink: &HttpSink) -> Vec<u32> {
    sink.accepted()
        .iter()
        .map(|r| r.header("x-wharf-replays").unwrap_or("0").parse().expect("replays"))
        .collect()
}

fn rewind_cli(w: &Wharf, args: &[&str]) -> std::process::Output {
    Command::new(wharf_bin())
        .arg("rewind")
        .args(args)
        .args(["--server", &format!("127.0.0.1:{}", w.port)])
        .output()
        .expect("run wharf rewind")
}

/// Now, returned once the clock is in a later millisecond: every write
/// after it is stamped later than the time returned.
fn a_millisecond_boundary() -> SystemTime {
    let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).expect("clock").as_millis();
    let since = SystemTime::now();
    while ms(SystemTime::now()) <= ms(since) {
        std::thread::yield_now();
    }
    since
}

fn rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at).format(&time::format_description::well_known::Rfc3339).expect("format")
}

#[test]
fn retention_keeps_delivered_history_within_its_limits_and_status_says_where_it_starts() {
    let sink = HttpSink::start();
    let namespaces = format!(
        "{}\n{}\n[namespaces.aged.retention]\nmax_age_ms = 1500\n{}\n[namespaces.orders.retention]\nmax_bytes = 10000\n",
        sink.namespace("aged", 1, ""),
        sink.namespace("trimmed", 1, ""),
        sink.namespace("orders", 1, ""),
    );
    let w = Wharf::start_with_server(SMALL_SEGMENTS, &namespaces, "all");
    for ns in ["aged", "trimmed", "orders"] {
        for n in 0..120 {
            assert_eq!(
                w.write(ns, Some("k"), format!("{ns}-{n}-{}", "y".repeat(150)).as_bytes()).status,
                200
            );
        }
    }
    let delivered = |ns: &str| {
        let s = w.status();
        let head = s["namespaces"][ns]["partitions"][0]["head_sequence"].clone();
        s["namespaces"][ns]["partitions"][0]["delivered_watermark"] == head
    };
    eventually(Duration::from_secs(30), "all three delivered", || {
        ["aged", "trimmed", "orders"].iter().all(|ns| delivered(ns)).then_some(())
    });
    // Default: delivered segments go at once.
    let trimmed = eventually(Duration::from_secs(10), "trimmed GC", || {
        let seq = retained_from(&w, "trimmed", 0)["sequence"].as_u64().expect("sequence");
        (seq > 0).then_some(seq)
    });
    assert!(trimmed > 60, "only the active segment stays: from {trimmed}");
    // max_bytes = 10000: two or three 4 KiB segments of delivered history.
    let kept = retained_from(&w, "orders", 0);
    let kept_seq = kept["sequence"].as_u64().expect("sequence");
    assert!(kept_seq > 0 && kept_seq < trimmed, "bytes limit keeps some: {kept} vs trimmed {trimmed}");
    assert!(kept["written_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{kept}");
    // max_age_ms = 1500: history ages out with no new delivery.
    eventually(Duration::from_secs(20), "aged history expires", || {
        (retained_from(&w, "aged", 0)["sequence"].as_u64() >= Some(trimmed)).then_some(())
    });
}

#[test]
fn undelivered_segments_are_kept_whatever_the_limits() {
    let sink = HttpSink::start();
    sink.set(|b| b.fail_all = Some(503));
    let limits = "[namespaces.orders.retention]\nmax_bytes = 4096\nmax_age_ms = 1\n";
    let retry =
        "[namespaces.orders.retry]\nmax_attempts = 100000\ninitial_backoff_ms = 20\nmax_backoff_ms = 200\n";
    let ns = orders(&sink, 1, &format!("{limits}\n{retry}"));
    let w = Wharf::start_with_server(SMALL_SEGMENTS, &ns, "all");
    write_keys(&w, 1, 80, "down");
    // The age limit is 1 ms and the byte limit one segment: nothing goes,
    // because nothing was delivered.
    std::thread::sleep(Duration::from_millis(600)); // several expiry rounds (100 ms each)
    assert_eq!(retained_from(&w, "orders", 0)["sequence"], 0);
    sink.set(|b| b.fail_all = None);
    wait_delivered(&w);
    eventually(Duration::from_secs(10), "delivered history expires", || {
        (retained_from(&w, "orders", 0)["sequence"].as_u64() > Some(0)).then_some(())
    });
    assert_eq!(sink.accepted_bodies().len(), 80, "every message reached the target");
}

#[test]
fn a_rewind_redelivers_history_in_key_order_as_replays_with_a_progress_bar() {
    let sink = HttpSink::start();
    let w = Wharf::start_with_server(SMALL_SEGMENTS, &orders(&sink, 2, KEEP), "all");
    let written = write_keys(&w, 5, 30, "a");
    wait_delivered(&w);
    assert_eq!(arrivals(&sink), written, "first delivery, in key order");
    sink.accepted.lock().expect("lock").clear();

    let out = rewind_cli(&w, &["orders", "--earliest"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}\n{}", w.log());
    assert!(stdout.contains("orders/default partition 0: rewound to sequence 0"), "{stdout}");
    assert!(stdout.contains("orders: history re-delivered"), "{stdout}");
    // Done means done: everything came again, in key order, as replays.
    assert_eq!(arrivals(&sink), written, "the rewind re-delivers every key in order\n{stderr}");
    assert!(replays(&sink).iter().all(|r| *r >= 1), "replays are flagged: {:?}", replays(&sink));
    assert!(all_delivered(&w), "no rewind left in status");

    // New writes flow as before, not flagged.
    sink.accepted.lock().expect("lock").clear();
    let after = w.write_visible("orders", "k1", b"after the rewind", 10_000);
    assert_eq!(after.status, 200, "{:?}", after.body);
    assert_eq!(replays(&sink), vec![0]);
    assert!(w.log().contains("rewind finished"), "{}", w.log());
}

/// A rewind that comes while the lane holds records it read during its
/// last call (`engine/read_ahead.rs`). A window of 8 and batches of 4, on
/// a target that fails everything: each retried call reads the next batch
/// ahead, and the full window keeps it there. The rewind drops it and the
/// lane reads from sequence 0 again: every message arrives, in key order.
#[test]
fn a_rewind_while_the_lane_holds_records_read_ahead_delivers_every_message_in_key_order() {
    let sink = HttpSink::start();
    sink.set(|b| b.fail_all = Some(503));
    let window = "[namespaces.orders.delivery]\nbatch_max = 4\nmax_in_flight = 8\n";
    let w = Wharf::start_with_server("", &orders(&sink, 1, &format!("{KEEP}\n{window}")), "all");
    let written = write_keys(&w, 4, 25, "a");
    eventually(Duration::from_secs(30), "a call retried", || {
        (w.target_delivery_sum("orders", "default", "retries_total") > 0).then_some(())
    });
    let r = w.post("/v1/admin/namespaces/orders/rewind", &json!({"earliest": true}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["rewinds"][0]["from"], 0, "{:?}", r.body);
    sink.set(|b| b.fail_all = None);
    wait_delivered(&w);
    assert_eq!(arrivals(&sink), written, "every message once, in key order\n{}", w.log());
}

#[test]
fn a_rewind_from_a_time_sends_only_what_was_written_since_and_new_writes_follow_it() {
    let sink = HttpSink::start();
    let w = Wharf::start_with_server(SMALL_SEGMENTS, &orders(&sink, 1, KEEP), "all");
    write_keys(&w, 3, 10, "before");
    wait_delivered(&w);
    let since = a_millisecond_boundary();
    let second = write_keys(&w, 3, 10, "since");
    wait_delivered(&w);
    sink.accepted.lock().expect("lock").clear();
    sink.set(|b| b.fail_all = Some(503));
    let r = w.post("/v1/admin/namespaces/orders/rewind", &json!({"from_time": rfc3339(since)}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let lane = &r.body["rewinds"][0];
    assert_eq!(
        (lane["target"].as_str(), lane["from"].as_u64(), lane["end"].as_u64()),
        (Some("default"), Some(30), Some(60))
    );
    let lanes = eventually(Duration::from_secs(10), "rewind in status", || {
        let l = w.target_partitions("orders", "default");
        l[0]["rewind"]["remaining"].as_u64().is_some_and(|n| n == 30).then_some(l)
    });
    assert_eq!(lanes[0]["rewind"]["position"], 30);
    // A write during the rewind waits behind the history of its key.
    assert_eq!(w.write("orders", Some("k0"), b"during").status, 200);
    sink.set(|b| b.fail_all = None);
    wait_delivered(&w);
    let mut expected = second;
    expected.get_mut("k0").expect("k0").push("during".into());
    assert_eq!(arrivals(&sink), expected, "only what was written since, then the new write");
}

#[test]
fn a_rewind_goes_on_where_it_stood_after_a_crash() {
    let sink = HttpSink::start();
    let mut w = Wharf::start_with_server(SMALL_SEGMENTS, &orders(&sink, 1, KEEP), "all");
    let written = write_keys(&w, 2, 20, "c");
    wait_delivered(&w);
    sink.accepted.lock().expect("lock").clear();
    sink.set(|b| b.fail_all = Some(503));
    let out = rewind_cli(&w, &["orders", "--target", "default", "--from-seq", "0:0", "--no-wait", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reply: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(reply["finished"], false);
    assert_eq!(reply["rewinds"][0]["end"], 40);
    w.kill();
    w.restart();
    let lane = eventually(Duration::from_secs(10), "rewind after restart", || {
        let l = w.target_partitions("orders", "default");
        l[0]["rewind"].is_object().then(|| l[0].clone())
    });
    assert_eq!(lane["rewind"]["position"], 0, "{lane}");
    sink.set(|b| b.fail_all = None);
    wait_delivered(&w);
    assert_eq!(sink.first_arrivals(), written, "every message again, in key order");
    assert!(replays(&sink).iter().all(|r| *r >= 1));
}

#[test]
fn history_that_is_gone_is_a_clear_error_naming_the_oldest_point_and_changes_nothing() {
    let sink = HttpSink::start();
    let w = Wharf::start_with_server(SMALL_SEGMENTS, &orders(&sink, 1, ""), "all");
    write_keys(&w, 1, 100, "gone");
    wait_delivered(&w);
    let first = eventually(Duration::from_secs(10), "GC", || {
        retained_from(&w, "orders", 0)["sequence"].as_u64().filter(|s| *s > 0)
    });
    let path = "/v1/admin/namespaces/orders/rewind";
    let r = w.post(path, &json!({"from_seq": {"0": 0}}));
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (410, Some("history_not_retained")),
        "{:?}",
        r.body
    );
    let msg = r.body["error"]["message"].as_str().expect("message");
    assert!(msg.contains(&format!("retains history from sequence {first}, written 20")), "{msg}");
    let r = w.post(path, &json!({"from_time": "2001-02-03T04:05:06Z"}));
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (410, Some("history_not_retained")),
        "{:?}",
        r.body
    );

    for (body, status, code) in [
        (json!({"earliest": true, "from_seq": {"0": 1}}), 400, "invalid_rewind"),
        (json!({}), 400, "invalid_rewind"),
        (json!({"from_time": "yesterday"}), 400, "invalid_time"),
        (json!({"from_seq": {"7": 1}}), 404, "partition_not_found"),
        (json!({"from_seq": {"0": 1_000_000}}), 400, "rewind_beyond_head"),
        (json!({"earliest": true, "target": "nope"}), 404, "target_not_found"),
        (json!({"earliest": true, "colour": "red"}), 400, "invalid_json"),
    ] {
        let r = w.post(path, &body);
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {:?}",
            r.body
        );
    }
    let out = rewind_cli(&w, &["orders", "--from-seq", "0:0", "--json"]);
    assert!(!out.status.success());
    let err: Value = serde_json::from_slice(&out.stdout).expect("json error");
    assert_eq!(err["error"]["code"], "history_not_retained", "{err}");
    let out = rewind_cli(&w, &["orders", "--earliest", "--from-seq", "0:1"]);
    assert!(!out.status.success(), "clap refuses two starting points");
    assert!(w.target_partitions("orders", "default")[0]["rewind"].is_null(), "nothing changed");
}

/// A written message: where it landed, and its key and body.
struct Placed {
    partition: u64,
    sequence: u64,
    key: String,
    body: String,
}

/// Like [`write_keys`], keeping where each message landed.
fn write_placed(w: &Wharf, keys: usize, per_key: usize, tag: &str) -> Vec<Placed> {
    let mut placed = Vec::new();
    for n in 0..per_key {
        for k in 0..keys {
            let (key, body) = (format!("k{k}"), format!("{tag}-k{k}-{n:03}-{}", "z".repeat(150)));
            let r = w.write("orders", Some(&key), body.as_bytes());
            assert_eq!(r.status, 200, "{:?}", r.body);
            let at = |f: &str| r.body[f].as_u64().unwrap_or_else(|| panic!("{f}: {:?}", r.body));
            placed.push(Placed { partition: at("partition"), sequence: at("sequence"), key, body });
        }
    }
    placed
}

/// Per key, in write order, the bodies of the messages `keep` selects.
fn by_key(placed: &[Placed], keep: impl Fn(&Placed) -> bool) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for p in placed.iter().filter(|p| keep(p)) {
        out.entry(p.key.clone()).or_default().push(p.body.clone());
    }
    out
}

/// `orders` with two partitions and the targets `a` and `b`, each posting to
/// its own sink, history kept.
fn two_targets(a: &HttpSink, b: &HttpSink) -> String {
    format!(
        "[namespaces.orders]\npartitions = 2\n{KEEP}\n{}\n{}",
        a.target_table("orders", "a"),
        b.target_table("orders", "b")
    )
}

fn clear(sinks: &[&HttpSink]) {
    for s in sinks {
        s.accepted.lock().expect("lock").clear();
    }
}

#[test]
fn a_rewind_without_a_target_from_several_sequences_redelivers_to_every_target() {
    let (a, b) = (HttpSink::start(), HttpSink::start());
    let w = Wharf::start_with_server(SMALL_SEGMENTS, &two_targets(&a, &b), "all");
    let placed = write_placed(&w, 6, 12, "s");
    wait_delivered(&w);
    let everything = by_key(&placed, |_| true);
    assert_eq!((arrivals(&a), arrivals(&b)), (everything.clone(), everything), "first delivery");
    // Both partitions got messages, and a start inside each.
    let from = |p: u64| {
        let seqs: Vec<u64> = placed.iter().filter(|m| m.partition == p).map(|m| m.sequence).collect();
        assert!(seqs.len() > 4, "partition {p} holds {} messages", seqs.len());
        seqs[seqs.len() / 3]
    };
    let (from0, from1) = (from(0), from(1));
    clear(&[&a, &b]);

    let (s0, s1) = (format!("0:{from0}"), format!("1:{from1}"));
    let out = rewind_cli(&w, &["orders", "--from-seq", &s0, "--from-seq", &s1]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}\n{}", w.log());
    for target in ["a", "b"] {
        assert!(
            stdout.contains(&format!("orders/{target} partition 0: rewound to sequence {from0}")),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("orders/{target} partition 1: rewound to sequence {from1}")),
            "{stdout}"
        );
    }
    let expected = by_key(&placed, |m| m.sequence >= if m.partition == 0 { from0 } else { from1 });
    assert_eq!(arrivals(&a), expected, "target a: from each partition's start, in key order");
    assert_eq!(arrivals(&b), expected, "target b: the same");
    assert!(replays(&a).iter().chain(&replays(&b)).all(|r| *r >= 1), "replays are flagged");
    assert!(all_delivered(&w), "no rewind left in status");
}

#[test]
fn the_cli_rewinds_every_target_from_an_rfc3339_time() {
    let (a, b) = (HttpSink::start(), HttpSink::start());
    let w = Wharf::start_with_server(SMALL_SEGMENTS, &two_targets(&a, &b), "all");
    write_placed(&w, 6, 6, "before");
    wait_delivered(&w);
    let since = a_millisecond_boundary();
    let second = write_placed(&w, 6, 6, "since");
    wait_delivered(&w);
    clear(&[&a, &b]);

    let out = rewind_cli(&w, &["orders", "--from-time", &rfc3339(since), "--json"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}\n{}", w.log());
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let mut lanes: Vec<(String, u64)> = reply["rewinds"]
        .as_array()
        .expect("rewinds")
        .iter()
        .map(|l| (l["target"].as_str().expect("target").to_string(), l["partition"].as_u64().expect("p")))
        .collect();
    lanes.sort();
    let expected_lanes: Vec<(String, u64)> =
        ["a", "b"].iter().flat_map(|t| [0, 1].map(|p| (t.to_string(), p))).collect();
    assert_eq!(lanes, expected_lanes, "one rewind per target and partition: {reply}");
    // The JSON reply of a waited-for rewind comes when it is done.
    assert_eq!(reply["finished"], true, "{reply}");
    assert!(all_delivered(&w), "no rewind left in status");
    let expected = by_key(&second, |_| true);
    assert_eq!(arrivals(&a), expected, "target a: only what was written since");
    assert_eq!(arrivals(&b), expected, "target b: the same");
}
