//! The delivery window of one lane (one target × one stream): the messages
//! read from the source and not finished yet, in source order.
//!
//! Pure bookkeeping, no I/O and no clock of its own (every call takes `now`),
//! so that `window_model.rs` (a proptest) can check it against a model.
//!
//! Invariants:
//! - Per-key order: only the oldest unfinished message of a key is eligible
//!   ([`Window::select`]). A message waiting for a retry stays here and holds
//!   back the later messages of its key only. Keyless messages are unordered.
//! - The watermark ([`Window::watermark`]) is the lowest unfinished sequence
//!   (or the next one to read): it never passes an unfinished message and
//!   never moves backward.
//! - A message leaves only through [`Window::finish`], which the engine calls
//!   once the target confirmed it or its DLQ entry is durable.
//! - A key holds at most its cap ([`KeyCap`]) of window room, so that the
//!   followers of a key that keeps failing never fill `max_in_flight` and
//!   stop the other keys. Beyond the cap, a log lane *defers* a key's
//!   messages: it keeps their sequences only (the records stay in the log)
//!   and reads them again, oldest first, once the key has room
//!   ([`Window::to_reread`], [`Window::readmit`]); from the first deferred
//!   message on, every later one of that key is deferred too, so per-key
//!   order holds. A deferred message is unfinished: the watermark stays at
//!   or below it. A queue lane cannot leave a message in the broker without
//!   losing its place, so it *holds* the followers (reservation kept) but
//!   counts at most the cap of them as room ([`Window::occupying`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use crate::engine::breaker::BreakerState;
use crate::storage::dlq::{Failure, FailureKind};
use crate::storage::envelope::Envelope;

/// Finished message ids remembered for lookups and `wait=visible` on queue
/// lanes (whose ids are not sequences).
const FINISHED_IDS: usize = 65_536;

/// What a window does with a key's messages beyond its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverCap {
    /// Log lanes: leave them in the log, keep their sequences, read them
    /// again once the key has room.
    Defer,
    /// Queue lanes: keep them (and their reservation) in memory, but do not
    /// count them as window room.
    Hold,
}

/// How many messages of one key take window room, and what happens to the
/// rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCap {
    pub per_key: usize,
    pub over: OverCap,
}

impl KeyCap {
    /// Most messages of one key that take room: an eighth of the lane's
    /// `max_in_flight`, between 1 and 16 (only a key's oldest message is
    /// ever sent, so a few suffice to keep a healthy key busy).
    pub fn for_lane(max_in_flight: usize, over: OverCap) -> Self {
        Self { per_key: (max_in_flight / 8).clamp(1, 16), over }
    }
}

/// One message in the window. While it is in flight, its id, payload,
/// headers, idempotency key and stored record are lent to the call
/// (`lane.rs`, `lend`) and empty here; the window never reads them.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The id clients know: `<partition>-<seq>` on the log, the backend's id
    /// on a queue.
    pub id: String,
    pub env: Envelope,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not before this wall-clock time (ms).
    pub due_ms: u64,
    pub in_flight: bool,
    pub failures: Vec<Failure>,
    /// The queue's receipt (ack it when finished); `None` on the log.
    pub receipt: Option<wharf_queue::Delivery>,
    /// Times it trapped the plugin when delivered alone (kept across
    /// restarts in the target's trap counts).
    pub traps: u32,
    /// A batch it was in trapped: it goes alone until it is finished, so
    /// that the message that traps is found.
    pub isolate: bool,
    /// The stored record with its chained digest, for a target that mirrors
    /// the log (`ordering = "partition"`).
    pub record: Option<crate::plugin::LogRecord>,
}

impl Pending {
    /// A message as it comes from its source: untried, due at the
    /// envelope's `deliver_at_ms` (on the engine's clock) or at once.
    pub fn new(id: String, env: Envelope) -> Self {
        let due_ms = env.deliver_at_ms.map(crate::clock::engine_ms_at).unwrap_or(0);
        Pending {
            id,
            env,
            attempts: 0,
            due_ms,
            in_flight: false,
            failures: Vec::new(),
            receipt: None,
            traps: 0,
            isolate: false,
            record: None,
        }
    }
}

/// Where a message is in the window, for lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    Pending,
    Delayed,
    InFlight,
    Retrying,
    Delivered,
    DeadLettered,
    /// Not held by this process (queue lanes only): still in the queue,
    /// taken by another consumer, or finished too long ago to remember.
    Unknown,
}

/// What the API reports about one message in the window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Tracked {
    pub state: MessageState,
    pub attempts: u32,
    pub next_attempt_at_ms: Option<u64>,
    pub last_error: Option<String>,
}

/// Counters and state of one lane, as `/v1/status` shows them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WindowSnapshot {
    /// Messages read from the source and not finished.
    pub window: usize,
    /// Messages inside a plugin call right now.
    pub in_flight: usize,
    /// Keys whose oldest message is waiting for a retry.
    pub retrying_keys: usize,
    /// Log lanes: messages left in the log behind a key at its cap, to be
    /// read again.
    pub deferred: usize,
    pub delivered_total: u64,
    pub retries_total: u64,
    pub dead_lettered_total: u64,
    /// Current AIMD batch size.
    pub batch_limit: usize,
    pub breaker: BreakerState,
}

/// Counts over the messages in `pending`, derived from each message's
/// state and kept as it changes ([`Counts::add`] when a message enters or
/// is about to change, [`Counts::remove`] when it leaves or before it
/// changes): so the lane asks for room before every pull, and status reads
/// the window, without walking it.
#[derive(Debug, Default)]
struct Counts {
    /// `(due_ms, seq)` of the messages never tried and with a due time:
    /// those not due yet take no room ([`Window::occupying`]).
    untried_delayed: BTreeSet<(u64, u64)>,
    /// The messages tried before (for `retrying_keys`).
    tried: BTreeSet<u64>,
    in_flight: usize,
}

impl Counts {
    fn add(&mut self, seq: u64, p: &Pending) {
        if p.attempts == 0 && p.due_ms > 0 {
            self.untried_delayed.insert((p.due_ms, seq));
        }
        if p.attempts > 0 {
            self.tried.insert(seq);
        }
        self.in_flight += usize::from(p.in_flight);
    }

    fn remove(&mut self, seq: u64, p: &Pending) {
        self.untried_delayed.remove(&(p.due_ms, seq));
        self.tried.remove(&seq);
        self.in_flight -= usize::from(p.in_flight);
    }
}

#[derive(Debug, Default)]
pub struct Window {
    /// Boxed: a `Pending` is several hundred bytes, and a B-tree moves its
    /// values on every insert and remove (a profile of a drain had 12 % of
    /// the delivering process in those moves).
    pending: BTreeMap<u64, Box<Pending>>,
    /// Per key, the unfinished sequences in order; the front is eligible.
    keys: HashMap<String, VecDeque<u64>>,
    /// Queue lanes: id → sequence of the messages in the window.
    ids: HashMap<String, u64>,
    /// Queue lanes: ids finished lately (delivered or dead-lettered).
    finished: HashSet<String>,
    finished_order: VecDeque<String>,
    /// Next sequence to read from the source.
    next_read: u64,
    /// `None`: a key may take all the room (strict partition order).
    cap: Option<KeyCap>,
    /// Log lanes: per key, the sequences read and left in the log (oldest
    /// first); every one is above the key's messages in `pending`.
    deferred: HashMap<String, VecDeque<u64>>,
    /// What `occupying` and `/v1/status` count, kept as `pending` changes.
    counts: Counts,
    pub delivered_total: u64,
    pub retries_total: u64,
    pub dead_lettered_total: u64,
    /// Current AIMD batch size.
    pub batch_limit: usize,
    pub breaker: BreakerState,
}

impl Window {
    /// An empty window whose first message will be `next_read`.
    pub fn starting_at(next_read: u64, batch_limit: usize) -> Self {
        Self { next_read, batch_limit, ..Self::default() }
    }

    /// The same window with a per-key cap (see [`KeyCap`]).
    pub fn with_key_cap(mut self, cap: KeyCap) -> Self {
        self.cap = Some(cap);
        self
    }

    pub fn next_read(&self) -> u64 {
        self.next_read
    }

    /// All sequences below this are finished.
    pub fn watermark(&self) -> u64 {
        let held = self.pending.keys().next().copied();
        let deferred = self.deferred.values().filter_map(|d| d.front().copied()).min();
        [held, deferred].into_iter().flatten().min().unwrap_or(self.next_read)
    }

    #[allow(clippy::len_without_is_empty, reason = "a window is asked its size, never whether it is empty")]
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Takes a message read from the source; its sequence must be
    /// `next_read` or later (sequences only grow). Returns `false` when the
    /// message was deferred (left in the log, see [`OverCap::Defer`]).
    pub fn admit(&mut self, seq: u64, pending: Box<Pending>) -> bool {
        debug_assert!(seq >= self.next_read, "sequence {seq} admitted below {}", self.next_read);
        self.next_read = seq + 1;
        if let Some(k) = pending.env.key.as_deref()
            && self.defers(k)
        {
            self.deferred.entry(k.to_string()).or_default().push_back(seq);
            return false;
        }
        self.hold(seq, pending);
        true
    }

    /// A log lane's key already has deferred messages or its cap in the window.
    fn defers(&self, key: &str) -> bool {
        let Some(KeyCap { per_key, over: OverCap::Defer }) = self.cap else { return false };
        self.deferred.contains_key(key) || self.keys.get(key).is_some_and(|q| q.len() >= per_key)
    }

    fn hold(&mut self, seq: u64, pending: Box<Pending>) {
        self.counts.add(seq, &pending);
        if let Some(k) = &pending.env.key {
            self.keys.entry(k.clone()).or_default().push_back(seq);
        }
        if pending.receipt.is_some() {
            self.ids.insert(pending.id.clone(), seq);
        }
        self.pending.insert(seq, pending);
    }

    /// Deferred sequences to read again now, ascending: of each key with
    /// room, its oldest deferred ones, up to the cap.
    pub fn to_reread(&self) -> Vec<u64> {
        let Some(cap) = self.cap else { return Vec::new() };
        let mut seqs: Vec<u64> = Vec::new();
        for (key, deferred) in &self.deferred {
            let held = self.keys.get(key).map_or(0, VecDeque::len);
            seqs.extend(deferred.iter().take(cap.per_key.saturating_sub(held)));
        }
        seqs.sort_unstable();
        seqs
    }

    /// A deferred message read again: it joins the window behind the held
    /// messages of its key. Only its key's oldest deferred one is taken
    /// (returns `false` for any other: it stays deferred, so a short read
    /// never reorders a key).
    pub fn readmit(&mut self, seq: u64, pending: Box<Pending>) -> bool {
        let Some(key) = pending.env.key.clone() else { return false };
        let Some(deferred) = self.deferred.get_mut(&key) else { return false };
        if deferred.front() != Some(&seq) {
            return false;
        }
        deferred.pop_front();
        if deferred.is_empty() {
            self.deferred.remove(&key);
        }
        self.hold(seq, pending);
        true
    }

    /// A deferred sequence that holds nothing for this lane after all:
    /// finished.
    pub fn drop_deferred(&mut self, seq: u64) {
        self.deferred.retain(|_, d| {
            d.retain(|s| *s != seq);
            !d.is_empty()
        });
    }

    fn is_deferred(&self, seq: u64) -> bool {
        self.deferred.values().any(|d| d.binary_search(&seq).is_ok())
    }

    /// Skips sequences that hold nothing for this lane (e.g. a replay meant
    /// for another target).
    pub fn skip_to(&mut self, next_read: u64) {
        self.next_read = self.next_read.max(next_read);
    }

    pub fn get(&self, seq: u64) -> Option<&Pending> {
        self.pending.get(&seq).map(|p| &**p)
    }

    /// A message to change fields the window does not count or order by
    /// (its lent fields, its trap count); attempts, due time and in-flight
    /// change only through the window's own methods ([`Window::update`]).
    pub fn get_mut(&mut self, seq: u64) -> Option<&mut Pending> {
        self.pending.get_mut(&seq).map(|p| &mut **p)
    }

    /// Changes a message with `f`, keeping [`Counts`] right; `None` if the
    /// message is not in the window.
    fn update<R>(&mut self, seq: u64, f: impl FnOnce(&mut Pending) -> R) -> Option<R> {
        let p = self.pending.get_mut(&seq)?;
        self.counts.remove(seq, p);
        let r = f(p);
        self.counts.add(seq, p);
        Some(r)
    }

    /// The counts against a walk of the window (debug builds: the model
    /// test and the other unit tests run them).
    fn check_counts(&self) {
        let walk = |f: fn(&Pending) -> bool| self.pending.values().filter(|p| f(p)).count();
        debug_assert_eq!(self.counts.in_flight, walk(|p| p.in_flight));
        debug_assert_eq!(self.counts.tried.len(), walk(|p| p.attempts > 0));
        debug_assert_eq!(self.counts.untried_delayed.len(), walk(|p| p.attempts == 0 && p.due_ms > 0));
    }

    /// What `/v1/status` shows.
    pub fn snapshot(&self) -> WindowSnapshot {
        WindowSnapshot {
            window: self.pending.len(),
            in_flight: self.counts.in_flight,
            retrying_keys: self.retrying_keys(),
            deferred: self.deferred.values().map(VecDeque::len).sum(),
            delivered_total: self.delivered_total,
            retries_total: self.retries_total,
            dead_lettered_total: self.dead_lettered_total,
            batch_limit: self.batch_limit,
            breaker: self.breaker,
        }
    }

    /// Keys whose oldest message was tried before: of the tried messages,
    /// the keyed ones that head their key.
    fn retrying_keys(&self) -> usize {
        self.check_counts();
        self.counts
            .tried
            .iter()
            .filter(|s| {
                self.pending.get(s).is_some_and(|p| p.env.key.is_some() && self.heads_its_key(**s, p))
            })
            .count()
    }

    /// State of a message still in the window, or `None` if it is not.
    pub fn state_of(&self, seq: u64, now: u64) -> Option<Tracked> {
        if self.is_deferred(seq) {
            let state = MessageState::Pending;
            return Some(Tracked { state, attempts: 0, next_attempt_at_ms: None, last_error: None });
        }
        let p = self.pending.get(&seq)?;
        let state = if p.in_flight {
            MessageState::InFlight
        } else if p.attempts > 0 {
            MessageState::Retrying
        } else if p.env.deliver_at_ms.is_some_and(|t| t > now) {
            MessageState::Delayed
        } else {
            MessageState::Pending
        };
        Some(Tracked {
            state,
            attempts: p.attempts,
            next_attempt_at_ms: (p.attempts > 0 && !p.in_flight).then_some(p.due_ms),
            last_error: p.failures.last().map(|f| f.reason.clone()),
        })
    }

    /// Queue lanes: the sequence of a message in the window, by id.
    pub fn seq_of(&self, id: &str) -> Option<u64> {
        self.ids.get(id).copied()
    }

    /// Queue lanes: whether a message with this id finished lately.
    pub fn finished_lately(&self, id: &str) -> bool {
        self.finished.contains(id)
    }

    /// The window room taken: messages in the window, less delayed ones
    /// not due yet, and at most the cap of each key. Runs before every
    /// pull, so it looks up messages only for keys holding more than the
    /// cap: every message in the window is in its key's queue, so the rest
    /// are counted as they are.
    pub fn occupying(&self, now: u64) -> usize {
        let occupies = |p: &Pending| !(p.attempts == 0 && p.due_ms > now);
        self.check_counts();
        let not_due = self.counts.untried_delayed.range((now.saturating_add(1), 0)..).count();
        let all = self.pending.len() - not_due;
        let Some(per_key) = self.cap.map(|c| c.per_key) else { return all };
        let over_cap: usize = self
            .keys
            .values()
            .filter(|q| q.len() > per_key)
            .map(|q| q.iter().filter(|&&s| self.get(s).is_some_and(occupies)).count().saturating_sub(per_key))
            .sum();
        all - over_cap
    }

    /// Write time of the oldest message in the window, if any.
    pub fn oldest_written_at_ms(&self) -> Option<u64> {
        self.pending.values().map(|p| p.env.written_at_ms).min()
    }

    /// Delivered or dead-lettered (log lanes: by sequence).
    pub fn is_finished(&self, seq: u64) -> bool {
        seq < self.next_read && !self.pending.contains_key(&seq) && !self.is_deferred(seq)
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

    /// Earliest time something not in flight becomes due. Looks up a key
    /// only for a message that would be earlier than the best so far, and
    /// stops at one due at once: the lane asks before every pull.
    pub fn next_due_ms(&self) -> Option<u64> {
        let mut best: Option<u64> = None;
        for (seq, p) in &self.pending {
            if p.in_flight || best.is_some_and(|b| p.due_ms >= b) || !self.heads_its_key(*seq, p) {
                continue;
            }
            best = Some(p.due_ms);
            if p.due_ms == 0 {
                break;
            }
        }
        best
    }

    /// Picks the eligible messages, oldest first from [`Self::first_to_serve`],
    /// up to `max`, and marks them in flight. A transaction marker, and a
    /// message being isolated after its batch trapped, travel alone.
    pub fn select(&mut self, now: u64, max: usize) -> Vec<u64> {
        let Some(first) = self.first_to_serve(now) else { return Vec::new() };
        let mut seqs: Vec<u64> = Vec::new();
        for (seq, p) in self.pending.range(first..).filter(|(seq, p)| self.is_eligible(**seq, p, now)) {
            let alone = p.env.transaction.is_some() || p.isolate;
            if alone && !seqs.is_empty() {
                break;
            }
            seqs.push(*seq);
            if alone || seqs.len() >= max.max(1) {
                break;
            }
        }
        self.mark_in_flight(&seqs);
        seqs
    }

    /// Strict partition order (`ordering = "partition"`): a contiguous run of
    /// sequences from the oldest unfinished message, up to `max`, stopping
    /// before a message that is not due; nothing while anything is in
    /// flight, so nothing past an unfinished message is ever sent.
    pub fn select_run(&mut self, now: u64, max: usize) -> Vec<u64> {
        if self.counts.in_flight > 0 {
            return Vec::new();
        }
        let mut seqs: Vec<u64> = Vec::new();
        for (seq, p) in &self.pending {
            let contiguous = seqs.last().is_none_or(|last| *seq == last + 1);
            // An isolated message (its batch trapped) and a transaction
            // marker go alone.
            let alone = p.isolate || p.env.transaction.is_some();
            if p.due_ms > now || !contiguous || (alone && !seqs.is_empty()) {
                break;
            }
            seqs.push(*seq);
            if alone || seqs.len() >= max.max(1) {
                break;
            }
        }
        self.mark_in_flight(&seqs);
        seqs
    }

    /// Where a call starts: the oldest eligible message, unless that one
    /// was tried before (a retry, or isolated after a trap); then the
    /// eligible message due longest (oldest first among equals). So retries
    /// that come due again while a call runs never starve a message that
    /// has been waiting.
    fn first_to_serve(&self, now: u64) -> Option<u64> {
        let mut eligible = self.pending.iter().filter(|(seq, p)| self.is_eligible(**seq, p, now));
        let (&seq, first) = eligible.next()?;
        if first.attempts == 0 && !first.isolate {
            return Some(seq);
        }
        let longest = eligible.fold((first.due_ms, seq), |best, (s, p)| best.min((p.due_ms, *s)));
        Some(longest.1)
    }

    /// The half-open breaker's probe: one eligible message, from the key
    /// that failed least (a key that never failed first, oldest first among
    /// equals). So a key that fails on its own never decides for the whole
    /// target while other keys have messages waiting.
    pub fn select_probe(&mut self, now: u64) -> Vec<u64> {
        let probe = self
            .pending
            .iter()
            .filter(|(seq, p)| self.is_eligible(**seq, p, now))
            .min_by_key(|(seq, p)| (p.attempts, **seq))
            .map(|(seq, _)| *seq);
        let seqs: Vec<u64> = probe.into_iter().collect();
        self.mark_in_flight(&seqs);
        seqs
    }

    /// Marks messages in flight (a call is about to carry them).
    pub fn mark_in_flight(&mut self, seqs: &[u64]) {
        for seq in seqs {
            self.update(*seq, |p| p.in_flight = true);
        }
    }

    /// Records a failed attempt. Returns `true` when attempts ran out
    /// (`max_attempts`); otherwise the message is due again at `due_ms`.
    pub fn fail(&mut self, seq: u64, failure: Failure, max_attempts: u32, due_ms: u64) -> bool {
        let out_of_attempts = self.update(seq, |p| {
            p.attempts += 1;
            p.in_flight = false;
            p.failures.push(Failure { attempt: p.attempts, ..failure });
            if p.attempts < max_attempts {
                p.due_ms = due_ms;
            }
            p.attempts >= max_attempts
        });
        if out_of_attempts == Some(false) {
            self.retries_total += 1;
        }
        out_of_attempts == Some(true)
    }

    /// A message going to the DLQ at once (rejected by the plugin, or
    /// moved by an operator): one more attempt on its record.
    pub fn reject(&mut self, seq: u64, kind: FailureKind, at_ms: u64, reason: String) {
        self.update(seq, |p| {
            p.attempts += 1;
            p.in_flight = false;
            p.failures.push(Failure { attempt: p.attempts, at_ms, kind: kind.into(), reason });
        });
    }

    /// A batch trapped: each of its messages goes alone from now on, at
    /// once, with no attempt counted against it.
    pub fn isolate(&mut self, seq: u64) {
        self.update(seq, |p| {
            p.in_flight = false;
            p.isolate = true;
        });
    }

    /// Puts a message back, not in flight, due at `due_ms` (a DLQ write
    /// that failed, or a call that never happened).
    pub fn postpone(&mut self, seq: u64, due_ms: u64) {
        self.update(seq, |p| {
            p.in_flight = false;
            p.due_ms = due_ms;
        });
    }

    /// The message is delivered or its DLQ entry is durable.
    pub fn finish(&mut self, seq: u64) -> Option<Box<Pending>> {
        let p = self.pending.remove(&seq)?;
        self.counts.remove(seq, &p);
        if let Some(k) = &p.env.key
            && let Some(q) = self.keys.get_mut(k)
        {
            q.retain(|s| *s != seq);
            if q.is_empty() {
                self.keys.remove(k);
            }
        }
        if p.receipt.is_some() {
            self.ids.remove(&p.id);
            self.remember_finished(p.id.clone());
        }
        Some(p)
    }

    /// An operator's rewind: forgets every unfinished message (nothing may
    /// be in flight) and reads again from `next_read`, which must not pass
    /// an unfinished message (at most [`Window::watermark`]). The one place
    /// the watermark moves backward; counters, breaker and batch size stay.
    pub fn rewind_to(&mut self, next_read: u64) {
        debug_assert!(
            next_read <= self.watermark(),
            "a rewind to {next_read} would skip unfinished messages"
        );
        debug_assert!(self.pending.values().all(|p| !p.in_flight), "a rewind while a call runs");
        self.pending.clear();
        self.keys.clear();
        self.ids.clear();
        self.deferred.clear();
        self.counts = Counts::default();
        self.next_read = next_read;
    }

    /// Queue lanes: remembers an id as finished (also one this lane had
    /// nothing to do for).
    pub fn remember_finished(&mut self, id: String) {
        if self.finished.insert(id.clone()) {
            self.finished_order.push_back(id);
        }
        while self.finished_order.len() > FINISHED_IDS {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod strict_tests {
    use super::*;

    fn pending(key: &str) -> Box<Pending> {
        Box::new(Pending::new(String::new(), Envelope::raw(Some(key.to_string()), Vec::new())))
    }

    #[test]
    fn a_rewind_reads_again_from_an_earlier_sequence_and_keeps_per_key_order() {
        let mut w = Window::starting_at(0, 10);
        for seq in 0..4 {
            w.admit(seq, pending("a"));
        }
        w.finish(0);
        w.finish(1);
        assert_eq!(w.watermark(), 2);
        w.rewind_to(0);
        assert_eq!((w.watermark(), w.next_read(), w.len()), (0, 0, 0));
        for seq in 0..4 {
            w.admit(seq, pending("a"));
        }
        assert_eq!(w.select(0, 10), vec![0], "the oldest of the key first, again");
    }

    #[test]
    fn a_run_is_contiguous_and_nothing_passes_an_unfinished_message() {
        let mut w = Window::starting_at(0, 10);
        for seq in 0..6 {
            w.admit(seq, pending(if seq % 2 == 0 { "a" } else { "b" }));
        }
        assert_eq!(w.select_run(0, 3), vec![0, 1, 2]);
        assert_eq!(w.select_run(0, 3), Vec::<u64>::new(), "nothing while a run is in flight");
        w.finish(0);
        w.postpone(1, 50);
        w.postpone(2, 0);
        assert_eq!(w.select_run(10, 5), Vec::<u64>::new(), "1 is not due: nothing past it, whatever its key");
        assert_eq!(w.select_run(50, 2), vec![1, 2]);
    }
}
