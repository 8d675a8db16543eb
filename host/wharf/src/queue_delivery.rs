//! Delivery from a Kafka or SQS queue (see `docs/backends.md`).
//!
//! One loop per namespace and process. Several processes (`--role consumer`)
//! share the work through the Kafka consumer group or SQS competing
//! consumers. A message is acked on the queue only after the target
//! confirmed it or its DLQ copy is written, so a crash re-delivers instead of
//! losing. Retries go back to the queue with the namespace's backoff;
//! exhausted retries and rejects go to the queue's DLQ. Per-key order is the
//! backend's (Kafka partition, SQS FIFO group) until a retry: a retried
//! message is re-enqueued behind later ones.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::watch;
use wharf_queue::{Consumer as _, Delivery};

use crate::envelope::Envelope;
use crate::metrics;
use crate::node::Namespace;
use crate::plugin::{Batch, Instance, Message, Outcome, Plugin};

pub async fn run(ns: Arc<Namespace>, queue: wharf_queue::QueueConfig, mut shutdown: watch::Receiver<bool>) {
    let consumer = loop {
        match wharf_queue::open_consumer(&queue).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(namespace = %ns.name, error = %e, "cannot open the queue consumer; retrying in 1 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    };
    let mut slot = ns.slot.subscribe();
    let mut plugin: Option<Plugin> = slot.borrow_and_update().clone();
    let mut instance: Option<Instance> = None;
    let m = metrics::get();
    let label = metrics::ns(&ns.name);
    loop {
        if *shutdown.borrow() || ns.removed.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        if slot.has_changed().unwrap_or(false) {
            plugin = slot.borrow_and_update().clone();
            instance = None;
        }
        let Some(p) = plugin.clone() else {
            tokio::select! {
                _ = slot.changed() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        };
        let received = tokio::select! {
            r = consumer.receive(ns.cfg.delivery.batch_max, Duration::from_millis(500)) => r,
            _ = shutdown.changed() => break,
        };
        let deliveries = match received {
            Ok(d) if d.is_empty() => continue,
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(namespace = %ns.name, error = %e, "queue receive failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        // A record that is not an envelope cannot be delivered: DLQ it.
        let mut batch = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            match Envelope::decode(&d.payload) {
                Ok(env) => batch.push((d, env)),
                Err(e) => finish(&consumer, &d, Err(format!("not a wharf envelope: {e}"))).await,
            }
        }
        let wit = Batch {
            messages: batch.iter().map(|(d, env)| to_message(&ns.name, d, env)).collect(),
            transaction_id: None,
        };
        let started = Instant::now();
        let result = match instance.as_mut() {
            Some(i) => i.deliver(&wit).await,
            None => match p.instantiate().await {
                Ok(mut i) => {
                    let r = i.deliver(&wit).await;
                    instance = Some(i);
                    r
                }
                Err(e) => Err(e),
            },
        };
        m.plugin_call_latency.get_or_create(&label).observe(started.elapsed().as_secs_f64());
        let outcomes: Vec<Outcome> = match result {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(namespace = %ns.name, error = %e, "plugin call failed; instance discarded, batch will be retried");
                instance = None;
                let reason = e.to_string();
                wit.messages
                    .iter()
                    .map(|_| {
                        Outcome::Retry(crate::plugin::RetryOutcome { reason: reason.clone(), after_ms: None })
                    })
                    .collect()
            }
        };
        for ((d, env), outcome) in batch.iter().zip(outcomes) {
            match outcome {
                Outcome::Delivered => {
                    finish(&consumer, d, Ok(())).await;
                    m.delivered.get_or_create(&label).inc();
                    let secs = crate::clock::now_ms().saturating_sub(env.written_at_ms) as f64 / 1000.0;
                    m.delivery_latency.get_or_create(&label).observe(secs);
                }
                Outcome::Reject(reason) => {
                    finish(&consumer, d, Err(reason)).await;
                    m.dead_lettered.get_or_create(&metrics::ns_kind(&ns.name, "reject")).inc();
                }
                Outcome::Retry(r) if d.attempt >= ns.cfg.retry.max_attempts => {
                    let reason = format!("gave up after {} attempts: {}", d.attempt, r.reason);
                    finish(&consumer, d, Err(reason)).await;
                    m.dead_lettered.get_or_create(&metrics::ns_kind(&ns.name, "exhausted")).inc();
                }
                Outcome::Retry(r) => {
                    let ceiling = ns.cfg.retry.ceiling(d.attempt).as_millis() as u64;
                    let wait = rand::rng().random_range(0..=ceiling).max(r.after_ms.unwrap_or(0));
                    if let Err(e) = consumer.nack(d, Duration::from_millis(wait)).await {
                        tracing::warn!(namespace = %ns.name, id = %d.id, error = %e, "nack failed; the queue redelivers later");
                    }
                    m.retries.get_or_create(&metrics::ns_kind(&ns.name, "retry")).inc();
                }
            }
        }
    }
    if let Err(e) = consumer.close().await {
        tracing::warn!(namespace = %ns.name, error = %e, "closing the queue consumer");
    }
    tracing::info!(namespace = %ns.name, "queue delivery stopped");
}

/// Acks a delivered message, or dead-letters it with a reason. A failure
/// leaves it unacked: the queue delivers it again.
async fn finish(consumer: &wharf_queue::AnyConsumer, d: &Delivery, result: Result<(), String>) {
    let done = match &result {
        Ok(()) => consumer.ack(d).await,
        Err(reason) => consumer.dead_letter(d, reason).await,
    };
    if let Err(e) = done {
        tracing::warn!(id = %d.id, error = %e, "queue ack/dead-letter failed; the message will be redelivered");
    } else if let Err(reason) = result {
        tracing::warn!(id = %d.id, %reason, "message dead-lettered");
    }
}

fn to_message(ns: &str, d: &Delivery, env: &Envelope) -> Message {
    Message {
        id: d.id.clone(),
        namespace: ns.to_string(),
        partition: 0,
        sequence: 0,
        key: env.key.clone(),
        payload: env.payload.clone(),
        headers: env.headers.clone(),
        idempotency_key: env.idempotency_key.clone(),
        attempt: d.attempt.max(1),
        replays: env.replays,
        written_at_ms: env.written_at_ms,
    }
}
