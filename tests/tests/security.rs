//! Security hardening (issue 23): connection exhaustion at a low open-file
//! limit, read timeouts (a body's deadline is total, not per frame),
//! secrets (`?api_key`, `user:password@`) scrubbed from what a plugin
//! reports.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wharf_tests::{HttpSink, Wharf, b64, eventually};

/// Opens `n` connections that each send an unfinished request head.
fn slow_loris(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.write_all(b"GET /healthz HTTP/1.1\r\n").expect("partial head");
            s
        })
        .collect()
}

/// Waits until the server closed `s` (EOF or reset), at most `within`.
fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a 408 reply, then the close
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn a_slow_connection_flood_at_a_low_fd_limit_halts_nothing_and_every_ack_is_delivered() {
    let sink = HttpSink::start();
    let server = "segment_max_bytes = 4096\nheader_read_timeout_ms = 1000\n";
    let w = Wharf::start_limited(server, &sink.namespace("orders", 2, ""), "all", Some(256));
    let flood = slow_loris(w.port, 400);

    // Writes during the flood wait for a slot, then go through; small
    // segments make the log open new files all along.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut acked = Vec::new();
    for i in 0..60 {
        let payload = format!("m{i:03}-{}", "x".repeat(1500));
        let body = json!({"key": format!("k{}", i % 5), "payload": b64(payload.as_bytes())});
        let mut r = agent.post(&w.url("/v1/namespaces/orders/messages")).send_json(&body).expect("write");
        let reply: Value = r.body_mut().read_json().unwrap_or(Value::Null);
        assert_eq!(r.status().as_u16(), 200, "write {i}: {reply}\n{}", w.log());
        assert_eq!(reply["durable"], json!(true));
        acked.push(format!("m{i:03}"));
    }
    drop(flood);

    eventually(Duration::from_secs(60), "every acknowledged write delivered, no restart", || {
        let got = sink.accepted_bodies();
        acked.iter().all(|id| got.iter().any(|b| b.starts_with(id.as_str()))).then_some(())
    });
    for p in w.partitions("orders") {
        assert_eq!(p["halted"], json!(false), "{p}\n{}", w.log());
    }
    let log = w.log();
    assert!(log.contains("max_connections=128"), "the budget is half of 256 fds:\n{log}");
    assert!(!log.contains("partition halted"), "{log}");
}

#[test]
fn a_client_that_never_finishes_its_headers_or_body_is_cut_off() {
    let sink = HttpSink::start();
    let server = "header_read_timeout_ms = 500\nbody_read_timeout_ms = 500\n";
    let w = Wharf::start_with_server(server, &sink.namespace("orders", 1, ""), "all");

    let started = Instant::now();
    let mut head = slow_loris(w.port, 1).remove(0);
    assert!(closed_by_server(&mut head, Duration::from_secs(10)), "an unfinished head is closed");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    let mut body = TcpStream::connect(("127.0.0.1", w.port)).expect("connect");
    let req = "POST /v1/namespaces/orders/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"payload\":";
    body.write_all(req.as_bytes()).expect("partial body");
    body.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut reply = String::new();
    let _ = body.read_to_string(&mut reply);
    assert!(!reply.starts_with("HTTP/1.1 200"), "an unfinished body is not a write: {reply}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let p = &w.partitions("orders")[0];
    assert_eq!(p["head_sequence"], json!(0), "nothing was written: {p}");
}

/// Sends a request head announcing a 1000-byte body, then one byte every
/// ~300 ms (each wait is a read that returns as soon as the server
/// answers), until the server answers or closes, or `max_bytes` were
/// sent. The reply, and how many body bytes went out.
fn trickle_body(port: u16, max_bytes: usize) -> (String, usize) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let head = "POST /v1/namespaces/orders/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n";
    s.write_all(head.as_bytes()).expect("head");
    s.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    let (mut reply, mut sent, mut buf) = (Vec::new(), 0, [0u8; 1024]);
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                reply.extend_from_slice(&buf[..n]);
                continue;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
        if !reply.is_empty() || sent >= max_bytes || s.write_all(b" ").is_err() {
            break;
        }
        sent += 1;
    }
    (String::from_utf8_lossy(&reply).into_owned(), sent)
}

#[test]
fn a_body_trickled_a_byte_at_a_time_is_cut_off_at_its_total_deadline_and_frees_its_slot() {
    let sink = HttpSink::start();
    // One connection slot: the trickle holds the only one until it is cut off.
    let server = "max_connections = 1\nheader_read_timeout_ms = 1000\nbody_read_timeout_ms = 1500\n";
    let w = Wharf::start_with_server(server, &sink.namespace("orders", 1, ""), "all");

    // A per-frame timeout would never fire: a byte comes every ~300 ms.
    let (reply, sent) = trickle_body(w.port, 200);
    assert!(sent < 200, "still reading after {sent} trickled bytes: {reply}\n{}", w.log());
    assert!(reply.starts_with("HTTP/1.1 408"), "after {sent} bytes: {reply}\n{}", w.log());
    let json = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: Value = serde_json::from_str(json).unwrap_or(Value::Null);
    assert_eq!(body["error"]["code"], json!("body_timeout"), "{reply}");

    let write = json!({"key": "k", "payload": b64(b"after the trickle")});
    let (status, ack) = call("POST", &w.url("/v1/namespaces/orders/messages"), &[], Some(&write));
    assert_eq!((status, &ack["durable"]), (200, &json!(true)), "the slot was freed: {ack}");
    assert_eq!(w.partitions("orders")[0]["head_sequence"], json!(1), "the trickle wrote nothing");
}

/// `orders`, one partition, the http plugin posting to `url` with `allow`
/// allowed, dead-lettering after two quick attempts.
fn quick_dlq_http_namespace(allow: &str, url: &str) -> String {
    format!(
        r#"
[namespaces.orders]
partitions = 1
retry = {{ max_attempts = 2, initial_backoff_ms = 10, max_backoff_ms = 20 }}
[namespaces.orders.target]
plugin = "{}"
allow_http = ["{allow}"]
config = {{ url = "{url}" }}
"#,
        wharf_tests::plugin("http").display()
    )
}

#[test]
fn an_allow_http_entry_is_not_a_string_prefix_of_other_ports() {
    let sink = HttpSink::start();
    let first_digit = &sink.port.to_string()[..1];
    let ns =
        quick_dlq_http_namespace(&format!("http://127.0.0.1:{first_digit}"), &format!("{}hook", sink.url()));
    let w = Wharf::start(&ns);
    let id = w.write_id("orders", "k", b"hello");
    eventually(Duration::from_secs(30), "the denied message dead-lettered", || {
        w.dlq_ids("orders", None).contains(&id).then_some(())
    });
    assert!(sink.accepted().is_empty(), "port {} is not port {first_digit}", sink.port);
    assert!(w.log().contains("denied by allow_http"), "{}", w.log());
}

/// A request with headers; the status and JSON body.
fn call(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&Value>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let body = body.cloned().unwrap_or(json!({}));
    let sent = match method {
        "GET" => headers.iter().fold(agent.get(url), |r, (k, v)| r.header(*k, *v)).call(),
        "PUT" => headers.iter().fold(agent.put(url), |r, (k, v)| r.header(*k, *v)).send_json(&body),
        _ => headers.iter().fold(agent.post(url), |r, (k, v)| r.header(*k, *v)).send_json(&body),
    };
    let mut r = sent.expect("call");
    (r.status().as_u16(), r.body_mut().read_json().unwrap_or(Value::Null))
}

fn audit_lines(w: &Wharf) -> Vec<Value> {
    let text = std::fs::read_to_string(w.data_dir().join("audit.log")).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[test]
fn secrets_in_a_target_url_stay_out_of_status_the_dlq_and_the_log() {
    // Nothing listens on this port: every attempt fails and says why.
    let dead = wharf_tests::free_port();
    let url = format!("http://127.0.0.1:{dead}/hook?api_key=sekrit99&x=1");
    let ns = quick_dlq_http_namespace(&format!("http://127.0.0.1:{dead}"), &url);
    let w = Wharf::start(&ns);
    let id = w.write_id("orders", "k", b"hello");
    eventually(Duration::from_secs(30), "dead-lettered", || {
        w.dlq_ids("orders", None).contains(&id).then_some(())
    });
    let seen = [
        w.dlq("orders", None).body.to_string(),
        w.lookup("orders", &id).to_string(),
        w.status().to_string(),
        w.log(),
    ];
    for text in seen {
        assert!(!text.contains("sekrit99"), "the api key leaked: {text}");
    }
    assert!(w.dlq("orders", None).body.to_string().contains("127.0.0.1"), "the reason still says where");
}

#[test]
fn a_password_in_a_target_url_stays_out_of_status_and_the_log() {
    // The SDK's URL type takes no user info: the http plugin refuses to
    // load, and the reason it gives is scrubbed.
    let dead = wharf_tests::free_port();
    let url = format!("http://wharfuser:pw-sekrit77@127.0.0.1:{dead}/hook");
    let ns = quick_dlq_http_namespace(&format!("http://127.0.0.1:{dead}"), &url);
    let w = Wharf::start(&ns);
    let id = w.write_id("orders", "k", b"hello");
    let status = w.status();
    let plugin = &status["namespaces"]["orders"]["targets"]["default"]["plugin"];
    assert_eq!(plugin["state"], json!("failed"), "{plugin}");
    let reason = plugin["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("user info") && reason.contains("127.0.0.1"),
        "the reason says what and where: {reason}"
    );
    let seen = [status.to_string(), w.lookup("orders", &id).to_string(), w.log()];
    for text in seen {
        assert!(!text.contains("pw-sekrit77"), "the password leaked: {text}");
    }
    let p = &status["namespaces"]["orders"]["partitions"][0];
    assert_eq!(p["backlog"], json!(1), "the write is kept while the plugin cannot load: {p}");
}

#[test]
fn config_errors_do_not_echo_secrets_in_the_reply_or_the_audit_log() {
    let sink = HttpSink::start();
    let w = Wharf::start_with_server(
        "admin_tokens = [\"root-token\"]\n",
        &sink.namespace("orders", 1, ""),
        "all",
    );
    let config = std::fs::read_to_string(w.config_path()).expect("config");
    let broken = config.replace("admin_tokens = [\"root-token\"]", "admin_tokens = \"hunter2-root\"");
    std::fs::write(w.config_path(), broken).expect("write");
    let (status, body) =
        call("POST", &w.url("/v1/admin/reload"), &[("authorization", "Bearer root-token")], None);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], json!("config_invalid"));
    assert!(body.to_string().contains("server.admin_tokens"), "the key is named: {body}");
    assert!(!body.to_string().contains("hunter2"), "{body}");
    let audit = std::fs::read_to_string(w.data_dir().join("audit.log")).expect("audit");
    assert!(audit.contains("config.reload") && !audit.contains("hunter2"), "{audit}");
}

#[test]
fn token_changes_apply_on_reload_at_once_and_are_audited() {
    let sink = HttpSink::start();
    let ns = sink.namespace("orders", 1, "tokens = [\"ns-old\"]");
    let w = Wharf::start_with_server("admin_tokens = [\"admin-old\"]\n", &ns, "all");
    let status_url = w.url("/v1/status");
    assert_eq!(call("GET", &status_url, &[("authorization", "Bearer admin-old")], None).0, 200);

    let config = std::fs::read_to_string(w.config_path()).expect("config");
    let changed = config.replace("admin-old", "admin-new").replace("ns-old", "ns-new");
    std::fs::write(w.config_path(), changed).expect("write");
    let (status, body) =
        call("POST", &w.url("/v1/admin/reload"), &[("authorization", "Bearer admin-old")], None);
    assert_eq!((status, &body["tokens_changed"]), (200, &json!(true)), "{body}");

    assert_eq!(call("GET", &status_url, &[("authorization", "Bearer admin-old")], None).0, 403);
    assert_eq!(call("GET", &status_url, &[("authorization", "bearer admin-new")], None).0, 200, "any case");
    let write = json!({"payload": b64(b"x")});
    let msgs = w.url("/v1/namespaces/orders/messages");
    assert_eq!(call("POST", &msgs, &[("authorization", "Bearer ns-old")], Some(&write)).0, 403);
    assert_eq!(call("POST", &msgs, &[("authorization", "Bearer ns-new")], Some(&write)).0, 200);

    let reload =
        audit_lines(&w).into_iter().find(|l| l["action"] == json!("config.reload")).expect("audited");
    assert_eq!(reload["detail"]["tokens_changed"], json!(true), "{reload}");
    let sha_prefix = &sha256_hex(b"admin-old")[..12];
    assert!(
        !reload["actor"].as_str().unwrap_or("").contains(sha_prefix),
        "the actor is a keyed hash: {reload}"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn refused_calls_on_admin_routes_are_audited() {
    let sink = HttpSink::start();
    let w = Wharf::start_with_server("admin_tokens = [\"root\"]\n", &sink.namespace("orders", 1, ""), "all");
    assert_eq!(call("POST", &w.url("/v1/admin/reload"), &[], None).0, 401);
    assert_eq!(call("POST", &w.url("/v1/admin/reload"), &[("authorization", "Bearer nope")], None).0, 403);
    let refused: Vec<_> =
        audit_lines(&w).into_iter().filter(|l| l["action"] == json!("auth.refused")).collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[0]["actor"], json!("anonymous"));
    assert_eq!(refused[1]["outcome"], json!("error"));
}

#[test]
fn parked_transaction_chunks_count_against_the_backlog_limit() {
    let sink = HttpSink::start();
    let w =
        Wharf::start(&sink.namespace("orders", 1, "[namespaces.orders.limits]\nmax_backlog_bytes = 20000"));
    let (status, txn) = call("POST", &w.url("/v1/namespaces/orders/transactions"), &[], Some(&json!({})));
    assert_eq!(status, 201, "{txn}");
    let id = txn["transaction_id"].as_str().expect("id").to_string();
    let chunk = |seq: u32| {
        let body = json!({"payload": b64(&vec![b'x'; 15_000])});
        call(
            "PUT",
            &w.url(&format!("/v1/namespaces/orders/transactions/{id}/chunks/{seq}")),
            &[],
            Some(&body),
        )
    };
    assert_eq!(chunk(0).0, 200);
    let (status, body) = chunk(1);
    assert_eq!((status, &body["error"]["code"]), (429, &json!("backlog_full")), "{body}");
}

#[test]
fn a_huge_retry_after_is_capped_at_max_backoff() {
    let sink = HttpSink::start();
    sink.set(|b| {
        b.fail_until = Some(Instant::now() + Duration::from_millis(500));
        b.retry_after = Some("18446744073709551615".into());
    });
    let w = Wharf::start(&sink.namespace("orders", 1, "retry = { max_backoff_ms = 300 }"));
    let id = w.write_id("orders", "k", b"later");
    eventually(Duration::from_secs(20), "delivered after the outage, not in 584 billion years", || {
        (w.lookup("orders", &id)["state"] == json!("delivered")).then_some(())
    });
}

#[test]
fn small_hostile_inputs_get_typed_errors() {
    let sink = HttpSink::start();
    let w = Wharf::start(&sink.namespace("orders", 1, ""));
    let replay = w.dlq_replay("orders", None, &json!({"rate_per_sec": 1e-300}));
    assert_eq!(
        (replay.status, &replay.body["error"]["code"]),
        (400, &json!("invalid_rate")),
        "{:?}",
        replay.body
    );

    let dup = format!("{{\"payload\": \"{}\", \"payload\": \"{}\"}}", b64(b"a"), b64(b"b"));
    let r = w.post_raw("/v1/namespaces/orders/messages", &dup);
    assert_eq!((r.status, &r.body["error"]["code"]), (400, &json!("invalid_json")), "{:?}", r.body);
    assert_eq!(w.partitions("orders")[0]["head_sequence"], json!(0), "nothing written");

    // A folder that is not a namespace's data is not deleted.
    let stray = w.data_dir().join("backups");
    std::fs::create_dir_all(&stray).expect("mkdir");
    std::fs::write(stray.join("important.sql"), "keep me").expect("write");
    let r = w.delete("/v1/admin/namespaces/backups/data");
    assert_eq!((r.status, &r.body["error"]["code"]), (409, &json!("not_namespace_data")), "{:?}", r.body);
    assert!(stray.join("important.sql").is_file());
}

#[test]
fn data_audit_and_cache_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let sink = HttpSink::start();
    let w = Wharf::start(&sink.namespace("orders", 1, ""));
    w.write_visible("orders", "k", b"private", 10_000);
    let _ = w.dlq_replay("orders", None, &json!({})); // an audit line
    let mut stack = vec![w.data_dir()];
    let mut checked = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("dir").flatten() {
            let meta = entry.metadata().expect("meta");
            let mode = meta.permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", entry.path().display());
            checked += 1;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    assert!(checked > 5, "{checked} entries");
}

/// The compile cache's `.cwasm` entries whose name starts with `hex`.
fn cache_entries(w: &Wharf, hex: &str) -> Vec<std::path::PathBuf> {
    let dir = w.data_dir().join(".plugin-cache");
    let entries = std::fs::read_dir(&dir).expect("cache dir").flatten();
    entries
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(hex)))
        .collect()
}

#[test]
fn a_tampered_compile_cache_entry_is_recompiled_and_rejected_plugins_leave_none() {
    let sink = HttpSink::start();
    let mut w = Wharf::start(&sink.namespace("orders", 1, ""));
    let http = std::fs::read(wharf_tests::plugin("http")).expect("http.wasm");
    let entry = cache_entries(&w, &sha256_hex(&http)).pop().expect("http's entry");
    w.kill();
    // Native code edited on disk: no longer trusted.
    let mut bytes = std::fs::read(&entry).expect("entry");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&entry, bytes).expect("tamper");
    w.restart();
    assert!(w.log().contains("failed its integrity check"), "{}", w.log());
    w.write_visible("orders", "k", b"still delivered", 10_000);

    // memcached cannot init with the http target's config: rejected, and
    // its compiled code does not stay in the cache.
    let memcached = std::fs::read(wharf_tests::plugin("memcached")).expect("memcached.wasm");
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let r = agent.put(&w.url("/v1/admin/namespaces/orders/plugin")).send(&memcached[..]).expect("PUT");
    assert_eq!(r.status().as_u16(), 422);
    assert!(cache_entries(&w, &sha256_hex(&memcached)).is_empty(), "a rejected plugin's entry is removed");
}
