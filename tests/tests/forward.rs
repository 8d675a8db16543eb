//! End to end through the wharf plugin: two real `wharf` processes chained,
//! edge → regional, the regional delivering to a real HTTP server.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::{HttpSink, Wharf, b64, eventually, plugin, quick_retry, root, wharf_bin};

const WAIT: Duration = Duration::from_secs(120);

/// The edge's namespace `orders`, forwarding to `regional` (`config` is the
/// rest of the plugin's config table).
fn edge_namespace(regional: &Wharf, config: &str) -> String {
    format!(
        "[namespaces.orders]\npartitions = 2\n[namespaces.orders.target]\nplugin = \"{}\"\nallow_http = [\"http://127.0.0.1:{port}/\"]\nconfig = {{ url = \"http://127.0.0.1:{port}\"{config} }}\n{}",
        plugin("wharf").display(),
        quick_retry("orders"),
        port = regional.port,
    )
}

/// Records in a namespace's log (the sum of the partitions' next sequence).
fn log_records(w: &Wharf, ns: &str) -> u64 {
    w.partitions(ns).iter().filter_map(|p| p["head_sequence"].as_u64()).sum()
}

/// The edge's dead-letter entries as text, once there is one.
fn dead_letters(edge: &Wharf) -> String {
    eventually(WAIT, "a dead-letter entry at the edge", || {
        let r = edge.dlq("orders", None);
        (r.body["total"].as_u64() > Some(0)).then(|| r.body.to_string())
    })
}

/// The edge's `wharf_retries_total` for `orders` of kind `retry` (a failed
/// delivery scheduled again).
fn edge_retries(edge: &Wharf) -> f64 {
    edge.metric("wharf_retries_total", &[("namespace", "orders"), ("target", "default"), ("kind", "retry")])
        .unwrap_or(0.0)
}

/// Starts the SIGKILLed regional again; if its port was taken meanwhile,
/// points the edge at the new one.
fn bring_back(regional: &mut Wharf, edge: &mut Wharf) {
    let port = regional.port;
    regional.restart();
    if regional.port != port {
        let config = std::fs::read_to_string(edge.config_path()).expect("config");
        let config = config.replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{}", regional.port));
        std::fs::write(edge.config_path(), config).expect("config");
        edge.restart();
    }
}

#[test]
fn every_acknowledged_message_lands_once_downstream_in_key_order_while_the_downstream_is_killed() {
    let sink = HttpSink::start();
    let mut regional = Wharf::start(&sink.namespace("orders", 3, &quick_retry("orders")));
    let mut edge = Wharf::start(&edge_namespace(&regional, ""));
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    let mut write = |edge: &Wharf, i: usize| {
        let key = format!("k{}", i % 10);
        let value = format!("{key}-{i}");
        edge.write_id("orders", &key, value.as_bytes());
        sent.entry(key).or_default().push(value);
    };
    // Five rounds: 20 writes while the regional is up, then SIGKILL it and
    // 20 writes while it is down, which the edge acknowledges (durable in
    // its own log) and whose deliveries fail and are retried.
    for round in 0..5 {
        for i in 0..20 {
            write(&edge, round * 40 + i);
        }
        regional.kill();
        let before = edge_retries(&edge);
        for i in 20..40 {
            write(&edge, round * 40 + i);
        }
        eventually(WAIT, "edge deliveries fail and are retried while the regional is down", || {
            (edge_retries(&edge) > before).then_some(())
        });
        bring_back(&mut regional, &mut edge);
    }
    let expected: usize = sent.values().map(Vec::len).sum();
    assert_eq!(expected, 200);
    eventually(WAIT, "every message at the regional's target", || {
        (sink.accepted_bodies().len() == expected).then_some(())
    });
    eventually(WAIT, "the edge's backlog drained", || {
        edge.target_partitions("orders", "default")
            .iter()
            .all(|p| p["backlog"].as_u64() == Some(0))
            .then_some(())
    });
    let retries = edge.target_delivery_sum("orders", "default", "retries_total");
    assert!(retries >= 5, "each outage made the edge retry: {retries} retries in status");
    // Exactly once downstream: 200 records in the regional log, and every
    // one of the 200 bodies reached its target, in per-key order.
    assert_eq!(log_records(&regional, "orders"), 200, "a redelivery landed twice in the regional log");
    assert_eq!(sink.first_arrivals(), sent, "per-key order or content differs at the regional's target");
    assert!(edge.dlq_ids("orders", None).is_empty() && regional.dlq_ids("orders", None).is_empty());
}

#[test]
fn a_transaction_is_forwarded_as_one_transaction() {
    let sink = HttpSink::start();
    let regional = Wharf::start(&sink.namespace("orders", 2, ""));
    let edge = Wharf::start(&edge_namespace(&regional, ""));
    let t = edge.post("/v1/namespaces/orders/transactions", &json!({"key": "order-7"}));
    assert_eq!(t.status, 201, "{:?}", t.body);
    let id = t.body["transaction_id"].as_str().expect("transaction_id").to_string();
    for seq in 0..3 {
        let path = format!("/v1/namespaces/orders/transactions/{id}/chunks/{seq}");
        let r = edge.put(
            &path,
            &json!({"payload": b64(format!("part-{seq}").as_bytes()), "headers": {"part": seq.to_string()}}),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let c = edge.post(&format!("/v1/namespaces/orders/transactions/{id}/commit"), &json!({"chunks": 3}));
    assert_eq!(c.status, 200, "{:?}", c.body);
    let got = eventually(WAIT, "three chunks at the regional's target", || {
        let a = sink.accepted();
        (a.len() >= 3).then_some(a)
    });
    assert_eq!(got.len(), 3);
    let bodies: Vec<&[u8]> = got.iter().map(|r| r.body.as_slice()).collect();
    assert_eq!(bodies, [b"part-0".as_slice(), b"part-1", b"part-2"]);
    let txn = got[0].header("x-wharf-transaction-id").expect("delivered as a transaction");
    assert!(got.iter().all(|r| r.header("x-wharf-transaction-id") == Some(txn)));
    assert!(got.iter().all(|r| r.header("x-wharf-key") == Some("order-7")));
    assert_eq!(got[2].header("part"), Some("2"));
    // One marker in the regional log: one transaction, not three messages.
    assert_eq!(log_records(&regional, "orders"), 1);
}

#[test]
fn a_missing_downstream_namespace_is_dead_lettered_with_its_code() {
    let sink = HttpSink::start();
    let regional = Wharf::start(&sink.namespace("other", 1, ""));
    let edge = Wharf::start(&edge_namespace(&regional, ""));
    edge.write_id("orders", "k", b"v");
    let dlq = dead_letters(&edge);
    assert!(dlq.contains("namespace_not_found") && dlq.contains("`namespace`"), "{dlq}");
}

#[test]
fn a_wrong_token_is_dead_lettered_with_what_to_fix() {
    let sink = HttpSink::start();
    let regional = Wharf::start(&sink.namespace("orders", 1, "tokens = [\"right-token\"]"));
    let edge = Wharf::start(&edge_namespace(&regional, ", token = \"wrong-token\""));
    edge.write_id("orders", "k", b"v");
    let dlq = dead_letters(&edge);
    assert!(dlq.contains("403 forbidden") && dlq.contains("`token`"), "{dlq}");

    // No token at all: 401.
    let edge = Wharf::start(&edge_namespace(&regional, ""));
    edge.write_id("orders", "k", b"v");
    let dlq = dead_letters(&edge);
    assert!(dlq.contains("401 unauthenticated") && dlq.contains("`token`"), "{dlq}");
}

#[test]
fn the_right_token_forwards() {
    let sink = HttpSink::start();
    let regional = Wharf::start(&sink.namespace("orders", 1, "tokens = [\"right-token\"]"));
    let edge = Wharf::start(&edge_namespace(&regional, ", token = \"right-token\""));
    edge.write_id("orders", "k", b"hello");
    eventually(WAIT, "the message at the regional's target", || {
        sink.accepted_bodies().contains("hello").then_some(())
    });
}

#[test]
fn the_forward_example_passes_check_config_and_plugin_check_describes_it() {
    plugin("wharf");
    let out = Command::new(wharf_bin())
        .current_dir(root())
        .args(["check-config", "--config", "examples/forward.toml"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("check-config");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("init ok"), "{text}");

    let out = Command::new(wharf_bin())
        .args(["plugin", "check", "--json"])
        .arg(Path::new(&plugin("wharf")))
        .output()
        .expect("plugin check");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(v["describe"]["name"], "wharf-plugin-wharf", "{v}");
    assert_eq!(v["wit"], "wharf:target@0.4.0", "{v}");
}

#[test]
fn a_forwarded_message_keeps_its_key_and_headers_downstream() {
    let sink = HttpSink::start();
    let regional = Wharf::start(&sink.namespace("orders", 2, ""));
    let edge = Wharf::start(&edge_namespace(&regional, ""));
    let body = json!({
        "key": "order-9",
        "payload": b64(b"with headers"),
        "headers": {"trace-id": "4bf92f3577b34da6", "tenant": "acme"},
    });
    let r = edge.post("/v1/namespaces/orders/messages", &body);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let plain = edge.write_id("orders", "order-10", b"no headers");
    let got = eventually(WAIT, "both messages at the regional's target", || {
        let a = sink.accepted();
        (a.len() >= 2).then_some(a)
    });
    let with = got.iter().find(|r| r.body == b"with headers").expect("the message with headers");
    assert_eq!(with.header("trace-id"), Some("4bf92f3577b34da6"), "{:?}", with.headers);
    assert_eq!(with.header("tenant"), Some("acme"), "{:?}", with.headers);
    assert_eq!(with.header("x-wharf-key"), Some("order-9"));
    let without = got.iter().find(|r| r.body == b"no headers").expect("the message without headers");
    assert_eq!((without.header("trace-id"), without.header("tenant")), (None, None));
    assert_eq!(without.header("x-wharf-key"), Some("order-10"));
    assert_eq!(log_records(&regional, "orders"), 2);
    eventually(WAIT, "delivered at the edge", || {
        (edge.lookup("orders", &plain)["state"] == json!("delivered")).then_some(())
    });
}
