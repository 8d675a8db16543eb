//! Multi-chunk transactions over HTTP, against the running binary and a real
//! HTTP target: chunks are parked durably outside the queue, a commit queues
//! one marker, and the target receives the chunks in order as one batch.
//!
//! What a test drives to check delivery (begin, chunks, commit, lookups, the
//! DLQ) goes through `wharf-client`'s typed calls; what checks an HTTP
//! status or error code (`201` on begin, `409 chunk_conflict`,
//! `410 transaction_expired`, the abort's body…) sends raw requests.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use wharf_client::{ChunkAck, Client, DeliveryState, DlqTransaction, Txn, Wait};
use wharf_tests::{HttpSink, Wharf, b64, eventually};

const NS: &str = "/v1/namespaces/hooks";

fn client(wharf: &Wharf) -> Client {
    Client::new(wharf.url(""))
}

/// Parks chunk `seq` through the client, with the same `x-chunk` header as
/// [`chunk`]; asserts a durable ack.
fn put_chunk(txn: &Txn, seq: u32, payload: &[u8]) -> ChunkAck {
    let headers = BTreeMap::from([("x-chunk".to_string(), seq.to_string())]);
    let ack = txn.chunk_with_headers(seq, payload, &headers).unwrap_or_else(|e| panic!("chunk {seq}: {e}"));
    assert!(ack.durable, "chunk {seq}: {ack:?}");
    ack
}

/// Begins a transaction with a raw request, asserting `201` and `open`.
fn begin(wharf: &Wharf, body: Value) -> String {
    let r = wharf.post(&format!("{NS}/transactions"), &body);
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["state"], json!("open"));
    r.body["transaction_id"].as_str().expect("id").to_string()
}

fn chunk(wharf: &Wharf, txn: &str, seq: u32, payload: &[u8]) -> wharf_tests::Reply {
    wharf.put(
        &format!("{NS}/transactions/{txn}/chunks/{seq}"),
        &json!({"payload": b64(payload), "headers": {"x-chunk": seq.to_string()}}),
    )
}

fn commit(wharf: &Wharf, txn: &str, chunks: u32, wait: &str) -> wharf_tests::Reply {
    wharf.post(
        &format!("{NS}/transactions/{txn}/commit"),
        &json!({"chunks": chunks, "wait": wait, "timeout_ms": 20000}),
    )
}

/// Requests the sink accepted for `txn`, as (message id, body).
fn delivered(sink: &HttpSink, txn: &str) -> Vec<(String, Vec<u8>)> {
    sink.accepted()
        .into_iter()
        .filter(|r| r.header("x-wharf-transaction-id") == Some(txn))
        .map(|r| (r.header("x-wharf-message-id").unwrap_or_default().to_string(), r.body))
        .collect()
}

fn files(wharf: &Wharf) -> usize {
    std::fs::read_dir(wharf.data_dir().join("hooks/transactions")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn a_committed_transaction_reaches_the_target_once_as_one_ordered_batch() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&sink.namespace("hooks", 2, ""));
    let t = client(&wharf).begin("hooks", Some("order-1")).expect("begin");
    assert_eq!(t.info().state, "open");
    let txn = t.id().to_string();
    for seq in [2, 0, 1] {
        let ack = put_chunk(&t, seq, format!("part-{seq}").as_bytes());
        assert!(!ack.duplicate, "{ack:?}");
    }
    let again = put_chunk(&t, 1, b"part-1");
    assert!(again.duplicate, "{again:?}");
    let conflict = chunk(&wharf, &txn, 1, b"something else");
    assert_eq!((conflict.status, conflict.body["error"]["code"].clone()), (409, json!("chunk_conflict")));

    let info = t.state().expect("state");
    assert_eq!((info.state.as_str(), info.chunks), ("open", 3));
    assert_eq!(info.key.as_deref(), Some("order-1"));
    // Parked, not queued: nothing reaches the target before the commit.
    std::thread::sleep(Duration::from_millis(300));
    assert!(sink.accepted().is_empty(), "chunks were delivered before the commit");
    let head = wharf.status()["namespaces"]["hooks"]["partitions"].as_array().expect("parts").clone();
    assert!(head.iter().all(|p| p["head_sequence"] == json!(0)), "a chunk entered the log: {head:?}");

    let short = commit(&wharf, &txn, 4, "durable");
    assert_eq!((short.status, short.body["error"]["code"].clone()), (409, json!("transaction_incomplete")));
    assert!(short.body["error"]["message"].as_str().expect("message").contains("[3]"), "{:?}", short.body);
    let long = commit(&wharf, &txn, 2, "durable");
    assert_eq!((long.status, long.body["error"]["code"].clone()), (409, json!("chunk_count_mismatch")));

    let done = t.commit(3, Wait::Visible(Duration::from_secs(20))).expect("commit");
    assert_eq!(done.transaction_id, txn);
    assert!(done.marker.durable && done.marker.visible && !done.marker.duplicate, "{done:?}");
    let marker = done.marker.message_id.clone();
    let got = delivered(&sink, &txn);
    let want: Vec<(String, Vec<u8>)> =
        (0..3).map(|s| (format!("{marker}/{s}"), format!("part-{s}").into_bytes())).collect();
    assert_eq!(got, want, "chunks in sequence order, each once");
    let first = sink.accepted().into_iter().find(|r| r.header("x-chunk") == Some("0")).expect("chunk 0");
    assert_eq!(first.header("x-wharf-key"), Some("order-1"));

    // A retried commit queues nothing again; the chunks are gone once
    // delivered.
    let retried = t.commit(3, Wait::Durable).expect("retried commit");
    assert!(retried.marker.duplicate && retried.marker.message_id == marker, "{retried:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(delivered(&sink, &txn).len(), 3);
    eventually(Duration::from_secs(10), "chunk file deleted", || (files(&wharf) == 0).then_some(()));
    let gone = wharf.get(&format!("{NS}/transactions/{txn}"));
    assert_eq!((gone.status, gone.body["error"]["code"].clone()), (404, json!("transaction_not_found")));
}

#[test]
fn abort_and_expiry_delete_the_parked_chunks_and_deliver_nothing() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&sink.namespace("hooks", 1, "transactions = { ttl_ms = 60000 }"));
    let api = client(&wharf);
    let t = api.begin("hooks", None).expect("begin");
    put_chunk(&t, 0, b"a");
    let aborted = t.id().to_string();
    let r = wharf.delete(&format!("{NS}/transactions/{aborted}"));
    assert_eq!((r.status, r.body["aborted"].clone()), (200, json!(true)));
    let c = commit(&wharf, &aborted, 1, "durable");
    assert_eq!((c.status, c.body["error"]["code"].clone()), (404, json!("transaction_not_found")));

    let t = api.begin_with_ttl("hooks", None, Duration::from_millis(300)).expect("begin");
    put_chunk(&t, 0, b"b");
    let expiring = t.id().to_string();
    let too_long = wharf.post(&format!("{NS}/transactions"), &json!({"ttl_ms": 60001}));
    assert_eq!((too_long.status, too_long.body["error"]["code"].clone()), (400, json!("invalid_ttl")));
    eventually(Duration::from_secs(10), "expiry", || {
        let r = wharf.get(&format!("{NS}/transactions/{expiring}"));
        (r.status == 410).then_some(r)
    });
    let c = commit(&wharf, &expiring, 1, "durable");
    assert_eq!((c.status, c.body["error"]["code"].clone()), (410, json!("transaction_expired")));
    let late = chunk(&wharf, &expiring, 1, b"c");
    assert_eq!((late.status, late.body["error"]["code"].clone()), (410, json!("transaction_expired")));
    assert_eq!(files(&wharf), 0, "abort and expiry delete the chunk files");
    std::thread::sleep(Duration::from_millis(300));
    assert!(sink.accepted().is_empty());
    let metrics = wharf.get("/metrics").body;
    let text = metrics.as_str().expect("text");
    for kind in ["aborted", "expired"] {
        let line = format!("wharf_transactions_total{{namespace=\"hooks\",kind=\"{kind}\"}} 1");
        assert!(text.contains(&line), "missing {line}");
    }
}

#[test]
fn parked_chunks_and_a_commit_survive_kill_9() {
    let sink = HttpSink::start();
    sink.set(|b| b.fail_all = Some(503));
    let mut wharf = Wharf::start(&sink.namespace(
        "hooks",
        2,
        "retry = { initial_backoff_ms = 50, max_backoff_ms = 200 }",
    ));
    let t = client(&wharf).begin("hooks", Some("k")).expect("begin");
    let txn = t.id().to_string();
    put_chunk(&t, 0, b"zero");
    put_chunk(&t, 1, b"one");
    wharf.kill();
    wharf.restart();
    // A new client: a restart may have moved the process to other ports.
    let t = client(&wharf).transaction("hooks", &txn).expect("the transaction after the restart");
    assert_eq!(t.info().chunks, 2);
    put_chunk(&t, 2, b"two");
    let marker = t.commit(3, Wait::Durable).expect("commit").marker.message_id;
    // The target is down: the marker waits, and a kill loses nothing.
    std::thread::sleep(Duration::from_millis(300));
    wharf.kill();
    sink.set(|b| b.fail_all = None);
    wharf.restart();
    eventually(Duration::from_secs(30), "delivery after restart", || {
        (delivered(&sink, &txn).len() == 3).then_some(())
    });
    let bodies: Vec<Vec<u8>> = delivered(&sink, &txn).into_iter().map(|(_, b)| b).collect();
    assert_eq!(bodies, vec![b"zero".to_vec(), b"one".to_vec(), b"two".to_vec()]);
    let state = client(&wharf).message("hooks", &marker).expect("lookup");
    assert_eq!(state.state, DeliveryState::Delivered, "{state:?}");
    eventually(Duration::from_secs(10), "chunk file deleted", || (files(&wharf) == 0).then_some(()));
}

#[test]
fn a_rejected_transaction_goes_whole_to_the_dlq_and_replays_whole() {
    let sink = HttpSink::start();
    sink.set(|b| b.reject_keys = vec!["bad".into()]);
    let wharf = Wharf::start(&sink.namespace("hooks", 1, ""));
    let c = client(&wharf);
    let t = c.begin("hooks", Some("bad")).expect("begin");
    let txn = t.id().to_string();
    for seq in 0..3 {
        put_chunk(&t, seq, &[seq as u8; 5]);
    }
    let done = t.commit(3, Wait::Visible(Duration::from_secs(20))).expect("commit");
    assert!(done.marker.durable && !done.marker.visible, "{done:?}");
    let marker = done.marker.message_id;
    let dlq = eventually(Duration::from_secs(10), "dlq entry", || {
        let page = c.dlq_list("hooks", None).expect("dlq");
        (page.total == 1).then_some(page)
    });
    let entry = &dlq.entries[0];
    assert_eq!(entry.message_id, marker);
    assert_eq!(entry.transaction, Some(DlqTransaction { transaction_id: txn.clone(), chunks: 3 }));
    assert!(entry.failures.first().is_some_and(|f| f.reason.contains("chunk 0")), "{entry:?}");
    // The entry carries the chunks, so the chunk store lets go of them.
    eventually(Duration::from_secs(10), "chunk file deleted", || (files(&wharf) == 0).then_some(()));

    sink.set(|b| b.reject_keys.clear());
    let r = c.dlq_replay("hooks", None, None, None).expect("replay");
    assert_eq!(r.replayed.len(), 1, "{r:?}");
    eventually(Duration::from_secs(20), "replayed transaction", || {
        (delivered(&sink, &txn).len() == 3).then_some(())
    });
    let bodies: Vec<Vec<u8>> = delivered(&sink, &txn).into_iter().map(|(_, b)| b).collect();
    assert_eq!(bodies, (0..3u8).map(|s| vec![s; 5]).collect::<Vec<_>>());
}

#[test]
fn bad_transaction_input_gets_a_typed_error_and_changes_nothing() {
    let sink = HttpSink::start();
    let wharf =
        Wharf::start(&sink.namespace("hooks", 1, "transactions = { max_chunks = 4, max_bytes = 10 }"));
    let txn = begin(&wharf, json!({}));
    let cases: Vec<(wharf_tests::Reply, u16, &str)> = vec![
        (
            wharf.put(&format!("{NS}/transactions/{txn}/chunks/x"), &json!({"payload": ""})),
            400,
            "invalid_chunk_seq",
        ),
        (
            wharf.put(&format!("{NS}/transactions/{txn}/chunks/0"), &json!({"payload": "!"})),
            400,
            "invalid_base64",
        ),
        (
            wharf.put(&format!("{NS}/transactions/{txn}/chunks/0"), &json!({"payload": "", "x": 1})),
            400,
            "invalid_json",
        ),
        (chunk(&wharf, &txn, 4, b"a"), 413, "transaction_too_large"),
        (chunk(&wharf, &txn, 0, &[0; 11]), 413, "transaction_too_large"),
        (chunk(&wharf, "not-a-transaction", 0, b"a"), 404, "transaction_not_found"),
        (chunk(&wharf, &"0".repeat(32), 0, b"a"), 404, "transaction_not_found"),
        (commit(&wharf, &txn, 0, "durable"), 409, "transaction_incomplete"),
        (wharf.post(&format!("{NS}/transactions"), &json!({"key": ""})), 400, "invalid_key"),
        (wharf.post("/v1/namespaces/nope/transactions", &json!({})), 404, "namespace_not_found"),
    ];
    for (i, (r, status, code)) in cases.into_iter().enumerate() {
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (status, Some(code)),
            "case {i}: {:?}",
            r.body
        );
    }
    let info = wharf.get(&format!("{NS}/transactions/{txn}"));
    assert_eq!((info.body["chunks"].clone(), info.body["bytes"].clone()), (json!(0), json!(0)));
}
