//! A namespace with two targets (`a`, `b`): one named target's plugin is
//! replaced at runtime, over the admin API (`?target=NAME`) and with
//! `wharf plugin register --target NAME`, while the other target keeps
//! delivering; status shows the new digest for that target only, and
//! `/metrics` labels each series with its target.

use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::{
    HttpSink, Load, Wharf, eventually, kafka_queue, multi_target_namespace, plugin, plugin_variant,
    quick_retry, start_tansu,
};

fn start(a: &HttpSink, b: &HttpSink) -> Wharf {
    Wharf::start(&multi_target_namespace("orders", 2, &quick_retry("orders"), &[("a", a), ("b", b)]))
}

/// `PUT /v1/admin/namespaces/orders/plugin<query>` with a component.
fn register(w: &Wharf, query: &str, bytes: &[u8]) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = w.url(&format!("/v1/admin/namespaces/orders/plugin{query}"));
    let mut r = agent
        .put(&url)
        .header("content-type", "application/wasm")
        .send(bytes)
        .unwrap_or_else(|e| panic!("PUT {url}: {e}\n{}", w.log()));
    (r.status().as_u16(), r.body_mut().read_json().unwrap_or(Value::Null))
}

/// A target's plugin as `/v1/status` shows it.
fn plugin_of(w: &Wharf, target: &str) -> Value {
    w.target_status("orders", target)["plugin"].clone()
}

/// Both targets' plugins ready; their digests (a, b).
fn ready_digests(w: &Wharf) -> (String, String) {
    eventually(Duration::from_secs(60), "both plugins ready", || {
        let (a, b) = (plugin_of(w, "a"), plugin_of(w, "b"));
        (a["state"] == json!("ready") && b["state"] == json!("ready"))
            .then(|| Some((a["digest"].as_str()?.to_string(), b["digest"].as_str()?.to_string())))
            .flatten()
    })
}

fn key(i: usize) -> String {
    format!("k{}", i % 4)
}

fn value(i: usize) -> String {
    format!("v{i}")
}

#[test]
fn replacing_one_targets_plugin_at_runtime_keeps_the_other_delivering_and_its_digest_unchanged() {
    let (a, b) = (HttpSink::start(), HttpSink::start());
    let w = start(&a, &b);
    let (a0, b0) = ready_digests(&w);

    // Writes flow to both targets while b's plugin is replaced.
    let load = Load::start(w.port, "orders", 2, key, value);
    eventually(Duration::from_secs(30), "target a delivering under load", || {
        (a.accepted().len() >= 20).then_some(())
    });
    let variant = plugin_variant(&std::fs::read(plugin("http")).expect("http.wasm"), "wharf-test-b2");
    let (status, body) = register(&w, "?target=b", &variant);
    assert_eq!(status, 200, "{body}\n{}", w.log());
    assert_eq!(
        (&body["namespace"], &body["target"], &body["state"], &body["already_current"]),
        (&json!("orders"), &json!("b"), &json!("ready"), &json!(false)),
        "{body}"
    );
    let b1 = body["digest"].as_str().expect("digest").to_string();
    assert_ne!(b1, b0, "a new component, a new digest");
    let delivered_by_a = a.accepted().len();
    eventually(Duration::from_secs(30), "target a to keep delivering after the swap", || {
        (a.accepted().len() >= delivered_by_a + 20).then_some(())
    });
    let acked = load.stop();
    assert!(!acked.is_empty());

    // Status: the new digest for b only.
    let (pa, pb) = (plugin_of(&w, "a"), plugin_of(&w, "b"));
    assert_eq!((&pa["digest"], &pa["state"]), (&json!(a0), &json!("ready")), "{pa}");
    assert_eq!((&pb["digest"], &pb["state"]), (&json!(b1), &json!("ready")), "{pb}");

    // Both targets got every acknowledged write, b partly through its new plugin.
    let expected: std::collections::HashSet<String> = acked.iter().map(|(_, v)| v.clone()).collect();
    for (name, sink) in [("a", &a), ("b", &b)] {
        eventually(Duration::from_secs(60), &format!("target {name} to get every acked write"), || {
            expected.is_subset(&sink.accepted_bodies()).then_some(())
        });
    }

    // An unknown target is refused and changes nothing.
    let (status, body) = register(&w, "?target=nope", &variant);
    assert_eq!((status, &body["error"]["code"]), (404, &json!("target_not_found")), "{body}");
    let (status, body) = register(&w, "", &variant);
    assert_eq!((status, &body["error"]["code"]), (400, &json!("target_required")), "{body}");
    assert_eq!(plugin_of(&w, "a")["digest"], json!(a0));

    // Metrics carry the named targets' labels, and no `default` target.
    let n = expected.len() as f64;
    for t in ["a", "b"] {
        let labels = [("namespace", "orders"), ("target", t)];
        eventually(Duration::from_secs(30), &format!("wharf_delivered_total for target {t}"), || {
            (w.metric("wharf_delivered_total", &labels)? >= n).then_some(())
        });
        assert_eq!(w.metric("wharf_plugin_quarantined", &labels), Some(0.0), "target {t}");
        assert_eq!(w.metric("wharf_dlq_messages", &labels), Some(0.0), "target {t}");
        assert_eq!(w.metric("wharf_breaker_state", &labels), Some(0.0), "target {t}: two lanes, both closed");
        assert!(w.metric("wharf_batch_limit_messages", &labels).is_some_and(|l| l >= 2.0), "target {t}");
    }
    let default = [("namespace", "orders"), ("target", "default")];
    assert_eq!(w.metric("wharf_delivered_total", &default), None, "no target is named default");
}

/// `<dir>/<tag>.wasm`: the http plugin with a custom section `tag`.
fn variant_file(dir: &std::path::Path, tag: &str) -> String {
    let file = dir.join(format!("{tag}.wasm"));
    let variant = plugin_variant(&std::fs::read(plugin("http")).expect("http.wasm"), tag);
    std::fs::write(&file, &variant).expect("write plugin");
    file.display().to_string()
}

#[test]
fn the_cli_registers_and_rolls_back_the_plugin_of_one_named_target() {
    let (a, b) = (HttpSink::start(), HttpSink::start());
    let w = start(&a, &b);
    let (a0, b0) = ready_digests(&w);
    let dir = tempfile::tempdir().expect("tempdir");
    let (file1, file2) =
        (variant_file(dir.path(), "wharf-test-a1"), variant_file(dir.path(), "wharf-test-a2"));
    let register_a =
        |file: &str| w.cli_json(&["plugin", "register", "--namespace", "orders", "--target", "a", file]);

    let (code, v) = register_a(&file1);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        (&v["namespace"], &v["target"], &v["already_current"]),
        (&json!("orders"), &json!("a"), &json!(false)),
        "{v}"
    );
    let a1 = v["digest"].as_str().expect("digest").to_string();
    assert_ne!(a1, a0);
    assert_eq!(plugin_of(&w, "a")["digest"], json!(a1));
    assert_eq!(plugin_of(&w, "b")["digest"], json!(b0), "b's plugin was not touched");

    // Both targets deliver (wait=visible waits for every target).
    let r = w.write_visible("orders", "k", b"after-register", 20_000);
    assert_eq!((r.status, &r.body["visible"]), (200, &json!(true)), "{:?}", r.body);
    assert!(a.accepted_bodies().contains("after-register") && b.accepted_bodies().contains("after-register"));

    // The same file again changes nothing.
    let (code, v) = register_a(&file1);
    assert_eq!((code, &v["already_current"], &v["digest"]), (Some(0), &json!(true), &json!(a1)), "{v}");

    // Without --target on a namespace with two, the CLI says which to name.
    let (code, v) = w.cli_json(&["plugin", "register", "--namespace", "orders", &file2]);
    assert_ne!(code, Some(0), "{v}");
    assert_eq!(v["error"]["code"], json!("target_required"), "{v}");
    assert_eq!(plugin_of(&w, "a")["digest"], json!(a1));

    // A second register, then a rollback of a: back to a1; b untouched.
    let (code, v) = register_a(&file2);
    assert_eq!((code, &v["target"]), (Some(0), &json!("a")), "{v}");
    assert_ne!(v["digest"], json!(a1), "{v}");
    let (code, v) = w.cli_json(&["plugin", "rollback", "--namespace", "orders", "--target", "a"]);
    assert_eq!((code, &v["target"], &v["digest"]), (Some(0), &json!("a"), &json!(a1)), "{v}");
    assert_eq!(plugin_of(&w, "a")["digest"], json!(a1));
    assert_eq!(plugin_of(&w, "b")["digest"], json!(b0));
    let r = w.write_visible("orders", "k", b"after-rollback", 20_000);
    assert_eq!((r.status, &r.body["visible"]), (200, &json!(true)), "{:?}", r.body);
}

/// On Kafka each named target is its own consumer group: b, down while its
/// plugin is replaced, holds back only itself, shows its retries under its
/// own label, and gets everything once it is back.
#[test]
fn on_kafka_a_named_targets_plugin_is_replaced_while_it_is_down_and_the_other_delivers_everything() {
    let tansu = start_tansu();
    let (a, b) = (HttpSink::start(), HttpSink::start());
    b.set(|x| x.fail_all = Some(503));
    let extra = format!("{}{}", kafka_queue(tansu.port, "orders", 2), quick_retry("orders"));
    let w = Wharf::start(&multi_target_namespace("orders", 1, &extra, &[("a", &a), ("b", &b)]));
    let (a0, b0) = ready_digests(&w);
    for i in 0..20 {
        w.write_id("orders", &key(i), value(i).as_bytes());
    }
    eventually(Duration::from_secs(120), "target a to get all 20", || {
        (a.accepted_bodies().len() == 20).then_some(())
    });
    let b_labels = [("namespace", "orders"), ("target", "b")];
    eventually(Duration::from_secs(60), "target b's keys retrying, under its own label", || {
        (w.metric("wharf_retrying_keys", &b_labels)? >= 1.0).then_some(())
    });
    assert_eq!(w.metric("wharf_retrying_keys", &[("namespace", "orders"), ("target", "a")]), Some(0.0));

    let variant = plugin_variant(&std::fs::read(plugin("http")).expect("http.wasm"), "wharf-test-kafka-b");
    let (status, body) = register(&w, "?target=b", &variant);
    assert_eq!((status, &body["target"]), (200, &json!("b")), "{body}\n{}", w.log());
    let b1 = body["digest"].as_str().expect("digest").to_string();
    assert_ne!(b1, b0);
    assert_eq!(plugin_of(&w, "a")["digest"], json!(a0));
    assert_eq!(plugin_of(&w, "b")["digest"], json!(b1));
    for i in 20..30 {
        w.write_id("orders", &key(i), value(i).as_bytes());
    }
    eventually(Duration::from_secs(60), "target a to get the later 10 while b is down", || {
        (a.accepted_bodies().len() == 30).then_some(())
    });
    assert!(b.accepted().is_empty(), "b is down");

    b.set(|x| x.fail_all = None);
    eventually(Duration::from_secs(120), "target b to get all 30 through its new plugin", || {
        (b.accepted_bodies().len() == 30).then_some(())
    });
    for (name, sink) in [("a", &a), ("b", &b)] {
        for (k, got) in sink.first_arrivals() {
            let mut sorted: Vec<usize> =
                got.iter().map(|v| v.trim_start_matches('v').parse().expect("v<i>")).collect();
            let arrived = sorted.clone();
            sorted.sort_unstable();
            assert_eq!(arrived, sorted, "target {name}: key {k} out of order");
        }
    }
    eventually(Duration::from_secs(30), "b's retries gone", || {
        (w.metric("wharf_retrying_keys", &b_labels)? == 0.0).then_some(())
    });
}
