//! Plugins written in Python and JavaScript (`sdk/python`, `sdk/js`),
//! end to end: the webhook examples (`examples/python-webhook`,
//! `examples/js-webhook`, built by `make polyglot`) transform a JSON payload
//! and POST it to a real local HTTP server, which can answer 503 (retried)
//! or 400 (dead-lettered). Also runs the SDKs' and the examples' own unit
//! tests (plain CPython and node, no Wasm).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::{HttpSink, Wharf, eventually, plugin, root, shared_plugin_cache};

/// One namespace whose target is `plugin_name` posting to `sink`, retrying
/// quickly. Python needs more than the default 64 MiB (docs/plugins.md).
fn namespace(sink: &HttpSink, plugin_name: &str) -> String {
    format!(
        r#"
[namespaces.hooks]
partitions = 1
[namespaces.hooks.retry]
max_attempts = 1000
initial_backoff_ms = 10
max_backoff_ms = 100
[namespaces.hooks.target]
plugin = "{}"
allow_http = ["{url}"]
memory_limit_mib = 128
config = {{ url = "{url}hook" }}
"#,
        plugin(plugin_name).display(),
        url = sink.url()
    )
}

fn body_json(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("the webhook body is JSON")
}

fn posts_the_transformed_event(plugin_name: &str) {
    let sink = HttpSink::start();
    let wharf = Wharf::start_with_server(&shared_plugin_cache(), &namespace(&sink, plugin_name), "all");
    let r = wharf.write("hooks", Some("user-7"), br#"{"type": "signup", "user": 7}"#);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let id = r.body["message_id"].as_str().expect("id").to_string();
    let got = eventually(Duration::from_secs(60), "a POST at the sink", || sink.accepted().first().cloned());
    assert_eq!(got.path, "/hook");
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.header("idempotency-key"), Some(id.as_str()));
    assert_eq!(
        body_json(&got.body),
        json!({"id": id, "key": "user-7", "type": "signup", "data": {"user": 7}})
    );
}

fn retries_a_503_until_it_passes(plugin_name: &str) {
    let sink = HttpSink::start();
    let wharf = Wharf::start_with_server(&shared_plugin_cache(), &namespace(&sink, plugin_name), "all");
    sink.set(|b| b.fail_all = Some(503));
    assert_eq!(wharf.write("hooks", Some("k"), br#"{"n": 1}"#).status, 200);
    // Two refused attempts prove the plugin said retry, not reject.
    eventually(Duration::from_secs(60), "two 503s at the sink", || (sink.refused().len() >= 2).then_some(()));
    assert!(sink.accepted().is_empty());
    sink.set(|b| b.fail_all = None);
    let got = eventually(Duration::from_secs(60), "the POST once the sink recovers", || {
        sink.accepted().first().cloned()
    });
    assert_eq!(body_json(&got.body)["data"], json!({"n": 1}));
    assert!(wharf.dlq_ids("hooks", None).is_empty(), "a 503 must not dead-letter");
}

fn dead_letters_a_400(plugin_name: &str) {
    let sink = HttpSink::start();
    let wharf = Wharf::start_with_server(&shared_plugin_cache(), &namespace(&sink, plugin_name), "all");
    sink.set(|b| b.reject_keys = vec!["poison".into()]);
    let bad = wharf.write("hooks", Some("poison"), br#"{"type": "bad"}"#);
    assert_eq!(wharf.write("hooks", Some("good"), br#"{"type": "ok"}"#).status, 200);
    eventually(Duration::from_secs(60), "the good message", || (sink.accepted().len() == 1).then_some(()));
    let entry = eventually(Duration::from_secs(60), "the dlq entry", || {
        wharf.get("/v1/namespaces/hooks/dlq").body["entries"].as_array().and_then(|e| e.first().cloned())
    });
    assert_eq!(entry["message_id"], bad.body["message_id"]);
    assert_eq!(entry["failures"][0]["kind"], json!("reject"));
    let reason = entry["failures"][0]["reason"].as_str().expect("reason");
    assert!(reason.contains("webhook answered 400"), "{reason}");
}

#[test]
fn a_python_plugin_posts_the_transformed_event_to_the_webhook() {
    posts_the_transformed_event("python-webhook");
}

#[test]
fn a_python_plugin_retries_a_503_until_it_passes() {
    retries_a_503_until_it_passes("python-webhook");
}

#[test]
fn a_python_plugin_dead_letters_a_400() {
    dead_letters_a_400("python-webhook");
}

#[test]
fn a_js_plugin_posts_the_transformed_event_to_the_webhook() {
    posts_the_transformed_event("js-webhook");
}

#[test]
fn a_js_plugin_retries_a_503_until_it_passes() {
    retries_a_503_until_it_passes("js-webhook");
}

#[test]
fn a_js_plugin_dead_letters_a_400() {
    dead_letters_a_400("js-webhook");
}

fn run_ok(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn python_unittest(dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()));
    cmd.args(["-m", "unittest", "-v"]).current_dir(dir).env("PYTHONPATH", root().join("sdk/python"));
    cmd
}

#[test]
fn the_python_sdk_and_example_unit_tests_pass_without_wasm() {
    run_ok(python_unittest(&root().join("sdk/python")), "sdk/python unit tests");
    run_ok(python_unittest(&root().join("examples/python-webhook")), "examples/python-webhook unit tests");
}

#[test]
fn the_js_sdk_and_example_unit_tests_pass_without_wasm() {
    let mut sdk = Command::new("node");
    sdk.args(["--test", "test/"]).current_dir(root().join("sdk/js"));
    run_ok(sdk, "sdk/js unit tests");
    // `make polyglot` links examples/js-webhook/node_modules/wharf-sdk.
    let mut example = Command::new("node");
    example.arg("--test").current_dir(root().join("examples/js-webhook"));
    run_ok(example, "examples/js-webhook unit tests");
}

#[test]
fn the_sdk_world_embeds_the_frozen_target_wit_unchanged() {
    let frozen = std::fs::read_to_string(root().join("wit/0.2.0/target.wit")).expect("wit/0.2.0");
    let copy =
        std::fs::read_to_string(root().join("sdk/wit/deps/wharf-target/target.wit")).expect("sdk copy");
    assert_eq!(copy, frozen, "sdk/wit/deps/wharf-target/target.wit must be a copy of wit/0.2.0/target.wit");
}

#[test]
fn the_examples_stay_under_30_lines() {
    for file in ["examples/python-webhook/plugin.py", "examples/js-webhook/plugin.js"] {
        let text = std::fs::read_to_string(root().join(file)).expect(file);
        assert!(text.lines().count() < 30, "{file} has {} lines", text.lines().count());
    }
}
