#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::{Value, json};
use wharf_sdk::testing::{Harness, message};
use wharf_sdk::{Batch, Outcome};

use super::*;

/// What the fake downstream saw.
#[derive(Debug)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A scripted response: status, extra header lines, JSON body.
type Scripted = (u16, &'static str, Value);

/// A fake downstream Wharf on a free loopback port (fault injection): it
/// answers each request with the next scripted response, in order.
struct Downstream {
    base: String,
    script: Arc<Mutex<VecDeque<Scripted>>>,
    seen: mpsc::Receiver<Seen>,
}

impl Downstream {
    fn start(script: Vec<Scripted>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let (tx, seen) = mpsc::channel();
        let s = script.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let _ = handle(stream, &tx, &s);
            }
        });
        Downstream { base, script, seen }
    }

    fn next(&self) -> Seen {
        self.seen.recv_timeout(Duration::from_secs(5)).unwrap()
    }

    fn plugin(&self, extra: &[(&str, &str)]) -> Harness<Forward> {
        let mut config = vec![("url", self.base.as_str()), ("timeout_ms", "2000")];
        config.extend_from_slice(extra);
        Harness::init(&config).unwrap()
    }

    fn push(&self, response: Scripted) {
        self.script.lock().unwrap().push_back(response);
    }
}

fn handle(
    stream: std::net::TcpStream,
    tx: &mpsc::Sender<Seen>,
    script: &Mutex<VecDeque<Scripted>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').unwrap();
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize =
        headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (status, extra, reply) =
        script.lock().unwrap().pop_front().unwrap_or((500, "", json!({"error": {"code": "internal"}})));
    let _ = tx.send(Seen { method, path, headers, body });
    let reply = reply.to_string();
    let stream = reader.get_mut();
    write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{reply}",
        reply.len()
    )?;
    stream.flush()
}

fn ack(i: u64) -> Value {
    json!({"message_id": format!("0-{i}"), "partition": 0, "sequence": i, "durable": true, "visible": false, "duplicate": false})
}

fn error(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

fn reject_reason(o: &Outcome) -> &str {
    match o {
        Outcome::Reject { reason } => reason,
        other => panic!("not a reject: {other:?}"),
    }
}

#[test]
fn init_names_the_key_that_is_wrong() {
    let err = |config: &[(&str, &str)]| Harness::<Forward>::init(config).unwrap_err();
    assert!(err(&[]).contains("`url`"), "{}", err(&[]));
    assert!(err(&[("url", "ftp://x")]).contains("config key `url`"));
    assert!(err(&[("url", "http://127.0.0.1:7070/v1/namespaces")]).contains("base URL"));
    assert!(
        err(&[("url", "http://127.0.0.1:7070"), ("namespace", "Orders!")]).contains("config key `namespace`")
    );
    assert!(err(&[("url", "http://127.0.0.1:7070"), ("token", " ")]).contains("`token`"));
    assert!(err(&[("url", "http://127.0.0.1:7070"), ("token", "a b")]).contains("`token`"));
    assert!(err(&[("url", "http://127.0.0.1:7070"), ("timeout_ms", "0")]).contains("`timeout_ms`"));
    assert!(err(&[("url", "http://127.0.0.1:7070"), ("timeout_ms", "soon")]).contains("`timeout_ms`"));
    // A trailing slash is fine.
    Harness::<Forward>::init(&[("url", "http://127.0.0.1:7070/"), ("namespace", "orders-2")]).unwrap();
}

#[test]
fn init_errors_do_not_show_the_url_secrets() {
    for url in ["http://127.0.0.1:7070/?token=s3cr3t", "http://admin:s3cr3t@127.0.0.1:7070"] {
        let err = Harness::<Forward>::init(&[("url", url)]).unwrap_err();
        assert!(err.contains("config key `url`") && err.contains("http://"), "{err}");
        assert!(!err.contains("s3cr3t") && !err.contains("admin"), "{err}");
    }
}

#[test]
fn a_message_keeps_its_key_headers_and_payload_and_gets_namespace_slash_id_as_idempotency_key() {
    let msg = message(vec![0u8, 1, 2, 255])
        .with_namespace("orders")
        .with_key("order-7")
        .with_header("trace", "abc")
        .with_idempotency_key("client-key");
    let id = msg.id.clone();
    assert_eq!(
        message_json(&msg),
        json!({"payload": "AAEC/w==", "key": "order-7", "headers": {"trace": "abc"}, "idempotency_key": format!("orders/{id}")})
    );
    let keyless = message("x").with_namespace("orders");
    assert_eq!(message_json(&keyless).get("key"), None);
    assert_eq!(message_json(&keyless).get("headers"), None);
}

#[test]
fn a_batch_is_one_request_to_the_source_namespace_with_the_token() {
    let down = Downstream::start(vec![(200, "", json!({"results": [ack(0), ack(1)]}))]);
    let mut p = down.plugin(&[("token", "s3cret")]);
    let msgs = vec![message("a").with_namespace("orders"), message("b").with_namespace("orders")];
    assert_eq!(p.deliver(msgs.clone()), vec![Outcome::Delivered, Outcome::Delivered]);
    let seen = down.next();
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("POST", "/v1/namespaces/orders/messages/batch"));
    assert_eq!(seen.header("authorization"), Some("Bearer s3cret"));
    assert_eq!(seen.body, json!({"messages": [message_json(&msgs[0]), message_json(&msgs[1])]}));

    // `namespace` overrides the source's; no token, no header.
    down.push((200, "", json!({"results": [ack(2)]})));
    let mut p = down.plugin(&[("namespace", "regional")]);
    assert_eq!(p.deliver(vec![message("c").with_namespace("orders")]), vec![Outcome::Delivered]);
    let seen = down.next();
    assert_eq!(seen.path, "/v1/namespaces/regional/messages/batch");
    assert_eq!(seen.header("authorization"), None);
}

#[test]
fn each_result_has_its_own_outcome_and_a_duplicate_is_delivered() {
    let mut dup = ack(0);
    dup["duplicate"] = Value::Bool(true);
    let results = json!({"results": [
        ack(1), dup, error("invalid_key", "key must be 1..=1024 bytes"), error("partition_halted", "partition 2 is halted"),
    ]});
    let down = Downstream::start(vec![(200, "", results)]);
    let mut p = down.plugin(&[]);
    let out = p.deliver((0..4).map(|i| message(format!("m{i}"))).collect());
    assert_eq!(out[..2], [Outcome::Delivered, Outcome::Delivered]);
    assert!(reject_reason(&out[2]).contains("invalid_key"), "{:?}", out[2]);
    assert!(out[3].is_retry() && out[3].reason().unwrap().contains("partition_halted"), "{:?}", out[3]);
}

#[test]
fn backlog_full_and_5xx_are_retries_honouring_retry_after() {
    let down = Downstream::start(vec![
        (429, "Retry-After: 1\r\n", error("backlog_full", "backlog past 1000 messages")),
        (503, "", error("partition_halted", "halted")),
        (200, "", json!({"oops": true})),
    ]);
    let mut p = down.plugin(&[]);
    let out = p.deliver(vec![message("a"), message("b")]);
    for o in &out {
        match o {
            Outcome::Retry { reason, after } => {
                assert!(reason.contains("429 backlog_full"), "{reason}");
                assert_eq!(*after, Some(Duration::from_secs(1)));
            }
            other => panic!("{other:?}"),
        }
    }
    let out = p.deliver(vec![message("a")]);
    assert!(out[0].is_retry() && out[0].reason().unwrap().contains("503 partition_halted"), "{out:?}");
    // A 200 that is not a batch reply: nothing is known, so retry.
    assert!(p.deliver(vec![message("a")])[0].is_retry());
}

#[test]
fn validation_auth_and_replica_errors_are_rejects_that_say_what_to_fix() {
    let down = Downstream::start(vec![
        (400, "", error("invalid_json", "unknown field `x`")),
        (404, "", error("namespace_not_found", "no namespace named \"orders\"")),
        (401, "", error("unauthenticated", "no bearer token")),
        (403, "", error("forbidden", "token not valid for this namespace")),
        (409, "", error("read_only_replica", "namespace orders is a replica")),
    ]);
    let mut p = down.plugin(&[]);
    let mut next = || p.deliver(vec![message("a").with_namespace("orders")]).remove(0);
    let o = next();
    assert!(reject_reason(&o).contains("400 invalid_json"), "{o:?}");
    let o = next();
    assert!(
        reject_reason(&o).contains("404 namespace_not_found") && reject_reason(&o).contains("`namespace`")
    );
    let o = next();
    assert!(
        reject_reason(&o).contains("401 unauthenticated") && reject_reason(&o).contains("`token`"),
        "{o:?}"
    );
    let o = next();
    assert!(reject_reason(&o).contains("403 forbidden") && reject_reason(&o).contains("`token`"), "{o:?}");
    let o = next();
    let reason = reject_reason(&o);
    assert!(reason.contains("read_only_replica") && reason.contains("primary"), "{reason}");
}

#[test]
fn connection_refused_is_retry() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut p = Harness::<Forward>::init(&[("url", &format!("http://127.0.0.1:{port}"))]).unwrap();
    let out = p.deliver(vec![message("a"), message("b")]);
    assert!(out.iter().all(Outcome::is_retry), "{out:?}");
}

fn transaction(id: &str) -> Batch {
    let chunks = (0..3)
        .map(|i| {
            message(format!("chunk-{i}"))
                .with_namespace("orders")
                .with_key("order-7")
                .with_header("part", i.to_string())
        })
        .collect();
    Batch { messages: chunks, transaction_id: Some(id.to_string()) }
}

const DOWN_TXN: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn a_transaction_is_begun_chunked_and_committed_downstream() {
    let down = Downstream::start(vec![
        (201, "", json!({"transaction_id": DOWN_TXN, "state": "open"})),
        (200, "", json!({"seq": 0, "durable": true})),
        (200, "", json!({"seq": 1, "durable": true})),
        (200, "", json!({"seq": 2, "durable": true})),
        (200, "", json!({"message_id": "1-4", "duplicate": false})),
    ]);
    let mut p = down.plugin(&[]);
    let batch = transaction("aaaa");
    assert_eq!(p.deliver_batch(&batch), vec![Outcome::Delivered; 3]);
    let begin = down.next();
    assert_eq!((begin.method.as_str(), begin.path.as_str()), ("POST", "/v1/namespaces/orders/transactions"));
    assert_eq!(begin.body, json!({"key": "order-7"}));
    for i in 0..3 {
        let chunk = down.next();
        assert_eq!(chunk.method, "PUT");
        assert_eq!(chunk.path, format!("/v1/namespaces/orders/transactions/{DOWN_TXN}/chunks/{i}"));
        assert_eq!(
            chunk.body,
            json!({"payload": b64(format!("chunk-{i}").as_bytes()), "headers": {"part": i.to_string()}})
        );
    }
    let commit = down.next();
    assert_eq!(commit.path, format!("/v1/namespaces/orders/transactions/{DOWN_TXN}/commit"));
    assert_eq!(commit.body, json!({"chunks": 3}));
}

#[test]
fn a_retried_transaction_reuses_its_downstream_transaction() {
    let down = Downstream::start(vec![
        (201, "", json!({"transaction_id": DOWN_TXN})),
        (200, "", json!({})),
        (200, "", json!({})),
        (200, "", json!({})),
        (503, "Retry-After: 2\r\n", error("partition_halted", "halted")),
    ]);
    let mut p = down.plugin(&[]);
    let batch = transaction("bbbb");
    let out = p.deliver_batch(&batch);
    assert!(out.iter().all(|o| *o == out[0]) && out[0].is_retry(), "{out:?}");
    assert!(matches!(&out[0], Outcome::Retry { after: Some(d), .. } if *d == Duration::from_secs(2)));
    for _ in 0..5 {
        down.next();
    }
    // The commit did land after all: the chunk is refused as committed and
    // the commit answers the original marker. No new begin.
    down.push((409, "", error("transaction_committed", "committed")));
    down.push((200, "", json!({"message_id": "1-4", "duplicate": true})));
    assert_eq!(p.deliver_batch(&batch), vec![Outcome::Delivered; 3]);
    let chunk = down.next();
    assert_eq!(chunk.path, format!("/v1/namespaces/orders/transactions/{DOWN_TXN}/chunks/0"));
    assert_eq!(down.next().path, format!("/v1/namespaces/orders/transactions/{DOWN_TXN}/commit"));
}

#[test]
fn an_expired_downstream_transaction_is_begun_again_on_the_next_attempt() {
    let down = Downstream::start(vec![
        (201, "", json!({"transaction_id": DOWN_TXN})),
        (410, "", error("transaction_expired", "expired")),
    ]);
    let mut p = down.plugin(&[]);
    let batch = transaction("cccc");
    let out = p.deliver_batch(&batch);
    assert!(out[0].is_retry() && out[0].reason().unwrap().contains("gone"), "{out:?}");
    down.next();
    down.next();
    down.push((201, "", json!({"transaction_id": "f".repeat(32)})));
    for _ in 0..3 {
        down.push((200, "", json!({})));
    }
    down.push((200, "", json!({"message_id": "0-1"})));
    assert_eq!(p.deliver_batch(&batch), vec![Outcome::Delivered; 3]);
    assert_eq!(down.next().path, "/v1/namespaces/orders/transactions");
}

#[test]
fn a_rejected_chunk_rejects_the_whole_transaction_with_its_code() {
    let down = Downstream::start(vec![
        (201, "", json!({"transaction_id": DOWN_TXN})),
        (413, "", error("transaction_too_large", "past transactions.max_chunks")),
    ]);
    let mut p = down.plugin(&[]);
    let out = p.deliver_batch(&transaction("dddd"));
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|o| reject_reason(o).contains("transaction_too_large")), "{out:?}");
}

#[test]
fn batches_are_split_by_count_bytes_and_namespace() {
    let small: Vec<Message> = (0..2500).map(|_| message("x").with_namespace("a")).collect();
    let sizes: Vec<usize> = split(&small, None).iter().map(|g| g.len()).collect();
    assert_eq!(sizes, [1000, 1000, 500]);

    let big: Vec<Message> = (0..5).map(|_| message(vec![7u8; 700 * 1024]).with_namespace("a")).collect();
    let groups = split(&big, None);
    assert!(groups.len() >= 3 && groups.iter().all(|g| !g.is_empty()), "{}", groups.len());
    assert_eq!(groups.iter().map(|g| g.len()).sum::<usize>(), 5);

    let mixed = vec![
        message("1").with_namespace("a"),
        message("2").with_namespace("b"),
        message("3").with_namespace("b"),
    ];
    assert_eq!(split(&mixed, None).iter().map(|g| g.len()).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(split(&mixed, Some("z")).iter().map(|g| g.len()).collect::<Vec<_>>(), [3]);
}
