//! A message that crashes the plugin (panic, endless loop, memory limit)
//! is found, dead-lettered as poison after `poison_after` traps alone, and
//! its key moves on; the rest of the namespace keeps flowing in per-key
//! order. A plugin that traps on everything, or whose `init` keeps
//! failing, is quarantined instead (one whose `init` fails at start is
//! `failed`). An operator can move a stuck or pending message to the DLQ.

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::{
    HttpSink, Wharf, eventually, kafka_queue, multi_target_namespace, plugin, start_tansu, wharf_bin,
};

/// A TCP server that keeps each line the misbehave fixture records
/// (`key payload`), in arrival order.
struct LineSink {
    addr: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl LineSink {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = lines.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                for line in BufReader::new(conn).lines().map_while(Result::ok) {
                    kept.lock().expect("lines").push(line);
                }
            }
        });
        Self { addr, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// The payloads that arrived for `key`, in order.
    fn of_key(&self, key: &str) -> Vec<String> {
        let prefix = format!("{key} ");
        self.lines().iter().filter_map(|l| l.strip_prefix(&prefix).map(str::to_string)).collect()
    }
}

/// A namespace whose plugin misbehaves (`mode`) only on the payload
/// `poison`, and records every other message at `sink`.
fn poisoned(ns: &str, mode: &str, sink: &LineSink, target_extra: &str, ns_extra: &str) -> String {
    format!(
        r#"
[namespaces.{ns}]
partitions = 1
{ns_extra}
[namespaces.{ns}.retry]
max_attempts = 1000
initial_backoff_ms = 10
max_backoff_ms = 100
[namespaces.{ns}.target]
plugin = "{}"
allow_connect = ["{addr}"]
{target_extra}
config = {{ mode = "{mode}", poison = "poison", record = "{addr}" }}
"#,
        plugin("fixture-misbehave").display(),
        addr = sink.addr,
    )
}

/// What [`write_mix`] wrote: the poison message's id and the ten others'.
struct Mix {
    poison: String,
    good: Vec<String>,
}

/// Writes a0 a1 a2, then `poison` and b1 b2 on key b, then c0..c4.
fn write_mix(w: &Wharf, ns: &str) -> Mix {
    let mut good: Vec<String> = (0..3).map(|i| w.write_id(ns, "a", format!("a{i}").as_bytes())).collect();
    let poison = w.write_id(ns, "b", b"poison");
    good.extend((1..3).map(|i| w.write_id(ns, "b", format!("b{i}").as_bytes())));
    good.extend((0..5).map(|i| w.write_id(ns, "c", format!("c{i}").as_bytes())));
    Mix { poison, good }
}

/// The message ids named by the log's "message trapped the plugin on its
/// own" lines (`message_id=<id>`), one per line.
fn trapped_ids(w: &Wharf) -> Vec<String> {
    w.log()
        .lines()
        .filter(|l| l.contains("message trapped the plugin on its own"))
        .map(|l| {
            l.split_once("message_id=")
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .map(|id| id.trim_matches('"').to_string())
                .unwrap_or_else(|| panic!("a trap line without message_id: {l}"))
        })
        .collect()
}

/// The poison entry's last failure reason.
fn poison_reason(w: &Wharf, ns: &str) -> String {
    let entry = dlq_entries(w, ns).into_iter().next().expect("a DLQ entry");
    let last = entry["failures"].as_array().and_then(|f| f.last()).cloned().unwrap_or_default();
    last["reason"].as_str().unwrap_or_default().to_string()
}

fn dlq_entries(w: &Wharf, ns: &str) -> Vec<Value> {
    w.dlq(ns, None).body["entries"].as_array().cloned().unwrap_or_default()
}

/// Every good message arrived once, in order per key, and is `delivered`
/// with no trap counted against it (only the poison message ever trapped
/// alone, even when it was batched with them); the poison message is the
/// only DLQ entry, its last failure is `poison` naming `needle`.
fn assert_poison_isolated(w: &Wharf, ns: &str, sink: &LineSink, mix: &Mix, needle: &str) {
    let poison = mix.poison.as_str();
    let entry = eventually(Duration::from_secs(60), "the poison message in the DLQ", || {
        dlq_entries(w, ns).into_iter().next()
    });
    assert_eq!(entry["message_id"], json!(poison), "{entry}");
    let last = entry["failures"].as_array().and_then(|f| f.last()).cloned().unwrap_or_default();
    assert_eq!(last["kind"], json!("poison"), "{entry}");
    let reason = last["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("trapped the plugin 3 times"), "{reason}");
    assert!(reason.contains(needle), "reason {reason:?} should name {needle:?}");
    // A trapped batch may have reached the target in part before the trap:
    // at least once, so compare first arrivals.
    let arrived = |key: &str| first_arrivals(sink, key).len();
    eventually(Duration::from_secs(30), "every good message", || {
        (arrived("a") + arrived("b") + arrived("c") == 10).then_some(())
    });
    let lines = sink.lines();
    assert_eq!(first_arrivals(sink, "a"), ["a0", "a1", "a2"], "{lines:?}");
    assert_eq!(
        first_arrivals(sink, "b"),
        ["b1", "b2"],
        "the poison message's key moved on, in order: {lines:?}"
    );
    assert_eq!(first_arrivals(sink, "c"), ["c0", "c1", "c2", "c3", "c4"], "{lines:?}");
    assert_eq!(dlq_entries(w, ns).len(), 1, "only the poison message is dead-lettered");
    assert_eq!(w.status()["namespaces"][ns]["plugin"]["state"], json!("ready"), "{}", w.log());
    assert_eq!(w.lookup(ns, poison)["state"], json!("dead_lettered"));
    for id in &mix.good {
        let m = w.lookup(ns, id);
        assert_eq!(m["state"], json!("delivered"), "{id}: {m}");
        assert_eq!(m["last_error"], Value::Null, "{id}: {m}");
    }
    assert_eq!(
        trapped_ids(w),
        [poison; 3],
        "traps are counted against the poison message alone:\n{}",
        w.log()
    );
}

#[test]
fn a_payload_that_panics_the_plugin_goes_to_the_dlq_and_the_rest_flows() {
    let sink = LineSink::start();
    let w = Wharf::start(&poisoned("p", "panic", &sink, "", ""));
    let mix = write_mix(&w, "p");
    assert_poison_isolated(&w, "p", &sink, &mix, "panic on purpose");
    let traps = w.metric("wharf_dead_lettered_total", &[("namespace", "p"), ("kind", "poison")]);
    assert_eq!(traps, Some(1.0));
    // The reason holds the trap (the panic's message) and a short wasm
    // backtrace: `... (backtrace: 0: ... | 1: ...)`.
    let reason = poison_reason(&w, "p");
    let frames = reason.split_once("(backtrace: ").map(|(_, f)| f).unwrap_or_else(|| panic!("{reason}"));
    assert!(frames.starts_with("0:") && frames.contains(" | 1:"), "{reason}");
    assert!(reason.contains("wasm trap") || reason.contains("unreachable"), "{reason}");
}

#[test]
fn a_payload_that_loops_forever_is_dead_lettered_at_its_deadline() {
    let sink = LineSink::start();
    let w = Wharf::start(&poisoned("p", "loop", &sink, "call_timeout_ms = 500", ""));
    let mix = write_mix(&w, "p");
    assert_poison_isolated(&w, "p", &sink, &mix, "deadline");
}

#[test]
fn a_payload_that_exhausts_memory_is_dead_lettered() {
    let sink = LineSink::start();
    let w = Wharf::start(&poisoned("p", "oom", &sink, "memory_limit_mib = 16", ""));
    let mix = write_mix(&w, "p");
    assert_poison_isolated(&w, "p", &sink, &mix, "trap");
}

#[test]
fn a_poison_message_on_kafka_is_dead_lettered_and_the_rest_flows() {
    let kafka = start_tansu();
    let sink = LineSink::start();
    let queue = kafka_queue(kafka.port, "poison-topic", 1);
    let w = Wharf::start(&poisoned("p", "panic", &sink, "", &queue));
    let mix = write_mix(&w, "p");
    assert_poison_isolated(&w, "p", &sink, &mix, "panic on purpose");
}

/// Lines of the log that say a message trapped the plugin on its own.
fn traps_logged(w: &Wharf) -> usize {
    w.log().matches("message trapped the plugin on its own").count()
}

/// The first arrival of each message, per key, in order (a restart may
/// deliver a message twice: at least once).
fn first_arrivals(sink: &LineSink, key: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for p in sink.of_key(key) {
        if !seen.contains(&p) {
            seen.push(p);
        }
    }
    seen
}

#[test]
fn trap_counts_survive_a_crash_and_a_replay_with_the_fixed_plugin_delivers() {
    crash_in_the_middle_then_replay_with_the_fixed_plugin("panic", "");
}

#[test]
fn deadline_counts_survive_a_crash_and_a_replay_with_the_fixed_plugin_delivers() {
    crash_in_the_middle_then_replay_with_the_fixed_plugin("loop", "call_timeout_ms = 500");
}

/// The plugin misbehaves (`mode`) on the poison payload; the process is
/// SIGKILLed after the first trap: the poison message is dead-lettered
/// after exactly `poison_after` traps in all, every other message of every
/// key arrives in order, and once the plugin is fixed a replay delivers it.
fn crash_in_the_middle_then_replay_with_the_fixed_plugin(mode: &str, target_extra: &str) {
    let sink = LineSink::start();
    let slow =
        "[namespaces.p.retry]\nmax_attempts = 1000\ninitial_backoff_ms = 2000\nmax_backoff_ms = 2000\n";
    let config = poisoned("p", mode, &sink, target_extra, "").replacen(
        "[namespaces.p.retry]\nmax_attempts = 1000\ninitial_backoff_ms = 10\nmax_backoff_ms = 100\n",
        slow,
        1,
    );
    assert!(config.contains("initial_backoff_ms = 2000"));
    let mut w = Wharf::start(&config);
    let Mix { poison, good } = write_mix(&w, "p");
    eventually(Duration::from_secs(30), "the first trap", || (traps_logged(&w) >= 1).then_some(()));
    let before = traps_logged(&w);
    w.restart(); // SIGKILL, then start again over the same data dir
    eventually(Duration::from_secs(60), "the poison message in the DLQ", || {
        (w.dlq_ids("p", None) == [poison.clone()]).then_some(())
    });
    assert_eq!(
        traps_logged(&w),
        3,
        "{before} traps before the crash, and only the rest after it:\n{}",
        w.log()
    );
    assert_eq!(trapped_ids(&w), [poison.as_str(); 3], "{}", w.log());
    eventually(Duration::from_secs(30), "every good message", || {
        (first_arrivals(&sink, "b") == ["b1", "b2"]).then_some(())
    });
    assert_eq!(first_arrivals(&sink, "a"), ["a0", "a1", "a2"]);
    assert_eq!(first_arrivals(&sink, "c"), ["c0", "c1", "c2", "c3", "c4"]);
    for id in &good {
        eventually(Duration::from_secs(30), "delivered", || {
            (w.lookup("p", id)["state"] == json!("delivered")).then_some(())
        });
    }

    // The plugin is fixed (it no longer chokes on that payload): a replay
    // of the poison entry delivers it.
    let fixed = std::fs::read_to_string(w.config_path())
        .expect("config")
        .replace("poison = \"poison\"", "poison = \"never\"");
    std::fs::write(w.config_path(), fixed).expect("config");
    w.restart();
    let r = w.dlq_replay("p", None, &json!({}));
    assert_eq!(r.body["replayed"].as_array().map(Vec::len), Some(1), "{:?}", r.body);
    eventually(Duration::from_secs(30), "the replayed message", || {
        sink.of_key("b").contains(&"poison".to_string()).then_some(())
    });
    assert!(w.dlq_ids("p", None).is_empty());
}

#[test]
fn a_plugin_that_traps_on_everything_is_quarantined_and_resumes_once_fixed() {
    let sink = LineSink::start();
    // No `poison` payload: every message panics the plugin.
    let config = poisoned("p", "panic", &sink, "quarantine_after = 3\npoison_after = 100", "")
        .replace(", poison = \"poison\"", "");
    let mut w = Wharf::start(&config);
    let ids: Vec<String> = ["a", "b", "c", "d"].iter().map(|k| w.write_id("p", k, k.as_bytes())).collect();
    let plugin = eventually(Duration::from_secs(60), "quarantine", || {
        let p = w.status()["namespaces"]["p"]["plugin"].clone();
        (p["state"] == "quarantined").then_some(p)
    });
    assert!(plugin["reason"].as_str().is_some_and(|r| r.contains("3 distinct messages")), "{plugin}");
    assert!(w.dlq_ids("p", None).is_empty(), "a broken plugin dead-letters nothing");
    assert_eq!(w.partitions("p")[0]["backlog"], json!(4));

    // The operator fixes the plugin's config and restarts: all of it arrives.
    let fixed = std::fs::read_to_string(w.config_path())
        .expect("config")
        .replace("mode = \"panic\"", "mode = \"ok\"");
    std::fs::write(w.config_path(), fixed).expect("config");
    w.restart();
    for id in &ids {
        eventually(Duration::from_secs(30), "delivery after the fix", || {
            (w.lookup("p", id)["state"] == json!("delivered")).then_some(())
        });
    }
    assert!(w.dlq_ids("p", None).is_empty());
}

#[test]
fn an_operator_moves_a_stuck_message_to_the_dlq_over_http_and_the_cli() {
    let sink = HttpSink::start();
    sink.set(|b| b.fail_keys = vec!["stuck".into(), "jammed".into()]);
    let w = Wharf::start(&sink.namespace(
        "m",
        1,
        "[namespaces.m.retry]\nmax_attempts = 1000\ninitial_backoff_ms = 10\nmax_backoff_ms = 100\n",
    ));
    let stuck = w.write_id("m", "stuck", b"s");
    let jammed = w.write_id("m", "jammed", b"j");
    for id in [&stuck, &jammed] {
        eventually(Duration::from_secs(30), "retrying", || {
            (w.lookup("m", id)["state"] == json!("retrying")).then_some(())
        });
    }
    let mv = |id: &str, reason: &str| {
        w.post("/v1/namespaces/m/dlq/move", &json!({"message_id": id, "reason": reason}))
    };

    assert_eq!(mv(&stuck, " ").body["error"]["code"], json!("reason_required"));
    assert_eq!(mv("0-999", "gone").status, 404);
    let r = mv(&stuck, "the downstream row was deleted by hand");
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(w.lookup("m", &stuck)["state"], json!("dead_lettered"));
    let entry = dlq_entries(&w, "m").into_iter().find(|e| e["message_id"] == json!(stuck)).expect("entry");
    let last = entry["failures"].as_array().and_then(|f| f.last()).cloned().unwrap_or_default();
    assert_eq!(last["kind"], json!("operator"));
    assert!(last["reason"].as_str().is_some_and(|r| r.contains("deleted by hand")), "{entry}");
    let again = mv(&stuck, "twice");
    assert_eq!((again.status, again.body["error"]["code"].clone()), (409, json!("message_finished")));

    let out = std::process::Command::new(wharf_bin())
        .args(["dlq", "move", "m", &jammed, "--reason", "bad row", "--server", &w.url("")])
        .output()
        .expect("wharf dlq move");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("moved"));
    assert_eq!(w.lookup("m", &jammed)["state"], json!("dead_lettered"));
    let audit = std::fs::read_to_string(w.data_dir().join("audit.log")).unwrap_or_default();
    assert_eq!(audit.matches("\"dlq.move\"").count(), 5, "every move is audited, refused ones too:\n{audit}");
}

#[test]
fn an_operator_moves_a_pending_message_to_the_dlq_of_one_target_with_the_cli() {
    let (stuck_at_a, fine_at_b) = (HttpSink::start(), HttpSink::start());
    stuck_at_a.set(|b| b.fail_keys = vec!["stuck".into()]);
    let retry = "[namespaces.m.retry]\nmax_attempts = 1000\ninitial_backoff_ms = 10\nmax_backoff_ms = 100\n";
    let ns = multi_target_namespace("m", 1, "", &[("a", &stuck_at_a), ("b", &fine_at_b)]) + retry;
    let w = Wharf::start(&ns);
    let head = w.write_id("m", "stuck", b"head");
    let behind = w.write_id("m", "stuck", b"behind");
    eventually(Duration::from_secs(30), "the head retrying at a", || {
        (w.lookup("m", &head)["targets"]["a"]["state"] == json!("retrying")).then_some(())
    });
    // The second message of the key waits behind the head at `a`: pending,
    // never attempted; `b` delivered both.
    let at = |id: &str, t: &str| w.lookup("m", id)["targets"][t].clone();
    eventually(Duration::from_secs(30), "both delivered at b", || {
        (at(&head, "b")["state"] == json!("delivered") && at(&behind, "b")["state"] == json!("delivered"))
            .then_some(())
    });
    let waiting = at(&behind, "a");
    assert_eq!(
        (waiting["state"].clone(), waiting["attempts"].clone()),
        (json!("pending"), json!(0)),
        "{waiting}"
    );

    let cli = |args: &[&str]| {
        std::process::Command::new(wharf_bin())
            .args(["dlq", "move", "m", &behind])
            .args(args)
            .args(["--server", &w.url("")])
            .output()
            .expect("wharf dlq move")
    };
    let out = cli(&["--target", "a", "--reason", "the head will never go; skip this one"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("moved"));
    assert_eq!(at(&behind, "a")["state"], json!("dead_lettered"));
    assert_eq!(at(&behind, "b")["state"], json!("delivered"), "the other target is untouched");
    assert_eq!(w.dlq_ids("m", Some("a")), [behind.as_str()]);
    assert!(w.dlq_ids("m", Some("b")).is_empty());
    let entry = w.dlq("m", Some("a")).body["entries"][0].clone();
    let last = entry["failures"].as_array().and_then(|f| f.last()).cloned().unwrap_or_default();
    assert_eq!(last["kind"], json!("operator"), "{entry}");
    assert!(last["reason"].as_str().is_some_and(|r| r.contains("never go")), "{entry}");
    // At `b` it is finished already: refused, and the CLI says so.
    let out = cli(&["--target", "b", "--reason", "too late"]);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already delivered or dead-lettered at target b") && stderr.contains("409"),
        "{stderr}"
    );
    // The head still retries at `a`; the moved message is not delivered there later.
    assert_eq!(at(&head, "a")["state"], json!("retrying"));
    assert!(stuck_at_a.accepted().is_empty());
}

#[test]
fn a_plugin_whose_init_keeps_failing_is_quarantined_and_dead_letters_nothing() {
    let sink = LineSink::start();
    // `init` connects to the gate first; closing it makes every later init fail.
    let gate = TcpListener::bind("127.0.0.1:0").expect("bind gate");
    let gate_addr = gate.local_addr().expect("addr").to_string();
    let config = poisoned("p", "ok", &sink, "quarantine_after = 3", "")
        .replace(
            &format!("allow_connect = [\"{}\"]", sink.addr),
            &format!("allow_connect = [\"{}\", \"{gate_addr}\"]", sink.addr),
        )
        .replace(", poison = \"poison\"", &format!(", poison = \"poison\", gate = \"{gate_addr}\""));
    assert!(config.contains("gate = "), "{config}");
    let mut w = Wharf::start(&config);
    eventually(Duration::from_secs(30), "the plugin ready", || {
        (w.status()["namespaces"]["p"]["plugin"]["state"] == json!("ready")).then_some(())
    });
    drop(gate);
    let ids: Vec<String> = ["a", "b"].iter().map(|k| w.write_id("p", k, k.as_bytes())).collect();
    let plugin = eventually(Duration::from_secs(60), "quarantine", || {
        let p = w.status()["namespaces"]["p"]["plugin"].clone();
        (p["state"] == "quarantined").then_some(p)
    });
    let reason = plugin["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("3 consecutive plugin failures") && reason.contains("init gate"), "{plugin}");
    assert!(w.dlq_ids("p", None).is_empty(), "a failing init dead-letters nothing");
    assert!(trapped_ids(&w).is_empty(), "an init failure is not a trap of a message");
    assert_eq!(w.partitions("p")[0]["backlog"], json!(2));
    for id in &ids {
        assert_ne!(w.lookup("p", id)["state"], json!("delivered"));
    }

    // Without the gate, after a restart: both arrive.
    let fixed = std::fs::read_to_string(w.config_path())
        .expect("config")
        .replace(&format!(", gate = \"{gate_addr}\""), "");
    std::fs::write(w.config_path(), fixed).expect("config");
    w.restart();
    for id in &ids {
        eventually(Duration::from_secs(30), "delivery after the fix", || {
            (w.lookup("p", id)["state"] == json!("delivered")).then_some(())
        });
    }
    assert_eq!(first_arrivals(&sink, "a"), ["a"]);
    assert_eq!(first_arrivals(&sink, "b"), ["b"]);
}

#[test]
fn a_plugin_whose_init_fails_when_loaded_is_failed_and_keeps_every_write() {
    let sink = LineSink::start();
    // No `mode`: the fixture's init refuses its config.
    let config = poisoned("p", "ok", &sink, "", "").replace("mode = \"ok\", ", "");
    assert!(!config.contains("mode"), "{config}");
    let mut w = Wharf::start(&config);
    let plugin = eventually(Duration::from_secs(30), "the plugin failed", || {
        let p = w.status()["namespaces"]["p"]["plugin"].clone();
        (p["state"] == "failed").then_some(p)
    });
    assert!(
        plugin["reason"].as_str().is_some_and(|r| r.contains("mode")),
        "init's error is the reason: {plugin}"
    );
    let id = w.write_id("p", "a", b"a");
    assert_eq!(w.lookup("p", &id)["state"], json!("pending"));
    assert!(w.dlq_ids("p", None).is_empty());

    let fixed = std::fs::read_to_string(w.config_path())
        .expect("config")
        .replace("config = { ", "config = { mode = \"ok\", ");
    std::fs::write(w.config_path(), fixed).expect("config");
    w.restart();
    eventually(Duration::from_secs(30), "delivery after the fix", || {
        (w.lookup("p", &id)["state"] == json!("delivered")).then_some(())
    });
}
