//! `/metrics` and `/v1/status` during a run with retries, a DLQ entry and a
//! halted partition: the figures must match what happened.

use std::time::Duration;

use serde_json::json;
use wharf_tests::{HttpSink, Wharf, eventually, plugin};

fn config(sink: &HttpSink) -> String {
    format!(
        r#"
[namespaces.hooks]
partitions = 1
[namespaces.hooks.retry]
max_attempts = 1000
initial_backoff_ms = 10
max_backoff_ms = 30
[namespaces.hooks.target]
plugin = "{http}"
allow_http = ["{url}"]
config = {{ url = "{url}" }}

[namespaces.ledger]
partitions = 1
[namespaces.ledger.target]
plugin = "{log}"
"#,
        http = plugin("http").display(),
        log = plugin("log-target").display(),
        url = sink.url()
    )
}

/// The value of the first sample line that starts with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Flips one byte in the middle of the first record of the only segment.
fn corrupt_first_record(partition_dir: &std::path::Path) {
    let seg = std::fs::read_dir(partition_dir)
        .expect("partition dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("a segment file");
    let mut bytes = std::fs::read(&seg).expect("read segment");
    // Past the header, inside the first record (payloads are ≥ 200 bytes).
    let at = 128;
    assert!(bytes.len() > 1024, "segment too small to corrupt mid-file: {}", bytes.len());
    bytes[at] ^= 0xFF;
    std::fs::write(&seg, bytes).expect("write segment");
}

#[test]
fn metrics_and_status_show_retries_a_dlq_entry_and_a_halted_partition() {
    let sink = HttpSink::start();
    let mut wharf = Wharf::start(&config(&sink));

    // A partition to halt: ten records, then a flipped byte in the first.
    for i in 0..10 {
        assert_eq!(wharf.write("ledger", Some(&format!("l{i}")), &[b'x'; 200]).status, 200);
    }
    wharf.kill();
    corrupt_first_record(&wharf.data_dir().join("ledger/p0"));
    wharf.restart();

    let st = wharf.status();
    let ledger = &st["namespaces"]["ledger"]["partitions"][0];
    assert_eq!(ledger["halted"], json!(true), "{st}");
    let reason = ledger["halted_reason"].as_str().expect("reason");
    assert!(reason.contains(".seg") && reason.contains("offset"), "{reason}");
    let w = wharf.write("ledger", Some("after"), b"x");
    assert_eq!((w.status, w.body["error"]["code"].clone()), (503, json!("partition_halted")));

    // Retries, then a DLQ entry, on the healthy namespace.
    sink.set(|b| {
        b.fail_all = Some(503);
    });
    for i in 0..3 {
        assert_eq!(wharf.write("hooks", Some(&format!("h{i}")), b"hello").status, 200);
    }
    eventually(Duration::from_secs(30), "retries", || {
        let m = wharf.get("/metrics").body.as_str()?.to_string();
        (sample(&m, "wharf_retries_total{namespace=\"hooks\",target=\"default\",kind=\"retry\"}")? >= 3.0)
            .then_some(())
    });
    sink.set(|b| {
        b.fail_all = None;
        b.reject_keys = vec!["refused-key".into()];
    });
    assert_eq!(wharf.write("hooks", Some("refused-key"), b"bad").status, 200);
    eventually(Duration::from_secs(30), "3 deliveries and a dlq entry", || {
        let st = wharf.status();
        (sink.accepted().len() == 3 && st["namespaces"]["hooks"]["dlq_size"] == json!(1)).then_some(())
    });

    let m = eventually(Duration::from_secs(10), "settled metrics", || {
        let m = wharf.get("/metrics").body.as_str()?.to_string();
        (sample(&m, "wharf_backlog_messages{namespace=\"hooks\",partition=\"0\"}")? == 0.0).then_some(m)
    });
    assert_eq!(sample(&m, "wharf_writes_total{namespace=\"hooks\"}"), Some(4.0), "{m}");
    assert_eq!(sample(&m, "wharf_delivered_total{namespace=\"hooks\",target=\"default\"}"), Some(3.0), "{m}");
    assert_eq!(
        sample(&m, "wharf_dead_lettered_total{namespace=\"hooks\",target=\"default\",kind=\"reject\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(sample(&m, "wharf_dlq_messages{namespace=\"hooks\",target=\"default\"}"), Some(1.0), "{m}");
    assert_eq!(sample(&m, "wharf_partition_halted{namespace=\"ledger\",partition=\"0\"}"), Some(1.0), "{m}");
    assert_eq!(sample(&m, "wharf_partition_halted{namespace=\"hooks\",partition=\"0\"}"), Some(0.0), "{m}");
    assert_eq!(
        sample(&m, "wharf_delivery_latency_seconds_count{namespace=\"hooks\",target=\"default\"}"),
        Some(3.0),
        "{m}"
    );
    assert_eq!(sample(&m, "wharf_log_head_sequence{namespace=\"hooks\",partition=\"0\"}"), Some(4.0), "{m}");
    assert!(sample(&m, "wharf_log_fsyncs{namespace=\"hooks\",partition=\"0\"}").unwrap_or(0.0) >= 1.0, "{m}");
    assert!(sample(&m, "wharf_fsync_seconds_count{namespace=\"hooks\"}").unwrap_or(0.0) >= 1.0, "{m}");
    assert_eq!(sample(&m, "wharf_group_commit_records_sum{namespace=\"hooks\"}"), Some(4.0), "{m}");
    assert!(!m.contains("refused-key") && !m.contains("h0"), "keys leaked into labels");

    let st = wharf.status();
    let hooks = &st["namespaces"]["hooks"]["partitions"][0];
    assert_eq!(hooks["head_sequence"], json!(4));
    assert_eq!(hooks["durable_sequence"], json!(4));
    assert!(hooks["delivery"]["retries_total"].as_u64().unwrap_or(0) >= 3, "{hooks}");
    assert_eq!(hooks["delivery"]["dead_lettered_total"], json!(1));
    assert_eq!(st["namespaces"]["hooks"]["plugin"]["state"], json!("ready"));
    assert_eq!(st["namespaces"]["hooks"]["plugin"]["wit"], json!("wharf:target@0.4.0"));
}

#[test]
fn the_status_command_prints_a_table_and_json() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&config(&sink));
    let url = format!("http://127.0.0.1:{}", wharf.port);
    let out = std::process::Command::new(wharf_tests::wharf_bin())
        .args(["status", "--server", &url])
        .output()
        .expect("run wharf status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("namespace hooks") && text.contains("WATERMARK"), "{text}");
    let out = std::process::Command::new(wharf_tests::wharf_bin())
        .args(["status", "--json", "--server", &url])
        .output()
        .expect("run wharf status --json");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v["namespaces"]["ledger"]["partitions"].is_array());
}

#[test]
fn every_metric_the_grafana_dashboard_uses_exists() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&config(&sink));
    let metrics = wharf.get("/metrics").body.as_str().expect("text").to_string();
    let dash = std::fs::read_to_string(wharf_tests::root().join("examples/grafana/wharf-dashboard.json"))
        .expect("dashboard");
    let mut names: Vec<&str> = dash
        .match_indices("wharf_")
        .map(|(i, _)| {
            let rest = &dash[i..];
            &rest[..rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len())]
        })
        .filter(|n| n.len() > "wharf_".len())
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        let base =
            ["_bucket", "_total", "_count", "_sum"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        assert!(
            metrics.contains(&format!("# TYPE {base} ")),
            "the dashboard uses {name}, /metrics has no {base}"
        );
    }
}
