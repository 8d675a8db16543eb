//! A buggy plugin (loop, sleep, OOM, panic, forbidden socket) never hurts
//! the host or another namespace, and never loses a message.

use std::io::Read as _;
use std::net::TcpListener;
use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::{HttpSink, Wharf, eventually, plugin};

fn misbehaving(ns: &str, mode: &str, extra: &str) -> String {
    format!(
        r#"
[namespaces.{ns}]
partitions = 1
[namespaces.{ns}.retry]
max_attempts = 1000
initial_backoff_ms = 10
max_backoff_ms = 50
[namespaces.{ns}.target]
plugin = "{}"
call_timeout_ms = 300
memory_limit_mib = 16
quarantine_after = 3
poison_after = 100
config = {{ mode = "{mode}" {extra} }}
"#,
        plugin("fixture-misbehave").display()
    )
}

fn healthy(sink: &HttpSink) -> String {
    sink.namespace("good", 1, "")
}

fn plugin_state(w: &Wharf, ns: &str) -> Value {
    w.status()["namespaces"][ns]["plugin"].clone()
}

/// Every message traps: the bad namespace is quarantined (three distinct
/// messages trapped alone, `quarantine_after = 3`) with a reason naming
/// `needle`; the good one keeps delivering; the host keeps answering;
/// nothing is lost or dead-lettered.
fn assert_contained(mode: &str, needle: &str) {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&format!("{}{}", misbehaving("bad", mode, ""), healthy(&sink)));
    for k in ["k1", "k2", "k3"] {
        assert_eq!(wharf.write("bad", Some(k), b"x").status, 200);
    }
    let state = eventually(Duration::from_secs(60), "quarantine", || {
        let p = plugin_state(&wharf, "bad");
        (p["state"] == "quarantined").then_some(p)
    });
    let reason = state["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains(needle), "mode {mode}: reason {reason:?} should mention {needle:?}");
    for i in 0..5 {
        assert_eq!(wharf.write("good", Some(&format!("g{i}")), b"fine").status, 200);
    }
    eventually(Duration::from_secs(30), "the healthy namespace's deliveries", || {
        (sink.accepted().len() == 5).then_some(())
    });
    assert_eq!(wharf.get("/healthz").status, 200);
    // The bad message is still there, undelivered, not dropped.
    let backlog = wharf.status()["namespaces"]["bad"]["partitions"][0]["backlog"].as_u64();
    assert_eq!(backlog, Some(3), "{}", wharf.log());
    assert_eq!(wharf.dlq_ids("bad", None), Vec::<String>::new(), "a broken plugin dead-letters nothing");
}

#[test]
fn an_infinite_loop_is_stopped_by_the_deadline_and_quarantined() {
    assert_contained("loop", "deadline");
}

#[test]
fn a_guest_blocked_in_a_host_call_is_stopped_by_the_deadline() {
    assert_contained("sleep", "deadline");
}

#[test]
fn a_plugin_that_eats_memory_traps_at_its_limit() {
    assert_contained("oom", "trap");
}

#[test]
fn a_panicking_plugin_traps_and_is_quarantined() {
    assert_contained("panic", "trap");
}

#[test]
fn a_trapped_instance_is_replaced_and_the_message_delivered_on_retry() {
    let wharf = Wharf::start(&misbehaving("flaky", "panic-first", ""));
    let r = wharf.write("flaky", Some("k"), b"x");
    let id = r.body["message_id"].as_str().expect("id").to_string();
    eventually(Duration::from_secs(30), "delivery on the second attempt", || {
        let s = wharf.get(&format!("/v1/namespaces/flaky/messages/{id}"));
        (s.body["state"] == json!("delivered")).then_some(())
    });
    assert_eq!(plugin_state(&wharf, "flaky")["state"], json!("ready"));
}

#[test]
fn a_connection_outside_allow_connect_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    // allow_connect names some other port, not this one.
    let wharf = Wharf::start(&misbehaving("net", "connect", &format!(", addr = \"{addr}\"")));
    let r = wharf.write("net", Some("k"), b"secret");
    let id = r.body["message_id"].as_str().expect("id").to_string();
    let s = eventually(Duration::from_secs(30), "a failed attempt", || {
        let s = wharf.get(&format!("/v1/namespaces/net/messages/{id}"));
        (s.body["attempts"].as_u64().unwrap_or(0) >= 2 && s.body["state"] == json!("retrying")).then_some(s)
    });
    assert!(s.body["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{:?}", s.body);
    let mut buf = Vec::new();
    match listener.accept() {
        Ok((mut c, _)) => {
            let _ = c.read_to_end(&mut buf);
            panic!("the plugin reached a forbidden address and sent {buf:?}");
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
    }
}
