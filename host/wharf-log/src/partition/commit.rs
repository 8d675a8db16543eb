//! Async appends: the group commit without a thread per waiting writer.
//!
//! [`Partition::enqueue_stamped`] does what a blocking `Fsync` append does
//! before it waits — takes the sequences, stamps and frames the records
//! onto the commit queue, under the short `sync` mutex — and returns a
//! [`Commit`]. [`Partition::poll_commit`] then never blocks:
//! - `Ready(Done(..))`: the records are durable (covered by a round), or
//!   were discarded (a temporary write failure), or the partition halted;
//! - `Pending`: a round is in flight; the appender is registered as a
//!   waiter and its waker is woken when a round covers it or picks it to
//!   lead (the same targeted wake-ups as a parked thread's);
//! - `Ready(Lead)`: no round is in flight: the caller must run
//!   [`Partition::lead`] (or [`Partition::lead_commit`]) on a thread that
//!   may block (it gathers, writes, fdatasyncs, wakes the waiters it
//!   covered and one to lead next).
//!
//! So a round costs one blocking call (the leader's) and one wake per
//! waiter, whatever the number of writers, and a waiting writer holds no
//! thread. [`Partition::lead`] goes on leading after the leader's own
//! round (`keep_leading`): while records keep arriving one thread
//! runs round after round, the async appenders wait for its next round
//! instead of starting one, and no round needs a hand-off to a new leader
//! thread. Between rounds it lingers (`linger`: at most half an fdatasync,
//! 200 µs) while appenders are in flight, since those it just woke come
//! straight back; without that wait the queue is empty at the end of
//! every round and each round starts on a new blocking thread. Buffered
//! partitions complete in `enqueue_stamped` (pwrite(2)
//! under the writer lock, as `append` does).
//!
//! Invariant: a dropped, unfinished `Commit` leaves the queue as it found
//! it — it deregisters its waiter and, if no round is in flight, wakes one
//! remaining waiter to lead, so no waiter is left without a leader. Its
//! records stay queued (they have sequences) and are written by the next
//! round like anybody's; only the acknowledgement is lost, as with a
//! client that disconnects.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use super::{
    Appended, COVERED, Durability, LogError, Partition, Stamp, SyncState, WAITING, WaitSlot, Waiter,
    check_batch, lock,
};

/// An append whose records are queued (see the module docs). Hold it until
/// [`Partition::poll_commit`] or [`Partition::lead_commit`] says `Done`.
#[derive(Debug)]
pub struct Commit {
    first: u64,
    n: u64,
    generation: u64,
    /// Registered as a waiter (a round was in flight at the last poll).
    slot: Option<Arc<WaitSlot>>,
    /// A `Buffered` append's result, known at enqueue.
    ready: Option<Result<Appended, LogError>>,
    done: bool,
    /// `None` for a `Buffered` append (never counted in flight).
    in_append: Option<Arc<AtomicUsize>>,
    sync: Arc<Mutex<SyncState>>,
}

/// What a poll found.
#[derive(Debug)]
pub enum CommitStep {
    /// The append's outcome: durable, or failed (nothing acknowledged).
    Done(Result<Appended, LogError>),
    /// No round is in flight: call [`Partition::lead_commit`] where
    /// blocking is allowed.
    Lead,
}

impl Partition {
    /// [`Partition::append_stamped`] without the wait: queues the records
    /// and returns at once. On `Err` nothing was queued.
    pub fn enqueue_stamped(&self, records: &[&[u8]], stamp: &mut Stamp<'_>) -> Result<Commit, LogError> {
        check_batch(records)?;
        let mut commit = Commit {
            first: 0,
            n: records.len() as u64,
            generation: 0,
            slot: None,
            ready: None,
            done: false,
            in_append: None,
            sync: self.sync.clone(),
        };
        if self.opts.durability == Durability::Buffered {
            commit.ready = Some(self.append_stamped(records, stamp));
            return Ok(commit);
        }
        self.in_append.fetch_add(1, Ordering::AcqRel);
        commit.in_append = Some(self.in_append.clone());
        match self.enqueue(records, Some(stamp)) {
            Ok((queue, first, generation)) => {
                drop(queue);
                (commit.first, commit.generation) = (first, generation);
                Ok(commit)
            }
            Err(e) => {
                commit.done = true; // nothing queued
                Err(e)
            }
        }
    }

    /// One non-blocking look at `commit` (see the module docs).
    pub fn poll_commit(&self, commit: &mut Commit, cx: &mut Context<'_>) -> Poll<CommitStep> {
        if let Some(ready) = commit.ready.take() {
            commit.done = true;
            return Poll::Ready(CommitStep::Done(ready));
        }
        if let Some(slot) = &commit.slot {
            *lock(&slot.waker) = Some(cx.waker().clone());
            match slot.state.load(Ordering::Acquire) {
                COVERED => {
                    let synced = slot.synced.load(Ordering::Relaxed);
                    return Poll::Ready(CommitStep::Done(self.finish(commit, Ok(synced))));
                }
                WAITING => return Poll::Pending,
                _ => commit.slot = None, // RECHECK: lead, or halted
            }
        }
        let end = commit.first + commit.n;
        let mut s = lock(&self.sync);
        if let Some((result, wake)) = self.settled(&mut s, end, commit.generation) {
            drop(s);
            if let Some(w) = wake {
                w.run();
            }
            return Poll::Ready(CommitStep::Done(self.finish(commit, result)));
        }
        if !s.syncing && !s.committer {
            return Poll::Ready(CommitStep::Lead);
        }
        let slot = Arc::new(WaitSlot { waker: Mutex::new(Some(cx.waker().clone())), ..WaitSlot::default() });
        s.waiters.push(Waiter { end, thread: None, slot: slot.clone() });
        commit.slot = Some(slot);
        Poll::Pending
    }

    /// Leads rounds (or parks, if another leader got there first) until
    /// `commit`'s records are durable. Blocks: call it where blocking is
    /// allowed, after a poll said [`CommitStep::Lead`].
    pub fn lead_commit(&self, commit: &mut Commit) -> Result<Appended, LogError> {
        if let Some(ready) = commit.ready.take() {
            commit.done = true;
            return ready;
        }
        let s = lock(&self.sync);
        let result = self.wait_durable(s, commit.first + commit.n, commit.generation);
        self.finish(commit, result)
    }

    /// [`Partition::lead_commit`], its outcome handed to `reply` as soon as
    /// it is durable, then [`Partition::keep_leading`] on the same thread:
    /// what an async caller runs where blocking is allowed after a poll
    /// said [`CommitStep::Lead`].
    pub fn lead(&self, mut commit: Commit, reply: impl FnOnce(Result<Appended, LogError>)) {
        reply(self.lead_commit(&mut commit));
        drop(commit); // out of flight: the next round's gathering must not wait for it
        self.keep_leading();
    }

    /// After a leader's own round (its `Commit` dropped): keeps leading
    /// rounds on this thread while records are queued, so the appenders
    /// behind need no thread hand-off for the next round (a committer
    /// thread while the load lasts, none when it stops). Returns once
    /// nothing is queued, another leader runs a round, or the partition
    /// halted; then, if appenders still wait, one is picked to lead as
    /// usual.
    fn keep_leading(&self) {
        {
            let mut s = lock(&self.sync);
            if s.committer {
                return; // one committer at a time
            }
            s.committer = true;
        }
        loop {
            let s = self.linger(lock(&self.sync));
            if s.syncing || s.pending.is_empty() || self.halted.get().is_some() {
                return stop_committing(s, false);
            }
            let (end, generation) = (s.next_seq, s.generation);
            if self.wait_durable(s, end, generation).is_err() {
                return stop_committing(lock(&self.sync), true);
            }
        }
    }

    /// Between a committer's rounds, while nothing is queued: waits (at
    /// most half an fdatasync, 200 µs) for the appenders the last round
    /// woke to queue again, so that their round runs on this thread
    /// instead of a new leader's. Returns at once if a round is in flight
    /// or records are queued; woken by [`Partition::enqueue`] once everybody
    /// in flight has queued (as a leader's gathering is).
    fn linger<'a>(&'a self, mut s: MutexGuard<'a, SyncState>) -> MutexGuard<'a, SyncState> {
        let deadline = Instant::now() + self.gather_wait();
        let me = std::thread::current();
        while s.pending.is_empty() && !s.syncing && self.halted.get().is_none() {
            let now = Instant::now();
            if now >= deadline || self.in_append.load(Ordering::Acquire) == 0 {
                break;
            }
            s.gathering = Some(me.clone());
            drop(s);
            std::thread::park_timeout(deadline - now);
            s = lock(&self.sync);
            if s.gathering.as_ref().is_some_and(|t| t.id() == me.id()) {
                s.gathering = None; // not another leader's (a blocking appender may lead meanwhile)
            }
        }
        s
    }

    fn finish(&self, commit: &mut Commit, synced: Result<u64, LogError>) -> Result<Appended, LogError> {
        commit.done = true;
        commit.slot = None;
        let through = synced?;
        self.appends.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(commit.n, Ordering::Relaxed);
        Ok(Appended {
            first_seq: commit.first,
            last_seq: commit.first + commit.n - 1,
            synced: true,
            synced_through: through,
        })
    }
}

/// The committer steps down: waiters, if any, get a leader again (`all`:
/// every one re-checks, after a failed round).
fn stop_committing(mut s: std::sync::MutexGuard<'_, SyncState>, all: bool) {
    s.committer = false;
    let wake = s.release(all);
    drop(s);
    wake.run();
}

impl Drop for Commit {
    fn drop(&mut self) {
        if let Some(c) = &self.in_append {
            c.fetch_sub(1, Ordering::AcqRel);
        }
        if self.done || self.in_append.is_none() {
            return;
        }
        // Abandoned: leave no waiter without a leader.
        let mut s = lock(&self.sync);
        if let Some(slot) = &self.slot {
            s.waiters.retain(|w| !Arc::ptr_eq(&w.slot, slot));
        }
        if !s.syncing {
            let wake = s.release(false);
            drop(s);
            wake.run();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LogOptions;
    use std::task::Waker;

    fn poll(p: &Partition, c: &mut Commit) -> Poll<CommitStep> {
        p.poll_commit(c, &mut Context::from_waker(Waker::noop()))
    }

    /// A new partition in a temporary dir (kept alive beside it).
    fn fresh() -> (tempfile::TempDir, Partition) {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Partition::open(dir.path(), LogOptions::default()).expect("open").0;
        (dir, p)
    }

    #[test]
    fn a_lone_commit_leads_and_is_durable() {
        let (dir, p) = fresh();
        let mut c = p.enqueue_stamped(&[b"a", b"b"], &mut |_, _| {}).expect("test");
        assert!(matches!(poll(&p, &mut c), Poll::Ready(CommitStep::Lead)));
        let a = p.lead_commit(&mut c).expect("test");
        assert_eq!((a.first_seq, a.last_seq, a.synced), (0, 1, true));
        assert!(a.synced_through >= 2);
        drop(c);
        assert_eq!(p.in_append.load(Ordering::Acquire), 0);
        drop(p);
        let (p, rec) = Partition::open(dir.path(), LogOptions::default()).expect("test");
        assert_eq!(rec.next_seq, 2);
        assert_eq!(p.read(0, 10, 1 << 20).expect("test").len(), 2);
    }

    #[test]
    fn a_commit_queued_behind_a_round_waits_then_is_covered_or_leads() {
        let (_dir, p) = fresh();
        let mut a = p.enqueue_stamped(&[b"a"], &mut |_, _| {}).expect("test");
        assert!(matches!(poll(&p, &mut a), Poll::Ready(CommitStep::Lead)));
        // A round in flight (as the leader marks it) makes a later commit wait.
        lock(&p.sync).syncing = true;
        let mut b = p.enqueue_stamped(&[b"b"], &mut |_, _| {}).expect("test");
        assert!(poll(&p, &mut b).is_pending());
        assert_eq!(lock(&p.sync).waiters.len(), 1);
        lock(&p.sync).syncing = false;
        // Leading `a` writes the whole queue: `b` is covered by that round.
        p.lead_commit(&mut a).expect("test");
        match poll(&p, &mut b) {
            Poll::Ready(CommitStep::Done(Ok(ack))) => assert_eq!(ack.first_seq, 1),
            Poll::Ready(CommitStep::Lead) => assert_eq!(p.lead_commit(&mut b).expect("test").first_seq, 1),
            other => panic!("b: {other:?}"),
        }
        assert!(lock(&p.sync).waiters.is_empty());
    }

    #[test]
    fn an_abandoned_waiter_deregisters_and_hands_on_the_lead() {
        let (_dir, p) = fresh();
        lock(&p.sync).syncing = true;
        let mut a = p.enqueue_stamped(&[b"a"], &mut |_, _| {}).expect("test");
        let mut b = p.enqueue_stamped(&[b"b"], &mut |_, _| {}).expect("test");
        assert!(poll(&p, &mut a).is_pending());
        assert!(poll(&p, &mut b).is_pending());
        lock(&p.sync).syncing = false;
        drop(a);
        // `b` was told to re-check: with no round in flight it leads, and
        // its round writes `a`'s queued record too.
        assert!(matches!(poll(&p, &mut b), Poll::Ready(CommitStep::Lead)));
        let ack = p.lead_commit(&mut b).expect("test");
        assert!(ack.synced_through >= 2);
        assert_eq!(p.in_append.load(Ordering::Acquire), 1);
        drop(b);
        assert_eq!(p.in_append.load(Ordering::Acquire), 0);
    }

    /// Wakes a parked thread (a minimal executor for the stress test).
    struct Unpark(std::thread::Thread);

    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    /// Runs a commit to its end the way an async caller does: poll, lead
    /// when told to, otherwise wait for the waker.
    fn drive(p: &Partition, mut c: Commit) -> Appended {
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            match p.poll_commit(&mut c, &mut cx) {
                Poll::Ready(CommitStep::Done(r)) => return r.expect("durable"),
                Poll::Ready(CommitStep::Lead) => {
                    let mut ack = None;
                    p.lead(c, |r| ack = Some(r.expect("durable")));
                    return ack.expect("lead replies");
                }
                Poll::Pending => std::thread::park(),
            }
        }
    }

    #[test]
    fn concurrent_async_and_blocking_appenders_get_every_sequence_once() {
        let (dir, p) = fresh();
        let (threads, each) = (16u64, 40u64);
        let mut seqs: Vec<u64> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let p = &p;
                    sc.spawn(move || {
                        (0..each)
                            .map(|i| {
                                let body = format!("{t}-{i}");
                                let ack = if t % 4 == 0 {
                                    p.append(&[body.as_bytes()]).expect("append")
                                } else {
                                    drive(
                                        p,
                                        p.enqueue_stamped(&[body.as_bytes()], &mut |_, _| {}).expect("test"),
                                    )
                                };
                                assert!(ack.synced && ack.synced_through > ack.last_seq);
                                ack.first_seq
                            })
                            .collect::<Vec<u64>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("test")).collect()
        });
        seqs.sort_unstable();
        assert_eq!(seqs, (0..threads * each).collect::<Vec<u64>>());
        assert_eq!(p.in_append.load(Ordering::Acquire), 0);
        assert!(lock(&p.sync).waiters.is_empty());
        drop(p);
        let (p, rec) = Partition::open(dir.path(), LogOptions::default()).expect("test");
        assert_eq!(rec.next_seq, threads * each);
        assert_eq!(p.read(0, usize::MAX, usize::MAX).expect("test").len() as u64, threads * each);
    }

    #[test]
    fn a_committer_leads_the_rounds_of_those_queued_behind_it() {
        let (_dir, p) = fresh();
        let mut a = p.enqueue_stamped(&[b"a"], &mut |_, _| {}).expect("test");
        assert!(matches!(poll(&p, &mut a), Poll::Ready(CommitStep::Lead)));
        p.lead_commit(&mut a).expect("test");
        drop(a);
        lock(&p.sync).committer = true; // as keep_leading marks it
        let mut b = p.enqueue_stamped(&[b"b"], &mut |_, _| {}).expect("test");
        assert!(poll(&p, &mut b).is_pending(), "waits for the committer's round");
        lock(&p.sync).committer = false;
        p.keep_leading();
        assert!(!lock(&p.sync).committer);
        match poll(&p, &mut b) {
            Poll::Ready(CommitStep::Done(Ok(ack))) => assert_eq!(ack.first_seq, 1),
            other => panic!("b: {other:?}"),
        }
        // Nothing queued: keep_leading returns at once.
        p.keep_leading();
        assert!(!lock(&p.sync).committer);
    }

    #[test]
    fn a_halted_partition_fails_a_waiting_commit() {
        let (_dir, p) = fresh();
        lock(&p.sync).syncing = true;
        let mut a = p.enqueue_stamped(&[b"a"], &mut |_, _| {}).expect("test");
        assert!(poll(&p, &mut a).is_pending());
        p.halt_and_wake("test".into());
        assert!(matches!(poll(&p, &mut a), Poll::Ready(CommitStep::Done(Err(LogError::Halted { .. })))));
    }
}
