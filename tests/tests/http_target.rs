//! End to end through the HTTP plugin, against a real local HTTP server
//! that fails on command.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use wharf_tests::{HttpSink, Wharf, eventually, plugin};

fn namespace(sink: &HttpSink, extra: &str) -> String {
    sink.namespace("hooks", 2, extra)
}

#[test]
fn a_message_is_posted_with_its_key_id_and_idempotency_key() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&namespace(&sink, ""));
    let r = wharf.post(
        "/v1/namespaces/hooks/messages",
        &json!({"key": "user-7", "payload": wharf_tests::b64(b"{\"x\":1}"), "idempotency_key": "idem-1", "headers": {"x-trace": "abc"}}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let id = r.body["message_id"].as_str().expect("id").to_string();
    let got = eventually(Duration::from_secs(30), "a POST at the sink", || sink.accepted().first().cloned());
    assert_eq!(got.path, "/hook");
    assert_eq!(got.body, b"{\"x\":1}");
    assert_eq!(got.header("x-wharf-key"), Some("user-7"));
    assert_eq!(got.header("x-wharf-message-id"), Some(id.as_str()));
    assert_eq!(got.header("idempotency-key"), Some("idem-1"));
    assert_eq!(got.header("x-wharf-attempt"), Some("1"));
    assert_eq!(got.header("x-trace"), Some("abc"));
}

#[test]
fn a_503_storm_is_retried_until_it_passes_and_keeps_per_key_order() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&namespace(
        &sink,
        "[namespaces.hooks.retry]\nmax_attempts = 1000\ninitial_backoff_ms = 10\nmax_backoff_ms = 100\n",
    ));
    sink.set(|b| b.fail_all = Some(503));
    let mut sent: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..60 {
        let key = format!("k{}", i % 5);
        let val = format!("{key}-{i}");
        let r = wharf.write("hooks", Some(&key), val.as_bytes());
        assert_eq!(r.status, 200);
        sent.entry(key).or_default().push(val);
    }
    std::thread::sleep(Duration::from_millis(800));
    assert!(sink.accepted().is_empty(), "nothing passes while the target fails");
    let retrying = wharf.status()["namespaces"]["hooks"]["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["delivery"]["retries_total"].as_u64().unwrap_or(0))
        .sum::<u64>();
    assert!(retrying > 0, "status shows no retries");
    sink.set(|b| b.fail_all = None);
    eventually(Duration::from_secs(30), "all 60 delivered", || (sink.accepted().len() >= 60).then_some(()));
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in sink.accepted() {
        let key = r.header("x-wharf-key").expect("key").to_string();
        let v = String::from_utf8(r.body.clone()).expect("utf8");
        let list = got.entry(key).or_default();
        // At-least-once: a redelivery may repeat the last value, never reorder.
        if list.last() != Some(&v) {
            list.push(v);
        }
    }
    assert_eq!(got, sent, "per-key order or content differs");
}

#[test]
fn a_400_is_dead_lettered_without_blocking_other_keys() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&namespace(&sink, ""));
    sink.set(|b| b.reject_keys = vec!["poison".into()]);
    let bad = wharf.write("hooks", Some("poison"), b"bad");
    for i in 0..10 {
        assert_eq!(wharf.write("hooks", Some(&format!("good-{i}")), b"ok").status, 200);
    }
    eventually(Duration::from_secs(30), "the good messages", || (sink.accepted().len() == 10).then_some(()));
    let bad_id = bad.body["message_id"].as_str().expect("id").to_string();
    let entry = eventually(Duration::from_secs(30), "the dlq entry", || {
        wharf.get("/v1/namespaces/hooks/dlq").body["entries"].as_array().and_then(|e| e.first().cloned())
    });
    assert_eq!(entry["message_id"], json!(bad_id));
    assert_eq!(entry["key"], json!("poison"));
    assert_eq!(entry["failures"][0]["kind"], json!("reject"));
    assert!(entry["failures"][0]["reason"].as_str().expect("reason").contains("400"));
}

#[test]
fn a_plugin_cannot_reach_a_url_outside_its_allow_list() {
    let allowed = HttpSink::start();
    let forbidden = HttpSink::start();
    let wharf = Wharf::start(&format!(
        r#"
[namespaces.sneaky]
partitions = 1
[namespaces.sneaky.retry]
max_attempts = 2
initial_backoff_ms = 10
[namespaces.sneaky.target]
plugin = "{}"
allow_http = ["{}"]
config = {{ url = "{}hook" }}
"#,
        plugin("http").display(),
        allowed.url(),
        forbidden.url()
    ));
    let r = wharf.write("sneaky", Some("k"), b"x");
    assert_eq!(r.status, 200);
    let entry = eventually(Duration::from_secs(30), "the dlq entry", || {
        wharf.get("/v1/namespaces/sneaky/dlq").body["entries"].as_array().and_then(|e| e.first().cloned())
    });
    assert_eq!(entry["failures"].as_array().map(Vec::len), Some(2), "{entry}");
    assert!(forbidden.accepted().is_empty(), "the forbidden server was reached");
}
