//! Transactions in retained history (issue 16): with a `retention` table, a
//! delivered transaction's chunks stay while its marker is retained, so a
//! rewind through the marker re-delivers the transaction whole, as one
//! batch, to a real HTTP target (not to the DLQ).

use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::{HttpSink, Received, Wharf, b64, eventually};

const NS: &str = "/v1/namespaces/orders";
const KEEP: &str = "[namespaces.orders.retention]\nmax_bytes = 10000000\n";

/// What the sink accepted for transaction `txn`, in arrival order.
fn delivered(sink: &HttpSink, txn: &str) -> Vec<Received> {
    sink.accepted().into_iter().filter(|r| r.header("x-wharf-transaction-id") == Some(txn)).collect()
}

fn bodies(got: &[Received]) -> Vec<String> {
    got.iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect()
}

/// Begins a transaction of `chunks` chunks under `key`, commits it and
/// waits until it is delivered; its id.
fn committed_transaction(w: &Wharf, key: &str, chunks: u32) -> String {
    let r = w.post(&format!("{NS}/transactions"), &json!({"key": key}));
    assert_eq!(r.status, 201, "{:?}", r.body);
    let txn = r.body["transaction_id"].as_str().expect("id").to_string();
    for seq in 0..chunks {
        let body = json!({"payload": b64(format!("{txn}-part-{seq}").as_bytes())});
        let c = w.put(&format!("{NS}/transactions/{txn}/chunks/{seq}"), &body);
        assert_eq!(c.status, 200, "{:?}", c.body);
    }
    let body = json!({"chunks": chunks, "wait": "visible", "timeout_ms": 20000});
    let done = w.post(&format!("{NS}/transactions/{txn}/commit"), &body);
    assert_eq!((done.status, &done.body["visible"]), (200, &json!(true)), "{:?}", done.body);
    txn
}

#[test]
fn a_rewind_through_a_committed_transaction_redelivers_all_its_chunks_as_one_batch() {
    let sink = HttpSink::start();
    let ns = format!("{}\n{KEEP}", sink.namespace("orders", 1, ""));
    let w = Wharf::start(&ns);
    let txn = committed_transaction(&w, "order-1", 3);
    let want: Vec<String> = (0..3).map(|s| format!("{txn}-part-{s}")).collect();
    assert_eq!(bodies(&delivered(&sink, &txn)), want, "delivered once, in order");
    w.write_id("orders", "order-1", b"after the transaction");
    eventually(Duration::from_secs(20), "the later write delivered", || {
        sink.accepted_bodies().contains("after the transaction").then_some(())
    });
    let info = w.get(&format!("{NS}/transactions/{txn}"));
    assert_eq!((info.status, &info.body["state"]), (200, &json!("committed")), "kept: {:?}", info.body);

    let r = w.post("/v1/admin/namespaces/orders/rewind", &json!({"earliest": true}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let got = eventually(Duration::from_secs(30), "the transaction re-delivered", || {
        let got = delivered(&sink, &txn);
        (got.len() >= 6).then_some(got)
    });
    assert_eq!(got.len(), 6, "delivered once more, not more");
    let again = &got[3..];
    assert_eq!(bodies(again), want, "every chunk again, in sequence order");
    for r in again {
        let replays: u32 = r.header("x-wharf-replays").unwrap_or("0").parse().expect("replays");
        assert!(replays >= 1, "flagged as a replay: {:?}", r.headers);
        assert_eq!(r.header("x-wharf-key"), Some("order-1"));
    }
    let marker_ids: Vec<&str> = again.iter().filter_map(|r| r.header("x-wharf-message-id")).collect();
    let first: Vec<&str> = got[..3].iter().filter_map(|r| r.header("x-wharf-message-id")).collect();
    assert_eq!(marker_ids, first, "the same messages, one batch of the same marker");
    let dlq: Vec<Value> = w.dlq("orders", None).body["entries"].as_array().cloned().unwrap_or_default();
    assert!(dlq.is_empty(), "nothing dead-lettered: {dlq:?}\n{}", w.log());
}
