//! The host-scheduled `reconcile` (WIT 0.4.0) through the real binary:
//! passes run every `reconcile_interval_ms` and show in `/metrics` and
//! `/v1/status`; a plugin built against 0.3.0 is reported as unsupported
//! (and never called); a reconcile that traps leaves delivery alone; a
//! replaced plugin takes over the schedule.
//!
//! The plugins are the misbehave fixture (`config.reconcile`: `count`,
//! `errors`, `trap`) and the http plugin, today's and its 0.3.0 fixture.

use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::{HttpSink, Wharf, eventually, fixture, plugin};

const NS: &str = "fix";
const WAIT: Duration = Duration::from_secs(60);

/// `[namespaces.fix.targets.<name>]` with the misbehave fixture delivering
/// everything and `reconcile = <mode>`; `extra` lines go in the table.
fn misbehave_target(name: &str, mode: &str, extra: &str) -> String {
    format!(
        r#"
[namespaces.{NS}.targets.{name}]
plugin = "{}"
call_timeout_ms = 2000
quarantine_after = 3
{extra}
config = {{ mode = "ok", reconcile = "{mode}" }}
"#,
        plugin("fixture-misbehave").display()
    )
}

/// `[namespaces.fix.targets.<name>]` with an http plugin build posting to `sink`.
fn http_target(name: &str, sink: &HttpSink, build: &std::path::Path, extra: &str) -> String {
    format!(
        r#"
[namespaces.{NS}.targets.{name}]
plugin = "{}"
allow_http = ["{url}"]
{extra}
config = {{ url = "{url}hook" }}
"#,
        build.display(),
        url = sink.url()
    )
}

fn namespace(targets: &[String]) -> String {
    format!("\n[namespaces.{NS}]\npartitions = 2\n{}", targets.concat())
}

fn reconcile_of(w: &Wharf, target: &str) -> Value {
    w.target_status(NS, target)["reconcile"].clone()
}

fn runs(w: &Wharf, target: &str, result: &str) -> f64 {
    w.metric("wharf_reconcile_runs_total", &[("namespace", NS), ("target", target), ("result", result)])
        .unwrap_or(0.0)
}

fn counter(w: &Wharf, name: &str, target: &str) -> Option<f64> {
    w.metric(name, &[("namespace", NS), ("target", target)])
}

/// Waits until every target's plugin is ready.
fn all_ready(w: &Wharf, targets: &[&str]) {
    eventually(WAIT, "every plugin ready", || {
        targets.iter().all(|t| w.target_status(NS, t)["plugin"]["state"] == json!("ready")).then_some(())
    });
}

#[test]
fn passes_run_every_interval_and_show_in_metrics_and_status_and_a_trap_leaves_delivery_alone() {
    let sink = HttpSink::start();
    let every = "reconcile_interval_ms = 200";
    let wharf = Wharf::start(&namespace(&[
        misbehave_target("counting", "count", every),
        misbehave_target("erring", "errors", &format!("{every}\nreconcile_budget_ms = 150")),
        misbehave_target("trapping", "trap", every),
        misbehave_target("plain", "count", ""),
        http_target("old", &sink, &fixture("wit-0.3.0/http.wasm"), every),
    ]));
    all_ready(&wharf, &["counting", "erring", "trapping", "plain", "old"]);

    // Passes come and counts grow: the fixture repairs 1, 2, 3, ... on its
    // n-th pass of one instance.
    let st = eventually(WAIT, "four counting passes", || {
        let r = reconcile_of(&wharf, "counting");
        (r["runs"].as_u64() >= Some(4)).then_some(r)
    });
    assert_eq!(st["state"], json!("scheduled"), "{st}");
    assert_eq!((st["interval_ms"].as_u64(), st["budget_ms"].as_u64()), (Some(200), Some(1000)), "{st}");
    assert_eq!(st["last_result"], json!("ok"), "{st}");
    assert!(st["last_run_ms"].as_u64().is_some_and(|t| t > 1_600_000_000_000), "{st}");
    assert!(st["next_in_ms"].as_u64().is_some_and(|n| n <= 200), "{st}");
    let n = st["runs"].as_u64().unwrap_or_default();
    assert_eq!(st["repaired"].as_u64(), Some(n), "the n-th pass repairs n: {st}");
    assert_eq!(st["repaired_total"].as_u64(), Some(n * (n + 1) / 2), "{st}");
    assert_eq!(st["errors"], json!([]), "{st}");
    let before = counter(&wharf, "wharf_reconcile_repaired_total", "counting").unwrap_or_default();
    assert!(before >= 10.0, "1 + 2 + 3 + 4 at least: {before}");
    eventually(WAIT, "more passes and more repaired in /metrics", || {
        let grown = runs(&wharf, "counting", "ok") >= 6.0
            && counter(&wharf, "wharf_reconcile_repaired_total", "counting") > Some(before);
        grown.then_some(())
    });
    assert_eq!(counter(&wharf, "wharf_reconcile_errors_total", "counting"), Some(0.0));

    // Errors: counted, the last few in status, each pass still repairing.
    let st = eventually(WAIT, "erring passes", || {
        let r = reconcile_of(&wharf, "erring");
        (r["runs"].as_u64() >= Some(6)).then_some(r)
    });
    assert_eq!((st["last_result"].clone(), st["budget_ms"].as_u64()), (json!("errors"), Some(150)), "{st}");
    let errors = st["errors"].as_array().cloned().unwrap_or_default();
    assert_eq!(errors.len(), 5, "the last five errors: {st}");
    assert!(errors.iter().all(|e| e.as_str().is_some_and(|e| e.contains("left one"))), "{st}");
    assert!(runs(&wharf, "erring", "errors") >= 6.0);
    assert!(counter(&wharf, "wharf_reconcile_errors_total", "erring") >= Some(6.0));
    assert!(counter(&wharf, "wharf_reconcile_repaired_total", "erring") >= Some(6.0));

    // A plugin built against 0.3.0 has no reconcile: reported, never called.
    let old = reconcile_of(&wharf, "old");
    assert_eq!(old["state"], json!("unsupported"), "{old}");
    let reason = old["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("wharf:target@0.3.0") && reason.contains("no reconcile"), "{old}");
    assert_eq!((old["runs"].as_u64(), old["next_in_ms"].clone()), (Some(0), Value::Null), "{old}");
    assert!(wharf.log().contains("which has no reconcile"), "a warning at load");
    assert_eq!(wharf.metric("wharf_reconcile_runs_total", &[("target", "old")]), None);

    // Without an interval there is no schedule at all.
    assert_eq!(reconcile_of(&wharf, "plain"), Value::Null);
    assert_eq!(wharf.metric("wharf_reconcile_runs_total", &[("target", "plain")]), None);

    // A trapping reconcile, well past quarantine_after (3), is counted and
    // logged; the target stays ready and delivers everything.
    eventually(WAIT, "five trapping passes", || (runs(&wharf, "trapping", "trap") >= 5.0).then_some(()));
    let st = reconcile_of(&wharf, "trapping");
    assert_eq!(st["last_result"], json!("trap"), "{st}");
    assert!(st["errors"][0].as_str().is_some_and(|e| e.contains("reconcile panics on purpose")), "{st}");
    for i in 0..20 {
        assert_eq!(wharf.write(NS, Some(&format!("k{i}")), b"x").status, 200);
    }
    for t in ["trapping", "counting", "old"] {
        eventually(WAIT, "every message delivered", || {
            (wharf.target_delivery_sum(NS, t, "delivered_total") == 20).then_some(())
        });
    }
    let trapping = wharf.target_status(NS, "trapping");
    assert_eq!(trapping["plugin"]["state"], json!("ready"), "{trapping}");
    assert_eq!(wharf.target_delivery_sum(NS, "trapping", "dead_lettered_total"), 0);
    assert_eq!(
        wharf.metric("wharf_plugin_failures_total", &[("target", "trapping"), ("kind", "trap")]),
        Some(0.0)
    );
    assert!(runs(&wharf, "trapping", "trap") >= 5.0);
}

/// `PUT /v1/admin/namespaces/fix/plugin?target=<target>` with a component.
fn register(w: &Wharf, target: &str, file: &std::path::Path) {
    let bytes = std::fs::read(file).expect("plugin bytes");
    let url = w.url(&format!("/v1/admin/namespaces/{NS}/plugin?target={target}"));
    let mut r = wharf_tests::agent()
        .put(&url)
        .header("content-type", "application/wasm")
        .send(&bytes[..])
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
    assert_eq!(r.status().as_u16(), 200, "{}", r.body_mut().read_to_string().unwrap_or_default());
}

#[test]
fn a_replaced_plugin_takes_over_the_schedule() {
    let sink = HttpSink::start();
    let wharf = Wharf::start(&namespace(&[http_target(
        "hook",
        &sink,
        &fixture("wit-0.3.0/http.wasm"),
        "reconcile_interval_ms = 200",
    )]));
    all_ready(&wharf, &["hook"]);
    eventually(WAIT, "unsupported", || {
        (reconcile_of(&wharf, "hook")["state"] == json!("unsupported")).then_some(())
    });

    // Today's http plugin has reconcile (the SDK's default: nothing to repair).
    register(&wharf, "hook", &plugin("http"));
    let st = eventually(WAIT, "passes of the new plugin", || {
        let r = reconcile_of(&wharf, "hook");
        (r["state"] == json!("scheduled") && r["runs"].as_u64() >= Some(3)).then_some(r)
    });
    assert_eq!((st["last_result"].clone(), st["repaired_total"].as_u64()), (json!("ok"), Some(0)), "{st}");
    assert!(runs(&wharf, "hook", "ok") >= 3.0);

    // Back to the 0.3.0 build: the schedule stops calling it.
    register(&wharf, "hook", &fixture("wit-0.3.0/http.wasm"));
    eventually(WAIT, "unsupported again", || {
        (reconcile_of(&wharf, "hook")["state"] == json!("unsupported")).then_some(())
    });
    let after = runs(&wharf, "hook", "ok");
    assert_eq!(wharf.write(NS, Some("k"), b"still delivered").status, 200);
    eventually(WAIT, "the message at the sink", || {
        sink.accepted().into_iter().find(|r| r.body == b"still delivered")
    });
    // At most one pass that was already under way when the plugin switched.
    assert!(runs(&wharf, "hook", "ok") <= after + 1.0);
}
