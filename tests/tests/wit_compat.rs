//! WIT compatibility (issue 6): a plugin built against an older supported
//! `wharf:target` version keeps loading after a host upgrade.
//!
//! The 0.1.0, 0.2.0 and 0.3.0 plugins are committed binaries that are never
//! rebuilt (`tests/fixtures/wit-<version>/`): the http plugin as it was
//! before 0.2.0, before 0.3.0 and before 0.4.0. The 0.4.0 plugin is today's
//! `plugins/http`. All deliver through the real binary to a real local HTTP
//! server.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::{HttpSink, Wharf, eventually, fixture, plugin, wharf_bin};

/// Messages per delivery test.
const N: usize = 100;

/// The fixture's digest, as its README records: a changed file is a rebuilt
/// fixture, which would prove nothing.
const FIXTURE_0_1_DIGEST: &str = "sha256:fe1954f31e5c785c6774696bbdb4d8c482cc41f00f48da2dd2f2db941443a27b";

fn plugin_0_1() -> PathBuf {
    fixture("wit-0.1.0/http.wasm")
}

/// See `FIXTURE_0_1_DIGEST`.
const FIXTURE_0_2_DIGEST: &str = "sha256:3575dc58026e3461932f78663a1a7a336b6efbc72290a99860663ef901b3c7d6";

fn plugin_0_2() -> PathBuf {
    fixture("wit-0.2.0/http.wasm")
}

/// See `FIXTURE_0_1_DIGEST`.
const FIXTURE_0_3_DIGEST: &str = "sha256:4cdea0fd37793783ab345b2969489e55ac9200fbf12578877f28da051a5839ae";

fn plugin_0_3() -> PathBuf {
    fixture("wit-0.3.0/http.wasm")
}

/// `wharf plugin check [--json] FILE`: exit success and stdout.
fn check(file: &Path, json: bool) -> (bool, String) {
    let mut cmd = Command::new(wharf_bin());
    cmd.args(["plugin", "check"]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.arg(file).output().expect("wharf plugin check");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The namespace's plugin once it is ready: its status object.
fn ready_plugin(wharf: &Wharf, ns: &str) -> Value {
    eventually(Duration::from_secs(30), "the plugin ready", || {
        let p = wharf.status()["namespaces"][ns]["plugin"].clone();
        (p["state"] == json!("ready")).then_some(p)
    })
}

fn dlq_ids(wharf: &Wharf, ns: &str) -> Vec<String> {
    wharf.get(&format!("/v1/namespaces/{ns}/dlq")).body["entries"]
        .as_array()
        .map(|e| e.iter().filter_map(|x| x["message_id"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Writes `N` keyed messages and waits until the sink has every one.
fn deliver_n(wharf: &Wharf, sink: &HttpSink, ns: &str) {
    let written: BTreeSet<Vec<u8>> = (0..N)
        .map(|i| {
            let payload = format!("{ns}-{i}").into_bytes();
            let r = wharf.write(ns, Some(&format!("k{}", i % 7)), &payload);
            assert_eq!(r.status, 200, "{:?}", r.body);
            payload
        })
        .collect();
    eventually(Duration::from_secs(60), "every message at the sink", || {
        let got: BTreeSet<Vec<u8>> = sink.accepted().into_iter().map(|r| r.body).collect();
        written.is_subset(&got).then_some(())
    });
}

/// A message rejected once (the sink answers 400 for its key), dead-lettered,
/// then replayed by an operator and accepted: what the sink saw the second
/// time.
fn reject_then_replay(wharf: &Wharf, sink: &HttpSink, ns: &str) -> wharf_tests::Received {
    sink.set(|b| b.reject_keys = vec!["poison".into()]);
    let id = wharf.write(ns, Some("poison"), b"came back").body["message_id"]
        .as_str()
        .expect("message id")
        .to_string();
    eventually(Duration::from_secs(30), "the dlq entry", || {
        (dlq_ids(wharf, ns) == vec![id.clone()]).then_some(())
    });
    sink.set(|b| b.reject_keys.clear());
    let r = wharf.post(&format!("/v1/namespaces/{ns}/dlq/replay"), &json!({"ids": [id]}));
    assert_eq!(r.body["replayed"].as_array().map(Vec::len), Some(1), "{:?}", r.body);
    eventually(Duration::from_secs(30), "the replayed message at the sink", || {
        sink.accepted().into_iter().find(|r| r.body == b"came back")
    })
}

#[test]
fn plugin_check_says_the_fixture_is_0_1_and_predates_describe() {
    let (ok, out) = check(&plugin_0_1(), false);
    assert!(ok, "the host no longer loads the 0.1.0 fixture:\n{out}");
    assert!(out.contains("wit      wharf:target@0.1.0\n"), "{out}");
    assert!(out.contains("describe (none: wharf:target@0.1.0 predates describe)"), "{out}");

    let (ok, out) = check(&plugin_0_1(), true);
    assert!(ok, "{out}");
    let report: Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(report["digest"], json!(FIXTURE_0_1_DIGEST), "the 0.1.0 fixture was replaced");
    assert_eq!(report["wit"], json!("wharf:target@0.1.0"));
    assert_eq!(report["describe"], Value::Null);
    assert_eq!(report["problem"], Value::Null);
}

#[test]
fn plugin_check_says_the_0_2_fixture_is_0_2() {
    let (ok, out) = check(&plugin_0_2(), true);
    assert!(ok, "the host no longer loads the 0.2.0 fixture:\n{out}");
    let report: Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(report["digest"], json!(FIXTURE_0_2_DIGEST), "the 0.2.0 fixture was replaced");
    assert_eq!(report["wit"], json!("wharf:target@0.2.0"));
    assert_eq!(report["describe"]["name"], json!("wharf-plugin-http"));
}

#[test]
fn plugin_check_says_the_0_3_fixture_is_0_3_without_reconcile() {
    let (ok, out) = check(&plugin_0_3(), true);
    assert!(ok, "the host no longer loads the 0.3.0 fixture:\n{out}");
    let report: Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(report["digest"], json!(FIXTURE_0_3_DIGEST), "the 0.3.0 fixture was replaced");
    assert_eq!(report["wit"], json!("wharf:target@0.3.0"));
    assert_eq!(report["describe"]["name"], json!("wharf-plugin-http"));
    assert_eq!(report["exports"], json!(["init", "deliver", "describe"]));
}

#[test]
fn plugin_check_says_the_current_plugin_is_0_4_and_prints_what_it_describes() {
    let (ok, out) = check(&plugin("http"), false);
    assert!(ok, "{out}");
    assert!(out.contains("wit      wharf:target@0.4.0\n"), "{out}");
    assert!(out.contains("describe wharf-plugin-http "), "{out}");

    let (ok, out) = check(&plugin("http"), true);
    assert!(ok, "{out}");
    let report: Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(report["wit"], json!("wharf:target@0.4.0"));
    assert_eq!(report["exports"], json!(["init", "deliver", "describe", "reconcile"]));
    assert_eq!(report["describe"]["name"], json!("wharf-plugin-http"));
    assert!(report["describe"]["version"].as_str().is_some_and(|v| !v.is_empty()), "{report}");
}

#[test]
fn a_0_1_plugin_delivers_every_message_and_dead_letter_replays_to_a_real_http_server() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&sink.namespace_with_plugin("old", 2, "", &plugin_0_1()));
    assert_eq!(ready_plugin(&wharf, "old")["wit"], json!("wharf:target@0.1.0"));

    deliver_n(&wharf, &sink, "old");
    // The old binary really is old: it predates the replays header.
    assert!(sink.accepted().iter().all(|r| r.header("x-wharf-replays").is_none()));

    // A message with replays = 1 still reaches a plugin whose WIT has no
    // such field.
    let again = reject_then_replay(&wharf, &sink, "old");
    assert_eq!(again.header("x-wharf-attempt"), Some("1"));
    assert!(dlq_ids(&wharf, "old").is_empty());
}

#[test]
fn a_0_2_plugin_delivers_every_message_and_sees_how_often_it_was_replayed() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&sink.namespace_with_plugin("new", 2, "", &plugin_0_2()));
    assert_eq!(ready_plugin(&wharf, "new")["wit"], json!("wharf:target@0.2.0"));

    deliver_n(&wharf, &sink, "new");
    assert!(sink.accepted().iter().all(|r| r.header("x-wharf-replays") == Some("0")));

    let again = reject_then_replay(&wharf, &sink, "new");
    assert_eq!(again.header("x-wharf-replays"), Some("1"));
    assert!(dlq_ids(&wharf, "new").is_empty());
}

#[test]
fn a_0_3_plugin_delivers_every_message_and_dead_letter_replays_to_a_real_http_server() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&sink.namespace_with_plugin("mid", 2, "", &plugin_0_3()));
    assert_eq!(ready_plugin(&wharf, "mid")["wit"], json!("wharf:target@0.3.0"));

    deliver_n(&wharf, &sink, "mid");
    assert!(sink.accepted().iter().all(|r| r.header("x-wharf-replays") == Some("0")));

    let again = reject_then_replay(&wharf, &sink, "mid");
    assert_eq!(again.header("x-wharf-replays"), Some("1"));
    assert!(dlq_ids(&wharf, "mid").is_empty());
}

/// Registers a plugin over the admin API, as `wharf plugin register` does.
fn register(wharf: &Wharf, ns: &str, file: &Path) {
    let bytes = std::fs::read(file).expect("plugin bytes");
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent
        .put(&wharf.url(&format!("/v1/admin/namespaces/{ns}/plugin")))
        .header("content-type", "application/wasm")
        .send(&bytes[..])
        .expect("PUT plugin");
    assert_eq!(r.status().as_u16(), 200, "{}", r.body_mut().read_to_string().unwrap_or_default());
}

/// Writes one message and returns what the sink received for it.
fn deliver_one(wharf: &Wharf, sink: &HttpSink, ns: &str, payload: &[u8]) -> wharf_tests::Received {
    assert_eq!(wharf.write(ns, Some("k"), payload).status, 200);
    eventually(Duration::from_secs(30), "the message at the sink", || {
        sink.accepted().into_iter().find(|r| r.body == payload)
    })
}

#[test]
fn a_namespace_switches_between_0_1_0_3_and_0_4_plugins_at_runtime() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&sink.namespace("hooks", 1, ""));

    register(&wharf, "hooks", &plugin_0_1());
    assert_eq!(ready_plugin(&wharf, "hooks")["wit"], json!("wharf:target@0.1.0"));
    let got = deliver_one(&wharf, &sink, "hooks", b"via 0.1 registered");
    assert_eq!(got.header("x-wharf-replays"), None, "delivered by a newer plugin");

    register(&wharf, "hooks", &plugin_0_3());
    assert_eq!(ready_plugin(&wharf, "hooks")["wit"], json!("wharf:target@0.3.0"));
    let got = deliver_one(&wharf, &sink, "hooks", b"via 0.3 registered");
    assert_eq!(got.header("x-wharf-replays"), Some("0"), "delivered by the 0.1.0 plugin");

    register(&wharf, "hooks", &plugin("http"));
    assert_eq!(ready_plugin(&wharf, "hooks")["wit"], json!("wharf:target@0.4.0"));
    let got = deliver_one(&wharf, &sink, "hooks", b"via 0.4 registered");
    assert_eq!(got.header("x-wharf-replays"), Some("0"), "delivered by the 0.1.0 plugin");

    let out = Command::new(wharf_bin())
        .args(["plugin", "rollback", "--namespace", "hooks", "--server", &wharf.url("")])
        .output()
        .expect("wharf plugin rollback");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(ready_plugin(&wharf, "hooks")["wit"], json!("wharf:target@0.3.0"));
    let got = deliver_one(&wharf, &sink, "hooks", b"via 0.3 rolled back");
    assert_eq!(got.header("x-wharf-replays"), Some("0"), "delivered by the 0.1.0 plugin");
}
