//! `wharf check-config`: the shipped examples pass as written (the
//! cassandra one also against a reachable cluster, the fake CQL server,
//! whose table its `init` checks); a config `serve` would trip over fails
//! with exit 64, naming the dotted key, the line and the reason (syntax,
//! type, unknown key, inconsistent value, missing file, plugin `init`).

use std::path::Path;
use std::process::Command;

use wharf_tests::cql::FakeCql;
use wharf_tests::{plugin, root, wharf_bin};

/// Exit code for a configuration error.
const EXIT_CONFIG: i32 = 64;

/// Runs `wharf check-config --config <file>` from `dir`: (exit code, stdout, stderr).
fn check_in(dir: &Path, file: &Path) -> (i32, String, String) {
    let out = Command::new(wharf_bin())
        .current_dir(dir)
        .args(["check-config", "--config"])
        .arg(file)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run wharf check-config");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// Writes `body` as a config in a fresh directory and checks it.
fn check_text(body: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("wharf.toml");
    std::fs::write(&file, body).expect("write config");
    check_in(dir.path(), &file)
}

/// A valid namespace `orders` on the memcached plugin, with `extra` inside it.
fn orders(extra: &str) -> String {
    format!(
        "[namespaces.orders]\n{extra}\n[namespaces.orders.target]\nplugin = \"{}\"\nconfig = {{ servers = \"127.0.0.1:11211\" }}\n",
        plugin("memcached").display()
    )
}

/// Asserts a config error naming `key` (and `also`) on stderr.
fn assert_rejected((code, _, stderr): (i32, String, String), key: &str, also: &[&str]) {
    assert_eq!(code, EXIT_CONFIG, "stderr: {stderr}");
    assert!(stderr.contains(&format!(": {key}: ")), "no key {key} in: {stderr}");
    for a in also {
        assert!(stderr.contains(a), "no {a:?} in: {stderr}");
    }
}

#[test]
fn every_shipped_example_passes_from_the_repo_root() {
    plugin("memcached");
    plugin("http");
    plugin("replica");
    plugin("cassandra");
    for name in ["wharf", "http", "kafka", "sqs", "replica-primary", "replica", "cassandra"] {
        let file = format!("examples/{name}.toml");
        let (code, stdout, stderr) = check_in(&root(), Path::new(&file));
        assert_eq!(code, 0, "{file}: stdout {stdout} stderr {stderr}");
        assert!(stdout.contains("ok") && stdout.contains("init ok"), "{file}: {stdout}");
    }
}

/// `examples/cassandra.toml` with its contact points (and `allow_connect`)
/// at `addr` and its paths absolute, so it can be checked from anywhere.
fn cassandra_example_at(addr: &str) -> String {
    let text = std::fs::read_to_string(root().join("examples/cassandra.toml")).expect("the example");
    let replaced = [
        ("\"127.0.0.1:9042,127.0.0.1:9043\"", format!("{addr:?}")),
        ("[\"127.0.0.1:9042\", \"127.0.0.1:9043\"]", format!("[{addr:?}]")),
        ("\"../target/plugins/cassandra.wasm\"", format!("{:?}", plugin("cassandra"))),
        ("\"../data/cassandra\"", "\"data\"".to_string()),
    ];
    replaced.iter().fold(text, |text, (from, to)| {
        assert!(text.contains(from), "the example no longer holds {from}");
        text.replace(from, to)
    })
}

#[test]
fn the_cassandra_example_passes_against_a_cluster_that_has_its_table() {
    let cluster = FakeCql::start().with_users_table();
    let (code, stdout, stderr) = check_text(&cassandra_example_at(&cluster.addr()));
    assert_eq!(code, 0, "stdout {stdout} stderr {stderr}");
    assert!(stdout.contains("users/default") && stdout.contains("init ok"), "{stdout}");
    assert!(cluster.requests("PREPARE") >= 1, "init did not check the statement");
    // Without the table, `init` refuses the config.
    let empty = FakeCql::start();
    assert_rejected(
        check_text(&cassandra_example_at(&empty.addr())),
        "namespaces.users.target.config",
        &["init failed", "unconfigured table"],
    );
}

#[test]
fn replication_settings_that_cannot_work_are_config_errors() {
    let kafka = "queue = { kind = \"kafka\", brokers = \"127.0.0.1:9\", topic = \"t\" }\n";
    let body = format!(
        "[namespaces.r]\nmode = \"replica\"\n{kafka}[namespaces.r.target]\nplugin = \"{}\"\nconfig = {{ url = \"http://x/\" }}\n",
        plugin("http").display()
    );
    assert_rejected(check_text(&body), "namespaces.r.mode", &["embedded log"]);
    let body = format!(
        "[namespaces.q]\n{kafka}[namespaces.q.target]\nplugin = \"{}\"\nordering = \"partition\"\nconfig = {{ url = \"http://x/\" }}\n",
        plugin("http").display()
    );
    assert_rejected(check_text(&body), "namespaces.q.target.ordering", &["embedded log"]);
    let body = format!(
        "[namespaces.q.target]\nplugin = \"{}\"\nordering = \"sideways\"\nconfig = {{ url = \"http://x/\" }}\n",
        plugin("http").display()
    );
    assert_rejected(check_text(&body), "namespaces.q.target.ordering", &["sideways"]);
}

#[test]
fn a_plugin_whose_init_rejects_its_config_is_caught() {
    // The http plugin requires `url`.
    let body = format!(
        "[namespaces.hooks.target]\nplugin = \"{}\"\nconfig = {{ timeout_ms = 100 }}\n",
        plugin("http").display()
    );
    assert_rejected(
        check_text(&body),
        "namespaces.hooks.target.config",
        &["namespace hooks, target default", "init failed", "`url`"],
    );
    // The memcached plugin rejects a server that is not host:port.
    let body = format!(
        "[namespaces.cache.targets.mc]\nplugin = \"{}\"\nconfig = {{ servers = \"localhost\" }}\n",
        plugin("memcached").display()
    );
    assert_rejected(
        check_text(&body),
        "namespaces.cache.targets.mc.config",
        &["namespace cache, target mc", "`servers`"],
    );
}

#[test]
fn a_missing_plugin_file_is_named_by_its_absolute_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("conf")).expect("mkdir");
    std::fs::write(
        dir.path().join("conf/wharf.toml"),
        "[namespaces.a.target]\nplugin = \"../plugins/x.wasm\"\n",
    )
    .expect("write config");
    // Relative config path, relative plugin path: the message is absolute.
    let result = check_in(dir.path(), Path::new("conf/wharf.toml"));
    let want = format!(
        "no plugin file at {} (run `make build` first?)",
        dir.path().join("plugins/x.wasm").display()
    );
    assert_rejected(result, "namespaces.a.target.plugin", &[&want, "line 2"]);
    // A config file that is not there is named absolutely too.
    let (code, _, stderr) = check_in(dir.path(), Path::new("nope.toml"));
    assert_eq!(code, EXIT_CONFIG, "{stderr}");
    assert!(stderr.contains(&format!("cannot read {}", dir.path().join("nope.toml").display())), "{stderr}");
}

#[test]
fn a_syntax_error_names_the_key_and_line() {
    assert_rejected(
        check_text(&orders("partitions = = 4")),
        "namespaces.orders.partitions",
        &["line 2: partitions = = 4"],
    );
}

#[test]
fn a_type_error_names_the_dotted_key_and_line() {
    assert_rejected(
        check_text(&orders("[namespaces.orders.retry]\nmax_backoff_ms = \"soon\"")),
        "namespaces.orders.retry.max_backoff_ms",
        &["invalid type", "line 3: max_backoff_ms = \"soon\""],
    );
}

#[test]
fn an_unknown_key_names_the_dotted_key_and_line() {
    assert_rejected(
        check_text(&orders("[namespaces.orders.breaker]\nfailure = 3")),
        "namespaces.orders.breaker.failure",
        &["unknown field `failure`", "line 3: failure = 3"],
    );
}

#[test]
fn inconsistent_values_are_rejected_with_their_key() {
    let cases = [
        (
            "[namespaces.orders.retry]\ninitial_backoff_ms = 5000\nmax_backoff_ms = 100",
            "retry.max_backoff_ms",
        ),
        ("[namespaces.orders.breaker]\nfailures = 0", "breaker.failures"),
        ("[namespaces.orders.idempotency]\nwindow_ms = 0", "idempotency.window_ms"),
        ("[namespaces.orders.delivery]\nbatch_max = 0", "delivery.batch_max"),
        ("[namespaces.orders.delivery]\nbatch_max = 50\nmax_in_flight = 10", "delivery.max_in_flight"),
        ("[namespaces.orders.limits]\nmax_backlog_bytes = 0", "limits.max_backlog_bytes"),
        (
            "queue = { kind = \"sqs\", queue = \"o\", visibility_timeout_secs = 0 }",
            "queue.visibility_timeout_secs",
        ),
    ];
    for (extra, key) in cases {
        assert_rejected(check_text(&orders(extra)), &format!("namespaces.orders.{key}"), &["line "]);
    }
    let target_cases =
        [("call_timeout_ms = 0", "call_timeout_ms"), ("memory_limit_mib = 0", "memory_limit_mib")];
    for (line, key) in target_cases {
        let body = format!("{}{line}\n", orders(""));
        assert_rejected(check_text(&body), &format!("namespaces.orders.target.{key}"), &["must be"]);
    }
    let same_port = format!("[server]\nhttp = \"127.0.0.1:7999\"\ngrpc = \"127.0.0.1:7999\"\n{}", orders(""));
    assert_rejected(check_text(&same_port), "server.grpc", &["own port"]);
}

#[test]
fn json_output_lists_targets_and_errors() {
    let out = Command::new(wharf_bin())
        .current_dir(root())
        .args(["check-config", "--json", "--config", "examples/http.toml"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["ok"], true);
    assert_eq!(v["targets"][0]["namespace"], "webhooks");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("w.toml"), orders("partitions = 0")).expect("write");
    let out = Command::new(wharf_bin())
        .args(["check-config", "--json", "--config"])
        .arg(dir.path().join("w.toml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(EXIT_CONFIG));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["errors"][0]["key"], "namespaces.orders.partitions");
}
