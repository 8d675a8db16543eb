//! The embedded log through the real binary: verify, salvage, and a SIGKILL
//! loop under concurrent load.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use wharf_tests::{HttpSink, Load, Wharf, b64, eventually, wharf_bin};

fn config(sink: &HttpSink) -> String {
    sink.namespace("ledger", 2, "")
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
    // Inside the frames, not in the zeros the active segment keeps after
    // them (`docs/log-format.md`, "Pre-zeroed tail").
    let frames_end = bytes.iter().rposition(|b| *b != 0).expect("frames") + 1;
    assert!(frames_end > 20 * 200, "the 20 records are there");
    let at = frames_end / 2;
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
    let load = Load::start(wharf.port, "ledger", 4, |i| format!("k{}", i % 5), |i| format!("kill-loop-{i}"));
    for i in 0..24 {
        std::thread::sleep(Duration::from_millis(150 + (i % 4) * 50));
        wharf.restart(); // SIGKILL, then start again
    }
    std::thread::sleep(Duration::from_millis(300));
    let acked: Vec<String> = load.stop().into_iter().map(|(_, v)| v).collect();
    assert!(acked.len() > 100, "too little load to mean anything: {}", acked.len());
    eventually(Duration::from_secs(60), "every acknowledged message delivered", || {
        let got: std::collections::HashSet<Vec<u8>> = sink.accepted().into_iter().map(|r| r.body).collect();
        acked.iter().all(|v| got.contains(v.as_bytes())).then_some(())
    });
}
