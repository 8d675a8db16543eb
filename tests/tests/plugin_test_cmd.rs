//! `wharf plugin test`: the conformance run of a plugin without a sidecar.
//! Every shipped plugin and example passes it (retries against a closed
//! port are conformant: what matters is one outcome per message); a plugin
//! that traps or whose `init` fails does not, and says why.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use wharf_tests::{free_port, plugin, wharf_bin};

fn plugin_test(file: &Path, args: &[&str]) -> Output {
    Command::new(wharf_bin())
        .args(["plugin", "test"])
        .arg(file)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run wharf plugin test")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs `--json`, asserts the plugin is conformant, returns the report.
fn assert_conformant(file: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = plugin_test(file, &all);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert!(out.status.success(), "{} is not conformant: {report:#}", file.display());
    assert_eq!(report["ok"], Value::Bool(true), "{report:#}");
    assert!(report["describe"]["name"].is_string(), "describe without init: {report:#}");
    let batches = report["batches"].as_array().expect("batches");
    let sizes: Vec<u64> = batches.iter().map(|b| b["size"].as_u64().expect("size")).collect();
    assert_eq!(sizes, [1, 100, 1000]);
    for b in batches {
        let outcomes: u64 =
            ["delivered", "retry", "reject", "halt"].iter().map(|k| b[k].as_u64().expect(k)).sum();
        assert_eq!(outcomes, b["size"].as_u64().expect("size"), "one outcome per message: {b}");
    }
    assert_eq!(report["trap"]["ok"], Value::Bool(true), "{report:#}");
    assert!(report["memory"]["after_init_bytes"].as_u64().expect("memory") > 0, "{report:#}");
    report
}

fn closed_url() -> String {
    format!("url=http://127.0.0.1:{}/hook", free_port())
}

#[test]
fn the_log_target_example_delivers_everything() {
    let report = assert_conformant(&plugin("log-target"), &[]);
    assert_eq!(report["batches"][2]["delivered"], 1000, "{report:#}");
}

#[test]
fn the_http_plugin_is_conformant_against_a_closed_port() {
    let url = closed_url();
    let prefix = url.trim_start_matches("url=").trim_end_matches("hook").to_string();
    let report = assert_conformant(&plugin("http"), &["--config", &url, "--allow-http", &prefix]);
    assert_eq!(report["batches"][0]["retry"], 1, "a refused connection is a retry: {report:#}");
}

#[test]
fn the_memcached_plugin_is_conformant_against_a_closed_port() {
    let addr = format!("127.0.0.1:{}", free_port());
    let servers = format!("servers={addr}");
    assert_conformant(&plugin("memcached"), &["--config", &servers, "--allow-connect", &addr]);
}

#[test]
fn the_forward_plugin_is_conformant_against_a_closed_port() {
    let base = format!("http://127.0.0.1:{}", free_port());
    let report =
        assert_conformant(&plugin("wharf"), &["--config", &format!("url={base}"), "--allow-http", &base]);
    assert_eq!(report["batches"][0]["retry"], 1, "a refused connection is a retry: {report:#}");
}

#[test]
fn the_replica_plugin_is_conformant_and_halts_without_stored_records() {
    let base = format!("http://127.0.0.1:{}", free_port());
    let report =
        assert_conformant(&plugin("replica"), &["--config", &format!("url={base}"), "--allow-http", &base]);
    // Outside a mirroring lane messages carry no record: a halt, never a guess.
    assert_eq!(report["batches"][0]["halt"], 1, "{report:#}");
}

#[test]
fn the_cassandra_plugin_is_conformant_against_a_closed_port() {
    let addr = format!("127.0.0.1:{}", free_port());
    let args = [
        "--config",
        &format!("contact_points={addr}"),
        "--config",
        "keyspace=app",
        "--config",
        "table=users",
    ];
    let report = assert_conformant(&plugin("cassandra"), &[&args[..], &["--allow-connect", &addr]].concat());
    assert_eq!(report["batches"][0]["retry"], 1, "an unreachable cluster is a retry: {report:#}");
}

#[test]
fn the_python_example_is_conformant_when_its_url_is_denied() {
    let url = closed_url();
    let report =
        assert_conformant(&plugin("python-webhook"), &["--config", &url, "--memory-limit-mib", "128"]);
    // Not in allow_http: denied by the host, which is a retry.
    assert_eq!(report["batches"][1]["retry"], 100, "{report:#}");
    let reason = report["batches"][0]["first_reason"].as_str().expect("reason");
    assert!(reason.contains("HttpRequestDenied"), "{reason}");
}

#[test]
fn the_js_example_is_conformant_against_a_closed_port() {
    let url = closed_url();
    let prefix = url.trim_start_matches("url=").trim_end_matches("hook").to_string();
    let report = assert_conformant(&plugin("js-webhook"), &["--config", &url, "--allow-http", &prefix]);
    assert_eq!(report["batches"][2]["retry"], 1000, "{report:#}");
}

/// The revision-store example (issue 20) needs its whole config to `init`;
/// S3 and MySQL are closed ports here, and it never reaches them: the test
/// messages carry no revision number, so each is rejected as the operator
/// would want (a retry would wait forever for a document that never parses).
#[test]
fn the_revision_store_example_is_conformant_and_rejects_documents_without_a_rev() {
    let s3 = format!("http://127.0.0.1:{}", free_port());
    let mysql = format!("127.0.0.1:{}", free_port());
    let config = [
        format!("s3_endpoint={s3}"),
        "bucket=revisions".to_string(),
        "access_key=test".to_string(),
        "secret_key=test".to_string(),
        format!("mysql={mysql}"),
        "user=wharf".to_string(),
        "database=revs".to_string(),
    ];
    let mut args: Vec<&str> = config.iter().flat_map(|kv| ["--config", kv.as_str()]).collect();
    args.extend(["--allow-http", &s3, "--allow-connect", &mysql]);
    let report = assert_conformant(&plugin("revision-store"), &args);
    assert_eq!(report["batches"][2]["reject"], 1000, "{report:#}");
    let reason = report["batches"][0]["first_reason"].as_str().expect("reason");
    assert!(reason.contains("no numeric `rev`"), "{reason}");
}

#[test]
fn a_revision_store_without_its_config_fails_init_and_names_the_key() {
    let out = plugin_test(&plugin("revision-store"), &[]);
    let text = text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("init      FAILED") && text.contains("`s3_endpoint`"), "{text}");
}

#[test]
fn the_misbehave_fixture_in_ok_mode_is_conformant() {
    assert_conformant(&plugin("fixture-misbehave"), &["--config", "mode=ok"]);
}

#[test]
fn a_plugin_that_traps_fails_with_a_clear_report() {
    let out = plugin_test(&plugin("fixture-misbehave"), &["--config", "mode=panic"]);
    let text = text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("batch 1      FAILED"), "{text}");
    assert!(text.contains("plugin trapped"), "{text}");
    assert!(text.contains("result    NOT conformant:"), "{text}");
    // Trapping instances are thrown away and the run goes on with fresh
    // ones, which trap too: recovery fails, and says so.
    assert!(text.contains("trap      FAILED: interrupted on purpose"), "{text}");
    assert!(text.contains("then a fresh instance failed: plugin trapped"), "{text}");
}

#[test]
fn an_init_error_is_shown_as_the_operator_sees_it() {
    let out = plugin_test(&plugin("fixture-misbehave"), &[]);
    let text = text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("init      FAILED: plugin init failed: config key `mode` is required but missing"),
        "{text}"
    );
    let json = plugin_test(&plugin("fixture-misbehave"), &["--json"]);
    let report: Value = serde_json::from_slice(&json.stdout).expect("json report");
    assert_eq!(report["ok"], Value::Bool(false));
    assert_eq!(report["init"]["ok"], Value::Bool(false));
}

#[test]
fn a_file_that_is_not_a_component_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"not wasm").expect("write");
    let out = plugin_test(&bogus, &[]);
    let text = text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("load      FAILED") && text.contains("not a valid wharf:target component"),
        "{text}"
    );
}
