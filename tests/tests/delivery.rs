//! The delivery engine against a real HTTP target: DLQ replay, delays,
//! admission control, slow targets, and "where is my data".
//!
//! Writes, lookups and DLQ calls go through `wharf-client`; the checks of a
//! write's status and error body (`429 backlog_full`, `400 invalid_delay`)
//! send raw requests, since the client would retry the first and hide both.

use std::time::{Duration, Instant};

use serde_json::json;
use wharf_client::{Client, DeliveryState, Message};
use wharf_tests::{HttpSink, Wharf, eventually};

fn namespace(sink: &HttpSink, extra: &str) -> String {
    sink.namespace("hooks", 2, extra)
}

fn client(wharf: &Wharf) -> Client {
    Client::new(wharf.url(""))
}

/// Writes one keyed message; its id.
fn write(c: &Client, key: &str, payload: &[u8]) -> String {
    c.write("hooks", Message::new(payload).with_key(key))
        .unwrap_or_else(|e| panic!("write {key}: {e}"))
        .message_id
}

fn dlq_ids(c: &Client) -> Vec<String> {
    c.dlq_list("hooks", None)
        .map(|p| p.entries.into_iter().map(|e| e.message_id).collect())
        .unwrap_or_default()
}

#[test]
fn a_dead_letter_is_replayed_once_the_target_accepts_it_and_replays_are_capped() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&namespace(&sink, "[namespaces.hooks.dlq]\nmax_replays = 1\n"));
    let c = client(&wharf);
    sink.set(|b| b.reject_keys = vec!["late".into()]);
    let id = write(&c, "late", b"payload-1");
    eventually(Duration::from_secs(30), "the dlq entry", || (dlq_ids(&c) == vec![id.clone()]).then_some(()));

    // Still rejected: the replay dead-letters it again, with replays = 1.
    let r = c.dlq_replay("hooks", None, None, None).expect("replay");
    let new_id = r.replayed.first().expect("replayed").new_message_id.clone();
    assert_ne!(new_id, id);
    eventually(Duration::from_secs(30), "the replayed message back in the dlq", || {
        (dlq_ids(&c) == vec![new_id.clone()]).then_some(())
    });
    let entry = c.dlq_list("hooks", None).expect("dlq").entries.remove(0);
    assert_eq!(entry.replays, 1);

    // The cap: a second replay is refused with a reason, the entry stays.
    let r = c.dlq_replay("hooks", None, Some(vec![new_id.clone()]), None).expect("replay");
    assert!(r.replayed.is_empty(), "{r:?}");
    assert!(r.skipped.first().expect("skipped").reason.contains("max_replays"), "{r:?}");
    assert_eq!(dlq_ids(&c), vec![new_id.clone()]);

    // Purge empties it.
    assert_eq!(c.dlq_purge("hooks", None).expect("purge"), 1);
    assert!(dlq_ids(&c).is_empty());
    let audit = std::fs::read_to_string(wharf.data_dir().join("audit.log")).expect("audit.log");
    let actions: Vec<String> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
        .map(|v| format!("{} {}", v["action"].as_str().unwrap_or(""), v["outcome"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(actions, ["dlq.replay ok", "dlq.replay ok", "dlq.purge ok"]);
    assert!(sink.accepted().is_empty());
}

#[test]
fn a_replay_delivers_when_the_target_has_recovered() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&namespace(&sink, ""));
    let c = client(&wharf);
    sink.set(|b| b.reject_keys = vec!["k".into()]);
    let id = write(&c, "k", b"v");
    eventually(Duration::from_secs(30), "the dlq entry", || (dlq_ids(&c) == vec![id.clone()]).then_some(()));
    sink.set(|b| b.reject_keys.clear());
    let r = c.dlq_replay("hooks", None, Some(vec![id]), Some(10.0)).expect("replay");
    assert_eq!(r.replayed.len(), 1, "{r:?}");
    let got =
        eventually(Duration::from_secs(30), "the replayed delivery", || sink.accepted().first().cloned());
    assert_eq!(got.body, b"v");
    assert!(dlq_ids(&c).is_empty());
}

#[test]
fn a_delayed_message_waits_survives_a_restart_and_does_not_block_others() {
    let sink = HttpSink::start();
    let mut wharf = Wharf::start(&namespace(&sink, ""));
    let c = client(&wharf);
    let written = Instant::now();
    let later = Message::new("delayed").with_key("later").with_delay(Duration::from_millis(3000));
    let id = c.write("hooks", later).expect("delayed write").message_id;
    eventually(Duration::from_secs(5), "state delayed", || {
        (c.message("hooks", &id).expect("lookup").state == DeliveryState::Delayed).then_some(())
    });
    write(&c, "now", b"immediate");
    eventually(Duration::from_secs(10), "the undelayed message", || {
        (sink.accepted().len() == 1).then_some(())
    });
    assert_eq!(sink.accepted()[0].body, b"immediate");
    wharf.kill();
    wharf.restart();
    let got = eventually(Duration::from_secs(30), "the delayed message", || {
        sink.accepted().into_iter().find(|r| r.body == b"delayed")
    });
    assert!(written.elapsed() >= Duration::from_millis(3000), "delivered early");
    assert_eq!(got.header("x-wharf-key"), Some("later"));

    let too_far = wharf.post(
        "/v1/namespaces/hooks/messages",
        &json!({"payload": "eA==", "delay_ms": 10_u64 * 365 * 24 * 3600 * 1000}),
    );
    assert_eq!(too_far.status, 400);
    assert_eq!(too_far.body["error"]["code"], json!("invalid_delay"));
}

#[test]
fn writes_get_429_backlog_full_past_the_backlog_limit_and_nothing_is_dropped() {
    let sink = HttpSink::start();
    sink.set(|b| b.fail_all = Some(503));
    let wharf = Wharf::start(&namespace(
        &sink,
        "[namespaces.hooks.limits]\nmax_backlog_messages = 5\n[namespaces.hooks.retry]\nmax_attempts = 1000\ninitial_backoff_ms = 10\nmax_backoff_ms = 50\n",
    ));
    for i in 0..5 {
        assert_eq!(wharf.write("hooks", Some(&format!("k{i}")), b"x").status, 200);
    }
    let r = wharf.write("hooks", Some("k6"), b"x");
    assert_eq!(r.status, 429, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], json!("backlog_full"));
    sink.set(|b| b.fail_all = None);
    eventually(Duration::from_secs(60), "the backlog to drain", || {
        (sink.accepted().len() == 5).then_some(())
    });
    eventually(Duration::from_secs(10), "writes accepted again", || {
        (wharf.write("hooks", Some("k7"), b"x").status == 200).then_some(())
    });
}

#[test]
fn a_slow_target_shrinks_the_batch_and_still_gets_everything() {
    let sink = HttpSink::start();
    sink.set(|b| b.delay = Duration::from_millis(60));
    let wharf = Wharf::start(&namespace(&sink, "[namespaces.hooks.delivery]\nslow_call_ms = 100\n"));
    let c = client(&wharf);
    for i in 0..40 {
        write(&c, &format!("s{i}"), b"x");
    }
    eventually(Duration::from_secs(60), "all 40", || (sink.accepted().len() >= 40).then_some(()));
    let limits: Vec<u64> = wharf.status()["namespaces"]["hooks"]["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["delivery"]["batch_limit"].as_u64().expect("batch_limit"))
        .collect();
    assert!(limits.iter().any(|l| *l < 100), "batch size never adapted: {limits:?}");
}

#[test]
fn the_breaker_opens_on_a_dead_target_and_closes_after_a_probe() {
    let sink = HttpSink::start();
    sink.set(|b| b.fail_all = Some(500));
    let wharf = Wharf::start(&namespace(
        &sink,
        "[namespaces.hooks.breaker]\nfailures = 2\ncooldown_ms = 500\n[namespaces.hooks.retry]\nmax_attempts = 1000\ninitial_backoff_ms = 5\nmax_backoff_ms = 20\n",
    ));
    write(&client(&wharf), "a", b"x");
    eventually(Duration::from_secs(30), "an open breaker", || {
        let st = wharf.status();
        st["namespaces"]["hooks"]["partitions"]
            .as_array()?
            .iter()
            .any(|p| p["delivery"]["breaker"]["state"] == json!("open"))
            .then_some(())
    });
    sink.set(|b| b.fail_all = None);
    eventually(Duration::from_secs(30), "delivery after the probe", || {
        (sink.accepted().len() == 1).then_some(())
    });
    eventually(Duration::from_secs(10), "a closed breaker", || {
        let st = wharf.status();
        st["namespaces"]["hooks"]["partitions"]
            .as_array()?
            .iter()
            .all(|p| p["delivery"]["breaker"]["state"] == json!("closed"))
            .then_some(())
    });
}

#[test]
fn more_delayed_messages_than_the_window_holds_do_not_block_a_later_message() {
    let sink = HttpSink::start();
    let wharf =
        Wharf::start(&namespace(&sink, "[namespaces.hooks.delivery]\nbatch_max = 5\nmax_in_flight = 5\n"));
    let c = client(&wharf);
    for i in 0..12 {
        let later = Message::new("later").with_key(format!("later-{i}")).with_delay(Duration::from_secs(600));
        c.write("hooks", later).expect("delayed write");
    }
    write(&c, "now", b"now");
    let got =
        eventually(Duration::from_secs(20), "the undelayed message", || sink.accepted().first().cloned());
    assert_eq!(got.body, b"now");
}

#[test]
fn the_dlq_cli_lists_and_replays() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&namespace(&sink, ""));
    let c = client(&wharf);
    sink.set(|b| b.reject_keys = vec!["a".into(), "b".into()]);
    write(&c, "a", b"first");
    write(&c, "b", b"second");
    eventually(Duration::from_secs(30), "two dlq entries", || (dlq_ids(&c).len() == 2).then_some(()));
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(wharf_tests::wharf_bin())
            .args(args)
            .args(["--server", &wharf.url("")])
            .env_remove("RUST_LOG")
            .output()
            .expect("run wharf");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (listed, _) = cli(&["dlq", "list", "hooks"]);
    assert!(listed.contains("2 entries") && listed.contains("key=a"), "{listed}");
    sink.set(|b| b.reject_keys.clear());
    // Progress lines appear only for work over about a second: a replay of
    // two entries prints its result and nothing on stderr.
    let (out, err) = cli(&["dlq", "replay", "hooks"]);
    assert!(out.contains("replayed 2"), "{out}");
    assert_eq!(err, "", "a fast replay shows no progress");
    eventually(Duration::from_secs(30), "both replayed messages delivered", || {
        (sink.accepted().len() == 2).then_some(())
    });
}

/// `wharf_plugin_instances{namespace="hooks",...}` summed over targets.
fn instances_held(wharf: &Wharf) -> u64 {
    wharf
        .metrics()
        .lines()
        .filter(|l| l.starts_with("wharf_plugin_instances{") && l.contains("namespace=\"hooks\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn an_idle_lane_drops_its_plugin_instance_and_the_next_batch_makes_a_new_one() {
    let sink = HttpSink::start();
    // A slow target keeps the call (and so the instance) around long
    // enough to be seen.
    sink.set(|b| b.delay = Duration::from_secs(3));
    let wharf = Wharf::start(&namespace(&sink, "[namespaces.hooks.delivery]\ninstance_idle_ms = 300\n"));
    let c = client(&wharf);
    write(&c, "a", b"first");
    eventually(Duration::from_secs(30), "an instance held during the call", || {
        (instances_held(&wharf) == 1).then_some(())
    });
    eventually(Duration::from_secs(30), "the first delivery", || (!sink.accepted().is_empty()).then_some(()));
    sink.set(|b| b.delay = Duration::ZERO);
    eventually(Duration::from_secs(30), "the idle instance dropped", || {
        (instances_held(&wharf) == 0).then_some(())
    });
    write(&c, "a", b"second");
    eventually(Duration::from_secs(30), "the second delivery", || (sink.accepted().len() >= 2).then_some(()));
    eventually(Duration::from_secs(30), "dropped again", || (instances_held(&wharf) == 0).then_some(()));
}

/// A call borrows a message's id, payload, headers and idempotency key
/// from the window (`engine/lane.rs`, `lend`): after the call they must be
/// back, so a retry sends every field again and a rejected message keeps
/// them in the DLQ.
#[test]
fn a_retried_or_dead_lettered_message_keeps_every_field_after_its_call() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&namespace(
        &sink,
        "[namespaces.hooks.retry]\nmax_attempts = 100\ninitial_backoff_ms = 10\nmax_backoff_ms = 50\n",
    ));
    let c = client(&wharf);
    sink.set(|b| {
        b.fail_keys = vec!["again".into()];
        b.reject_keys = vec!["bad".into()];
    });
    let message = |key: &str| {
        Message::new(format!("body-of-{key}").into_bytes())
            .with_key(key)
            .with_idempotency_key(format!("idem-{key}"))
            .with_header("x-trace", format!("trace-{key}"))
    };
    let again = c.write("hooks", message("again")).expect("write again").message_id;
    let bad = c.write("hooks", message("bad")).expect("write bad").message_id;

    let second = eventually(Duration::from_secs(30), "a second attempt of `again`", || {
        sink.refused().into_iter().map(|(_, r)| r).find(|r| r.header("x-wharf-attempt") == Some("2"))
    });
    sink.set(|b| b.fail_keys.clear());
    let delivered = eventually(Duration::from_secs(30), "`again` delivered", || {
        sink.accepted().into_iter().find(|r| r.header("x-wharf-key") == Some("again"))
    });
    for r in [&second, &delivered] {
        assert_eq!(r.body, b"body-of-again");
        assert_eq!(r.header("x-wharf-message-id"), Some(again.as_str()));
        assert_eq!(r.header("idempotency-key"), Some("idem-again"));
        assert_eq!(r.header("x-trace"), Some("trace-again"));
    }

    let entry = eventually(Duration::from_secs(30), "`bad` in the DLQ", || {
        c.dlq_list("hooks", None).ok()?.entries.into_iter().find(|e| e.message_id == bad)
    });
    assert_eq!(entry.payload, b"body-of-bad");
    assert_eq!(entry.idempotency_key.as_deref(), Some("idem-bad"));
    assert_eq!(entry.headers.get("x-trace").map(String::as_str), Some("trace-bad"));
}
