//! A namespace with two targets (`a`, `b`), each the http plugin posting to
//! its own sink: each target has its own progress, watermark and DLQ, and
//! the log keeps what the slowest target still needs; on Kafka (a consumer
//! group per target) a target that is down holds back only itself.
//!
//! Writes, lookups and DLQ calls go through `wharf-client`; the checks of an
//! error status and code (`400 target_required`, `404 message_not_found`)
//! send raw requests.

use std::time::Duration;

use serde_json::{Value, json};
use wharf_client::{Client, DeliveryState, DlqEntry, Message};
use wharf_tests::{
    HttpSink, Wharf, eventually, kafka_queue, multi_target_namespace, quick_retry, start_tansu,
};

fn client(wharf: &Wharf) -> Client {
    Client::new(wharf.url(""))
}

/// Writes one keyed message to `orders`, asserting a durable ack; its id.
fn write_id(c: &Client, key: &str, payload: &[u8]) -> String {
    let ack =
        c.write("orders", Message::new(payload).with_key(key)).unwrap_or_else(|e| panic!("write {key}: {e}"));
    assert!(ack.durable, "write {key}: {ack:?}");
    ack.message_id
}

/// The entries of target `target`'s DLQ (first page).
fn dlq_entries(c: &Client, target: &str) -> Vec<DlqEntry> {
    c.dlq_list("orders", Some(target)).unwrap_or_else(|e| panic!("dlq of {target}: {e}")).entries
}

fn dlq_ids(c: &Client, target: &str) -> Vec<String> {
    dlq_entries(c, target).into_iter().map(|e| e.message_id).collect()
}

fn config(a: &HttpSink, b: &HttpSink, partitions: u32, extra: &str) -> String {
    multi_target_namespace(
        "orders",
        partitions,
        &format!("{extra}{}", quick_retry("orders")),
        &[("a", a), ("b", b)],
    )
}

/// `delivered_watermark` of each partition in `parts`.
fn watermarks(parts: &[Value]) -> Vec<u64> {
    parts.iter().map(|p| p["delivered_watermark"].as_u64().expect("delivered_watermark")).collect()
}

/// The bodies a sink accepted for `key`, in arrival order, repeats included.
fn bodies_of(sink: &HttpSink, key: &str) -> Vec<String> {
    sink.accepted()
        .into_iter()
        .filter(|r| r.header("x-wharf-key") == Some(key))
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect()
}

/// Every key's first arrivals are `<key>:0`, `<key>:1`, ... in that order.
fn assert_in_key_order(sink: &HttpSink, what: &str) {
    for (key, got) in sink.first_arrivals() {
        let expected: Vec<String> = (0..got.len()).map(|i| format!("{key}:{i}")).collect();
        let got: Vec<String> =
            got.iter().map(|b| b.split('|').next().unwrap_or_default().to_string()).collect();
        assert_eq!(got, expected, "{what}: key {key} out of order");
    }
}

fn segments(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.retain(|n| n.ends_with(".seg"));
    names.sort();
    names
}

const FIRST_SEGMENT: &str = "00000000000000000000.seg";

#[test]
fn a_down_target_holds_back_the_log_watermark_but_not_the_other_target() {
    let (a, b) = (HttpSink::start(), HttpSink::start());
    b.set(|x| x.fail_all = Some(503));
    // Small segments: 1 KB payloads fill several per partition.
    let wharf = Wharf::start_with_server("segment_max_bytes = 4096", &config(&a, &b, 2, ""), "all");
    let c = client(&wharf);
    let pad = "x".repeat(1000);
    for i in 0..50 {
        let key = format!("k{}", i % 5);
        write_id(&c, &key, format!("{key}:{}|{pad}", i / 5).as_bytes());
    }
    let heads: Vec<u64> = wharf
        .partitions("orders")
        .iter()
        .map(|p| p["head_sequence"].as_u64().expect("head_sequence"))
        .collect();
    assert_eq!((heads.len(), heads.iter().sum::<u64>()), (2, 50), "{heads:?}");

    eventually(Duration::from_secs(60), "target a to get all 50", || {
        (a.accepted_bodies().len() == 50).then_some(())
    });
    eventually(Duration::from_secs(30), "target a's watermarks at head", || {
        (watermarks(&wharf.target_partitions("orders", "a")) == heads).then_some(())
    });
    assert!(b.accepted().is_empty(), "target b is down");
    let st = wharf.status();
    let ns_wm = watermarks(st["namespaces"]["orders"]["partitions"].as_array().expect("partitions"));
    let b_wm = watermarks(st["namespaces"]["orders"]["targets"]["b"]["partitions"].as_array().expect("b"));
    for p in 0..2 {
        if heads[p] > 0 {
            assert!(b_wm[p] < heads[p], "partition {p}: b delivered nothing, yet b's watermark is {b_wm:?}");
            assert!(ns_wm[p] <= b_wm[p], "partition {p}: the log's watermark {ns_wm:?} passed b's {b_wm:?}");
            // What b still needs is still on disk.
            let segs = segments(&wharf.data_dir().join(format!("orders/p{p}")));
            assert!(segs.len() > 1 && segs[0] == FIRST_SEGMENT, "partition {p}: segments {segs:?}");
        }
    }
    for t in ["a", "b"] {
        let ts = &st["namespaces"]["orders"]["targets"][t];
        assert_eq!(ts["plugin"]["state"], json!("ready"), "target {t}: {ts}");
        assert!(ts["dlq_size"].is_u64(), "target {t}: {ts}");
    }

    b.set(|x| x.fail_all = None);
    eventually(Duration::from_secs(120), "target b to get all 50 after recovering", || {
        (b.accepted_bodies().len() == 50).then_some(())
    });
    eventually(Duration::from_secs(30), "every watermark at head", || {
        let st = wharf.status();
        let ns = &st["namespaces"]["orders"];
        let at_head = |v: &Value| v.as_array().is_some_and(|p| watermarks(p) == heads);
        (at_head(&ns["partitions"])
            && at_head(&ns["targets"]["a"]["partitions"])
            && at_head(&ns["targets"]["b"]["partitions"]))
        .then_some(())
    });
    eventually(Duration::from_secs(60), "delivered segments deleted", || {
        (0..2)
            .filter(|p| heads[*p] > 0)
            .all(|p| {
                !segments(&wharf.data_dir().join(format!("orders/p{p}"))).contains(&FIRST_SEGMENT.to_string())
            })
            .then_some(())
    });
    assert_in_key_order(&a, "target a");
    assert_in_key_order(&b, "target b");
}

#[test]
fn a_dead_letter_belongs_to_its_target_and_a_replay_goes_to_that_target_only() {
    let (a, b) = (HttpSink::start(), HttpSink::start());
    b.set(|x| x.reject_keys = vec!["poison".into()]);
    let wharf = Wharf::start(&config(&a, &b, 2, ""));
    let c = client(&wharf);
    let id = write_id(&c, "poison", b"p-1");

    let entry = eventually(Duration::from_secs(30), "b's dlq entry", || {
        let entries = dlq_entries(&c, "b");
        (entries.len() == 1).then(|| entries[0].clone())
    });
    assert_eq!(
        (entry.message_id.as_str(), entry.target.as_str(), entry.key.as_deref()),
        (id.as_str(), "b", Some("poison"))
    );
    eventually(Duration::from_secs(30), "target a to deliver it", || {
        (bodies_of(&a, "poison") == ["p-1"]).then_some(())
    });
    let a_dlq = dlq_entries(&c, "a");
    assert!(a_dlq.is_empty(), "target a's dlq: {a_dlq:?}");
    let r = wharf.dlq("orders", None);
    assert_eq!((r.status, r.body["error"]["code"].clone()), (400, json!("target_required")), "{:?}", r.body);
    let l = eventually(Duration::from_secs(30), "the lookup to show both targets", || {
        let l = c.message("orders", &id).expect("lookup");
        (l.targets.get("a").map(|t| t.state) == Some(DeliveryState::Delivered)
            && l.targets.get("b").map(|t| t.state) == Some(DeliveryState::DeadLettered))
        .then_some(l)
    });
    assert_ne!(l.state, DeliveryState::Delivered, "delivered by one target of two: {l:?}");

    // The replay goes to b; a later message of the key fences a: anything
    // replayed to a by mistake would reach it before `p-2`.
    b.set(|x| x.reject_keys.clear());
    let r = c.dlq_replay("orders", Some("b"), Some(vec![id]), None).expect("replay");
    assert_eq!(r.replayed.len(), 1, "{r:?}");
    eventually(Duration::from_secs(30), "b's replayed delivery", || {
        (bodies_of(&b, "poison") == ["p-1"]).then_some(())
    });
    assert!(dlq_ids(&c, "b").is_empty());
    write_id(&c, "poison", b"p-2");
    eventually(Duration::from_secs(30), "p-2 at both targets", || {
        (bodies_of(&a, "poison").contains(&"p-2".into()) && bodies_of(&b, "poison").contains(&"p-2".into()))
            .then_some(())
    });
    assert_eq!(bodies_of(&a, "poison"), ["p-1", "p-2"], "target a got the replay meant for b");
    assert_eq!(bodies_of(&b, "poison"), ["p-1", "p-2"]);

    // Deleting one entry: it is b's, not a's.
    b.set(|x| x.reject_keys = vec!["poison".into()]);
    let id3 = write_id(&c, "poison", b"p-3");
    eventually(Duration::from_secs(30), "p-3 in b's dlq", || {
        (dlq_ids(&c, "b") == [id3.clone()]).then_some(())
    });
    let r = wharf.delete(&Wharf::dlq_path("orders", &format!("/{id3}"), Some("a")));
    assert_eq!(
        (r.status, r.body["error"]["code"].clone()),
        (404, json!("message_not_found")),
        "{:?}",
        r.body
    );
    c.dlq_delete("orders", Some("b"), &id3).expect("delete b's entry");
    assert!(dlq_ids(&c, "b").is_empty());
}

#[test]
fn a_kafka_namespace_with_two_targets_delivers_everything_to_both() {
    let tansu = start_tansu();
    let (a, b) = (HttpSink::start(), HttpSink::start());
    let wharf = Wharf::start(&config(&a, &b, 1, &kafka_queue(tansu.port, "orders", 2)));
    let c = client(&wharf);
    for i in 0..40 {
        let key = format!("k{}", i % 4);
        write_id(&c, &key, format!("{key}:{}", i / 4).as_bytes());
    }
    for (name, sink) in [("a", &a), ("b", &b)] {
        eventually(Duration::from_secs(120), &format!("target {name} to get all 40"), || {
            (sink.accepted_bodies().len() == 40).then_some(())
        });
        assert_in_key_order(sink, name);
        let ts = wharf.target_status("orders", name);
        assert_eq!(ts["plugin"]["state"], json!("ready"), "target {name}: {ts}");
        assert!(ts["partitions"].as_array().is_some_and(|p| !p.is_empty()), "target {name}: {ts}");
    }
}

#[test]
fn a_kafka_namespace_with_one_target_down_delivers_everything_to_the_other_and_later_to_both() {
    let tansu = start_tansu();
    let (a, b) = (HttpSink::start(), HttpSink::start());
    b.set(|x| x.fail_all = Some(503));
    let wharf = Wharf::start(&config(&a, &b, 1, &kafka_queue(tansu.port, "orders", 2)));
    let c = client(&wharf);
    for i in 0..40 {
        let key = format!("k{}", i % 4);
        write_id(&c, &key, format!("{key}:{}", i / 4).as_bytes());
    }
    eventually(Duration::from_secs(120), "target a to get all 40 while b is down", || {
        (a.accepted_bodies().len() == 40).then_some(())
    });
    assert_in_key_order(&a, "target a");
    eventually(Duration::from_secs(30), "b's breaker open", || {
        wharf.breaker_states("orders", "b").iter().any(|s| s == "open").then_some(())
    });
    assert!(b.accepted().is_empty(), "target b is down");
    assert!(!b.refused().is_empty(), "target b was tried");
    assert_eq!(wharf.target_status("orders", "a")["plugin"]["state"], json!("ready"));

    b.set(|x| x.fail_all = None);
    eventually(Duration::from_secs(120), "target b to get all 40 after recovering", || {
        (b.accepted_bodies().len() == 40).then_some(())
    });
    assert_in_key_order(&b, "target b");
    assert!(dlq_ids(&c, "b").is_empty(), "b dead-lettered nothing");
}
