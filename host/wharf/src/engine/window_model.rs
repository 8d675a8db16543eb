//! Model-based tests of [`Window`]: random schedules of appends, plugin calls
//! with random outcomes and clock moves, checked after every step against a
//! plain model of the lane (a list of messages and what happened to them).
//!
//! Appends go to a model of the source (the log); before each call the lane
//! fills the window as `engine::lane` does: deferred messages of keys with
//! room first ([`Window::to_reread`]), then new ones up to `max_in_flight`
//! less the room taken ([`Window::occupying`]), with a per-key cap that
//! defers (log lanes) or holds (queue lanes) a key's followers.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use crate::engine::window::{KeyCap, MessageState, OverCap, Pending, Window};
use crate::storage::dlq::{Failure, FailureKind};
use crate::storage::envelope::Envelope;

/// Keys are `k0..k{KEYS}`; a message may also be keyless.
const KEYS: u8 = 4;
const START_MS: u64 = 1_000;

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Deliver,
    Retry { backoff_ms: u64 },
    Reject,
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        key: Option<u8>,
        delay_ms: Option<u64>,
    },
    /// One plugin call: `select` (or the breaker's probe), then an outcome
    /// per message, cycling through `outcomes`.
    Call {
        probe: bool,
        max: usize,
        outcomes: Vec<Outcome>,
    },
    Advance(u64),
    /// This key's messages always ask for a retry (`None`: all healthy).
    FailForever(Option<u8>),
    /// Reads from the source without a call (the lane's fill).
    Fill,
}

/// What the model knows of one appended message (its index is its seq).
#[derive(Debug, Clone)]
struct Msg {
    key: Option<u8>,
    due_ms: u64,
    attempts: u32,
    /// How many times `finish` took it out (must end at exactly 1).
    finished: u32,
    handed_out: bool,
    /// Read from the source (admitted or deferred).
    read: bool,
    /// Read and left in the log: not in the window until read again.
    deferred: bool,
    deliver_at_ms: Option<u64>,
}

fn pending(seq: u64, key: Option<u8>, deliver_at_ms: Option<u64>) -> Box<Pending> {
    let env = Envelope {
        key: key.map(|k| format!("k{k}")),
        payload: seq.to_le_bytes().to_vec(),
        headers: Vec::new(),
        idempotency_key: None,
        written_at_ms: START_MS,
        deliver_at_ms,
        replays: 0,
        transaction: None,
        only_target: None,
    };
    // The model's times are the engine's own: no conversion from the wall clock.
    Box::new(Pending { due_ms: deliver_at_ms.unwrap_or(0), ..Pending::new(format!("0-{seq}"), env) })
}

/// The window under test, the model, and the lane's clock.
struct Lane {
    window: Window,
    cap: KeyCap,
    max_in_flight: usize,
    msgs: Vec<Msg>,
    now: u64,
    max_attempts: u32,
    failing: Option<u8>,
    last_watermark: u64,
    /// Per key, the last sequence handed out for the first time.
    first_handouts: HashMap<u8, u64>,
    delivered: Vec<u64>,
    dead_lettered: Vec<u64>,
}

impl Lane {
    fn new(max_attempts: u32, max_in_flight: usize, over: OverCap) -> Self {
        let cap = KeyCap::for_lane(max_in_flight, over);
        Lane {
            window: Window::starting_at(0, 8).with_key_cap(cap),
            cap,
            max_in_flight,
            msgs: Vec::new(),
            now: START_MS,
            max_attempts,
            failing: None,
            last_watermark: 0,
            first_handouts: HashMap::new(),
            delivered: Vec::new(),
            dead_lettered: Vec::new(),
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append { key, delay_ms } => self.append(*key, *delay_ms),
            Op::Call { probe, max, outcomes } => {
                self.call(*probe, *max, outcomes);
            }
            Op::Advance(ms) => self.now += ms,
            Op::FailForever(key) => self.failing = *key,
            Op::Fill => self.fill(),
        }
    }

    /// Written to the source, not read yet.
    fn append(&mut self, key: Option<u8>, delay_ms: Option<u64>) {
        let deliver_at_ms = delay_ms.map(|d| self.now + d);
        let due_ms = deliver_at_ms.unwrap_or(0);
        let m = Msg {
            key,
            due_ms,
            attempts: 0,
            finished: 0,
            handed_out: false,
            read: false,
            deferred: false,
            deliver_at_ms,
        };
        self.msgs.push(m);
    }

    /// In the window: read, unfinished, not deferred.
    fn held(m: &Msg) -> bool {
        m.read && !m.deferred && m.finished == 0
    }

    fn held_of(&self, key: u8) -> usize {
        self.msgs.iter().filter(|m| Self::held(m) && m.key == Some(key)).count()
    }

    /// The lane's fill: the deferred first (per key with room, oldest
    /// first, up to the cap), then new messages up to the room.
    fn fill(&mut self) {
        let mut expected = Vec::new();
        for k in 0..KEYS {
            let room = self.cap.per_key.saturating_sub(self.held_of(k));
            let deferred = self.msgs.iter().enumerate().filter(|(_, m)| m.deferred && m.key == Some(k));
            expected.extend(deferred.take(room).map(|(s, _)| s as u64));
        }
        expected.sort_unstable();
        assert_eq!(self.window.to_reread(), expected, "deferred to read again");
        for seq in expected {
            let m = &self.msgs[seq as usize];
            assert!(self.window.readmit(seq, pending(seq, m.key, m.deliver_at_ms)), "seq {seq} read again");
            self.msgs[seq as usize].deferred = false;
        }
        let room = self.max_in_flight.saturating_sub(self.window.occupying(self.now));
        let from = self.window.next_read() as usize;
        for seq in from..(from + room).min(self.msgs.len()) {
            let m = &self.msgs[seq];
            let key = m.key;
            let defers = self.cap.over == OverCap::Defer
                && key.is_some_and(|k| {
                    self.held_of(k) >= self.cap.per_key
                        || self.msgs.iter().any(|m| m.deferred && m.key == Some(k))
                });
            let admitted = self.window.admit(seq as u64, pending(seq as u64, key, m.deliver_at_ms));
            assert_eq!(admitted, !defers, "seq {seq}: admitted");
            self.msgs[seq].read = true;
            self.msgs[seq].deferred = defers;
        }
    }

    /// The model's eligible messages, oldest first: in the window, due, and
    /// the oldest unfinished of their key (nothing is in flight between
    /// calls; a key's held messages are older than its deferred ones).
    fn eligible(&self) -> Vec<u64> {
        let mut keys_seen = HashSet::new();
        let unfinished = self.msgs.iter().enumerate().filter(|(_, m)| m.read && m.finished == 0);
        let heads: Vec<(usize, &Msg)> =
            unfinished.filter(|(_, m)| m.key.is_none_or(|k| keys_seen.insert(k))).collect();
        let heads = heads.into_iter().filter(|(_, m)| !m.deferred);
        heads.filter(|(_, m)| m.due_ms <= self.now).map(|(seq, _)| seq as u64).collect()
    }

    fn call(&mut self, probe: bool, max: usize, outcomes: &[Outcome]) -> Vec<u64> {
        self.fill();
        let eligible = self.eligible();
        let batch = if probe {
            let batch = self.window.select_probe(self.now);
            let fewest = eligible.iter().copied().min_by_key(|s| (self.msgs[*s as usize].attempts, *s));
            assert_eq!(batch, fewest.into_iter().collect::<Vec<_>>(), "probe: fewest attempts, then oldest");
            batch
        } else {
            let batch = self.window.select(self.now, max);
            let start = match eligible.first() {
                Some(&s) if self.msgs[s as usize].attempts > 0 => {
                    eligible.iter().copied().min_by_key(|s| (self.msgs[*s as usize].due_ms, *s))
                }
                first => first.copied(),
            };
            let from_start = eligible.iter().copied().filter(|s| start.is_some_and(|st| *s >= st));
            let expected: Vec<u64> = from_start.take(max.max(1)).collect();
            assert_eq!(
                batch, expected,
                "select: from the oldest eligible (or, after a retry, the one due longest), up to max"
            );
            batch
        };
        for (i, &seq) in batch.iter().enumerate() {
            self.check_handout(seq);
            let outcome = match self.msgs[seq as usize].key {
                Some(k) if Some(k) == self.failing => Outcome::Retry { backoff_ms: 10 + i as u64 },
                _ if outcomes.is_empty() => Outcome::Deliver,
                _ => outcomes[i % outcomes.len()],
            };
            self.settle(seq, outcome);
        }
        batch
    }

    /// Per-key order at the moment a message is handed to the plugin.
    fn check_handout(&mut self, seq: u64) {
        let m = &self.msgs[seq as usize];
        assert_eq!(m.finished, 0, "seq {seq} handed out after it finished");
        assert!(m.due_ms <= self.now, "seq {seq} handed out before due");
        assert!(self.window.get(seq).expect("a handed-out message is in the window").in_flight);
        if let Some(k) = m.key {
            let earlier = &self.msgs[..seq as usize];
            let blocker = earlier.iter().position(|e| e.key == Some(k) && e.finished == 0);
            assert_eq!(blocker, None, "seq {seq} of key {k} handed out before an earlier one finished");
            if !m.handed_out
                && let Some(prev) = self.first_handouts.insert(k, seq)
            {
                assert!(prev < seq, "key {k}: first handout of {seq} after {prev}");
            }
        }
        self.msgs[seq as usize].handed_out = true;
    }

    fn settle(&mut self, seq: u64, outcome: Outcome) {
        let now = self.now;
        match outcome {
            Outcome::Deliver => self.finish(seq, false),
            Outcome::Retry { backoff_ms } => {
                let failure = Failure {
                    attempt: 0,
                    at_ms: now,
                    kind: FailureKind::Retry.into(),
                    reason: "busy".into(),
                };
                let exhausted = self.window.fail(seq, failure, self.max_attempts, now + backoff_ms);
                let m = &mut self.msgs[seq as usize];
                m.attempts += 1;
                assert_eq!(
                    exhausted,
                    m.attempts >= self.max_attempts,
                    "seq {seq}: exhausted after {}",
                    m.attempts
                );
                if exhausted {
                    self.finish(seq, true);
                } else {
                    m.due_ms = now + backoff_ms;
                }
            }
            Outcome::Reject => {
                self.window.reject(seq, FailureKind::Reject, now, "no".into());
                self.msgs[seq as usize].attempts += 1;
                self.finish(seq, true);
            }
        }
    }

    fn finish(&mut self, seq: u64, dead_lettered: bool) {
        let p = self.window.finish(seq).expect("an unfinished message finishes");
        let m = &mut self.msgs[seq as usize];
        assert_eq!(p.id, format!("0-{seq}"));
        assert_eq!((p.attempts, p.failures.len()), (m.attempts, m.attempts as usize), "seq {seq}: attempts");
        m.finished += 1;
        if dead_lettered { self.dead_lettered.push(seq) } else { self.delivered.push(seq) }
    }

    /// No loss, the watermark, and the counts the engine reads.
    fn check(&mut self) {
        let appended = self.msgs.len() as u64;
        for (seq, m) in self.msgs.iter().enumerate() {
            assert!(m.finished <= 1, "seq {seq} finished {} times", m.finished);
            assert_eq!(self.window.get(seq as u64).is_some(), Self::held(m), "seq {seq}: in window vs held");
            assert_eq!(self.window.is_finished(seq as u64), m.finished == 1, "seq {seq}: is_finished");
            if m.deferred {
                let state = self.window.state_of(seq as u64, self.now).map(|t| t.state);
                assert_eq!(state, Some(MessageState::Pending), "seq {seq}: a deferred message is pending");
            }
        }
        for k in 0..KEYS {
            if self.cap.over == OverCap::Defer {
                assert!(self.held_of(k) <= self.cap.per_key, "key {k}: more than its cap in the window");
            }
        }
        let unfinished = self.msgs.iter().filter(|m| m.finished == 0).count();
        let held = self.msgs.iter().filter(|m| Self::held(m)).count();
        assert_eq!(self.window.len(), held);
        assert_eq!(self.window.snapshot().deferred, self.msgs.iter().filter(|m| m.deferred).count());
        assert_eq!(
            self.delivered.len() + self.dead_lettered.len() + unfinished,
            self.msgs.len(),
            "lost a message"
        );
        assert_eq!(self.window.snapshot().in_flight, 0, "in flight between calls");

        let watermark = self.window.watermark();
        let lowest_unfinished = self.msgs.iter().position(|m| m.finished == 0).map_or(appended, |s| s as u64);
        assert!(
            watermark >= self.last_watermark,
            "watermark went back {} -> {watermark}",
            self.last_watermark
        );
        assert_eq!(watermark, lowest_unfinished, "watermark vs lowest unfinished");
        let read = self.msgs.iter().filter(|m| m.read).count() as u64;
        assert_eq!(self.window.next_read(), read);
        self.last_watermark = watermark;

        let occupies = |m: &&Msg| Self::held(m) && !(m.attempts == 0 && m.due_ms > self.now);
        let keyless = self.msgs.iter().filter(occupies).filter(|m| m.key.is_none()).count();
        let keyed: usize = (0..KEYS)
            .map(|k| {
                self.msgs.iter().filter(occupies).filter(|m| m.key == Some(k)).count().min(self.cap.per_key)
            })
            .sum();
        assert_eq!(self.window.occupying(self.now), keyless + keyed, "occupying");
        let mut keys_seen = HashSet::new();
        let heads = self.msgs.iter().filter(|m| Self::held(m) && m.key.is_none_or(|k| keys_seen.insert(k)));
        assert_eq!(self.window.next_due_ms(), heads.map(|m| m.due_ms).min(), "next_due_ms");
        let retrying = (0..KEYS)
            .filter(|k| {
                self.msgs.iter().find(|m| Self::held(m) && m.key == Some(*k)).is_some_and(|m| m.attempts > 0)
            })
            .count();
        assert_eq!(self.window.snapshot().retrying_keys, retrying, "retrying_keys");
    }

    /// Every key healthy, the clock moved to the next due time each round:
    /// everything ends delivered or dead-lettered.
    fn drain(&mut self) {
        self.failing = None;
        // Each round finishes at least one message: the bound is the count.
        for _ in 0..=self.msgs.len() {
            self.fill();
            let Some(due) = self.window.next_due_ms() else { break };
            self.now = self.now.max(due);
            let batch = self.call(false, 8, &[Outcome::Deliver]);
            assert!(!batch.is_empty(), "nothing handed out at {} though {due} was due", self.now);
            self.check();
        }
        assert_eq!(self.window.len(), 0, "window not empty after draining");
        assert!(self.msgs.iter().all(|m| m.finished == 1));
        assert_eq!(self.window.watermark(), self.msgs.len() as u64);
    }
}

fn key() -> impl Strategy<Value = Option<u8>> {
    prop_oneof![1 => Just(None), 4 => (0..KEYS).prop_map(Some)]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => Just(Outcome::Deliver),
        2 => (0..50u64).prop_map(|backoff_ms| Outcome::Retry { backoff_ms }),
        1 => Just(Outcome::Reject),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let delay = prop_oneof![4 => Just(None), 1 => (1..200u64).prop_map(Some)];
    prop_oneof![
        4 => (key(), delay).prop_map(|(key, delay_ms)| Op::Append { key, delay_ms }),
        4 => (prop::bool::weighted(0.2), 0..5usize, prop::collection::vec(outcome(), 1..6))
            .prop_map(|(probe, max, outcomes)| Op::Call { probe, max, outcomes }),
        2 => (0..60u64).prop_map(Op::Advance),
        1 => prop_oneof![Just(None), (0..KEYS).prop_map(Some)].prop_map(Op::FailForever),
        1 => Just(Op::Fill),
    ]
}

fn over_cap() -> impl Strategy<Value = OverCap> {
    prop_oneof![Just(OverCap::Defer), Just(OverCap::Hold)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn the_window_follows_the_model(
        ops in prop::collection::vec(op(), 0..150),
        max_attempts in 1..6u32,
        max_in_flight in 2..40usize,
        over in over_cap(),
    ) {
        let mut lane = Lane::new(max_attempts, max_in_flight, over);
        for op in &ops {
            lane.apply(op);
            lane.check();
        }
        lane.drain();
    }

    /// Key 0 fails forever and gets most of the writes, many more than
    /// `max_in_flight`: every other key is still delivered (in order, as
    /// every handout checks), key 0 holds at most its cap of room, and once
    /// it recovers all of it is delivered in order too.
    #[test]
    fn a_key_failing_forever_does_not_starve_the_others(
        keys in prop::collection::vec(prop_oneof![3 => Just(0u8), 1 => 1..KEYS], 1..120),
        probes in prop::collection::vec(any::<bool>(), 1..8),
        max in 1..4usize,
        max_in_flight in 2..24usize,
        over in over_cap(),
    ) {
        let mut lane = Lane::new(u32::MAX, max_in_flight, over);
        lane.failing = Some(0);
        keys.iter().for_each(|k| lane.append(Some(*k), None));
        // Each round hands out a healthy message, reads at least one more
        // from the source, or retries key 0's head.
        for round in 0..4 * (keys.len() + 1) {
            // Before a probe, the failing key's retried head is due again too.
            let failing_head = lane.msgs.iter().find(|m| m.key == Some(0) && m.finished == 0);
            let probe = probes[round % probes.len()];
            if let Some(head) = failing_head.filter(|_| probe) {
                lane.now = lane.now.max(head.due_ms);
            }
            lane.fill();
            let eligible = lane.eligible();
            let healthy_waiting = eligible.iter().any(|s| lane.msgs[*s as usize].key != Some(0));
            let failed_waiting = eligible.iter().any(|s| lane.msgs[*s as usize].attempts > 0);
            let batch = lane.call(probe, max, &[Outcome::Deliver]);
            // Until key 0 failed once, its head ties with the others (oldest first).
            if probe && healthy_waiting && failed_waiting {
                prop_assert_ne!(lane.msgs[batch[0] as usize].key, Some(0), "the probe took the failing key");
            }
            lane.check();
            let healthy_left = lane.msgs.iter().any(|m| m.key != Some(0) && m.finished == 0);
            match lane.window.next_due_ms() {
                _ if !healthy_left => break,
                Some(due) => lane.now = lane.now.max(due),
                None => {}
            }
        }
        for (seq, m) in lane.msgs.iter().enumerate() {
            prop_assert_eq!(m.finished == 1, m.key != Some(0), "seq {} of key {:?}", seq, m.key);
        }
        lane.drain();
    }
}

#[test]
fn a_delayed_message_waits_and_does_not_occupy() {
    let mut w = Window::starting_at(0, 8);
    w.admit(0, pending(0, None, Some(START_MS + 100)));
    w.admit(1, pending(1, Some(1), None));
    assert_eq!(w.occupying(START_MS), 1, "the delayed message is not counted");
    assert_eq!(w.select(START_MS, 8), vec![1]);
    assert!(w.select(START_MS + 99, 8).is_empty(), "not due yet");
    let state = w.state_of(0, START_MS + 99).expect("in the window").state;
    assert_eq!(state, MessageState::Delayed);
    assert_eq!(w.occupying(START_MS + 100), 2);
    assert_eq!(w.select(START_MS + 100, 8), vec![0]);
    assert_eq!(w.watermark(), 0, "a delayed message holds the watermark");
}

#[test]
fn a_delayed_message_holds_back_its_own_key_only() {
    let mut w = Window::starting_at(0, 8);
    w.admit(0, pending(0, Some(1), Some(START_MS + 50)));
    w.admit(1, pending(1, Some(1), None));
    w.admit(2, pending(2, Some(2), None));
    assert_eq!(w.select(START_MS, 8), vec![2], "key 1 waits behind its delayed head");
    assert_eq!(w.next_due_ms(), Some(START_MS + 50));
    assert_eq!(w.select(START_MS + 50, 8), vec![0]);
    assert!(w.finish(0).is_some());
    assert_eq!(w.select(START_MS + 50, 8), vec![1]);
}

#[test]
fn retries_that_come_due_again_do_not_starve_a_waiting_message() {
    let mut w = Window::starting_at(0, 8);
    for seq in 0..3 {
        w.admit(seq, pending(seq, Some(seq as u8), None));
    }
    let failure =
        || Failure { attempt: 0, at_ms: START_MS, kind: FailureKind::Trap.into(), reason: "trap".into() };
    // Keys 0 and 1 fail and are due again 10 ms later, long before the
    // next call: key 2, waiting since it was written, goes first.
    for seq in 0..2 {
        assert_eq!(w.select(START_MS, 1), vec![seq]);
        assert!(!w.fail(seq, failure(), 100, START_MS + 10));
    }
    assert_eq!(w.select(START_MS + 300, 1), vec![2]);
    assert_eq!(w.select(START_MS + 300, 8), vec![0, 1], "then the retries, oldest first");
}
