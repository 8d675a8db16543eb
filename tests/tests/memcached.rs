//! End to end: HTTP write → durable log → Wasm plugin → real memcached.

use std::time::Duration;

use serde_json::json;
use wharf_tests::{Load, Memcached, Wharf, eventually, plugin};

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
    let r = wharf.write("orders", Some("order-1"), b"hello memcached");
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["durable"], json!(true));
    assert_eq!(r.body["visible"], json!(false));
    assert!(r.body["message_id"].is_string());
    let got = eventually(Duration::from_secs(30), "the value in memcached", || mc.get("t:order-1"));
    assert_eq!(got, b"hello memcached");
    let id = r.body["message_id"].as_str().expect("id").to_string();
    let state = eventually(Duration::from_secs(10), "state delivered", || {
        let s = wharf.get(&format!("/v1/namespaces/orders/messages/{id}"));
        (s.body["state"] == "delivered").then_some(s)
    });
    assert_eq!(state.status, 200);
}

#[test]
fn bad_input_gets_a_typed_error_and_changes_nothing() {
    let mc = Memcached::start();
    let wharf = Wharf::start(&namespace(&mc));
    let heads = |w: &Wharf| -> Vec<u64> {
        w.status()["namespaces"]["orders"]["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .map(|p| p["head_sequence"].as_u64().expect("head"))
            .collect()
    };
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
    let r = wharf.write("orders", None, b"no key");
    assert_eq!(r.status, 200);
    let id = r.body["message_id"].as_str().expect("id").to_string();
    let entry = eventually(Duration::from_secs(30), "a dlq entry", || {
        let l = wharf.get("/v1/namespaces/orders/dlq");
        l.body["entries"].as_array().and_then(|e| e.first().cloned())
    });
    assert_eq!(entry["message_id"], json!(id));
    let reason = entry["failures"][0]["reason"].as_str().expect("reason");
    assert!(reason.contains("key"), "{reason}");
    assert!(entry["plugin_digest"].as_str().expect("digest").starts_with("sha256:"));
    let s = wharf.get(&format!("/v1/namespaces/orders/messages/{id}"));
    assert_eq!(s.body["state"], json!("dead_lettered"));
    let d = wharf.delete(&format!("/v1/namespaces/orders/dlq/{id}"));
    assert_eq!(d.status, 200, "{:?}", d.body);
    assert_eq!(wharf.get("/v1/namespaces/orders/dlq").body["total"], json!(0));
}

#[test]
fn memcached_down_then_back_loses_nothing() {
    let mc = Memcached::start();
    let wharf = Wharf::start(&namespace(&mc));
    let port = mc.stop();
    for i in 0..20 {
        let r = wharf.write("orders", Some(&format!("down-{i}")), format!("v{i}").as_bytes());
        assert_eq!(r.status, 200);
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
