//! `--role processor` and `--role consumer` as two processes over one
//! embedded data dir: the processor appends, the consumer follows the log,
//! delivers, and persists the watermark the processor picks up.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::json;
use wharf_tests::{HttpSink, Wharf, b64, eventually};

fn delivered_bodies(sink: &HttpSink) -> Vec<String> {
    sink.accepted().into_iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect()
}

#[test]
fn a_processor_and_a_consumer_split_the_embedded_log_without_loss() {
    let sink = HttpSink::start();
    sink.set(|b| b.reject_keys = vec!["poison".into()]);
    let cfg = sink.namespace("orders", 2, "");
    let processor = Wharf::start_as(&cfg, "processor");
    let mut consumer = Wharf::start_beside(&processor, "consumer");

    // Each side refuses what belongs to the other, with a typed error.
    let r = consumer.write("orders", Some("k"), b"x");
    assert_eq!((r.status, r.body["error"]["code"].clone()), (503, json!("role_consumer")));
    let r =
        processor.post("/v1/namespaces/orders/messages", &json!({"payload": b64(b"x"), "wait": "visible"}));
    assert_eq!((r.status, r.body["error"]["code"].clone()), (400, json!("wait_unsupported")));
    let r = processor.get("/v1/namespaces/orders/dlq");
    assert_eq!((r.status, r.body["error"]["code"].clone()), (409, json!("role_processor")));

    let write = |i: usize| {
        let body = format!("m{i}");
        let r = processor.post(
            "/v1/namespaces/orders/messages",
            &json!({"key": format!("k{}", i % 5), "payload": b64(body.as_bytes())}),
        );
        assert_eq!((r.status, r.body["durable"].clone()), (200, json!(true)), "{:?}", r.body);
    };
    (0..150).for_each(write);
    // The consumer dies mid-stream (SIGKILL) and comes back: nothing the
    // processor acknowledged is lost.
    eventually(Duration::from_secs(30), "some deliveries", || (sink.accepted().len() > 20).then_some(()));
    consumer.kill();
    (150..300).for_each(write);
    consumer.restart();
    assert_eq!(processor.write("orders", Some("poison"), b"bad").status, 200);

    // A transaction begun and committed on the processor is reassembled and
    // delivered by the consumer.
    let t = processor.post("/v1/namespaces/orders/transactions", &json!({"key": "t"}));
    let txn = t.body["transaction_id"].as_str().expect("txn id").to_string();
    for seq in 0..2 {
        let path = format!("/v1/namespaces/orders/transactions/{txn}/chunks/{seq}");
        assert_eq!(processor.put(&path, &json!({"payload": b64(format!("c{seq}").as_bytes())})).status, 200);
    }
    let c =
        processor.post(&format!("/v1/namespaces/orders/transactions/{txn}/commit"), &json!({"chunks": 2}));
    assert_eq!(c.status, 200, "{:?}", c.body);

    eventually(Duration::from_secs(60), "every message delivered by the consumer", || {
        let got: HashSet<String> = delivered_bodies(&sink).into_iter().collect();
        ((0..300).all(|i| got.contains(&format!("m{i}"))) && got.contains("c0") && got.contains("c1"))
            .then_some(())
    });
    // Per-key order holds across the consumer's restart: a redelivery after
    // the kill may repeat what was sent, but each message's first delivery
    // comes after those of the earlier messages of its key.
    let mut seen: HashMap<String, HashSet<usize>> = HashMap::new();
    let mut newest: HashMap<String, usize> = HashMap::new();
    for r in sink.accepted() {
        let (Some(key), Ok(body)) = (r.header("x-wharf-key"), String::from_utf8(r.body.clone())) else {
            continue;
        };
        let Some(i) = body.strip_prefix('m').and_then(|n| n.parse::<usize>().ok()) else { continue };
        if !seen.entry(key.to_string()).or_default().insert(i) {
            continue;
        }
        let prev = newest.insert(key.to_string(), i);
        assert!(prev.is_none_or(|p| p < i), "key {key}: m{i} first delivered after m{prev:?}");
    }
    let chunks: Vec<String> = sink
        .accepted()
        .into_iter()
        .filter(|r| r.header("x-wharf-transaction-id") == Some(txn.as_str()))
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(&chunks[..2], ["c0", "c1"]);

    // The rejected message sits in the consumer's DLQ.
    let dlq = eventually(Duration::from_secs(20), "dlq entry", || {
        let r = consumer.get("/v1/namespaces/orders/dlq");
        (r.body["total"] == json!(1)).then_some(r.body)
    });
    assert_eq!(dlq["entries"][0]["key"], json!("poison"));

    // The processor picks up the consumer's watermark: its backlog drains.
    eventually(Duration::from_secs(20), "the processor sees the backlog drained", || {
        let st = processor.status();
        let parts = st["namespaces"]["orders"]["partitions"].as_array()?.clone();
        parts.iter().all(|p| p["backlog"] == json!(0)).then_some(())
    });
    let txn_dir = processor.data_dir().join("orders/transactions");
    eventually(Duration::from_secs(10), "chunk file deleted by the consumer", || {
        (std::fs::read_dir(&txn_dir).map(|d| d.count()).unwrap_or(0) == 0).then_some(())
    });
}
