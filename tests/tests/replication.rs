//! Replication (docs/replication.md): the failure matrix of seed 003, one
//! named test per row, each against two real `wharf` processes (a primary
//! whose namespace `orders` ships through the `replica` plugin, and a
//! replica whose `orders` has `mode = "replica"`), with a fault-injecting
//! TCP proxy between them and SIGKILL of either side.
//!
//! "Equal histories" is checked through the chained digest both sides show
//! in `/v1/status` (`partitions[i].chain`): equal ends and equal digests
//! mean byte-identical records in the same order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wharf_tests::proxy::{Fault, FaultProxy, replay_raw};
use wharf_tests::{HttpSink, Wharf, b64, eventually, plugin, quick_retry, wharf_bin};

const NS: &str = "orders";
const PARTITIONS: u32 = 2;
const WAIT: Duration = Duration::from_secs(90);
const RECORDS: &str = "/v1/namespaces/orders/replication/partitions/";

struct Pair {
    primary: Wharf,
    replica: Wharf,
    proxy: FaultProxy,
    /// The primary region's own store (target `local`).
    local: HttpSink,
    /// The replica region's store (the replica namespace's target).
    remote: HttpSink,
}

fn addr(w: &Wharf) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], w.port))
}

fn replica_config(remote: &HttpSink) -> String {
    remote.namespace(NS, PARTITIONS, "mode = \"replica\"\n") + &quick_retry(NS)
}

fn primary_config(local: &HttpSink, proxy: &FaultProxy) -> String {
    primary_config_to(local, &proxy.url())
}

fn primary_config_to(local: &HttpSink, url: &str) -> String {
    format!(
        "{}{}\n[namespaces.{NS}.targets.replica]\nplugin = \"{}\"\nordering = \"partition\"\nallow_http = [\"{url}\"]\nconfig = {{ url = \"{url}\", timeout_ms = 2000 }}\n{}",
        format_args!("\n[namespaces.{NS}]\npartitions = {PARTITIONS}\n"),
        local.target_table(NS, "local"),
        plugin("replica").display(),
        quick_retry(NS),
    )
}

impl Pair {
    fn start() -> Self {
        let (local, remote) = (HttpSink::start(), HttpSink::start());
        let replica = Wharf::start(&replica_config(&remote));
        let proxy = FaultProxy::start(addr(&replica));
        let primary = Wharf::start(&primary_config(&local, &proxy));
        Pair { primary, replica, proxy, local, remote }
    }

    /// Like [`Pair::start`], with small segments on the primary, so that
    /// delivered history is deleted soon.
    fn start_trimming() -> Self {
        let (local, remote) = (HttpSink::start(), HttpSink::start());
        let replica = Wharf::start(&replica_config(&remote));
        let proxy = FaultProxy::start(addr(&replica));
        let primary =
            Wharf::start_with_server("segment_max_bytes = 4096", &primary_config(&local, &proxy), "all");
        Pair { primary, replica, proxy, local, remote }
    }

    fn restart_replica(&mut self) {
        self.replica.restart();
        self.proxy.set_upstream(addr(&self.replica));
    }

    /// Writes `n` messages over 5 keys; returns their ids (each acked durable).
    fn write(&self, n: usize, tag: &str) -> Vec<String> {
        (0..n)
            .map(|i| self.primary.write_id(NS, &format!("k{}", i % 5), format!("{tag}-{i}").as_bytes()))
            .collect()
    }

    /// Once the replica holds everything the primary holds.
    fn wait_converged(&self) {
        eventually(WAIT, "the replica to hold the primary's whole history", || {
            let (p, r) = (chains(&self.primary), chains(&self.replica));
            let heads: Vec<u64> = self
                .primary
                .partitions(NS)
                .iter()
                .map(|p| p["head_sequence"].as_u64().unwrap_or(0))
                .collect();
            let complete = p.iter().zip(&heads).all(|((end, _), head)| end == head);
            (complete && p == r).then_some(())
        });
    }
}

/// Per partition: (chain end, chain digest) from `/v1/status`.
fn chains(w: &Wharf) -> Vec<(u64, String)> {
    w.partitions(NS)
        .iter()
        .map(|p| {
            (p["chain"]["end"].as_u64().unwrap_or(0), p["chain"]["digest"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

fn replica_ends(w: &Wharf) -> Vec<u64> {
    chains(w).into_iter().map(|(e, _)| e).collect()
}

/// The replica's replication halt reason of each partition.
fn replica_halts(w: &Wharf) -> Vec<Option<String>> {
    w.partitions(NS).iter().map(|p| p["replication"]["halt"]["reason"].as_str().map(str::to_string)).collect()
}

/// The primary's replica-target halt reason of each partition.
fn target_halts(w: &Wharf) -> Vec<Option<String>> {
    w.target_partitions(NS, "replica")
        .iter()
        .map(|p| p["halt"]["reason"].as_str().map(str::to_string))
        .collect()
}

fn any_halt(halts: &[Option<String>]) -> Option<String> {
    halts.iter().flatten().next().cloned()
}

/// Every acked id is on the replica (a lookup finds it) once converged.
fn assert_all_on_replica(pair: &Pair, ids: &[String]) {
    for id in ids {
        let r = pair.replica.get(&format!("/v1/namespaces/{NS}/messages/{id}"));
        assert_eq!(r.status, 200, "acked {id} not on the replica: {:?}", r.body);
    }
}

/// What an operator does once they looked: `wharf replica resume` on the
/// replica, `wharf target resume` on the primary.
fn resume_both(pair: &Pair) {
    wharf(&["replica", "resume", NS, "--server", &pair.replica.url("")]);
    wharf(&["target", "resume", NS, "replica", "--server", &pair.primary.url("")]);
}

/// Runs the `wharf` CLI; asserts success; returns stdout.
fn wharf(args: &[&str]) -> String {
    let out = std::process::Command::new(wharf_bin()).args(args).output().expect("run wharf");
    assert!(out.status.success(), "wharf {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The path and body of a real batch the proxy saw: of the last records
/// request of each partition, the one with the most records.
fn last_batch(proxy: &FaultProxy) -> (String, Value) {
    (0..PARTITIONS)
        .filter_map(|p| proxy.last_request(&format!("{RECORDS}{p}/records")))
        .map(|raw| {
            let text = String::from_utf8_lossy(&raw).to_string();
            let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP request");
            let path = head.split_whitespace().nth(1).expect("request line").to_string();
            (path, serde_json::from_str::<Value>(body).expect("a JSON batch"))
        })
        .max_by_key(|(_, b)| b["records"].as_array().map_or(0, Vec::len))
        .expect("a records request went through the proxy")
}

/// A records request the proxy saw whose first record is past what the
/// replica holds (`ends`: its chains): a batch new to it.
fn new_batch(proxy: &FaultProxy, ends: &[(u64, String)]) -> Option<(String, Value)> {
    (0..PARTITIONS).find_map(|p| {
        let raw = proxy.last_request(&format!("{RECORDS}{p}/records"))?;
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let path = head.split_whitespace().nth(1)?.to_string();
        let batch: Value = serde_json::from_str(body).ok()?;
        let first = batch["records"][0]["seq"].as_u64()?;
        (first >= ends[p as usize].0).then_some((path, batch))
    })
}

#[test]
fn a_replica_mirrors_the_primary_and_refuses_client_writes() {
    let pair = Pair::start();
    let ids = pair.write(40, "m");
    pair.wait_converged();
    assert_all_on_replica(&pair, &ids);
    // The same ids at the same sequences on both sides.
    let on_primary = pair.primary.lookup(NS, &ids[7]);
    assert_eq!(on_primary["message_id"], ids[7].as_str());
    let w = pair.replica.write(NS, Some("k"), b"x");
    assert_eq!(
        (w.status, w.body["error"]["code"].as_str()),
        (409, Some("read_only_replica")),
        "{:?}",
        w.body
    );
    let txn = pair.replica.post(&format!("/v1/namespaces/{NS}/transactions"), &json!({"key": "k"}));
    assert_eq!(txn.body["error"]["code"], "read_only_replica", "{:?}", txn.body);
    // Both regions' stores get every message, from their own Wharf.
    eventually(WAIT, "both stores to have 40 messages", || {
        (pair.local.accepted_bodies().len() == 40 && pair.remote.accepted_bodies().len() == 40).then_some(())
    });
    assert_eq!(pair.local.accepted_bodies(), pair.remote.accepted_bodies());
    assert_eq!(pair.replica.status()["namespaces"][NS]["mode"], "replica");
    let shipped = pair.primary.metric("wharf_mirror_shipped_bytes_total", &[("target", "replica")]);
    assert!(shipped.is_some_and(|b| b > 0.0), "{shipped:?}");
    let appended = pair.replica.metric("wharf_replica_records_total", &[("kind", "appended")]);
    assert_eq!(appended, Some(40.0));
}

#[test]
fn row_3_1_primary_crash_before_fsync_never_reaches_the_replica() {
    let mut pair = Pair::start();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let url = pair.primary.url(&format!("/v1/namespaces/{NS}/messages"));
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(5)))
                .build()
                .into();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"key": format!("k{}", i % 7), "payload": b64(format!("w{i}").as_bytes())});
                if let Ok(mut r) = agent.post(&url).send(body.to_string())
                    && r.status() == 200
                    && let Ok(v) = r.body_mut().read_json::<Value>()
                {
                    acked.lock().expect("lock").push(v["message_id"].as_str().unwrap_or("").to_string());
                }
                i += 1;
            }
        })
    };
    eventually(WAIT, "writes to be acked", || (acked.lock().expect("lock").len() >= 50).then_some(()));
    // SIGKILL while writes are in flight: some were appended and not yet
    // covered by an fdatasync, and never acknowledged.
    pair.primary.kill();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    pair.primary.restart();
    pair.wait_converged();
    // The replica holds exactly the primary's surviving history: nothing
    // that died unsynced on the primary, and every acked message.
    assert_eq!(chains(&pair.primary), chains(&pair.replica));
    assert_all_on_replica(&pair, &acked.lock().expect("lock"));
}

#[test]
fn row_3_2_primary_crash_after_fsync_before_shipping_is_shipped_after_restart() {
    let mut pair = Pair::start();
    pair.proxy.set(Fault::Drop);
    let ids = pair.write(30, "a");
    assert_eq!(replica_ends(&pair.replica), vec![0; PARTITIONS as usize], "nothing shipped yet");
    pair.primary.kill();
    pair.proxy.set(Fault::Pass);
    pair.primary.restart();
    pair.wait_converged();
    assert_all_on_replica(&pair, &ids);
}

#[test]
fn row_3_3_primary_crash_mid_transfer_applies_none_of_the_partial_batch() {
    let mut pair = Pair::start();
    let first = pair.write(10, "a");
    pair.wait_converged();
    // New records the replica does not hold: the proxy drops their batches.
    pair.proxy.set(Fault::Drop);
    let cut_ids = pair.write(20, "c");
    let before = chains(&pair.replica);
    // The primary dies with such a batch half sent: a request whose body
    // stops short of its Content-Length, then the connection closes.
    let (path, batch) =
        eventually(WAIT, "a batch of new records to reach the proxy", || new_batch(&pair.proxy, &before));
    let body = batch.to_string();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(addr(&pair.replica)).expect("connect");
        s.write_all(format!("{head}{}", &body[..body.len() / 2]).as_bytes()).expect("send half");
        s.shutdown(std::net::Shutdown::Write).expect("close the sending side");
        // Until the replica is done with the connection.
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let _ = s.read_to_end(&mut Vec::new());
    }
    assert_eq!(chains(&pair.replica), before, "none of the partial batch is applied");
    assert_eq!(any_halt(&replica_halts(&pair.replica)), None, "a cut transfer is not damage");
    // The same batch whole is new to the replica: it is applied.
    let reply = replay_raw(addr(&pair.replica), format!("{head}{body}").as_bytes());
    assert!(
        String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert_ne!(chains(&pair.replica), before, "the whole batch lands");
    pair.proxy.set(Fault::Pass);
    pair.wait_converged();
    // And for real: the primary is SIGKILLed while it ships.
    pair.proxy.set(Fault::Delay(Duration::from_millis(300)));
    let second = pair.write(20, "b");
    pair.proxy.wait_requests(pair.proxy.requests_seen() + 1, WAIT);
    pair.primary.kill();
    let after = chains(&pair.replica);
    assert_eq!(any_halt(&replica_halts(&pair.replica)), None, "a cut transfer is not damage");
    for (b, a) in before.iter().zip(&after) {
        assert!(a.0 >= b.0, "the replica never goes back: {before:?} -> {after:?}");
    }
    pair.proxy.set(Fault::Pass);
    pair.primary.restart();
    pair.wait_converged();
    assert_all_on_replica(&pair, &[first, cut_ids, second].concat());
}

#[test]
fn row_4_1_replica_crash_before_its_append_is_retransmitted_from_its_durable_end() {
    let mut pair = Pair::start();
    let first = pair.write(10, "a");
    pair.wait_converged();
    let end_before = replica_ends(&pair.replica);
    // Requests wait in the proxy; the replica dies before they reach it.
    pair.proxy.set(Fault::BlackHole);
    let second = pair.write(20, "b");
    pair.proxy.wait_requests(pair.proxy.requests_seen() + 1, WAIT);
    pair.replica.kill();
    pair.restart_replica();
    assert_eq!(replica_ends(&pair.replica), end_before, "recovered to its durable end, no further");
    pair.proxy.set(Fault::Pass);
    pair.wait_converged();
    assert_all_on_replica(&pair, &[first, second].concat());
}

#[test]
fn row_4_2_replica_crash_after_its_append_is_not_appended_twice() {
    let mut pair = Pair::start();
    pair.write(5, "a");
    pair.wait_converged();
    // The replica appends and acknowledges, the answer is lost, then the
    // replica dies: the primary must learn by handshake that it is there.
    pair.proxy.set(Fault::LoseResponse { path_prefix: RECORDS.into(), times: 1 });
    let ids = pair.write(10, "b");
    eventually(WAIT, "the batch to land on the replica", || {
        (replica_ends(&pair.replica).iter().sum::<u64>() > 5).then_some(())
    });
    pair.proxy.set(Fault::Drop);
    let landed = replica_ends(&pair.replica);
    pair.replica.kill();
    pair.restart_replica();
    let recovered = chains(&pair.replica);
    for (l, (r, _)) in landed.iter().zip(&recovered) {
        assert!(r >= l, "an acknowledged append survives: {landed:?} -> {recovered:?}");
    }
    // Replay on the replica is deterministic: the same history every restart.
    pair.replica.kill();
    pair.restart_replica();
    assert_eq!(chains(&pair.replica), recovered);
    pair.proxy.set(Fault::Pass);
    pair.wait_converged();
    assert_all_on_replica(&pair, &ids);
    let total: u64 = replica_ends(&pair.replica).iter().sum();
    assert_eq!(total, 15, "every message once");
}

#[test]
fn row_5_1_partition_between_the_sides_stays_primary_only_then_catches_up_by_handshake() {
    let pair = Pair::start();
    pair.write(5, "a");
    pair.wait_converged();
    let before = chains(&pair.replica);
    pair.proxy.set(Fault::BlackHole);
    let seen = pair.proxy.requests_seen();
    let ids = pair.write(25, "b");
    // The primary keeps trying; the replica does not move.
    pair.proxy.wait_requests(seen + 2, WAIT);
    assert_eq!(chains(&pair.replica), before, "nothing crosses a black-holed link");
    assert_eq!(any_halt(&target_halts(&pair.primary)), None, "an outage is not a halt");
    let healed_at = pair.proxy.requests_seen();
    pair.proxy.set(Fault::Pass);
    pair.wait_converged();
    assert_all_on_replica(&pair, &ids);
    // The catch-up began with a handshake (GET on the partition), not a guess.
    let handshakes: Vec<Option<u64>> =
        (0..PARTITIONS).map(|p| pair.proxy.last_seen_on(&format!("{RECORDS}{p}"))).collect();
    assert!(handshakes.iter().any(|h| h.is_some_and(|n| n > healed_at)), "{handshakes:?} after {healed_at}");
}

#[test]
fn row_5_2_duplicates_are_ignored_and_reordered_records_halt() {
    let pair = Pair::start();
    pair.proxy.set(Fault::Duplicate { path_prefix: RECORDS.into() });
    pair.write(30, "a");
    pair.wait_converged();
    assert_eq!(any_halt(&replica_halts(&pair.replica)), None, "a byte-identical duplicate is harmless");
    // A stale batch replayed later: acknowledged as duplicates, ignored.
    pair.proxy.set(Fault::Pass);
    let raw = pair.proxy.last_request(&format!("{RECORDS}0/records")).expect("a batch");
    let reply = String::from_utf8_lossy(&replay_raw(addr(&pair.replica), &raw)).to_string();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"appended\":0"), "{reply}");
    assert_eq!(chains(&pair.replica), chains(&pair.primary));
    // The same records out of order: rejected, and replication halts. (A
    // backlog built while the link is down ships in batches of several.)
    pair.proxy.set(Fault::Drop);
    pair.write(20, "b");
    pair.proxy.set(Fault::Pass);
    pair.wait_converged();
    let (path, mut batch) = last_batch(&pair.proxy);
    let records = batch["records"].as_array_mut().expect("records");
    assert!(records.len() >= 2, "{batch}");
    records.swap(0, 1);
    let r = pair.replica.post(&path, &batch);
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (409, Some("out_of_order")), "{:?}", r.body);
    let halt = any_halt(&replica_halts(&pair.replica)).expect("halted");
    assert!(halt.starts_with("out_of_order:"), "{halt}");
}

#[test]
fn row_6_1_corrupted_record_in_transit_is_rejected_halts_and_is_not_repaired() {
    let pair = Pair::start();
    pair.write(5, "a");
    pair.wait_converged();
    // A flipped bit in a record's bytes that still parses: the checksum
    // catches it.
    let (path, mut batch) = last_batch(&pair.proxy);
    let rec = &mut batch["records"][0];
    let mut bytes = wharf_tests::unb64(rec["bytes"].as_str().expect("bytes"));
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    rec["bytes"] = Value::from(b64(&bytes));
    let r = pair.replica.post(&path, &batch);
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (422, Some("checksum_mismatch")),
        "{:?}",
        r.body
    );
    let halts = replica_halts(&pair.replica);
    let p = halts.iter().position(Option::is_some).expect("a halted partition");
    assert!(halts[p].as_deref().is_some_and(|h| h.starts_with("checksum_mismatch:")), "{halts:?}");
    // The halted partition takes nothing more; the primary's target halts
    // on it when it ships there.
    let before = chains(&pair.replica)[p].clone();
    pair.write(20, "b");
    eventually(WAIT, "the primary's replica target to halt too", || target_halts(&pair.primary)[p].clone());
    assert_eq!(chains(&pair.replica)[p], before, "nothing applied while halted");
    assert!(pair.replica.metric("wharf_replica_halts_total", &[("kind", "checksum_mismatch")]).is_some());
    assert!(pair.primary.metric("wharf_target_halts_total", &[("reason", "replication_halted")]).is_some());
    // Only an operator resumes; then the clean records flow.
    resume_both(&pair);
    pair.wait_converged();
    // Bytes damaged on the wire by the proxy: halts both sides as well.
    pair.proxy.set(Fault::CorruptBody { path_prefix: format!("{RECORDS}{p}/records"), offset: 40, times: 1 });
    pair.write(20, "c");
    let halt = eventually(WAIT, "the primary to halt on the damaged transfer", || {
        target_halts(&pair.primary)[p].clone()
    });
    assert!(halt.starts_with("damaged_transfer:") || halt.starts_with("checksum_mismatch:"), "{halt}");
    resume_both(&pair);
    pair.wait_converged();
}

#[test]
fn row_6_2_gap_halts_the_replica_partition_until_an_operator_acts() {
    let mut pair = Pair::start();
    let ids = pair.write(20, "a");
    pair.wait_converged();
    // The replica loses its data: it is now behind what it acknowledged.
    pair.replica.kill();
    std::fs::remove_dir_all(pair.replica.data_dir()).expect("wipe the replica");
    pair.restart_replica();
    pair.write(10, "b");
    let halt = eventually(WAIT, "the replica to halt on the gap", || any_halt(&replica_halts(&pair.replica)));
    assert!(halt.starts_with("gap:"), "{halt}");
    let status = pair.replica.partitions(NS);
    assert!(status.iter().any(|p| p["replication"]["state"] == "halted"), "{status:?}");
    let rows: Value =
        serde_json::from_str(&wharf(&["replica", "status", "--json", "--server", &pair.replica.url("")]))
            .expect("replica status --json");
    let halted = rows.as_array().expect("rows").iter().find(|r| r["state"] == "halted").cloned();
    assert!(
        halted.as_ref().is_some_and(
            |r| r["role"] == "replica" && r["reason"].as_str().is_some_and(|x| x.starts_with("gap:"))
        ),
        "{rows}"
    );
    let text = wharf(&["replica", "status", "--server", &pair.replica.url("")]);
    assert!(text.contains("halted") && text.contains("gap:"), "{text}");
    // No reads from the halted partition, no replication into it.
    let halted_part =
        replica_halts(&pair.replica).iter().position(Option::is_some).expect("a halted partition");
    let id = ids.iter().find(|id| id.starts_with(&format!("{halted_part}-"))).expect("an id there");
    let r = pair.replica.get(&format!("/v1/namespaces/{NS}/messages/{id}"));
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (409, Some("replication_halted")),
        "{:?}",
        r.body
    );
    let (path, batch) = last_batch(&pair.proxy);
    let r = pair.replica.post(&path, &batch);
    assert_eq!(r.body["error"]["code"], "replication_halted", "{:?}", r.body);
    eventually(WAIT, "the primary's target to halt", || any_halt(&target_halts(&pair.primary)));
    let rows: Value =
        serde_json::from_str(&wharf(&["replica", "status", "--json", "--server", &pair.primary.url("")]))
            .expect("replica status --json");
    assert!(
        rows.as_array().expect("rows").iter().any(|r| r["role"] == "primary" && r["state"] == "halted"),
        "{rows}"
    );
    // An operator's resume does not fill the gap: it halts again.
    resume_both(&pair);
    let again = eventually(WAIT, "the gap to halt again", || any_halt(&replica_halts(&pair.replica)));
    assert!(again.starts_with("gap:"), "{again}");
}

#[test]
fn row_8_1_divergence_halts_both_sides_and_is_never_healed() {
    let mut pair = Pair::start();
    pair.write(20, "a");
    pair.wait_converged();
    // The primary's history is replaced (its data dir swapped for a fresh
    // one with other writes): the replica's is no longer a prefix of it.
    pair.primary.kill();
    pair.proxy.set(Fault::Drop);
    std::fs::remove_dir_all(pair.primary.data_dir()).expect("wipe the primary");
    pair.primary.restart();
    pair.write(30, "other");
    pair.proxy.set(Fault::Pass);
    let halt =
        eventually(WAIT, "the replica to halt on divergence", || any_halt(&replica_halts(&pair.replica)));
    assert!(halt.starts_with("diverged:"), "{halt}");
    let primary_halt = eventually(WAIT, "the primary to halt", || any_halt(&target_halts(&pair.primary)));
    assert!(
        primary_halt.starts_with("diverged:") || primary_halt.starts_with("replication_halted:"),
        "{primary_halt}"
    );
    let replica_history = chains(&pair.replica);
    // Resuming does not heal it.
    resume_both(&pair);
    let again = eventually(WAIT, "divergence to halt again", || any_halt(&replica_halts(&pair.replica)));
    assert!(again.starts_with("diverged:"), "{again}");
    let after = chains(&pair.replica);
    for ((e0, _), (e1, _)) in replica_history.iter().zip(&after) {
        assert_eq!(e0, e1, "nothing of the other history was applied");
    }
}

#[test]
fn row_9_1_replica_crash_while_partitioned_recovers_locally_and_resumes_by_handshake() {
    let mut pair = Pair::start();
    pair.write(10, "a");
    pair.wait_converged();
    let before = chains(&pair.replica);
    pair.proxy.set(Fault::BlackHole);
    let ids = pair.write(20, "b");
    pair.replica.kill();
    pair.restart_replica();
    assert_eq!(chains(&pair.replica), before, "recovered locally, still behind");
    pair.proxy.set(Fault::Pass);
    pair.wait_converged();
    assert_all_on_replica(&pair, &ids);
}

#[test]
fn row_9_2_crash_during_recovery_recovers_with_the_same_result() {
    let mut pair = Pair::start();
    pair.write(30, "a");
    pair.wait_converged();
    let history = chains(&pair.replica);
    pair.proxy.set(Fault::Drop);
    for _ in 0..3 {
        pair.replica.crash_during_start();
    }
    pair.restart_replica();
    assert_eq!(chains(&pair.replica), history);
    pair.replica.kill();
    pair.restart_replica();
    assert_eq!(chains(&pair.replica), history, "the same result every time");
    pair.proxy.set(Fault::Pass);
    let ids = pair.write(10, "b");
    pair.wait_converged();
    assert_all_on_replica(&pair, &ids);
}

/// §10: random faults of every kind above for a bounded time, writes all
/// along; then none of the forbidden outcomes, and every acked message on
/// the replica.
#[test]
fn section_10_randomized_faults_never_produce_a_forbidden_outcome() {
    let mut pair = Pair::start();
    let mut seed: u64 = std::env::var("WHARF_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
            | 1
    });
    eprintln!("WHARF_SEED={seed}");
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut acked = Vec::new();
    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(20) {
        round += 1;
        let fault = match rand(8) {
            0 => Fault::BlackHole,
            1 => Fault::Drop,
            2 => Fault::Delay(Duration::from_millis(rand(200))),
            3 => Fault::Duplicate { path_prefix: RECORDS.into() },
            4 => Fault::Reorder { path_prefix: RECORDS.into() },
            5 => Fault::LoseResponse { path_prefix: RECORDS.into(), times: 1 },
            6 => Fault::CutRequest { bytes: 100 + rand(400) as usize, times: 1 },
            _ => Fault::CorruptBody { path_prefix: RECORDS.into(), offset: rand(2000) as usize, times: 1 },
        };
        pair.proxy.set(fault);
        for i in 0..(1 + rand(15)) {
            let r = pair.primary.write(NS, Some(&format!("k{}", i % 4)), format!("r{round}-{i}").as_bytes());
            if r.status == 200 {
                acked.push(r.body["message_id"].as_str().expect("id").to_string());
            }
        }
        // Never: a replica accepting a client write.
        let w = pair.replica.write(NS, Some("k"), b"x");
        assert_eq!(w.body["error"]["code"], "read_only_replica", "round {round}: {:?}", w.body);
        match rand(6) {
            0 => pair.primary.restart(),
            1 => pair.restart_replica(),
            _ => {}
        }
        // Never: the replica's history is anything but a prefix of the
        // primary's (no partial, reordered or foreign records). The replica
        // is read first: replication runs on while the two are read, and
        // the primary's chain only grows (a restart rebuilds it to the
        // log's end), so the other order could see it grow in between.
        let r = chains(&pair.replica);
        let p = chains(&pair.primary);
        for ((pe, _), (re, _)) in p.iter().zip(&r) {
            assert!(re <= pe, "round {round}: the replica is ahead of the primary: {r:?} vs {p:?}");
        }
        // A damaged transfer halts replication (that is its outcome); the
        // operator resumes, as the runbook says.
        if any_halt(&replica_halts(&pair.replica)).is_some()
            || any_halt(&target_halts(&pair.primary)).is_some()
        {
            let halts = (replica_halts(&pair.replica), target_halts(&pair.primary));
            let reasons: Vec<&String> = halts.0.iter().chain(&halts.1).flatten().collect();
            for reason in &reasons {
                let allowed =
                    ["damaged_transfer:", "checksum_mismatch:", "digest_mismatch:", "replication_halted:"];
                assert!(
                    allowed.iter().any(|a| reason.starts_with(a)),
                    "round {round}: forbidden halt: {reason}"
                );
            }
            resume_both(&pair);
        }
    }
    pair.proxy.set(Fault::Pass);
    eventually(WAIT, "replication to settle", || {
        if any_halt(&replica_halts(&pair.replica)).is_some()
            || any_halt(&target_halts(&pair.primary)).is_some()
        {
            resume_both(&pair);
        }
        let (p, r) = (chains(&pair.primary), chains(&pair.replica));
        let heads: Vec<u64> =
            pair.primary.partitions(NS).iter().map(|p| p["head_sequence"].as_u64().unwrap_or(0)).collect();
        (p == r && p.iter().zip(&heads).all(|((e, _), h)| e == h)).then_some(())
    });
    assert_all_on_replica(&pair, &acked);
}

// Snapshots (bootstrap and rebuild), rows 4.3, 7.1 and 7.2.

/// `<replica data>/orders/replication/p<p>.snapshot`: a staged snapshot.
fn stage_dir(w: &Wharf, p: u32) -> std::path::PathBuf {
    w.data_dir().join(NS).join("replication").join(format!("p{p}.snapshot"))
}

/// `wharf replica rebuild` of partition `p` from `from`: exit status and
/// stdout + stderr.
fn rebuild(replica: &Wharf, p: u32, from: &str) -> (bool, String) {
    let out = std::process::Command::new(wharf_bin())
        .args(["replica", "rebuild", NS, "--partition", &p.to_string(), "--from", from])
        .args(["--server", &replica.url("")])
        .output()
        .expect("run wharf");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A primary that deleted the start of its history (delivered, small
/// segments), and a replica region that lost its data: the replica halts
/// on the gap. Returns the ids written after the loss.
fn trimmed_primary_and_an_empty_replica() -> (Pair, Vec<String>) {
    let mut pair = Pair::start_trimming();
    pair.write(300, "old");
    pair.wait_converged();
    eventually(WAIT, "the primary to delete delivered segments on every partition", || {
        let firsts: Vec<u64> =
            pair.primary.partitions(NS).iter().map(|p| p["chain"]["end"].as_u64().unwrap_or(0)).collect();
        let trimmed =
            pair.primary.partitions(NS).iter().all(|p| p["retained_from"]["sequence"].as_u64() > Some(0));
        (trimmed && firsts.iter().all(|e| *e > 0)).then_some(())
    });
    pair.replica.kill();
    std::fs::remove_dir_all(pair.replica.data_dir()).expect("wipe the replica");
    pair.restart_replica();
    let new = pair.write(20, "new");
    eventually(WAIT, "the empty replica to halt on the gap on every partition", || {
        replica_halts(&pair.replica)
            .iter()
            .all(|h| h.as_deref().is_some_and(|r| r.starts_with("gap:")))
            .then_some(())
    });
    (pair, new)
}

#[test]
fn a_new_replica_of_a_trimmed_primary_bootstraps_from_a_snapshot() {
    let (pair, new) = trimmed_primary_and_an_empty_replica();
    for p in 0..PARTITIONS {
        let (ok, out) = rebuild(&pair.replica, p, &pair.primary.url(""));
        assert!(ok, "{out}");
        assert!(out.contains("records installed") && !out.contains("(0.."), "a snapshot from above 0: {out}");
    }
    assert_eq!(replica_halts(&pair.replica), vec![None; PARTITIONS as usize], "a rebuild clears the halt");
    wharf(&["target", "resume", NS, "replica", "--server", &pair.primary.url("")]);
    pair.wait_converged();
    assert_all_on_replica(&pair, &new);
    // The replica starts where the primary's retained history starts, with
    // the same chained digest from there on (wait_converged compared them).
    // (The replica's own retention deletes what its targets got, so only
    // the lower bound is fixed: nothing below the snapshot's base.)
    for r in pair.replica.partitions(NS) {
        let first = r["retained_from"]["sequence"].as_u64().expect("replica retained_from");
        assert!(first > 0, "the replica holds no trimmed history: {r}");
    }
    // Its own store gets the snapshot's records and what follows.
    eventually(WAIT, "the replica's store to get the new messages", || {
        let got = pair.remote.accepted_bodies();
        (got.iter().filter(|b| b.starts_with("new-")).count() == new.len()).then_some(())
    });
    let audit = std::fs::read_to_string(pair.replica.data_dir().join("audit.log")).unwrap_or_default();
    assert!(audit.contains("replication.rebuild"), "the rebuild is audited: {audit}");
}

#[test]
fn row_4_3_replica_crash_while_installing_a_snapshot_keeps_its_prior_state() {
    let (mut pair, _) = trimmed_primary_and_an_empty_replica();
    let before = chains(&pair.replica);
    // A crash while the snapshot is staged: the replica is as it was.
    pair.replica.set_env("WHARF_FAULT_ABORT", Some("snapshot.staging"));
    pair.restart_replica();
    let (ok, out) = rebuild(&pair.replica, 0, &pair.primary.url(""));
    assert!(!ok, "the replica died during the install: {out}");
    pair.replica.set_env("WHARF_FAULT_ABORT", None);
    pair.restart_replica();
    assert!(
        pair.replica.log().contains("discarded a snapshot staged before a crash"),
        "{}",
        pair.replica.log()
    );
    assert!(!stage_dir(&pair.replica, 0).exists(), "no partial snapshot survives");
    assert_eq!(chains(&pair.replica), before, "the replica stays in its prior valid state");
    assert!(replica_halts(&pair.replica)[0].as_deref().is_some_and(|r| r.starts_with("gap:")));
    // A crash right after the switch's commit point: the install is
    // finished at the restart, never half done.
    pair.replica.set_env("WHARF_FAULT_ABORT", Some("snapshot.after_commit"));
    pair.restart_replica();
    let (ok, out) = rebuild(&pair.replica, 0, &pair.primary.url(""));
    assert!(!ok, "the replica died during the switch: {out}");
    pair.replica.set_env("WHARF_FAULT_ABORT", None);
    pair.restart_replica();
    assert!(pair.replica.log().contains("finished switching in a snapshot"), "{}", pair.replica.log());
    assert_eq!(chains(&pair.replica)[0], chains(&pair.primary)[0], "partition 0 is the primary's snapshot");
    assert_eq!(replica_halts(&pair.replica)[0], None);
    let (ok, out) = rebuild(&pair.replica, 1, &pair.primary.url(""));
    assert!(ok, "{out}");
    wharf(&["target", "resume", NS, "replica", "--server", &pair.primary.url("")]);
    pair.write(10, "after");
    pair.wait_converged();
}

/// Answers every request with `body` (a primary that serves a damaged
/// snapshot page): fault injection for row 7.1.
fn serve_forever(body: String) -> std::net::SocketAddr {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).and_then(|()| s.write_all(body.as_bytes()));
        }
    });
    addr
}

#[test]
fn row_7_1_an_invalid_snapshot_is_rejected_and_the_replica_is_unchanged() {
    let (pair, _) = trimmed_primary_and_an_empty_replica();
    let before = chains(&pair.replica);
    let page = pair.primary.get(&format!("{RECORDS}0/snapshot"));
    assert_eq!(page.status, 200, "{:?}", page.body);
    let mut damaged = page.body.clone();
    let records = damaged["records"].as_array_mut().expect("records");
    assert!(records.len() > 2, "{page:?}");
    let middle = records.len() / 2;
    let victim = &mut records[middle];
    let mut bytes = wharf_tests::unb64(victim["bytes"].as_str().expect("bytes"));
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    victim["bytes"] = json!(b64(&bytes));
    let fake = serve_forever(damaged.to_string());
    let (ok, out) = rebuild(&pair.replica, 0, &format!("http://{fake}"));
    assert!(!ok && out.contains("snapshot was rejected") && out.contains("CRC-32C"), "{out}");
    assert_eq!(chains(&pair.replica), before, "the replica is unchanged");
    assert!(!stage_dir(&pair.replica, 0).exists(), "the rejected snapshot is discarded");
    // Replication restarts: a rebuild from the real primary succeeds.
    let (ok, out) = rebuild(&pair.replica, 0, &pair.primary.url(""));
    assert!(ok, "{out}");
    assert_eq!(chains(&pair.replica)[0], chains(&pair.primary)[0]);
}

#[test]
fn row_7_2_a_snapshot_that_does_not_meet_the_primary_log_is_fatal() {
    let pair = Pair::start();
    pair.proxy.set(Fault::Drop);
    pair.write(20, "ours");
    // A snapshot of another history of the same namespace (another
    // primary): valid in itself, but its boundary conflicts with the log
    // the real primary ships after it.
    let (other_local, nowhere) = (HttpSink::start(), HttpSink::start());
    let other = Wharf::start(&primary_config_to(&other_local, &nowhere.url()));
    for i in 0..20 {
        other.write_id(NS, &format!("k{}", i % 5), format!("theirs-{i}").as_bytes());
    }
    for p in 0..PARTITIONS {
        let (ok, out) = rebuild(&pair.replica, p, &other.url(""));
        assert!(ok, "{out}");
    }
    pair.proxy.set(Fault::Pass);
    let halt =
        eventually(WAIT, "the replica to halt on the boundary", || any_halt(&replica_halts(&pair.replica)));
    assert!(halt.starts_with("diverged:"), "{halt}");
    let on_primary =
        eventually(WAIT, "the primary's target to halt", || any_halt(&target_halts(&pair.primary)));
    assert!(on_primary.contains("diverged"), "{on_primary}");
    // Fatal: the replica does not continue, even after a resume.
    resume_both(&pair);
    let again = eventually(WAIT, "the boundary to halt again", || any_halt(&replica_halts(&pair.replica)));
    assert!(again.starts_with("diverged:"), "{again}");
    assert!(pair.replica.partitions(NS).iter().any(|p| p["replication"]["state"] == "halted"));
}
