//! The embedded log through the real binary: verify, salvage, and a SIGKILL
//! loop under concurrent load.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use wharf_tests::{HttpSink, Wharf, b64, eventually, plugin, wharf_bin};

fn config(sink: &HttpSink) -> String {
    format!(
        r#"
[namespaces.ledger]
partitions = 2
[namespaces.ledger.target]
plugin = "{}"
allow_http = ["{url}"]
config = {{ url = "{url}" }}
"#,
        plugin("http").display(),
        url = sink.url()
    )
}

fn segment_of(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .expect("partition dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("a segment")
}

#[test]
fn verify_names_the_damage_and_salvage_lets_the_partition_resume() {
    let sink = HttpSink::start();
    sink.set(|b| b.fail_all = Some(503)); // keep everything in the log
    let mut wharf = Wharf::start(&config(&sink));
    for i in 0..20 {
        let r = wharf.post(
            "/v1/namespaces/ledger/messages",
            &json!({"key": "same-key", "payload": b64(format!("record-{i:02}-{}", "x".repeat(200)).as_bytes())}),
        );
        assert_eq!(r.status, 200);
    }
    let partition = wharf.status()["namespaces"]["ledger"]["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .position(|p| p["head_sequence"] == json!(20))
        .expect("the partition of same-key");
    wharf.kill();
    let pdir = wharf.data_dir().join(format!("ledger/p{partition}"));
    let seg = segment_of(&pdir);
    let mut bytes = std::fs::read(&seg).expect("segment");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&seg, bytes).expect("write");

    let verify =
        Command::new(wharf_bin()).args(["log", "verify"]).arg(wharf.data_dir()).output().expect("verify");
    let text =
        format!("{}{}", String::from_utf8_lossy(&verify.stdout), String::from_utf8_lossy(&verify.stderr));
    assert!(!verify.status.success(), "verify passed a damaged log: {text}");
    assert!(text.contains(&seg.file_name().expect("name").to_string_lossy().to_string()), "{text}");
    assert!(text.contains("offset"), "{text}");

    wharf.restart();
    let st = wharf.status();
    assert_eq!(st["namespaces"]["ledger"]["partitions"][partition]["halted"], json!(true));
    let w = wharf.post("/v1/namespaces/ledger/messages", &json!({"key": "same-key", "payload": "eA=="}));
    assert_eq!(w.body["error"]["code"], json!("partition_halted"));
    wharf.kill();

    let salvage = Command::new(wharf_bin()).args(["log", "salvage"]).arg(&pdir).output().expect("salvage");
    assert!(salvage.status.success(), "{}", String::from_utf8_lossy(&salvage.stderr));
    assert!(pdir.join("quarantine").is_dir(), "salvage moved nothing aside");
    let verify =
        Command::new(wharf_bin()).args(["log", "verify"]).arg(wharf.data_dir()).output().expect("verify");
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    let audit = std::fs::read_to_string(wharf.data_dir().join("audit.log")).expect("audit");
    assert!(audit.contains("\"action\":\"log.salvage\""), "{audit}");

    wharf.restart();
    sink.set(|b| b.fail_all = None);
    assert_eq!(wharf.status()["namespaces"]["ledger"]["partitions"][partition]["halted"], json!(false));
    // What survived the damage is delivered; the record after it too.
    eventually(Duration::from_secs(30), "deliveries after salvage", || {
        sink.accepted().iter().any(|r| r.body.starts_with(b"record-19")).then_some(())
    });
    let w = wharf.post("/v1/namespaces/ledger/messages", &json!({"key": "same-key", "payload": "eA=="}));
    assert_eq!(w.status, 200, "{:?}", w.body);
}

#[test]
fn dozens_of_sigkills_under_concurrent_load_lose_no_acknowledged_message() {
    let sink = HttpSink::start();
    let mut wharf = Wharf::start(&config(&sink));
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let port = wharf.port;
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (acked, stop, next) = (acked.clone(), stop.clone(), next.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(5)))
                    .build()
                    .into();
                while !stop.load(Ordering::Relaxed) {
                    let v = format!("kill-loop-{}", next.fetch_add(1, Ordering::Relaxed));
                    let body = json!({"key": format!("k{}", v.len() % 5), "payload": b64(v.as_bytes())});
                    let url = format!("http://127.0.0.1:{port}/v1/namespaces/ledger/messages");
                    if let Ok(mut r) =
                        agent.post(&url).header("content-type", "application/json").send(body.to_string())
                        && r.status() == 200
                        && r.body_mut()
                            .read_json::<serde_json::Value>()
                            .is_ok_and(|v| v["durable"] == json!(true))
                    {
                        acked.lock().expect("lock").push(v);
                    }
                }
            })
        })
        .collect();
    for i in 0..24 {
        std::thread::sleep(Duration::from_millis(150 + (i % 4) * 50));
        wharf.restart(); // SIGKILL, then start again
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() > 100, "too little load to mean anything: {}", acked.len());
    eventually(Duration::from_secs(60), "every acknowledged message delivered", || {
        let got: std::collections::HashSet<Vec<u8>> = sink.accepted().into_iter().map(|r| r.body).collect();
        acked.iter().all(|v| got.contains(v.as_bytes())).then_some(())
    });
}
