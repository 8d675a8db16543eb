//! The gRPC API (`wharf.v1.Wharf`), with a client generated from the same
//! proto file as the server: writes delivered to a real HTTP target, batches,
//! idempotency, wait-for-visible, the DLQ, error codes and auth.

use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status};
use wharf_tests::{HttpSink, Wharf, eventually, plugin};

#[allow(missing_debug_implementations, clippy::all, clippy::pedantic, clippy::unwrap_used)]
mod pb {
    tonic::include_proto!("wharf.v1");
}

use pb::wharf_client::WharfClient;

type Client = WharfClient<tonic::transport::Channel>;

/// A blocking front for the async client: each test is a plain `#[test]`
/// like the rest of the suite. The runtime has a worker thread of its own,
/// which drives the channel's connection between calls.
struct Grpc {
    rt: Arc<tokio::runtime::Runtime>,
    client: Client,
    token: Option<String>,
}

impl Grpc {
    fn connect(wharf: &Wharf) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let client = rt.block_on(WharfClient::connect(wharf.grpc_url())).expect("connect to the gRPC API");
        Self { rt: Arc::new(rt), client, token: None }
    }

    /// The same connection, sending `authorization: Bearer <token>`.
    fn with_token(&self, token: &str) -> Self {
        Self { rt: self.rt.clone(), client: self.client.clone(), token: Some(token.to_string()) }
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        if let Some(t) = &self.token {
            let v: MetadataValue<_> = format!("Bearer {t}").parse().expect("metadata value");
            req.metadata_mut().insert("authorization", v);
        }
        req
    }

    fn write(&self, msg: pb::WriteRequest) -> Result<pb::WriteAck, Status> {
        let mut c = self.client.clone();
        self.rt.block_on(c.write(self.request(msg))).map(|r| r.into_inner())
    }

    fn write_batch(&self, msg: pb::WriteBatchRequest) -> Result<pb::WriteBatchResponse, Status> {
        let mut c = self.client.clone();
        self.rt.block_on(c.write_batch(self.request(msg))).map(|r| r.into_inner())
    }

    fn get_message(&self, ns: &str, id: &str) -> Result<pb::MessageState, Status> {
        let mut c = self.client.clone();
        let msg = pb::GetMessageRequest { namespace: ns.into(), message_id: id.into() };
        self.rt.block_on(c.get_message(self.request(msg))).map(|r| r.into_inner())
    }

    fn list_dlq(&self, ns: &str) -> Result<pb::ListDlqResponse, Status> {
        let mut c = self.client.clone();
        let msg = pb::ListDlqRequest { namespace: ns.into(), ..Default::default() };
        self.rt.block_on(c.list_dlq(self.request(msg))).map(|r| r.into_inner())
    }

    fn replay_dlq(&self, msg: pb::ReplayDlqRequest) -> Result<pb::ReplayDlqResponse, Status> {
        let mut c = self.client.clone();
        self.rt.block_on(c.replay_dlq(self.request(msg))).map(|r| r.into_inner())
    }

    fn delete_dlq(&self, ns: &str, id: &str) -> Result<pb::DeleteDlqResponse, Status> {
        let mut c = self.client.clone();
        let msg = pb::DeleteDlqRequest { namespace: ns.into(), message_id: id.into(), target: None };
        self.rt.block_on(c.delete_dlq(self.request(msg))).map(|r| r.into_inner())
    }

    fn purge_dlq(&self, ns: &str) -> Result<pb::PurgeDlqResponse, Status> {
        let mut c = self.client.clone();
        let msg = pb::PurgeDlqRequest { namespace: ns.into(), target: None };
        self.rt.block_on(c.purge_dlq(self.request(msg))).map(|r| r.into_inner())
    }

    fn status(&self) -> Result<serde_json::Value, Status> {
        let mut c = self.client.clone();
        let r = self.rt.block_on(c.status(self.request(pb::StatusRequest {})))?.into_inner();
        Ok(serde_json::from_str(&r.json).expect("status json"))
    }
}

/// Records appended to namespace `hooks`, over all its partitions.
fn records_in_hooks(grpc: &Grpc) -> u64 {
    let status = grpc.status().expect("status");
    status["namespaces"]["hooks"]["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["head_sequence"].as_u64().expect("head"))
        .sum()
}

fn namespaces(sink: &HttpSink, extra: &str) -> String {
    sink.namespace("hooks", 2, extra)
}

fn write(payload: &[u8], key: Option<&str>) -> pb::WriteRequest {
    pb::WriteRequest {
        namespace: "hooks".into(),
        payload: payload.to_vec(),
        key: key.map(Into::into),
        ..Default::default()
    }
}

fn message(payload: &[u8], key: &str) -> pb::Message {
    pb::Message { payload: payload.to_vec(), key: Some(key.into()), ..Default::default() }
}

/// The gRPC code, the `wharf-error-code` metadata entry, and that the
/// message starts with the same code.
fn error_of(status: &Status) -> (Code, String) {
    let code = status
        .metadata()
        .get("wharf-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(no wharf-error-code)")
        .to_string();
    assert!(
        status.message().starts_with(&format!("{code}: ")),
        "message {:?} for code {code}",
        status.message()
    );
    (status.code(), code)
}

fn expect_err<T: std::fmt::Debug>(r: Result<T, Status>) -> (Code, String) {
    error_of(&r.expect_err("an error"))
}

#[test]
fn a_write_is_durable_then_delivered_with_its_raw_bytes_key_and_headers() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&namespaces(&sink, ""));
    let grpc = Grpc::connect(&wharf);
    // Not UTF-8, not base64: raw bytes end to end.
    let payload = [0u8, 255, 1, 254, b'\n'];
    let mut req = write(&payload, Some("order-1"));
    req.headers.insert("trace".into(), "abc".into());
    let ack = grpc.write(req).expect("write");
    assert!(ack.durable && !ack.visible && !ack.duplicate, "{ack:?}");
    assert_eq!(ack.message_id, format!("{}-{}", ack.partition, ack.sequence));

    let got = eventually(Duration::from_secs(30), "the delivery", || sink.accepted().first().cloned());
    assert_eq!(got.body, payload);
    assert_eq!(got.header("x-wharf-key"), Some("order-1"));
    assert_eq!(got.header("x-wharf-message-id"), Some(ack.message_id.as_str()));
    assert_eq!(got.header("trace"), Some("abc"));
    eventually(Duration::from_secs(10), "state delivered", || {
        let s = grpc.get_message("hooks", &ack.message_id).expect("get message");
        (s.state == "delivered").then_some(())
    });
    // The HTTP API sees the same message the same way.
    let http = wharf.get(&format!("/v1/namespaces/hooks/messages/{}", ack.message_id));
    assert_eq!(http.body["state"], "delivered");

    // wait = VISIBLE answers after the target confirmed.
    let mut req = write(b"seen", Some("v"));
    req.wait = pb::Wait::Visible.into();
    req.timeout_ms = Some(10_000);
    let ack = grpc.write(req).expect("write visible");
    assert!(ack.durable && ack.visible, "{ack:?}");
    assert!(sink.accepted().iter().any(|r| r.body == b"seen"), "visible before the target had it");
    // ... and times out as durable, not as an error.
    sink.set(|b| b.fail_all = Some(503));
    let mut req = write(b"unseen", Some("w"));
    req.wait = pb::Wait::Visible.into();
    req.timeout_ms = Some(300);
    let ack = grpc.write(req).expect("write visible, timing out");
    assert!(ack.durable && !ack.visible, "{ack:?}");
    let state = grpc.get_message("hooks", &ack.message_id).expect("get message");
    assert!(["in_flight", "retrying", "pending"].contains(&state.state.as_str()), "{state:?}");
}

#[test]
fn a_batch_acknowledges_each_message_and_reports_the_invalid_one() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&namespaces(&sink, ""));
    let grpc = Grpc::connect(&wharf);
    let mut messages: Vec<pb::Message> =
        (0..10).map(|i| message(format!("m{i}").as_bytes(), &format!("k{}", i % 3))).collect();
    messages.insert(4, message(b"bad", ""));
    let r = grpc
        .write_batch(pb::WriteBatchRequest { namespace: "hooks".into(), messages, ..Default::default() })
        .expect("batch");
    assert_eq!(r.results.len(), 11);
    for (i, res) in r.results.iter().enumerate() {
        match (&res.result, i) {
            (Some(pb::write_result::Result::Error(e)), 4) => assert_eq!(e.code, "invalid_key", "{e:?}"),
            (Some(pb::write_result::Result::Ack(a)), i) if i != 4 => assert!(a.durable, "{a:?}"),
            other => panic!("result {i}: {other:?}"),
        }
    }
    eventually(Duration::from_secs(30), "10 deliveries", || (sink.accepted().len() == 10).then_some(()));
    for key in ["k0", "k1", "k2"] {
        let got: Vec<usize> = sink
            .accepted()
            .iter()
            .filter(|r| r.header("x-wharf-key") == Some(key))
            .map(|r| String::from_utf8_lossy(&r.body)[1..].parse().expect("index"))
            .collect();
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{key} out of order: {got:?}");
    }
    let empty = grpc.write_batch(pb::WriteBatchRequest { namespace: "hooks".into(), ..Default::default() });
    assert_eq!(expect_err(empty), (Code::InvalidArgument, "batch_too_large".into()));
}

#[test]
fn a_repeated_idempotency_key_returns_the_original_id_and_writes_nothing() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&namespaces(&sink, ""));
    let grpc = Grpc::connect(&wharf);
    let mut req = write(b"charge", Some("order-9"));
    req.idempotency_key = Some("req-1".into());
    let first = grpc.write(req.clone()).expect("first");
    assert!(!first.duplicate);
    let again = grpc.write(req).expect("again");
    assert!(again.duplicate, "{again:?}");
    assert_eq!(again.message_id, first.message_id);
    // Across protocols: the same key over HTTP is a duplicate too.
    let http = wharf.post(
        "/v1/namespaces/hooks/messages",
        &serde_json::json!({"payload": "Y2hhcmdl", "idempotency_key": "req-1"}),
    );
    assert_eq!(http.body["duplicate"], true, "{:?}", http.body);
    assert_eq!(http.body["message_id"].as_str(), Some(first.message_id.as_str()));
    // Within one batch.
    let dup = pb::Message { idempotency_key: Some("req-2".into()), ..message(b"a", "k") };
    let r = grpc
        .write_batch(pb::WriteBatchRequest {
            namespace: "hooks".into(),
            messages: vec![dup.clone(), dup],
            ..Default::default()
        })
        .expect("batch");
    let acks: Vec<pb::WriteAck> = r
        .results
        .into_iter()
        .map(|r| match r.result {
            Some(pb::write_result::Result::Ack(a)) => a,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(!acks[0].duplicate && acks[1].duplicate, "{acks:?}");
    assert_eq!(acks[0].message_id, acks[1].message_id);
    eventually(Duration::from_secs(30), "two deliveries", || (sink.accepted().len() >= 2).then_some(()));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.accepted().len(), 2, "a duplicate was delivered");
}

/// A call cut off by its deadline while the write waits for its fdatasync
/// must leave the idempotency key settled either way: a retry with the
/// same key returns (a duplicate of the cut-off write, or the first write
/// if the cut-off one never started), and each key is delivered once.
#[test]
fn a_write_cut_off_by_its_deadline_never_holds_up_a_retry_of_its_idempotency_key() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&namespaces(&sink, ""));
    let grpc = Grpc::connect(&wharf);
    let tries = 20;
    for i in 0..tries {
        let mut req = write(format!("m{i}").as_bytes(), Some(&format!("k{i}")));
        req.idempotency_key = Some(format!("cut-{i}"));
        // 1 µs: the server drops the call in the middle of the write.
        let mut cut = grpc.request(req.clone());
        cut.set_timeout(Duration::from_micros(1));
        let _ = grpc.rt.block_on(grpc.client.clone().write(cut));
        let mut retry = grpc.request(req);
        retry.set_timeout(Duration::from_secs(10));
        let ack = grpc.rt.block_on(grpc.client.clone().write(retry));
        assert!(ack.is_ok(), "retry {i} of a cut-off write: {ack:?}");
    }
    // Every retry returned once its key was settled, so the log holds its
    // final count: one record per key (a cut-off write that got as far as
    // its append is the one the retry reports).
    assert_eq!(records_in_hooks(&grpc), tries as u64, "a key was written twice");
    eventually(Duration::from_secs(30), "a delivery per key", || {
        (sink.accepted().len() >= tries).then_some(())
    });
    assert_eq!(sink.accepted().len(), tries, "a key was delivered twice");
}

#[test]
fn errors_carry_the_http_apis_code_with_the_matching_grpc_code() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&namespaces(&sink, ""));
    let grpc = Grpc::connect(&wharf);
    let nowhere = pb::WriteRequest { namespace: "nowhere".into(), ..write(b"x", None) };
    assert_eq!(expect_err(grpc.write(nowhere)), (Code::NotFound, "namespace_not_found".into()));
    let both = pb::WriteRequest { delay_ms: Some(1), deliver_at_ms: Some(1), ..write(b"x", None) };
    assert_eq!(expect_err(grpc.write(both)), (Code::InvalidArgument, "invalid_delay".into()));
    let empty_key = write(b"x", Some(""));
    assert_eq!(expect_err(grpc.write(empty_key)), (Code::InvalidArgument, "invalid_key".into()));
    let big = write(&vec![7u8; (1 << 20) + 1], None);
    assert_eq!(expect_err(grpc.write(big)), (Code::InvalidArgument, "payload_too_large".into()));
    let bad_wait = pb::WriteRequest { wait: 7, ..write(b"x", None) };
    assert_eq!(expect_err(grpc.write(bad_wait)), (Code::InvalidArgument, "invalid_wait".into()));
    assert_eq!(expect_err(grpc.get_message("hooks", "0-999")), (Code::NotFound, "message_not_found".into()));
    assert_eq!(expect_err(grpc.get_message("hooks", "junk")), (Code::NotFound, "message_not_found".into()));
    assert_eq!(expect_err(grpc.delete_dlq("hooks", "0-0")), (Code::NotFound, "message_not_found".into()));
    let rate = pb::ReplayDlqRequest {
        namespace: "hooks".into(),
        all: true,
        rate_per_sec: Some(0.0),
        ..Default::default()
    };
    assert_eq!(expect_err(grpc.replay_dlq(rate)), (Code::InvalidArgument, "invalid_rate".into()));
    // Nothing above was written.
    assert_eq!(records_in_hooks(&grpc), 0);
}

#[test]
fn the_dlq_is_listed_replayed_deleted_and_purged() {
    let sink = HttpSink::start();
    sink.set(|b| b.reject_keys = vec!["bad".into()]);
    let wharf = Wharf::start(&namespaces(&sink, ""));
    let grpc = Grpc::connect(&wharf);
    let payload = [9u8, 0, 200];
    let ids: Vec<String> =
        (0..3).map(|_| grpc.write(write(&payload, Some("bad"))).expect("write").message_id).collect();
    let list = eventually(Duration::from_secs(30), "3 dlq entries", || {
        grpc.list_dlq("hooks").ok().filter(|l| l.entries.len() == 3)
    });
    assert_eq!(list.total, 3);
    assert_eq!(list.next_after, None);
    let e = &list.entries[0];
    assert_eq!((e.payload.as_slice(), e.key.as_deref()), (payload.as_slice(), Some("bad")));
    assert_eq!(e.failures.first().map(|f| f.kind.as_str()), Some("reject"));
    let state = grpc.get_message("hooks", &ids[0]).expect("state");
    assert_eq!((state.state.as_str(), state.attempts), ("dead_lettered", Some(1)));

    sink.set(|b| b.reject_keys.clear());
    let none = grpc
        .replay_dlq(pb::ReplayDlqRequest { namespace: "hooks".into(), ..Default::default() })
        .expect("replay nothing");
    assert!(none.replayed.is_empty(), "an empty id list replayed {none:?}");
    let both = pb::ReplayDlqRequest {
        namespace: "hooks".into(),
        ids: vec![ids[0].clone()],
        all: true,
        ..Default::default()
    };
    assert_eq!(expect_err(grpc.replay_dlq(both)), (Code::InvalidArgument, "invalid_ids".into()));
    let replay = grpc
        .replay_dlq(pb::ReplayDlqRequest {
            namespace: "hooks".into(),
            ids: vec![ids[0].clone(), "0-12345".into()],
            ..Default::default()
        })
        .expect("replay");
    assert_eq!(replay.replayed.len(), 1, "{replay:?}");
    assert_eq!(replay.replayed[0].message_id, ids[0]);
    assert_eq!(replay.not_found, vec!["0-12345".to_string()]);
    eventually(Duration::from_secs(30), "the replayed delivery", || {
        (sink.accepted().len() == 1).then_some(())
    });

    let deleted = grpc.delete_dlq("hooks", &ids[1]).expect("delete");
    assert!(deleted.deleted);
    assert_eq!(grpc.purge_dlq("hooks").expect("purge").purged, 1);
    assert_eq!(grpc.list_dlq("hooks").expect("list").total, 0);
}

#[test]
fn tokens_are_required_and_scoped_like_the_http_api() {
    let sink = HttpSink::start();
    let config = format!(
        "{}\n[namespaces.other]\npartitions = 1\ntokens = [\"other-token\"]\n[namespaces.other.target]\nplugin = \"{}\"\n",
        namespaces(&sink, "tokens = [\"hooks-token\"]"),
        plugin("log-target").display()
    );
    let mut wharf = Wharf::start(&config);
    // An admin token, in [server].
    let text = std::fs::read_to_string(wharf.config_path()).expect("config");
    let text = text.replacen("[server]\n", "[server]\nadmin_tokens = [\"root\"]\n", 1);
    std::fs::write(wharf.config_path(), text).expect("config");
    wharf.restart();

    let anonymous = Grpc::connect(&wharf);
    assert_eq!(
        expect_err(anonymous.write(write(b"x", None))),
        (Code::Unauthenticated, "unauthenticated".into())
    );
    let wrong = anonymous.with_token("wrong");
    assert_eq!(expect_err(wrong.write(write(b"x", None))), (Code::PermissionDenied, "forbidden".into()));
    let other = anonymous.with_token("other-token");
    assert_eq!(expect_err(other.write(write(b"x", None))), (Code::PermissionDenied, "forbidden".into()));
    assert_eq!(expect_err(other.list_dlq("hooks")), (Code::PermissionDenied, "forbidden".into()));
    assert!(other.write(pb::WriteRequest { namespace: "other".into(), ..write(b"x", None) }).is_ok());
    let hooks = anonymous.with_token("hooks-token");
    assert!(hooks.write(write(b"x", None)).is_ok());
    // A namespace token cannot see the node's status; an admin token can,
    // and can write anywhere.
    assert_eq!(expect_err(hooks.status()), (Code::PermissionDenied, "forbidden".into()));
    assert_eq!(expect_err(anonymous.status()), (Code::Unauthenticated, "unauthenticated".into()));
    let root = anonymous.with_token("root");
    let status = root.status().expect("status");
    assert!(status["namespaces"]["hooks"].is_object(), "{status}");
    assert!(root.write(write(b"x", None)).is_ok());
    // An admin token on an unknown namespace: not found, not forbidden.
    let nowhere = pb::WriteRequest { namespace: "nowhere".into(), ..write(b"x", None) };
    assert_eq!(expect_err(root.write(nowhere)), (Code::NotFound, "namespace_not_found".into()));
}

#[test]
fn a_transaction_is_begun_chunked_committed_and_aborted_like_over_http() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&namespaces(&sink, ""));
    let g = Grpc::connect(&wharf);
    let mut c = g.client.clone();
    let begin =
        pb::BeginTransactionRequest { namespace: "hooks".into(), key: Some("t-key".into()), ttl_ms: None };
    let txn = g.rt.block_on(c.begin_transaction(g.request(begin.clone()))).expect("begin").into_inner();
    assert_eq!((txn.state.as_str(), txn.chunks), ("open", 0));
    for seq in [1u32, 0] {
        let chunk = pb::AppendChunkRequest {
            namespace: "hooks".into(),
            transaction_id: txn.transaction_id.clone(),
            seq,
            payload: vec![seq as u8, 0xff],
            headers: Default::default(),
        };
        let ack = g.rt.block_on(c.append_chunk(g.request(chunk))).expect("chunk").into_inner();
        assert!(ack.durable && !ack.duplicate);
    }
    let commit = |chunks: u32| pb::CommitTransactionRequest {
        namespace: "hooks".into(),
        transaction_id: txn.transaction_id.clone(),
        chunks,
        wait: pb::Wait::Visible as i32,
        timeout_ms: Some(20_000),
    };
    let (code, err) = expect_err(g.rt.block_on(c.commit_transaction(g.request(commit(3)))));
    assert_eq!((code, err.as_str()), (Code::Aborted, "transaction_incomplete"));
    let done = g.rt.block_on(c.commit_transaction(g.request(commit(2)))).expect("commit").into_inner();
    let marker = done.marker.expect("marker ack");
    assert!(marker.durable && marker.visible && !marker.duplicate, "{marker:?}");
    let bodies: Vec<Vec<u8>> = sink
        .accepted()
        .into_iter()
        .filter(|r| r.header("x-wharf-transaction-id") == Some(txn.transaction_id.as_str()))
        .map(|r| r.body)
        .collect();
    assert_eq!(bodies, vec![vec![0, 0xff], vec![1, 0xff]]);

    let other = g.rt.block_on(c.begin_transaction(g.request(begin))).expect("begin").into_inner();
    let abort = pb::AbortTransactionRequest {
        namespace: "hooks".into(),
        transaction_id: other.transaction_id.clone(),
    };
    assert!(g.rt.block_on(c.abort_transaction(g.request(abort))).expect("abort").into_inner().aborted);
    let get = pb::GetTransactionRequest { namespace: "hooks".into(), transaction_id: other.transaction_id };
    let (code, err) = expect_err(g.rt.block_on(c.get_transaction(g.request(get))));
    assert_eq!((code, err.as_str()), (Code::NotFound, "transaction_not_found"));
}

#[test]
fn a_traceparent_in_metadata_reaches_the_target() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&namespaces(&sink, ""));
    let grpc = Grpc::connect(&wharf);
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut req = grpc.request(write(b"traced", Some("k")));
    req.metadata_mut().insert("traceparent", tp.parse().expect("metadata"));
    let mut c = grpc.client.clone();
    grpc.rt.block_on(c.write(req)).expect("write");
    let got = eventually(Duration::from_secs(20), "delivered", || sink.accepted().into_iter().next());
    assert_eq!(got.header("traceparent"), Some(tp));
}
