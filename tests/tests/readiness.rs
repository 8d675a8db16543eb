//! `/readyz` vs `/healthz` (issue 19): ready once recovered and plugins
//! loaded; a failed plugin makes only its namespace not ready; from
//! SIGTERM on, 503 at once while writes are still served for the drain
//! delay.

use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::{HttpSink, Wharf, eventually};

fn get(w: &Wharf, path: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent.get(&w.url(path)).call().expect("GET");
    (r.status().as_u16(), r.body_mut().read_json().unwrap_or(Value::Null))
}

#[test]
fn ready_after_start_a_failed_plugin_is_its_namespace_only_and_draining_answers_503() {
    let sink = HttpSink::start();
    // `broken` has a plugin whose init fails (memcached without `servers`).
    let broken = format!(
        "[namespaces.broken]\npartitions = 1\n[namespaces.broken.target]\nplugin = \"{}\"\n",
        wharf_tests::plugin("memcached").display()
    );
    let ns = format!("{}\n{broken}", sink.namespace("orders", 1, ""));
    let mut w = Wharf::start_with_server("drain_delay_ms = 3000\n", &ns, "all");

    let (status, body) = get(&w, "/readyz");
    assert_eq!((status, &body["state"]), (200, &json!("ready")), "{body}");
    assert_eq!(body["namespaces"]["orders"]["ready"], json!(true), "{body}");
    assert_eq!(body["namespaces"]["broken"]["ready"], json!(false), "{body}");
    assert!(body["namespaces"]["broken"]["reason"].as_str().unwrap_or("").contains("Failed"), "{body}");
    assert_eq!(get(&w, "/readyz?namespace=orders").0, 200);
    assert_eq!(get(&w, "/readyz?namespace=broken").0, 503);
    assert_eq!(get(&w, "/readyz?namespace=nope").0, 404);

    w.terminate();
    eventually(Duration::from_secs(2), "503 at once on SIGTERM", || {
        (get(&w, "/readyz").0 == 503).then_some(())
    });
    assert_eq!(get(&w, "/healthz").0, 200, "still alive");
    let r = w.write("orders", Some("k"), b"during the drain delay");
    assert_eq!(r.status, 200, "writes are still served: {:?}", r.body);
    assert_eq!(w.wait_exit(Duration::from_secs(30)), Some(0), "{}", w.log());
}

/// `--addr-file` given as a bare file name is written in the working
/// directory (its parent is the empty path, which cannot be opened: the
/// process used to exit right after binding).
#[test]
fn a_bare_addr_file_name_is_written_in_the_working_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = "[server]\nhttp = \"127.0.0.1:0\"\ndata_dir = \"data\"\n";
    std::fs::write(dir.path().join("wharf.toml"), config).expect("write config");
    let mut child = std::process::Command::new(wharf_tests::wharf_bin())
        .current_dir(dir.path())
        .args(["serve", "--config", "wharf.toml", "--addr-file", "addr.json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn wharf");
    let pid = u64::from(child.id());
    let written = eventually(Duration::from_secs(60), "addr.json names the process", || {
        let text = std::fs::read_to_string(dir.path().join("addr.json")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        (v["pid"].as_u64() == Some(pid)).then_some(v)
    });
    let http = written["http"].as_str().unwrap_or_default().to_string();
    let health =
        wharf_tests::agent().get(&format!("http://{http}/healthz")).call().map(|r| r.status().as_u16());
    let running = child.try_wait().expect("try_wait").is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(matches!(health, Ok(200)), "GET /healthz at {http}: {health:?}");
    assert!(running, "wharf exited after writing its address file");
}
