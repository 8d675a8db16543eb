//! Per-key order across retries on every queue kind: while the target
//! refuses everything, and then while one key (`stuck`) is refused forever,
//! each key's messages arrive in write order and `stuck` holds back nobody
//! but itself, also when it gets more writes than the lane's
//! `max_in_flight`. On an SQS standard queue (no order promised) nobody is
//! starved and nothing is lost. On Kafka, the committed offset never passes
//! a message still retrying: a SIGKILL and a restart deliver it. Also: the
//! breaker of a dead target opens and closes again.

use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::{
    HttpSink, Wharf, eventually, kafka_queue, quick_retry, sqs_fifo_queue, sqs_standard_queue, start_moto,
    start_tansu,
};

const KEYS: [&str; 5] = ["alpha", "bravo", "charlie", "delta", "echo"];
const PER_KEY: usize = 20;

/// What a queue kind promises about the order of a key's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Write order (the log, Kafka, SQS FIFO).
    PerKey,
    /// None (an SQS standard queue may receive a key's messages out of
    /// write order; docs/backends.md): every message arrives, nothing more.
    Unordered,
}

/// Writes 5 keys × 20 messages `<key>:<i>` with a target that answers 503
/// to everything until each key has been refused at least once, and a key
/// `stuck` refused forever; checks the first arrivals per key (their order
/// where the queue kind promises one).
fn order_holds_across_retries_and_a_stuck_key(extra: &str, partitions: u32, timeout: Duration, order: Order) {
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
        let mut got = arrivals[key].clone();
        if order == Order::Unordered {
            got.sort_by_key(|b| b.split(':').nth(1).and_then(|i| i.parse::<usize>().ok()));
        }
        assert_eq!(got, expected, "first arrivals of key {key}");
    }
    assert!(!arrivals.contains_key("stuck"), "the sink never accepts `stuck`: {:?}", arrivals.get("stuck"));

    // `stuck` is still being retried (not dead-lettered, not dropped), and
    // only its first message (first received, on a standard queue) is
    // retrying: the others wait behind it.
    let (first, looked_up) =
        eventually(Duration::from_secs(30), "the first `stuck` message retrying", || {
            let retrying = |id: &String| {
                let l = wharf.lookup("orders", id);
                (l["state"] == json!("retrying")).then_some(l)
            };
            match order {
                Order::PerKey => retrying(&stuck_ids[0]).map(|l| (0, l)),
                Order::Unordered => {
                    stuck_ids.iter().enumerate().find_map(|(i, id)| retrying(id).map(|l| (i, l)))
                }
            }
        });
    assert_eq!(looked_up["targets"]["default"]["state"], json!("retrying"), "{looked_up}");
    for (i, id) in stuck_ids.iter().enumerate().filter(|(i, _)| *i != first) {
        let other = wharf.lookup("orders", id);
        assert_ne!(other["state"], json!("delivered"), "stuck message {i}: {other}");
    }
    assert!(wharf.target_delivery_sum("orders", "default", "retrying_keys") >= 1, "{}", wharf.status());
    // One `stuck` message is retried; the others wait behind it (on a
    // standard queue: the one received first).
    let retried: std::collections::HashSet<Vec<u8>> = sink
        .refused()
        .iter()
        .filter(|(_, r)| r.header("x-wharf-key") == Some("stuck"))
        .map(|(_, r)| r.body.clone())
        .collect();
    match order {
        Order::PerKey => {
            assert_eq!(retried, [b"stuck:0".to_vec()].into(), "a later `stuck` message was sent first")
        }
        Order::Unordered => assert_eq!(retried.len(), 1, "two `stuck` messages sent at once: {retried:?}"),
    }

    sink.set(|b| b.fail_keys.clear());
    let stuck = eventually(timeout, "every `stuck` message once it is let through", || {
        let got = sink.first_arrivals().remove("stuck").unwrap_or_default();
        (got.len() >= stuck_ids.len()).then_some(got)
    });
    let mut expected: Vec<String> = (0..PER_KEY).step_by(5).map(|i| format!("stuck:{i}")).collect();
    if order == Order::Unordered {
        expected.sort();
        let mut got = stuck.clone();
        got.sort();
        assert_eq!(got, expected, "`stuck` messages");
    } else {
        assert_eq!(stuck, expected, "`stuck` messages out of order");
    }
}

#[test]
fn embedded_log_keeps_per_key_order_across_retries_and_a_stuck_key() {
    order_holds_across_retries_and_a_stuck_key("", 2, Duration::from_secs(60), Order::PerKey);
}

#[test]
fn kafka_keeps_per_key_order_across_retries_and_a_stuck_key() {
    let tansu = start_tansu();
    order_holds_across_retries_and_a_stuck_key(
        &kafka_queue(tansu.port, "orders", 2),
        1,
        Duration::from_secs(120),
        Order::PerKey,
    );
}

#[test]
fn sqs_fifo_keeps_per_key_order_across_retries_and_a_stuck_key() {
    let moto = start_moto();
    order_holds_across_retries_and_a_stuck_key(
        &sqs_fifo_queue(moto.port, "orders"),
        1,
        Duration::from_secs(120),
        Order::PerKey,
    );
}

#[test]
fn sqs_standard_delivers_every_key_around_a_stuck_key_and_retries_it_alone() {
    let moto = start_moto();
    order_holds_across_retries_and_a_stuck_key(
        &sqs_standard_queue(moto.port, "orders"),
        1,
        Duration::from_secs(120),
        Order::Unordered,
    );
}

/// `max_in_flight = 16`, `batch_max = 4`: the `[namespaces.orders.delivery]`
/// table (before `quick_retry`'s tables).
const SMALL_WINDOW: &str = "[namespaces.orders.delivery]\nbatch_max = 4\nmax_in_flight = 16\n";
const STUCK_WRITES: usize = 60;

/// `stuck` is refused and gets 60 writes, first and then between the
/// others', with `max_in_flight = 16`; the 5 other keys' 20 messages each
/// still all arrive, in order. Once `stuck` is let through, all 60 arrive
/// in order. Returns the status of the lane while `stuck` was blocked.
fn a_stuck_key_with_more_writes_than_max_in_flight_starves_nobody(extra: &str, timeout: Duration) -> Value {
    let sink = HttpSink::start();
    sink.set(|b| b.fail_keys = vec!["stuck".into()]);
    let wharf = Wharf::start(&sink.namespace(
        "orders",
        1,
        &format!("{extra}{SMALL_WINDOW}{}", quick_retry("orders")),
    ));
    let mut stuck_ids = Vec::new();
    let mut write_stuck = |n: usize| {
        for _ in 0..n {
            let i = stuck_ids.len();
            stuck_ids.push(wharf.write_id("orders", "stuck", format!("stuck:{i}").as_bytes()));
        }
    };
    // Enough to fill the window twice before any other key is written.
    write_stuck(40);
    for i in 0..PER_KEY {
        for key in KEYS {
            wharf.write_id("orders", key, format!("{key}:{i}").as_bytes());
        }
        write_stuck(1);
    }
    assert_eq!(stuck_ids.len(), STUCK_WRITES);

    let arrivals = eventually(timeout, "all 100 messages of the healthy keys", || {
        let got = sink.first_arrivals();
        KEYS.iter().all(|k| got.get(*k).is_some_and(|v| v.len() >= PER_KEY)).then_some(got)
    });
    for key in KEYS {
        let expected: Vec<String> = (0..PER_KEY).map(|i| format!("{key}:{i}")).collect();
        assert_eq!(arrivals[key], expected, "first arrivals of key {key} out of order");
    }
    assert!(sink.accepted().iter().all(|r| r.header("x-wharf-key") != Some("stuck")), "`stuck` was accepted");
    // The last one waits behind the first (in the window or in the log).
    eventually(Duration::from_secs(30), "the last `stuck` message pending", || {
        let last = wharf.lookup("orders", &stuck_ids[STUCK_WRITES - 1]);
        (last["targets"]["default"]["state"] == json!("pending")).then_some(())
    });
    let status = wharf.target_partitions("orders", "default")[0].clone();

    sink.set(|b| b.fail_keys.clear());
    let stuck = eventually(timeout, "all 60 `stuck` messages once let through", || {
        let got = sink.first_arrivals().remove("stuck").unwrap_or_default();
        (got.len() >= STUCK_WRITES).then_some(got)
    });
    let expected: Vec<String> = (0..STUCK_WRITES).map(|i| format!("stuck:{i}")).collect();
    assert_eq!(stuck, expected, "`stuck` messages out of order");
    eventually(Duration::from_secs(30), "an empty window", || {
        let lane = &wharf.target_partitions("orders", "default")[0]["delivery"];
        (lane["window"] == json!(0) && lane["deferred"] == json!(0)).then_some(())
    });
    status
}

#[test]
fn embedded_log_a_stuck_key_with_more_writes_than_max_in_flight_starves_nobody() {
    let lane = a_stuck_key_with_more_writes_than_max_in_flight_starves_nobody("", Duration::from_secs(90));
    // Its followers stay in the log: the window holds at most its cap of them.
    let (window, deferred) = (&lane["delivery"]["window"], &lane["delivery"]["deferred"]);
    assert!(window.as_u64().is_some_and(|w| w <= 16), "{lane}");
    assert!(deferred.as_u64().is_some_and(|d| d > 0), "{lane}");
}

#[test]
fn kafka_a_stuck_key_with_more_writes_than_max_in_flight_starves_nobody() {
    let tansu = start_tansu();
    let lane = a_stuck_key_with_more_writes_than_max_in_flight_starves_nobody(
        &kafka_queue(tansu.port, "orders", 1),
        Duration::from_secs(120),
    );
    // Held with their offsets uncommitted, not deferred.
    assert_eq!(lane["delivery"]["deferred"], json!(0), "{lane}");
}

/// Kafka, one partition: `early` is refused while the messages written
/// after it are delivered (their offsets acked above it). The committed
/// offset stays at `early`: after a SIGKILL and a restart it is delivered.
#[test]
fn kafka_never_commits_past_a_message_still_retrying() {
    let tansu = start_tansu();
    let sink = HttpSink::start();
    sink.set(|b| b.fail_keys = vec!["early".into()]);
    let extra = format!("{}{}", kafka_queue(tansu.port, "orders", 1), quick_retry("orders"));
    let mut wharf = Wharf::start(&sink.namespace("orders", 1, &extra));
    wharf.write_id("orders", "before", b"before:0");
    let early = wharf.write_id("orders", "early", b"early:0");
    for i in 0..10 {
        wharf.write_id("orders", "later", format!("later:{i}").as_bytes());
    }
    eventually(Duration::from_secs(120), "the messages around `early`", || {
        let got = sink.first_arrivals();
        (got.get("later").is_some_and(|v| v.len() == 10) && got.contains_key("before")).then_some(())
    });
    eventually(Duration::from_secs(30), "`early` retrying", || {
        (wharf.lookup("orders", &early)["state"] == json!("retrying")).then_some(())
    });
    assert!(sink.accepted().iter().all(|r| r.body != b"early:0"), "`early` was accepted");

    wharf.kill();
    sink.set(|b| b.fail_keys.clear());
    wharf.restart();
    eventually(Duration::from_secs(180), "`early` delivered after the restart", || {
        sink.accepted().iter().any(|r| r.body == b"early:0").then_some(())
    });
    // Its offset was never committed, nor anything after it: those are
    // delivered again too (at least once), in order.
    let later: Vec<String> = sink
        .accepted()
        .iter()
        .filter(|r| r.header("x-wharf-key") == Some("later"))
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    let expected: Vec<String> = (0..10).map(|i| format!("later:{i}")).collect();
    assert_eq!(later[..10], expected[..], "before the restart");
    eventually(Duration::from_secs(60), "`later` delivered again after the restart", || {
        let n = sink.accepted().iter().filter(|r| r.header("x-wharf-key") == Some("later")).count();
        (n >= 20).then_some(())
    });
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
