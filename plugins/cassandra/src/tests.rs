#![allow(clippy::unwrap_used)]

//! Native tests: the mapping on its own, and the plugin driven through the
//! SDK's harness against the FAKE CQL server of the test harness
//! (`tests/src/cql.rs`; not Apache Cassandra).

use cassandra_protocol::compression::Compression;
use cassandra_protocol::consistency::Consistency;
use cassandra_protocol::frame::message_prepare::BodyReqPrepare;
use cassandra_protocol::frame::message_request::RequestBody;
use cassandra_protocol::frame::message_result::ColType;
use cassandra_protocol::frame::{Direction, Envelope, Flags, Opcode, Serialize as _, Version};
use serde_json::json;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use wharf_sdk::testing::{Harness, message};
use wharf_sdk::{Batch, Message, Outcome};
use wharf_tests::cql::{CqlFault, FakeCql};

use super::*;
use crate::mapping::{Statement, timestamp_micros};

fn fake() -> FakeCql {
    FakeCql::start().with_users_table()
}

fn plugin(f: &FakeCql, extra: &[(&str, &str)]) -> Harness<Cassandra> {
    let addr = f.addr();
    let mut config = vec![("contact_points", addr.as_str()), ("keyspace", "app"), ("table", "users")];
    config.extend_from_slice(extra);
    Harness::init(&config).unwrap()
}

fn reason(o: &Outcome) -> &str {
    o.reason().unwrap_or("delivered")
}

// ------------------------------------------------------------------ mapping

#[test]
fn named_markers_become_positional_in_order() {
    let s = Statement::parse(
        "INSERT INTO app.users (id, name, msg) VALUES (:wharf_key, :name, ':kept') USING TIMESTAMP :wharf_timestamp",
    )
    .unwrap();
    assert_eq!(s.cql, "INSERT INTO app.users (id, name, msg) VALUES (?, ?, ':kept') USING TIMESTAMP ?");
    assert_eq!(s.names, ["wharf_key", "name", "wharf_timestamp"]);
    assert!(!s.conditional);
}

#[test]
fn a_statement_needs_the_timestamp_marker_and_no_positional_markers() {
    let err = Statement::parse("INSERT INTO app.users (id) VALUES (:id)").unwrap_err();
    assert!(err.contains("USING TIMESTAMP :wharf_timestamp"), "{err}");
    let err = Statement::parse("INSERT INTO app.users (id) VALUES (?) USING TIMESTAMP :wharf_timestamp")
        .unwrap_err();
    assert!(err.contains("named markers"), "{err}");
    let err = Statement::parse("INSERT INTO app.users (id) VALUES ('x) USING TIMESTAMP :wharf_timestamp")
        .unwrap_err();
    assert!(err.contains("unterminated"), "{err}");
    let s = Statement::parse("INSERT INTO app.users (id) VALUES (:id) IF NOT EXISTS").unwrap();
    assert!(s.conditional);
}

#[test]
fn json_values_encode_by_column_type() {
    use cassandra_protocol::types::value::Value;
    let enc = |v: serde_json::Value, t: ColType| mapping::encode(&v, &t);
    assert_eq!(enc(json!("hé"), ColType::Varchar).unwrap(), Value::Some("hé".as_bytes().to_vec()));
    assert_eq!(enc(json!(7), ColType::Int).unwrap(), Value::Some(7i32.to_be_bytes().to_vec()));
    assert_eq!(enc(json!(7), ColType::Bigint).unwrap(), Value::Some(7i64.to_be_bytes().to_vec()));
    assert_eq!(enc(json!(true), ColType::Boolean).unwrap(), Value::Some(vec![1]));
    assert_eq!(enc(json!(null), ColType::Int).unwrap(), Value::Null);
    assert_eq!(
        enc(json!("00112233-4455-6677-8899-aabbccddeeff"), ColType::Uuid).unwrap(),
        Value::Some((0u8..16).map(|i| i * 0x11).collect())
    );
    assert!(enc(json!("seven"), ColType::Int).unwrap_err().contains("integer"));
    assert!(enc(json!(1i64 << 40), ColType::Int).is_err(), "out of range for int");
    assert!(enc(json!("not-a-uuid"), ColType::Uuid).is_err());
}

#[test]
fn timestamps_grow_with_write_time_and_sequence() {
    let mut a = Message::new("0-1", "{}");
    a.written_at_ms = 1_700_000_000_000;
    a.sequence = 41;
    let mut b = a.clone();
    b.sequence = 42;
    let mut c = a.clone();
    c.written_at_ms += 1;
    c.sequence = 43;
    assert!(timestamp_micros(&a) < timestamp_micros(&b));
    assert!(timestamp_micros(&b) < timestamp_micros(&c));
    assert_eq!(timestamp_micros(&a), 1_700_000_000_000_041);
}

#[test]
fn init_names_the_key_that_is_wrong() {
    let err = |config: &[(&str, &str)]| Harness::<Cassandra>::init(config).unwrap_err();
    let base = [("contact_points", "127.0.0.1:1"), ("keyspace", "app"), ("table", "users")];
    assert!(err(&base[1..]).contains("`contact_points`"));
    assert!(err(&[("contact_points", "localhost:9042"), base[1], base[2]]).contains("not an ip:port"));
    assert!(err(&[base[0], ("keyspace", "app; DROP"), base[2]]).contains("`keyspace`"));
    assert!(err(&[base[0], base[1], base[2], ("consistency", "MOST")]).contains("`consistency`"));
    assert!(err(&[base[0], base[1], base[2], ("username", "u")]).contains("`password`"));
    assert!(
        err(&[base[0], base[1], base[2], ("statement", "INSERT INTO app.users (id) VALUES (:id)")])
            .contains("`statement`")
    );
    // An unreachable cluster is not a config error: init succeeds, delivery retries.
    let mut p = Harness::<Cassandra>::init(&base).unwrap();
    let o = p.deliver(vec![message(r#"{"id":"a"}"#)]);
    assert!(o[0].is_retry(), "{o:?}");
    assert!(reason(&o[0]).contains("no contact point reachable"), "{o:?}");
}

// ----------------------------------------------------- against the fake

#[test]
fn the_default_mapping_inserts_the_payload_as_json_with_a_timestamp() {
    let f = fake();
    let mut p = plugin(&f, &[]);
    let m = message(r#"{"id":"u1","name":"Ada","age":36}"#);
    let ts = timestamp_micros(&m);
    let o = p.deliver(vec![m]);
    assert!(o[0].is_delivered(), "{o:?}");
    let w = f.writes();
    assert_eq!(w.len(), 1);
    assert_eq!(
        serde_json::Value::Object(w[0].row.clone()),
        json!({"id":"u1","name":"Ada","age":36,"msg":null})
    );
    assert_eq!(w[0].timestamp, Some(ts));
    assert_eq!(w[0].consistency, "LocalQuorum", "LOCAL_QUORUM by default");
    assert_eq!(w[0].via, "EXECUTE");
}

#[test]
fn a_batch_is_grouped_by_partition_key_into_unlogged_batches_in_order() {
    let f = fake();
    let mut p = plugin(&f, &[("consistency", "one")]);
    let msgs = vec![
        message(r#"{"id":"a","age":1}"#),
        message(r#"{"id":"b","age":1}"#),
        message(r#"{"id":"a","age":2}"#),
        message(r#"{"id":"a","age":3}"#),
    ];
    let o = p.deliver(msgs);
    assert!(o.iter().all(Outcome::is_delivered), "{o:?}");
    let w = f.writes();
    let seen: Vec<(String, i64, String)> = w
        .iter()
        .map(|w| (w.row["id"].as_str().unwrap().to_string(), w.row["age"].as_i64().unwrap(), w.via.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            ("a".to_string(), 1, "BATCH UNLOGGED".to_string()),
            ("a".to_string(), 2, "BATCH UNLOGGED".to_string()),
            ("a".to_string(), 3, "BATCH UNLOGGED".to_string()),
            ("b".to_string(), 1, "EXECUTE".to_string()),
        ]
    );
    assert_eq!(w[0].consistency, "One");
    assert_eq!(f.rows("app", "users")[0]["age"], json!(3));
}

#[test]
fn an_older_replay_never_overwrites_a_newer_write() {
    let f = fake();
    let mut p = plugin(&f, &[]);
    let old = message(r#"{"id":"k","name":"old"}"#);
    let new = message(r#"{"id":"k","name":"new"}"#);
    assert!(p.deliver(vec![old.clone()])[0].is_delivered());
    assert!(p.deliver(vec![new])[0].is_delivered());
    // The older message comes back (a DLQ replay, a redelivery).
    assert!(p.deliver(vec![old.with_replays(1)])[0].is_delivered());
    assert_eq!(f.writes().len(), 3);
    assert_eq!(f.rows("app", "users")[0]["name"], json!("new"));
}

#[test]
fn a_transaction_is_one_logged_batch_all_or_nothing() {
    let f = fake();
    let mut p = plugin(&f, &[]);
    let batch = Batch {
        messages: vec![message(r#"{"id":"a"}"#), message(r#"{"id":"b"}"#)],
        transaction_id: Some("tx-1".into()),
    };
    let o = p.deliver_batch(&batch);
    assert!(o.iter().all(Outcome::is_delivered), "{o:?}");
    let w = f.writes();
    assert_eq!(w.len(), 2);
    assert!(w.iter().all(|x| x.via == "BATCH LOGGED" && x.request == w[0].request), "{w:?}");
    // One bad message rejects the whole transaction and writes nothing.
    let batch = Batch {
        messages: vec![message(r#"{"id":"c"}"#), message("nope")],
        transaction_id: Some("tx-2".into()),
    };
    let o = p.deliver_batch(&batch);
    assert!(o.iter().all(Outcome::is_reject), "{o:?}");
    assert!(reason(&o[0]).contains("transaction not written"), "{o:?}");
    assert_eq!(f.writes().len(), 2);
}

#[test]
fn a_custom_statement_binds_fields_key_and_id() {
    let f = fake();
    let stmt = "INSERT INTO app.users (id, name, msg, age) VALUES (:wharf_key, :name, :wharf_id, :age) \
                USING TIMESTAMP :wharf_timestamp";
    let mut p = plugin(&f, &[("statement", stmt)]);
    let m = message(r#"{"name":"Grace","age":85,"ignored":true}"#).with_key("u9");
    let id = m.id.clone();
    let o = p.deliver(vec![m, message(r#"{"name":"x"}"#)]);
    assert!(o[0].is_delivered(), "{o:?}");
    assert!(o[1].is_reject() && reason(&o[1]).contains("no key"), "{o:?}");
    let w = f.writes();
    assert_eq!(w.len(), 1);
    assert_eq!(
        serde_json::Value::Object(w[0].row.clone()),
        json!({"id":"u9","name":"Grace","msg":id,"age":85})
    );
    let o = p.deliver(vec![message(r#"{"name":"Grace","age":"old"}"#).with_key("u9")]);
    assert!(o[0].is_reject() && reason(&o[0]).contains("payload field `age`"), "{o:?}");
}

#[test]
fn bad_payloads_are_rejected_with_a_reason_and_the_rest_is_delivered() {
    let f = fake();
    let mut p = plugin(&f, &[]);
    let o = p.deliver(vec![
        message("not json"),
        message("[1,2]"),
        message(r#"{"name":"no id"}"#),
        message(r#"{"id":"ok"}"#),
        message(r#"{"id":"bad","colour":"red"}"#),
    ]);
    assert!(o[0].is_reject() && reason(&o[0]).contains("not JSON"), "{o:?}");
    assert!(o[1].is_reject() && reason(&o[1]).contains("not an object"), "{o:?}");
    assert!(o[2].is_reject() && reason(&o[2]).contains("partition key column `id`"), "{o:?}");
    assert!(o[3].is_delivered(), "{o:?}");
    // The server refuses it: Invalid (0x2200), with the server's message.
    assert!(o[4].is_reject(), "{o:?}");
    assert!(reason(&o[4]).contains("Invalid (0x2200)") && reason(&o[4]).contains("colour"), "{o:?}");
    assert_eq!(f.writes().len(), 1);
}

#[test]
fn unprepared_after_a_restart_is_prepared_again_and_delivered() {
    let f = fake();
    let mut p = plugin(&f, &[]);
    assert!(p.deliver(vec![message(r#"{"id":"a"}"#)])[0].is_delivered());
    let prepares = f.requests("PREPARE");
    f.forget_prepared();
    let o = p.deliver(vec![message(r#"{"id":"b"}"#), message(r#"{"id":"c"}"#)]);
    assert!(o.iter().all(Outcome::is_delivered), "{o:?}");
    assert_eq!(f.requests("PREPARE"), prepares + 1, "prepared once more");
    assert_eq!(f.writes().len(), 3);
}

#[test]
fn transient_server_errors_are_retries_naming_the_code() {
    let f = fake();
    let mut p = plugin(&f, &[]);
    for (fault, name) in [
        (CqlFault::Unavailable, "Unavailable (0x1000)"),
        (CqlFault::Overloaded, "Overloaded (0x1001)"),
        (CqlFault::WriteTimeout, "WriteTimeout (0x1100)"),
        (CqlFault::IsBootstrapping, "IsBootstrapping (0x1002)"),
    ] {
        f.fail_next_writes(1, fault);
        let o = p.deliver(vec![message(r#"{"id":"t"}"#)]);
        assert!(o[0].is_retry(), "{fault:?}: {o:?}");
        assert!(reason(&o[0]).contains(name), "{o:?}");
    }
    assert!(f.writes().is_empty());
    assert!(p.deliver(vec![message(r#"{"id":"t"}"#)])[0].is_delivered());
    f.fail_next_writes(1, CqlFault::Unauthorized);
    let o = p.deliver(vec![message(r#"{"id":"u"}"#)]);
    assert!(o[0].is_reject() && reason(&o[0]).contains("Unauthorized (0x2100)"), "{o:?}");
}

#[test]
fn a_statement_the_server_cannot_parse_fails_init() {
    let f = fake();
    let addr = f.addr();
    let err = Harness::<Cassandra>::init(&[
        ("contact_points", &addr),
        ("keyspace", "app"),
        ("table", "users"),
        ("statement", "UPSERT app.users (id) VALUES (:id) USING TIMESTAMP :wharf_timestamp"),
    ])
    .unwrap_err();
    assert!(err.contains("SyntaxError (0x2000)"), "{err}");
}

#[test]
fn fails_over_to_the_next_contact_point() {
    let down = fake();
    down.set_down(true);
    let up = fake();
    let points = format!("{},{}", down.addr(), up.addr());
    let mut p =
        Harness::<Cassandra>::init(&[("contact_points", &points), ("keyspace", "app"), ("table", "users")])
            .unwrap();
    assert!(p.deliver(vec![message(r#"{"id":"a"}"#)])[0].is_delivered());
    assert_eq!(up.writes().len(), 1);
    assert!(down.connections() >= 1, "the first contact point was tried first");
    // The second goes down, the first comes back: the plugin moves back.
    down.set_down(false);
    up.set_down(true);
    let o = p.deliver(vec![message(r#"{"id":"b"}"#)]);
    // The broken connection is noticed on the write: a retry, then the next contact point.
    let o = if o[0].is_retry() { p.deliver(vec![message(r#"{"id":"b"}"#)]) } else { o };
    assert!(o[0].is_delivered(), "{o:?}");
    assert_eq!(down.writes().len(), 1);
}

#[test]
fn a_connection_dropped_mid_batch_retries_only_what_was_not_written() {
    let f = fake();
    let mut p = plugin(&f, &[]);
    // Warm up (prepare, partition key) so the drop hits the writes.
    assert!(p.deliver(vec![message(r#"{"id":"w"}"#)])[0].is_delivered());
    f.drop_next_writes(1);
    let o = p.deliver(vec![message(r#"{"id":"a"}"#), message(r#"{"id":"b"}"#)]);
    // The first partition's write was dropped; the plugin reconnects for the second.
    assert!(o[0].is_retry(), "{o:?}");
    assert!(reason(&o[0]).contains("closed"), "{o:?}");
    assert!(o[1].is_delivered(), "{o:?}");
    let ids: Vec<_> = f.writes().iter().map(|w| w.row["id"].clone()).collect();
    assert_eq!(ids, [json!("w"), json!("b")]);
}

#[test]
fn authentication_with_username_and_password() {
    let f = FakeCql::start_with_auth("wharf", "s3cret").with_users_table();
    let mut p = plugin(&f, &[("username", "wharf"), ("password", "s3cret")]);
    assert!(p.deliver(vec![message(r#"{"id":"a"}"#)])[0].is_delivered());
    assert_eq!(f.writes().len(), 1);
    let addr = f.addr();
    let base = [("contact_points", addr.as_str()), ("keyspace", "app"), ("table", "users")];
    let err =
        Harness::<Cassandra>::init(&[base[0], base[1], base[2], ("username", "wharf"), ("password", "nope")])
            .unwrap_err();
    assert!(err.contains("AuthenticationError (0x0100)") && err.contains("incorrect"), "{err}");
    assert!(!err.contains("wharf") && !err.contains("nope"), "the credentials are not shown: {err}");
    let err = Harness::<Cassandra>::init(&base).unwrap_err();
    assert!(err.contains("requires authentication"), "{err}");
    assert_eq!(f.auth_failures(), 1);
}

// ------------------------------------- through a fault-injecting proxy

/// A FAKE for fault injection, in front of the fake CQL server, for what
/// that fake does not do. It relays each frame (one request, one reply at a
/// time) and: strips ` IF NOT EXISTS` from a PREPARE (the fake knows no
/// lightweight transactions) after recording it; records every EXECUTE's
/// consistency and serial consistency; answers the next `read_timeouts`
/// EXECUTEs itself with a ReadTimeout (0x1200) error.
struct Proxy {
    addr: String,
    seen: std::sync::Arc<std::sync::Mutex<Seen>>,
}

#[derive(Default)]
struct Seen {
    prepared: Vec<String>,
    executes: Vec<(Consistency, Option<Consistency>)>,
    batches: u32,
    read_timeouts: u32,
}

impl Proxy {
    fn start(upstream: &FakeCql) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
        let (to, kept) = (upstream.addr(), seen.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (to, kept) = (to.clone(), kept.clone());
                std::thread::spawn(move || relay(client, &to, &kept));
            }
        });
        Proxy { addr, seen }
    }

    fn seen<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        f(&mut self.seen.lock().unwrap())
    }

    fn plugin(&self, extra: &[(&str, &str)]) -> Harness<Cassandra> {
        let mut config =
            vec![("contact_points", self.addr.as_str()), ("keyspace", "app"), ("table", "users")];
        config.extend_from_slice(extra);
        Harness::init(&config).unwrap()
    }
}

/// One frame (9-byte v4 header, then its body), or `None` at EOF.
fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 9];
    s.read_exact(&mut buf).ok()?;
    let len = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) as usize;
    buf.resize(9 + len, 0);
    s.read_exact(&mut buf[9..]).ok()?;
    Some(buf)
}

fn relay(mut client: TcpStream, to: &str, seen: &std::sync::Mutex<Seen>) {
    let Ok(mut upstream) = TcpStream::connect(to) else { return };
    while let Some(frame) = read_frame(&mut client) {
        let env = Envelope::from_buffer(&frame, Compression::None).unwrap().envelope;
        let mut out = frame;
        match env.request_body().unwrap() {
            RequestBody::Prepare(p) => {
                seen.lock().unwrap().prepared.push(p.query.clone());
                let body =
                    RequestBody::Prepare(BodyReqPrepare::new(p.query.replace(" IF NOT EXISTS", ""), None));
                out = request(Opcode::Prepare, env.stream_id, body.serialize_to_vec(Version::V4));
            }
            RequestBody::Execute(e) => {
                let mut s = seen.lock().unwrap();
                s.executes.push((e.query_parameters.consistency, e.query_parameters.serial_consistency));
                if s.read_timeouts > 0 {
                    s.read_timeouts -= 1;
                    let reply = Envelope::new(
                        Version::V4,
                        Direction::Response,
                        Flags::empty(),
                        Opcode::Error,
                        env.stream_id,
                        read_timeout_body(),
                        None,
                        vec![],
                    );
                    let _ = client.write_all(&reply.encode_with(Compression::None).unwrap());
                    continue;
                }
            }
            RequestBody::Batch(_) => seen.lock().unwrap().batches += 1,
            _ => {}
        }
        if upstream.write_all(&out).is_err() {
            return;
        }
        let Some(reply) = read_frame(&mut upstream) else { return };
        if client.write_all(&reply).is_err() {
            return;
        }
    }
}

fn request(opcode: Opcode, stream_id: i16, body: Vec<u8>) -> Vec<u8> {
    Envelope::new(Version::V4, Direction::Request, Flags::empty(), opcode, stream_id, body, None, vec![])
        .encode_with(Compression::None)
        .unwrap()
}

/// An ERROR body, by hand (the crate's `ReadTimeoutError` has a private
/// field): code 0x1200, message, consistency LOCAL_QUORUM, received 1,
/// block_for 2, data_present 0.
fn read_timeout_body() -> Vec<u8> {
    let message = b"Operation timed out - received only 1 responses.";
    let mut b = 0x1200i32.to_be_bytes().to_vec();
    b.extend_from_slice(&(message.len() as u16).to_be_bytes());
    b.extend_from_slice(message);
    b.extend_from_slice(&0x0006u16.to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&2i32.to_be_bytes());
    b.push(0);
    b
}

const CONDITIONAL: &str = "INSERT INTO app.users (id, name) VALUES (:wharf_key, :name) IF NOT EXISTS";

#[test]
fn a_conditional_statement_goes_one_message_at_a_time_with_serial_consistency() {
    let f = fake();
    let proxy = Proxy::start(&f);
    let mut p = proxy.plugin(&[("statement", CONDITIONAL)]);
    let o = p.deliver(vec![
        message(r#"{"name":"one"}"#).with_key("k"),
        message(r#"{"name":"two"}"#).with_key("k"),
        message(r#"{"name":"other"}"#).with_key("j"),
    ]);
    assert!(o.iter().all(Outcome::is_delivered), "{o:?}");
    let (prepared, executes, batches) = proxy.seen(|s| (s.prepared.clone(), s.executes.clone(), s.batches));
    assert_eq!(prepared, ["INSERT INTO app.users (id, name) VALUES (?, ?) IF NOT EXISTS"]);
    assert_eq!(batches, 0, "a conditional statement is never batched");
    assert_eq!(executes, [(Consistency::LocalQuorum, Some(Consistency::LocalSerial)); 3]);
    let names: Vec<_> = f.writes().iter().map(|w| w.row["name"].clone()).collect();
    assert_eq!(names, [json!("one"), json!("two"), json!("other")]);

    // `serial_consistency` is configurable.
    let mut p = proxy.plugin(&[("statement", CONDITIONAL), ("serial_consistency", "SERIAL")]);
    assert!(p.deliver(vec![message(r#"{"name":"x"}"#).with_key("s")])[0].is_delivered());
    assert_eq!(
        proxy.seen(|s| s.executes.last().copied()),
        Some((Consistency::LocalQuorum, Some(Consistency::Serial)))
    );
}

#[test]
fn an_unconditional_statement_sends_no_serial_consistency() {
    let f = fake();
    let proxy = Proxy::start(&f);
    let mut p = proxy.plugin(&[]);
    assert!(p.deliver(vec![message(r#"{"id":"a"}"#)])[0].is_delivered());
    assert_eq!(proxy.seen(|s| s.executes.clone()), [(Consistency::LocalQuorum, None)]);
}

#[test]
fn a_read_timeout_is_a_retry_naming_the_code() {
    let f = fake();
    let proxy = Proxy::start(&f);
    let mut p = proxy.plugin(&[]);
    proxy.seen(|s| s.read_timeouts = 1);
    let o = p.deliver(vec![message(r#"{"id":"r"}"#)]);
    assert!(o[0].is_retry(), "{o:?}");
    assert!(reason(&o[0]).contains("ReadTimeout (0x1200)") && reason(&o[0]).contains("timed out"), "{o:?}");
    assert!(f.writes().is_empty());
    assert!(p.deliver(vec![message(r#"{"id":"r"}"#)])[0].is_delivered(), "the retry lands");
    assert_eq!(f.writes().len(), 1);
}

#[test]
fn a_dlq_replay_with_a_new_sequence_and_its_old_write_time_never_overwrites_a_newer_write() {
    let f = fake();
    let mut p = plugin(&f, &[]);
    let mut old = message(r#"{"id":"k","name":"old"}"#);
    old.written_at_ms = 1_700_000_000_000;
    old.sequence = 7;
    let mut new = message(r#"{"id":"k","name":"new"}"#);
    new.written_at_ms = old.written_at_ms + 1;
    new.sequence = 8;
    assert!(p.deliver(vec![new.clone()])[0].is_delivered());
    // The old message was dead-lettered, then replayed: appended again with
    // a new (larger) sequence, keeping its write time.
    let mut replay = old.with_replays(1);
    replay.sequence = 1_999;
    assert!(p.deliver(vec![replay.clone()])[0].is_delivered());
    let w = f.writes();
    assert_eq!(w.len(), 2);
    assert!(w[1].timestamp < w[0].timestamp, "{w:?}");
    assert_eq!(w[1].timestamp, Some(timestamp_micros(&replay)));
    assert_eq!(f.rows("app", "users")[0]["name"], json!("new"));
}
