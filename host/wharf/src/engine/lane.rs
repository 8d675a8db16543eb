//! The delivery loop of one lane: one target × one stream (a partition of
//! the embedded log, or the consumer of a Kafka/SQS queue). The same code
//! for every queue kind; only the [`Source`] differs.
//!
//! Invariants:
//! - A message leaves the window only when the target confirmed it
//!   (`delivered`) or its DLQ entry is durable; only then is its source
//!   reservation released (log cursor, Kafka offset, SQS receipt). A crash
//!   at any point re-delivers instead of losing (at-least-once).
//! - Per-key order (see `window.rs`): a retry is held in the window, with
//!   its reservation, and holds back later messages of its key only.
//! - A trap, a deadline or a wrong outcome count throws the instance away
//!   and schedules every message of the batch for a retry.
//! - A transaction marker is delivered alone: its chunks, read back from
//!   the chunk store in sequence order, are one batch flagged with the
//!   transaction id, and the whole batch has one outcome (any reject
//!   rejects it, else any retry retries it).

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::watch;

use super::held_instance::HeldInstance;
use super::read_ahead::ReadAhead;
use crate::clock::{engine_ms, now_ms};
use crate::config::Ordering;
use crate::engine::breaker::{Breaker, CallSummary, Transition};
use crate::engine::namespace::Namespace;
use crate::engine::source::{Pulled, Source};
use crate::engine::target::{Lane, MoveRefused, PluginState, RewindRefused, TargetRt};
use crate::engine::window::{KeyCap, OverCap, Pending, Window};
use crate::metrics;
use crate::plugin::{Batch, Message, Outcome, Plugin, PluginError, RetryOutcome};
use crate::storage::dlq::{DlqEntry, Failure, FailureKind};
use crate::storage::envelope::TxnMarker;
use crate::storage::halts::Halt;
use crate::storage::rewind::{self, Rewind};

/// Persist the watermark at most this often while busy.
const WATERMARK_EVERY: Duration = Duration::from_millis(200);

/// Longest idle wait before looking at the source again.
const IDLE: Duration = Duration::from_millis(500);

pub struct Engine {
    ns: Arc<Namespace>,
    target: Arc<TargetRt>,
    lane: Arc<Lane>,
    source: Option<Source>,
    /// The target's plugin slot and the plugin taken from it.
    slot: watch::Receiver<Option<Plugin>>,
    plugin: Option<Plugin>,
    instance: Option<HeldInstance>,
    shutdown: watch::Receiver<bool>,
    /// Calls in a row that failed as a whole without one message to blame
    /// (init, load, wrong outcome count): the quarantine counter.
    consecutive_failures: u32,
    /// Distinct messages that trapped the plugin alone since the last call
    /// that settled anything: the other quarantine counter.
    trapped_alone: std::collections::HashSet<String>,
    breaker: Breaker,
    persisted_watermark: u64,
    last_persist: Instant,
    /// A transaction finished since the last checkpoint (several targets:
    /// its chunks go once every target is past it).
    finished_transaction: bool,
    /// Queue messages that are not envelopes, whose DLQ write failed: they
    /// stay in flight (never reach the plugin) and the write is retried.
    undecodable: Vec<u64>,
    /// `ordering = "partition"` on the log: contiguous runs, retries never
    /// give up, each message carries its stored record (a mirror).
    strict: bool,
    /// Records read while the last call waited (`read_ahead.rs`).
    ahead: Option<ReadAhead>,
}

impl Engine {
    /// `start` is the first sequence the source will hand over.
    pub fn new(
        ns: Arc<Namespace>,
        target: Arc<TargetRt>,
        lane: Arc<Lane>,
        source: Source,
        start: u64,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let strict = matches!(source, Source::Log(_)) && target.cfg.target.ordering == Ordering::Partition;
        let over = match source {
            Source::Log(_) => OverCap::Defer,
            Source::Queue(_) => OverCap::Hold,
        };
        let window = Window::starting_at(start, ns.cfg.delivery.batch_max);
        // Strict order sends nothing past a blocked message anyway.
        let window = match strict {
            true => window,
            false => window.with_key_cap(KeyCap::for_lane(ns.cfg.delivery.max_in_flight, over)),
        };
        lane.with(|w| *w = window);
        let mut slot = target.slot.subscribe();
        let plugin = slot.borrow_and_update().clone();
        Self {
            ns,
            target,
            lane,
            source: Some(source),
            slot,
            plugin,
            instance: None,
            shutdown,
            consecutive_failures: 0,
            trapped_alone: std::collections::HashSet::new(),
            breaker: Breaker::default(),
            persisted_watermark: start,
            last_persist: Instant::now(),
            finished_transaction: false,
            undecodable: Vec::new(),
            strict,
            ahead: None,
        }
    }

    fn source(&mut self) -> &mut Source {
        // Present until `run` ends.
        self.source.as_mut().unwrap_or_else(|| unreachable!("source taken"))
    }

    fn halted(&self) -> bool {
        match self.source.as_ref() {
            Some(Source::Log(s)) => s.part.halted_reason().is_some(),
            _ => false,
        }
    }

    /// An operator must act first: the plugin halted this lane, or
    /// replication into this replica partition halted.
    fn paused_by_halt(&self) -> bool {
        let replica_halted = match self.source.as_ref() {
            Some(Source::Log(s)) => s.part.replica_halt().is_some(),
            _ => false,
        };
        replica_halted || self.lane.halted().is_some()
    }

    #[tracing::instrument(name = "delivery", skip_all, fields(namespace = %self.ns.name, target = %self.target.name, lane = self.lane.index))]
    pub async fn run(mut self) {
        let linger = Duration::from_millis(self.ns.cfg.delivery.linger_ms);
        while !(*self.shutdown.borrow() || self.halted() || self.ns.is_removed()) {
            self.switch_plugin_if_changed();
            // The larger steps are boxed: an idle lane's task then holds
            // only this loop's state, not the biggest step's (issue 18:
            // thousands of idle lanes).
            Box::pin(self.handle_moves()).await;
            Box::pin(self.handle_rewinds()).await;
            if self.plugin.is_none() || self.target.quarantined() || self.paused_by_halt() {
                // Paused until an operator acts; keep the watermark exact.
                Box::pin(self.persist_watermark(true)).await;
                // `changed()` marks the new value seen: take it right here,
                // or `has_changed` would say no and the lane stay paused.
                tokio::select! {
                    Ok(()) = self.slot.changed() => self.take_plugin(),
                    _ = self.shutdown.changed() => {}
                    _ = self.lane.poke.notified() => {}
                }
                continue;
            }
            if let Some(wait) = self.breaker_wait() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.shutdown.changed() => {}
                    _ = self.lane.poke.notified() => {}
                }
                continue;
            }
            let pulled = match Box::pin(self.fill()).await {
                Ok(n) => n,
                Err(reason) => {
                    if let Some(Source::Log(s)) = &self.source {
                        s.part.halt(reason);
                    }
                    break;
                }
            };
            let mut batch = self.select();
            if batch.is_empty() && pulled > 0 && !linger.is_zero() {
                // Something arrived: give the batch a moment to fill.
                tokio::time::sleep(linger).await;
                Box::pin(self.fill()).await.ok();
                batch = self.select();
            }
            if batch.is_empty() {
                self.drop_idle_instance();
                Box::pin(self.persist_watermark(true)).await;
                continue;
            }
            // The pull may have waited: a plugin registered meanwhile takes
            // this batch.
            self.switch_plugin_if_changed();
            if self.plugin.is_none() {
                // Removed meanwhile: the batch waits for the next plugin.
                let seqs: Vec<u64> = batch.iter().map(|(seq, _)| *seq).collect();
                self.give_back(batch);
                self.lane.with(|w| seqs.iter().for_each(|seq| w.postpone(*seq, 0)));
                continue;
            }
            let summary = Box::pin(self.deliver(batch)).await;
            self.lane.delivered.notify_waiters();
            self.adapt(summary);
            Box::pin(self.persist_watermark(false)).await;
        }
        Box::pin(self.persist_watermark(true)).await;
        // Rewinds that came too late are answered `lane_stopped`.
        drop(self.lane.take_rewinds());
        if let Some(source) = self.source.take() {
            Box::pin(source.close()).await;
        }
        tracing::info!("delivery stopped");
    }

    /// Operator moves to the DLQ, between two calls (nothing is in flight).
    async fn handle_moves(&mut self) {
        for req in self.lane.take_moves() {
            let found = self.lane.with(|w| match w.seq_of(&req.message_id) {
                Some(seq) => Ok(seq),
                None => match crate::storage::envelope::parse_message_id(&req.message_id) {
                    Some((_, seq)) if w.get(seq).is_some() => Ok(seq),
                    Some((_, seq)) if w.is_finished(seq) => Err(MoveRefused::Finished),
                    _ if w.finished_lately(&req.message_id) => Err(MoveRefused::Finished),
                    _ => Err(MoveRefused::NotInWindow),
                },
            });
            let result = match found {
                Ok(seq) => {
                    let reason = format!("moved by an operator: {}", req.reason);
                    self.lane.with(|w| w.reject(seq, FailureKind::Operator, now_ms(), reason.clone()));
                    self.dead_letter(seq, FailureKind::Operator, reason).await;
                    match self.lane.with(|w| w.get(seq).is_none()) {
                        true => Ok(()),
                        false => Err(MoveRefused::DlqFailed),
                    }
                }
                Err(refused) => Err(refused),
            };
            let _ = req.reply.send(result);
        }
    }

    /// Operator rewinds, between two calls (nothing is in flight).
    async fn handle_rewinds(&mut self) {
        for req in self.lane.take_rewinds() {
            let result = self.begin_rewind(req.from).await;
            let _ = req.reply.send(result);
        }
    }

    /// Re-reads the log from `from` (at most the watermark: an unfinished
    /// message is never skipped). Everything read before the rewind began
    /// is a replay. The log keeps history from the rewind's position on;
    /// the rewind file is durable before the window moves.
    async fn begin_rewind(&mut self, from: u64) -> Result<Rewind, RewindRefused> {
        let Some(Source::Log(src)) = self.source.as_ref() else {
            return Err(RewindRefused::NotLog);
        };
        let (part, log) = (src.part.clone(), src.log.clone());
        let (watermark, next_read) = self.lane.with(|w| (w.watermark(), w.next_read()));
        let previous = self.lane.rewind();
        let rewind = Rewind {
            position: from.min(watermark),
            end: previous.map_or(next_read, |r| r.end.max(next_read)),
        };
        let target = self.target.name.clone();
        // Hold first, then look: a GC that runs from now on keeps it.
        part.hold_history(&target, Some(rewind.position));
        let first = log.first_seq();
        let stored = match rewind.position < first {
            true => Err(RewindRefused::NotRetained { first }),
            false => {
                let path = rewind::path(&self.target.dir, self.lane.index);
                tokio::task::spawn_blocking(move || rewind::store(&path, rewind))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .map_err(RewindRefused::Io)
            }
        };
        if let Err(refused) = stored {
            part.hold_history(&target, previous.map(|r| r.position));
            return Err(refused);
        }
        self.lane.set_rewind(Some(rewind));
        self.lane.with(|w| w.rewind_to(rewind.position));
        self.persisted_watermark = rewind.position;
        tracing::warn!(position = rewind.position, end = rewind.end, "rewind: re-delivering history");
        Ok(rewind)
    }

    /// A rewind moves with the watermark: its file and the log's history
    /// floor follow it, and once it reaches the end the rewind is over.
    async fn advance_rewind(&mut self, watermark: u64) {
        let Some(r) = self.lane.rewind() else { return };
        let Some(Source::Log(src)) = self.source.as_ref() else { return };
        let part = src.part.clone();
        let path = rewind::path(&self.target.dir, self.lane.index);
        let next = (watermark < r.end).then_some(Rewind { position: watermark, end: r.end });
        if next.is_some_and(|n| n.position <= r.position) {
            return;
        }
        let written = tokio::task::spawn_blocking(move || match next {
            Some(n) => rewind::store(&path, n),
            None => rewind::clear(&path),
        })
        .await;
        match written {
            Ok(Ok(())) => {
                part.hold_history(&self.target.name, next.map(|n| n.position));
                self.lane.set_rewind(next);
                if next.is_none() {
                    tracing::info!(end = r.end, "rewind finished: history re-delivered");
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "rewind progress not persisted; will retry"),
            Err(e) => tracing::error!(error = %e, "rewind progress not persisted; will retry"),
        }
    }

    /// Takes a new plugin from the slot, between two calls (nothing of this
    /// lane is in flight).
    fn switch_plugin_if_changed(&mut self) {
        if self.slot.has_changed().unwrap_or(false) {
            self.take_plugin();
        }
    }

    /// Takes the slot's plugin (marking it seen), with fresh failure counts.
    fn take_plugin(&mut self) {
        self.plugin = self.slot.borrow_and_update().clone();
        self.instance = None;
        self.consecutive_failures = 0;
        self.trapped_alone.clear();
        if let Some(p) = &self.plugin
            && let Err(e) = self.target.traps.plugin_is(&p.digest)
        {
            tracing::error!(error = %e, "trap counts of the previous plugin not dropped; they still count");
        }
        tracing::info!(digest = self.plugin.as_ref().map(|p| p.digest.as_str()), "plugin switched");
    }

    /// While the breaker is open: how long until the probe.
    fn breaker_wait(&mut self) -> Option<Duration> {
        let wait = self.lane.with(|w| Breaker::wait_ms(&mut w.breaker, engine_ms()));
        if wait.is_none() && self.lane.with(|w| w.breaker == super::breaker::BreakerState::HalfOpen) {
            tracing::debug!("circuit breaker half-open: probing the target with one message");
        }
        wait.map(Duration::from_millis)
    }

    /// Feeds one call's result to the breaker and the AIMD batch size.
    fn adapt(&mut self, call: CallSummary) {
        let cfg = &self.ns.cfg;
        let breaker = &mut self.breaker;
        let t = self.lane.with(|w| {
            breaker.adapt(
                call,
                &mut w.breaker,
                &mut w.batch_limit,
                (&cfg.breaker, &cfg.delivery),
                engine_ms(),
            )
        });
        match t {
            Transition::Opened { failed_calls } => {
                tracing::warn!(failed_calls, cooldown_ms = cfg.breaker.cooldown_ms, "circuit breaker open")
            }
            Transition::Closed => tracing::info!("circuit breaker closed"),
            Transition::None => {}
        }
    }

    /// Takes new messages from the source into the window, up to
    /// `max_in_flight`, after reading again the deferred messages of keys
    /// that have room. Waits (up to the next due retry, or [`IDLE`]) only
    /// when nothing in the window is eligible now. Returns how many came.
    async fn fill(&mut self) -> Result<usize, String> {
        let reread = self.reread()?;
        let ahead = self.admit_read_ahead().await;
        let (from, room, wait) = self.pull_plan(engine_ms());
        if ahead > 0 && room == 0 {
            return Ok(reread + ahead);
        }
        if !wait.is_zero() && self.source().would_wait(from, room) {
            // Caught up: the watermark is made exact before the lane waits
            // (status, a restart and the log's GC read it), not one idle
            // wait later.
            self.persist_watermark(true).await;
        }
        let target = self.target.name.clone();
        let mut shutdown = self.shutdown.clone();
        let pulled = tokio::select! {
            p = self.source().pull(from, room, wait, &target) => p,
            _ = shutdown.changed() => return Ok(0),
        };
        let pulled = match pulled {
            Ok(p) => p,
            // The mirror cannot prove these records: this target halts on
            // this partition; writes and other targets go on.
            Err(e @ crate::engine::source::SourceError::Chain { .. }) => {
                if self.lane.halted().is_none() {
                    self.halt_lane(Vec::new(), e.to_string()).await;
                }
                return Ok(0);
            }
            Err(e) => return Err(e.to_string()),
        };
        Ok(reread + ahead + self.admit(pulled).await)
    }

    /// Admits what was read ahead, up to the window's room (see
    /// `read_ahead.rs`). Returns how many messages came.
    async fn admit_read_ahead(&mut self) -> usize {
        let Some(ahead) = self.ahead.take() else { return 0 };
        let (next_read, room) = self.lane.with(|w| (w.next_read(), self.room_in(w, engine_ms())));
        let (now, rest) = ahead.take(next_read, room);
        self.ahead = rest;
        match now.is_empty() {
            true => 0,
            false => self.admit(now).await,
        }
    }

    /// Takes pulled messages into the window (one window lock for all);
    /// what is not an envelope goes to the DLQ. Returns how many came.
    async fn admit(&mut self, mut pulled: Vec<Pulled>) -> usize {
        let mut undecodable = std::mem::take(&mut self.undecodable);
        let mut count = 0;
        self.prepare_all(&mut pulled);
        // One window lock per pull, not per message.
        self.lane.with(|w| {
            for item in pulled {
                match item {
                    Pulled::Skip(seq) => w.skip_to(seq + 1),
                    Pulled::Settled(id) => w.remember_finished(id),
                    Pulled::Message(seq, pending) => {
                        if pending.failures.iter().any(|f| f.kind == FailureKind::Decode.as_str()) {
                            undecodable.push(seq);
                        }
                        w.admit(seq, pending);
                        count += 1;
                    }
                }
            }
        });
        for seq in undecodable {
            self.lane.with(|w| w.mark_in_flight(&[seq]));
            self.dead_letter(seq, FailureKind::Decode, "not a wharf envelope".into()).await;
        }
        count
    }

    /// Messages as they enter the window: their trap counts, their replay
    /// flags, their transactions' chunks pinned. The rewind and whether any
    /// trap is counted are read once per pull.
    fn prepare_all(&self, pulled: &mut [Pulled]) {
        let replayed_below = self.lane.rewind().map(|r| r.end);
        let any_traps = !self.target.traps.is_empty();
        for item in pulled {
            let Pulled::Message(seq, pending) = item else { continue };
            if any_traps {
                pending.traps = self.target.traps.get(&pending.id);
            }
            if replayed_below.is_some_and(|end| *seq < end) {
                // Delivered before: a rewind's replay (`replays`).
                pending.env.replays = pending.env.replays.saturating_add(1);
            }
            if let Some(t) = &pending.env.transaction {
                // Its marker is in the log: the chunks must not expire.
                self.ns.txns.pin(&t.id);
            }
        }
    }

    /// Reads again the deferred messages of keys that have room (log
    /// lanes). Returns how many joined the window.
    fn reread(&mut self) -> Result<usize, String> {
        let seqs = self.lane.with(|w| w.to_reread());
        if seqs.is_empty() {
            return Ok(0);
        }
        let target = self.target.name.clone();
        let mut pulled = self.source().reread(&seqs, &target).map_err(|e| e.to_string())?;
        self.prepare_all(&mut pulled);
        let mut count = 0;
        self.lane.with(|w| {
            for item in pulled {
                match item {
                    Pulled::Message(seq, pending) => count += usize::from(w.readmit(seq, pending)),
                    Pulled::Skip(seq) => w.drop_deferred(seq),
                    Pulled::Settled(_) => {}
                }
            }
        });
        Ok(count)
    }

    /// Where the next pull starts, the window room it may fill, and how long
    /// it may wait for news: not at all while something is due.
    fn pull_plan(&self, now: u64) -> (u64, usize, Duration) {
        let (from, room, next_due) =
            self.lane.with(|w| (w.next_read(), self.room_in(w, now), w.next_due_ms()));
        let wait = match next_due {
            Some(due) if due <= now => Duration::ZERO,
            Some(due) => Duration::from_millis(due - now).min(IDLE),
            None => IDLE,
        };
        (from, room, wait)
    }

    /// How many more messages `w` may take (`max_in_flight`). Delayed
    /// messages that are not due yet take no room, so they never hold back
    /// the messages written after them.
    fn room_in(&self, w: &Window, now: u64) -> usize {
        self.ns.cfg.delivery.max_in_flight.saturating_sub(w.occupying(now))
    }

    /// Picks the eligible messages (oldest first; one probe while the
    /// breaker is half-open) and marks them in flight.
    fn select(&mut self) -> Vec<(u64, Message)> {
        let ns = self.ns.name.clone();
        let strict = self.strict;
        self.lane.with(|w| {
            let now = engine_ms();
            let half_open = w.breaker == super::breaker::BreakerState::HalfOpen;
            let max = if half_open { 1 } else { w.batch_limit.max(1) };
            let seqs = match (strict, half_open) {
                (true, _) => w.select_run(now, max),
                (false, true) => w.select_probe(now),
                (false, false) => w.select(now, max),
            };
            seqs.into_iter().filter_map(|seq| Some((seq, lend(&ns, seq, w.get_mut(seq)?)))).collect()
        })
    }

    /// Puts back into the window what [`lend`] moved into the call's
    /// messages: from here on the window's messages are whole again.
    fn give_back(&self, lent: impl IntoIterator<Item = (u64, Message)>) {
        self.lane.with(|w| {
            for (seq, m) in lent {
                if let Some(p) = w.get_mut(seq) {
                    take_back(p, m);
                }
            }
        });
    }

    async fn deliver(&mut self, batch: Vec<(u64, Message)>) -> CallSummary {
        let seqs: Vec<u64> = batch.iter().map(|(s, _)| *s).collect();
        let spans =
            crate::otel::DeliverySpans::start(&self.ns.name, &self.target.name, batch.iter().map(|(_, m)| m));
        let marker = match seqs.as_slice() {
            [seq] => self.lane.with(|w| w.get(*seq).and_then(|p| p.env.transaction.clone())),
            _ => None,
        };
        // Only a marker's head is copied (it travels alone).
        let marker_head = marker.as_ref().and_then(|_| batch.first().cloned());
        let wit_batch = match (&marker, marker_head) {
            (Some(txn), Some((seq, head))) => {
                // A marker travels alone; its chunks make the call's batch.
                self.give_back(batch);
                if self.strict {
                    // Its chunks are not in the log: a mirror cannot carry it.
                    let reason = "unsupported: a transaction is not replicated (docs/replication.md); resume after moving it to the DLQ".to_string();
                    self.halt_lane(vec![seq], reason).await;
                    return CallSummary::SETTLED;
                }
                match reassemble(self.ns.clone(), txn.clone(), head).await {
                    Ok(b) => b,
                    Err(reason) => {
                        // Nothing a retry could fix: keep it, visibly, in the DLQ.
                        self.dead_letter(seq, FailureKind::Transaction, reason).await;
                        return CallSummary::SETTLED;
                    }
                }
            }
            _ => Batch { messages: batch.into_iter().map(|(_, m)| m).collect(), transaction_id: None },
        };
        let started = Instant::now();
        let result = self.call_reading_ahead(&wit_batch).await;
        if marker.is_none() {
            self.give_back(seqs.iter().copied().zip(wit_batch.messages));
        }
        // A transaction has one outcome, for its marker.
        let result = match marker {
            Some(_) => result.map(|outcomes| vec![transaction_outcome(outcomes)]),
            None => result,
        };
        spans.finish(&result);
        let elapsed = started.elapsed();
        tracing::debug!(messages = seqs.len(), elapsed_us = elapsed.as_micros() as u64, "plugin call");
        let slow = elapsed > Duration::from_millis(self.ns.cfg.delivery.slow_call_ms);
        let label = self.label();
        let m = metrics::get();
        m.plugin_call_latency.get_or_create(&label).observe(elapsed.as_secs_f64());
        m.plugin_batch_size.get_or_create(&label).observe(seqs.len() as f64);
        match result {
            Ok(outcomes) => self.settle(seqs, outcomes, slow).await,
            Err(e) => self.call_failed(seqs, e).await,
        }
    }

    /// Nothing to deliver: an instance unused for `instance_idle_ms` goes
    /// (see `held_instance.rs`).
    fn drop_idle_instance(&mut self) {
        let idle = Duration::from_millis(self.ns.cfg.delivery.instance_idle_ms);
        if self.instance.as_ref().is_some_and(|i| i.unused_for(idle)) {
            tracing::debug!("plugin instance idle: dropped");
            self.instance = None;
        }
    }

    /// [`Self::call`]; once the call waits on its target, a log lane reads
    /// its next records meanwhile (`read_ahead.rs`), unless it still holds
    /// some read ahead.
    async fn call_reading_ahead(&mut self, batch: &Batch) -> Result<Vec<Outcome>, PluginError> {
        if self.ahead.is_some() || !matches!(self.source, Some(Source::Log(_))) {
            return self.call(batch).await;
        }
        let (from, n) = self.lane.with(|w| (w.next_read(), w.batch_limit.max(1)));
        let source = self.source.take();
        let target = self.target.clone();
        let (result, read) = {
            let mut call = std::pin::pin!(self.call(batch));
            match std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await {
                Poll::Ready(result) => (result, None),
                Poll::Pending => {
                    let read = source.as_ref().and_then(|s| s.read_ahead(from, n, &target.name));
                    (call.await, read)
                }
            }
        };
        self.source = source;
        self.ahead = read.and_then(|pulled| ReadAhead::new(from, pulled));
        result
    }

    /// One `deliver` call on the current instance (instantiated on demand).
    async fn call(&mut self, batch: &Batch) -> Result<Vec<Outcome>, PluginError> {
        if let Some(i) = self.instance.as_mut() {
            return i.use_now().deliver(batch).await;
        }
        let Some(p) = self.plugin.clone() else {
            return Err(PluginError::Init("no plugin installed".into()));
        };
        let i = p.instantiate().await?;
        let held = metrics::get().plugin_instances.get_or_create(&self.label()).clone();
        let i = self.instance.insert(HeldInstance::new(i, held));
        i.use_now().deliver(batch).await
    }

    /// Applies the plugin's outcomes: delivered messages leave the window,
    /// rejects go to the DLQ, retries are scheduled.
    async fn settle(&mut self, seqs: Vec<u64>, outcomes: Vec<Outcome>, slow: bool) -> CallSummary {
        self.consecutive_failures = 0;
        if outcomes.iter().any(|o| !matches!(o, Outcome::Retry(_))) {
            self.trapped_alone.clear();
        }
        let failed = outcomes.iter().all(|o| matches!(o, Outcome::Retry(_)));
        let pushed_back = outcomes.iter().any(|o| matches!(o, Outcome::Retry(r) if r.after_ms.is_some()));
        let now = now_ms();
        // A halt stops the lane at that message: it and every later one of
        // the call stay, whatever their outcomes.
        let halt_at = outcomes.iter().position(|o| matches!(o, Outcome::Halt(_)));
        let mut halted = Vec::new();
        let mut halt_reason = None;
        let mut rest = Vec::new();
        let mut done = Vec::new();
        self.lane.with(|w| {
            for (i, (seq, outcome)) in seqs.into_iter().zip(outcomes).enumerate() {
                match outcome {
                    _ if halt_at.is_some_and(|h| i > h) => halted.push(seq),
                    Outcome::Halt(reason) => {
                        halted.push(seq);
                        halt_reason = Some(reason);
                    }
                    Outcome::Delivered => {
                        w.delivered_total += 1;
                        done.extend(w.finish(seq));
                    }
                    other => rest.push((seq, other)),
                }
            }
        });
        let shipped: usize = done.iter().filter_map(|p| p.record.as_ref()).map(|r| r.bytes.len()).sum();
        let label = self.label();
        let m = metrics::get();
        m.delivered.get_or_create(&label).inc_by(done.len() as u64);
        if shipped > 0 {
            m.mirror_shipped_bytes.get_or_create(&label).inc_by(shipped as u64);
        }
        {
            let hist = m.delivery_latency.get_or_create(&label);
            for p in &done {
                hist.observe(now.saturating_sub(p.env.written_at_ms) as f64 / 1000.0);
            }
        }
        for p in done {
            self.released(p).await;
        }
        for (seq, outcome) in rest {
            match outcome {
                Outcome::Delivered | Outcome::Halt(_) => {}
                Outcome::Reject(reason) => {
                    self.lane.with(|w| w.reject(seq, FailureKind::Reject, now_ms(), reason.clone()));
                    self.dead_letter(seq, FailureKind::Reject, reason).await
                }
                Outcome::Retry(r) => {
                    self.retry_later(seq, FailureKind::Retry, r.reason, r.after_ms.map(Duration::from_millis))
                        .await
                }
            }
        }
        if let Some(reason) = halt_reason {
            self.halt_lane(halted, reason).await;
        }
        CallSummary { failed, throttled: failed || pushed_back || slow }
    }

    /// Halts this lane (persisted) and puts `seqs` back, untried: they wait
    /// for an operator's `wharf target resume`.
    async fn halt_lane(&mut self, seqs: Vec<u64>, reason: String) {
        self.lane.with(|w| seqs.iter().for_each(|seq| w.postpone(*seq, 0)));
        let halt = Halt::new(reason);
        tracing::error!(reason = %halt.reason, at_message = seqs.first().copied(), "target halted on this partition; waiting for `wharf target resume`");
        let label = metrics::ns_target_reason(&self.ns.name, &self.target.name, halt.code());
        metrics::get().target_halts.get_or_create(&label).inc();
        let lane = self.lane.clone();
        match tokio::task::spawn_blocking(move || lane.set_halt(halt)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "halt not persisted; it holds until a restart"),
            Err(e) => tracing::error!(error = %e, "halt writer panicked; the halt holds until a restart"),
        }
    }

    /// A finished message: release its reservation, finish a transaction
    /// when this is the namespace's only target.
    async fn released(&mut self, p: Box<Pending>) {
        self.source().release(&p).await;
        if p.traps > 0 {
            let (traps, id) = (self.target.traps.clone(), p.id.clone());
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || traps.forget(&id)).await {
                tracing::error!(message_id = %p.id, error = %e, "trap count not cleared; it stays until the next finish");
            }
        }
        if let Some(t) = p.env.transaction {
            match self.ns.targets.len() {
                1 => finish_transaction(self.ns.clone(), t.id).await,
                _ => self.finished_transaction = true,
            }
        }
    }

    /// A failed call: the instance goes. A trap or deadline on a batch
    /// isolates its messages (each goes alone next, nothing counted); on a
    /// message alone it counts toward poison. A call that timed out waiting
    /// on its target retries every message and feeds the breaker only.
    /// Other failures retry every message and count toward quarantine.
    async fn call_failed(&mut self, seqs: Vec<u64>, e: PluginError) -> CallSummary {
        let kind = match &e {
            PluginError::Trap(_) => FailureKind::Trap,
            PluginError::Deadline(_) | PluginError::TargetStalled(_) => FailureKind::Deadline,
            PluginError::WrongCount { .. } => FailureKind::WrongCount,
            PluginError::Init(_) => FailureKind::Init,
            _ => FailureKind::Load,
        };
        self.instance = None;
        metrics::get().plugin_failures.get_or_create(&self.label_kind(kind.as_str())).inc();
        if let PluginError::TargetStalled(_) = e {
            // The target is slow or away, not the plugin or a message: a
            // retry that feeds the breaker, never a poison or quarantine count.
            tracing::warn!(error = %e, messages = seqs.len(), "plugin call timed out waiting on its target; batch will be retried");
            for seq in seqs {
                self.retry_later(seq, kind, e.to_string(), None).await;
            }
            return CallSummary::FAILED;
        }
        match (kind, seqs.as_slice()) {
            (FailureKind::Trap | FailureKind::Deadline, [seq]) => self.trapped_alone(*seq, kind, e).await,
            (FailureKind::Trap | FailureKind::Deadline, _) => {
                tracing::warn!(error = %e, messages = seqs.len(), "plugin trapped on a batch; its messages go one at a time to find the cause");
                self.lane.with(|w| seqs.iter().for_each(|seq| w.isolate(*seq)));
                // A trap says nothing about the target's health.
                CallSummary { failed: false, throttled: true }
            }
            _ => {
                tracing::warn!(error = %e, kind = kind.as_str(), messages = seqs.len(), "plugin call failed; instance discarded, batch will be retried");
                self.consecutive_failures += 1;
                if self.consecutive_failures >= self.target.cfg.target.quarantine_after {
                    self.quarantine(format!(
                        "{} consecutive plugin failures, last: {e}",
                        self.consecutive_failures
                    ));
                }
                for seq in seqs {
                    self.retry_later(seq, kind, e.to_string(), None).await;
                }
                CallSummary::FAILED
            }
        }
    }

    /// A message trapped the plugin on its own: one more trap on its
    /// durable count; at `poison_after` it is dead-lettered as poison.
    /// Distinct messages trapping in a row mean a broken plugin.
    async fn trapped_alone(&mut self, seq: u64, kind: FailureKind, e: PluginError) -> CallSummary {
        let Some(id) = self.lane.with(|w| w.get(seq).map(|p| p.id.clone())) else {
            return CallSummary::SETTLED;
        };
        let traps = self.target.traps.clone();
        let key = id.clone();
        let count = match tokio::task::spawn_blocking(move || traps.record(&key)).await {
            Ok(Ok(n)) => n,
            Ok(Err(err)) => {
                tracing::error!(message_id = %id, error = %err, "trap count not persisted; counted in memory only");
                self.lane.with(|w| w.get(seq).map_or(1, |p| p.traps + 1))
            }
            Err(err) => {
                tracing::error!(message_id = %id, error = %err, "trap counter panicked");
                self.lane.with(|w| w.get(seq).map_or(1, |p| p.traps + 1))
            }
        };
        self.lane.with(|w| w.get_mut(seq).map(|p| p.traps = count));
        let poison_after = self.target.cfg.target.poison_after;
        tracing::warn!(message_id = %id, traps = count, poison_after, error = %e, "message trapped the plugin on its own");
        self.trapped_alone.insert(id);
        let limit = self.target.cfg.target.quarantine_after;
        if self.trapped_alone.len() >= limit as usize {
            self.quarantine(format!("{limit} distinct messages in a row trapped the plugin, last: {e}"));
        }
        if count >= poison_after {
            let reason = format!(
                "poison: trapped the plugin {count} times on its own (poison_after = {poison_after}), last: {e}"
            );
            self.lane.with(|w| w.reject(seq, FailureKind::Poison, now_ms(), reason.clone()));
            self.dead_letter(seq, FailureKind::Poison, reason).await;
        } else {
            self.retry_later(seq, kind, e.to_string(), None).await;
        }
        CallSummary { failed: false, throttled: true }
    }

    /// The plugin is broken, not a message: this target pauses until an
    /// operator registers a plugin (or restarts).
    fn quarantine(&mut self, reason: String) {
        tracing::error!(%reason, "plugin quarantined; target delivery paused");
        metrics::get().plugin_quarantines.get_or_create(&self.label()).inc();
        self.target.set_plugin_status(|p| {
            p.state = PluginState::Quarantined;
            p.reason = Some(reason);
        });
    }

    /// Schedules another attempt, or dead-letters when attempts run out.
    async fn retry_later(&mut self, seq: u64, kind: FailureKind, reason: String, after: Option<Duration>) {
        let policy = &self.ns.cfg.retry;
        let failure = Failure { attempt: 0, at_ms: now_ms(), kind: kind.into(), reason: reason.clone() };
        let attempts = self.lane.with(|w| w.get(seq).map(|p| p.attempts + 1)).unwrap_or(1);
        let ceiling = policy.ceiling(attempts).as_millis() as u64;
        let jitter = rand::rng().random_range(0..=ceiling);
        // A target's retry-after counts, but never beyond max_backoff_ms: a
        // hostile or broken target cannot park a message for years.
        let asked = after.map_or(0, |a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX));
        let wait = jitter.max(asked.min(policy.max_backoff_ms));
        // Strict order cannot skip a message: it is retried until it goes.
        let max_attempts = if self.strict { u32::MAX } else { policy.max_attempts };
        let exhausted = self.lane.with(|w| w.fail(seq, failure, max_attempts, engine_ms() + wait));
        if exhausted {
            let reason = format!("gave up after {} attempts: {reason}", policy.max_attempts);
            self.dead_letter(seq, FailureKind::Exhausted, reason).await;
        } else {
            metrics::get().retries.get_or_create(&self.label_kind(kind.as_str())).inc();
        }
    }

    /// Makes the DLQ entry durable, then finishes the message. If the DLQ
    /// write fails the message stays in the window and is retried.
    async fn dead_letter(&mut self, seq: u64, kind: FailureKind, reason: String) {
        let digest = self.plugin.as_ref().map(|p| p.digest.clone()).unwrap_or_default();
        let entry = self.lane.with(|w| {
            let p = w.get(seq)?;
            let (partition, sequence) = position(seq, p);
            Some(DlqEntry {
                message_id: p.id.clone(),
                partition,
                sequence,
                envelope: p.env.clone(),
                failures: p.failures.clone(),
                plugin_digest: digest,
                dead_lettered_at_ms: now_ms(),
            })
        });
        let Some(mut entry) = entry else { return };
        let id = entry.message_id.clone();
        // A transaction's DLQ entry carries its chunks, so that it outlives
        // the chunk store's file and can be replayed whole.
        if let Some(txn) = entry.envelope.transaction.as_mut()
            && txn.inline.is_empty()
        {
            let (store, txn_id, chunks) = (self.ns.txns.clone(), txn.id.clone(), txn.chunks);
            match tokio::task::spawn_blocking(move || store.load_chunks(&txn_id, chunks)).await {
                Ok(Ok(c)) => txn.inline = c,
                Ok(Err(e)) => entry.failures.push(Failure {
                    attempt: entry.failures.len() as u32 + 1,
                    at_ms: now_ms(),
                    kind: FailureKind::Transaction.into(),
                    reason: format!("chunks not copied into the DLQ entry: {e}"),
                }),
                Err(e) => tracing::error!(message_id = %id, error = %e, "chunk reader panicked"),
            }
        }
        let dlq = self.target.dlq.clone();
        let pushed = move || match dlq {
            Some(d) => d.push(entry).map_err(|e| e.to_string()),
            None => Err("this process has no DLQ".to_string()),
        };
        match tokio::task::spawn_blocking(pushed).await {
            Ok(Ok(())) => {
                tracing::warn!(message_id = %id, %reason, "message dead-lettered");
                let finished = self.lane.with(|w| {
                    w.dead_lettered_total += 1;
                    w.finish(seq)
                });
                metrics::get().dead_lettered.get_or_create(&self.label_kind(kind.as_str())).inc();
                if let Some(p) = finished {
                    self.released(p).await;
                }
            }
            Ok(Err(e)) => {
                tracing::error!(message_id = %id, error = %e, "dlq write failed; message stays pending");
                self.dead_letter_later(seq, kind);
            }
            Err(e) => {
                tracing::error!(message_id = %id, error = %e, "dlq writer panicked");
                self.dead_letter_later(seq, kind);
            }
        }
    }

    /// After a failed DLQ write: the message stays in the window and is
    /// tried again. One that is not an envelope stays in flight, so that its
    /// raw bytes never reach the plugin.
    fn dead_letter_later(&mut self, seq: u64, kind: FailureKind) {
        match kind {
            FailureKind::Decode => self.undecodable.push(seq),
            _ => self.lane.with(|w| w.postpone(seq, engine_ms() + 1000)),
        }
    }

    /// Persists the watermark if it moved (rate-limited unless `force`).
    async fn persist_watermark(&mut self, force: bool) {
        let wm = self.lane.with(|w| w.watermark());
        if wm <= self.persisted_watermark || (!force && self.last_persist.elapsed() < WATERMARK_EVERY) {
            return;
        }
        match self.source().checkpoint(wm).await {
            Ok(()) => {
                self.persisted_watermark = wm;
                self.last_persist = Instant::now();
                self.advance_rewind(wm).await;
                if std::mem::take(&mut self.finished_transaction) {
                    sweep_chunks(self.ns.clone()).await;
                }
            }
            Err(e) => tracing::error!(watermark = wm, error = %e, "watermark not persisted; will retry"),
        }
    }

    fn label(&self) -> metrics::NsTarget {
        metrics::ns_target(&self.ns.name, &self.target.name)
    }

    fn label_kind(&self, kind: &'static str) -> metrics::NsTargetKind {
        metrics::ns_target_kind(&self.ns.name, &self.target.name, kind)
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

/// A finished transaction. With a `retention` table its chunks stay (no
/// longer counted as parked) until the marker leaves retained history (the
/// chunk store's sweep); without, they are deleted now.
async fn finish_transaction(ns: Arc<Namespace>, id: String) {
    metrics::get().transactions.get_or_create(&metrics::ns_kind(&ns.name, "delivered")).inc();
    if ns.cfg.retention.is_some() {
        ns.txns.finish(&id);
        tracing::debug!(transaction = %id, "transaction finished; its chunks stay while the marker is retained");
        return;
    }
    let (store, txn) = (ns.txns.clone(), id.clone());
    match tokio::task::spawn_blocking(move || store.remove(&txn)).await {
        Ok(Ok(())) => tracing::debug!(transaction = %id, "transaction chunks deleted"),
        Ok(Err(e)) => {
            tracing::error!(transaction = %id, error = %e, "transaction chunks not deleted; swept later")
        }
        Err(e) => tracing::error!(transaction = %id, error = %e, "chunk deleter panicked"),
    }
}

/// Several targets: marks finished the transactions whose marker is below
/// its partition's watermark (the slowest target's cursor), and deletes
/// the chunks of those below the oldest retained record.
async fn sweep_chunks(ns: Arc<Namespace>) {
    let store = ns.txns.clone();
    let swept = tokio::task::spawn_blocking(move || {
        store.sweep(|marker| {
            crate::engine::namespace::marker_place(&ns.partitions, ns.cfg.retention.is_some(), marker)
        })
    })
    .await;
    if let Ok(n) = swept
        && n > 0
    {
        tracing::debug!(swept = n, "transaction chunks deleted behind every target");
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
            Outcome::Halt(reason) => return Outcome::Halt(format!("chunk {i}: {reason}")),
            Outcome::Retry(r) => {
                let after_ms = r.after_ms.max(retry.as_ref().and_then(|p| p.after_ms));
                retry = Some(RetryOutcome { reason: format!("chunk {i}: {}", r.reason), after_ms });
            }
        }
    }
    retry.map_or(Outcome::Delivered, Outcome::Retry)
}

/// Partition and sequence of a message: the log's, a Kafka partition and
/// offset, or (SQS) 0 and the lane's receive order.
fn position(seq: u64, p: &Pending) -> (u32, u64) {
    match p.receipt.as_ref().map(|d| &d.receipt) {
        Some(wharf_queue::Receipt::Kafka { partition, offset, .. }) => (*partition as u32, *offset as u64),
        Some(_) => (0, seq),
        None => crate::storage::envelope::parse_message_id(&p.id).unwrap_or((0, seq)),
    }
}

/// The message the plugin sees. On a queue the partition and sequence are
/// the backend's where it has them (Kafka), else the lane's receive order.
///
/// Its id, payload, headers, idempotency key and stored record are *moved*
/// out of the window's message for the call, not copied (copies were a
/// tenth of a drain): nothing in the window reads them while the message
/// is in flight, and [`Engine::give_back`] puts them back before the
/// outcome is applied (or the batch is put back untried). The key stays:
/// the window orders by it.
fn lend(ns: &str, seq: u64, p: &mut Pending) -> Message {
    let (partition, sequence) = position(seq, p);
    Message {
        id: std::mem::take(&mut p.id),
        namespace: ns.to_string(),
        partition,
        sequence,
        key: p.env.key.clone(),
        payload: std::mem::take(&mut p.env.payload),
        headers: std::mem::take(&mut p.env.headers),
        idempotency_key: p.env.idempotency_key.take(),
        attempt: p.attempts + 1,
        replays: p.env.replays,
        written_at_ms: p.env.written_at_ms,
        record: p.record.take(),
    }
}

/// Undoes [`lend`].
fn take_back(p: &mut Pending, m: Message) {
    p.id = m.id;
    p.env.payload = m.payload;
    p.env.headers = m.headers;
    p.env.idempotency_key = m.idempotency_key;
    p.record = m.record;
}
