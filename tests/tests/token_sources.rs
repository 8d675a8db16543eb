//! Bearer tokens from a file or an environment variable instead of the
//! config text (`{ token_file = "..." }`, `{ token_env = "VAR" }` entries of
//! `tokens` and `admin_tokens`): they authorize like inline tokens, a
//! rotated file applies on SIGHUP and on `POST /v1/admin/reload`, a
//! rotation that leaves no usable token changes nothing, and a bad entry is
//! a config error naming the key and the file's absolute path.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::{HttpSink, Wharf, agent, b64, eventually, wharf_bin};

/// Exit code for a configuration error.
const EXIT_CONFIG: i32 = 64;

/// `method path` with `Authorization: Bearer <token>` when given: status and body.
fn call(w: &Wharf, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let url = w.url(path);
    let auth = token.map(|t| format!("Bearer {t}"));
    let agent = agent();
    let result = match method {
        "GET" => {
            let mut r = agent.get(&url);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.call()
        }
        _ => {
            let mut r = agent.post(&url);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.send_json(json!({"payload": b64(b"hello")}))
        }
    };
    let mut reply = result.expect("request");
    let status = reply.status().as_u16();
    let text = reply.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn write_status(w: &Wharf, token: Option<&str>) -> u16 {
    call(w, "POST", "/v1/namespaces/orders/messages", token).0
}

#[test]
fn namespace_tokens_from_a_file_and_the_environment_authorize_and_a_rotated_file_applies_on_sighup() {
    let sink = HttpSink::start();
    let secrets = tempfile::tempdir().expect("tempdir");
    let file = secrets.path().join("orders.token");
    std::fs::write(&file, "from-file\n").expect("write token");
    let extra = format!(
        "tokens = [{{ token_file = {:?} }}, {{ token_env = \"WHARF_TEST_ORDERS_TOKEN\" }}]",
        file.display().to_string()
    );
    let w = Wharf::start_with_env(
        &sink.namespace("orders", 1, &extra),
        &[("WHARF_TEST_ORDERS_TOKEN", "from-env")],
    );

    assert_eq!(write_status(&w, Some("from-file")), 200, "the file's token, its newline removed");
    assert_eq!(write_status(&w, Some("from-env")), 200, "the variable's token");
    assert_eq!(write_status(&w, None), 401);
    assert_eq!(write_status(&w, Some("WHARF_TEST_ORDERS_TOKEN")), 403, "the variable's name is no token");

    // Rotation: new contents, then SIGHUP.
    std::fs::write(&file, "rotated\n").expect("rotate token");
    w.hangup();
    eventually(Duration::from_secs(30), "the rotated token accepted", || {
        (write_status(&w, Some("rotated")) == 200).then_some(())
    });
    assert_eq!(write_status(&w, Some("from-file")), 403, "the old file token no longer works");
    assert_eq!(write_status(&w, Some("from-env")), 200, "the variable's token stays");

    // A rotation that leaves the file empty changes nothing.
    let failures = || w.log().matches("config reload on sighup failed").count();
    let before = failures();
    std::fs::write(&file, "").expect("empty the token file");
    w.hangup();
    eventually(Duration::from_secs(30), "the failed reload logged", || (failures() > before).then_some(()));
    let log = w.log();
    assert!(log.contains("namespaces.orders.tokens[0].token_file"), "the key is named:\n{log}");
    assert!(log.contains(&file.display().to_string()) && log.contains("is empty"), "{log}");
    assert_eq!(write_status(&w, Some("rotated")), 200, "the tokens in force stay");
    assert!(!log.contains("rotated\""), "a token never reaches the log:\n{log}");
}

#[test]
fn an_admin_token_from_a_file_rotates_on_an_admin_reload() {
    let sink = HttpSink::start();
    let secrets = tempfile::tempdir().expect("tempdir");
    let file = secrets.path().join("admin.token");
    std::fs::write(&file, "admin-one\r\n").expect("write token");
    let server = format!("admin_tokens = [{{ token_file = {:?} }}]\n", file.display().to_string());
    let w = Wharf::start_with_server(&server, &sink.namespace("orders", 1, ""), "all");

    assert_eq!(call(&w, "GET", "/v1/status", Some("admin-one")).0, 200, "CRLF removed too");
    assert_eq!(call(&w, "GET", "/v1/status", None).0, 401);

    std::fs::write(&file, "admin-two\n").expect("rotate token");
    let (status, report) = call(&w, "POST", "/v1/admin/reload", Some("admin-one"));
    assert_eq!((status, &report["tokens_changed"]), (200, &json!(true)), "{report}");
    assert_eq!(call(&w, "GET", "/v1/status", Some("admin-two")).0, 200);
    assert_eq!(call(&w, "GET", "/v1/status", Some("admin-one")).0, 403);
    let (status, report) = call(&w, "POST", "/v1/admin/reload", Some("admin-two"));
    assert_eq!((status, &report["tokens_changed"]), (200, &json!(false)), "the same file again: {report}");
}

/// Runs `wharf <cmd> --config <file>` with `env` set and
/// `WHARF_TEST_UNSET_TOKEN` unset: (exit code, stderr).
fn run(cmd: &str, file: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let mut c = Command::new(wharf_bin());
    c.args([cmd, "--config"]).arg(file).env("RUST_LOG", "warn").env_remove("WHARF_TEST_UNSET_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run wharf");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A config at `<dir>/conf/wharf.toml` with `admin_tokens = <tokens>`.
fn config_with(dir: &Path, tokens: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("conf")).expect("mkdir");
    let file = dir.join("conf/wharf.toml");
    std::fs::write(&file, format!("[server]\nhttp = \"127.0.0.1:0\"\nadmin_tokens = {tokens}\n"))
        .expect("config");
    file
}

fn assert_config_error((code, stderr): (i32, String), key: &str, also: &[&str]) {
    assert_eq!(code, EXIT_CONFIG, "{stderr}");
    assert!(stderr.contains(&format!(": {key}: ")), "no key {key} in: {stderr}");
    for a in also {
        assert!(stderr.contains(a), "no {a:?} in: {stderr}");
    }
}

#[test]
fn a_bad_token_entry_is_a_config_error_naming_the_key_and_the_absolute_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().canonicalize().expect("canonical tempdir");

    // A relative path resolves against the config file's folder.
    let file = config_with(&base, r#"[{ token_file = "../secrets/./missing.token" }]"#);
    let missing = base.join("secrets/missing.token").display().to_string();
    for cmd in ["check-config", "serve"] {
        assert_config_error(run(cmd, &file, &[]), "server.admin_tokens[0].token_file", &[&missing]);
    }

    let file = config_with(&base, r#"["inline", { token = "a", token_file = "a.token" }]"#);
    assert_config_error(run("check-config", &file, &[]), "server.admin_tokens[1]", &["exactly one of"]);
    let (_, stderr) = run("serve", &file, &[]);
    assert!(!stderr.contains("inline"), "no token echoed: {stderr}");

    std::fs::create_dir_all(base.join("secrets")).expect("mkdir");
    std::fs::write(base.join("secrets/empty.token"), "\n").expect("write");
    let file = config_with(&base, r#"[{ token_file = "../secrets/empty.token" }]"#);
    assert_config_error(run("check-config", &file, &[]), "server.admin_tokens[0].token_file", &["is empty"]);

    let file = config_with(&base, r#"[{ token_env = "WHARF_TEST_UNSET_TOKEN" }]"#);
    assert_config_error(
        run("check-config", &file, &[]),
        "server.admin_tokens[0].token_env",
        &["WHARF_TEST_UNSET_TOKEN", "not set"],
    );
    let (code, stderr) = run("check-config", &file, &[("WHARF_TEST_UNSET_TOKEN", "")]);
    assert_config_error((code, stderr), "server.admin_tokens[0].token_env", &["is empty"]);
    let (code, stderr) = run("check-config", &file, &[("WHARF_TEST_UNSET_TOKEN", "set-now")]);
    assert_eq!(code, 0, "{stderr}");
}
