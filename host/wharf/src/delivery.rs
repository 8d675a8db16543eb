//! The delivery engine: one loop per partition, from the log to the plugin.
//!
//! Invariants:
//! - A message leaves the in-flight window only when the target confirmed
//!   it (`delivered`) or its DLQ entry is durable. Only then may the
//!   partition's watermark pass it, so a crash at any point re-delivers
//!   instead of losing (at-least-once).
//! - Messages with the same key reach the plugin in sequence order: only
//!   the oldest unfinished message of a key is eligible. A message waiting
//!   for a retry holds back later messages of its key only. Keyless
//!   messages are unordered.
//! - A trap, a deadline or a wrong outcome count throws the instance away
//!   and schedules every message of the batch for a retry.
//! - A transaction marker is delivered alone: its chunks, read back from
//!   the chunk store in sequence order, are one batch flagged with the
//!   transaction id, and the whole batch has one outcome (any reject
//!   rejects it, else any retry retries it). Its chunks are deleted only
//!   after it is delivered, or dead-lettered with the chunks copied into
//!   the DLQ entry.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::watch;

use crate::clock::now_ms;
use crate::dlq::{DlqEntry, Failure};
use crate::envelope::{Envelope, TxnMarker, message_id};
use crate::metrics;
use crate::node::{Namespace, PartitionRt};
use crate::part_log::PartLog;
use crate::plugin::{Batch, Instance, Message, Outcome, Plugin, PluginError, RetryOutcome};

/// How often an idle consumer process looks for new records.
const FOLLOW_POLL: Duration = Duration::from_millis(10);

/// Persist the watermark at most this often while busy.
const WATERMARK_EVERY: Duration = Duration::from_millis(200);

/// The in-flight window of one partition, shared with the API for lookups.
#[derive(Debug, Default)]
pub struct Tracker {
    pending: BTreeMap<u64, Pending>,
    /// Per key, the unfinished sequences in order; the front is eligible.
    keys: HashMap<String, VecDeque<u64>>,
    /// Next sequence to read from the log.
    next_read: u64,
    pub delivered_total: u64,
    pub retries_total: u64,
    pub dead_lettered_total: u64,
    /// Current AIMD batch size.
    pub batch_limit: usize,
    pub breaker: BreakerState,
}

/// Counters and state of one partition's delivery loop.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrackerSnapshot {
    /// Messages read from the log and not finished.
    pub window: usize,
    /// Messages inside a plugin call right now.
    pub in_flight: usize,
    /// Keys whose oldest message is waiting for a retry.
    pub retrying_keys: usize,
    pub delivered_total: u64,
    pub retries_total: u64,
    pub dead_lettered_total: u64,
    /// Current AIMD batch size.
    pub batch_limit: usize,
    pub breaker: BreakerState,
}

/// The circuit breaker in front of the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum BreakerState {
    #[default]
    Closed,
    /// No calls until `until_ms`; then one probe.
    Open { until_ms: u64 },
    /// The next call is a probe of one message.
    HalfOpen,
}

#[derive(Debug, Clone)]
struct Pending {
    env: Envelope,
    /// Attempts made so far.
    attempts: u32,
    /// Not before this wall-clock time (ms).
    due_ms: u64,
    in_flight: bool,
    failures: Vec<Failure>,
}

/// What the API reports about one message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MessageState {
    pub state: &'static str,
    pub attempts: u32,
    pub next_attempt_at_ms: Option<u64>,
    pub last_error: Option<String>,
}

impl Tracker {
    /// All sequences below this are finished.
    pub fn watermark(&self) -> u64 {
        self.pending.keys().next().copied().unwrap_or(self.next_read)
    }

    /// What `/v1/status` shows about the delivery loop.
    pub fn snapshot(&self) -> TrackerSnapshot {
        TrackerSnapshot {
            window: self.pending.len(),
            in_flight: self.pending.values().filter(|p| p.in_flight).count(),
            retrying_keys: self.retrying_keys(),
            delivered_total: self.delivered_total,
            retries_total: self.retries_total,
            dead_lettered_total: self.dead_lettered_total,
            batch_limit: self.batch_limit,
            breaker: self.breaker,
        }
    }

    fn retrying_keys(&self) -> usize {
        self.keys
            .values()
            .filter(|q| q.front().and_then(|s| self.pending.get(s)).is_some_and(|p| p.attempts > 0))
            .count()
    }

    /// State of a message still in the window, or `None` if it is not.
    pub fn state_of(&self, seq: u64) -> Option<MessageState> {
        let p = self.pending.get(&seq)?;
        let now = now_ms();
        let state = if p.in_flight {
            "in_flight"
        } else if p.attempts > 0 {
            "retrying"
        } else if p.env.deliver_at_ms.is_some_and(|t| t > now) {
            "delayed"
        } else {
            "pending"
        };
        Some(MessageState {
            state,
            attempts: p.attempts,
            next_attempt_at_ms: (p.attempts > 0 && !p.in_flight).then_some(p.due_ms),
            last_error: p.failures.last().map(|f| f.reason.clone()),
        })
    }

    /// Messages in the window, less delayed ones not due yet.
    fn occupying_window(&self, now: u64) -> usize {
        self.pending.values().filter(|p| !(p.attempts == 0 && p.due_ms > now)).count()
    }

    /// Write time of the oldest message in the window, if any.
    pub fn oldest_written_at_ms(&self) -> Option<u64> {
        self.pending.values().next().map(|p| p.env.written_at_ms)
    }

    /// Delivered or dead-lettered.
    pub fn is_finished(&self, seq: u64) -> bool {
        seq < self.next_read && !self.pending.contains_key(&seq)
    }

    pub fn has_read(&self, seq: u64) -> bool {
        seq < self.next_read
    }

    /// Keyless, or the oldest unfinished message of its key.
    fn heads_its_key(&self, seq: u64, p: &Pending) -> bool {
        p.env.key.as_ref().is_none_or(|k| self.keys.get(k).and_then(|q| q.front()) == Some(&seq))
    }

    fn is_eligible(&self, seq: u64, p: &Pending, now: u64) -> bool {
        !p.in_flight && p.due_ms <= now && self.heads_its_key(seq, p)
    }

    /// Earliest time something not in flight becomes due.
    fn next_due_ms(&self) -> Option<u64> {
        self.pending
            .iter()
            .filter(|(seq, p)| !p.in_flight && self.heads_its_key(**seq, p))
            .map(|(_, p)| p.due_ms)
            .min()
    }

    fn finish(&mut self, seq: u64) -> Option<Pending> {
        let p = self.pending.remove(&seq)?;
        if let Some(k) = &p.env.key
            && let Some(q) = self.keys.get_mut(k)
        {
            q.retain(|s| *s != seq);
            if q.is_empty() {
                self.keys.remove(k);
            }
        }
        Some(p)
    }
}

pub struct Engine {
    ns: Arc<Namespace>,
    part: Arc<PartitionRt>,
    log: Arc<PartLog>,
    /// The namespace's plugin slot and the plugin taken from it.
    slot: watch::Receiver<Option<Plugin>>,
    plugin: Option<Plugin>,
    instance: Option<Instance>,
    shutdown: watch::Receiver<bool>,
    /// Consecutive traps/deadlines/init failures (quarantine counter).
    consecutive_failures: u32,
    /// Consecutive calls where nothing succeeded (breaker counter).
    failed_calls: u32,
    persisted_watermark: u64,
    last_persist: Instant,
}

/// What one plugin call amounted to, for the breaker and AIMD.
struct CallSummary {
    /// Nothing was delivered or rejected: every message is to be retried.
    failed: bool,
    /// The target pushed back: retry-after, a slow call, or a failure.
    throttled: bool,
}

impl Engine {
    pub fn new(ns: Arc<Namespace>, part: Arc<PartitionRt>, shutdown: watch::Receiver<bool>) -> Self {
        // Only called for partitions whose log opened.
        let log = part.log.clone().unwrap_or_else(|| unreachable!("engine for a halted partition"));
        let watermark = log.watermark();
        if let Ok(mut t) = part.tracker.lock() {
            t.next_read = watermark;
            t.batch_limit = ns.cfg.delivery.batch_max;
        }
        let mut slot = ns.slot.subscribe();
        let plugin = slot.borrow_and_update().clone();
        Self {
            ns,
            part,
            log,
            slot,
            plugin,
            instance: None,
            shutdown,
            consecutive_failures: 0,
            failed_calls: 0,
            persisted_watermark: watermark,
            last_persist: Instant::now(),
        }
    }

    #[tracing::instrument(name = "delivery", skip_all, fields(namespace = %self.ns.name, partition = self.part.index))]
    pub async fn run(mut self) {
        let linger = Duration::from_millis(self.ns.cfg.delivery.linger_ms);
        loop {
            if *self.shutdown.borrow()
                || self.part.halted_reason().is_some()
                || self.ns.removed.load(std::sync::atomic::Ordering::Relaxed)
            {
                break;
            }
            if self.slot.has_changed().unwrap_or(false) {
                // Between two calls: nothing of this partition is in flight.
                self.plugin = self.slot.borrow_and_update().clone();
                self.instance = None;
                self.consecutive_failures = 0;
                tracing::info!(digest = self.plugin.as_ref().map(|p| p.digest.as_str()), "plugin switched");
            }
            if self.plugin.is_none() || self.quarantined() {
                // Paused until an operator acts; keep the watermark exact.
                self.persist_watermark(true).await;
                tokio::select! {
                    _ = self.slot.changed() => {}
                    _ = self.shutdown.changed() => {}
                }
                continue;
            }
            if let Some(wait) = self.breaker_wait() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.shutdown.changed() => {}
                }
                continue;
            }
            if let Err(reason) = self.fill().await {
                self.part.halt(reason);
                break;
            }
            let batch = self.select();
            if batch.is_empty() {
                self.persist_watermark(true).await;
                let wait = self
                    .tracker(|t| t.next_due_ms())
                    .map(|due| Duration::from_millis(due.saturating_sub(now_ms()).max(1)));
                // A consumer process is not woken by appends (another
                // process makes them): it polls the durable end.
                let idle = match self.log.writer() {
                    Some(_) => Duration::from_secs(3600),
                    None => FOLLOW_POLL,
                };
                let sleep = tokio::time::sleep(wait.map_or(idle, |w| w.min(idle)));
                tokio::select! {
                    _ = self.part.notify.notified() => tokio::time::sleep(linger).await,
                    _ = sleep => {}
                    _ = self.shutdown.changed() => {}
                }
                continue;
            }
            let summary = self.deliver(batch).await;
            self.part.delivered.notify_waiters();
            self.adapt(summary);
            self.persist_watermark(false).await;
        }
        self.persist_watermark(true).await;
        tracing::info!("delivery stopped");
    }

    fn tracker<R>(&self, f: impl FnOnce(&mut Tracker) -> R) -> R {
        let mut guard = match self.part.tracker.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// While the breaker is open: how long until the probe.
    fn breaker_wait(&mut self) -> Option<Duration> {
        self.tracker(|t| match t.breaker {
            BreakerState::Open { until_ms } => {
                let now = now_ms();
                if now < until_ms {
                    return Some(Duration::from_millis(until_ms - now));
                }
                tracing::info!("circuit breaker half-open: probing the target with one message");
                t.breaker = BreakerState::HalfOpen;
                None
            }
            _ => None,
        })
    }

    /// Feeds one call's result to the breaker and the AIMD batch size.
    fn adapt(&mut self, call: CallSummary) {
        let cfg = &self.ns.cfg;
        self.failed_calls = if call.failed { self.failed_calls + 1 } else { 0 };
        let failed_calls = self.failed_calls;
        self.tracker(|t| {
            t.batch_limit = if call.throttled {
                (t.batch_limit / 2).max(1)
            } else {
                (t.batch_limit + 1).min(cfg.delivery.batch_max)
            };
            let open =
                call.failed && (t.breaker == BreakerState::HalfOpen || failed_calls >= cfg.breaker.failures);
            if open {
                let until_ms = now_ms() + cfg.breaker.cooldown_ms;
                if !matches!(t.breaker, BreakerState::Open { .. }) {
                    tracing::warn!(
                        failed_calls,
                        cooldown_ms = cfg.breaker.cooldown_ms,
                        "circuit breaker open"
                    );
                }
                t.breaker = BreakerState::Open { until_ms };
            } else if !call.failed && t.breaker != BreakerState::Closed {
                tracing::info!("circuit breaker closed");
                t.breaker = BreakerState::Closed;
            }
        });
    }

    fn quarantined(&self) -> bool {
        self.ns.plugin.lock().map(|p| p.state == "quarantined").unwrap_or(false)
    }

    /// Reads new records into the window, up to `max_in_flight`.
    async fn fill(&mut self) -> Result<(), String> {
        let max = self.ns.cfg.delivery.max_in_flight;
        // Delayed messages that are not due yet do not take window room, so
        // they never hold back the messages written after them.
        let (from, room) = self.tracker(|t| (t.next_read, max.saturating_sub(t.occupying_window(now_ms()))));
        if room == 0 || from >= self.log.next_seq() {
            return Ok(());
        }
        // Reads of acknowledged records are preads of recent, cached pages:
        // block in place rather than pay a blocking-pool round trip.
        let records =
            tokio::task::block_in_place(|| self.log.read(from, room, 16 << 20)).map_err(|e| e.to_string())?;
        let mut decoded = Vec::with_capacity(records.len());
        for r in records {
            let env = Envelope::decode(&r.payload).map_err(|e| {
                format!("record {} of partition {} does not decode: {e}", r.seq, self.part.index)
            })?;
            if let Some(t) = &env.transaction {
                // Its marker is in the log: the chunks must not expire.
                self.ns.txns.pin(&t.id);
            }
            decoded.push((r.seq, env));
        }
        self.tracker(|t| {
            for (seq, env) in decoded {
                let due_ms = env.deliver_at_ms.unwrap_or(0);
                if let Some(k) = &env.key {
                    t.keys.entry(k.clone()).or_default().push_back(seq);
                }
                t.pending.insert(
                    seq,
                    Pending { env, attempts: 0, due_ms, in_flight: false, failures: Vec::new() },
                );
                t.next_read = seq + 1;
            }
        });
        Ok(())
    }

    /// Picks the eligible messages (oldest first) and marks them in flight.
    fn select(&mut self) -> Vec<(u64, Message)> {
        let (ns, part) = (self.ns.name.clone(), self.part.index);
        self.tracker(|t| {
            let max = if t.breaker == BreakerState::HalfOpen { 1 } else { t.batch_limit.max(1) };
            let now = now_ms();
            // A transaction marker travels alone: it becomes a whole batch.
            let mut seqs: Vec<u64> = Vec::new();
            for (seq, p) in t.pending.iter().filter(|(seq, p)| t.is_eligible(**seq, p, now)) {
                let marker = p.env.transaction.is_some();
                if marker && !seqs.is_empty() {
                    break;
                }
                seqs.push(*seq);
                if marker || seqs.len() >= max {
                    break;
                }
            }
            seqs.into_iter()
                .filter_map(|seq| {
                    let p = t.pending.get_mut(&seq)?;
                    p.in_flight = true;
                    Some((seq, to_message(&ns, part, seq, p)))
                })
                .collect()
        })
    }

    async fn deliver(&mut self, batch: Vec<(u64, Message)>) -> CallSummary {
        let seqs: Vec<u64> = batch.iter().map(|(s, _)| *s).collect();
        let marker = match seqs.as_slice() {
            [seq] => self.tracker(|t| t.pending.get(seq).and_then(|p| p.env.transaction.clone())),
            _ => None,
        };
        let wit_batch = match (&marker, batch.as_slice()) {
            (Some(txn), [(seq, head)]) => {
                match Self::reassemble(self.ns.clone(), txn.clone(), head.clone()).await {
                    Ok(b) => b,
                    Err(reason) => {
                        // Nothing a retry could fix: keep it, visibly, in the DLQ.
                        self.dead_letter(*seq, "transaction", reason).await;
                        return CallSummary { failed: false, throttled: false };
                    }
                }
            }
            _ => Batch { messages: batch.into_iter().map(|(_, m)| m).collect(), transaction_id: None },
        };
        let started = Instant::now();
        let plugin = self.plugin.clone();
        let result = match (self.instance.as_mut(), plugin) {
            (Some(i), _) => i.deliver(&wit_batch).await,
            (None, Some(p)) => match p.instantiate().await {
                Ok(mut i) => {
                    let r = i.deliver(&wit_batch).await;
                    self.instance = Some(i);
                    r
                }
                Err(e) => Err(e),
            },
            (None, None) => Err(PluginError::Init("no plugin installed".into())),
        };
        // A transaction has one outcome, for its marker.
        let result = match marker {
            Some(_) => result.map(|outcomes| vec![transaction_outcome(outcomes)]),
            None => result,
        };
        let elapsed = started.elapsed();
        tracing::debug!(messages = seqs.len(), elapsed_us = elapsed.as_micros() as u64, "plugin call");
        let slow = elapsed > Duration::from_millis(self.ns.cfg.delivery.slow_call_ms);
        let m = metrics::get();
        let label = metrics::ns(&self.ns.name);
        m.plugin_call_latency.get_or_create(&label).observe(elapsed.as_secs_f64());
        m.plugin_batch_size.get_or_create(&label).observe(seqs.len() as f64);
        match result {
            Ok(outcomes) => {
                self.consecutive_failures = 0;
                let failed = outcomes.iter().all(|o| matches!(o, Outcome::Retry(_)));
                let pushed_back =
                    outcomes.iter().any(|o| matches!(o, Outcome::Retry(r) if r.after_ms.is_some()));
                // Delivered messages first, under one lock, metrics per batch.
                let mut rest = Vec::new();
                let now = now_ms();
                let mut transactions = Vec::new();
                let latencies: Vec<u64> = self.tracker(|t| {
                    let mut lat = Vec::new();
                    for (seq, outcome) in seqs.into_iter().zip(outcomes) {
                        if matches!(outcome, Outcome::Delivered) {
                            t.delivered_total += 1;
                            if let Some(p) = t.finish(seq) {
                                lat.push(now.saturating_sub(p.env.written_at_ms));
                                transactions.extend(p.env.transaction.map(|t| t.id));
                            }
                        } else {
                            rest.push((seq, outcome));
                        }
                    }
                    lat
                });
                for id in transactions {
                    Self::drop_chunks(self.ns.clone(), id, "delivered").await;
                }
                m.delivered.get_or_create(&label).inc_by(latencies.len() as u64);
                {
                    let hist = m.delivery_latency.get_or_create(&label);
                    latencies.iter().for_each(|ms| hist.observe(*ms as f64 / 1000.0));
                }
                for (seq, outcome) in rest {
                    match outcome {
                        Outcome::Delivered => {}
                        Outcome::Reject(reason) => self.dead_letter(seq, "reject", reason).await,
                        Outcome::Retry(r) => {
                            self.retry_later(seq, "retry", r.reason, r.after_ms.map(Duration::from_millis))
                                .await
                        }
                    }
                }
                CallSummary { failed, throttled: failed || pushed_back || slow }
            }
            Err(e) => {
                let kind = match &e {
                    PluginError::Trap(_) => "trap",
                    PluginError::Deadline(_) => "deadline",
                    PluginError::WrongCount { .. } => "wrong_count",
                    PluginError::Init(_) => "init",
                    _ => "load",
                };
                tracing::warn!(error = %e, kind, messages = seqs.len(), "plugin call failed; instance discarded, batch will be retried");
                self.instance = None;
                self.consecutive_failures += 1;
                m.plugin_failures.get_or_create(&metrics::ns_kind(&self.ns.name, kind)).inc();
                let limit = self.ns.cfg.target.quarantine_after;
                if self.consecutive_failures >= limit {
                    let reason = format!("{limit} consecutive plugin failures, last: {e}");
                    tracing::error!(%reason, "plugin quarantined; namespace delivery paused");
                    m.plugin_quarantines.get_or_create(&label).inc();
                    if let Ok(mut p) = self.ns.plugin.lock() {
                        p.state = "quarantined";
                        p.reason = Some(reason);
                    }
                }
                for seq in seqs {
                    self.retry_later(seq, kind, e.to_string(), None).await;
                }
                CallSummary { failed: true, throttled: true }
            }
        }
    }

    /// Schedules another attempt, or dead-letters when attempts run out.
    async fn retry_later(&mut self, seq: u64, kind: &'static str, reason: String, after: Option<Duration>) {
        let policy = &self.ns.cfg.retry;
        let exhausted = self.tracker(|t| {
            let Some(p) = t.pending.get_mut(&seq) else { return false };
            p.attempts += 1;
            p.in_flight = false;
            p.failures.push(Failure {
                attempt: p.attempts,
                at_ms: now_ms(),
                kind: kind.into(),
                reason: reason.clone(),
            });
            if p.attempts >= policy.max_attempts {
                return true;
            }
            let ceiling = policy.ceiling(p.attempts).as_millis() as u64;
            let jitter = rand::rng().random_range(0..=ceiling);
            let wait = jitter.max(after.map(|a| a.as_millis() as u64).unwrap_or(0));
            p.due_ms = now_ms() + wait;
            t.retries_total += 1;
            false
        });
        if !exhausted {
            metrics::get().retries.get_or_create(&metrics::ns_kind(&self.ns.name, kind)).inc();
        }
        if exhausted {
            self.dead_letter(
                seq,
                "exhausted",
                format!("gave up after {} attempts: {reason}", policy.max_attempts),
            )
            .await;
        }
    }

    /// Makes the DLQ entry durable, then finishes the message. If the DLQ
    /// write fails the message stays in the window and is retried.
    async fn dead_letter(&mut self, seq: u64, kind: &'static str, reason: String) {
        let entry = self.tracker(|t| {
            let p = t.pending.get_mut(&seq)?;
            p.in_flight = false;
            if kind == "reject" {
                p.attempts += 1;
                p.failures.push(Failure {
                    attempt: p.attempts,
                    at_ms: now_ms(),
                    kind: kind.into(),
                    reason: reason.clone(),
                });
            }
            Some(DlqEntry {
                message_id: message_id(self.part.index, seq),
                partition: self.part.index,
                sequence: seq,
                envelope: p.env.clone(),
                failures: p.failures.clone(),
                plugin_digest: self.plugin.as_ref().map(|p| p.digest.clone()).unwrap_or_default(),
                dead_lettered_at_ms: now_ms(),
            })
        });
        let Some(mut entry) = entry else { return };
        let id = entry.message_id.clone();
        // A transaction's DLQ entry carries its chunks, so that it outlives
        // the chunk store's file and can be replayed whole.
        let mut parked = None;
        if let Some(txn) = entry.envelope.transaction.as_mut()
            && txn.inline.is_empty()
        {
            let (store, txn_id, chunks) = (self.ns.txns.clone(), txn.id.clone(), txn.chunks);
            match tokio::task::spawn_blocking(move || store.load_chunks(&txn_id, chunks)).await {
                Ok(Ok(c)) => txn.inline = c,
                Ok(Err(e)) => entry.failures.push(Failure {
                    attempt: entry.failures.len() as u32 + 1,
                    at_ms: now_ms(),
                    kind: "transaction".into(),
                    reason: format!("chunks not copied into the DLQ entry: {e}"),
                }),
                Err(e) => tracing::error!(message_id = %id, error = %e, "chunk reader panicked"),
            }
            parked = Some(txn.id.clone());
        }
        // Always present where an engine runs (a delivering process).
        let dlq = self.ns.dlq.clone();
        let pushed = move || match dlq {
            Some(d) => d.push(entry).map_err(|e| e.to_string()),
            None => Err("this process has no DLQ".to_string()),
        };
        match tokio::task::spawn_blocking(pushed).await {
            Ok(Ok(())) => {
                if let Some(txn) = parked {
                    Self::drop_chunks(self.ns.clone(), txn, "dead_lettered").await;
                }
                tracing::warn!(message_id = %id, %reason, "message dead-lettered");
                self.tracker(|t| {
                    t.finish(seq);
                    t.dead_lettered_total += 1;
                });
                metrics::get().dead_lettered.get_or_create(&metrics::ns_kind(&self.ns.name, kind)).inc();
            }
            Ok(Err(e)) => {
                tracing::error!(message_id = %id, error = %e, "dlq write failed; message stays pending");
                self.tracker(|t| {
                    if let Some(p) = t.pending.get_mut(&seq) {
                        p.due_ms = now_ms() + 1000;
                    }
                });
            }
            Err(e) => tracing::error!(message_id = %id, error = %e, "dlq writer panicked"),
        }
    }

    /// The batch of a transaction: its chunks in sequence order (from the
    /// marker itself after a DLQ replay, else from the chunk store), each a
    /// message that shares the marker's position and key.
    async fn reassemble(ns: Arc<Namespace>, txn: TxnMarker, head: Message) -> Result<Batch, String> {
        let chunks = if txn.inline.is_empty() {
            let (store, id, n) = (ns.txns.clone(), txn.id.clone(), txn.chunks);
            tokio::task::spawn_blocking(move || store.load_chunks(&id, n))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| {
                tracing::error!(transaction = %txn.id, error = %e, "transaction chunks cannot be read");
                format!("transaction {} cannot be reassembled: {e}", txn.id)
            })?
        } else {
            txn.inline
        };
        let messages = chunks
            .into_iter()
            .map(|c| Message {
                id: format!("{}/{}", head.id, c.seq),
                payload: c.payload,
                headers: c.headers,
                idempotency_key: Some(format!("{}/{}", txn.id, c.seq)),
                ..head.clone()
            })
            .collect();
        Ok(Batch { messages, transaction_id: Some(txn.id.clone()) })
    }

    /// Deletes a finished transaction's parked chunks. A failure leaves the
    /// file for the sweep at the next start (it is below the watermark).
    async fn drop_chunks(ns: Arc<Namespace>, id: String, outcome: &'static str) {
        let store = ns.txns.clone();
        let txn = id.clone();
        match tokio::task::spawn_blocking(move || store.remove(&txn)).await {
            Ok(Ok(())) => {
                if outcome == "delivered" {
                    let label = metrics::ns_kind(&ns.name, "delivered");
                    metrics::get().transactions.get_or_create(&label).inc();
                }
                tracing::debug!(transaction = %id, outcome, "transaction chunks deleted");
            }
            Ok(Err(e)) => {
                tracing::error!(transaction = %id, error = %e, "transaction chunks not deleted; swept at next start")
            }
            Err(e) => tracing::error!(transaction = %id, error = %e, "chunk deleter panicked"),
        }
    }

    /// Persists the watermark if it moved (rate-limited unless `force`).
    async fn persist_watermark(&mut self, force: bool) {
        let wm = self.tracker(|t| t.watermark());
        if wm <= self.persisted_watermark || (!force && self.last_persist.elapsed() < WATERMARK_EVERY) {
            return;
        }
        let log = self.log.clone();
        match tokio::task::spawn_blocking(move || log.advance_watermark(wm)).await {
            Ok(Ok(())) => {
                self.persisted_watermark = wm;
                self.last_persist = Instant::now();
            }
            Ok(Err(e)) => tracing::error!(watermark = wm, error = %e, "watermark not persisted; will retry"),
            Err(e) => tracing::error!(error = %e, "watermark writer panicked"),
        }
    }
}

/// One outcome for a whole transaction: any reject rejects it, else any
/// retry retries it (after the longest wait asked for), else delivered.
fn transaction_outcome(outcomes: Vec<Outcome>) -> Outcome {
    let mut retry: Option<RetryOutcome> = None;
    for (i, o) in outcomes.into_iter().enumerate() {
        match o {
            Outcome::Delivered => {}
            Outcome::Reject(reason) => return Outcome::Reject(format!("chunk {i}: {reason}")),
            Outcome::Retry(r) => {
                let after_ms = r.after_ms.max(retry.as_ref().and_then(|p| p.after_ms));
                retry = Some(RetryOutcome { reason: format!("chunk {i}: {}", r.reason), after_ms });
            }
        }
    }
    retry.map_or(Outcome::Delivered, Outcome::Retry)
}

fn to_message(ns: &str, partition: u32, seq: u64, p: &Pending) -> Message {
    Message {
        id: message_id(partition, seq),
        namespace: ns.to_string(),
        partition,
        sequence: seq,
        key: p.env.key.clone(),
        payload: p.env.payload.clone(),
        headers: p.env.headers.clone(),
        idempotency_key: p.env.idempotency_key.clone(),
        attempt: p.attempts + 1,
        replays: p.env.replays,
        written_at_ms: p.env.written_at_ms,
    }
}
