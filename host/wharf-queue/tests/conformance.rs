//! One conformance suite, run against every backend on a real server that
//! each test starts for itself (see `support`): Kafka on tansu, SQS standard
//! and SQS FIFO on moto; and the embedded `wharf-log` queue in a temporary
//! directory.
//!
//! Run: `scripts/queue-servers.sh install`, then
//! `cargo test -p wharf-queue --test conformance`.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Fixture, Kind};
use wharf_queue::{Consumer, Delivery, Durability, Producer, Record};

/// Receives until `pred` holds for what was collected, acking each delivery
/// when `ack`; panics after `timeout`.
async fn collect<C: Consumer>(
    c: &C,
    timeout: Duration,
    ack: bool,
    mut pred: impl FnMut(&[Delivery]) -> bool,
) -> Vec<Delivery> {
    let start = Instant::now();
    let mut got = Vec::new();
    while !pred(&got) {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?}; received {} so far", got.len());
        for d in c.receive(10, Duration::from_secs(2)).await.unwrap() {
            if ack {
                c.ack(&d).await.unwrap();
            }
            got.push(d);
        }
    }
    got
}

fn payloads(ds: &[Delivery]) -> Vec<String> {
    ds.iter().map(|d| String::from_utf8(d.payload.clone()).unwrap()).collect()
}

fn has(ds: &[Delivery], payload: &str) -> bool {
    ds.iter().any(|d| d.payload == payload.as_bytes())
}

/// Every appended message is received, with its key, and with the id its
/// append was acknowledged with. Single appends and batches; text, binary
/// and empty payloads.
async fn every_append_is_received(f: &Fixture) {
    let p = f.producer().await;
    let mut sent: HashMap<Vec<u8>, (Option<String>, String)> = HashMap::new();
    for i in 0..20 {
        let key = format!("k{}", i % 4);
        let body = format!("single-{i}");
        let ack = p.append(Some(&key), body.as_bytes()).await.unwrap();
        let want = match f.kind {
            Kind::Kafka => Durability::KafkaInSyncReplicas,
            Kind::Embedded => Durability::EmbeddedSynced,
            Kind::SqsStandard | Kind::SqsFifo => Durability::SqsStored,
        };
        assert_eq!(ack.durability, want);
        sent.insert(body.into_bytes(), (Some(key), ack.id));
    }
    let bodies: Vec<Vec<u8>> = (0..25).map(|i| format!("batch-{i}").into_bytes()).collect();
    let keys: Vec<String> = (0..25).map(|i| format!("k{}", i % 3)).collect();
    let records: Vec<Record<'_>> =
        bodies.iter().zip(&keys).map(|(b, k)| Record::new(Some(k.as_str()), b)).collect();
    let acks = p.append_batch(&records).await.unwrap();
    assert_eq!(acks.len(), records.len());
    for ((b, k), a) in bodies.iter().zip(&keys).zip(acks) {
        sent.insert(b.clone(), (Some(k.clone()), a.id));
    }
    let binary: Vec<u8> = (0..=255u8).chain([0, 0, 13, 10]).collect();
    let a = p.append(None, &binary).await.unwrap();
    sent.insert(binary, (None, a.id));
    let a = p.append(Some("empty"), b"").await.unwrap();
    sent.insert(Vec::new(), (Some("empty".into()), a.id));

    let c = f.consumer().await;
    let n = sent.len();
    let got = collect(&c, f.first_wait() + Duration::from_secs(30), true, |g| {
        g.iter().map(|d| &d.payload).collect::<HashSet<_>>().len() >= n
    })
    .await;
    for d in &got {
        let (key, id) = sent.get(&d.payload).unwrap_or_else(|| panic!("unexpected payload {:?}", d.payload));
        assert_eq!(&d.key, key, "key of {:?}", d.payload);
        assert_eq!(&d.id, id, "id of {:?}", d.payload);
        assert_eq!(d.attempt, 1);
    }
    c.close().await.unwrap();
}

/// After an ack, a message is not delivered again, not even to a new
/// consumer of the same group.
async fn acked_is_not_redelivered(f: &Fixture) {
    let p = f.producer().await;
    for i in 0..10 {
        p.append(Some("k"), format!("acked-{i}").as_bytes()).await.unwrap();
    }
    let c = f.consumer().await;
    collect(&c, f.first_wait(), true, |g| g.len() >= 10).await;
    c.close().await.unwrap();
    drop(c);

    p.append(Some("k"), b"sentinel").await.unwrap();
    let c2 = f.consumer().await;
    let got = collect(&c2, f.first_wait(), true, |g| has(g, "sentinel")).await;
    assert_eq!(payloads(&got), ["sentinel"], "acked messages came back");
    // Nothing else shows up afterwards either.
    assert!(c2.receive(10, Duration::from_secs(2)).await.unwrap().is_empty());
    c2.close().await.unwrap();
}

/// Messages received and not acked are delivered again: to a new consumer
/// after the first closes, and to a new consumer after the first is dropped
/// without closing (a crash).
async fn unacked_is_redelivered(f: &Fixture) {
    let p = f.producer().await;
    for i in 0..3 {
        p.append(Some("k"), format!("m{i}").as_bytes()).await.unwrap();
    }
    let c = f.consumer().await;
    let got = collect(&c, f.first_wait(), false, |g| g.len() >= 3).await;
    // Ack only the first (in order, where there is an order).
    let first = got.iter().find(|d| d.payload == b"m0").unwrap();
    c.ack(first).await.unwrap();
    c.close().await.unwrap();
    drop(c);

    let c2 = f.consumer().await;
    let again = collect(&c2, f.first_wait(), false, |g| has(g, "m1") && has(g, "m2")).await;
    assert!(!has(&again, "m0"), "acked m0 came back: {:?}", payloads(&again));
    for d in &again {
        let before = got.iter().find(|g| g.payload == d.payload).unwrap();
        assert_eq!(d.id, before.id, "redelivery keeps the id");
        if f.kind != Kind::Kafka {
            assert!(d.attempt >= 2, "SQS and embedded count receives: {}", d.attempt);
        }
    }
    // Crash: drop without close or ack.
    drop(c2);
    let c3 = f.consumer().await;
    let third =
        collect(&c3, f.first_wait() + Duration::from_secs(10), true, |g| has(g, "m1") && has(g, "m2")).await;
    assert!(!has(&third, "m0"));
    c3.close().await.unwrap();
}

/// A nack'd message comes back to the same consumer, with the same id and a
/// higher attempt, after the delay and not before.
async fn nack_redelivers_after_delay(f: &Fixture) {
    let p = f.producer().await;
    p.append(Some("k"), b"retry-me").await.unwrap();
    let c = f.consumer().await;
    let first = collect(&c, f.first_wait(), false, |g| !g.is_empty()).await;
    assert_eq!(first.len(), 1);
    let d = &first[0];
    assert_eq!(d.attempt, 1);

    c.nack(d, Duration::ZERO).await.unwrap();
    let second = collect(&c, Duration::from_secs(30), false, |g| !g.is_empty()).await;
    assert_eq!(second[0].payload, b"retry-me");
    assert_eq!(second[0].id, d.id);
    assert_eq!(second[0].attempt, 2);

    let nacked_at = Instant::now();
    c.nack(&second[0], Duration::from_secs(3)).await.unwrap();
    let third = collect(&c, Duration::from_secs(30), false, |g| !g.is_empty()).await;
    let waited = nacked_at.elapsed();
    assert!(waited >= Duration::from_millis(2500), "redelivered after {waited:?}, delay was 3 s");
    assert_eq!(third[0].id, d.id);
    assert_eq!(third[0].attempt, 3);
    c.ack(&third[0]).await.unwrap();
    c.close().await.unwrap();
}

/// A delayed append is not delivered before its delay.
async fn delayed_append(f: &Fixture) {
    let p = f.producer().await;
    // Join the group first, so that the delay is what is measured.
    p.append(None, b"warm-up").await.unwrap();
    let c = f.consumer().await;
    collect(&c, f.first_wait(), true, |g| has(g, "warm-up")).await;

    let t = Instant::now();
    p.append_record(Record::new(Some("k"), b"later").delayed(Duration::from_secs(3))).await.unwrap();
    let got = collect(&c, Duration::from_secs(30), true, |g| has(g, "later")).await;
    assert!(t.elapsed() >= Duration::from_millis(2500), "delivered after {:?}", t.elapsed());
    assert_eq!(payloads(&got), ["later"]);
    c.close().await.unwrap();
}

/// Messages of one key are delivered in append order (Kafka, SQS FIFO).
async fn per_key_order(f: &Fixture) {
    if !f.ordered() {
        eprintln!("{:?}: no ordering promise, skipped", f.kind);
        return;
    }
    let p = f.producer().await;
    let keys = ["a", "b", "c"];
    let per_key = 15;
    // Singles and batches, keys interleaved.
    for i in 0..5 {
        for k in keys {
            p.append(Some(k), format!("{k}:{i}").as_bytes()).await.unwrap();
        }
    }
    let bodies: Vec<(String, String)> =
        (5..per_key).flat_map(|i| keys.iter().map(move |k| (k.to_string(), format!("{k}:{i}")))).collect();
    let records: Vec<Record<'_>> = bodies.iter().map(|(k, b)| Record::new(Some(k), b.as_bytes())).collect();
    p.append_batch(&records).await.unwrap();

    let c = f.consumer().await;
    let got =
        collect(&c, f.first_wait() + Duration::from_secs(30), true, |g| g.len() >= keys.len() * per_key)
            .await;
    let mut seen: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for d in &got {
        let s = String::from_utf8(d.payload.clone()).unwrap();
        let (k, i) = s.split_once(':').unwrap();
        assert_eq!(d.key.as_deref(), Some(k));
        seen.entry(k.to_owned()).or_default().push(i.parse().unwrap());
    }
    for (k, order) in seen {
        assert_eq!(order, (0..per_key).collect::<Vec<_>>(), "order of key {k}");
    }
    c.close().await.unwrap();
}

/// dead_letter moves the message to the DLQ (with key, payload and id) and
/// it is not delivered from the main queue again.
async fn dead_letter_moves(f: &Fixture) {
    let p = f.producer().await;
    p.append(Some("poison"), b"bad-message").await.unwrap();
    let c = f.consumer().await;
    let got = collect(&c, f.first_wait(), false, |g| !g.is_empty()).await;
    let d = &got[0];
    c.dead_letter(d, "target rejected it").await.unwrap();

    let dlq = f.dlq_consumer().await;
    let dead = collect(&dlq, f.first_wait(), true, |g| !g.is_empty()).await;
    assert_eq!(dead[0].payload, b"bad-message");
    assert_eq!(dead[0].key.as_deref(), Some("poison"));
    assert_eq!(dead[0].id, d.id, "the DLQ copy keeps the original id");
    dlq.close().await.unwrap();

    p.append(Some("poison"), b"sentinel").await.unwrap();
    let rest = collect(&c, Duration::from_secs(30), true, |g| has(g, "sentinel")).await;
    assert_eq!(payloads(&rest), ["sentinel"]);
    c.close().await.unwrap();
}

/// Two consumers and one producer share the queue: every message is acked
/// by someone. Duplicates are allowed; they are counted and reported.
async fn two_consumers_share_without_loss(f: &Fixture) {
    const N: usize = 200;
    let p = Arc::new(f.producer().await);
    let c1 = Arc::new(f.consumer().await);
    let done = Arc::new(AtomicBool::new(false));
    // payload -> how many times acked, per consumer.
    let acked: Arc<Mutex<HashMap<String, [usize; 2]>>> = Arc::default();

    let producer = {
        let p = p.clone();
        tokio::spawn(async move {
            for i in 0..N {
                let ack = p
                    .append(Some(&format!("customer-{}", i % 64)), format!("msg-{i}").as_bytes())
                    .await
                    .unwrap();
                if std::env::var_os("WHARF_QUEUE_DEBUG").is_some() {
                    eprintln!("appended at {:?}", ack.position);
                }
                // Spread over ~10 s, so the second consumer joins mid-stream.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let worker = |who: usize, c: Arc<wharf_queue::AnyConsumer>| {
        let done = done.clone();
        let acked = acked.clone();
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                for d in c.receive(10, Duration::from_secs(1)).await.unwrap() {
                    c.ack(&d).await.unwrap();
                    let s = String::from_utf8(d.payload).unwrap();
                    acked.lock().unwrap().entry(s).or_default()[who] += 1;
                }
            }
            c.close().await.unwrap();
        })
    };
    let w1 = worker(0, c1.clone());
    // The second consumer joins mid-stream (a Kafka rebalance while messages
    // are in flight).
    let join_deadline = Instant::now() + f.first_wait();
    while acked.lock().unwrap().len() < N / 4 && Instant::now() < join_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c2 = Arc::new(f.consumer().await);
    let w2 = worker(1, c2.clone());
    producer.await.unwrap();

    let deadline = Instant::now() + f.first_wait() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < N && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if std::env::var_os("WHARF_QUEUE_DEBUG").is_some() {
            for c in [&c1, &c2] {
                if let wharf_queue::AnyConsumer::Kafka(k) = &**c {
                    eprintln!("assigned: {:?}", k.assigned_partitions());
                }
            }
        }
    }
    // A little longer, so late duplicates are counted too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    done.store(true, Ordering::Relaxed);
    w1.await.unwrap();
    w2.await.unwrap();

    let acked = acked.lock().unwrap();
    let missing: Vec<usize> = (0..N).filter(|i| !acked.contains_key(&format!("msg-{i}"))).collect();
    let by: [usize; 2] = acked.values().fold([0, 0], |t, a| [t[0] + a[0], t[1] + a[1]]);
    let duplicates: usize = acked.values().map(|a| a[0] + a[1] - 1).sum();
    eprintln!(
        "{:?} two consumers: {N} sent, consumer 1 acked {}, consumer 2 acked {}, duplicates {duplicates}, missing {}",
        f.kind,
        by[0],
        by[1],
        missing.len()
    );
    assert!(missing.is_empty(), "lost messages: {missing:?}");
    assert!(acked.keys().all(|k| k.starts_with("msg-")));
}

/// A message in flight stays hidden from other consumers while its holder
/// keeps it (the consumer extends the visibility), beyond the visibility
/// timeout (SQS; embedded: within the 30 s lease). Not Kafka: it reserves
/// whole partitions.
async fn in_flight_stays_hidden(f: &Fixture) {
    if f.kind == Kind::Kafka {
        eprintln!("kafka: partitions, not messages, are reserved; skipped");
        return;
    }
    let p = f.producer().await;
    p.append(Some("k"), b"held").await.unwrap();
    let holder = f.consumer().await;
    let got = collect(&holder, f.first_wait(), false, |g| !g.is_empty()).await;
    let other = f.consumer().await;
    // Visibility timeout is 3 s in the fixture; hold for 8.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        let stolen = other.receive(10, Duration::from_secs(1)).await.unwrap();
        assert!(
            stolen.is_empty(),
            "in-flight message delivered to another consumer after {:?}",
            start.elapsed()
        );
    }
    holder.ack(&got[0]).await.unwrap();
    assert!(other.receive(10, Duration::from_secs(4)).await.unwrap().is_empty());
    holder.close().await.unwrap();
    other.close().await.unwrap();
}

macro_rules! conformance {
    ($backend:ident, $fixture:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn every_append_is_received() {
                super::every_append_is_received(&$fixture).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn acked_is_not_redelivered() {
                super::acked_is_not_redelivered(&$fixture).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unacked_is_redelivered() {
                super::unacked_is_redelivered(&$fixture).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nack_redelivers_after_delay() {
                super::nack_redelivers_after_delay(&$fixture).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn delayed_append() {
                super::delayed_append(&$fixture).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn per_key_order() {
                super::per_key_order(&$fixture).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dead_letter_moves() {
                super::dead_letter_moves(&$fixture).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn two_consumers_share_without_loss() {
                super::two_consumers_share_without_loss(&$fixture).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn in_flight_stays_hidden() {
                super::in_flight_stays_hidden(&$fixture).await;
            }
        }
    };
}

conformance!(kafka, Fixture::kafka());
conformance!(sqs_standard, Fixture::sqs_standard());
conformance!(sqs_fifo, Fixture::sqs_fifo());
conformance!(embedded, Fixture::embedded());
