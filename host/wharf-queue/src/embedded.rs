//! The embedded backend: a queue on one `wharf-log` partition in a local
//! directory. No server; one process (the partition is locked while open).
//!
//! * A message is one log record: key, payload and the Wharf metadata
//!   (attempt, not-before, origin id, dead-letter reason) framed by
//!   [`frame`]/[`unframe`].
//! * Every producer and consumer opened on one directory in one process
//!   shares one [`Shared`] (a process-wide registry), so consumers compete
//!   for messages over one cursor.
//! * `ack` forgets the message and advances the log's durable watermark over
//!   the contiguous done prefix. Acks above the persisted watermark are held
//!   in memory only: after a restart those messages are delivered again (at
//!   least once).
//! * An unacked delivery is delivered again after its consumer is closed or
//!   dropped, after `nack` (after the delay), or when its lease (the
//!   visibility timeout, moved by `extend`) runs out. Unlike the SQS
//!   consumer, the embedded consumer does not extend leases on its own.
//! * Attempts count deliveries (like SQS). Nack delays and attempt counts
//!   live in memory: after a restart a message starts over at the attempt
//!   it was appended with.
//! * Per-key order: a message is not handed out while an earlier message of
//!   the same key is in flight or waiting (delayed, nacked with a delay).
//!   One `receive` may return several consecutive messages of one key (like
//!   an SQS FIFO message group).
//! * `dead_letter` appends to the sibling log `<dir>.dlq` ([`dlq_dir`]),
//!   keeping the message id, then acks.
//! * The consumers look at most [`EmbeddedOptions::window`] unacked
//!   messages ahead of the oldest unacked one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use wharf_log::{LogOptions, Partition};

use crate::util::{not_before, now_ms};
use crate::{Ack, Consumer, Delivery, Durability, Error, Position, Producer, Receipt, Record, Result};

const FRAME_VERSION: u8 = 1;
const FLAG_KEY: u8 = 1;
const FLAG_REASON: u8 = 2;
const READ_RECORDS: usize = 512;
const READ_BYTES: usize = 4 << 20;

/// Options of an embedded queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Log options (durability: fsync by default).
    pub log: LogOptions,
    /// How long a delivery stays reserved for its consumer before it is
    /// handed out again (`extend` moves it). Default 30 s.
    pub visibility_timeout: Duration,
    /// Unacked messages kept in memory ahead of the oldest unacked one.
    /// Default 10 000.
    pub window: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self { log: LogOptions::default(), visibility_timeout: Duration::from_secs(30), window: 10_000 }
    }
}

/// The directory of the dead-letter log of the queue in `dir`: the sibling
/// `<dir>.dlq`.
pub fn dlq_dir(dir: &Path) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(".dlq");
    PathBuf::from(s)
}

/// A decoded message record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Framed {
    key: Option<String>,
    payload: Vec<u8>,
    attempt: u32,
    not_before: u64,
    origin: String,
    reason: Option<String>,
}

fn push_str16(out: &mut Vec<u8>, s: &str, what: &str) -> Result<()> {
    let len = u16::try_from(s.len())
        .map_err(|_| Error::Config(format!("{what} of {} bytes is longer than 65535", s.len())))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// version u8, flags u8, attempt u32 LE, not_before u64 LE (unix ms),
/// origin (u16 LE length + UTF-8; empty: the record's own id),
/// [key (u16 + UTF-8) if flags&1], [reason (u16 + UTF-8) if flags&2], payload.
fn frame(
    key: Option<&str>,
    payload: &[u8],
    attempt: u32,
    not_before: u64,
    origin: &str,
    reason: Option<&str>,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(payload.len() + 32 + origin.len() + key.map_or(0, str::len));
    let flags = if key.is_some() { FLAG_KEY } else { 0 } | if reason.is_some() { FLAG_REASON } else { 0 };
    out.extend_from_slice(&[FRAME_VERSION, flags]);
    out.extend_from_slice(&attempt.to_le_bytes());
    out.extend_from_slice(&not_before.to_le_bytes());
    push_str16(&mut out, origin, "origin")?;
    if let Some(k) = key {
        push_str16(&mut out, k, "key")?;
    }
    if let Some(r) = reason {
        push_str16(&mut out, &r[..floor_char_boundary(r, 4096)], "reason")?;
    }
    out.extend_from_slice(payload);
    if out.len() > wharf_log::MAX_RECORD_LEN {
        return Err(Error::Config(format!(
            "message of {} bytes exceeds the embedded maximum of {}",
            out.len(),
            wharf_log::MAX_RECORD_LEN
        )));
    }
    Ok(out)
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    (0..=max).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0)
}

/// Decodes a record; a record in another format is delivered as a bare
/// payload (no key, attempt 1).
fn unframe(rec: &[u8]) -> Framed {
    fn parse(rec: &[u8]) -> Option<Framed> {
        let (&[version, flags], rest) = rec.split_first_chunk::<2>()?;
        if version != FRAME_VERSION {
            return None;
        }
        let (attempt, rest) = rest.split_first_chunk::<4>()?;
        let (nb, mut rest) = rest.split_first_chunk::<8>()?;
        let mut string = || -> Option<String> {
            let (len, r) = rest.split_first_chunk::<2>()?;
            let len = u16::from_le_bytes(*len) as usize;
            let s = String::from_utf8(r.get(..len)?.to_vec()).ok()?;
            rest = &r[len..];
            Some(s)
        };
        let origin = string()?;
        let key = if flags & FLAG_KEY != 0 { Some(string()?) } else { None };
        let reason = if flags & FLAG_REASON != 0 { Some(string()?) } else { None };
        Some(Framed {
            key,
            payload: rest.to_vec(),
            attempt: u32::from_le_bytes(*attempt),
            not_before: u64::from_le_bytes(*nb),
            origin,
            reason,
        })
    }
    parse(rec).unwrap_or_else(|| Framed {
        key: None,
        payload: rec.to_vec(),
        attempt: 1,
        not_before: 0,
        origin: String::new(),
        reason: None,
    })
}

/// A message not yet acked.
#[derive(Debug)]
struct Entry {
    id: String,
    key: Option<String>,
    payload: Vec<u8>,
    /// Attempt of the last delivery (the next one gets `attempt + 1`).
    attempt: u32,
    /// Unix ms before which it must not be delivered.
    not_before: u64,
    flight: Option<Flight>,
}

#[derive(Debug, Clone, Copy)]
struct Flight {
    consumer: u64,
    token: u64,
    deadline: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// Every record below this seq has been read into `entries` (or acked).
    loaded_to: u64,
    /// Unacked messages by seq.
    entries: BTreeMap<u64, Entry>,
    next_token: u64,
}

impl State {
    /// All seq below this are acked.
    fn done_prefix(&self) -> u64 {
        self.entries.keys().next().copied().unwrap_or(self.loaded_to)
    }
}

/// The state shared by every producer and consumer of one directory in
/// this process.
struct Shared {
    /// Distinguishes receipts of different queues.
    uid: u64,
    name: String,
    dir: PathBuf,
    log: Partition,
    opts: EmbeddedOptions,
    state: Mutex<State>,
    /// Woken on appends and on anything that may make a message eligible.
    notify: Notify,
    /// Watermark advancing: one at a time; `dirty` asks the one running to
    /// go round again.
    advancing: tokio::sync::Mutex<()>,
    dirty: AtomicBool,
    next_consumer: AtomicU64,
    dlq: OnceLock<Arc<Shared>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("dir", &self.dir).field("log", &self.log).finish_non_exhaustive()
    }
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<Shared>>> {
    static R: OnceLock<Mutex<HashMap<PathBuf, Weak<Shared>>>> = OnceLock::new();
    R.get_or_init(Mutex::default)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Task(e.to_string()))?
}

impl Shared {
    /// The shared queue of `dir`, opening the log if this process has not.
    /// Blocking.
    fn open(dir: &Path, opts: EmbeddedOptions) -> Result<Arc<Shared>> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Config(format!("{}: {e}", dir.display())))?;
        let canon = dir.canonicalize().map_err(|e| Error::Config(format!("{}: {e}", dir.display())))?;
        let mut reg = lock(registry());
        reg.retain(|_, w| w.strong_count() > 0);
        if let Some(s) = reg.get(&canon).and_then(Weak::upgrade) {
            return Ok(s);
        }
        let (log, recovery) = Partition::open(&canon, opts.log)?;
        if recovery.truncated_tail.is_some() || !recovery.salvage_gaps.is_empty() {
            tracing::warn!(dir = %canon.display(), ?recovery, "embedded queue recovered");
        }
        static UID: AtomicU64 = AtomicU64::new(1);
        let wm = log.watermark();
        let s = Arc::new(Shared {
            uid: UID.fetch_add(1, Ordering::Relaxed),
            name: canon.file_name().map_or_else(|| "queue".into(), |n| n.to_string_lossy().into_owned()),
            dir: canon.clone(),
            log,
            opts,
            state: Mutex::new(State { loaded_to: wm, ..State::default() }),
            notify: Notify::new(),
            advancing: tokio::sync::Mutex::new(()),
            dirty: AtomicBool::new(false),
            next_consumer: AtomicU64::new(1),
            dlq: OnceLock::new(),
        });
        reg.insert(canon, Arc::downgrade(&s));
        Ok(s)
    }

    fn id(&self, seq: u64) -> String {
        format!("{}@{seq}", self.name)
    }

    fn dlq(&self) -> Result<Arc<Shared>> {
        if let Some(d) = self.dlq.get() {
            return Ok(d.clone());
        }
        let d = Shared::open(&dlq_dir(&self.dir), self.opts)?;
        Ok(self.dlq.get_or_init(|| d).clone())
    }

    /// Appends framed records (blocking) and wakes the consumers.
    fn append_framed(&self, frames: &[Vec<u8>]) -> Result<Vec<Ack>> {
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let a = self.log.append(&refs)?;
        self.notify.notify_waiters();
        let durability = if a.synced { Durability::EmbeddedSynced } else { Durability::EmbeddedWritten };
        Ok((a.first_seq..=a.last_seq)
            .map(|seq| Ack { id: self.id(seq), position: Position::Embedded { seq }, durability })
            .collect())
    }

    /// Reads more of the log into the window. Blocking (reads files).
    fn fill(&self, st: &mut State) -> Result<()> {
        while st.entries.len() < self.opts.window && st.loaded_to < self.log.next_seq() {
            let recs = self.log.read(st.loaded_to, READ_RECORDS, READ_BYTES)?;
            let Some(last) = recs.last() else { break };
            st.loaded_to = last.seq + 1;
            for r in recs {
                let f = unframe(&r.payload);
                let id = if f.origin.is_empty() { self.id(r.seq) } else { f.origin };
                let e = Entry {
                    id,
                    key: f.key,
                    payload: f.payload,
                    attempt: f.attempt.saturating_sub(1),
                    not_before: f.not_before,
                    flight: None,
                };
                st.entries.insert(r.seq, e);
            }
        }
        Ok(())
    }

    /// Hands out up to `max` eligible messages to `consumer`. Returns them
    /// and when something may next become eligible. Blocking.
    fn poll(&self, consumer: u64, max: usize) -> Result<(Vec<Delivery>, Option<Instant>)> {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        self.fill(st)?;
        let now = Instant::now();
        let now_ms = now_ms();
        let mut wake: Option<Instant> = None;
        let mut wake_at = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
        let mut blocked: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        for (&seq, e) in st.entries.iter_mut() {
            if out.len() >= max {
                break;
            }
            if let Some(k) = &e.key
                && blocked.contains(k)
            {
                continue;
            }
            let mut wait = false;
            if let Some(f) = e.flight {
                if f.deadline <= now {
                    e.flight = None;
                } else {
                    wake_at(f.deadline);
                    wait = true;
                }
            }
            if !wait && e.not_before > now_ms {
                wake_at(now + Duration::from_millis(e.not_before - now_ms));
                wait = true;
            }
            if wait {
                if let Some(k) = &e.key {
                    blocked.insert(k.clone());
                }
                continue;
            }
            st.next_token += 1;
            e.attempt = e.attempt.saturating_add(1);
            e.flight =
                Some(Flight { consumer, token: st.next_token, deadline: now + self.opts.visibility_timeout });
            out.push(Delivery {
                id: e.id.clone(),
                key: e.key.clone(),
                payload: e.payload.clone(),
                attempt: e.attempt,
                receipt: Receipt::Embedded { queue: self.uid, seq, token: st.next_token },
            });
        }
        Ok((out, wake))
    }

    fn receipt(&self, d: &Delivery) -> Result<(u64, u64)> {
        match &d.receipt {
            Receipt::Embedded { queue, seq, token } if *queue == self.uid => Ok((*seq, *token)),
            other => Err(Error::ForeignDelivery(format!("{other:?} is not from {}", self.dir.display()))),
        }
    }

    /// Makes every delivery held by `consumer` available again.
    fn release(&self, consumer: u64) {
        let mut st = lock(&self.state);
        let mut any = false;
        for e in st.entries.values_mut() {
            if e.flight.is_some_and(|f| f.consumer == consumer) {
                e.flight = None;
                any = true;
            }
        }
        drop(st);
        if any {
            self.notify.notify_waiters();
        }
    }

    /// Persists the watermark up to the contiguous acked prefix. Only one
    /// caller advances at a time; the others leave their progress to it.
    async fn advance(self: &Arc<Self>) -> Result<()> {
        self.dirty.store(true, Ordering::SeqCst);
        loop {
            let Ok(guard) = self.advancing.try_lock() else { return Ok(()) };
            while self.dirty.swap(false, Ordering::SeqCst) {
                let to = lock(&self.state).done_prefix();
                if to > self.log.watermark() {
                    let s = self.clone();
                    blocking(move || Ok(s.log.advance_watermark(to)?)).await?;
                }
            }
            drop(guard);
            // Someone may have set `dirty` after the loop and before the
            // unlock, and left.
            if !self.dirty.load(Ordering::SeqCst) {
                return Ok(());
            }
        }
    }

    async fn ack(self: &Arc<Self>, seq: u64) -> Result<()> {
        // The ack may unblock the key's next message or make room in the
        // window.
        let removed = lock(&self.state).entries.remove(&seq).is_some();
        if removed {
            self.notify.notify_waiters();
        }
        self.advance().await
    }
}

/// Appends to an embedded queue.
#[derive(Debug, Clone)]
pub struct EmbeddedProducer {
    shared: Arc<Shared>,
}

impl EmbeddedProducer {
    /// Opens (creating if missing) the queue in `dir` with default options.
    pub async fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, EmbeddedOptions::default()).await
    }

    /// Opens the queue in `dir`. When this process already has it open, the
    /// options of the first opener apply.
    pub async fn open_with(dir: impl AsRef<Path>, opts: EmbeddedOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        Ok(Self { shared: blocking(move || Shared::open(&dir, opts)).await? })
    }

    /// The queue's directory (canonical).
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

impl Producer for EmbeddedProducer {
    async fn append_record(&self, record: Record<'_>) -> Result<Ack> {
        let mut acks = self.append_batch(&[record]).await?;
        acks.pop().ok_or_else(|| Error::Task("log acknowledged no record".into()))
    }

    async fn append_batch(&self, records: &[Record<'_>]) -> Result<Vec<Ack>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let frames = records
            .iter()
            .map(|r| {
                let nb = if r.delay.is_zero() { 0 } else { not_before(r.delay) };
                frame(r.key, r.payload, 1, nb, "", None)
            })
            .collect::<Result<Vec<_>>>()?;
        let s = self.shared.clone();
        blocking(move || s.append_framed(&frames)).await
    }
}

/// A competing consumer of an embedded queue.
#[derive(Debug)]
pub struct EmbeddedConsumer {
    shared: Arc<Shared>,
    id: u64,
}

impl EmbeddedConsumer {
    /// Opens a consumer of the queue in `dir` with default options.
    pub async fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, EmbeddedOptions::default()).await
    }

    /// Opens a consumer of the queue in `dir`. When this process already has
    /// it open, the options of the first opener apply.
    pub async fn open_with(dir: impl AsRef<Path>, opts: EmbeddedOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let shared = blocking(move || Shared::open(&dir, opts)).await?;
        let id = shared.next_consumer.fetch_add(1, Ordering::Relaxed);
        Ok(Self { shared, id })
    }

    /// The queue's directory (canonical).
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        self.shared.release(self.id);
    }
}

impl Consumer for EmbeddedConsumer {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let s = self.shared.clone();
            let id = self.id;
            let (got, wake) = blocking(move || s.poll(id, max.max(1))).await?;
            if !got.is_empty() {
                return Ok(got);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(got);
            }
            let until = wake.map_or(deadline, |w| w.min(deadline));
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(until.into()) => {}
            }
        }
    }

    async fn ack(&self, d: &Delivery) -> Result<()> {
        let (seq, _) = self.shared.receipt(d)?;
        self.shared.ack(seq).await
    }

    async fn nack(&self, d: &Delivery, delay: Duration) -> Result<()> {
        let (seq, token) = self.shared.receipt(d)?;
        {
            let mut st = lock(&self.shared.state);
            // A stale receipt (the lease ran out and the message went to
            // someone else, or it was acked) changes nothing.
            let Some(e) = st.entries.get_mut(&seq) else { return Ok(()) };
            if e.flight.is_none_or(|f| f.token != token) {
                return Ok(());
            }
            e.flight = None;
            e.not_before = if delay.is_zero() { 0 } else { not_before(delay) };
        }
        self.shared.notify.notify_waiters();
        Ok(())
    }

    async fn dead_letter(&self, d: &Delivery, reason: &str) -> Result<()> {
        let (seq, _) = self.shared.receipt(d)?;
        let framed = {
            let st = lock(&self.shared.state);
            let Some(e) = st.entries.get(&seq) else { return Ok(()) };
            frame(e.key.as_deref(), &e.payload, e.attempt, 0, &e.id, Some(reason))?
        };
        let s = self.shared.clone();
        blocking(move || s.dlq()?.append_framed(&[framed])).await?;
        self.shared.ack(seq).await
    }

    async fn extend(&self, d: &Delivery, by: Duration) -> Result<()> {
        let (seq, token) = self.shared.receipt(d)?;
        let mut st = lock(&self.shared.state);
        if let Some(f) = st.entries.get_mut(&seq).and_then(|e| e.flight.as_mut())
            && f.token == token
        {
            f.deadline = f.deadline.max(Instant::now() + by);
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.shared.release(self.id);
        self.shared.advance().await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip() {
        let f = frame(Some("k"), b"\0body", 3, 42, "q@7", Some("bad")).unwrap();
        assert_eq!(
            unframe(&f),
            Framed {
                key: Some("k".into()),
                payload: b"\0body".to_vec(),
                attempt: 3,
                not_before: 42,
                origin: "q@7".into(),
                reason: Some("bad".into()),
            }
        );
        let f = frame(None, b"", 1, 0, "", None).unwrap();
        let u = unframe(&f);
        assert_eq!((u.key, u.payload, u.reason), (None, Vec::new(), None));
        // Foreign bytes come through as the payload.
        assert_eq!(unframe(b"\x07raw").payload, b"\x07raw");
    }

    #[test]
    fn dlq_is_a_sibling() {
        assert_eq!(dlq_dir(Path::new("/data/orders")), Path::new("/data/orders.dlq"));
    }
}
