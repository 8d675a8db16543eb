//! The control plane under a steady write load: register, replace and roll
//! back plugins, an invalid plugin refused, reload on SIGHUP; no loss, no
//! duplicates, every admin action audited. A removed plugin shows as
//! `removed` in the status, also after a restart.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::{HttpSink, Wharf, b64, eventually, plugin, plugin_variant};

fn put_plugin(wharf: &Wharf, ns: &str, bytes: &[u8]) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent
        .put(&wharf.url(&format!("/v1/admin/namespaces/{ns}/plugin")))
        .header("content-type", "application/wasm")
        .send(bytes)
        .expect("PUT plugin");
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or(Value::Null))
}

fn namespace(sink: &HttpSink, name: &str) -> String {
    sink.namespace(name, 2, "")
}

#[test]
fn plugins_are_registered_replaced_and_rolled_back_under_load_without_loss_or_duplicates() {
    let sink = HttpSink::start();
    let mut wharf = Wharf::start(&namespace(&sink, "hooks"));
    let a = std::fs::read(plugin("http")).expect("http.wasm");
    let b = plugin_variant(&a, "wharf-test-b");

    let stop = Arc::new(AtomicBool::new(false));
    let written: Arc<Mutex<Vec<String>>> = Arc::default();
    let port = wharf.port;
    let writer = {
        let (stop, written) = (stop.clone(), written.clone());
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let payload = format!("msg-{i}");
                let body = json!({"key": format!("k{}", i % 7), "payload": b64(payload.as_bytes())});
                let url = format!("http://127.0.0.1:{port}/v1/namespaces/hooks/messages");
                if let Ok(r) =
                    agent.post(&url).header("content-type", "application/json").send(body.to_string())
                    && r.status() == 200
                {
                    written.lock().expect("lock").push(payload);
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };

    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = put_plugin(&wharf, "hooks", &b);
    assert_eq!(status, 200, "{body}");
    let digest_b = body["digest"].as_str().expect("digest").to_string();
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = put_plugin(&wharf, "hooks", b"not a component");
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], json!("plugin_invalid"));
    assert_eq!(
        wharf.status()["namespaces"]["hooks"]["plugin"]["digest"],
        json!(digest_b),
        "the old plugin stays"
    );
    let (status, _) = put_plugin(&wharf, "hooks", &a);
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(300));
    // Through the CLI, as an operator would.
    let out = std::process::Command::new(wharf_tests::wharf_bin())
        .args(["plugin", "rollback", "--namespace", "hooks", "--server", &wharf.url("")])
        .output()
        .expect("wharf plugin rollback");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");

    let written = written.lock().expect("lock").clone();
    assert!(written.len() > 100, "too little load: {}", written.len());
    eventually(Duration::from_secs(60), "every write delivered", || {
        (sink.accepted().len() >= written.len()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut seen: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for r in sink.accepted() {
        *seen.entry(r.body).or_default() += 1;
    }
    let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "delivered twice: {duplicates:?}");
    for p in &written {
        assert!(seen.contains_key(p.as_bytes()), "{p} lost");
    }
    assert_eq!(
        wharf.status()["namespaces"]["hooks"]["plugin"]["digest"],
        json!(digest_b),
        "rollback goes to b"
    );

    let audit = std::fs::read_to_string(wharf.data_dir().join("audit.log")).expect("audit.log");
    let lines: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    let actions: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["action"].as_str().unwrap_or(""), l["outcome"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("plugin.register", "ok"),
            ("plugin.register", "error"),
            ("plugin.register", "ok"),
            ("plugin.rollback", "ok")
        ]
    );
    assert!(
        lines
            .iter()
            .all(|l| l["actor"].is_string() && l["time_ms"].is_u64() && l["target"] == json!("hooks"))
    );

    // A restart keeps the registered plugin.
    wharf.restart();
    assert_eq!(wharf.status()["namespaces"]["hooks"]["plugin"]["digest"], json!(digest_b));
}

#[test]
fn sighup_adds_a_namespace_and_a_removed_one_keeps_its_data_until_purged() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&namespace(&sink, "first"));
    assert_eq!(wharf.write("first", Some("k"), b"one").status, 200);
    assert_eq!(wharf.write("second", Some("k"), b"two").status, 404);

    std::fs::write(wharf.config_path(), {
        let cfg = std::fs::read_to_string(wharf.config_path()).expect("config");
        let server = cfg.split("[namespaces.first]").next().expect("server part").to_string();
        server + &namespace(&sink, "second")
    })
    .expect("rewrite config");
    wharf.hangup();
    eventually(Duration::from_secs(20), "namespace second", || {
        (wharf.write("second", Some("k"), b"two").status == 200).then_some(())
    });
    eventually(Duration::from_secs(20), "delivery in the new namespace", || {
        sink.accepted().iter().any(|r| r.body == b"two").then_some(())
    });
    assert_eq!(wharf.write("first", Some("k"), b"x").status, 404, "first was removed from the config");
    assert!(wharf.data_dir().join("first").is_dir(), "a removed namespace keeps its data");
    let purge = wharf.delete("/v1/admin/namespaces/first/data");
    assert_eq!(purge.status, 200, "{:?}", purge.body);
    assert!(!wharf.data_dir().join("first").exists());
    let refused = wharf.delete("/v1/admin/namespaces/second/data");
    assert_eq!(refused.body["error"]["code"], json!("namespace_active"));
}

/// `wharf <args> --server <wharf>`: stdout, asserting success.
fn cli(wharf: &Wharf, args: &[&str]) -> String {
    let out = std::process::Command::new(wharf_tests::wharf_bin())
        .args(args)
        .args(["--server", &wharf.url("")])
        .env_remove("WHARF_TOKEN")
        .output()
        .expect("run wharf");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The state and reason of the plugin of `hooks`'s target `default`, in
/// `/v1/status` and in `wharf status --json`, which must agree.
fn plugin_state(wharf: &Wharf) -> (String, String) {
    let api = wharf.status()["namespaces"]["hooks"].clone();
    let v: Value = serde_json::from_str(&cli(wharf, &["status", "--json"])).expect("status --json");
    let by_cli = &v["namespaces"]["hooks"];
    for p in [&api["plugin"], &api["targets"]["default"]["plugin"], &by_cli["targets"]["default"]["plugin"]] {
        assert_eq!(p["state"], api["plugin"]["state"], "{api} {by_cli}");
    }
    let text = |k: &str| api["plugin"][k].as_str().unwrap_or_default().to_string();
    (text("state"), text("reason"))
}

#[test]
fn a_removed_plugin_shows_as_removed_in_the_status_until_one_is_registered() {
    let sink = HttpSink::start();
    let mut wharf = Wharf::start(&namespace(&sink, "hooks"));
    assert_eq!(plugin_state(&wharf).0, "ready");
    cli(&wharf, &["plugin", "remove", "--namespace", "hooks"]);
    let (state, reason) = plugin_state(&wharf);
    assert_eq!(state, "removed");
    assert!(reason.contains("removed by an operator"), "{reason}");
    let human = cli(&wharf, &["status"]);
    assert!(human.contains("namespace hooks: plugin removed"), "{human}");
    wharf.restart();
    assert_eq!(plugin_state(&wharf).0, "removed", "after a restart");
    let (status, body) = put_plugin(&wharf, "hooks", &std::fs::read(plugin("http")).expect("http.wasm"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(plugin_state(&wharf).0, "ready");
}
