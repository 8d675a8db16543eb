//! `wharf-client` against the running binary and a real HTTP target:
//! typed writes, batches, transactions, the DLQ, status and auth, and its
//! retries (a `429 backlog_full`, a reply lost on the way), which must
//! never write a message twice.

use std::time::Duration;

use wharf_client::{Client, DeliveryState, Error, Message, RetryPolicy, Wait};
use wharf_tests::proxy::{Fault, FaultProxy};
use wharf_tests::{HttpSink, Wharf, eventually, quick_retry};

fn client(wharf: &Wharf) -> Client {
    Client::new(wharf.url(""))
}

/// The sink's requests whose body is `payload`.
fn deliveries(sink: &HttpSink, payload: &[u8]) -> usize {
    sink.accepted().iter().filter(|r| r.body == payload).count()
}

/// Records in the namespace's log, over every partition.
fn records(wharf: &Wharf, ns: &str) -> u64 {
    wharf.partitions(ns).iter().filter_map(|p| p["head_sequence"].as_u64()).sum()
}

#[test]
fn a_write_a_visible_write_and_a_batch_reach_the_target_once_each() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&sink.namespace("hooks", 2, ""));
    let c = client(&wharf);

    let ack = c.write("hooks", Message::new("one").with_key("a").with_header("trace", "t1")).expect("write");
    assert!(ack.durable && !ack.duplicate, "{ack:?}");
    let seen = eventually(Duration::from_secs(30), "the first write delivered", || {
        sink.accepted().into_iter().find(|r| r.body == b"one")
    });
    assert_eq!(seen.header("x-wharf-message-id"), Some(ack.message_id.as_str()));
    assert_eq!(seen.header("x-wharf-key"), Some("a"));
    let drawn = seen.header("idempotency-key").expect("an idempotency key reaches the target");
    assert_eq!(drawn.len(), 32, "the client's key: {drawn}");

    let visible = c
        .write_visible("hooks", Message::new("two").with_key("b"), Duration::from_secs(20))
        .expect("visible");
    assert!(visible.durable && visible.visible, "{visible:?}");
    assert_eq!(deliveries(&sink, b"two"), 1, "visible means delivered before the reply");

    let batch = vec![
        Message::new("b0").with_key("k"),
        Message::new("b1").with_key(""),
        Message::new("b2").with_key("k").with_idempotency_key("mine-2"),
    ];
    let results = c.write_batch("hooks", batch, Wait::Visible(Duration::from_secs(20))).expect("batch");
    assert_eq!(results.len(), 3);
    let (first, third) = (results[0].as_ref().expect("b0"), results[2].as_ref().expect("b2"));
    assert!(first.visible && third.visible, "{results:?}");
    assert_eq!(first.partition, third.partition, "one key, one partition");
    assert!(first.sequence < third.sequence, "key order: {results:?}");
    let refused = results[1].as_ref().expect_err("an empty key is refused");
    assert_eq!(refused.code, "invalid_key");

    let looked = c.message("hooks", &third.message_id).expect("lookup");
    assert_eq!(looked.state, DeliveryState::Delivered);
    assert_eq!(looked.targets["default"].state, DeliveryState::Delivered);
    for payload in [&b"one"[..], b"two", b"b0", b"b2"] {
        assert_eq!(deliveries(&sink, payload), 1, "{}", String::from_utf8_lossy(payload));
    }
    assert_eq!(deliveries(&sink, b"b1"), 0);
    let b2 = sink.accepted().into_iter().find(|r| r.body == b"b2").expect("b2");
    assert_eq!(b2.header("idempotency-key"), Some("mine-2"), "the caller's key is kept");
    assert_eq!(records(&wharf, "hooks"), 4);

    let missing = c.message("hooks", "1-999").expect_err("never written");
    assert_eq!((missing.status(), missing.code()), (Some(404), Some("message_not_found")));
    let unknown = c.write("nope", Message::new("x")).expect_err("no such namespace");
    assert!(matches!(&unknown, Error::Api { status: 404, code, .. } if code == "namespace_not_found"));
}

#[test]
fn a_transaction_committed_through_the_client_reaches_the_target_as_one_batch() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&sink.namespace("hooks", 2, ""));
    let c = client(&wharf);

    let txn = c.begin("hooks", Some("order-7")).expect("begin");
    assert_eq!((txn.info().state.as_str(), txn.info().key.as_deref()), ("open", Some("order-7")));
    assert_eq!(txn.id().len(), 32);
    for seq in [1, 0] {
        let ack = txn.chunk(seq, format!("part-{seq}")).expect("chunk");
        assert!(ack.durable && !ack.duplicate, "{ack:?}");
    }
    assert!(txn.chunk(1, "part-1").expect("again").duplicate);
    let conflict = txn.chunk(1, "other").expect_err("other content under a parked seq");
    assert_eq!(conflict.code(), Some("chunk_conflict"));
    assert_eq!(txn.state().expect("state").chunks, 2);

    let done = txn.commit(2, Wait::Visible(Duration::from_secs(20))).expect("commit");
    assert_eq!((done.chunks, done.marker.visible, done.marker.duplicate), (2, true, false), "{done:?}");
    let again = txn.commit(2, Wait::Durable).expect("a commit repeated");
    assert_eq!(
        (again.marker.message_id.as_str(), again.marker.duplicate),
        (done.marker.message_id.as_str(), true)
    );
    let bodies: Vec<Vec<u8>> = sink
        .accepted()
        .into_iter()
        .filter(|r| r.header("x-wharf-transaction-id") == Some(txn.id()))
        .map(|r| r.body)
        .collect();
    assert_eq!(bodies, [b"part-0".to_vec(), b"part-1".to_vec()], "in order, once");

    let dropped = c.begin("hooks", None).expect("begin");
    dropped.chunk(0, "never").expect("chunk");
    dropped.abort().expect("abort");
    let gone = c.transaction("hooks", dropped.id()).expect_err("aborted");
    assert_eq!(gone.code(), Some("transaction_not_found"));
    assert_eq!(deliveries(&sink, b"never"), 0);
}

#[test]
fn dead_lettered_messages_are_listed_replayed_and_purged_through_the_client() {
    let sink = HttpSink::start();
    sink.set(|b| b.reject_keys = vec!["poison".into()]);
    let wharf = Wharf::start(&sink.namespace("hooks", 2, ""));
    let c = client(&wharf);

    let ack = c.write("hooks", Message::new("bad").with_key("poison").with_header("h", "v")).expect("write");
    let page = eventually(Duration::from_secs(30), "the entry in the DLQ", || {
        c.dlq_list("hooks", None).ok().filter(|p| p.total == 1)
    });
    let entry = &page.entries[0];
    assert_eq!((entry.message_id.as_str(), entry.target.as_str()), (ack.message_id.as_str(), "default"));
    assert_eq!((entry.payload.as_slice(), entry.key.as_deref()), (&b"bad"[..], Some("poison")));
    assert_eq!(entry.headers.get("h").map(String::as_str), Some("v"));
    assert_eq!(entry.failures.last().map(|f| f.kind.as_str()), Some("reject"), "{entry:?}");
    assert_eq!(page.next_after, None);
    assert_eq!(c.message("hooks", &ack.message_id).expect("lookup").state, DeliveryState::DeadLettered);
    let status = c.status().expect("status");
    assert_eq!(status.namespaces["hooks"].targets["default"].dlq_size, Some(1));

    sink.set(|b| b.reject_keys.clear());
    let report = c.dlq_replay("hooks", None, Some(vec![ack.message_id.clone(), "0-999".into()]), Some(100.0));
    let report = report.expect("replay");
    assert_eq!(report.replayed.len(), 1, "{report:?}");
    assert_eq!(report.replayed[0].message_id, ack.message_id);
    assert_eq!(report.not_found, ["0-999"]);
    eventually(Duration::from_secs(30), "the replayed message delivered", || {
        (deliveries(&sink, b"bad") == 1).then_some(())
    });
    assert_eq!(c.dlq_list("hooks", None).expect("list").total, 0);

    sink.set(|b| b.reject_keys = vec!["poison".into()]);
    c.write("hooks", Message::new("bad again").with_key("poison")).expect("write");
    eventually(Duration::from_secs(30), "the second entry", || {
        c.dlq_list("hooks", None).ok().filter(|p| p.total == 1)
    });
    assert_eq!(c.dlq_purge("hooks", None).expect("purge"), 1);
    assert_eq!(c.dlq_list("hooks", None).expect("list").total, 0);
    let wrong = c.dlq_list("hooks", Some("nope")).expect_err("no such target");
    assert_eq!(wrong.code(), Some("target_not_found"));
}

#[test]
fn status_and_bearer_tokens_through_the_client() {
    let sink = HttpSink::start();
    let wharf = Wharf::start_with_server(
        r#"admin_tokens = ["admin-token"]"#,
        &sink.namespace("hooks", 2, r#"tokens = ["hooks-token"]"#),
        "all",
    );
    let status = client(&wharf).with_token("admin-token").status().expect("status");
    assert!(!status.version.is_empty());
    let hooks = &status.namespaces["hooks"];
    assert_eq!(hooks.partitions.len(), 2);
    assert_eq!(hooks.targets["default"].plugin.state, "ready");
    assert_eq!(status.raw["namespaces"]["hooks"]["partitions"][0]["partition"], 0);

    let anonymous = client(&wharf).write("hooks", Message::new("x")).expect_err("no token");
    assert_eq!((anonymous.status(), anonymous.code()), (Some(401), Some("unauthenticated")));
    let scoped = client(&wharf).with_token("hooks-token");
    scoped.write("hooks", Message::new("x")).expect("the namespace's token writes");
    assert_eq!(scoped.status().expect_err("status is admin only").code(), Some("forbidden"));
}

#[test]
fn a_write_refused_with_429_is_retried_after_retry_after_and_written_once() {
    let sink = HttpSink::start();
    sink.set(|b| b.fail_all = Some(503));
    let extra = format!("[namespaces.hooks.limits]\nmax_backlog_messages = 1\n{}", quick_retry("hooks"));
    let wharf = Wharf::start(&sink.namespace("hooks", 1, &extra));
    let c = client(&wharf).with_retry(RetryPolicy { max_attempts: 30, max_wait: Duration::from_secs(2) });

    c.write("hooks", Message::new("first")).expect("the first write fills the backlog");
    let once = RetryPolicy::never();
    let refused =
        client(&wharf).with_retry(once).write("hooks", Message::new("x")).expect_err("backlog full");
    assert_eq!((refused.status(), refused.code()), (Some(429), Some("backlog_full")));
    let rejections = |w: &Wharf| w.metric("wharf_admission_rejections_total", &[("namespace", "hooks")]);
    let before = rejections(&wharf).unwrap_or(0.0);

    let ack = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_secs(1));
            sink.set(|b| b.fail_all = None);
        });
        c.write("hooks", Message::new("second").with_idempotency_key("order-2"))
    })
    .expect("the retried write");
    assert!(ack.durable && !ack.duplicate, "{ack:?}");
    assert!(rejections(&wharf).unwrap_or(0.0) > before, "the client's first attempt was refused");
    eventually(Duration::from_secs(30), "the second message delivered", || {
        (deliveries(&sink, b"second") == 1).then_some(())
    });
    let got = sink.accepted().into_iter().find(|r| r.body == b"second").expect("second");
    assert_eq!(got.header("idempotency-key"), Some("order-2"));
    assert_eq!(records(&wharf, "hooks"), 2, "the refused attempts wrote nothing");

    let repeat = c.write("hooks", Message::new("second").with_idempotency_key("order-2")).expect("repeat");
    assert_eq!((repeat.message_id.as_str(), repeat.duplicate), (ack.message_id.as_str(), true));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(deliveries(&sink, b"second"), 1);
    assert_eq!(records(&wharf, "hooks"), 2);
}

#[test]
fn a_write_and_a_batch_whose_replies_were_lost_are_retried_with_their_keys_and_written_once() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&sink.namespace("hooks", 2, ""));
    let proxy = FaultProxy::start(([127, 0, 0, 1], wharf.port).into());
    let c = Client::new(proxy.url())
        .with_retry(RetryPolicy { max_attempts: 5, max_wait: Duration::from_millis(200) });

    proxy.set(Fault::LoseResponse { path_prefix: "/v1/namespaces/hooks/messages".into(), times: 1 });
    let ack = c.write("hooks", Message::new("lost").with_key("a")).expect("the retried write");
    assert!(ack.duplicate, "the retry found the first attempt's record: {ack:?}");
    assert_eq!(proxy.requests_forwarded(), 2, "one write, one retry");

    proxy.set(Fault::LoseResponse { path_prefix: "/v1/namespaces/hooks/messages/batch".into(), times: 1 });
    let batch = vec![Message::new("lost-0").with_key("a"), Message::new("lost-1").with_key("b")];
    let results = c.write_batch("hooks", batch, Wait::Durable).expect("the retried batch");
    let acks: Vec<_> = results.into_iter().map(|r| r.expect("ack")).collect();
    assert!(acks.iter().all(|a| a.duplicate), "{acks:?}");
    assert_eq!(proxy.requests_forwarded(), 4);

    eventually(Duration::from_secs(30), "all three delivered", || {
        (deliveries(&sink, b"lost") + deliveries(&sink, b"lost-0") + deliveries(&sink, b"lost-1") >= 3)
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    for (payload, ack) in [(&b"lost"[..], &ack), (b"lost-0", &acks[0]), (b"lost-1", &acks[1])] {
        let got: Vec<_> = sink.accepted().into_iter().filter(|r| r.body == payload).collect();
        assert_eq!(got.len(), 1, "{} delivered once", String::from_utf8_lossy(payload));
        assert_eq!(got[0].header("x-wharf-message-id"), Some(ack.message_id.as_str()), "the original id");
    }
    assert_eq!(records(&wharf, "hooks"), 3, "nothing written twice");
}
