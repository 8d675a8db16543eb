//! What the `wharf` CLI prints for people and scripts, as snapshots
//! (snapbox): the status table, errors with hints, `--json` errors, empty
//! log directories, a held partition lock, a closed stdout, help texts,
//! `check-config` errors.
//!
//! Ports, temp paths, digests and versions are redacted (`[PORT]`, `[DIR]`,
//! `[..]`). `SNAPSHOTS=overwrite cargo test -p wharf-tests --test
//! cli_output` rewrites the inline snapshots.

use std::process::{Command, Stdio};

use serde_json::{Value, json};
use snapbox::cmd::Command as Cmd;
use snapbox::{Assert, Redactions, str};
use wharf_tests::{HttpSink, Wharf, b64, plugin, root, wharf_bin};

/// A `wharf` command whose output is compared with ports and paths redacted.
fn wharf(redact: &[(&'static str, String)]) -> Cmd {
    let mut r = Redactions::new();
    for (placeholder, value) in redact {
        r.insert(placeholder, value.clone()).expect("redaction");
    }
    let assert = Assert::new().action_env("SNAPSHOTS").redact_with(r);
    Cmd::new(wharf_bin())
        .with_assert(assert)
        .env_remove("WHARF_TOKEN")
        .env_remove("WHARF_URL")
        .env_remove("RUST_LOG")
}

fn port_of(w: &Wharf) -> (&'static str, String) {
    ("[PORT]", w.port.to_string())
}

#[test]
fn status_is_a_table_and_a_server_without_scheme_is_http() {
    let sink = HttpSink::start();
    let w = Wharf::start(&sink.namespace("ledger", 2, ""));
    // The scheme may be left out: `127.0.0.1:PORT` is `http://127.0.0.1:PORT`.
    wharf(&[port_of(&w)])
        .args(["status", "--server", &format!("127.0.0.1:{}", w.port)])
        .assert()
        .success()
        .stderr_eq(str![""])
        .stdout_eq(str![[r#"
wharf [..] at http://127.0.0.1:[PORT] (durability: [..])

namespace ledger: plugin ready [..] (sha256:[..]), dlq 0
  PART  HEAD  DURABLE  WATERMARK  BACKLOG  IN FLIGHT  RETRYING KEYS  BREAKER  BATCH  STATE
     0     0        0          0        0          0              0  closed   [..]  ok
     1     0        0          0        0          0              0  closed   [..]  ok
  target default: plugin ready [..], dlq 0
    LANE  WATERMARK  BACKLOG  LAG MS  WINDOW  DELIVERED  RETRYING KEYS  BREAKER
       0          0        0       0       0          0              0  closed
       1          0        0       0       0          0              0  closed

"#]]);
    // `dlq purge` says what it did in words; JSON only with --json.
    wharf(&[port_of(&w)])
        .args(["dlq", "purge", "ledger", "--server", &format!("http://127.0.0.1:{}/", w.port)])
        .assert()
        .success()
        .stderr_eq(str![""])
        .stdout_eq(str![[r#"
purged 0 entries from the dlq of ledger[..]

"#]]);
    let out = wharf(&[port_of(&w)])
        .args(["dlq", "purge", "ledger", "--json", "--server", &format!("127.0.0.1:{}", w.port)])
        .output()
        .expect("purge --json");
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["purged"], json!(0), "{v}");
    // Logs written to a file carry no colour codes.
    assert!(!w.log().is_empty() && !w.log().contains('\u{1b}'), "{:?}", w.log());
}

#[test]
fn an_unknown_scheme_is_explained() {
    wharf(&[])
        .args(["status", "--server", "ftp://127.0.0.1:7070"])
        .assert()
        .failure()
        .stdout_eq(str![""])
        .stderr_eq(str![[r#"
error: --server ftp://127.0.0.1:7070: only http:// and https:// are supported, not ftp://
hint: pass the address of the sidecar's HTTP API (server.http in wharf.toml), e.g. --server http://127.0.0.1:7070

"#]]);
}

#[test]
fn a_401_prints_the_error_and_a_hint_to_set_wharf_token() {
    let sink = HttpSink::start();
    let w = Wharf::start_with_server(r#"admin_tokens = ["s3cret"]"#, &sink.namespace("ledger", 1, ""), "all");
    let server = format!("http://127.0.0.1:{}", w.port);
    wharf(&[port_of(&w)])
        .args(["status", "--server", &server])
        .assert()
        .failure()
        .stdout_eq(str![""])
        .stderr_eq(str![[r#"
error: an Authorization: Bearer token is required (GET /v1/status: 401)
hint: this server requires a token: set WHARF_TOKEN to one of server.admin_tokens (or of the namespace's tokens) in its wharf.toml

"#]]);
    wharf(&[port_of(&w)])
        .args(["reload", "--server", &server])
        .env("WHARF_TOKEN", "wrong")
        .assert()
        .failure()
        .stdout_eq(str![""])
        .stderr_eq(str![[r#"
error: this token may not access this resource (POST /v1/admin/reload: 403)
hint: the server does not accept WHARF_TOKEN here: admin commands (status, reload, plugin) need one of server.admin_tokens

"#]]);
    wharf(&[port_of(&w)])
        .args(["status", "--server", &server])
        .env("WHARF_TOKEN", "s3cret")
        .assert()
        .success();
}

#[test]
fn reload_json_against_a_dead_server_prints_a_json_error() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let cmd = wharf(&[("[PORT]", port.to_string())]).args([
        "reload",
        "--json",
        "--server",
        &format!("127.0.0.1:{port}"),
    ]);
    let out = cmd.assert().failure().stderr_eq(str![""]).stdout_eq(str![[r#"
{"error":{"code":"unreachable","hint":"is `wharf serve` running? Point --server (or WHARF_URL) at its HTTP address (server.http in wharf.toml)","message":"cannot reach wharf at http://127.0.0.1:[PORT]: [..]"}}

"#]]);
    let v: Value = serde_json::from_slice(&out.get_output().stdout).expect("one JSON object");
    assert_eq!(v["error"]["code"], json!("unreachable"));
    // Without --json: the same error in words.
    wharf(&[("[PORT]", port.to_string())])
        .args(["reload", "--server", &format!("127.0.0.1:{port}")])
        .assert()
        .failure()
        .stdout_eq(str![""])
        .stderr_eq(str![[r#"
error: cannot reach wharf at http://127.0.0.1:[PORT]: [..]
hint: is `wharf serve` running? Point --server (or WHARF_URL) at its HTTP address (server.http in wharf.toml)

"#]]);
}

#[test]
fn log_dump_and_verify_on_a_dir_without_partitions_fail_and_say_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    let redact = [("[DIR]", d.clone())];
    wharf(&redact).args(["log", "verify", &d]).assert().failure().stdout_eq(str![""]).stderr_eq(str![[r#"
error: no log partition under [DIR]
hint: a partition directory holds segment files (<sequence>.seg); the data dir is server.data_dir in wharf.toml, partitions are <data_dir>/<namespace>/p<N>

"#]]);
    wharf(&redact).args(["log", "dump", &d]).assert().failure().stdout_eq(str![""]).stderr_eq(str![[r#"
error: no log partition under [DIR]
hint: a partition directory holds segment files (<sequence>.seg); the data dir is server.data_dir in wharf.toml, partitions are <data_dir>/<namespace>/p<N>

"#]]);
    let out = wharf(&redact).args(["log", "verify", "--json", &d]).output().expect("verify --json");
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("a JSON error on stdout");
    assert_eq!(v["error"]["code"], json!("no_partition"));
    wharf(&redact).args(["log", "dump", &format!("{d}/missing")]).assert().failure().stderr_eq(str![[r#"
error: [DIR]/missing is not a directory

"#]]);
}

#[test]
fn log_dump_of_a_data_dir_names_its_partitions_and_salvage_names_the_running_wharf() {
    let sink = HttpSink::start();
    let w = Wharf::start(&sink.namespace("ledger", 1, ""));
    let data = w.data_dir().display().to_string();
    let redact = [("[DATA]", data.clone())];
    wharf(&redact).args(["log", "dump", &data]).assert().failure().stdout_eq(str![""]).stderr_eq(str![[r#"
error: [DATA] is not a partition directory
hint: it holds 3 partition(s): [DATA]/ledger/dlq, [DATA]/ledger/idempotency, [DATA]/ledger/p0

"#]]);
    wharf(&redact)
        .args(["log", "salvage", &format!("{data}/ledger/p0")])
        .assert()
        .failure()
        .stdout_eq(str![""])
        .stderr_eq(str![[r#"
error: partition [DATA]/ledger/p0 is locked: a running wharf holds its lock
hint: salvage runs offline: stop the wharf serving this data dir first, then run salvage again

"#]]);
}

#[test]
fn a_second_sidecar_on_the_same_data_dir_is_refused_before_it_opens_anything() {
    let sink = HttpSink::start();
    let w = Wharf::start(&sink.namespace("ledger", 1, ""));
    let out = Command::new(wharf_bin())
        .args(["serve", "--config"])
        .arg(w.config_path())
        .stdin(Stdio::null())
        .output()
        .expect("run a second wharf serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let data = w.data_dir().display().to_string();
    assert!(stderr.contains(&format!("data dir {data} is in use by another wharf")), "stderr: {stderr}");
    // The first one still takes writes.
    let r = w.post("/v1/namespaces/ledger/messages", &json!({"key": "k", "payload": b64(b"after")}));
    assert_eq!((r.status, r.body["durable"].clone()), (200, json!(true)), "{:?}", r.body);
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let sink = HttpSink::start();
    sink.set(|b| b.fail_all = Some(503)); // keep the records in the log
    let w = Wharf::start(&sink.namespace("ledger", 1, ""));
    for i in 0..50 {
        let r = w.post(
            "/v1/namespaces/ledger/messages",
            &json!({"key": format!("k{i}"), "payload": b64(format!("record-{i}").as_bytes())}),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let server = format!("http://127.0.0.1:{}", w.port);
    let pdir = w.data_dir().join("ledger/p0");
    plugin("memcached");
    let example = root().join("examples/wharf.toml").display().to_string();
    let runs: [Vec<String>; 6] = [
        vec![
            "dlq".into(),
            "list".into(),
            "ledger".into(),
            "--json".into(),
            "--server".into(),
            server.clone(),
        ],
        vec!["status".into(), "--server".into(), server.clone()],
        vec!["log".into(), "dump".into(), pdir.display().to_string()],
        vec!["log".into(), "dump".into(), "--json".into(), pdir.display().to_string()],
        vec!["check-config".into(), "--config".into(), example.clone()],
        vec!["check-config".into(), "--json".into(), "--config".into(), example],
    ];
    for args in runs {
        // The reading end is closed before wharf writes: `wharf … | head -0`.
        let mut child = Command::new(wharf_bin())
            .args(&args)
            .env_remove("WHARF_TOKEN")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert_eq!(stderr, "", "{args:?}");
    }
    // And through a real pipe: `wharf log dump … | head -1`.
    let sh = Command::new("sh")
        .arg("-c")
        .arg(r#""$0" log dump "$1" | head -1"#)
        .arg(wharf_bin())
        .arg(&pdir)
        .output()
        .expect("sh");
    let stdout = String::from_utf8_lossy(&sh.stdout);
    assert!(stdout.starts_with("seq=0 ") && stdout.lines().count() == 1, "{stdout}");
    assert!(!String::from_utf8_lossy(&sh.stderr).contains("panicked"), "{:?}", sh.stderr);
}

#[test]
fn check_config_problems_are_error_lines_and_exit_64_also_on_a_closed_stdout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("wharf.toml");
    let target = format!("plugin = {:?}\nconfig = {{ servers = \"127.0.0.1:11211\" }}", plugin("memcached"));
    let body = format!("[namespaces.orders]\npartitions = 0\n[namespaces.orders.target]\n{target}\n");
    std::fs::write(&file, body).expect("write config");
    let redact = [("[DIR]", dir.path().display().to_string())];
    wharf(&redact)
        .args(["check-config", "--config"])
        .arg(&file)
        .assert()
        .code(64)
        .stdout_eq(str![""])
        .stderr_eq(str![[r#"
error: [DIR]/wharf.toml: namespaces.orders.partitions: must be between 1 and 1024 (line 2: partitions = 0)

"#]]);
    // Nobody reads the JSON report: the exit code still says it failed.
    let mut child = Command::new(wharf_bin())
        .args(["check-config", "--json", "--config"])
        .arg(&file)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!((out.status.code(), stderr.as_ref()), (Some(64), ""));
}

#[test]
fn a_failed_plugin_register_names_the_users_file() {
    let sink = HttpSink::start();
    let w = Wharf::start(&sink.namespace("ledger", 1, ""));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("my-plugin.wasm");
    std::fs::write(&file, b"not a wasm component").expect("write");
    let d = dir.path().display().to_string();
    let out = wharf(&[("[DIR]", d), port_of(&w)])
        .args(["plugin", "register", "--namespace", "ledger", "--server", &format!("127.0.0.1:{}", w.port)])
        .arg(&file)
        .assert()
        .failure()
        .stdout_eq(str![""])
        .stderr_eq(str![[r#"
error: [..][DIR]/my-plugin.wasm[..] (PUT /v1/admin/namespaces/ledger/plugin: 422)

"#]]);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(!stderr.contains("/plugins/"), "names the server's copy: {stderr}");
}

/// Every argument of every command says what it is for.
#[test]
fn every_argument_has_help() {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        let path = format!("{path} {}", cmd.get_name());
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() && sub.get_long_about().is_none() && sub.get_name() != "help" {
                missing.push(format!("{path} {} (no about)", sub.get_name()));
            }
            walk(sub, &path, missing);
        }
    }
    let mut cmd = wharf::cli::command();
    cmd.build();
    let mut missing = Vec::new();
    walk(&cmd, "", &mut missing);
    assert!(missing.is_empty(), "arguments without help:\n{}", missing.join("\n"));

    // `plugin check` reads a file: it takes no --server.
    let check = cmd.find_subcommand("plugin").and_then(|p| p.find_subcommand("check")).expect("plugin check");
    assert!(check.get_arguments().all(|a| a.get_id() != "server"));
    let register =
        cmd.find_subcommand("plugin").and_then(|p| p.find_subcommand("register")).expect("register");
    assert!(register.get_arguments().any(|a| a.get_id() == "server"));
}

#[test]
fn serve_help_says_what_the_roles_need() {
    wharf(&[]).args(["serve", "--help"]).assert().success().stdout_eq(str![[r#"
Run the sidecar: accept writes, make them durable, deliver them

Usage: wharf serve [OPTIONS]

Options:
  -c, --config <CONFIG>
          The config file
...
      --role <ROLE>
          `processor` takes writes only, `consumer` delivers only, `all` does both. On the embedded log, run one processor and one consumer with the same namespaces and server.data_dir (start the processor first); on a Kafka or SQS namespace, any number, each with its own data_dir

          Possible values:
          - processor: Accepts writes; does not deliver
          - consumer:  Delivers; refuses writes
          - all:       Both (the default)
...
"#]]);
}
