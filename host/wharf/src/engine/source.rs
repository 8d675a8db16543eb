//! Where a lane's messages come from: the only part of the engine that
//! differs between queue kinds.
//!
//! The contract every source keeps:
//! - [`Source::pull`] hands over messages in source order, each with a
//!   sequence greater than the last. On the log the sequence is the log's;
//!   on a queue it is a local counter in receive order (a Kafka partition's
//!   offsets, an SQS FIFO group's order, are receive order).
//! - A message pulled stays *reserved* until [`Source::release`]: the log
//!   does not move its cursor past it, Kafka does not commit its offset, SQS
//!   keeps it invisible (the consumer extends its visibility). A retry never
//!   goes back to the source, so order never depends on how faithfully a
//!   broker or emulator redelivers.
//! - [`Source::checkpoint`] persists the lane's watermark (log only; a
//!   queue's position moves with each release).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use wharf_queue::Consumer as _;

use crate::engine::namespace::PartitionRt;
use crate::engine::window::Pending;
use crate::storage::envelope::{Envelope, message_id};
use crate::storage::part_log::PartLog;
use crate::storage::rewind::{self, Rewind};
use crate::storage::{chain, cursor};

/// How often an idle consumer process looks for new records.
const FOLLOW_POLL: Duration = Duration::from_millis(10);

/// Why a source cannot go on: the lane stops (log: the partition halts).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("reading the log: {0}")]
    Log(#[from] wharf_log::LogError),
    #[error("record {seq} of partition {partition} does not decode: {reason}")]
    Decode { partition: u32, seq: u64, reason: String },
    /// The chained digest a mirroring target ships is missing: the lane
    /// halts (never ships records it cannot prove).
    #[error("no_chain: partition {partition}: {reason}")]
    Chain { partition: u32, reason: String },
}

/// Why a lane cannot open its reader of a partition.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Cursor(#[from] cursor::CursorError),
    #[error(transparent)]
    Rewind(#[from] rewind::RewindError),
    #[error(
        "the rewind stands at sequence {position}, and the log starts at {first}: history it needs is gone"
    )]
    NotRetained { position: u64, first: u64 },
}

/// Most payload bytes one log read returns (it returns at least one record).
const READ_MAX_BYTES: usize = 16 << 20;

/// A message pulled from the source.
#[derive(Debug)]
pub enum Pulled {
    /// Boxed once, here: a `Pending` is several hundred bytes, and it moves
    /// on into the window and out of it to be released (`memmove` was 8 %
    /// of a drain when it moved by value).
    Message(u64, Box<Pending>),
    /// Nothing for this lane at this sequence (a replay meant for another
    /// target): the lane's window skips it.
    Skip(u64),
    /// A queue message with nothing for this lane, already released (a
    /// replay meant for another target): finished here.
    Settled(String),
}

impl Pulled {
    /// The source position it came from (`None`: a queue message).
    pub fn seq(&self) -> Option<u64> {
        match self {
            Pulled::Message(seq, _) | Pulled::Skip(seq) => Some(*seq),
            Pulled::Settled(_) => None,
        }
    }
}

#[derive(Debug)]
pub enum Source {
    Log(LogSource),
    Queue(QueueSource),
}

#[derive(Debug)]
pub struct LogSource {
    pub part: Arc<PartitionRt>,
    pub log: Arc<PartLog>,
    appended: watch::Receiver<u64>,
    /// The lane's own cursor file (several targets), or `None`: the
    /// partition's watermark is the cursor.
    cursor: Option<PathBuf>,
    /// How many targets share the partition (for the minimum).
    targets: usize,
    target: String,
    /// The lane mirrors the log (`ordering = "partition"`): every record,
    /// due at once, with its stored bytes and chained digest.
    mirror: bool,
}

#[derive(Debug)]
pub struct QueueSource {
    consumer: wharf_queue::AnyConsumer,
    next_seq: u64,
}

impl LogSource {
    /// A lane's reader of one partition. With several targets the lane keeps
    /// its own cursor file, never below the partition's watermark. A rewind
    /// that was running goes on where it stood (returned, for the lane).
    pub fn open(
        part: Arc<PartitionRt>,
        log: Arc<PartLog>,
        target: &str,
        targets: usize,
        target_dir: &std::path::Path,
    ) -> Result<(Self, u64, Option<Rewind>), OpenError> {
        let cursor = (targets > 1).then(|| cursor::path(target_dir, part.index));
        let rewinding = rewind::load(&rewind::path(target_dir, part.index))?;
        let start = match (&cursor, rewinding) {
            (_, Some(r)) if r.position < log.first_seq() => {
                return Err(OpenError::NotRetained { position: r.position, first: log.first_seq() });
            }
            (_, Some(r)) => r.position,
            (Some(p), None) => cursor::load(p)?.unwrap_or(0).max(log.watermark()),
            (None, None) => log.watermark(),
        };
        part.record_cursor(target, start, targets);
        let appended = part.appended.subscribe();
        let source = Self { part, log, appended, cursor, targets, target: target.to_string(), mirror: false };
        Ok((source, start, rewinding))
    }
}

impl LogSource {
    /// Makes the lane a mirror of the log (see [`LogSource::mirror`]).
    pub fn mirroring(mut self) -> Self {
        self.mirror = true;
        self
    }
}

impl QueueSource {
    pub fn new(consumer: wharf_queue::AnyConsumer) -> Self {
        Self { consumer, next_seq: 0 }
    }
}

impl Source {
    /// Waits up to `wait` for something new (not at all when `wait` is
    /// zero), then takes up to `room` messages from `from` on.
    pub async fn pull(
        &mut self,
        from: u64,
        room: usize,
        wait: Duration,
        target: &str,
    ) -> Result<Vec<Pulled>, SourceError> {
        match self {
            Source::Log(s) => s.pull(from, room, wait, target).await,
            Source::Queue(q) => Ok(q.pull(room, wait, target).await),
        }
    }

    /// Reads up to `n` records from `from` on without waiting, while the
    /// lane's call runs (`read_ahead.rs`): only an embedded log's active
    /// segment (pages just written, no blocking I/O). Never a mirror (its
    /// chain may have to catch up from disk, and a chain error halts the
    /// lane) nor a queue (a receive reserves messages). `None`: nothing to
    /// read ahead here. An error is left for the next pull, which reads the
    /// same records and reports it.
    pub fn read_ahead(&self, from: u64, n: usize, target: &str) -> Option<Vec<Pulled>> {
        match self {
            Source::Log(s) if !s.mirror && !s.nothing_new(from, n) && s.log.in_active_segment(from) => {
                s.log.read(from, n, READ_MAX_BYTES).ok().and_then(|records| s.decoded(records, target).ok())
            }
            _ => None,
        }
    }

    /// Reads again messages the window deferred (log sources; a queue
    /// source never defers).
    pub fn reread(&self, seqs: &[u64], target: &str) -> Result<Vec<Pulled>, SourceError> {
        match self {
            Source::Log(s) if !seqs.is_empty() => s.reread(seqs, target),
            _ => Ok(Vec::new()),
        }
    }

    /// Whether a pull from `from` with `room` would wait for news: the log
    /// has nothing new for the lane, or no room. A queue cannot tell before
    /// it asks, so it says it may.
    pub fn would_wait(&self, from: u64, room: usize) -> bool {
        match self {
            Source::Log(s) => s.nothing_new(from, room),
            Source::Queue(_) => true,
        }
    }

    /// The message is finished for this lane: release its reservation.
    pub async fn release(&self, p: &Pending) {
        if let (Source::Queue(q), Some(d)) = (self, &p.receipt)
            && let Err(e) = q.consumer.ack(d).await
        {
            tracing::warn!(id = %d.id, error = %e, "queue ack failed; the message will be delivered again");
        }
    }

    /// Persists the lane's watermark (log sources).
    pub async fn checkpoint(&mut self, watermark: u64) -> Result<(), String> {
        match self {
            Source::Log(s) => s.checkpoint(watermark).await,
            Source::Queue(_) => Ok(()),
        }
    }

    /// Releases what is reserved and not finished, so that another consumer
    /// gets it at once.
    pub async fn close(self) {
        if let Source::Queue(q) = self
            && let Err(e) = q.consumer.close().await
        {
            tracing::warn!(error = %e, "closing the queue consumer");
        }
    }
}

impl LogSource {
    fn nothing_new(&self, from: u64, room: usize) -> bool {
        room == 0 || from >= self.log.next_seq()
    }

    async fn pull(
        &mut self,
        from: u64,
        room: usize,
        wait: Duration,
        target: &str,
    ) -> Result<Vec<Pulled>, SourceError> {
        if self.nothing_new(from, room) && !wait.is_zero() {
            // A consumer process is not woken by appends (another process
            // makes them): it polls the durable end.
            let wait = match self.log.writer() {
                Some(_) => wait,
                None => wait.min(FOLLOW_POLL),
            };
            let _ = tokio::time::timeout(wait, self.appended.changed()).await;
        }
        if self.nothing_new(from, room) {
            return Ok(Vec::new());
        }
        // Reads in the active segment are preads of pages just written, in
        // the page cache: on the worker (block_in_place hands the worker to
        // another thread each time: 10 % of the delivery rate, measured).
        // Older segments may be cold: block in place.
        let read = || self.log.read(from, room, READ_MAX_BYTES);
        let records = match self.log.in_active_segment(from) {
            true => read()?,
            false => tokio::task::block_in_place(read)?,
        };
        if self.mirror {
            return self.mirrored(records);
        }
        self.decoded(records, target)
    }

    /// Reads again the deferred records `seqs` (ascending, below what the
    /// lane has read), in contiguous runs.
    fn reread(&self, seqs: &[u64], target: &str) -> Result<Vec<Pulled>, SourceError> {
        let mut out = Vec::with_capacity(seqs.len());
        for run in seqs.chunk_by(|a, b| b == &(a + 1)) {
            let records = tokio::task::block_in_place(|| self.log.read(run[0], run.len(), READ_MAX_BYTES))?;
            let records = records.into_iter().filter(|r| run.contains(&r.seq)).collect();
            out.extend(self.decoded(records, target)?);
        }
        Ok(out)
    }

    /// Records as messages for `target` (a replay meant for another target
    /// is a skip).
    fn decoded(&self, records: Vec<wharf_log::Record>, target: &str) -> Result<Vec<Pulled>, SourceError> {
        let partition = self.part.index;
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let env = Envelope::decode(&r.payload).map_err(|e| SourceError::Decode {
                partition,
                seq: r.seq,
                reason: e.to_string(),
            })?;
            if env.only_target.as_deref().is_some_and(|t| t != target) {
                out.push(Pulled::Skip(r.seq));
                continue;
            }
            let pending = Pending::new(message_id(partition, r.seq), env);
            out.push(Pulled::Message(r.seq, Box::new(pending)));
        }
        Ok(out)
    }

    /// Every record, due at once, with its stored bytes, checksum and
    /// chained digest (linking records the chain has not seen yet).
    fn mirrored(&self, records: Vec<wharf_log::Record>) -> Result<Vec<Pulled>, SourceError> {
        let partition = self.part.index;
        let no_chain = |reason: String| SourceError::Chain { partition, reason };
        let log = self.log.clone();
        let digests = self
            .part
            .with_chain_mut(|chain| {
                tokio::task::block_in_place(|| chain.catch_up(partition, &log)).map_err(|e| e.to_string())?;
                records
                    .iter()
                    .map(|r| match (chain.at(r.seq), chain.at(r.seq + 1)) {
                        (Some(prev), Some(digest)) => Ok((prev, digest)),
                        _ => {
                            Err(format!("record {} is outside the chain (base {})", r.seq, chain.base_seq()))
                        }
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .and_then(|d| d)
            .map_err(no_chain)?;
        let mut out = Vec::with_capacity(records.len());
        for (r, (prev, digest)) in records.into_iter().zip(digests) {
            let env = Envelope::decode(&r.payload).map_err(|e| SourceError::Decode {
                partition,
                seq: r.seq,
                reason: e.to_string(),
            })?;
            let record = crate::plugin::LogRecord {
                checksum: crc32c::crc32c(&r.payload),
                digest: chain::to_hex(digest),
                prev_digest: chain::to_hex(prev),
                bytes: r.payload,
            };
            // Every record is due at once on a mirror, whatever its delay.
            let pending = Pending {
                due_ms: 0,
                record: Some(record),
                ..Pending::new(message_id(partition, r.seq), env)
            };
            out.push(Pulled::Message(r.seq, Box::new(pending)));
        }
        Ok(out)
    }

    async fn checkpoint(&mut self, watermark: u64) -> Result<(), String> {
        let Some(path) = self.cursor.clone() else {
            return self.advance(watermark).await;
        };
        spawn(move || cursor::store(&path, watermark).map_err(|e| e.to_string())).await?;
        // The partition may delete only below the slowest target.
        match self.part.record_cursor(&self.target, watermark, self.targets) {
            Some(min) => self.advance(min).await,
            None => Ok(()),
        }
    }

    /// Lets the log delete below `to`, after storing the chained digest
    /// there (the chain's new base) when the partition keeps one.
    async fn advance(&self, to: u64) -> Result<(), String> {
        let (part, log) = (self.part.clone(), self.log.clone());
        spawn(move || {
            if part.chain.is_some() {
                let (index, dir) = (part.index, part.ns_dir.clone());
                part.with_chain_mut(|c| {
                    c.catch_up(index, &log)?;
                    c.rebase(&dir, index, to)
                })?
                .map_err(|e| e.to_string())?;
            }
            log.advance_watermark(to).map_err(|e| e.to_string())
        })
        .await
    }
}

async fn spawn(f: impl FnOnce() -> Result<(), String> + Send + 'static) -> Result<(), String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| e.to_string())?
}

impl QueueSource {
    async fn pull(&mut self, room: usize, wait: Duration, target: &str) -> Vec<Pulled> {
        if room == 0 {
            tokio::time::sleep(wait).await;
            return Vec::new();
        }
        let deliveries = match self.consumer.receive(room, wait).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "queue receive failed");
                tokio::time::sleep(wait.min(Duration::from_millis(200))).await;
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            let pending = queue_pending(d);
            if pending.env.only_target.as_deref().is_some_and(|t| t != target) {
                // A replay for another target (its own consumer group).
                if let Some(d) = &pending.receipt
                    && let Err(e) = self.consumer.ack(d).await
                {
                    tracing::warn!(id = %d.id, error = %e, "queue ack of another target's replay failed");
                }
                out.push(Pulled::Settled(pending.id));
                continue;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            out.push(Pulled::Message(seq, Box::new(pending)));
        }
        out
    }
}

/// A received queue message in the window. One that is not a Wharf
/// envelope keeps its bytes and is dead-lettered by the engine.
fn queue_pending(d: wharf_queue::Delivery) -> Pending {
    let (env, failures) = match Envelope::decode(&d.payload) {
        Ok(env) => (env, Vec::new()),
        Err(e) => {
            let raw = Envelope::raw(d.key.clone(), d.payload.clone());
            let failure = crate::storage::dlq::Failure {
                attempt: 0,
                at_ms: crate::clock::now_ms(),
                kind: crate::storage::dlq::FailureKind::Decode.into(),
                reason: format!("not a wharf envelope: {e}"),
            };
            (raw, vec![failure])
        }
    };
    let id = d.id.clone();
    Pending { failures, receipt: Some(d), ..Pending::new(id, env) }
}
