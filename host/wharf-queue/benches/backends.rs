//! Writes/s and deliveries/s of every queue backend, in one table.
//!
//! Run: `scripts/queue-servers.sh install`, then
//! `CARGO_TARGET_DIR=/tmp/tgt-queue cargo bench -p wharf-queue --bench backends`.
//!
//! Per backend (servers started here, as in the conformance suite):
//! 1. two consumers are opened and warmed up (a Kafka group join is not
//!    measured);
//! 2. writes: `WRITERS` tasks append `n` messages (256 B, 64 keys), one
//!    append at a time each, every append waited for (durable);
//! 3. deliveries: the two consumers receive (batches of 10) and ack each
//!    message until all `n` are acked.
//!
//! Embedded: `wharf-log` with fsync durability in the system temp dir.
//! Kafka: tansu with its memory store. SQS: moto. Env `WHARF_BENCH_N`
//! scales every `n`.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::Fixture;
use wharf_queue::{AnyConsumer, Consumer, Producer};

const WRITERS: usize = 32;
const PAYLOAD: usize = 256;
const PHASE_LIMIT: Duration = Duration::from_secs(25);

struct Row {
    name: &'static str,
    n: usize,
    write_secs: f64,
    deliver_secs: f64,
    delivered: usize,
}

async fn warm_up(f: &Fixture, consumers: &[Arc<AnyConsumer>]) {
    let p = f.producer().await;
    for _ in consumers {
        p.append(Some("warm-up"), b"warm-up").await.unwrap();
    }
    // Until each consumer has received something or the warm-ups are gone.
    let start = Instant::now();
    let mut acked = 0;
    while acked < consumers.len() && start.elapsed() < f.first_wait() {
        for c in consumers {
            for d in c.receive(10, Duration::from_millis(500)).await.unwrap() {
                c.ack(&d).await.unwrap();
                acked += 1;
            }
        }
    }
}

async fn run(name: &'static str, f: Fixture, n: usize) -> Row {
    let consumers: Vec<Arc<AnyConsumer>> = vec![Arc::new(f.consumer().await), Arc::new(f.consumer().await)];
    warm_up(&f, &consumers).await;

    let p = Arc::new(f.producer().await);
    let payload: Arc<Vec<u8>> = Arc::new((0..PAYLOAD).map(|i| b'a' + (i % 26) as u8).collect());
    let t = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let p = p.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut i = w;
                while i < n {
                    let mut body = format!("{i:08}").into_bytes();
                    body.extend_from_slice(&payload);
                    p.append(Some(&format!("key-{}", i % 64)), &body).await.unwrap();
                    i += WRITERS;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let write_secs = t.elapsed().as_secs_f64();

    let seen: Arc<Mutex<HashSet<Vec<u8>>>> = Arc::default();
    let t = Instant::now();
    let readers: Vec<_> = consumers
        .iter()
        .map(|c| {
            let c = c.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                while seen.lock().unwrap().len() < n && t.elapsed() < PHASE_LIMIT {
                    for d in c.receive(10, Duration::from_millis(500)).await.unwrap() {
                        c.ack(&d).await.unwrap();
                        seen.lock().unwrap().insert(d.payload[..8].to_vec());
                    }
                }
            })
        })
        .collect();
    for r in readers {
        r.await.unwrap();
    }
    let deliver_secs = t.elapsed().as_secs_f64();
    let delivered = seen.lock().unwrap().len();
    for c in &consumers {
        c.close().await.unwrap();
    }
    Row { name, n, write_secs, deliver_secs, delivered }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scale: f64 = std::env::var("WHARF_BENCH_N").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let n = |base: usize| ((base as f64 * scale) as usize).max(WRITERS);
    let started = Instant::now();
    let mut rows = Vec::new();
    rows.push(run("embedded (wharf-log, fsync)", Fixture::embedded(), n(20_000)).await);
    eprintln!("embedded done after {:?}", started.elapsed());
    rows.push(run("kafka (tansu, memory store)", Fixture::kafka(), n(5_000)).await);
    eprintln!("kafka done after {:?}", started.elapsed());
    rows.push(run("sqs standard (moto)", Fixture::sqs_standard(), n(200)).await);
    eprintln!("sqs standard done after {:?}", started.elapsed());
    rows.push(run("sqs fifo (moto)", Fixture::sqs_fifo(), n(200)).await);
    eprintln!("all done after {:?}", started.elapsed());

    println!();
    println!(
        "{WRITERS} concurrent writers, {PAYLOAD} B payloads, 64 keys; 2 consumers, receive batches of 10, ack each"
    );
    println!();
    println!("| backend | messages | writes/s | deliveries/s (receive + ack) |");
    println!("|---|---:|---:|---:|");
    for r in &rows {
        let note = if r.delivered < r.n {
            format!(" ({} of {} in the time limit)", r.delivered, r.n)
        } else {
            String::new()
        };
        println!(
            "| {} | {} | {:.0} | {:.0}{} |",
            r.name,
            r.n,
            r.n as f64 / r.write_secs,
            r.delivered as f64 / r.deliver_secs,
            note
        );
    }
}
