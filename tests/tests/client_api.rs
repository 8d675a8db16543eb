//! The client API: batches, idempotency across restarts, wait-for-visible,
//! bearer-token auth.

use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::{HttpSink, Wharf, b64, eventually, plugin};

fn namespaces(sink: &HttpSink, extra: &str) -> String {
    sink.namespace("hooks", 2, extra)
}

#[test]
fn a_batch_acknowledges_each_message_on_its_own_and_keeps_key_order() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&namespaces(&sink, ""));
    let mut messages: Vec<Value> = (0..20)
        .map(|i| json!({"key": format!("k{}", i % 3), "payload": b64(format!("m{i}").as_bytes())}))
        .collect();
    messages.insert(7, json!({"key": "k1", "payload": "not base64!"}));
    let r = wharf.post("/v1/namespaces/hooks/messages/batch", &json!({"messages": messages}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let results = r.body["results"].as_array().expect("results");
    assert_eq!(results.len(), 21);
    assert_eq!(results[7]["error"]["code"], json!("invalid_base64"));
    assert_eq!(results.iter().filter(|r| r["durable"] == json!(true)).count(), 20);
    eventually(Duration::from_secs(30), "20 deliveries", || (sink.accepted().len() == 20).then_some(()));
    for key in ["k0", "k1", "k2"] {
        let got: Vec<usize> = sink
            .accepted()
            .iter()
            .filter(|r| r.header("x-wharf-key") == Some(key))
            .map(|r| String::from_utf8_lossy(&r.body)[1..].parse().expect("index"))
            .collect();
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{key} out of order: {got:?}");
    }
    let too_big = wharf.post("/v1/namespaces/hooks/messages/batch", &json!({"messages": []}));
    assert_eq!(too_big.status, 413);
    assert_eq!(too_big.body["error"]["code"], json!("batch_too_large"));
}

#[test]
fn a_repeated_idempotency_key_returns_the_original_id_and_writes_nothing_even_after_a_restart() {
    let sink = HttpSink::start();
    let mut wharf = Wharf::start(&namespaces(&sink, ""));
    let body = json!({"key": "order-9", "payload": b64(b"charge"), "idempotency_key": "req-1"});
    let first = wharf.post("/v1/namespaces/hooks/messages", &body);
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["duplicate"], json!(false));
    let again = wharf.post("/v1/namespaces/hooks/messages", &body);
    assert_eq!(again.body["duplicate"], json!(true));
    assert_eq!(again.body["message_id"], first.body["message_id"]);
    // In one batch, too.
    let batch = wharf.post(
        "/v1/namespaces/hooks/messages/batch",
        &json!({"messages": [
            {"payload": b64(b"a"), "idempotency_key": "req-2"},
            {"payload": b64(b"a"), "idempotency_key": "req-2"},
        ]}),
    );
    let res = batch.body["results"].as_array().expect("results").clone();
    assert_eq!(res[1]["duplicate"], json!(true));
    assert_eq!(res[1]["message_id"], res[0]["message_id"]);

    wharf.kill();
    wharf.restart();
    let after = wharf.post("/v1/namespaces/hooks/messages", &body);
    assert_eq!(after.body["duplicate"], json!(true), "{:?}", after.body);
    assert_eq!(after.body["message_id"], first.body["message_id"]);
    eventually(Duration::from_secs(30), "two deliveries", || (sink.accepted().len() >= 2).then_some(()));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(messages_in(&wharf), 2, "a duplicate was written");
}

/// Messages in every partition (the heads' sum).
fn messages_in(wharf: &Wharf) -> u64 {
    wharf.heads("hooks").iter().sum()
}

/// The heads of the idempotency window's covered mark, summed (`None`
/// without a mark).
fn covered_sum(wharf: &Wharf) -> Option<u64> {
    let text = std::fs::read(wharf.data_dir().join("hooks/idempotency/keys-covered")).ok()?;
    let mark: Value = serde_json::from_slice(&text).expect("the mark is JSON");
    Some(mark["heads"].as_array().expect("heads").iter().map(|h| h.as_u64().expect("head")).sum())
}

/// What the last start logged about its read of the logs for keys.
fn last_key_read(wharf: &Wharf) -> String {
    let log = wharf.log();
    log.lines().rfind(|l| l.contains("read for unrecorded keys")).unwrap_or_default().to_string()
}

#[test]
fn a_start_reads_the_log_for_unrecorded_keys_only_from_the_covered_mark_and_still_finds_them() {
    let sink = HttpSink::start();
    let mut wharf = Wharf::start(&namespaces(&sink, ""));
    let keyed = |key: &str| json!({"key": "order", "payload": b64(key.as_bytes()), "idempotency_key": key});
    let first = wharf.post("/v1/namespaces/hooks/messages", &keyed("req-a"));
    assert_eq!(first.status, 200, "{:?}", first.body);
    wharf.terminate();
    assert_eq!(wharf.wait_exit(Duration::from_secs(30)), Some(0), "{}", wharf.log());
    assert_eq!(covered_sum(&wharf), Some(1), "a clean stop marks the heads\n{}", wharf.log());

    // A start after a clean stop reads nothing. While it runs, the mark
    // follows the heads; then a keyed message is appended and the process
    // dies before its key is recorded.
    wharf.set_env("WHARF_FAULT_ABORT", Some("idempotency.before_record"));
    wharf.restart();
    assert!(last_key_read(&wharf).contains("records_read=0"), "{}", wharf.log());
    for i in 0..20 {
        assert_eq!(wharf.write("hooks", Some("plain"), format!("m{i}").as_bytes()).status, 200);
    }
    eventually(Duration::from_secs(30), "the mark covers 21 messages", || {
        (covered_sum(&wharf) == Some(21)).then_some(())
    });
    let cut = wharf.try_post("/v1/namespaces/hooks/messages", &keyed("req-b"));
    assert!(cut.is_none_or(|r| r.status != 200), "the process was to abort before recording the key");
    let code = wharf.wait_exit(Duration::from_secs(30));
    assert!(wharf.pid().is_none() && code.is_none(), "aborted ({code:?})\n{}", wharf.log());

    // The next start reads only what came after the mark: req-b's record.
    wharf.set_env("WHARF_FAULT_ABORT", None);
    wharf.restart();
    assert!(last_key_read(&wharf).contains("records_read=1 "), "{}", wharf.log());
    let again = wharf.post("/v1/namespaces/hooks/messages", &keyed("req-b"));
    assert_eq!(again.body["duplicate"], json!(true), "{:?}\n{}", again.body, wharf.log());
    let a = wharf.post("/v1/namespaces/hooks/messages", &keyed("req-a"));
    assert_eq!(
        (a.body["duplicate"].clone(), a.body["message_id"].clone()),
        (json!(true), first.body["message_id"].clone())
    );
    assert_eq!(messages_in(&wharf), 22, "a retried key was written again");
}

#[test]
fn wait_visible_answers_after_delivery_and_times_out_as_durable_not_as_an_error() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&namespaces(&sink, ""));
    let r = wharf.post(
        "/v1/namespaces/hooks/messages",
        &json!({"key": "v", "payload": b64(b"x"), "wait": "visible", "timeout_ms": 10000}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!((r.body["durable"].clone(), r.body["visible"].clone()), (json!(true), json!(true)));
    assert_eq!(sink.accepted().len(), 1, "visible before the target had it");

    sink.set(|b| b.fail_all = Some(503));
    let r = wharf.post(
        "/v1/namespaces/hooks/messages",
        &json!({"key": "w", "payload": b64(b"y"), "wait": "visible", "timeout_ms": 300}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!((r.body["durable"].clone(), r.body["visible"].clone()), (json!(true), json!(false)));
}

#[test]
fn tokens_are_required_and_scoped_to_their_namespace() {
    let sink = HttpSink::start();
    let config = namespaces(&sink, "tokens = [\"hooks-token\"]")
        + &format!(
            r#"
[namespaces.other]
partitions = 1
tokens = ["other-token"]
[namespaces.other.target]
plugin = "{}"
"#,
            plugin("log-target").display()
        );
    let wharf = Wharf::start(&config);
    // Admin tokens live in [server]; this config has none, so status needs one and has none.
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let post = |ns: &str, token: Option<&str>| {
        let mut req = agent.post(&wharf.url(&format!("/v1/namespaces/{ns}/messages")));
        if let Some(t) = token {
            req = req.header("authorization", &format!("Bearer {t}"));
        }
        req.send(json!({"payload": "eA=="}).to_string()).expect("post").status().as_u16()
    };
    assert_eq!(post("hooks", None), 401);
    assert_eq!(post("hooks", Some("wrong")), 403);
    assert_eq!(post("hooks", Some("other-token")), 403);
    assert_eq!(post("hooks", Some("hooks-token")), 200);
    assert_eq!(post("other", Some("other-token")), 200);
    assert_eq!(wharf.get("/v1/status").status, 401);
    assert_eq!(wharf.get("/healthz").status, 200);
}

#[test]
fn keyless_messages_of_one_batch_share_a_partition_and_later_ones_reach_every_partition() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&sink.namespace("hooks", 4, ""));
    let partitions_of = |batch: &Value| -> Vec<u64> {
        let r = wharf.post("/v1/namespaces/hooks/messages/batch", batch);
        assert_eq!(r.status, 200, "{:?}", r.body);
        let results = r.body["results"].as_array().expect("results").clone();
        results.iter().map(|a| a["partition"].as_u64().expect("partition")).collect()
    };
    let keyless = json!({"messages": (0..10).map(|i| json!({"payload": b64(format!("m{i}").as_bytes())})).collect::<Vec<_>>()});
    let first = partitions_of(&keyless);
    assert!(first.iter().all(|&p| p == first[0]), "one batch, one partition: {first:?}");
    // Later batches move on to the other partitions (the sticky partition
    // changes every few milliseconds): every one is reached.
    let mut seen = std::collections::BTreeSet::from([first[0]]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < 4 && std::time::Instant::now() < deadline {
        let next = partitions_of(&keyless);
        assert!(next.iter().all(|&p| p == next[0]), "one batch, one partition: {next:?}");
        seen.insert(next[0]);
    }
    assert_eq!(seen.len(), 4, "keyless batches reached only partitions {seen:?}");
    // Keyed messages still follow their key, in the same batch as keyless ones.
    let key_alone = partitions_of(&json!({"messages": [{"key": "k7", "payload": b64(b"x")}]}))[0];
    let mixed: Vec<Value> = (0..8)
        .map(|i| match i % 2 {
            0 => json!({"key": "k7", "payload": b64(b"x")}),
            _ => json!({"payload": b64(b"y")}),
        })
        .collect();
    let got = partitions_of(&json!({"messages": mixed}));
    assert!(got.iter().step_by(2).all(|&p| p == key_alone), "k7 keeps its partition: {got:?}");
    assert!(got.iter().skip(1).step_by(2).all(|&p| p == got[1]), "keyless share one: {got:?}");
}
