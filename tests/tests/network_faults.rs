//! Network faults toward targets and queues (issue 17): a target that stops
//! answering (black-holed: connections accepted, never refused, nothing
//! answered) and a Kafka or SQS broker killed and restarted, while a writer
//! and the delivery lanes run.
//!
//! What must hold: every call to a black-holed target ends at its deadline,
//! the breaker opens, nothing is lost, and once the link is back every
//! acknowledged write is delivered in per-key order. A write the queue cannot
//! take gets a typed error and is not acknowledged.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::proxy::{Fault, FaultProxy};
use wharf_tests::tcp_proxy::{TcpFault, TcpProxy};
use wharf_tests::{
    HttpSink, Load, Memcached, Wharf, eventually, metric_sum, plugin, sqs_fifo_queue, start_moto,
    start_moto_on, start_tansu_with,
};

const NS: &str = "orders";
const WAIT: Duration = Duration::from_secs(60);

/// Four keys; one writer thread, so append order is index order.
fn key(i: usize) -> String {
    format!("k{}", i % 4)
}

fn value(i: usize) -> String {
    format!("v{i}")
}

fn index(v: &str) -> usize {
    v.trim_start_matches('v').parse().unwrap_or_else(|_| panic!("not a load value: {v}"))
}

/// Quick retries, and a breaker that opens after 2 failed calls for 500 ms.
fn retry_and_breaker() -> String {
    format!(
        "[namespaces.{NS}.retry]\nmax_attempts = 100000\ninitial_backoff_ms = 10\nmax_backoff_ms = 200\n\
         [namespaces.{NS}.breaker]\nfailures = 2\ncooldown_ms = 500\n"
    )
}

/// A namespace (two partitions) whose target is the http plugin posting to
/// `url` (a proxy in front of the sink), with the host's `call_timeout_ms`,
/// the plugin's request `timeout_ms` and more target keys (`target_extra`).
fn http_namespace(url: &str, call_timeout_ms: u64, timeout_ms: u64, target_extra: &str) -> String {
    format!(
        "[namespaces.{NS}]\npartitions = 2\n[namespaces.{NS}.target]\nplugin = \"{}\"\n\
         allow_http = [\"{url}/\"]\ncall_timeout_ms = {call_timeout_ms}\n{target_extra}\n\
         config = {{ url = \"{url}/hook\", timeout_ms = {timeout_ms} }}\n{}",
        plugin("http").display(),
        retry_and_breaker()
    )
}

/// Waits until the sink accepted `more` requests beyond what it has now.
fn wait_accepted_more(sink: &HttpSink, more: usize, what: &str) {
    let now = sink.accepted().len();
    eventually(WAIT, what, || (sink.accepted().len() >= now + more).then_some(()));
}

/// Every acknowledged write reached the sink, and each key's messages
/// arrived (first arrivals) in append order.
fn assert_all_delivered_in_key_order(sink: &HttpSink, acked: &[(String, String)], wharf: &Wharf) {
    assert!(!acked.is_empty(), "nothing was acknowledged");
    eventually(WAIT, "every acknowledged write delivered", || {
        let got = sink.accepted_bodies();
        acked.iter().all(|(_, v)| got.contains(v)).then_some(())
    });
    for (k, bodies) in sink.first_arrivals() {
        let idx: Vec<usize> = bodies.iter().filter(|b| b.starts_with('v')).map(|b| index(b)).collect();
        assert!(idx.windows(2).all(|w| w[0] < w[1]), "key {k} out of order: {idx:?}\n{}", wharf.log());
    }
}

/// The buckets of `wharf_plugin_call_seconds`: (upper bound, count), and the total count.
fn call_latency(wharf: &Wharf) -> (Vec<(f64, f64)>, f64) {
    let text = wharf.metrics();
    let mut buckets = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("wharf_plugin_call_seconds_bucket{")) {
        let le = line.split("le=\"").nth(1).and_then(|r| r.split('"').next());
        let n = line.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok());
        if let (Some(le), Some(n)) = (le, n) {
            buckets.push((le.parse::<f64>().unwrap_or(f64::INFINITY), n));
        }
    }
    let total = metric_sum(&text, "wharf_plugin_call_seconds_count", &[]).unwrap_or(0.0);
    (buckets, total)
}

/// How many plugin calls took longer than `secs` (to the histogram's
/// resolution: calls above the smallest bucket bound at or over `secs`).
fn calls_longer_than(wharf: &Wharf, secs: f64) -> f64 {
    let (buckets, total) = call_latency(wharf);
    let within: f64 = buckets
        .iter()
        .filter(|(le, _)| *le >= secs)
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| *n)
        .unwrap_or(0.0);
    total - within
}

fn no_dlq_and_ready(wharf: &Wharf) {
    assert!(wharf.dlq_ids(NS, None).is_empty(), "dead-lettered: {:?}", wharf.dlq(NS, None).body);
    let st = wharf.status();
    assert_eq!(st["namespaces"][NS]["plugin"]["state"], json!("ready"), "{st}");
}

/// Ends the black hole, stops the writer, and checks that every
/// acknowledged write was delivered in key order, the breakers closed, and
/// nothing was dead-lettered. Returns what was acknowledged.
fn link_back_everything_delivered(
    proxy: &FaultProxy,
    sink: &HttpSink,
    load: Load,
    wharf: &Wharf,
) -> Vec<(String, String)> {
    proxy.set(Fault::Pass);
    wait_accepted_more(sink, 20, "deliveries after the link is back");
    let acked = load.stop();
    assert_all_delivered_in_key_order(sink, &acked, wharf);
    eventually(WAIT, "closed breakers", || {
        wharf.breaker_states(NS, "default").iter().all(|s| s == "closed").then_some(())
    });
    no_dlq_and_ready(wharf);
    acked
}

#[test]
fn a_black_holed_http_target_ends_each_call_at_its_deadline_opens_the_breaker_and_loses_nothing() {
    let sink = HttpSink::start();
    let proxy = FaultProxy::start(([127, 0, 0, 1], sink.port).into());
    let wharf = Wharf::start(&http_namespace(&proxy.url(), 20_000, 500, ""));
    let load = Load::start(wharf.port, NS, 1, key, value);
    wait_accepted_more(&sink, 20, "deliveries before the fault");

    proxy.set(Fault::BlackHole);
    eventually(WAIT, "an open breaker", || {
        wharf.breaker_states(NS, "default").iter().any(|s| s == "open").then_some(())
    });
    // A request forwarded before the fault has landed by now.
    let (seen, accepted) = (proxy.requests_seen(), sink.accepted().len());
    // Calls keep ending (the plugin's 500 ms timeout) and the lanes keep
    // probing: each new request means the one before it was given up.
    proxy.wait_requests(seen + 6, WAIT);
    // Writes go on being acknowledged while the target is away.
    let during = wharf.write_id(NS, "during", b"during-the-outage");
    assert_eq!(wharf.lookup(NS, &during)["state"], json!("pending"), "{}", wharf.lookup(NS, &during));
    assert_eq!(sink.accepted().len(), accepted, "nothing crosses a black hole");
    // No call waited for the 20 s call deadline: the request timeout ended each.
    assert_eq!(
        calls_longer_than(&wharf, 3.0),
        0.0,
        "calls outlived the deadline: {:?}",
        call_latency(&wharf)
    );
    no_dlq_and_ready(&wharf);

    let acked = link_back_everything_delivered(&proxy, &sink, load, &wharf);
    eventually(WAIT, "the write made during the outage delivered", || {
        sink.accepted_bodies().contains("during-the-outage").then_some(())
    });
    eprintln!(
        "http black hole: {} writes acknowledged, {} requests swallowed by the black hole, call latency {:?}",
        acked.len(),
        proxy.requests_seen() - proxy.requests_forwarded(),
        call_latency(&wharf)
    );
}

/// Plugin calls that failed at a deadline (`wharf_plugin_failures_total{kind="deadline"}`).
fn deadline_failures(wharf: &Wharf) -> f64 {
    metric_sum(&wharf.metrics(), "wharf_plugin_failures_total", &[("kind", "deadline")]).unwrap_or(0.0)
}

/// The http plugin with a request timeout (10 min) far above the host's
/// `call_timeout_ms` (1 s): a call into the black hole is ended by the host's
/// I/O deadline while the guest waits on its target. That is the target's
/// fault: a retry that feeds the breaker, never a poison count, never
/// quarantine (`poison_after` and `quarantine_after` are 2, so one counted
/// deadline too many would show).
#[test]
fn a_black_holed_target_of_a_plugin_without_its_own_timeout_is_retried_never_poison_nor_quarantined() {
    let sink = HttpSink::start();
    let proxy = FaultProxy::start(([127, 0, 0, 1], sink.port).into());
    let limits = "poison_after = 2\nquarantine_after = 2";
    let wharf = Wharf::start(&http_namespace(&proxy.url(), 1_000, 600_000, limits));
    let load = Load::start(wharf.port, NS, 1, key, value);
    wait_accepted_more(&sink, 20, "deliveries before the fault");

    proxy.set(Fault::BlackHole);
    eventually(WAIT, "an open breaker", || {
        wharf.breaker_states(NS, "default").iter().any(|s| s == "open").then_some(())
    });
    // Enough calls ended at the host's deadline that, counted as traps, a
    // message would have been dead-lettered or the plugin quarantined.
    eventually(Duration::from_secs(120), "calls ended by call_timeout_ms", || {
        (deadline_failures(&wharf) >= 8.0).then_some(())
    });
    assert!(
        wharf.log().contains("waiting on its target"),
        "no call was blamed on the target:\n{}",
        wharf.log()
    );
    no_dlq_and_ready(&wharf);

    let acked = link_back_everything_delivered(&proxy, &sink, load, &wharf);
    eprintln!(
        "http black hole, no plugin timeout: {} writes acknowledged, {} calls ended at the 1 s deadline, call latency {:?}",
        acked.len(),
        deadline_failures(&wharf),
        call_latency(&wharf)
    );
}

/// Per key, the value memcached holds.
fn memcached_values(mc: &Memcached, keys: &[String]) -> HashMap<String, Option<String>> {
    keys.iter()
        .map(|k| (k.clone(), mc.get(&format!("nf:{k}")).map(|v| String::from_utf8_lossy(&v).into_owned())))
        .collect()
}

#[test]
fn a_black_holed_memcached_target_opens_the_breaker_and_gets_the_last_write_of_each_key_afterwards() {
    let mc = Memcached::start();
    let proxy = TcpProxy::start(([127, 0, 0, 1], mc.port).into());
    let addr = proxy.addr();
    let wharf = Wharf::start(&format!(
        "[namespaces.{NS}]\npartitions = 2\n[namespaces.{NS}.target]\nplugin = \"{}\"\n\
         allow_connect = [\"{addr}\"]\ncall_timeout_ms = 20000\n\
         config = {{ servers = \"{addr}\", key_prefix = \"nf:\", timeout_ms = 500 }}\n{}",
        plugin("memcached").display(),
        retry_and_breaker()
    ));
    let delivered = || wharf.target_delivery_sum(NS, "default", "delivered_total");
    let load = Load::start(wharf.port, NS, 1, key, value);
    eventually(WAIT, "deliveries before the fault", || (delivered() >= 20).then_some(()));

    proxy.set(TcpFault::BlackHole);
    let swallowed = proxy.bytes_swallowed();
    eventually(WAIT, "an open breaker", || {
        wharf.breaker_states(NS, "default").iter().any(|s| s == "open").then_some(())
    });
    // The lanes keep trying (reconnecting) and every try is swallowed.
    eventually(WAIT, "more tries into the black hole", || {
        (proxy.bytes_swallowed() > swallowed + 200).then_some(())
    });
    let stuck = delivered();
    assert_eq!(
        calls_longer_than(&wharf, 3.0),
        0.0,
        "calls outlived the deadline: {:?}",
        call_latency(&wharf)
    );
    no_dlq_and_ready(&wharf);
    assert_eq!(delivered(), stuck, "delivered through a black hole");

    proxy.set(TcpFault::Pass);
    eventually(WAIT, "deliveries after the link is back", || (delivered() >= stuck + 20).then_some(()));
    let acked = load.stop();
    assert!(!acked.is_empty());
    // Per-key order at the target: memcached ends with each key's last write.
    let mut last: HashMap<String, String> = HashMap::new();
    for (k, v) in &acked {
        last.insert(k.clone(), v.clone());
    }
    let keys: Vec<String> = last.keys().cloned().collect();
    eventually(WAIT, "each key's last acknowledged write in memcached", || {
        let got = memcached_values(&mc, &keys);
        let last_acked = |k: &String| index(&last[k]);
        keys.iter().all(|k| got[k].as_deref().is_some_and(|v| index(v) >= last_acked(k))).then_some(())
    });
    assert!(delivered() >= acked.len() as u64, "delivered {} < acknowledged {}", delivered(), acked.len());
    no_dlq_and_ready(&wharf);
    eprintln!(
        "memcached black hole: {} writes acknowledged, {} delivered, {} bytes swallowed, call latency {:?}",
        acked.len(),
        delivered(),
        proxy.bytes_swallowed(),
        call_latency(&wharf)
    );
}

/// Writes one message with a short client timeout: `Some(reply)` or
/// `None` when no reply came.
fn try_write(wharf: &Wharf, key: &str, payload: &str) -> (u16, Value) {
    let r = wharf.write(NS, Some(key), payload.as_bytes());
    (r.status, r.body)
}

/// A writer that keeps the outcome of every write: acknowledged, or
/// refused with a typed error (status and code).
struct Outcomes {
    acked: Vec<(String, String)>,
    refused: Vec<(u16, String)>,
}

fn write_for(wharf: &Wharf, outcomes: &mut Outcomes, from: usize, count: usize) {
    for i in from..from + count {
        let (k, v) = (key(i), value(i));
        match try_write(wharf, &k, &v) {
            (200, body) if body["durable"] == json!(true) => outcomes.acked.push((k, v)),
            (status, body) => {
                let code = body["error"]["code"].as_str().unwrap_or_default().to_string();
                assert!(!code.is_empty(), "an untyped refusal {status}: {body}");
                outcomes.refused.push((status, code));
            }
        }
    }
}

/// tansu keeps its topics and committed offsets in S3: a moto S3 server
/// that outlives the broker. So a broker restart keeps the data, as a real
/// Kafka broker does with its disk.
struct PersistentTansu {
    _s3: wharf_tests::QueueServer,
    env: Vec<(String, String)>,
}

impl PersistentTansu {
    fn new() -> Self {
        let s3 = start_moto();
        let endpoint = format!("http://127.0.0.1:{}", s3.port);
        let created = ureq::put(&format!("{endpoint}/tansu")).send_empty();
        assert!(created.is_ok(), "bucket not created: {created:?}");
        let env = [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT", endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec();
        Self { _s3: s3, env }
    }

    fn start(&self, port: Option<u16>) -> wharf_tests::QueueServer {
        start_tansu_with("s3://tansu/", &self.env, port)
    }
}

/// Messages acknowledged to clients so far (`wharf_writes_total`).
fn writes_acked(wharf: &Wharf) -> f64 {
    metric_sum(&wharf.metrics(), "wharf_writes_total", &[]).unwrap_or(0.0)
}

/// tansu is killed while a writer runs (writes in flight) and while the
/// target refuses everything (a backlog in the broker and in the lane's
/// window, retrying), then comes back with its data (`PersistentTansu`).
/// Writes during the outage are refused with a typed error; every
/// acknowledged one, before, during or after, is delivered in key order.
#[test]
fn a_kafka_broker_killed_with_a_backlog_and_writes_in_flight_delivers_every_acknowledged_write_in_key_order()
{
    let storage = PersistentTansu::new();
    let tansu = storage.start(None);
    let sink = HttpSink::start();
    let queue = format!(
        "queue = {{ kind = \"kafka\", brokers = \"127.0.0.1:{}\", topic = \"orders\", partitions = 2, message_timeout_ms = 3000, session_timeout_ms = 6000 }}\n",
        tansu.port
    );
    let wharf = Wharf::start(&sink.namespace(NS, 1, &format!("{queue}{}", retry_and_breaker())));
    let load = Load::start(wharf.port, NS, 1, key, value);
    wait_accepted_more(&sink, 10, "deliveries before the fault");

    // The target refuses: what is written from now on stays undelivered.
    sink.set(|b| b.fail_all = Some(503));
    let acked_then = writes_acked(&wharf);
    eventually(WAIT, "an undelivered backlog", || (writes_acked(&wharf) >= acked_then + 30.0).then_some(()));

    // Killed with the writer still running.
    let acked_at_kill = writes_acked(&wharf);
    let port = tansu.stop();
    let mut out = Outcomes { acked: Vec::new(), refused: Vec::new() };
    write_for(&wharf, &mut out, 900_000, 2);
    assert!(out.acked.is_empty(), "acknowledged while the broker was down: {:?}", out.acked);
    assert!(out.refused.iter().all(|(s, c)| *s == 503 && c == "queue_unavailable"), "{:?}", out.refused);
    sink.set(|b| b.fail_all = None);

    // Back with its data: writes are acknowledged again without a wharf
    // restart, and the backlog drains.
    let tansu = storage.start(Some(port));
    let acked_back = writes_acked(&wharf);
    eventually(Duration::from_secs(120), "writes acknowledged after the broker restart", || {
        (writes_acked(&wharf) >= acked_back + 20.0).then_some(())
    });
    let acked = load.stop();
    assert_all_delivered_in_key_order(&sink, &acked, &wharf);
    assert!(wharf.dlq_ids(NS, None).is_empty(), "{:?}", wharf.dlq(NS, None).body);
    eprintln!(
        "kafka restart under load: {} acknowledged and delivered in key order, a backlog of at least {} undelivered at the kill, 2 of 2 probe writes refused while down",
        acked.len(),
        acked_at_kill - acked_then,
    );
    drop(tansu);
}

/// Payloads of a second writer, after the first one's (`v0`, `v1`, ...).
fn later_value(i: usize) -> String {
    value(100_000 + i)
}

#[test]
fn an_sqs_server_restart_refuses_writes_with_a_typed_error_then_wharf_recreates_the_queue_and_delivers_every_later_ack()
 {
    let moto = start_moto();
    let sink = HttpSink::start();
    let queue = sqs_fifo_queue(moto.port, "orders");
    let wharf = Wharf::start(&sink.namespace(NS, 1, &format!("{queue}{}", retry_and_breaker())));
    let before = Load::start(wharf.port, NS, 1, key, value);
    wait_accepted_more(&sink, 20, "deliveries before the restart");

    // Killed while the writer and the lane run.
    let port = moto.stop();
    let mut out = Outcomes { acked: Vec::new(), refused: Vec::new() };
    write_for(&wharf, &mut out, 900_000, 5);
    assert_eq!(out.refused.len(), 5, "acknowledged while the server was down");
    assert!(out.refused.iter().all(|(s, c)| *s == 503 && c == "queue_unavailable"), "{:?}", out.refused);
    let acked_before = before.stop();
    let delivered_before = sink.accepted_bodies();

    // moto comes back empty: the queue is gone. Wharf creates it again by
    // itself, no restart, and writes are acknowledged again.
    let moto = start_moto_on(port);
    let after = Load::start(wharf.port, NS, 1, key, later_value);
    eventually(WAIT, "deliveries of writes acknowledged after the restart", || {
        let got = sink.accepted_bodies();
        (got.iter().filter(|b| b.starts_with('v') && index(b) >= 100_000).count() >= 20).then_some(())
    });
    let acked_after = after.stop();
    assert!(wharf.log().contains("sqs queue missing; creating it again"), "{}", wharf.log());
    // Every write acknowledged after the restart is delivered, in key order.
    assert_all_delivered_in_key_order(&sink, &acked_after, &wharf);
    let lost = acked_before.iter().filter(|(_, v)| !sink.accepted_bodies().contains(v)).count();
    assert!(
        acked_before.iter().all(|(_, v)| !delivered_before.contains(v) || sink.accepted_bodies().contains(v)),
        "a delivered write went missing"
    );
    eprintln!(
        "sqs restart: {} acknowledged before (of which {lost} lost with moto's memory, undelivered), 5 of 5 refused while down, {} acknowledged after and all delivered, no wharf restart",
        acked_before.len(),
        acked_after.len()
    );
    drop(moto);
}
