//! The write path, shared by every protocol: validate, admit, deduplicate,
//! append durably, optionally wait until the target confirmed.
//!
//! Each message of a batch is acknowledged on its own. The messages of one
//! partition are appended in one call, in request order, so a batch costs one
//! group-committed fdatasync per partition and keeps per-key order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::ErrorKind;
use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::engine::namespace::{Namespace, PartitionRt};
use crate::engine::target::TargetRt;
use crate::error::Error as ApiError;
use crate::metrics;
use crate::storage::envelope::{Envelope, message_id, parse_message_id, stamp_written_at};
use crate::storage::idempotency::{HeldKeys, Reservation};
use crate::storage::part_log::PartLog;

/// Input limits; a violation is a 400 or 413 that writes nothing.
pub const MAX_PAYLOAD: usize = 1 << 20;
pub const MAX_KEY: usize = 1024;
pub const MAX_HEADERS: usize = 64;
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
pub const MAX_IDEMPOTENCY_KEY: usize = 256;
pub const MAX_BATCH: usize = 1000;
/// Longest a write may wait for `visible`.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// One message as a client sends it, whatever the protocol (the HTTP
/// adapter decodes its base64 payload; gRPC carries bytes).
#[derive(Debug, Clone, Default)]
pub struct WriteRequest {
    pub payload: Vec<u8>,
    pub key: Option<String>,
    pub idempotency_key: Option<String>,
    pub headers: BTreeMap<String, String>,
    /// Deliver no earlier than this many ms from now.
    pub delay_ms: Option<u64>,
    /// Deliver no earlier than this time, ms since the Unix epoch.
    pub deliver_at_ms: Option<u64>,
}

/// What a write waits for before it answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitFor {
    /// The record is in the log (fdatasync'd under the default policy).
    #[default]
    Durable,
    /// The target confirmed delivery, or the timeout passed.
    Visible,
}

/// The acknowledgement of one message.
#[derive(Debug, Clone, Serialize)]
pub struct WriteAck {
    pub message_id: String,
    pub partition: u32,
    pub sequence: u64,
    /// True iff the record was covered by an fdatasync of its segment file
    /// before this reply (for a duplicate: when it was first written).
    pub durable: bool,
    /// True iff the target confirmed delivery before this reply.
    pub visible: bool,
    /// True when the idempotency key was already used in the window; nothing
    /// was written and `message_id` is the original one.
    pub duplicate: bool,
}

/// Idempotency keys with this prefix belong to transaction commits.
pub const TXN_IDEMPOTENCY_PREFIX: &str = "wharf-txn:";

pub fn check_payload(payload: &[u8]) -> Result<(), ApiError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(ApiError::new(
            ErrorKind::TooLarge,
            "payload_too_large",
            format!("payload is {} bytes; the limit is {MAX_PAYLOAD}", payload.len()),
        ));
    }
    Ok(())
}

pub fn check_key(key: Option<&str>) -> Result<(), ApiError> {
    if let Some(k) = key
        && (k.is_empty() || k.len() > MAX_KEY)
    {
        return Err(ApiError::bad("invalid_key", format!("key must be 1..={MAX_KEY} bytes")));
    }
    Ok(())
}

pub fn check_headers(headers: &BTreeMap<String, String>) -> Result<(), ApiError> {
    let header_bytes: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return Err(ApiError::bad(
            "too_many_headers",
            format!("at most {MAX_HEADERS} headers and {MAX_HEADER_BYTES} bytes of them"),
        ));
    }
    Ok(())
}

/// One message checked against the input limits and turned into the
/// envelope the log stores. `max_delay_ms` is the namespace's
/// `limits.max_delay_ms`.
pub fn validate(req: WriteRequest, max_delay_ms: u64) -> Result<Envelope, ApiError> {
    validate_at(req, max_delay_ms, now_ms())
}

/// [`validate`] at `now` (ms since the Unix epoch): a batch reads the clock
/// once, not once per message.
pub fn validate_at(req: WriteRequest, max_delay_ms: u64, now: u64) -> Result<Envelope, ApiError> {
    check_payload(&req.payload)?;
    check_key(req.key.as_deref())?;
    if let Some(k) = &req.idempotency_key
        && (k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY || k.starts_with(TXN_IDEMPOTENCY_PREFIX))
    {
        return Err(ApiError::bad(
            "invalid_idempotency_key",
            format!(
                "idempotency_key must be 1..={MAX_IDEMPOTENCY_KEY} bytes and not start with {TXN_IDEMPOTENCY_PREFIX:?}"
            ),
        ));
    }
    check_headers(&req.headers)?;
    if req.delay_ms.is_some() && req.deliver_at_ms.is_some() {
        return Err(ApiError::bad("invalid_delay", "give delay_ms or deliver_at_ms, not both"));
    }
    let deliver_at_ms = req.deliver_at_ms.or(req.delay_ms.map(|d| now.saturating_add(d)));
    if deliver_at_ms.is_some_and(|t| t.saturating_sub(now) > max_delay_ms) {
        return Err(ApiError::bad(
            "invalid_delay",
            format!("a delay may be at most {max_delay_ms} ms (limits.max_delay_ms)"),
        ));
    }
    Ok(Envelope {
        key: req.key,
        payload: req.payload,
        headers: req.headers.into_iter().collect(),
        idempotency_key: req.idempotency_key,
        written_at_ms: now,
        deliver_at_ms,
        replays: 0,
        transaction: None,
        only_target: None,
    })
}

/// A write's `timeout_ms` (how long `wait = "visible"` may wait): at most
/// [`MAX_WAIT`]. A longer one is refused, not silently shortened.
pub fn check_wait_timeout(timeout: Duration) -> Result<(), ApiError> {
    if timeout > MAX_WAIT {
        return Err(ApiError::bad(
            "invalid_timeout",
            format!("timeout_ms is {}; it may be at most {}", timeout.as_millis(), MAX_WAIT.as_millis()),
        ));
    }
    Ok(())
}

/// A replica namespace takes records only through replication.
pub fn refuse_replica(ns: &Namespace) -> Result<(), ApiError> {
    match ns.cfg.mode {
        crate::config::NamespaceMode::Primary => Ok(()),
        crate::config::NamespaceMode::Replica => Err(read_only_replica(&ns.name)),
    }
}

fn read_only_replica(ns: &str) -> ApiError {
    ApiError::new(
        ErrorKind::Conflict,
        "read_only_replica",
        format!(
            "namespace {ns} is a replica: it takes records only from its primary through replication; write to the primary"
        ),
    )
}

/// Admission control: refuses writes while the namespace's undelivered
/// backlog is past a configured limit. Explicit, never a silent drop.
pub fn admit(ns: &Namespace) -> Result<(), ApiError> {
    admit_bytes(ns, 0)
}

/// [`admit`] for a write that will add `incoming` bytes to what the
/// namespace holds: the log's bytes and the chunks parked in open
/// transactions count together against `limits.max_backlog_bytes`.
pub fn admit_bytes(ns: &Namespace, incoming: u64) -> Result<(), ApiError> {
    if let Some(short) = ns.reserve.short() {
        metrics::get().admission_rejections.get_or_create(&metrics::ns_kind(&ns.name, "disk_reserve")).inc();
        return Err(ApiError::new(
            ErrorKind::StorageFull,
            "disk_full",
            format!(
                "{} bytes free on the data dir's disk, under server.min_free_bytes ({}); nothing was written, retry once space is freed",
                short.free, short.min_free
            ),
        ));
    }
    let limits = &ns.cfg.limits;
    let (mut messages, mut oldest) = (0u64, None::<u64>);
    let mut bytes = ns.txns.parked_bytes() + incoming;
    for p in &ns.partitions {
        if let Some(log) = &p.log {
            let st = log.stats();
            messages += st.next_seq.saturating_sub(st.watermark);
            // Delivered history kept by retention is not backlog.
            bytes += st.bytes - st.delivered_bytes;
        }
    }
    for lane in ns.targets.iter().flat_map(|t| t.lanes.iter()) {
        if let Some(t) = lane.with(|w| w.oldest_written_at_ms()) {
            oldest = Some(oldest.map_or(t, |o: u64| o.min(t)));
        }
    }
    let age = oldest.map(|o| now_ms().saturating_sub(o)).unwrap_or(0);
    let refused = if messages >= limits.max_backlog_messages {
        Some((
            "messages",
            format!("{messages} undelivered messages; the limit is {}", limits.max_backlog_messages),
        ))
    } else if bytes >= limits.max_backlog_bytes {
        let reason = format!(
            "{bytes} bytes held in the log and parked transactions; the limit is {}",
            limits.max_backlog_bytes
        );
        Some(("bytes", reason))
    } else if limits.max_backlog_age_ms > 0 && age >= limits.max_backlog_age_ms {
        Some((
            "age",
            format!(
                "the oldest undelivered message is {age} ms old; the limit is {} ms",
                limits.max_backlog_age_ms
            ),
        ))
    } else {
        None
    };
    match refused {
        None => Ok(()),
        Some((kind, reason)) => {
            metrics::get().admission_rejections.get_or_create(&metrics::ns_kind(&ns.name, kind)).inc();
            Err(ApiError::new(ErrorKind::Overloaded, "backlog_full", reason))
        }
    }
}

/// Writes a batch (one request = a batch of one). A batch-level refusal
/// (a timeout over [`MAX_WAIT`], admission) is an `Err`; otherwise each
/// message has its own result (a message the adapter could not decode keeps
/// its error).
pub async fn write_batch(
    ns: &Arc<Namespace>,
    requests: Vec<Result<WriteRequest, ApiError>>,
    wait: WaitFor,
    timeout: Duration,
) -> Result<Vec<Result<WriteAck, ApiError>>, ApiError> {
    check_wait_timeout(timeout)?;
    let (max_delay_ms, now) = (ns.cfg.limits.max_delay_ms, now_ms());
    let envelopes: Vec<Result<Envelope, ApiError>> =
        requests.into_iter().map(|r| r.and_then(|r| validate_at(r, max_delay_ms, now))).collect();
    write_envelopes(ns, envelopes, wait, timeout).await
}

/// [`write_batch`] after validation: admit, deduplicate, append, wait.
pub async fn write_envelopes(
    ns: &Arc<Namespace>,
    envelopes: Vec<Result<Envelope, ApiError>>,
    wait: WaitFor,
    timeout: Duration,
) -> Result<Vec<Result<WriteAck, ApiError>>, ApiError> {
    let started = Instant::now();
    if !ns.writes {
        return Err(ApiError::role_consumer());
    }
    refuse_replica(ns)?;
    if wait == WaitFor::Visible && !ns.delivers {
        return Err(ApiError::bad(
            "wait_unsupported",
            "wait = \"visible\" needs the delivering process; this one runs with --role processor",
        ));
    }
    admit(ns)?;
    let mut results = if envelopes.iter().any(|e| e.as_ref().is_ok_and(|e| e.idempotency_key.is_some())) {
        // A reserved idempotency key must end completed or released,
        // whatever becomes of the request (its client gone, its deadline
        // passed): otherwise a retry with that key waits for it forever.
        // So the part that holds keys runs in a task of its own, which a
        // dropped request does not cancel.
        let ns = ns.clone();
        let detached = tokio::spawn(async move { place_and_append(&ns, envelopes, started).await });
        detached.await.unwrap_or_else(|e| Err(ApiError::internal(e.to_string())))?
    } else {
        place_and_append(ns, envelopes, started).await?
    };
    if wait == WaitFor::Visible {
        wait_all_visible(ns, results.iter_mut().flatten(), timeout).await;
    }
    Ok(results)
}

/// [`write_envelopes`] once admitted: deduplicate, place, append, record
/// the idempotency keys. Every key it reserves ends recorded or released.
async fn place_and_append(
    ns: &Arc<Namespace>,
    envelopes: Vec<Result<Envelope, ApiError>>,
    started: Instant,
) -> Result<Vec<Result<WriteAck, ApiError>>, ApiError> {
    let spans = crate::otel::AppendSpans::start(&envelopes);
    let n = envelopes.len();
    let mut results: Vec<Option<Result<WriteAck, ApiError>>> = vec![None; n];
    // Messages to append, per partition, in request order. They stay where
    // validation put them: the lists hold references, since an envelope
    // is about 200 bytes and moving it was a third of the batch path's
    // memmove.
    let mut by_partition: BTreeMap<u32, Vec<(usize, &Envelope)>> = BTreeMap::new();
    // Idempotency keys reserved by this batch, and their first index;
    // released on the way out unless recorded (an early return, a panic).
    let mut held = HeldKeys::new(ns.idempotency.as_ref());
    let mut repeats: Vec<(usize, usize)> = Vec::new();
    // Keyless messages of one request share one partition (the one keyless
    // writes stick to when its first one is placed, even if the request
    // straddles a change): a batch of them is one append and one fdatasync.
    let mut keyless_partition: Option<u32> = None;
    for (i, env) in envelopes.iter().enumerate() {
        let env = match env {
            Ok(e) => e,
            Err(e) => {
                results[i] = Some(Err(e.clone()));
                continue;
            }
        };
        if let Some(k) = &env.idempotency_key {
            if let Some(first) = held.first_use(k) {
                repeats.push((i, first));
                continue;
            }
            match ns.idempotency()?.reserve(k).await {
                Reservation::Duplicate(id) => {
                    results[i] = Some(Ok(duplicate_ack(&id)));
                    continue;
                }
                Reservation::Reserved => held.hold(k.clone(), i),
            }
        }
        let partition = match env.key.as_deref() {
            Some(key) => ns.partition_for(Some(key)),
            None => *keyless_partition.get_or_insert_with(|| ns.partition_for(None)),
        };
        // Room for the whole request at once.
        by_partition.entry(partition).or_insert_with(|| Vec::with_capacity(n)).push((i, env));
    }

    let mut keys_to_record = Vec::new();
    let mut outcomes = Vec::new();
    if let Some(producer) = ns.producer.get() {
        // A Kafka or SQS queue: append in request order; the backend keeps
        // per-key order (Kafka partition, SQS FIFO group).
        let mut items: Vec<(usize, &Envelope)> = by_partition.into_values().flatten().collect();
        items.sort_by_key(|(i, _)| *i);
        for (i, env) in items {
            results[i] = Some(append_external(producer, env).await);
            if let (Some(k), Some(Ok(ack))) = (&env.idempotency_key, &results[i]) {
                keys_to_record.push((k.clone(), ack.message_id.clone()));
            } else if let Some(k) = &env.idempotency_key {
                held.release(k);
            }
        }
    } else if ns.cfg.queue.is_some() {
        return Err(ApiError::role_consumer());
    } else {
        outcomes = append_partitions(ns, by_partition).await;
    }
    for (partition, part, outcome) in outcomes {
        match outcome {
            Ok(acks) => {
                part.wake();
                for (i, seq, synced, idem) in acks {
                    let id = message_id(partition, seq);
                    if let Some(k) = idem {
                        keys_to_record.push((k, id.clone()));
                    }
                    results[i] = Some(Ok(WriteAck {
                        message_id: id,
                        partition,
                        sequence: seq,
                        durable: synced,
                        visible: false,
                        duplicate: false,
                    }));
                }
            }
            Err((items, e)) => {
                for (i, idem) in items {
                    if let Some(k) = idem {
                        held.release(&k);
                    }
                    results[i] = Some(Err(e.clone()));
                }
            }
        }
    }
    if !keys_to_record.is_empty() {
        let ns2 = ns.clone();
        let recorded = tokio::task::spawn_blocking(move || {
            let Some(idem) = &ns2.idempotency else { return Ok(()) };
            // Crash tests: the messages are durable, their keys not yet.
            crate::storage::fault_point("idempotency.before_record");
            idem.complete(&keys_to_record)
        })
        .await;
        if recorded.is_ok() {
            held.settled();
        }
        if !matches!(recorded, Ok(Ok(()))) {
            // The messages are durable; only the dedup window lost them until
            // the next start, which folds retained messages back in.
            tracing::error!(namespace = %ns.name, "idempotency keys not recorded; they are recovered at next start");
        }
    }
    for (i, first) in repeats {
        results[i] = Some(match &results[first] {
            Some(Ok(ack)) => Ok(WriteAck { duplicate: true, ..ack.clone() }),
            Some(Err(e)) => Err(e.clone()),
            None => Err(ApiError::internal("duplicate of a message with no result")),
        });
    }
    let results: Vec<Result<WriteAck, ApiError>> =
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(ApiError::internal("no result")))).collect();
    let m = metrics::get();
    let label = metrics::ns(&ns.name);
    let written = results.iter().filter(|r| matches!(r, Ok(a) if !a.duplicate)).count();
    m.writes.get_or_create(&label).inc_by(written as u64);
    m.append_latency.get_or_create(&label).observe(started.elapsed().as_secs_f64());
    spans.finish(&ns.name, results.iter().map(appended));
    Ok(results)
}

/// A message's result, as its append span tells it.
fn appended(result: &Result<WriteAck, ApiError>) -> Result<crate::otel::Appended<'_>, &str> {
    match result {
        Ok(a) => Ok(crate::otel::Appended {
            message_id: &a.message_id,
            partition: a.partition,
            sequence: a.sequence,
            durable: a.durable,
            duplicate: a.duplicate,
        }),
        Err(e) => Err(e.code),
    }
}

/// Sets `visible` on each ack whose message the target confirmed before
/// `timeout` (capped at [`MAX_WAIT`]) ran out.
pub async fn wait_all_visible(ns: &Namespace, acks: impl Iterator<Item = &mut WriteAck>, timeout: Duration) {
    let deadline = Instant::now() + timeout.min(MAX_WAIT);
    for ack in acks {
        ack.visible = wait_visible(ns, ack, deadline).await;
    }
}

type Appended = Vec<(usize, u64, bool, Option<String>)>;
type Failed = (Vec<(usize, Option<String>)>, ApiError);

/// Appends each partition's share of a request, in the request's own
/// task: no spawned task and no wake-up to hand an outcome back. Several
/// shares are appended concurrently, so that their group commits run in
/// parallel. A request dropped while waiting loses only its
/// acknowledgements, as with a client that disconnects: its records are
/// queued and the log writes them (`wharf_log` `Commit`).
async fn append_partitions(
    ns: &Namespace,
    by_partition: BTreeMap<u32, Vec<(usize, &Envelope)>>,
) -> Vec<(u32, Arc<PartitionRt>, Result<Appended, Failed>)> {
    let shares = by_partition.into_iter().map(|(partition, items)| {
        let part = ns.partitions[partition as usize].clone();
        async move { (partition, part.clone(), append(part, items).await) }
    });
    futures_util::future::join_all(shares).await
}

/// Appends one partition's share of a batch in a single durable call.
async fn append(part: Arc<PartitionRt>, items: Vec<(usize, &Envelope)>) -> Result<Appended, Failed> {
    let index: Vec<(usize, Option<String>)> =
        items.iter().map(|(i, e)| (*i, e.idempotency_key.clone())).collect();
    let halted = |reason: String| {
        ApiError::new(
            ErrorKind::Unavailable,
            "partition_halted",
            format!("partition {} of {} is halted: {reason}", part.index, part.namespace),
        )
    };
    if let Some(reason) = part.halted_reason() {
        return Err((index, halted(reason)));
    }
    if part.replica.is_some() {
        return Err((index, read_only_replica(&part.namespace)));
    }
    let Some(log) = part.log.clone() else { return Err((index, halted("log not open".into()))) };
    if log.writer().is_none() {
        return Err((index, ApiError::role_consumer()));
    }
    let bytes_total: u64 = items.iter().map(|(_, e)| e.payload.len() as u64).sum();
    let encoded = Encoded::of(&items);
    let appended = append_durably(&part, log, &encoded).await;
    let appended = match appended {
        Ok(Some(Ok(a))) => a,
        Ok(None) => return Err((index, ApiError::role_consumer())),
        Ok(Some(Err(e))) => {
            if let Some(temporary) =
                ApiError::from_temporary(&e, &format!("partition {} of {}", part.index, part.namespace))
            {
                // Rolled back by the log; the partition stays healthy.
                tracing::warn!(namespace = %part.namespace, partition = part.index, error = %e, "write refused for now");
                part.set_refusing(Some(temporary.code));
                metrics::get()
                    .admission_rejections
                    .get_or_create(&metrics::ns_kind(&part.namespace, temporary.code))
                    .inc();
                return Err((index, temporary));
            }
            // The log refuses further appends after a failed write; halt so
            // the client is told plainly instead of on every request.
            part.halt(e.to_string());
            return Err((index, halted(e.to_string())));
        }
        Err(e) => return Err((index, ApiError::internal(e.to_string()))),
    };
    part.set_refusing(None);
    metrics::get().write_bytes.get_or_create(&metrics::ns(&part.namespace)).inc_by(bytes_total);
    Ok(index
        .into_iter()
        .enumerate()
        .map(|(n, (i, idem))| (i, appended.first_seq + n as u64, appended.synced, idem))
        .collect())
}

/// One partition's share of a batch, encoded into one buffer: record `i`
/// is `bytes[ends[i - 1]..ends[i]]` (no allocation per message).
struct Encoded {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    /// Per record: a client's write (stamped), not a DLQ replay.
    fresh: Vec<bool>,
}

impl Encoded {
    fn of(items: &[(usize, &Envelope)]) -> Self {
        let capacity = items.iter().map(|(_, e)| e.encoded_len_hint()).sum();
        let mut out = Encoded {
            bytes: Vec::with_capacity(capacity),
            ends: Vec::with_capacity(items.len()),
            fresh: Vec::with_capacity(items.len()),
        };
        for (_, e) in items {
            e.encode_into(&mut out.bytes);
            out.ends.push(out.bytes.len());
            out.fresh.push(e.replays == 0);
        }
        out
    }

    fn records(&self) -> Vec<&[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(from, &to)| &self.bytes[from..to]).collect()
    }
}

/// Appends `encoded` to the partition's log and waits until it is durable
/// per the log's policy, without holding a thread while it waits: only a
/// group-commit round's leader runs on the blocking pool (see
/// `wharf_log::Commit`). `Ok(None)`: this process does not write.
async fn append_durably(
    part: &Arc<PartitionRt>,
    log: Arc<PartLog>,
    encoded: &Encoded,
) -> Result<Option<Result<wharf_log::Appended, wharf_log::LogError>>, String> {
    let Some(writer) = log.writer() else { return Ok(None) };
    let queued = {
        let refs = encoded.records();
        let mut fresh = encoded.fresh.iter();
        let now = now_ms();
        // A client's write gets its write time in sequence order
        // (storage::write_clock); a DLQ replay keeps the one it had.
        let mut stamp = |seq: u64, bytes: &mut Vec<u8>| {
            if fresh.next() == Some(&true) {
                stamp_written_at(bytes, part.write_clock.stamp(seq, now));
            }
        };
        writer.enqueue_stamped(&refs, &mut stamp)
    };
    let mut commit = match queued {
        Ok(c) => c,
        Err(e) => return Ok(Some(Err(e))),
    };
    match std::future::poll_fn(|cx| writer.poll_commit(&mut commit, cx)).await {
        wharf_log::CommitStep::Done(result) => Ok(Some(result)),
        wharf_log::CommitStep::Lead => {
            // The leader's reply goes out once its own round is durable; its
            // thread then goes on leading while records keep arriving.
            let (tx, rx) = tokio::sync::oneshot::channel();
            let log = log.clone();
            tokio::task::spawn_blocking(move || {
                if let Some(w) = log.writer() {
                    w.lead(commit, |r| drop(tx.send(r)));
                }
            });
            rx.await.map(Some).map_err(|_| "the group-commit leader stopped".to_string())
        }
    }
}

/// Appends to a Kafka topic or SQS queue; returns once the backend holds it
/// durably (Kafka: acks=all, idempotent producer; SQS: SendMessage stored).
async fn append_external(producer: &wharf_queue::AnyProducer, env: &Envelope) -> Result<WriteAck, ApiError> {
    use wharf_queue::Producer as _;
    let delay =
        env.deliver_at_ms.map(|t| Duration::from_millis(t.saturating_sub(now_ms()))).unwrap_or_default();
    let bytes = env.encode();
    let record = wharf_queue::Record::new(env.key.as_deref(), &bytes).delayed(delay);
    let ack = producer.append_record(record).await.map_err(|e| {
        ApiError::new(
            ErrorKind::Unavailable,
            "queue_unavailable",
            format!("the queue refused the write: {e}"),
        )
    })?;
    let (partition, sequence) = match &ack.position {
        wharf_queue::Position::Kafka { partition, offset, .. } => (*partition as u32, *offset as u64),
        _ => (0, 0),
    };
    Ok(WriteAck { message_id: ack.id, partition, sequence, durable: true, visible: false, duplicate: false })
}

pub fn duplicate_ack(id: &str) -> WriteAck {
    let (partition, sequence) = parse_message_id(id).unwrap_or_default();
    WriteAck {
        message_id: id.to_string(),
        partition,
        sequence,
        durable: true,
        visible: false,
        duplicate: true,
    }
}

/// Waits until every target finished the message; true iff each delivered
/// it (none dead-lettered it) before `deadline`.
async fn wait_visible(ns: &Namespace, ack: &WriteAck, deadline: Instant) -> bool {
    for target in &ns.targets {
        if !wait_visible_on(ns, target, ack, deadline).await {
            return false;
        }
    }
    true
}

async fn wait_visible_on(ns: &Namespace, target: &TargetRt, ack: &WriteAck, deadline: Instant) -> bool {
    let queue = ns.cfg.queue.is_some();
    let lane_index = if queue { 0 } else { ack.partition };
    let Some(lane) = target.lane(lane_index) else { return false };
    loop {
        let notified = lane.delivered.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let finished = lane.with(|w| match queue {
            true => w.finished_lately(&ack.message_id),
            false => w.is_finished(ack.sequence),
        });
        if finished {
            return !target.dlq.as_ref().is_some_and(|d| d.contains(&ack.message_id));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
            return false;
        }
    }
}

/// Appends an envelope as it is (a DLQ replay): no validation, no dedup.
pub async fn append_envelope(ns: &Namespace, env: Envelope) -> Result<WriteAck, ApiError> {
    refuse_replica(ns)?;
    if let Some(producer) = ns.producer.get() {
        return append_external(producer, &env).await;
    }
    if ns.cfg.queue.is_some() {
        return Err(ApiError::role_consumer());
    }
    let partition = ns.partition_for(env.key.as_deref());
    let part = ns.partitions[partition as usize].clone();
    let acks = append(part.clone(), vec![(0, &env)]).await.map_err(|(_, e)| e)?;
    part.wake();
    let (_, sequence, durable, _) =
        acks.into_iter().next().ok_or_else(|| ApiError::internal("empty append"))?;
    Ok(WriteAck {
        message_id: message_id(partition, sequence),
        partition,
        sequence,
        durable,
        visible: false,
        duplicate: false,
    })
}
