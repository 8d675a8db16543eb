//! Kafka (tansu) and SQS FIFO (moto) namespaces have what the embedded log
//! has: a per-target DLQ in the delivering process (list, replay, delete,
//! purge, over HTTP and the CLI), message lookup by the id of the write ack,
//! `wait=visible`, delivery metrics labelled with the target, the breaker,
//! AIMD, retry and quarantine gauges, and a lane whose `backlog` is its
//! window. Transactions are refused with `400 transactions_unsupported`.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::{
    HttpSink, Wharf, eventually, kafka_queue, plugin, quick_retry, sqs_fifo_queue, start_moto, start_tansu,
    wharf_bin,
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

#[test]
fn an_sqs_fifo_namespace_replays_and_purges_its_dlq_and_answers_wait_visible() {
    let moto = start_moto();
    let sink = HttpSink::start();
    let wharf = start(&sink, &sqs_fifo_queue(moto.port, "orders"));

    let r = wharf.write_visible("orders", "k1", b"ok-1", 60_000);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!((&r.body["durable"], &r.body["visible"]), (&json!(true), &json!(true)), "{:?}", r.body);
    assert!(sink.accepted_bodies().contains("ok-1"), "visible before the target had it");
    let ok_id = r.body["message_id"].as_str().expect("message_id").to_string();
    assert_eq!(state_of(&wharf, &ok_id), json!("delivered"));

    // A rejected message, replayed once the target takes it: delivered.
    let bad_id = wharf.write_id("orders", "poison", b"bad-1");
    assert_eq!(only_dlq_entry(&wharf, None)["message_id"], json!(bad_id));
    assert_eq!(wharf.target_status("orders", "default")["dlq_size"], json!(1));
    sink.set(|b| b.reject_keys.clear());
    let r = wharf.dlq_replay("orders", Some("default"), &json!({"ids": [bad_id]}));
    assert_eq!((r.status, r.body["replayed"].as_array().map(Vec::len)), (200, Some(1)), "{:?}", r.body);
    eventually(QUEUE_WAIT, "the replayed message delivered", || {
        sink.accepted_bodies().contains("bad-1").then_some(())
    });
    assert!(wharf.dlq_ids("orders", None).is_empty());
    assert_eq!(wharf.target_status("orders", "default")["dlq_size"], json!(0));

    // Purge empties it, and what was purged is not delivered.
    sink.set(|b| b.reject_keys = vec!["poison".into()]);
    let bad_2 = wharf.write_id("orders", "poison", b"bad-2");
    assert_eq!(only_dlq_entry(&wharf, None)["message_id"], json!(bad_2));
    let r = wharf.delete(&Wharf::dlq_path("orders", "", Some("default")));
    assert_eq!((r.status, r.body["purged"].clone()), (200, json!(1)), "{:?}", r.body);
    let r = wharf.dlq("orders", None);
    assert_eq!((r.body["entries"].clone(), r.body["total"].clone()), (json!([]), json!(0)), "{:?}", r.body);
    assert!(!sink.accepted_bodies().contains("bad-2"));

    // A visible write after all that still waits for the target.
    let r = wharf.write_visible("orders", "k1", b"ok-2", 60_000);
    assert_eq!((r.status, r.body["visible"].clone()), (200, json!(true)), "{:?}", r.body);
    assert!(sink.accepted_bodies().contains("ok-2"));
}

/// `wharf <args> --server <wharf>` in text: exit code and stdout.
fn cli_text(wharf: &Wharf, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(wharf_bin())
        .args(args)
        .args(["--server", &wharf.url("")])
        .env_remove("WHARF_TOKEN")
        .env_remove("WHARF_URL")
        .output()
        .expect("run wharf");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_dlq_cli_lists_replays_and_purges_a_kafka_namespace() {
    let tansu = start_tansu();
    let sink = HttpSink::start();
    let wharf = start(&sink, &kafka_queue(tansu.port, "orders", 2));
    let bad_id = wharf.write_id("orders", "poison", b"bad-1");
    assert!(bad_id.contains('/'), "a Kafka id (topic/partition@offset): {bad_id}");
    only_dlq_entry(&wharf, None);

    let (code, v) = wharf.cli_json(&["dlq", "list", "orders"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!((&v["total"], &v["target"]), (&json!(1), &json!("default")), "{v}");
    assert_eq!((&v["entries"][0]["message_id"], &v["entries"][0]["key"]), (&json!(bad_id), &json!("poison")));
    let (code, text) = cli_text(&wharf, &["dlq", "list", "orders", "--target", "default"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("1 entries in the dlq of orders (target default)"), "{text}");
    assert!(text.contains(&bad_id), "{text}");

    // Replay by id (an id with a `/`): delivered once the target takes it.
    sink.set(|b| b.reject_keys.clear());
    let (code, v) = wharf.cli_json(&["dlq", "replay", "orders", &bad_id]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        (v["replayed"].as_array().map(Vec::len), v["not_found"].as_array().map(Vec::len)),
        (Some(1), Some(0)),
        "{v}"
    );
    eventually(QUEUE_WAIT, "the replayed message delivered", || {
        sink.accepted_bodies().contains("bad-1").then_some(())
    });
    let (_, v) = wharf.cli_json(&["dlq", "list", "orders"]);
    assert_eq!((&v["total"], &v["entries"]), (&json!(0), &json!([])), "{v}");

    // Purge all, then purge one by id.
    sink.set(|b| b.reject_keys = vec!["poison".into()]);
    let bad_2 = wharf.write_id("orders", "poison", b"bad-2");
    only_dlq_entry(&wharf, None);
    let (code, text) = cli_text(&wharf, &["dlq", "purge", "orders"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("purged 1 entry from the dlq of orders (target default)"), "{text}");
    assert!(wharf.dlq_ids("orders", None).is_empty());
    let bad_3 = wharf.write_id("orders", "poison", b"bad-3");
    assert_eq!(only_dlq_entry(&wharf, None)["message_id"], json!(bad_3));
    let (code, v) = wharf.cli_json(&["dlq", "purge", "orders", "--target", "default", &bad_3]);
    assert_eq!((code, &v["purged"]), (Some(0), &json!(1)), "{v}");
    assert!(wharf.dlq_ids("orders", None).is_empty());
    let accepted = sink.accepted_bodies();
    assert!(!accepted.contains("bad-2") && !accepted.contains("bad-3"), "a purged message was delivered");
    assert_ne!(bad_2, bad_3);
}

#[test]
fn transactions_are_refused_on_kafka_and_sqs_namespaces_and_writes_still_work() {
    let (tansu, moto) = (start_tansu(), start_moto());
    let sink = HttpSink::start();
    let wharf = Wharf::start(&format!(
        "{}{}",
        sink.namespace("kq", 1, &kafka_queue(tansu.port, "kq", 1)),
        sink.namespace("sq", 1, &sqs_fifo_queue(moto.port, "sq")),
    ));
    let id = "0123456789abcdef0123456789abcdef";
    for (ns, kind) in [("kq", "kafka"), ("sq", "sqs")] {
        let base = format!("/v1/namespaces/{ns}/transactions");
        let calls = [
            ("begin", wharf.post(&base, &json!({"key": "k"}))),
            ("chunk", wharf.put(&format!("{base}/{id}/chunks/0"), &json!({"payload": "aGk="}))),
            ("commit", wharf.post(&format!("{base}/{id}/commit"), &json!({"chunks": 1}))),
            ("abort", wharf.delete(&format!("{base}/{id}"))),
        ];
        for (what, r) in calls {
            assert_eq!(
                (r.status, &r.body["error"]["code"]),
                (400, &json!("transactions_unsupported")),
                "{ns} {what}: {:?}",
                r.body
            );
            let msg = r.body["error"]["message"].as_str().unwrap_or_default();
            assert!(msg.contains(ns) && msg.contains(kind), "{ns} {what}: {msg}");
        }
        wharf.write_id(ns, "k", format!("after-{ns}").as_bytes());
    }
    eventually(QUEUE_WAIT, "both writes delivered", || {
        let got = sink.accepted_bodies();
        (got.contains("after-kq") && got.contains("after-sq")).then_some(())
    });
}

/// The lane gauges of `/metrics` for `ns`'s target `default`, lane 0.
fn lane_metric(wharf: &Wharf, ns: &str, name: &str) -> Option<f64> {
    wharf.metric(name, &[("namespace", ns), ("target", "default"), ("partition", "0")])
}

/// `targets.default.partitions[0]` of `ns` in `/v1/status`.
fn lane_status(wharf: &Wharf, ns: &str) -> Value {
    wharf.target_partitions(ns, "default").first().cloned().unwrap_or(Value::Null)
}

/// A target-wide outage on a queue namespace, then recovery: the breaker
/// opens and closes, AIMD halves the batch to 1 and grows it again, every
/// key counts as retrying, the lane's `backlog` is its window and `lag_ms`
/// the age of its oldest message; `/metrics` agrees with `/v1/status`.
/// A second namespace on the same queue whose plugin traps on everything is
/// quarantined, and says so in `wharf_plugin_quarantined`.
fn outage_and_quarantine_show_in_status_and_metrics(queue: impl Fn(&str) -> String) {
    const KEYS: u64 = 5;
    let sink = HttpSink::start();
    sink.set(|b| b.fail_all = Some(503));
    let bad = format!(
        r#"
[namespaces.bad]
partitions = 1
{}
[namespaces.bad.retry]
max_attempts = 1000
initial_backoff_ms = 10
max_backoff_ms = 50
[namespaces.bad.target]
plugin = "{}"
call_timeout_ms = 300
quarantine_after = 3
poison_after = 100
config = {{ mode = "panic" }}
"#,
        queue("bad"),
        plugin("fixture-misbehave").display()
    );
    let wharf = Wharf::start(&format!(
        "{}{bad}",
        sink.namespace("orders", 1, &format!("{}{}", queue("orders"), quick_retry("orders")))
    ));
    // Before any traffic: the lane's series are there, at rest.
    eventually(Duration::from_secs(30), "breaker closed, batch limit at batch_max, no retries", || {
        let m = |n| lane_metric(&wharf, "orders", n);
        let at_rest =
            (m("wharf_breaker_state")?, m("wharf_batch_limit_messages")?, m("wharf_retrying_keys")?);
        (at_rest == (0.0, 100.0, 0.0)).then_some(())
    });
    let labels = [("namespace", "orders"), ("target", "default")];
    assert_eq!(wharf.metric("wharf_plugin_quarantined", &labels), Some(0.0));
    assert!(wharf.partitions("orders").is_empty(), "no log partitions on a queue");

    for k in 0..KEYS {
        wharf.write_id("orders", &format!("k{k}"), format!("m{k}").as_bytes());
    }
    for k in ["k1", "k2", "k3"] {
        wharf.write_id("bad", k, b"x");
    }
    // Every message waits in the window: the backlog is the window.
    let lane = eventually(QUEUE_WAIT, "every message in the lane's window, every key retrying", || {
        let l = lane_status(&wharf, "orders");
        (l["backlog"] == json!(KEYS)
            && l["delivery"]["window"] == json!(KEYS)
            && l["delivery"]["retrying_keys"] == json!(KEYS))
        .then_some(l)
    });
    assert_eq!(lane["partition"], json!(0), "{lane}");
    let first_lag = lane["lag_ms"].as_u64().expect("lag_ms");
    // The breaker opens and AIMD goes down to one message per call.
    eventually(Duration::from_secs(30), "the breaker open and the batch limit at 1", || {
        let m = |n| lane_metric(&wharf, "orders", n);
        (m("wharf_breaker_state")? >= 1.0
            && m("wharf_batch_limit_messages")? == 1.0
            && m("wharf_retrying_keys")? == KEYS as f64
            && m("wharf_target_backlog_messages")? == KEYS as f64
            && m("wharf_target_window_messages")? == KEYS as f64)
            .then_some(())
    });
    let l = lane_status(&wharf, "orders");
    let breaker = l["delivery"]["breaker"]["state"].as_str().unwrap_or_default().to_string();
    assert!(breaker == "open" || breaker == "half_open", "{l}");
    assert_eq!(l["delivery"]["batch_limit"], json!(1), "{l}");
    // The lag is the age of the oldest waiting message: it grows.
    eventually(Duration::from_secs(30), "lag_ms to grow", || {
        let lag = lane_status(&wharf, "orders")["lag_ms"].as_u64()?;
        (lag >= first_lag + 500).then_some(())
    });
    eventually(Duration::from_secs(30), "wharf_backlog_age_seconds", || {
        (lane_metric(&wharf, "orders", "wharf_backlog_age_seconds")? >= 0.5).then_some(())
    });

    // The trapping plugin is quarantined, and the gauge says so.
    let bad_labels = [("namespace", "bad"), ("target", "default")];
    eventually(Duration::from_secs(60), "the bad plugin quarantined", || {
        (wharf.metric("wharf_plugin_quarantined", &bad_labels)? == 1.0).then_some(())
    });
    assert_eq!(wharf.target_status("bad", "default")["plugin"]["state"], json!("quarantined"));
    assert_eq!(wharf.metric("wharf_plugin_quarantined", &labels), Some(0.0), "the healthy one is not");

    // Recovery: everything delivered, the breaker closed, nothing waiting.
    sink.set(|b| b.fail_all = None);
    eventually(QUEUE_WAIT, "every message delivered", || {
        (sink.accepted_bodies().len() == KEYS as usize).then_some(())
    });
    let l = eventually(Duration::from_secs(30), "an empty window", || {
        let l = lane_status(&wharf, "orders");
        (l["backlog"] == json!(0) && l["delivery"]["window"] == json!(0)).then_some(l)
    });
    assert_eq!((&l["lag_ms"], &l["delivery"]["retrying_keys"]), (&json!(0), &json!(0)), "{l}");
    assert_eq!(l["delivery"]["breaker"]["state"], json!("closed"), "{l}");
    eventually(Duration::from_secs(30), "the gauges back at rest, the batch growing", || {
        let m = |n| lane_metric(&wharf, "orders", n);
        (m("wharf_breaker_state")? == 0.0
            && m("wharf_retrying_keys")? == 0.0
            && m("wharf_target_backlog_messages")? == 0.0
            && m("wharf_backlog_age_seconds")? == 0.0
            && m("wharf_batch_limit_messages")? > 1.0)
            .then_some(())
    });
    assert!(wharf.metric("wharf_delivered_total", &labels).is_some_and(|n| n >= KEYS as f64));
}

#[test]
fn an_sqs_fifo_namespace_shows_its_breaker_aimd_retries_backlog_lag_and_quarantine() {
    let moto = start_moto();
    outage_and_quarantine_show_in_status_and_metrics(|q| sqs_fifo_queue(moto.port, q));
}

#[test]
fn a_kafka_namespace_shows_its_breaker_aimd_retries_backlog_lag_and_quarantine() {
    let tansu = start_tansu();
    outage_and_quarantine_show_in_status_and_metrics(|t| kafka_queue(tansu.port, t, 2));
}
