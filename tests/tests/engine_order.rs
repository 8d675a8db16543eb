//! Per-key order across retries on every queue kind: while the target
//! refuses everything, and then while one key (`stuck`) is refused forever,
//! each key's messages arrive in write order and `stuck` holds back nobody
//! but itself. Also: the breaker of a dead target opens and closes again.

use std::time::Duration;

use serde_json::json;
use wharf_tests::{
    HttpSink, Wharf, eventually, kafka_queue, quick_retry, sqs_fifo_queue, start_moto, start_tansu,
};

const KEYS: [&str; 5] = ["alpha", "bravo", "charlie", "delta", "echo"];
const PER_KEY: usize = 20;

/// Writes 5 keys × 20 messages `<key>:<i>` with a target that answers 503
/// to everything until each key has been refused at least once, and a key
/// `stuck` refused forever; checks the order of first arrivals per key.
fn order_holds_across_retries_and_a_stuck_key(extra: &str, partitions: u32, timeout: Duration) {
    let sink = HttpSink::start();
    sink.set(|b| {
        b.fail_all = Some(503);
        b.fail_keys = vec!["stuck".into()];
    });
    let wharf =
        Wharf::start(&sink.namespace("orders", partitions, &format!("{extra}{}", quick_retry("orders"))));

    let mut stuck_ids = Vec::new();
    for i in 0..PER_KEY {
        if i % 5 == 0 {
            stuck_ids.push(wharf.write_id("orders", "stuck", format!("stuck:{i}").as_bytes()));
        }
        for key in KEYS {
            wharf.write_id("orders", key, format!("{key}:{i}").as_bytes());
        }
    }

    // Every key goes through at least one retry before the target recovers.
    eventually(timeout, "a 503 for every key", || {
        let refused = sink.refused();
        KEYS.iter().all(|k| refused.iter().any(|(_, r)| r.header("x-wharf-key") == Some(k))).then_some(())
    });
    eventually(Duration::from_secs(30), "retries counted in the target's status", || {
        (wharf.target_delivery_sum("orders", "default", "retries_total") > 0).then_some(())
    });
    sink.set(|b| b.fail_all = None);

    let arrivals = eventually(timeout, "all 100 messages of the healthy keys", || {
        let got = sink.first_arrivals();
        KEYS.iter().all(|k| got.get(*k).is_some_and(|v| v.len() >= PER_KEY)).then_some(got)
    });
    for key in KEYS {
        let expected: Vec<String> = (0..PER_KEY).map(|i| format!("{key}:{i}")).collect();
        assert_eq!(arrivals[key], expected, "first arrivals of key {key} out of order");
    }
    assert!(!arrivals.contains_key("stuck"), "the sink never accepts `stuck`: {:?}", arrivals.get("stuck"));

    // `stuck` is still being retried (not dead-lettered, not dropped), and
    // only its first message is retrying: the others wait behind it.
    let looked_up = eventually(Duration::from_secs(30), "the first `stuck` message retrying", || {
        let l = wharf.lookup("orders", &stuck_ids[0]);
        (l["state"] == json!("retrying")).then_some(l)
    });
    assert_eq!(looked_up["targets"]["default"]["state"], json!("retrying"), "{looked_up}");
    let later = wharf.lookup("orders", &stuck_ids[1]);
    assert_ne!(later["state"], json!("delivered"), "{later}");
    assert!(wharf.target_delivery_sum("orders", "default", "retrying_keys") >= 1, "{}", wharf.status());
    assert!(
        sink.refused()
            .iter()
            .filter(|(_, r)| r.header("x-wharf-key") == Some("stuck"))
            .all(|(_, r)| r.body == b"stuck:0"),
        "a later `stuck` message was sent before `stuck:0` was delivered"
    );
}

#[test]
fn embedded_log_keeps_per_key_order_across_retries_and_a_stuck_key() {
    order_holds_across_retries_and_a_stuck_key("", 2, Duration::from_secs(60));
}

#[test]
fn kafka_keeps_per_key_order_across_retries_and_a_stuck_key() {
    let tansu = start_tansu();
    order_holds_across_retries_and_a_stuck_key(
        &kafka_queue(tansu.port, "orders", 2),
        1,
        Duration::from_secs(120),
    );
}

#[test]
fn sqs_fifo_keeps_per_key_order_across_retries_and_a_stuck_key() {
    let moto = start_moto();
    order_holds_across_retries_and_a_stuck_key(
        &sqs_fifo_queue(moto.port, "orders"),
        1,
        Duration::from_secs(120),
    );
}

#[test]
fn the_breaker_of_a_dead_target_opens_and_closes_after_recovery() {
    let sink = HttpSink::start();
    sink.set(|b| b.fail_all = Some(503));
    let wharf = Wharf::start(&sink.namespace("orders", 2, &quick_retry("orders")));
    for i in 0..4 {
        wharf.write_id("orders", &format!("k{i}"), format!("m{i}").as_bytes());
    }
    eventually(Duration::from_secs(30), "an open breaker", || {
        wharf.breaker_states("orders", "default").iter().any(|s| s == "open").then_some(())
    });
    sink.set(|b| b.fail_all = None);
    eventually(Duration::from_secs(30), "all 4 delivered after the probe", || {
        (sink.accepted_bodies().len() == 4).then_some(())
    });
    eventually(Duration::from_secs(30), "closed breakers", || {
        let states = wharf.breaker_states("orders", "default");
        (states.len() == 2 && states.iter().all(|s| s == "closed")).then_some(())
    });
}
