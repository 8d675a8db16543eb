//! End to end: HTTP write → durable log → the cassandra Wasm plugin → a FAKE
//! CQL v4 server (`wharf_tests::cql::FakeCql`, in-process; not Apache
//! Cassandra, which cannot be installed on these machines).
//!
//! The stand-in itself is checked with the official DataStax Python driver
//! (`tests/cql_driver_check.py`; `make test-deps` installs it).
//!
//! Against a real cluster (opt-in; the table must exist, e.g.
//! `CREATE TABLE app.users (id text PRIMARY KEY, name text, age int, msg text)`):
//!
//! ```text
//! WHARF_CASSANDRA_CONTACT_POINTS=10.0.0.1:9042,10.0.0.2:9042 \
//! WHARF_CASSANDRA_KEYSPACE=app WHARF_CASSANDRA_TABLE=users \
//! [WHARF_CASSANDRA_USERNAME=... WHARF_CASSANDRA_PASSWORD=...] \
//!   cargo test --release -p wharf-tests --test cassandra
//! ```

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::cql::{CqlFault, FakeCql};
use wharf_tests::{Wharf, eventually, plugin, quick_retry, root, wharf_bin};

const WAIT: Duration = Duration::from_secs(30);

fn fake() -> FakeCql {
    FakeCql::start().with_users_table()
}

/// Namespace `users` (one partition) on the cassandra plugin at `fakes`,
/// with `extra` config entries (`, key = "value"`) and quick retries.
fn namespace(fakes: &[&FakeCql], extra: &str) -> String {
    let addrs: Vec<String> = fakes.iter().map(|f| f.addr()).collect();
    namespace_at(&addrs, "app", "users", extra)
}

/// Namespace `users` on the cassandra plugin at `points`, table
/// `keyspace.table`, with `extra` config entries and quick retries.
fn namespace_at(points: &[String], keyspace: &str, table: &str, extra: &str) -> String {
    let allow: Vec<String> = points.iter().map(|a| format!("{a:?}")).collect();
    format!(
        r#"
[namespaces.users]
partitions = 1

[namespaces.users.target]
plugin = "{}"
allow_connect = [{}]
config = {{ contact_points = "{}", keyspace = "{keyspace}", table = "{table}"{extra} }}
{}"#,
        plugin("cassandra").display(),
        allow.join(", "),
        points.join(","),
        quick_retry("users"),
    )
}

fn state(wharf: &Wharf, id: &str) -> String {
    wharf.lookup("users", id)["state"].as_str().unwrap_or_default().to_string()
}

fn delivered(wharf: &Wharf, id: &str) {
    eventually(WAIT, &format!("{id} delivered"), || (state(wharf, id) == "delivered").then_some(()));
}

fn row_ids(f: &FakeCql) -> Vec<Value> {
    f.writes().iter().map(|w| w.row["id"].clone()).collect()
}

#[test]
fn json_payloads_land_as_rows_in_order_with_write_timestamps() {
    let f = fake();
    let wharf = Wharf::start(&namespace(&[&f], ""));
    let ids: Vec<String> = (1..=3)
        .map(|i| {
            wharf.write_id("users", "u1", format!(r#"{{"id":"u1","name":"v{i}","age":{i}}}"#).as_bytes())
        })
        .collect();
    let other = wharf.write_id("users", "u2", br#"{"id":"u2","name":"Bo"}"#);
    for id in ids.iter().chain([&other]) {
        delivered(&wharf, id);
    }
    let writes = f.writes();
    let u1: Vec<&Value> = writes.iter().filter(|w| w.row["id"] == "u1").map(|w| &w.row["name"]).collect();
    assert_eq!(u1, [&json!("v1"), &json!("v2"), &json!("v3")], "{writes:?}");
    assert!(writes.iter().all(|w| w.consistency == "LocalQuorum"), "{writes:?}");
    let ts: Vec<i64> =
        writes.iter().filter(|w| w.row["id"] == "u1").map(|w| w.timestamp.expect("timestamp")).collect();
    assert!(ts.windows(2).all(|p| p[0] < p[1]), "USING TIMESTAMP grows per key: {ts:?}");
    let rows = f.rows("app", "users");
    assert_eq!(rows.len(), 2);
    assert_eq!(Value::Object(rows[0].clone()), json!({"id":"u1","name":"v3","age":3,"msg":null}));
    assert_eq!(Value::Object(rows[1].clone()), json!({"id":"u2","name":"Bo","age":null,"msg":null}));
}

#[test]
fn a_custom_statement_fills_named_markers_from_fields_key_and_id() {
    let f = fake();
    let stmt = ", statement = \"INSERT INTO app.users (id, name, msg) VALUES (:wharf_key, :name, :wharf_id) USING TIMESTAMP :wharf_timestamp\", consistency = \"QUORUM\"";
    let wharf = Wharf::start(&namespace(&[&f], stmt));
    let id = wharf.write_id("users", "grace", br#"{"name":"Grace Hopper","extra":1}"#);
    delivered(&wharf, &id);
    let w = f.writes();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(Value::Object(w[0].row.clone()), json!({"id":"grace","name":"Grace Hopper","msg":id}));
    assert_eq!(w[0].consistency, "Quorum");
}

#[test]
fn fails_over_to_the_second_contact_point_when_the_first_is_down() {
    let first = fake();
    first.set_down(true);
    let second = fake();
    let wharf = Wharf::start(&namespace(&[&first, &second], ""));
    let id = wharf.write_id("users", "a", br#"{"id":"a"}"#);
    delivered(&wharf, &id);
    assert_eq!(row_ids(&second), [json!("a")]);
    assert!(first.connections() >= 1, "the first contact point was tried");
    assert!(first.writes().is_empty());
    // Now the second goes down and the first is back: the plugin moves over.
    first.set_down(false);
    second.set_down(true);
    let id = wharf.write_id("users", "b", br#"{"id":"b"}"#);
    delivered(&wharf, &id);
    assert_eq!(row_ids(&first), [json!("b")]);
}

#[test]
fn unprepared_after_a_server_restart_is_prepared_again() {
    let f = fake();
    let wharf = Wharf::start(&namespace(&[&f], ""));
    delivered(&wharf, &wharf.write_id("users", "a", br#"{"id":"a"}"#));
    let prepares = f.requests("PREPARE");
    f.forget_prepared();
    delivered(&wharf, &wharf.write_id("users", "b", br#"{"id":"b"}"#));
    assert!(f.unprepared_answers() >= 1, "the fake answered UNPREPARED");
    assert!(f.requests("PREPARE") > prepares, "the plugin prepared again");
    assert_eq!(row_ids(&f), [json!("a"), json!("b")]);
}

#[test]
fn transient_errors_are_retried_then_delivered_once() {
    let f = fake();
    let wharf = Wharf::start(&namespace(&[&f], ""));
    delivered(&wharf, &wharf.write_id("users", "warm", br#"{"id":"warm"}"#));
    f.fail_next_writes(2, CqlFault::Unavailable);
    f.fail_next_writes(1, CqlFault::Overloaded);
    f.fail_next_writes(1, CqlFault::WriteTimeout);
    let id = wharf.write_id("users", "t", br#"{"id":"t","age":1}"#);
    delivered(&wharf, &id);
    assert_eq!(f.pending_faults(), 0, "every injected error was answered");
    assert_eq!(row_ids(&f), [json!("warm"), json!("t")]);
    assert!(wharf.dlq_ids("users", None).is_empty());
    // warm + four refused attempts + the one that landed.
    assert!(f.requests("EXECUTE") >= 6, "EXECUTEs: {}", f.requests("EXECUTE"));
}

#[test]
fn bad_payloads_are_dead_lettered_with_the_reason_and_later_messages_flow() {
    let f = fake();
    let wharf = Wharf::start(&namespace(&[&f], ""));
    let not_json = wharf.write_id("users", "x", b"not json at all");
    let unknown_column = wharf.write_id("users", "y", br#"{"id":"y","colour":"red"}"#);
    let good = wharf.write_id("users", "z", br#"{"id":"z"}"#);
    delivered(&wharf, &good);
    let entries = eventually(WAIT, "two dlq entries", || {
        let e = wharf.dlq("users", None).body["entries"].as_array().cloned().unwrap_or_default();
        (e.len() == 2).then_some(e)
    });
    let reason = |id: &str| -> String {
        let e = entries.iter().find(|e| e["message_id"] == id).expect("entry");
        e["failures"][0]["reason"].as_str().unwrap_or_default().to_string()
    };
    assert!(reason(&not_json).contains("not JSON"), "{entries:?}");
    let r = reason(&unknown_column);
    assert!(r.contains("Invalid (0x2200)") && r.contains("colour"), "{r}");
    assert_eq!(state(&wharf, &not_json), "dead_lettered");
    assert_eq!(row_ids(&f), [json!("z")]);
}

#[test]
fn authenticates_with_username_and_password() {
    let f = FakeCql::start_with_auth("wharf", "s3cret").with_users_table();
    let wharf = Wharf::start(&namespace(&[&f], ", username = \"wharf\", password = \"s3cret\""));
    delivered(&wharf, &wharf.write_id("users", "a", br#"{"id":"a"}"#));
    assert_eq!(row_ids(&f), [json!("a")]);
    assert_eq!(f.auth_failures(), 0);
}

#[test]
fn a_wrong_password_is_a_clear_init_error_and_writes_nothing() {
    let f = FakeCql::start_with_auth("wharf", "s3cret").with_users_table();
    let config = namespace(&[&f], ", username = \"wharf\", password = \"wrong\"");

    // check-config runs the plugin's init: exit 64 with the server's reason.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("wharf.toml");
    std::fs::write(&file, &config).expect("config");
    let out = Command::new(wharf_bin())
        .args(["check-config", "--config"])
        .arg(&file)
        .env("RUST_LOG", "warn")
        .output()
        .expect("check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("init failed"), "{stderr}");
    assert!(stderr.contains("AuthenticationError (0x0100)") && stderr.contains("incorrect"), "{stderr}");

    // Serving: the message stays undelivered; the log says why.
    let wharf = Wharf::start(&config);
    let id = wharf.write_id("users", "a", br#"{"id":"a"}"#);
    eventually(WAIT, "the auth failure in the log", || {
        wharf.log().contains("AuthenticationError (0x0100)").then_some(())
    });
    assert!(f.auth_failures() >= 2, "check-config and serve both tried");
    assert_ne!(state(&wharf, &id), "delivered");
    assert!(f.writes().is_empty());
}

#[test]
fn the_datastax_python_driver_connects_prepares_inserts_and_selects_on_the_stand_in() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let probe = Command::new(&python)
        .args(["-c", "import cassandra, cassandra.cluster; print(cassandra.__version__)"])
        .output()
        .unwrap_or_else(|e| panic!("{python} cannot be run ({e}): run `make test-deps`"));
    assert!(
        probe.status.success(),
        "the DataStax Python driver (`cassandra-driver` on PyPI) is not importable by {python}: \
         run `make test-deps`\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );

    let f = fake();
    let (host, port) = f.addr().rsplit_once(':').map(|(h, p)| (h.to_string(), p.to_string())).expect("addr");
    let out = Command::new(&python)
        .arg(root().join("tests/cql_driver_check.py"))
        .args([&host, &port])
        .current_dir(root())
        .output()
        .expect("run tests/cql_driver_check.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "driver check failed ({}):\n{stdout}\n{stderr}", out.status);

    // The row the driver inserted is in the fake...
    let rows = f.rows("app", "users");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(Value::Object(rows[0].clone()), json!({"id": "py-driver", "name": "Ada Lovelace", "age": 36}),);
    let w = f.writes();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!((w[0].via.as_str(), w[0].consistency.as_str()), ("EXECUTE", "LocalQuorum"));
    // ...and the driver read it back (prepared SELECT ... WHERE id = ?).
    let selected = stdout
        .lines()
        .find_map(|l| l.strip_prefix("selected "))
        .unwrap_or_else(|| panic!("no `selected` line:\n{stdout}\n{stderr}"));
    let selected: Value = serde_json::from_str(selected).expect("selected row is JSON");
    assert_eq!(selected, json!({"age": 36, "id": "py-driver", "name": "Ada Lovelace"}));
    assert!(f.requests("PREPARE") >= 2 && f.requests("EXECUTE") >= 2, "prepared and executed");
    assert!(f.requests("QUERY") >= 3, "system.local, system.peers(_v2), SELECT *");
}

/// Opt-in: delivers into a real cluster when `WHARF_CASSANDRA_CONTACT_POINTS`
/// is set (comma-separated `ip:port`), into `WHARF_CASSANDRA_KEYSPACE`
/// (default `app`) . `WHARF_CASSANDRA_TABLE` (default `users`), optionally
/// with `WHARF_CASSANDRA_USERNAME` / `WHARF_CASSANDRA_PASSWORD`. The table
/// must exist and have a text partition key `id` and a text column `name`
/// (e.g. `CREATE TABLE app.users (id text PRIMARY KEY, name text, age int, msg text)`).
#[test]
fn against_a_real_cluster_when_configured() {
    let Ok(contact_points) = std::env::var("WHARF_CASSANDRA_CONTACT_POINTS") else {
        println!(
            "WHARF_CASSANDRA_CONTACT_POINTS is not set: not configured, no real cluster tested \
             (see docs/plugins.md, Cassandra)"
        );
        return;
    };
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let auth = std::env::var("WHARF_CASSANDRA_USERNAME")
        .ok()
        .map(|user| (user, env("WHARF_CASSANDRA_PASSWORD", "")));
    deliver_a_few(
        &contact_points,
        &env("WHARF_CASSANDRA_KEYSPACE", "app"),
        &env("WHARF_CASSANDRA_TABLE", "users"),
        auth,
    );
}

/// The opt-in real-cluster check's own code, run against the stand-in so
/// that it is known to work before anyone points it at a cluster.
#[test]
fn the_real_cluster_check_itself_passes_against_the_stand_in() {
    let f = FakeCql::start_with_auth("wharf", "s3cret").with_users_table();
    deliver_a_few(&f.addr(), "app", "users", Some(("wharf".to_string(), "s3cret".to_string())));
    assert_eq!(f.rows("app", "users").len(), 3);
}

/// Writes three JSON messages for `keyspace.table` at `contact_points`,
/// asserts each is delivered, the status counts them delivered and the DLQ
/// is empty.
fn deliver_a_few(contact_points: &str, keyspace: &str, table: &str, auth: Option<(String, String)>) {
    let points: Vec<String> =
        contact_points.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect();
    assert!(!points.is_empty(), "WHARF_CASSANDRA_CONTACT_POINTS has no contact point");
    let auth = auth.map(|(u, p)| format!(", username = {u:?}, password = {p:?}")).unwrap_or_default();
    let config = namespace_at(&points, keyspace, table, &auth);
    let wharf = Wharf::start(&config);
    let run = std::process::id();
    let ids: Vec<String> = (1..=3)
        .map(|i| {
            let key = format!("wharf-test-{run}-{i}");
            let payload = json!({"id": key, "name": format!("wharf test {i}")}).to_string();
            wharf.write_id("users", &key, payload.as_bytes())
        })
        .collect();
    for id in &ids {
        delivered(&wharf, id);
    }
    let counted = wharf.target_delivery_sum("users", "default", "delivered_total");
    assert!(counted >= ids.len() as u64, "status counts {counted} delivered: {}", wharf.status());
    assert!(wharf.dlq_ids("users", None).is_empty(), "DLQ: {:?}", wharf.dlq("users", None).body);
    println!("delivered {} messages to {keyspace}.{table} at {contact_points}", ids.len());
}

#[test]
fn a_replayed_older_message_never_overwrites_a_newer_write() {
    let f = fake();
    let wharf = Wharf::start(&namespace(&[&f], ""));
    delivered(&wharf, &wharf.write_id("users", "warm", br#"{"id":"warm"}"#));
    // The older write is refused once (dead-lettered), a newer one of the
    // same row lands, then the older one is replayed from the DLQ: a new
    // log record (new sequence) that keeps its write time.
    f.fail_next_writes(1, CqlFault::Invalid);
    let old = wharf.write_id("users", "k", br#"{"id":"k","name":"old"}"#);
    eventually(WAIT, "the older write dead-lettered", || {
        (state(&wharf, &old) == "dead_lettered").then_some(())
    });
    let new = wharf.write_id("users", "k", br#"{"id":"k","name":"new"}"#);
    delivered(&wharf, &new);
    let r = wharf.dlq_replay("users", None, &json!({}));
    let replayed = r.body["replayed"][0]["new_message_id"].as_str().map(str::to_string);
    let replayed = replayed.unwrap_or_else(|| panic!("one replayed entry: {:?}", r.body));
    assert_ne!(replayed, old, "a replay is a new log record");
    delivered(&wharf, &replayed);
    let writes = f.writes();
    let k: Vec<(&Value, i64)> = writes
        .iter()
        .filter(|w| w.row["id"] == "k")
        .map(|w| (&w.row["name"], w.timestamp.expect("timestamp")))
        .collect();
    assert_eq!(k.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [&json!("new"), &json!("old")], "{writes:?}");
    assert!(k[1].1 < k[0].1, "the replay's USING TIMESTAMP is older than the newer write's: {k:?}");
    let rows = f.rows("app", "users");
    let row = rows.iter().find(|r| r["id"] == "k").expect("row k");
    assert_eq!(row["name"], json!("new"), "{rows:?}");
}

#[test]
fn plugin_check_shows_the_cassandra_plugins_describe_info() {
    let out = Command::new(wharf_bin())
        .args(["plugin", "check", "--json"])
        .arg(plugin("cassandra"))
        .output()
        .expect("plugin check");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(v["describe"]["name"], "wharf-plugin-cassandra", "{v}");
    assert_eq!(v["describe"]["version"], env!("CARGO_PKG_VERSION"), "{v}");
    assert_eq!(v["wit"], "wharf:target@0.4.0", "{v}");
    let out = Command::new(wharf_bin())
        .args(["plugin", "check"])
        .arg(plugin("cassandra"))
        .output()
        .expect("plugin check");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = format!("describe wharf-plugin-cassandra {}", env!("CARGO_PKG_VERSION"));
    assert!(text.contains(&line), "{text}");
}
