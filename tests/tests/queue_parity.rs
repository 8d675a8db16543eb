//! Kafka (tansu) and SQS FIFO (moto) namespaces have what the embedded log
//! has: a per-target DLQ in the delivering process (list, replay, delete,
//! purge), message lookup by the id of the write ack, `wait=visible`, and
//! delivery metrics labelled with the target.

use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::{
    HttpSink, Wharf, eventually, kafka_queue, quick_retry, sqs_fifo_queue, start_moto, start_tansu,
};

const QUEUE_WAIT: Duration = Duration::from_secs(120);

fn start(sink: &HttpSink, queue: &str) -> Wharf {
    sink.set(|b| b.reject_keys = vec!["poison".into()]);
    Wharf::start(&sink.namespace("orders", 1, &format!("{queue}{}", quick_retry("orders"))))
}

/// The DLQ's only entry, once there is exactly one.
fn only_dlq_entry(wharf: &Wharf, target: Option<&str>) -> Value {
    eventually(QUEUE_WAIT, "one dlq entry", || {
        let r = wharf.dlq("orders", target);
        (r.status == 200 && r.body["entries"].as_array()?.len() == 1).then(|| r.body["entries"][0].clone())
    })
}

fn state_of(wharf: &Wharf, id: &str) -> Value {
    wharf.lookup("orders", id)["state"].clone()
}

#[test]
fn a_kafka_namespace_has_the_dlq_lookup_wait_visible_and_metrics_of_the_embedded_log() {
    let tansu = start_tansu();
    let sink = HttpSink::start();
    let wharf = start(&sink, &kafka_queue(tansu.port, "orders", 2));

    // wait=visible answers once the target has it.
    let r = wharf.write_visible("orders", "k1", b"ok-1", 60_000);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!((&r.body["durable"], &r.body["visible"]), (&json!(true), &json!(true)), "{:?}", r.body);
    assert!(sink.accepted_bodies().contains("ok-1"), "visible before the target had it");
    let ok_id = r.body["message_id"].as_str().expect("message_id").to_string();
    let l = wharf.lookup("orders", &ok_id);
    assert_eq!((&l["message_id"], &l["state"]), (&json!(ok_id), &json!("delivered")), "{l}");
    assert_eq!(l["targets"]["default"]["state"], json!("delivered"), "{l}");

    // A rejected message lands in this process's DLQ, under its target.
    let bad_id = wharf.write_id("orders", "poison", b"bad-1");
    let entry = only_dlq_entry(&wharf, None);
    assert_eq!(
        (&entry["message_id"], &entry["target"], &entry["key"]),
        (&json!(bad_id), &json!("default"), &json!("poison")),
        "{entry}"
    );
    assert_eq!(wharf.dlq_ids("orders", Some("default")), std::slice::from_ref(&bad_id));
    assert_eq!(state_of(&wharf, &bad_id), json!("dead_lettered"));
    let st = wharf.target_status("orders", "default");
    assert_eq!(st["dlq_size"], json!(1), "{st}");
    assert_eq!(st["partitions"][0]["partition"], json!(0), "{st}");

    // A replay after the target stops rejecting delivers it.
    sink.set(|b| b.reject_keys.clear());
    let r = wharf.dlq_replay("orders", Some("default"), &json!({"ids": [bad_id]}));
    assert_eq!((r.status, r.body["replayed"].as_array().map(Vec::len)), (200, Some(1)), "{:?}", r.body);
    eventually(QUEUE_WAIT, "the replayed message delivered", || {
        sink.accepted_bodies().contains("bad-1").then_some(())
    });
    assert!(wharf.dlq_ids("orders", None).is_empty());

    // Purge empties it.
    sink.set(|b| b.reject_keys = vec!["poison".into()]);
    let bad_2 = wharf.write_id("orders", "poison", b"bad-2");
    assert_eq!(only_dlq_entry(&wharf, None)["message_id"], json!(bad_2));
    let r = wharf.delete(&Wharf::dlq_path("orders", "", Some("default")));
    assert_eq!((r.status, r.body["purged"].clone()), (200, json!(1)), "{:?}", r.body);
    let r = wharf.dlq("orders", None);
    assert_eq!((r.body["entries"].clone(), r.body["total"].clone()), (json!([]), json!(0)), "{:?}", r.body);

    // ok-1 and the replayed bad-1, counted under the target.
    let labels = [("namespace", "orders"), ("target", "default")];
    eventually(Duration::from_secs(30), "wharf_delivered_total for the target", || {
        (wharf.metric("wharf_delivered_total", &labels)? >= 2.0).then_some(())
    });
}

#[test]
fn an_sqs_fifo_namespace_lists_and_deletes_dead_letters_of_its_target() {
    let moto = start_moto();
    let sink = HttpSink::start();
    let wharf = start(&sink, &sqs_fifo_queue(moto.port, "orders"));
    let ok_id = wharf.write_id("orders", "k1", b"ok-1");
    let bad_id = wharf.write_id("orders", "poison", b"bad-1");

    let entry = only_dlq_entry(&wharf, None);
    assert_eq!(
        (&entry["message_id"], &entry["target"], &entry["key"]),
        (&json!(bad_id), &json!("default"), &json!("poison")),
        "{entry}"
    );
    assert_eq!(state_of(&wharf, &bad_id), json!("dead_lettered"));
    eventually(QUEUE_WAIT, "ok-1 delivered", || sink.accepted_bodies().contains("ok-1").then_some(()));
    eventually(Duration::from_secs(30), "lookup says delivered", || {
        (state_of(&wharf, &ok_id) == json!("delivered")).then_some(())
    });

    let r = wharf.delete(&Wharf::dlq_path(
        "orders",
        &format!("/{}", wharf_tests::path_segment(&bad_id)),
        Some("default"),
    ));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(wharf.dlq_ids("orders", None).is_empty());
    assert!(!sink.accepted_bodies().contains("bad-1"));
}
