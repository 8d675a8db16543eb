//! End to end: HTTP write → durable log → Wasm plugin → real memcached.
//!
//! Writes, lookups and DLQ calls go through `wharf-client`; the test of
//! typed errors posts raw bodies (it checks statuses and error bodies), and
//! the SIGKILL test uses the harness's `Load` (only a `200` with `durable`
//! counts, and no call is retried across the kill).

use std::time::Duration;

use serde_json::json;
use wharf_client::{Client, DeliveryState, Message};
use wharf_tests::{Load, Memcached, Wharf, eventually, plugin};

fn client(wharf: &Wharf) -> Client {
    Client::new(wharf.url(""))
}

fn namespace(mc: &Memcached) -> String {
    format!(
        r#"
[namespaces.orders]
partitions = 4

[namespaces.orders.target]
plugin = "{}"
allow_connect = ["{addr}"]
config = {{ servers = "{addr}", key_prefix = "t:" }}
"#,
        plugin("memcached").display(),
        addr = mc.addr()
    )
}

#[test]
fn a_written_message_lands_in_memcached_through_the_plugin() {
    let mc = Memcached::start();
    let wharf = Wharf::start(&namespace(&mc));
    let c = client(&wharf);
    let ack = c.write("orders", Message::new("hello memcached").with_key("order-1")).expect("write");
    assert!(ack.durable && !ack.visible && !ack.duplicate, "{ack:?}");
    assert!(!ack.message_id.is_empty(), "{ack:?}");
    let got = eventually(Duration::from_secs(30), "the value in memcached", || mc.get("t:order-1"));
    assert_eq!(got, b"hello memcached");
    eventually(Duration::from_secs(10), "state delivered", || {
        let s = c.message("orders", &ack.message_id).expect("lookup");
        (s.state == DeliveryState::Delivered).then_some(())
    });
}

#[test]
fn bad_input_gets_a_typed_error_and_changes_nothing() {
    let mc = Memcached::start();
    let wharf = Wharf::start(&namespace(&mc));
    let heads = |w: &Wharf| w.heads("orders");
    let before = heads(&wharf);
    let cases = [
        ("/v1/namespaces/nope/messages", r#"{"payload":"aGk="}"#, 404, "namespace_not_found"),
        ("/v1/namespaces/orders/messages", r#"{"payload": "#, 400, "invalid_json"),
        ("/v1/namespaces/orders/messages", r#"{"key":"k"}"#, 400, "invalid_json"),
        ("/v1/namespaces/orders/messages", r#"{"payload":"not base64!"}"#, 400, "invalid_base64"),
        ("/v1/namespaces/orders/messages", r#"{"payload":"aGk=","surprise":1}"#, 400, "invalid_json"),
        ("/v1/namespaces/orders/messages", r#"{"payload":"aGk=","key":""}"#, 400, "invalid_key"),
    ];
    for (path, body, status, code) in cases {
        let r = wharf.post_raw(path, body);
        assert_eq!(r.status, status, "{path} {body}: {:?}", r.body);
        assert_eq!(r.body["error"]["code"], json!(code), "{path} {body}: {:?}", r.body);
        assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let big = wharf_tests::b64(&vec![7u8; (1 << 20) + 1]);
    let r = wharf.post_raw("/v1/namespaces/orders/messages", &format!(r#"{{"payload":"{big}"}}"#));
    assert_eq!(r.status, 413, "{:?}", r.body);
    assert_eq!(heads(&wharf), before, "a rejected write appended something");
}

#[test]
fn a_message_without_a_key_is_dead_lettered_with_the_reason() {
    let mc = Memcached::start();
    let wharf = Wharf::start(&namespace(&mc));
    let c = client(&wharf);
    let id = c.write("orders", Message::new("no key")).expect("write").message_id;
    let entry = eventually(Duration::from_secs(30), "a dlq entry", || {
        c.dlq_list("orders", None).expect("dlq").entries.into_iter().next()
    });
    assert_eq!(entry.message_id, id);
    let reason = &entry.failures.first().expect("a failure").reason;
    assert!(reason.contains("key"), "{reason}");
    assert!(entry.plugin_digest.starts_with("sha256:"), "{}", entry.plugin_digest);
    assert_eq!(c.message("orders", &id).expect("lookup").state, DeliveryState::DeadLettered);
    c.dlq_delete("orders", None, &id).expect("delete the entry");
    assert_eq!(c.dlq_list("orders", None).expect("dlq").total, 0);
}

#[test]
fn memcached_down_then_back_loses_nothing() {
    let mc = Memcached::start();
    let wharf = Wharf::start(&namespace(&mc));
    let c = client(&wharf);
    let port = mc.stop();
    for i in 0..20 {
        c.write("orders", Message::new(format!("v{i}")).with_key(format!("down-{i}"))).expect("write");
    }
    std::thread::sleep(Duration::from_millis(500));
    let mc = Memcached::start_on(port);
    for i in 0..20 {
        let got = eventually(Duration::from_secs(60), "redelivery after memcached restart", || {
            mc.get(&format!("t:down-{i}"))
        });
        assert_eq!(got, format!("v{i}").as_bytes());
    }
}

#[test]
fn sigkill_while_writing_and_delivering_loses_no_acknowledged_message() {
    let mc = Memcached::start();
    let mut wharf = Wharf::start(&namespace(&mc));
    let load = Load::start(wharf.port, "orders", 4, |i| format!("kill-{i}"), |i| format!("value-{i}"));
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(700));
        wharf.kill();
        std::thread::sleep(Duration::from_millis(100));
        wharf.restart();
    }
    std::thread::sleep(Duration::from_millis(500));
    let acked = load.stop();
    assert!(acked.len() > 50, "too few acknowledged writes to mean anything: {}", acked.len());
    for (key, val) in &acked {
        let got = eventually(Duration::from_secs(60), &format!("{key} in memcached"), || {
            mc.get(&format!("t:{key}"))
        });
        assert_eq!(&got, val.as_bytes(), "{key}");
    }
}

#[test]
fn a_bad_config_fails_at_start_naming_file_key_and_problem_with_exit_code_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("wharf.toml");
    std::fs::write(
        &file,
        format!(
            "[namespaces.orders]\npartitions = 0\n[namespaces.orders.target]\nplugin = \"{}\"\n",
            plugin("memcached").display()
        ),
    )
    .expect("config");
    let out = std::process::Command::new(wharf_tests::wharf_bin())
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .expect("run wharf");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wharf.toml") && err.contains("namespaces.orders.partitions") && err.contains("between"),
        "{err}"
    );
}
