//! The idempotency window of a namespace: `idempotency_key` → the message id
//! of the first write that used it, for `idempotency.window_ms`.
//!
//! Durable in `<data_dir>/<ns>/idempotency/`, a `wharf_log::Partition` whose
//! records are a version byte plus postcard of [`Seen`]. Order of a write:
//! message appended (durable) → key recorded (durable) → reply. A crash
//! between the two is covered at start-up: every retained message in the
//! namespace's logs that carries an idempotency key is folded into the window
//! (and recorded) before the API opens; the message just appended is in its
//! partition's active segment, which is never garbage-collected.
//!
//! Concurrent writes with the same key: the first reserves the key, the
//! others wait for it and then answer as duplicates of it.
//!
//! The covered mark, `<dir>/keys-covered` (JSON
//! `{"version":1,"heads":[..]}`, one sequence per partition): every
//! retained message below these sequences has its key recorded, durably.
//! It is written while no key is reserved (and none was reserved while the
//! heads were read), no write in this process ended with its keys
//! unsettled, the heads are durable (flushed, so no record below them can
//! be discarded and its sequence reused) and the window is fdatasync'ed:
//! when the heads moved past it (no mark counts as every head at 0): at
//! start-up once the scan is done, every few seconds while messages
//! arrive, and at a clean stop. A start reads each partition only from its
//! mark (from its head, if the mark is above it), so a restart reads what
//! came after the last mark, not the whole log. A mark that cannot be read
//! is reported and the start reads everything.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::clock::engine_ms;

const VERSION: u8 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seen {
    pub key: String,
    pub message_id: String,
    pub at_ms: u64,
}

#[derive(Debug)]
enum Slot {
    /// A write with this key is between reserve and complete.
    Pending(Arc<Notify>),
    Done {
        message_id: String,
        at_ms: u64,
    },
}

#[derive(Debug)]
pub struct Idempotency {
    window_ms: u64,
    log: wharf_log::Partition,
    slots: Mutex<HashMap<String, Slot>>,
    /// (log sequence, time) of recorded keys, oldest first, for GC.
    order: Mutex<VecDeque<(u64, u64, String)>>,
    /// Where the covered mark lives (the window's own directory).
    dir: PathBuf,
    /// The heads of the last covered mark this process read (at open) or
    /// wrote.
    last_covered: Mutex<Option<Vec<u64>>>,
    /// Keys reserved and not yet recorded or released (the `Pending`
    /// slots, counted so that a mark does not walk the whole window).
    pending: AtomicUsize,
    /// Reservations ever made: a mark is written only if none came while
    /// it read the heads.
    reservations: AtomicU64,
    /// A write ended with keys unsettled, or a key record failed: a
    /// message may lack its key, so this process writes no mark.
    unsettled: AtomicBool,
}

/// The covered mark's file name in the window's directory.
const COVERED: &str = "keys-covered";

#[derive(Debug, Serialize, Deserialize)]
struct Covered {
    version: u8,
    heads: Vec<u64>,
}

/// The answer to [`Idempotency::reserve`].
#[derive(Debug)]
pub enum Reservation {
    /// First use: write, then call `complete` (or `release` on failure).
    Reserved,
    /// Seen before: the original message id.
    Duplicate(String),
}

impl Idempotency {
    /// Opens the window. Before it is used, [`Idempotency::recover`] folds
    /// in the keys of retained messages it does not know.
    pub fn open(
        dir: &Path,
        opts: wharf_log::LogOptions,
        window: Duration,
    ) -> Result<Self, wharf_log::LogError> {
        let (log, _) = wharf_log::Partition::open(dir, opts)?;
        let window_ms = window.as_millis() as u64;
        let cutoff = engine_ms().saturating_sub(window_ms);
        let mut slots = HashMap::new();
        let mut order = VecDeque::new();
        let mut from = log.first_seq().max(log.watermark());
        loop {
            let records = log.read(from, 4096, 8 << 20)?;
            let Some(last) = records.last() else { break };
            from = last.seq + 1;
            for r in records {
                match decode(&r.payload) {
                    Some(s) if s.at_ms >= cutoff => {
                        order.push_back((r.seq, s.at_ms, s.key.clone()));
                        slots.insert(s.key, Slot::Done { message_id: s.message_id, at_ms: s.at_ms });
                    }
                    Some(_) => {}
                    None => tracing::warn!(seq = r.seq, "idempotency record does not decode; ignored"),
                }
            }
        }
        Ok(Self {
            window_ms,
            log,
            slots: Mutex::new(slots),
            order: Mutex::new(order),
            last_covered: Mutex::new(read_covered(dir)),
            dir: dir.to_path_buf(),
            pending: AtomicUsize::new(0),
            reservations: AtomicU64::new(0),
            unsettled: AtomicBool::new(false),
        })
    }

    /// Marks `heads()` (the partitions' durable heads) as covered, if no
    /// key is reserved and none was reserved while the heads were read, and
    /// every write settled its keys. Returns whether it wrote the mark.
    /// Blocking (fdatasync, rename).
    pub fn mark_covered(&self, heads: impl FnOnce() -> Option<Vec<u64>>) -> std::io::Result<bool> {
        let reservations = self.reservations.load(Ordering::SeqCst);
        if self.unsettled.load(Ordering::SeqCst) || self.any_pending() {
            return Ok(false);
        }
        let Some(heads) = heads() else { return Ok(false) };
        if self.any_pending()
            || self.reservations.load(Ordering::SeqCst) != reservations
            || self.unsettled.load(Ordering::SeqCst)
        {
            return Ok(false);
        }
        self.log.flush().map_err(std::io::Error::other)?;
        let mark = serde_json::to_vec(&Covered { version: 1, heads: heads.clone() })
            .map_err(std::io::Error::other)?;
        crate::storage::atomic::replace(&self.dir.join(COVERED), &mark)?;
        *self.last_covered.lock().unwrap_or_else(|p| p.into_inner()) = Some(heads);
        Ok(true)
    }

    /// The sequences below which every retained message has its key
    /// recorded, per partition: the covered mark read at open or written
    /// since (`None`: no usable mark, read everything).
    pub fn last_covered(&self) -> Option<Vec<u64>> {
        self.last_covered.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Removes the covered mark (when it could not be brought down to the
    /// heads after a log lost its tail): the next start reads everything.
    pub fn forget_covered(&self) -> std::io::Result<()> {
        crate::storage::atomic::remove(&self.dir.join(COVERED))?;
        *self.last_covered.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    fn any_pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst) > 0
    }

    /// Whether `key` is recorded (at start-up, before any write: see
    /// [`Idempotency::recover`]).
    pub fn knows(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    /// Whether a retained message with `key`, written at `at_ms`, is one
    /// [`Idempotency::recover`] must fold in: inside the window, and not
    /// recorded (a crash came between its append and its key's record).
    pub fn lacks(&self, key: &str, at_ms: u64) -> bool {
        !self.knows(key) && at_ms >= engine_ms().saturating_sub(self.window_ms)
    }

    /// Folds in the retained messages the window [`lacks`](Idempotency::lacks);
    /// the others in `retained` are left out.
    pub fn recover(&self, retained: Vec<Seen>) -> Result<(), wharf_log::LogError> {
        let missing: Vec<Seen> = retained.into_iter().filter(|s| self.lacks(&s.key, s.at_ms)).collect();
        if !missing.is_empty() {
            tracing::info!(keys = missing.len(), "idempotency keys recovered from the message log");
            for chunk in missing.chunks(4096) {
                self.record(chunk.to_vec())?;
            }
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `key`, or returns the message id that already used it.
    pub async fn reserve(&self, key: &str) -> Reservation {
        loop {
            let wait = {
                let mut slots = self.lock();
                match slots.get(key) {
                    Some(Slot::Done { message_id, at_ms })
                        if engine_ms().saturating_sub(*at_ms) < self.window_ms =>
                    {
                        return Reservation::Duplicate(message_id.clone());
                    }
                    Some(Slot::Pending(n)) => n.clone(),
                    _ => {
                        slots.insert(key.to_string(), Slot::Pending(Arc::new(Notify::new())));
                        self.pending.fetch_add(1, Ordering::SeqCst);
                        self.reservations.fetch_add(1, Ordering::SeqCst);
                        return Reservation::Reserved;
                    }
                }
            };
            // `notified` registers before the re-check on the next loop turn.
            let notified = wait.notified();
            if matches!(self.lock().get(key), Some(Slot::Pending(_))) {
                notified.await;
            }
        }
    }

    /// The message id that used `key` within the window, if any.
    pub fn lookup(&self, key: &str) -> Option<String> {
        match self.lock().get(key) {
            Some(Slot::Done { message_id, at_ms }) if engine_ms().saturating_sub(*at_ms) < self.window_ms => {
                Some(message_id.clone())
            }
            _ => None,
        }
    }

    /// Records the keys of a write (`(key, message id)`) durably, in one
    /// append: one fdatasync for a whole batch (blocking; call from a
    /// blocking thread).
    pub fn complete(&self, done: &[(String, String)]) -> Result<(), wharf_log::LogError> {
        let at_ms = engine_ms();
        let recorded = self.record(
            done.iter().map(|(key, id)| Seen { key: key.clone(), message_id: id.clone(), at_ms }).collect(),
        );
        if recorded.is_err() {
            self.unsettled.store(true, Ordering::SeqCst);
        }
        recorded
    }

    /// Gives up a reservation after a failed write. A key already recorded
    /// is left as it is.
    pub fn release(&self, key: &str) {
        let pending = {
            let mut slots = self.lock();
            match slots.get(key) {
                Some(Slot::Pending(_)) => slots.remove(key),
                _ => None,
            }
        };
        if let Some(Slot::Pending(n)) = pending {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            n.notify_waiters();
        }
    }

    fn record(&self, seen: Vec<Seen>) -> Result<(), wharf_log::LogError> {
        if seen.is_empty() {
            return Ok(());
        }
        let bytes: Vec<Vec<u8>> = seen.iter().map(encode).collect();
        let records: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        let appended = self.log.append(&records);
        let previous: Vec<Option<Slot>> = {
            let mut slots = self.lock();
            seen.iter()
                .map(|s| match &appended {
                    Ok(_) => slots.insert(
                        s.key.clone(),
                        Slot::Done { message_id: s.message_id.clone(), at_ms: s.at_ms },
                    ),
                    Err(_) => slots.remove(&s.key),
                })
                .collect()
        };
        for p in previous {
            if let Some(Slot::Pending(n)) = p {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                n.notify_waiters();
            }
        }
        let appended = appended?;
        let mut order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        for (i, s) in seen.into_iter().enumerate() {
            order.push_back((appended.first_seq + i as u64, s.at_ms, s.key));
        }
        self.expire(&mut order)
    }

    /// Forgets keys older than the window and lets the log drop them.
    fn expire(&self, order: &mut VecDeque<(u64, u64, String)>) -> Result<(), wharf_log::LogError> {
        let cutoff = engine_ms().saturating_sub(self.window_ms);
        let mut moved = None;
        while let Some((seq, at, _)) = order.front() {
            if *at >= cutoff {
                break;
            }
            moved = Some(seq + 1);
            if let Some((_, _, key)) = order.pop_front() {
                let mut slots = self.lock();
                if matches!(slots.get(&key), Some(Slot::Done { at_ms, .. }) if *at_ms < cutoff) {
                    slots.remove(&key);
                }
            }
        }
        match moved {
            Some(wm) => self.log.advance_watermark(wm),
            None => Ok(()),
        }
    }
}

fn encode(s: &Seen) -> Vec<u8> {
    crate::storage::record::encode(VERSION, s)
}

fn decode(bytes: &[u8]) -> Option<Seen> {
    crate::storage::record::decode(VERSION, bytes).ok()
}

/// The keys one write has reserved and not yet settled, each with the
/// index of the first message in the write that uses it. Dropping it
/// releases every key still held, so a write that ends early (an error
/// returned, a panic unwinding its task) never leaves a key pending: a
/// retry with that key would wait for it forever.
#[derive(Debug)]
pub struct HeldKeys<'a> {
    window: Option<&'a Idempotency>,
    first_use: HashMap<String, usize>,
}

impl<'a> HeldKeys<'a> {
    pub fn new(window: Option<&'a Idempotency>) -> Self {
        Self { window, first_use: HashMap::new() }
    }

    /// The index of the message that holds `key`, if this write holds it.
    pub fn first_use(&self, key: &str) -> Option<usize> {
        self.first_use.get(key).copied()
    }

    /// Takes over a key [`Idempotency::reserve`] just reserved.
    pub fn hold(&mut self, key: String, index: usize) {
        self.first_use.insert(key, index);
    }

    /// Gives `key` back now: its message was not appended.
    pub fn release(&mut self, key: &str) {
        if self.first_use.remove(key).is_some()
            && let Some(w) = self.window
        {
            w.release(key);
        }
    }

    /// [`Idempotency::complete`] returned for every key still held: each is
    /// recorded, or was given back by it, so none is this write's to release.
    pub fn settled(&mut self) {
        self.first_use.clear();
    }
}

impl Drop for HeldKeys<'_> {
    fn drop(&mut self) {
        let Some(w) = self.window else { return };
        if !self.first_use.is_empty() {
            // Its message may be appended with the key unrecorded.
            w.unsettled.store(true, Ordering::SeqCst);
        }
        for key in self.first_use.keys() {
            w.release(key);
        }
    }
}

/// The covered mark in `dir`, if there is a usable one. One that cannot be
/// read or decoded is reported with its path and not used: the start then
/// reads everything.
fn read_covered(dir: &Path) -> Option<Vec<u64>> {
    let path = dir.join(COVERED);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "covered mark unreadable; reading the whole logs");
            return None;
        }
    };
    match serde_json::from_slice::<Covered>(&bytes) {
        Ok(m) if m.version == 1 => Some(m.heads),
        _ => {
            tracing::warn!(file = %path.display(), "covered mark does not decode; reading the whole logs");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_recovered_from_the_message_log_are_recorded_durably_unless_older_than_the_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = wharf_log::LogOptions::default();
        let window = Duration::from_secs(60);
        let now = engine_ms();
        let seen = |key: &str, at_ms| Seen { key: key.into(), message_id: format!("0-{key}"), at_ms };
        let idem = Idempotency::open(dir.path(), opts, window).expect("open");
        assert!(idem.lacks("fresh", now) && !idem.lacks("stale", now - 120_000));
        idem.recover(vec![seen("fresh", now), seen("stale", now - 120_000)]).expect("recover");
        assert!(idem.knows("fresh") && !idem.lacks("fresh", now), "a key of the window is folded in");
        assert!(!idem.knows("stale"), "a key older than the window is not");
        drop(idem);
        let again = Idempotency::open(dir.path(), opts, window).expect("reopen");
        assert_eq!(again.lookup("fresh").as_deref(), Some("0-fresh"), "recorded durably");
        assert!(!again.knows("stale"));
    }

    fn window(dir: &Path) -> Idempotency {
        Idempotency::open(dir, wharf_log::LogOptions::default(), Duration::from_secs(60)).expect("open")
    }

    /// Reserves `key`, or says it is still pending (a retry would wait).
    fn try_reserve(idem: &Idempotency, key: &str) -> Option<Reservation> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        rt.block_on(async { tokio::time::timeout(Duration::from_millis(50), idem.reserve(key)).await.ok() })
    }

    #[test]
    fn keys_a_write_still_holds_are_released_when_it_ends_early_even_by_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let idem = window(dir.path());
        // Ended by an error: the write returns with its keys held.
        let held_then_dropped = || -> Result<(), &'static str> {
            let mut held = HeldKeys::new(Some(&idem));
            assert!(matches!(try_reserve(&idem, "a"), Some(Reservation::Reserved)));
            held.hold("a".into(), 0);
            assert!(try_reserve(&idem, "a").is_none(), "a held key makes a retry wait");
            Err("the write failed before recording its keys")
        };
        assert!(held_then_dropped().is_err());
        assert!(matches!(try_reserve(&idem, "a"), Some(Reservation::Reserved)), "released on return");
        idem.release("a");
        // Ended by a panic.
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut held = HeldKeys::new(Some(&idem));
            assert!(matches!(try_reserve(&idem, "b"), Some(Reservation::Reserved)));
            held.hold("b".into(), 0);
            panic!("a bug in the write path");
        }));
        assert!(unwound.is_err());
        assert!(matches!(try_reserve(&idem, "b"), Some(Reservation::Reserved)), "released by the unwinding");
    }

    #[test]
    fn a_settled_key_stays_recorded_and_a_release_never_drops_a_recorded_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let idem = window(dir.path());
        {
            let mut held = HeldKeys::new(Some(&idem));
            assert!(matches!(try_reserve(&idem, "k"), Some(Reservation::Reserved)));
            held.hold("k".into(), 0);
            idem.complete(&[("k".into(), "0-7".into())]).expect("record");
            held.settled();
        }
        idem.release("k");
        assert!(
            matches!(try_reserve(&idem, "k"), Some(Reservation::Duplicate(id)) if id == "0-7"),
            "the key answers as a duplicate of its first write"
        );
    }

    #[test]
    fn the_covered_mark_is_written_only_with_no_key_reserved_or_unsettled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let idem = window(dir.path());
        assert_eq!(idem.last_covered(), None, "no mark yet");
        // A key reserved and not recorded: no mark.
        assert!(matches!(try_reserve(&idem, "r"), Some(Reservation::Reserved)));
        assert!(!idem.mark_covered(|| Some(vec![3, 4])).expect("mark"));
        idem.release("r");
        // A reservation while the heads are read: no mark.
        let during = idem.mark_covered(|| {
            assert!(matches!(try_reserve(&idem, "s"), Some(Reservation::Reserved)));
            idem.release("s");
            Some(vec![3, 4])
        });
        assert!(!during.expect("mark"));
        assert!(idem.mark_covered(|| Some(vec![3, 4])).expect("mark"), "nothing pending: marked");
        assert!(idem.mark_covered(|| Some(vec![5, 6])).expect("mark"), "marked again later");
        drop(idem);
        let idem = window(dir.path());
        assert_eq!(idem.last_covered(), Some(vec![5, 6]));
        // A write that ended with its keys unsettled: never again in this process.
        {
            let mut held = HeldKeys::new(Some(&idem));
            assert!(matches!(try_reserve(&idem, "t"), Some(Reservation::Reserved)));
            held.hold("t".into(), 0);
        }
        assert!(!idem.mark_covered(|| Some(vec![7, 8])).expect("mark"));
        assert_eq!(idem.last_covered(), Some(vec![5, 6]), "the last mark stands");
        idem.forget_covered().expect("forget");
        assert_eq!(idem.last_covered(), None);
    }
}
