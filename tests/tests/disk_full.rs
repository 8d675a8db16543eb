//! A full disk is a temporary condition, not damage: on a small tmpfs data
//! dir, writes fill it and then get `507 disk_full` with `Retry-After`; the
//! partition is not halted; once the tmpfs is grown writes succeed again
//! without a restart; after a restart every acknowledged write is delivered.
//!
//! Needs root (mount); skipped with a message otherwise.

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
    let Some(tmpfs) = Tmpfs::mount(&root.path().join("disk"), "3m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
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
