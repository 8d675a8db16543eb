//! A full disk is a temporary condition, not damage: on a small tmpfs data
//! dir, writes fill it and then get `507 disk_full` with `Retry-After`; the
//! partition is not halted; once the tmpfs is grown writes succeed again
//! without a restart; after a restart every acknowledged write is delivered.
//!
//! The chunk store of transactions too: a chunk refused for a full disk is
//! cut back and gets `507 disk_full`; once space returns the same
//! transaction completes and is delivered.
//!
//! Needs root (mount); skipped with a message otherwise, except under
//! `CI=true`, where a test that cannot mount fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::{HttpSink, Wharf, b64, eventually};

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self { at: at.to_path_buf() })
    }

    /// The tmpfs, or `None` (the test is skipped) where mounting needs a
    /// root this process is not. Under `CI=true` that is a failure: CI
    /// must run these tests, not pass them by skipping.
    fn mount_or_skip(at: &Path, size: &str) -> Option<Self> {
        let mounted = Self::mount(at, size);
        if mounted.is_none() {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(!ci, "CI=true and a tmpfs cannot be mounted at {} (needs root)", at.display());
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        }
        mounted
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount {} to {size}", self.at.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.at).status();
    }
}

/// One write, with the reply's status, body and Retry-After header.
fn write(w: &Wharf, i: usize) -> (u16, Value, Option<String>) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let payload = format!("m{i:05}-{}", "x".repeat(8000));
    let body = json!({"key": format!("k{}", i % 4), "payload": b64(payload.as_bytes())});
    let mut r = agent.post(&w.url("/v1/namespaces/orders/messages")).send_json(&body).expect("write");
    let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or(Value::Null), retry_after)
}

#[test]
fn a_full_disk_refuses_writes_for_now_and_they_resume_when_space_returns() {
    let root = tempfile::tempdir().expect("tempdir");
    let Some(tmpfs) = Tmpfs::mount_or_skip(&root.path().join("disk"), "3m") else { return };
    let sink = HttpSink::start();
    sink.set(|b| b.fail_all = Some(503)); // the target is down: nothing is trimmed
    let data = tmpfs.at.join("data");
    let server = format!("data_dir = {:?}\nsegment_max_bytes = 65536\n", data.display().to_string());
    let mut w = Wharf::start_with_server(&server, &sink.namespace("orders", 1, ""), "all");

    let mut acked = Vec::new();
    let refused = (0..2000).find_map(|i| match write(&w, i) {
        (200, body, _) => {
            acked.push(format!("m{i:05}"));
            assert_eq!(body["durable"], json!(true));
            None
        }
        other => Some(other),
    });
    let (status, body, retry_after) = refused.expect("the 3 MiB disk filled up");
    assert_eq!((status, &body["error"]["code"]), (507, &json!("disk_full")), "{body}\n{}", w.log());
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(acked.len() > 10, "{} writes before the disk was full", acked.len());

    let p = &w.partitions("orders")[0];
    assert_eq!(p["halted"], json!(false), "a full disk does not halt: {p}");
    assert_eq!(p["refusing_writes"], json!("disk_full"), "{p}");
    assert_eq!(p["head_sequence"], json!(acked.len()), "the refused write left nothing: {p}");
    let refusals =
        w.metric("wharf_admission_rejections_total", &[("namespace", "orders"), ("kind", "disk_full")]);
    assert!(refusals.unwrap_or(0.0) >= 1.0, "{refusals:?}");

    // Space returns: the same process takes writes again, by itself.
    tmpfs.resize("64m");
    let i = acked.len() + 1000;
    let (status, body, _) = write(&w, i);
    assert_eq!(status, 200, "{body}\n{}", w.log());
    acked.push(format!("m{i:05}"));
    assert_eq!(w.partitions("orders")[0]["refusing_writes"], json!(null));

    // A restart, then the target comes back: every acknowledged write arrives.
    w.restart();
    sink.set(|b| b.fail_all = None);
    eventually(Duration::from_secs(60), "every acknowledged write delivered", || {
        let got = sink.accepted_bodies();
        acked.iter().all(|id| got.iter().any(|b| b.starts_with(id.as_str()))).then_some(())
    });
}

/// Like [`write`], with a key and a small payload.
fn write_small(w: &Wharf, key: &str, payload: &str) -> (u16, Value) {
    let agent = wharf_tests::agent();
    let body = json!({"key": key, "payload": b64(payload.as_bytes())});
    let mut r = agent.post(&w.url("/v1/namespaces/orders/messages")).send_json(&body).expect("write");
    (r.status().as_u16(), r.body_mut().read_json().unwrap_or(Value::Null))
}

#[test]
fn under_the_free_space_reserve_writes_stop_while_the_dlq_still_takes_entries_and_resume_by_themselves() {
    let root = tempfile::tempdir().expect("tempdir");
    let Some(tmpfs) = Tmpfs::mount_or_skip(&root.path().join("disk"), "16m") else { return };
    let sink = HttpSink::start();
    sink.set(|b| b.fail_all = Some(503)); // held back for now
    let data = tmpfs.at.join("data");
    let server = format!(
        "data_dir = {:?}\nsegment_max_bytes = 65536\nmin_free_bytes = 8388608\n",
        data.display().to_string()
    );
    let retry =
        "[namespaces.orders.retry]\nmax_attempts = 100000\ninitial_backoff_ms = 20\nmax_backoff_ms = 100\n";
    let w = Wharf::start_with_server(&server, &sink.namespace("orders", 1, retry), "all");
    assert_eq!(write_small(&w, "bad", "poison for the DLQ").0, 200);
    assert_eq!(w.status()["disk"]["refusing_writes"], json!(false));

    // Something else fills the disk to under the 8 MiB reserve.
    let ballast = tmpfs.at.join("ballast");
    std::fs::write(&ballast, vec![7u8; 10 << 20]).expect("ballast");
    let (status, body) = eventually(Duration::from_secs(5), "the reserve refuses writes", || {
        let r = write_small(&w, "k", "refused");
        (r.0 != 200).then_some(r)
    });
    assert_eq!((status, &body["error"]["code"]), (507, &json!("disk_full")), "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("server.min_free_bytes")), "{body}");
    let disk = &w.status()["disk"];
    assert_eq!(
        (disk["refusing_writes"].clone(), disk["min_free_bytes"].clone()),
        (json!(true), json!(8388608)),
        "{disk}"
    );
    let refusals =
        w.metric("wharf_admission_rejections_total", &[("namespace", "orders"), ("kind", "disk_reserve")]);
    assert!(refusals.unwrap_or(0.0) >= 1.0, "{refusals:?}");
    let head = w.partitions("orders")[0]["head_sequence"].clone();
    assert_eq!(write_small(&w, "k", "refused again").0, 507);
    assert_eq!(w.partitions("orders")[0]["head_sequence"], head, "nothing of a refused write was appended");

    // Recovery still writes: the target rejects the message, its DLQ entry lands.
    sink.set(|b| {
        b.fail_all = None;
        b.reject_keys = vec!["bad".into()];
    });
    eventually(Duration::from_secs(20), "the DLQ entry written under the reserve", || {
        (w.dlq_ids("orders", None).len() == 1).then_some(())
    });

    // Space returns: writes resume in the same process.
    std::fs::remove_file(&ballast).expect("remove ballast");
    let (status, body) = eventually(Duration::from_secs(5), "writes resume", || {
        let r = write_small(&w, "k", "after");
        (r.0 == 200).then_some(r)
    });
    assert_eq!(body["durable"], json!(true), "{status} {body}");
    assert_eq!(w.status()["disk"]["refusing_writes"], json!(false));
    eventually(Duration::from_secs(20), "delivered", || {
        sink.accepted_bodies().contains("after").then_some(())
    });
}

/// Fills the filesystem at `dir` with a ballast file until it is full.
fn fill(dir: &Path) {
    use std::io::Write as _;
    let mut f = std::fs::File::create(dir.join("ballast")).expect("ballast");
    let block = vec![7u8; 64 << 10];
    while f.write_all(&block).is_ok() {}
    // The last partial block, a page at a time.
    while f.write_all(&block[..4096]).is_ok() {}
}

/// PUTs chunk `seq` of `txn`: status, body, Retry-After.
fn put_chunk(w: &Wharf, txn: &str, seq: u32, payload: &[u8]) -> (u16, Value, Option<String>) {
    let agent = wharf_tests::agent();
    let url = w.url(&format!("/v1/namespaces/orders/transactions/{txn}/chunks/{seq}"));
    let mut r = agent.put(&url).send_json(json!({"payload": b64(payload)})).expect("PUT chunk");
    let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    (r.status().as_u16(), r.body_mut().read_json().unwrap_or(Value::Null), retry_after)
}

#[test]
fn a_chunk_refused_for_a_full_disk_is_sent_again_and_its_transaction_completes_and_delivers() {
    let root = tempfile::tempdir().expect("tempdir");
    let Some(tmpfs) = Tmpfs::mount_or_skip(&root.path().join("disk"), "8m") else { return };
    let sink = HttpSink::start();
    let data = tmpfs.at.join("data");
    let server = format!("data_dir = {:?}\n", data.display().to_string());
    let w = Wharf::start_with_server(&server, &sink.namespace("orders", 1, ""), "all");
    let begun = w.post("/v1/namespaces/orders/transactions", &json!({"key": "order-1"}));
    assert_eq!(begun.status, 201, "{:?}", begun.body);
    let txn = begun.body["transaction_id"].as_str().expect("id").to_string();
    let parts: Vec<Vec<u8>> =
        (0..2).map(|s| format!("part-{s}-{}", "y".repeat(50_000)).into_bytes()).collect();
    assert_eq!(put_chunk(&w, &txn, 0, &parts[0]).0, 200);

    fill(&tmpfs.at);
    let (status, body, retry_after) = put_chunk(&w, &txn, 1, &parts[1]);
    assert_eq!((status, &body["error"]["code"]), (507, &json!("disk_full")), "{body}\n{}", w.log());
    assert_eq!(retry_after.as_deref(), Some("1"));
    let info = w.get(&format!("/v1/namespaces/orders/transactions/{txn}"));
    assert_eq!((&info.body["state"], &info.body["chunks"]), (&json!("open"), &json!(1)), "{:?}", info.body);

    // Space returns: the same chunk goes in, the file holds whole frames
    // only (the commit reads every chunk back), and the transaction delivers.
    tmpfs.resize("64m");
    let (status, body, _) = put_chunk(&w, &txn, 1, &parts[1]);
    assert_eq!((status, &body["duplicate"]), (200, &json!(false)), "{body}");
    let commit = json!({"chunks": 2, "wait": "visible", "timeout_ms": 20000});
    let done = w.post(&format!("/v1/namespaces/orders/transactions/{txn}/commit"), &commit);
    assert_eq!((done.status, &done.body["visible"]), (200, &json!(true)), "{:?}\n{}", done.body, w.log());
    let got: Vec<Vec<u8>> = sink
        .accepted()
        .into_iter()
        .filter(|r| r.header("x-wharf-transaction-id") == Some(txn.as_str()))
        .map(|r| r.body)
        .collect();
    assert_eq!(got, parts, "both chunks, once, in order");
}
